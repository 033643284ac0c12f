// The live feed: newest on top, at most MAX rows, pausable (events that
// arrive meanwhile wait, and go in on resume), filtered by event type.
//
// Older events from the history API (history.js) go below the live ones
// and raise the cap by their number (up to MAX + MAX_OLDER rows), so the
// next live event does not push a whole page out. A live event over the
// cap still removes the bottom row; when that row came from the history
// API, onTrim(page) says which page the new bottom row came from (null:
// a live row) so that the next "load older" fetches it again and the
// rows taken out come back instead of leaving a gap. Pause to read
// older events while live ones keep coming.

import { el, str, clock, day, parseTime } from './dom.js';

const MAX = 200;
export const MAX_OLDER = 5000;

export function createFeed({ list, filter, pause, status, onTrim,
    onFilter }) {
    const ids = new Set();          // ids of the rows and of the held
    let held = [];                  // arrived while paused, oldest first
    let paused = false;
    let type = '';
    let older = 0;                  // rows from the history API
    let cap = MAX;                  // MAX and the older rows loaded
    const types = new Set();

    function row(e, fresh) {
        const m = (e.metadata && typeof e.metadata === 'object')
            ? e.metadata : {};
        const li = el('li', fresh ? 'fresh' : '');
        const t = str(e.eventType, '?');
        li.dataset.type = t;
        li.dataset.id = str(e.id, '');

        const when = parseTime(e.timestamp);
        li.dataset.ts = when ? String(when.getTime()) : '';
        // another day's event (from the history API): its date too
        const time = el('span', 'f-time', !when ? '–'
            : when.toDateString() === new Date().toDateString()
                ? clock(when) : day(when) + ' ' + clock(when).slice(0, 5));
        time.title = str(e.timestamp, '');

        const badge = el('span', 'badge', t);
        badge.dataset.type = t;
        const kind = el('span', 'f-type');
        kind.append(badge);

        const user = el('span', 'f-user', str(e.userId, 'anonymous'));
        user.title = user.textContent;

        const req = el('span', 'f-req mono');
        req.append(el('span', 'method', str(m.method, '')),
            document.createTextNode(str(m.endpoint, '')));
        req.title = req.textContent;

        const code = str(m.status, '');
        const st = el('span', 'f-status', code);
        st.dataset.class = code.charAt(0);

        const client = [m.userAgent, m.ipAddress]
            .filter((v) => v !== undefined && v !== null && v !== '')
            .map((v) => str(v)).join(' · ');
        const agent = el('span', 'f-agent', client);
        agent.title = client;

        li.append(time, kind, user, req, st, agent);
        return li;
    }

    function addType(t) {
        if (types.has(t)) {
            return;
        }
        types.add(t);
        const sorted = [...types].sort();
        const opt = el('option', '', t);
        opt.value = t;
        const next = sorted[sorted.indexOf(t) + 1];
        const before = next === undefined ? null
            : [...filter.options].find((o) => o.value === next);
        filter.insertBefore(opt, before);
    }

    function place(e, fresh) {
        const li = row(e, fresh);
        li.hidden = type !== '' && li.dataset.type !== type;
        addType(li.dataset.type);
        return li;
    }

    function drop(li) {
        ids.delete(li.dataset.id);
        if (li.dataset.page !== undefined) {
            older--;
        }
        li.remove();
    }

    function insert(e, fresh, li = null) {
        if (!li) {
            list.prepend(place(e, fresh));
        }
        let trimmed = false;
        while (list.children.length > cap) {
            trimmed = trimmed
                || list.lastElementChild.dataset.page !== undefined;
            drop(list.lastElementChild);
        }
        if (trimmed && onTrim) {
            const last = list.lastElementChild;
            onTrim(last && last.dataset.page !== undefined
                ? Number(last.dataset.page) : null);
        }
    }

    function show() {
        const n = list.children.length;
        if (paused) {
            status.textContent = `paused: ${held.length} new event` +
                (held.length === 1 ? '' : 's') + ' waiting';
        } else if (n === 0) {
            status.textContent = 'waiting for events';
        } else if (older > 0) {
            status.textContent = `${n - older} most recent event` +
                (n - older === 1 ? '' : 's') + ` (at most ${MAX}) and ` +
                `${older} older, newest first`;
        } else {
            status.textContent = `${n} most recent event` +
                (n === 1 ? '' : 's') + ` (at most ${MAX}), newest first`;
        }
    }

    // events: oldest first
    function add(events, fresh = true) {
        for (const e of events) {
            if (!e || typeof e !== 'object') {
                continue;
            }
            const id = str(e.id, '');
            if (id !== '' && ids.has(id)) {
                continue;
            }
            if (id !== '') {
                ids.add(id);
            }
            if (paused) {
                held.push(e);
                if (held.length > MAX) {
                    ids.delete(str(held.shift().id, ''));
                }
            } else {
                insert(e, fresh);
            }
        }
        show();
    }

    // Events a reconnect missed (from the history API, any order), each
    // at its place in time among the rows, each id once.
    function fill(events) {
        let n = 0;
        for (const e of events) {
            if (!e || typeof e !== 'object') {
                continue;
            }
            const id = str(e.id, '');
            if (id === '' || ids.has(id)) {
                continue;
            }
            const when = parseTime(e.timestamp);
            const at = when ? when.getTime() : 0;
            ids.add(id);
            const li = place(e, true);
            const next = [...list.children].find((r) =>
                r.dataset.ts !== '' && Number(r.dataset.ts) < at);
            list.insertBefore(li, next || null);
            insert(e, true, li);
            n++;
        }
        show();
        return n;
    }

    // the time (ms) of the newest row, 0 when none
    function newest() {
        let t = 0;
        for (const li of list.children) {
            const v = Number(li.dataset.ts);
            if (li.dataset.page === undefined && v > t) {
                t = v;
            }
        }
        return t;
    }

    // Older events, newest first, from page number `page` of the
    // history API: below every row, each id once. Returns {added: how
    // many went in, full: the feed holds MAX + MAX_OLDER rows}.
    function addOlder(events, page) {
        let n = 0;
        for (const e of events) {
            if (list.children.length >= MAX + MAX_OLDER) {
                break;
            }
            if (!e || typeof e !== 'object') {
                continue;
            }
            const id = str(e.id, '');
            if (id === '' || ids.has(id)) {
                continue;
            }
            ids.add(id);
            const li = place(e, false);
            li.classList.add('older');
            li.dataset.page = String(page);
            list.append(li);
            older++;
            n++;
            cap = Math.min(cap + 1, MAX + MAX_OLDER);
        }
        show();
        return { added: n, full: list.children.length >= MAX + MAX_OLDER };
    }

    // Takes out every row of the history API (they follow the type
    // filter, so a new filter starts them again).
    function clearOlder() {
        for (const li of [...list.querySelectorAll('li[data-page]')]) {
            drop(li);
        }
        cap = MAX;
        while (list.children.length > cap) {
            drop(list.lastElementChild);
        }
        show();
    }

    filter.addEventListener('change', () => {
        type = filter.value;
        for (const li of list.children) {
            li.hidden = type !== '' && li.dataset.type !== type;
        }
        if (onFilter) {
            onFilter(type);
        }
    });

    pause.addEventListener('click', () => {
        paused = !paused;
        pause.setAttribute('aria-pressed', String(paused));
        pause.textContent = paused ? 'resume' : 'pause';
        if (!paused) {
            const h = held;
            held = [];
            for (const e of h) {
                insert(e, true);
            }
        }
        show();
    });

    return {
        add,
        addOlder,
        fill,
        newest,
        clearOlder,
        olderCount: () => older,
        type: () => type,
        clear() {
            list.replaceChildren();
            ids.clear();
            held = [];
            older = 0;
            cap = MAX;
            show();
        },
    };
}
