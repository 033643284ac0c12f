'use strict';

// A dashboard client on the real socket.io-client v4.
//
//   node sio-client.js '{"url":"http://127.0.0.1:8080/dashboard",
//                        "token":"...", "timeout":20000, "brief":true}'
//
// stdout, one JSON line each:
//   {"t":"connect","extensions":".."}  {"t":"connect_error","message":..,"data":..}
//   {"t":"event","event":"activity:new","data":..}
//   {"t":"ack","tag":..,"data":..}  {"t":"disconnect","reason":..}
//   {"t":"timeout"}  {"t":"exit"}
// stdin, one JSON line each:
//   {"emit":"subscribe","args":[["dashboard:user-activity"]],"tag":"s1"}
//     (with a tag the last argument is an ack callback)
//   {"close":true}

const { io } = require('socket.io-client');
const { out, options, summary, start, exit } = require('./lib');

const opts = options();

const socket = io(opts.url, {
    transports: opts.transports || ['websocket'],
    auth: opts.token === undefined ? {} : { token: opts.token },
    query: opts.query || {},
    reconnection: false,
    timeout: 10000,
    // https:// in the harness's TLS mode: a self-signed certificate
    rejectUnauthorized: false,
    // engine.io-client hands this to the ws package (its default)
    ...(opts.deflate === undefined ? {} : { perMessageDeflate: opts.deflate }),
});

// the WebSocket extensions the server accepted (the ws package's socket)
function extensions() {
    const t = socket.io.engine && socket.io.engine.transport;
    return t && t.ws ? t.ws.extensions : null;
}

socket.on('connect', () => out({ t: 'connect', extensions: extensions() }));

socket.on('connect_error', (err) => {
    out({ t: 'connect_error', message: err.message,
          data: err.data === undefined ? null : err.data });
    exit(0);
});

socket.on('disconnect', (reason) => {
    out({ t: 'disconnect', reason });
    exit(0);
});

socket.onAny((event, ...args) => {
    out({ t: 'event', event,
          data: summary(args.length ? args[0] : null, opts.brief) });
});

start(opts, (cmd) => {
    if (cmd.close) {
        socket.disconnect();
        return;
    }
    if (cmd.emit) {
        const args = cmd.args || [];
        if (cmd.tag !== undefined) {
            args.push((data) => out({ t: 'ack', tag: cmd.tag, data }));
        }
        socket.emit(cmd.emit, ...args);
    }
}, () => {
    socket.disconnect();
    exit(0);
});
