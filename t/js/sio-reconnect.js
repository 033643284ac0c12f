'use strict';

// A Socket.IO dashboard client that reconnects by itself, as the page
// does (t/module_signals.t: dashboards across an nginx binary upgrade).
//
//   node sio-reconnect.js '{"url":"http://127.0.0.1:8080/dashboard",
//                           "token":"...", "timeout":30000}'
//
// stdout, one JSON line each:
//   {"t":"connect","n":1}  {"t":"disconnect","reason":"transport close"}
//   {"t":"event","event":"snapshot"}  {"t":"timeout"}  {"t":"exit"}
// stdin: closing it disconnects and exits.

const { io } = require('socket.io-client');
const { out, options, start, exit } = require('./lib');

const opts = options();

const socket = io(opts.url, {
    transports: ['websocket'],
    auth: { token: opts.token },
    reconnection: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 1000,
    timeout: 10000,
});

let n = 0;

socket.on('connect', () => out({ t: 'connect', n: ++n }));
socket.on('disconnect', (reason) => out({ t: 'disconnect', reason }));
socket.on('connect_error', (err) => out({ t: 'connect_error',
                                          message: err.message }));
socket.onAny((event) => out({ t: 'event', event }));

start(opts, () => {}, () => {
    socket.disconnect();
    exit(0);
});
