'use strict';

// A Socket.IO dashboard client for connection state recovery (issue 12):
// the real socket.io-client (>= 4.6), unchanged; it reconnects only when
// told to, so a test decides how long it stays away.
//
//   node sio-resume.js '{"url":"http://127.0.0.1:8080/dashboard",
//                        "path":"/socket.io/", "token":"...",
//                        "timeout":60000}'
//
// stdout, one JSON line each:
//   {"t":"connect","recovered":true|false,"pid":"<pid>"|null}
//   {"t":"disconnect","reason":".."}  {"t":"connect_error","message":".."}
//   {"t":"event","event":"activity:new","id":"<event id>",
//    "offset":"<last string argument>"|null}
//   {"t":"event","event":"snapshot","ids":[...],"offset":..}
//   {"t":"ack","tag":..,"data":..}  {"t":"timeout"}  {"t":"exit"}
// stdin, one JSON line each:
//   {"emit":"subscribe","args":[["dashboard:api-activity"]],"tag":"s1"}
//   {"drop":true}        the transport closes, as on a network loss
//   {"connect":true,"url":"http://127.0.0.1:8081"}   reconnect (url:
//                        another nginx instance, same session)
//   {"close":true}

const { io } = require('socket.io-client');
const { out, options, start, exit } = require('./lib');

const opts = options();

const socket = io(opts.url, {
    path: opts.path || '/socket.io/',
    transports: ['websocket'],
    // opts.auth: more CONNECT fields, e.g. a forged pid and offset
    auth: Object.assign({ token: opts.token }, opts.auth || {}),
    reconnection: false,
    timeout: 10000,
});

// pid: the session id the server gave (t/resume_review.t checks it is
// not predictable)
socket.on('connect', () => out({ t: 'connect',
                                 recovered: socket.recovered === true,
                                 pid: socket._pid || null }));
socket.on('disconnect', (reason) => out({ t: 'disconnect', reason }));
socket.on('connect_error', (err) => out({ t: 'connect_error',
                                          message: err.message }));

socket.onAny((event, ...args) => {
    const data = args.length ? args[0] : null;
    const last = args.length > 1 && typeof args[args.length - 1] === 'string'
        ? args[args.length - 1] : null;
    if (event === 'snapshot') {
        out({ t: 'event', event, offset: last,
              ids: ((data && data.events) || []).map((e) => e.id) });
        return;
    }
    const ev = data && typeof data === 'object' ? data : {};
    out({ t: 'event', event, offset: last, id: ev.id || null,
          user: ev.userId === undefined ? null : ev.userId });
});

start(opts, (cmd) => {
    if (cmd.close) {
        socket.disconnect();
        return;
    }
    if (cmd.drop) {
        socket.io.engine.close();
        return;
    }
    if (cmd.connect) {
        if (cmd.url) {
            // the Manager opens its next transport on this address
            socket.io.uri = cmd.url;
        }
        socket.connect();
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
