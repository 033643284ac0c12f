'use strict';

// A dashboard client on the plain websocket protocol (the ws package).
//
//   node ws-client.js '{"url":"ws://127.0.0.1:8080/ws?token=...",
//                       "headers":{}, "timeout":20000, "brief":true,
//                       "deflate":{"threshold":0}}'
//
// deflate: the ws package's perMessageDeflate option (its default, true,
// when absent); "open" then says which extensions the server accepted.
//
// stdout, one JSON line each:
//   {"t":"open","extensions":".."}  {"t":"http","status":401,"body":".."}
//   {"t":"message","event":..,"data":..}  {"t":"text","text":..}
//   {"t":"close","code":1008,"reason":".."}  {"t":"error","message":..}
//   {"t":"timeout"}  {"t":"exit"}
// stdin, one JSON line each:
//   {"send":{"subscribe":["dashboard:api-activity"]}}  {"text":"raw"}
//   {"close":1000}

const WebSocket = require('ws');
const { out, options, summary, start, exit } = require('./lib');

const opts = options();

// wss:// in the harness's TLS mode: a throwaway self-signed certificate
const ws = new WebSocket(opts.url, { headers: opts.headers || {},
                                     handshakeTimeout: 10000,
                                     perMessageDeflate: opts.deflate === undefined
                                         ? true : opts.deflate,
                                     rejectUnauthorized: false });

ws.on('open', () => out({ t: 'open', extensions: ws.extensions }));

ws.on('unexpected-response', (req, res) => {
    let body = '';
    res.on('data', (d) => { body += d; });
    res.on('end', () => {
        out({ t: 'http', status: res.statusCode, body });
        exit(0);
    });
});

ws.on('message', (data, isBinary) => {
    const text = data.toString();
    let msg;
    try {
        msg = JSON.parse(text);
    } catch (e) {
        out({ t: 'text', binary: isBinary, text });
        return;
    }
    const line = { t: 'message', event: msg.event,
                   data: summary(msg.data, opts.brief) };
    if (msg.offset !== undefined) {
        line.offset = msg.offset;   // resume (issue 12)
    }
    out(line);
});

ws.on('close', (code, reason) => {
    out({ t: 'close', code, reason: reason.toString() });
    exit(0);
});

ws.on('error', (err) => out({ t: 'error', message: err.message }));

start(opts, (cmd) => {
    if (cmd.send !== undefined) {
        ws.send(JSON.stringify(cmd.send));
    } else if (cmd.text !== undefined) {
        ws.send(cmd.text);
    } else if (cmd.close !== undefined) {
        ws.close(cmd.close);
    }
}, () => {
    ws.terminate();
    exit(0);
});
