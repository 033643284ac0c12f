// bench/dashboard.js: end-to-end latency from a tracked request to the
// `activity:new` frame at every dashboard client.
//
// The parent forks client processes (each holding its share of the
// WebSocket connections), waits until all are open, then sends tracked
// requests at a fixed rate.  Each request path carries its send time in
// microseconds (performance.timeOrigin + performance.now(), one clock for
// every process on the machine); a client that receives the event takes
// the difference.  Clients keep a histogram, not every sample.
//
//   node bench/dashboard.js --ws URL --http URL --clients N --rate R
//        --seconds S [--procs P] [--nginx-pids PID,PID]

'use strict';

const { fork } = require('child_process');
const http = require('http');
const fs = require('fs');
const { performance } = require('perf_hooks');

const BUCKET_US = 50;            // histogram resolution
const BUCKETS = 200000;          // up to 10 s

function nowUs() {
    return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

function args() {
    const a = {};
    const v = process.argv.slice(2);
    for (let i = 0; i < v.length; i += 2) {
        a[v[i].replace(/^--/, '')] = v[i + 1];
    }
    return a;
}

function client(opt) {
    const WebSocket = require('ws');
    const hist = new Uint32Array(BUCKETS + 1);
    let received = 0, open = 0, closed = 0, max = 0;
    const socks = [];

    for (let i = 0; i < opt.clients; i++) {
        const ws = new WebSocket(opt.ws, { perMessageDeflate: false });
        ws.on('open', () => {
            if (++open === opt.clients) process.send({ open: true });
        });
        ws.on('message', (m) => {
            const s = m.toString();
            if (!s.startsWith('{"event":"activity:new"')) return;
            const k = s.indexOf('/bench/');
            if (k < 0) return;
            const sent = parseInt(s.slice(k + 7, k + 30), 10);
            const us = nowUs() - sent;
            if (us > max) max = us;
            hist[Math.min(Math.floor(us / BUCKET_US), BUCKETS)]++;
            received++;
        });
        ws.on('close', () => closed++);
        ws.on('error', () => {});
        socks.push(ws);
    }

    process.on('message', (msg) => {
        if (msg.report) {
            const h = {};
            hist.forEach((n, i) => { if (n) h[i] = n; });
            process.send({ received, closed, max, hist: h });
            socks.forEach((ws) => ws.terminate());
            setTimeout(() => process.exit(0), 100);
        }
    });
}

function percentile(hist, total, p) {
    let seen = 0;
    const keys = Object.keys(hist).map(Number).sort((x, y) => x - y);
    for (const k of keys) {
        seen += hist[k];
        if (seen >= total * p) return (k + 1) * BUCKET_US / 1000;
    }
    return NaN;
}

function rss(pids) {
    return pids.reduce((sum, pid) => {
        const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
            .match(/VmRSS:\s+(\d+)/);
        return sum + (m ? Number(m[1]) : 0);
    }, 0);
}

async function main() {
    const a = args();
    const clients = Number(a.clients || 100);
    const rate = Number(a.rate || 500);
    const seconds = Number(a.seconds || 10);
    const procs = Number(a.procs || (clients >= 1000 ? 2 : 1));
    const pids = (a['nginx-pids'] || '').split(',').filter(Boolean);

    const rss0 = pids.length ? rss(pids) : 0;
    const children = [];

    for (let i = 0; i < procs; i++) {
        const share = Math.floor(clients / procs)
            + (i < clients % procs ? 1 : 0);
        const c = fork(__filename, ['--child', '1'],
                       { env: { ...process.env, BENCH_WS: a.ws,
                                BENCH_CLIENTS: String(share) } });
        children.push(c);
    }

    await Promise.all(children.map((c) => new Promise((res) => {
        c.on('message', (m) => { if (m.open) res(); });
    })));

    await new Promise((res) => setTimeout(res, 1000));
    const rss1 = pids.length ? rss(pids) : 0;

    // the load: a fixed rate, spread over the second
    const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
    let sent = 0, failed = 0;
    const total = rate * seconds;
    const start = performance.now();

    await new Promise((done) => {
        const tick = () => {
            const due = Math.min(total,
                Math.floor((performance.now() - start) / 1000 * rate));
            while (sent < due) {
                sent++;
                const req = http.get(`${a.http}/api/bench/${nowUs()}`,
                                     { agent }, (res) => {
                    if (res.statusCode !== 200) failed++;
                    res.resume();
                });
                req.on('error', () => failed++);
            }
            if (sent >= total) return done();
            setTimeout(tick, 1);
        };
        tick();
    });

    // let the last events arrive
    await new Promise((res) => setTimeout(res, 2000));

    const reports = await Promise.all(children.map((c) =>
        new Promise((res) => {
            c.on('message', (m) => { if (m.hist) res(m); });
            c.send({ report: true });
        })));

    const hist = {};
    let received = 0, closed = 0, max = 0;
    for (const r of reports) {
        received += r.received;
        closed += r.closed;
        max = Math.max(max, r.max);
        for (const [k, n] of Object.entries(r.hist)) {
            hist[k] = (hist[k] || 0) + n;
        }
    }

    const expected = sent * clients;
    const out = {
        clients, rate, seconds, sent, failed,
        delivered: expected ? received / expected : 0,
        p50_ms: percentile(hist, received, 0.50),
        p99_ms: percentile(hist, received, 0.99),
        max_ms: max / 1000,
        closed,
        nginx_kib_per_client: pids.length
            ? (rss1 - rss0) / clients : null,
    };

    console.log(JSON.stringify(out));
    agent.destroy();
    process.exit(0);
}

if (process.argv.includes('--child')) {
    client({ ws: process.env.BENCH_WS,
             clients: Number(process.env.BENCH_CLIENTS) });
} else {
    main().catch((e) => { console.error(e); process.exit(1); });
}
