// bench/soak.js: the traffic side of `make bench-soak`.
//
// Sends tracked requests at a steady rate for a fixed time and keeps a
// few plain-websocket dashboards connected, each of which measures the
// delay from a request's send time (carried in its path) to its
// `activity:new` frame.  One dashboard in turn closes and reconnects
// every --reconnect-every seconds, as real dashboards do.  Every minute
// (and at the end) it prints one JSON line:
//
//   {"minute":3,"sent":12000,"ok":12000,"failed":0,"received":239000,
//    "p50_ms":1.9,"p99_ms":7.2,"reconnects":2}
//
// and a last line {"done":true,"sent":N,"ok":N,"failed":N,"errors":{...}}.
//
//   node bench/soak.js --http URL --ws URL --rate R --seconds S
//        --dashboards D --reconnect-every SEC

'use strict';

const http = require('http');
const WebSocket = require('ws');
const { nowUs, args } = require('./lib');

const BUCKET_US = 100;           // histogram resolution
const BUCKETS = 100000;          // up to 10 s

const opt = args();
const rate = Number(opt.rate || 200);
const seconds = Number(opt.seconds || 600);
const dashboards = Number(opt.dashboards || 20);
const reconnectEvery = Number(opt['reconnect-every'] || 60);

let hist = new Uint32Array(BUCKETS + 1);
let received = 0, reconnects = 0;
let sent = 0, ok = 0, failed = 0;
const errors = {};
const marker = '"endpoint":"/api/soak/';

function record(sentUs) {
    const us = nowUs() - sentUs;
    hist[Math.min(Math.floor(us / BUCKET_US), BUCKETS)]++;
    received++;
}

function quantile(q) {
    let n = 0;
    for (let i = 0; i <= BUCKETS; i++) n += hist[i];
    if (n === 0) return null;
    const want = Math.ceil(n * q);
    let seen = 0;
    for (let i = 0; i <= BUCKETS; i++) {
        seen += hist[i];
        if (seen >= want) return (i + 0.5) * BUCKET_US / 1000;
    }
    return null;
}

const socks = [];

function connect(i) {
    const ws = new WebSocket(opt.ws, { perMessageDeflate: false });
    ws.on('message', (m) => {
        const s = m.toString();
        if (!s.startsWith('{"event":"activity:new"')) return;
        const k = s.indexOf(marker);
        if (k < 0) return;
        const rest = s.slice(k + marker.length, k + marker.length + 40);
        const sentUs = parseInt(rest.split('/')[1], 10);
        if (sentUs > 0) record(sentUs);
    });
    ws.on('error', () => {});
    ws.on('close', () => {
        // a dashboard that lost its connection comes back, as the page does
        if (socks[i] === ws && !stopping) {
            setTimeout(() => { socks[i] = connect(i); }, 1000);
        }
    });
    return ws;
}

let stopping = false;
for (let i = 0; i < dashboards; i++) socks.push(connect(i));

let turn = 0;
const reconnectTimer = setInterval(() => {
    const i = turn++ % dashboards;
    const old = socks[i];
    socks[i] = connect(i);
    reconnects++;
    old.close(1000);
}, reconnectEvery * 1000);

const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
const start = Date.now();

function send() {
    const seq = ++sent;
    const req = http.get(`${opt.http}/api/soak/${seq}/${nowUs()}`,
        { agent }, (res) => {
            if (res.statusCode === 200) ok++;
            else {
                failed++;
                errors[res.statusCode] = (errors[res.statusCode] || 0) + 1;
            }
            res.resume();
        });
    req.setTimeout(10000, () => req.destroy(new Error('timeout')));
    req.on('error', (e) => {
        failed++;
        errors[e.message] = (errors[e.message] || 0) + 1;
    });
}

let minute = 0;

function report() {
    minute++;
    console.log(JSON.stringify({ minute, sent, ok, failed, received,
        p50_ms: quantile(0.5), p99_ms: quantile(0.99), reconnects }));
    hist = new Uint32Array(BUCKETS + 1);
    received = 0;
}

const minuteTimer = setInterval(report, 60000);

const tick = setInterval(() => {
    const elapsed = (Date.now() - start) / 1000;
    if (elapsed >= seconds) {
        clearInterval(tick);
        clearInterval(reconnectTimer);
        // let the last events reach the dashboards, then the final report
        setTimeout(() => {
            clearInterval(minuteTimer);
            if (received > 0) report();
            stopping = true;
            for (const ws of socks) ws.close(1000);
            console.log(JSON.stringify({ done: true, sent, ok, failed,
                errors }));
            agent.destroy();
            setTimeout(() => process.exit(0), 500);
        }, 3000);
        return;
    }
    const due = Math.floor(elapsed * rate);
    while (sent < due) send();
}, 5);
