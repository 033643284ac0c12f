// "Load older": pages back through the worker's history API, which
// nginx serves next to the page (api/events, behind activity_auth_jwt
// role=admin). Keyset pagination, newest first: each answer is
// {events, nextCursor, limit}; nextCursor null means nothing older.
//
// The token goes in an Authorization header, never in the URL. The
// first pages overlap the live rows (the feed skips ids it has), so one
// click fetches pages until one adds a row, at most MAX_PAGES of them.
// With a type filter only that type is fetched (type=); a new filter
// drops the older rows and starts again from the newest.

const LIMIT = 50;
const MAX_PAGES = 10;
const TIMEOUT_MS = 15000;
const TYPE_RE = /^[A-Z][A-Z0-9_]{0,63}$/;

export class AuthError extends Error {}

// opts: url (of api/events), token() (the current token, or null),
// feed (createFeed's), button, status, onAuthError(message).
export function createHistory(opts) {
    const { feed, button, status } = opts;
    let cursors = [null];   // cursors[p]: what fetches page p (0: newest)
    let next = 0;           // the page the next click fetches
    let done = false;       // no page after cursors[next]
    let busy = null;        // the AbortController of the fetch under way

    function show(state, text, label = 'Load older') {
        button.parentElement.dataset.state = state;
        status.textContent = text;
        button.textContent = label;
        button.disabled = state === 'loading';
        button.hidden = state === 'done' || state === 'full'
            || state === 'absent';
    }

    async function page(cursor, type, signal) {
        const q = new URLSearchParams({ limit: String(LIMIT) });
        if (type && TYPE_RE.test(type)) {
            q.set('type', type);
        }
        if (cursor) {
            q.set('cursor', cursor);
        }
        const token = opts.token();
        if (!token) {
            throw new AuthError('signed out');
        }
        const r = await fetch(`${opts.url}?${q}`, {
            headers: { Authorization: `Bearer ${token}`,
                Accept: 'application/json' },
            cache: 'no-store',
            credentials: 'omit',
            referrerPolicy: 'no-referrer',
            signal,
        });
        if (r.status === 401) {
            throw new AuthError('the history API refused the token ' +
                '(expired or invalid)');
        }
        if (r.status === 403) {
            throw new AuthError('the history API needs the admin role');
        }
        let body = null;
        try {
            body = await r.json();
        } catch (e) {
            body = null;
        }
        if (r.status === 404 && !(body && body.error)) {
            const err = new Error('no history API at ' + opts.url);
            err.absent = true;
            throw err;
        }
        if (!r.ok) {
            const why = body && typeof body.error === 'string'
                ? body.error + (typeof body.parameter === 'string'
                    ? ` (${body.parameter})` : '')
                : r.statusText;
            throw new Error(`HTTP ${r.status}` + (why ? `: ${why}` : ''));
        }
        if (!body || !Array.isArray(body.events)) {
            throw new Error('not an answer of the history API');
        }
        return { events: body.events,
            next: typeof body.nextCursor === 'string' && body.nextCursor
                ? body.nextCursor : null };
    }

    async function load() {
        if (busy || done) {
            return;
        }
        const ctl = new AbortController();
        busy = ctl;
        const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
        const type = feed.type();
        show('loading', 'loading older events…');
        let added = 0;
        let full = false;
        try {
            for (let i = 0; i < MAX_PAGES && !done && !added && !full;
                i++) {
                const p = next;
                const r = await page(cursors[p], type, ctl.signal);
                if (busy !== ctl) {
                    return;         // reset meanwhile
                }
                ({ added, full } = feed.addOlder(r.events, p));
                if (r.next) {
                    cursors[p + 1] = r.next;
                    cursors.length = p + 2;
                    next = p + 1;
                } else {
                    done = true;
                }
            }
        } catch (e) {
            if (busy !== ctl) {
                return;
            }
            busy = null;
            if (e instanceof AuthError) {
                show('idle', '');
                opts.onAuthError(e.message);
            } else if (e.absent) {
                show('absent', e.message + ': older events cannot be ' +
                    'loaded here.');
            } else {
                const why = e.name === 'AbortError' || e.name ===
                    'TimeoutError' ? `no answer in ${TIMEOUT_MS / 1000} s`
                    : e.message;
                show('error', `Could not load older events: ${why}.`,
                    'Retry');
            }
            return;
        } finally {
            clearTimeout(timer);
        }
        busy = null;
        const n = feed.olderCount();
        const what = `${n} older event${n === 1 ? '' : 's'} loaded` +
            (type ? ` (${type})` : '');
        if (full) {
            show('full', `${what}; the page holds no more.`);
        } else if (done) {
            show('done', `${what}; nothing older.`);
        } else if (!added) {
            show('idle', `${what}; ${MAX_PAGES} pages held only events ` +
                'already shown, click again for more.');
        } else {
            show('idle', what + '.');
        }
    }

    // back to the newest page, nothing loaded
    function reset() {
        if (busy) {
            busy.abort();
            busy = null;
        }
        cursors = [null];
        next = 0;
        done = false;
        show('idle', '');
    }

    // The events from `since` (ms) on, newest first: what a reconnect
    // that was not recovered missed (the snapshot holds only the last
    // ones). At most MAX_PAGES pages; stops at the first older event.
    // Events of the same millisecond as the newest row are taken too:
    // the feed keeps each id once.
    async function gap(since) {
        const ctl = new AbortController();
        const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
        const found = [];
        let cursor = null;
        try {
            for (let i = 0; i < MAX_PAGES; i++) {
                const r = await page(cursor, '', ctl.signal);
                let older = false;
                for (const e of r.events) {
                    const t = e && Date.parse(e.timestamp);
                    if (!(t >= since)) {
                        older = true;
                        break;
                    }
                    found.push(e);
                }
                if (older || !r.next) {
                    break;
                }
                cursor = r.next;
            }
        } finally {
            clearTimeout(timer);
        }
        return found;
    }

    button.addEventListener('click', load);

    show('idle', '');

    return {
        load,
        reset,
        gap,
        // the feed took out older rows: the bottom one is now from page
        // p (null: a live one); fetch from there again
        rewind(p) {
            if (busy) {
                busy.abort();
                busy = null;
            }
            if (p === null) {
                cursors = [null];
                next = 0;
            } else {
                cursors.length = p + 1;
                next = p;
            }
            done = false;
            show('idle', 'New events pushed older ones out; load older ' +
                'fetches them again.');
        },
    };
}
