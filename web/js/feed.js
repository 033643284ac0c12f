// The live feed: newest on top, at most MAX rows, pausable (events that
// arrive meanwhile wait, and go in on resume), filtered by event type.

import { el, str, clock, parseTime } from './dom.js';

const MAX = 200;

export function createFeed({ list, filter, pause, status }) {
    const ids = new Set();          // ids of the rows and of the held
    let held = [];                  // arrived while paused, oldest first
    let paused = false;
    let type = '';
    const types = new Set();

    function row(e, fresh) {
        const m = (e.metadata && typeof e.metadata === 'object')
            ? e.metadata : {};
        const li = el('li', fresh ? 'fresh' : '');
        const t = str(e.eventType, '?');
        li.dataset.type = t;
        li.dataset.id = str(e.id, '');

        const when = parseTime(e.timestamp);
        const time = el('span', 'f-time', when ? clock(when) : '–');
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

    function insert(e, fresh) {
        const li = row(e, fresh);
        li.hidden = type !== '' && li.dataset.type !== type;
        addType(li.dataset.type);
        list.prepend(li);
        while (list.children.length > MAX) {
            ids.delete(list.lastElementChild.dataset.id);
            list.lastElementChild.remove();
        }
    }

    function show() {
        const n = list.children.length;
        if (paused) {
            status.textContent = `paused: ${held.length} new event` +
                (held.length === 1 ? '' : 's') + ' waiting';
        } else if (n === 0) {
            status.textContent = 'waiting for events';
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

    filter.addEventListener('change', () => {
        type = filter.value;
        for (const li of list.children) {
            li.hidden = type !== '' && li.dataset.type !== type;
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
        clear() {
            list.replaceChildren();
            ids.clear();
            held = [];
            show();
        },
    };
}
