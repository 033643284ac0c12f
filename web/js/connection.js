// The Socket.IO connection to the dashboard namespace.
//
// socket.io-client's own reconnection is off: it does not retry after a
// refused CONNECT, and the page wants to show each wait. Instead every
// attempt reconnects the same socket (so it keeps the pid and offset of
// Socket.IO's connection state recovery: socket.recovered says whether
// the missed events follow); after a failure the next one waits
// min(cap, base * 2^n), less up to half of it at random ("equal
// jitter", so a restarted nginx is not hit by every page at once). A
// refusal of the token stops retrying: it will not get better.

const BASE_MS = 1000;
const CAP_MS = 30000;

// CONNECT_ERROR messages of activity_dashboard that mean "sign in again"
const AUTH_MESSAGES = ['invalid token', 'wrong algorithm', 'token expired',
    'missing role', 'no token'];

export function backoff(attempt, random = Math.random) {
    const d = Math.min(CAP_MS, BASE_MS * 2 ** Math.min(attempt, 16));
    return Math.round(d / 2 + random() * d / 2);
}

export function isAuthError(err) {
    const status = err && err.data && err.data.status;
    return status === 401 || status === 403
        || AUTH_MESSAGES.includes(err && err.message);
}

// opts: path, token, on (event name -> handler), onState(state, info),
// onConnect(socket, first) (first: no connection before; else
// socket.recovered says whether the missed events follow). States: connecting, connected, reconnecting (info:
// {attempt, at, reason}), error (info: {message}: the token was refused),
// closed.
export function connect(opts) {
    let socket = null;
    let attempt = 0;
    let timer = null;
    let stopped = false;
    let connects = 0;

    function open() {
        clearTimeout(timer);
        timer = null;
        if (stopped) {
            return;
        }
        opts.onState(attempt ? 'reconnecting' : 'connecting',
            { attempt, at: 0 });
        if (socket) {
            socket.connect();
            return;
        }
        socket = window.io('/dashboard', {
            path: opts.path,
            transports: ['websocket'],
            auth: { token: opts.token },
            reconnection: false,
            forceNew: true,
            timeout: 10000,
        });
        const s = socket;
        s.on('connect', () => {
            attempt = 0;
            opts.onState('connected', {});
            opts.onConnect(s, ++connects === 1);
        });
        s.on('connect_error', (err) => {
            if (s !== socket) {
                return;
            }
            if (isAuthError(err)) {
                stop();
                opts.onState('error', { message: err.message });
                return;
            }
            retry(err.message || 'connection failed');
        });
        s.on('disconnect', (reason) => {
            if (s === socket && reason !== 'io client disconnect') {
                retry(reason);
            }
        });
        for (const [name, fn] of Object.entries(opts.on)) {
            s.on(name, (data) => {
                if (s === socket) {
                    fn(data);
                }
            });
        }
    }

    function retry(reason) {
        if (stopped || timer) {
            return;
        }
        if (socket) {
            socket.disconnect();
        }
        const wait = backoff(attempt++);
        opts.onState('reconnecting',
            { attempt, at: Date.now() + wait, reason });
        timer = setTimeout(open, wait);
    }

    function stop() {
        stopped = true;
        clearTimeout(timer);
        timer = null;
        if (socket) {
            socket.disconnect();
        }
    }

    open();

    return {
        stop() {
            stop();
            opts.onState('closed', {});
        },
        // "retry now", and when the browser comes back online
        now() {
            if (!stopped && timer) {
                open();
            }
        },
        socket: () => socket,
    };
}
