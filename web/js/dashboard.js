// nginx-activity live dashboard: sign-in, connection, tiles, chart,
// rooms, feed, older events. No build step: ES modules served as they
// are, plus the browser bundle of socket.io-client
// (vendor/socket.io.min.js).

import { $, str, clock, parseTime } from './dom.js';
import { connect } from './connection.js';
import { createFeed } from './feed.js';
import { createChart } from './chart.js';
import { createHistory, AuthError } from './history.js';

const TOKEN_KEY = 'activity.token';
const ROOMS_KEY = 'activity.rooms';
const STATS = ['activeUsers', 'apiRequestsPerMinute',
    'productsCreatedToday', 'loginsPerHour', 'logoutsPerHour'];
const ROOM_EVENTS = {
    'user:login': 'dashboard:user-activity',
    'user:logout': 'dashboard:user-activity',
    'product:created': 'dashboard:product-activity',
    'api:call': 'dashboard:api-activity',
};

const socketPath = $('meta[name="activity-socket-path"]')
    ?.getAttribute('content') || '/socket.io/';
const apiUrl = new URL('events', new URL($('meta[name="activity-api-path"]')
    ?.getAttribute('content') || 'api/', document.baseURI)).pathname;

const ui = {
    conn: $('#conn'),
    connText: $('#conn-text'),
    retry: $('#retry'),
    who: $('#who'),
    whoText: $('#who-text'),
    signout: $('#signout'),
    signin: $('#signin'),
    form: $('#signin-form'),
    token: $('#token'),
    error: $('#signin-error'),
    board: $('#board'),
    stamp: $('#stats-stamp'),
    roomsStatus: $('#rooms-status'),
};

const feed = createFeed({ list: $('#feed'), filter: $('#filter'),
    pause: $('#pause'), status: $('#feed-status'),
    onTrim: (page) => older.rewind(page),
    onFilter: () => {
        older.reset();
        feed.clearOlder();
    } });
const chart = createChart($('#chart'));
const older = createHistory({
    url: apiUrl,
    token: () => sessionStorage.getItem(TOKEN_KEY),
    feed,
    button: $('#older-btn'),
    status: $('#older-status'),
    onAuthError: (message) => signOut(`Sign-in refused: ${message}.`),
});

let conn = null;
let countdown = null;
const roomCounts = {};


// --- the token ------------------------------------------------------------

// The claims, for display only: the server verifies the token.
function claims(token) {
    try {
        const p = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
        const c = JSON.parse(atob(p));
        return c && typeof c === 'object' ? c : {};
    } catch (e) {
        return {};
    }
}

function showWho(token) {
    const c = claims(token);
    let text = `signed in as ${str(c.sub, '?')}`;
    const exp = typeof c.exp === 'number' ? new Date(c.exp * 1000) : null;
    if (exp) {
        const today = exp.toDateString() === new Date().toDateString();
        text += ` until ${today ? '' : exp.toLocaleDateString() + ' '}` +
            clock(exp);
    }
    ui.whoText.textContent = text;
    ui.who.hidden = false;
}


// --- connection state -------------------------------------------------------

function setState(state, info) {
    clearInterval(countdown);
    countdown = null;
    ui.conn.dataset.state = state;
    ui.retry.hidden = state !== 'reconnecting' || !info.at;

    if (state === 'reconnecting' && info.at) {
        const tick = () => {
            const s = Math.max(0, Math.ceil((info.at - Date.now()) / 1000));
            ui.connText.textContent = `disconnected (${str(info.reason,
                'lost')}); retry ${info.attempt} in ${s} s`;
        };
        tick();
        countdown = setInterval(tick, 500);
    } else if (state === 'reconnecting') {
        ui.connText.textContent = `reconnecting (attempt ${info.attempt})`;
    } else if (state === 'error') {
        // the connection has stopped itself
        conn = null;
        signOut(`Sign-in refused: ${str(info.message, 'unknown error')}.`);
        ui.conn.dataset.state = 'error';
        ui.connText.textContent = 'refused';
    } else if (state === 'closed') {
        ui.connText.textContent = 'signed out';
        ui.conn.dataset.state = 'signed-out';
    } else {
        ui.connText.textContent = state;
    }
}


// --- stats --------------------------------------------------------------------

function showStats(stats) {
    if (!stats || typeof stats !== 'object') {
        return;
    }
    for (const k of STATS) {
        const tile = $(`.tile[data-stat="${k}"]`);
        const value = tile.querySelector('.value');
        const v = typeof stats[k] === 'number' ? stats[k] : null;
        const text = v === null ? '–' : v.toLocaleString();
        if (value.textContent !== text) {
            value.textContent = text;
            tile.classList.remove('bump');
            void tile.offsetWidth;      // restart the animation
            tile.classList.add('bump');
        }
    }
    const at = parseTime(stats.timestamp);
    ui.stamp.textContent = 'stats at ' + (at ? clock(at) : clock(new Date()));
    chart.push(Date.now(), stats.apiRequestsPerMinute);
}


// --- rooms --------------------------------------------------------------------

function wantedRooms() {
    try {
        const r = JSON.parse(sessionStorage.getItem(ROOMS_KEY) || '[]');
        return Array.isArray(r) ? r : [];
    } catch (e) {
        return [];
    }
}

function saveRooms() {
    const r = [...document.querySelectorAll('input[data-room]')]
        .filter((i) => i.checked).map((i) => i.dataset.room);
    sessionStorage.setItem(ROOMS_KEY, JSON.stringify(r));
    return r;
}

function roomCount(room, n) {
    roomCounts[room] = n;
    const e = $(`[data-room-count="${room}"]`);
    if (e) {
        e.textContent = String(n);
    }
}

function emitRooms(socket, what, rooms, box) {
    if (!rooms.length) {
        return;
    }
    ui.roomsStatus.textContent = `${what} ${rooms.join(', ')}...`;
    socket.timeout(10000).emit(what, rooms, (err, ack) => {
        if (!err && ack && ack.ok) {
            ui.roomsStatus.textContent = 'in rooms: ' +
                (Array.isArray(ack.rooms) && ack.rooms.length
                    ? ack.rooms.map((r) => str(r)).join(', ') : 'none');
            return;
        }
        ui.roomsStatus.textContent = `${what} failed: ` +
            (err ? 'no answer' : str(ack && (ack.error || ack.message),
                'refused'));
        if (box) {
            box.checked = what === 'unsubscribe';
            saveRooms();
        }
    });
}

for (const box of document.querySelectorAll('input[data-room]')) {
    box.checked = wantedRooms().includes(box.dataset.room);
    box.addEventListener('change', () => {
        saveRooms();
        const s = conn && conn.socket();
        if (s && s.connected) {
            emitRooms(s, box.checked ? 'subscribe' : 'unsubscribe',
                [box.dataset.room], box);
        }
        if (!box.checked) {
            roomCount(box.dataset.room, 0);
        }
    });
}


// --- sign in and out ------------------------------------------------------------

function start(token) {
    ui.error.hidden = true;
    ui.signin.hidden = true;
    ui.board.hidden = false;
    showWho(token);

    const on = {
        snapshot(snap) {
            if (!snap || typeof snap !== 'object') {
                return;
            }
            if (Array.isArray(snap.events)) {
                feed.add(snap.events.slice().reverse(), false);
            }
            showStats(snap.stats);
        },
        'activity:new'(e) {
            feed.add([e]);
        },
        'stats:update'(stats) {
            showStats(stats);
        },
    };
    for (const [name, room] of Object.entries(ROOM_EVENTS)) {
        on[name] = () => roomCount(room, (roomCounts[room] || 0) + 1);
    }

    conn = connect({
        path: socketPath,
        token,
        on,
        onState: setState,
        onConnect(socket, first) {
            // recovered: the server restored the rooms and sends what
            // was missed; else the snapshot follows, and the history API
            // has what came between the last row and it
            if (!socket.recovered) {
                emitRooms(socket, 'subscribe', saveRooms());
            }
            const since = feed.newest();
            if (!first && !socket.recovered && since) {
                fillGap(since);
            }
        },
    });
}

function fillGap(since) {
    older.gap(since).then((events) => feed.fill(events), (e) => {
        if (e instanceof AuthError) {
            signOut(`Sign-in refused: ${e.message}.`);
        }
        // else the feed keeps its hole: "load older" is still there
    });
}

function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (conn) {
        const c = conn;
        conn = null;
        c.stop();
    }
    ui.who.hidden = true;
    ui.board.hidden = true;
    ui.signin.hidden = false;
    older.reset();
    feed.clear();
    chart.clear();
    if (message) {
        ui.error.textContent = message;
        ui.error.hidden = false;
    }
    ui.token.focus();
}

ui.form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = ui.token.value.trim();
    ui.token.value = '';
    if (!/^[\w-]+\.[\w-]+\.[\w-]*$/.test(token)) {
        ui.error.textContent = 'That is not a JWT (three base64url parts ' +
            'separated by dots).';
        ui.error.hidden = false;
        return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    start(token);
});

ui.signout.addEventListener('click', () => signOut());
ui.retry.addEventListener('click', () => conn && conn.now());
window.addEventListener('online', () => conn && conn.now());

if (typeof window.io !== 'function') {
    ui.error.textContent = 'socket.io-client did not load ' +
        '(vendor/socket.io.min.js): run make.';
    ui.error.hidden = false;
} else if (sessionStorage.getItem(TOKEN_KEY)) {
    start(sessionStorage.getItem(TOKEN_KEY));
}
