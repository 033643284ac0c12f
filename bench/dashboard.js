// bench/dashboard.js: end-to-end latency from a tracked request to the
// `activity:new` event at every dashboard client.
//
// The parent starts client processes (each holding its share of the
// connections), waits until all are open, then sends tracked requests
// at a fixed rate.  Each request path carries its send time in
// microseconds of the monotonic clock (process.hrtime, CLOCK_MONOTONIC:
// one clock for every process on the machine); a client that receives
// the event takes the difference.  Clients keep a histogram, not every
// sample.
//
// Clients (--client):
//   c    (default) bench/dashclient.c: every client of a process in one
//        epoll loop, frames parsed just enough; speaks plain WebSocket
//        (--proto ws) or Engine.IO/Socket.IO over WebSocket (--proto
//        sio: CONNECT to --nsp with {"token": --token}).  Light enough
//        that 20,000 frames a second do not load the machine.
//   raw  Node raw sockets scanning what arrives (plain WebSocket only)
//   ws   the `ws` library (plain WebSocket only)
//
//   node bench/dashboard.js --ws URL --http URL --clients N --rate R
//        --seconds S [--procs P] [--client c|raw|ws] [--proto ws|sio]
//        [--token T] [--nsp /dashboard] [--dashclient PATH] [--settle S]
//
// After the last request it waits until every open client has every
// event, or --settle seconds (2) have passed, whichever comes first.
//        [--nginx-pids PID,PID] [--cpu-pids PID,PID] [--monitor REDIS_PORT]
//
// --cpu-pids: the processes that serve the dashboards (nginx's workers,
// the Node server): their CPU time over the run per delivered frame.
//
// --monitor: also watch Redis with MONITOR and time, per bench event,
// its first command in Redis (the enqueue: our LPUSH, BullMQ's job
// script) and its PUBLISH, from the same send time: where the time goes
// before the fan-out. MONITOR costs Redis some work: a diagnostic, off
// by default.

'use strict';

const { fork, spawn } = require('child_process');
const net = require('net');
const fs = require('fs');
const { performance } = require('perf_hooks');
const { args } = require('./lib');

// microseconds of CLOCK_MONOTONIC, the clock dashclient.c reads
function nowUs() {
    return Number(process.hrtime.bigint() / 1000n);
}

// Tracked requests written straight onto kept-alive sockets: the send
// time is read right before the write(), so the load generator's own
// request building (Node's http client: a tenth of a millisecond and
// more on a busy box) is not counted as latency of the stack measured.
// A request goes to an idle socket (a few are open before the first
// one, so that requests falling due together need no TCP handshake), a
// new one while fewer than `max` are open, else it is pipelined behind
// the least busy one; a socket whose server said "Connection: close"
// takes no more. Responses are framed by Content-Length (or an empty
// chunked body); any status but 200, and any request a socket closes
// under, counts as failed.
class RawLoad {
    constructor(base, max) {
        const u = new URL(base);
        this.host = u.hostname;
        this.port = Number(u.port);
        this.max = max;
        this.socks = [];
        this.bad = 0;           // answered, but not 200
        this.lost = 0;          // never answered: the socket went away
        this.answered = 0;
        this.sent = 0;
    }

    // n sockets connected before the first request
    ready(n) {
        return Promise.all(Array.from({ length: n }, () =>
            new Promise((res, rej) => {
                const s = this.open();
                s.once('connect', res);
                s.once('error', rej);
            })));
    }

    get failed() {
        return this.bad + this.lost;
    }

    open() {
        const s = net.connect({ host: this.host, port: this.port,
                                noDelay: true });
        s.out = 0;
        s.closing = false;
        s.buf = Buffer.alloc(0);
        s.on('data', (d) => {
            s.buf = s.buf.length ? Buffer.concat([s.buf, d]) : d;
            this.parse(s);
        });
        const gone = () => {
            this.lost += s.out;
            s.out = 0;
            this.socks = this.socks.filter((x) => x !== s);
        };
        s.on('error', gone);
        s.on('close', gone);
        this.socks.push(s);
        return s;
    }

    parse(s) {
        for (;;) {
            const end = s.buf.indexOf('\r\n\r\n');
            if (end < 0) return;
            const head = s.buf.toString('latin1', 0, end);
            const len = /\r\ncontent-length:\s*(\d+)/i.exec(head);
            let size = end + 4;
            if (len) {
                size += Number(len[1]);
            } else if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
                const z = s.buf.indexOf('0\r\n\r\n', end + 4);
                if (z < 0) return;
                size = z + 5;
            }
            if (s.buf.length < size) return;
            if (!/^HTTP\/1\.1 200 /.test(head)) this.bad++;
            if (/\r\nconnection:\s*close/i.test(head)) s.closing = true;
            this.answered++;
            s.out--;
            s.buf = s.buf.subarray(size);
        }
    }

    get(prefix, clock) {
        const open = this.socks.filter((x) => !x.closing);
        let s = open.find((x) => x.out === 0);
        if (!s && open.length < this.max) s = this.open();
        if (!s) s = open.reduce((x, y) => (y.out < x.out ? y : x));
        s.out++;
        this.sent++;
        s.write(`GET ${prefix}${clock()} HTTP/1.1\r\n`
                + `Host: ${this.host}\r\n\r\n`);
    }

    // wait for every answer, at most ms; the missing ones count as failed
    async drain(ms) {
        const until = performance.now() + ms;
        while (this.answered + this.lost < this.sent
               && performance.now() < until) {
            await new Promise((res) => setTimeout(res, 10));
        }
        this.lost = this.sent - this.answered;
    }

    close() {
        for (const s of this.socks) s.destroy();
    }
}

const BUCKET_US = 50;            // histogram resolution
const BUCKETS = 200000;          // up to 10 s

function client(opt) {
    const hist = new Uint32Array(BUCKETS + 1);
    let received = 0, open = 0, closed = 0, max = 0;
    const socks = [];
    const marker = Buffer.from('"endpoint":"/api/bench/');

    // snapshots hold events of earlier runs: only this run's count
    let since = Infinity;

    const record = (sent) => {
        if (!(sent >= since)) return;
        const us = nowUs() - sent;
        if (us > max) max = us;
        hist[Math.min(Math.floor(us / BUCKET_US), BUCKETS)]++;
        received++;
    };

    const opened = () => {
        if (++open === opt.clients) process.send({ open: true });
    };

    for (let i = 0; i < opt.clients; i++) {
        if (opt.mode === 'ws') {
            const WebSocket = require('ws');
            const ws = new WebSocket(opt.ws, { perMessageDeflate: false });
            ws.on('open', opened);
            ws.on('message', (m) => {
                const s = m.toString();
                if (!s.startsWith('{"event":"activity:new"')) return;
                const k = s.indexOf('/bench/');
                if (k >= 0) record(parseInt(s.slice(k + 7, k + 30), 10));
            });
            ws.on('close', () => closed++);
            ws.on('error', () => {});
            socks.push(ws);
            continue;
        }

        // raw: one activity:new frame a marker (room frames need a
        // subscribe, and the snapshot holds no bench events)
        const u = new URL(opt.ws);
        const sock = net.connect(Number(u.port), u.hostname);
        let upgraded = false, carry = Buffer.alloc(0);
        sock.setNoDelay(true);
        sock.on('connect', () => {
            sock.write(`GET ${u.pathname}${u.search} HTTP/1.1\r\n`
                + `Host: ${u.host}\r\nUpgrade: websocket\r\n`
                + 'Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n'
                + 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
        });
        sock.on('data', (chunk) => {
            let buf = carry.length ? Buffer.concat([carry, chunk]) : chunk;
            if (!upgraded) {
                const end = buf.indexOf('\r\n\r\n');
                if (end < 0) { carry = buf; return; }
                upgraded = true;
                opened();
                buf = buf.subarray(end + 4);
            }
            let k = 0, last = 0;
            while ((k = buf.indexOf(marker, k)) >= 0) {
                const from = k + marker.length;
                const to = buf.indexOf(0x22, from);          // '"'
                if (to < 0) break;
                record(parseInt(buf.toString('latin1', from, to), 10));
                k = last = to;
            }
            // keep a tail that may hold a marker cut in two
            const keep = Math.max(last, buf.length - 64);
            carry = Buffer.from(buf.subarray(keep));
        });
        sock.on('close', () => closed++);
        sock.on('error', () => {});
        socks.push(sock);
    }

    process.on('message', (msg) => {
        if (msg.start) {
            since = msg.start;
        }
        if (msg.count) {
            process.send({ count: received });
        }
        if (msg.report) {
            const h = {};
            hist.forEach((n, i) => { if (n) h[i] = n; });
            process.send({ received, closed, max, hist: h });
            socks.forEach((s) => s.terminate ? s.terminate() : s.destroy());
            setTimeout(() => process.exit(0), 100);
        }
    });
}


// A dashclient.c process with the same face as a forked Node client:
// 'message' events ({open}, {received, closed, max, hist}) and send().
function dashclient(a, n) {
    const u = new URL(a.ws);
    const bin = a.dashclient || `${__dirname}/../build/dashclient`;
    const p = spawn(bin, ['--port', u.port, '--path', u.pathname + u.search,
                          '--clients', String(n), '--proto', a.proto || 'ws',
                          '--nsp', a.nsp || '/dashboard',
                          '--token', a.token || ''],
                    { stdio: ['pipe', 'pipe', 'inherit'] });
    const { EventEmitter } = require('events');
    const c = new EventEmitter();
    c.pid = p.pid;
    let out = '';
    p.stdout.on('data', (d) => {
        out += d;
        let nl;
        while ((nl = out.indexOf('\n')) >= 0) {
            const line = out.slice(0, nl);
            out = out.slice(nl + 1);
            if (line.startsWith('count ')) {
                c.emit('message', { count: Number(line.slice(6)) });
            } else if (line.startsWith('open ')) {
                c.failed = Number(line.split(' ')[2]);
                c.emit('message', { open: true });
            } else if (line.startsWith('{')) {
                c.emit('message', JSON.parse(line));
            }
        }
    });
    p.on('exit', (code) => {
        if (code) {
            console.error(`dashclient exited with ${code}`);
            process.exit(1);
        }
    });
    c.send = (m) => {
        if (m.start) p.stdin.write(`start ${m.start}\n`);
        if (m.report) p.stdin.write('report\n');
        if (m.count) p.stdin.write('count\n');
    };
    return c;
}


// MONITOR on Redis: the delay from send time to an event's first
// command (enqueue) and to its PUBLISH, as sorted arrays of us.
function monitor(port) {
    const sock = net.connect(port, '127.0.0.1');
    const seen = new Set();
    const enq = [], pub = [];
    let since = Infinity, carry = '';
    sock.setNoDelay(true);
    sock.write('MONITOR\r\n');
    sock.on('data', (d) => {
        const now = nowUs();
        const lines = (carry + d.toString('latin1')).split('\r\n');
        carry = lines.pop();
        for (const l of lines) {
            const m = l.match(/\/api\/bench\/(\d+)/);
            if (!m) continue;
            const sent = Number(m[1]);
            if (sent < since) continue;
            const cmd = (l.match(/\] "([A-Za-z]+)"/) || [])[1] || '';
            if (!seen.has(sent)) {
                seen.add(sent);
                enq.push(now - sent);
            }
            if (cmd.toUpperCase() === 'PUBLISH') pub.push(now - sent);
        }
    });
    sock.on('error', () => {});
    return {
        start: (us) => { since = us; },
        stop: () => {
            sock.destroy();
            const q = (v, p) => v.length
                ? v.sort((x, y) => x - y)[Math.min(v.length - 1,
                    Math.floor(v.length * p))] / 1000 : null;
            return { enqueue_p50_ms: q(enq, 0.5), enqueue_p99_ms: q(enq, 0.99),
                     publish_p50_ms: q(pub, 0.5), publish_p99_ms: q(pub, 0.99),
                     published: pub.length };
        },
    };
}


// CPU time (us) of the client processes so far, from /proc (-1 if gone)
function cpuUs(children) {
    const tick = 1e6 / 100;         // getconf CLK_TCK
    let sum = 0;
    for (const c of children) {
        try {
            const f = fs.readFileSync(`/proc/${c.pid}/stat`, 'utf8')
                .split(') ')[1].split(' ');
            sum += (Number(f[11]) + Number(f[12])) * tick;
        } catch (e) {
            return -1;
        }
    }
    return sum;
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
    const procs = Number(a.procs
        || ((a.client || 'c') !== 'c' && clients >= 1000 ? 2 : 1));
    const pids = (a['nginx-pids'] || '').split(',').filter(Boolean);

    const rss0 = pids.length ? rss(pids) : 0;
    const children = [];

    const mode = a.client || 'c';
    for (let i = 0; i < procs; i++) {
        const share = Math.floor(clients / procs)
            + (i < clients % procs ? 1 : 0);
        if (mode === 'c') {
            children.push(dashclient(a, share));
            continue;
        }
        const c = fork(__filename, ['--child', '1'],
                       { env: { ...process.env, BENCH_WS: a.ws,
                                BENCH_CLIENTS: String(share),
                                BENCH_MODE: mode } });
        children.push(c);
    }

    await Promise.all(children.map((c) => new Promise((res) => {
        c.on('message', (m) => { if (m.open) res(); });
    })));
    const refused = children.reduce((n, c) => n + (c.failed || 0), 0);

    await new Promise((res) => setTimeout(res, 1000));
    const rss1 = pids.length ? rss(pids) : 0;

    const mon = a.monitor ? monitor(Number(a.monitor)) : null;
    const since = nowUs();
    children.forEach((c) => c.send({ start: since }));
    if (mon) mon.start(since);
    const cpu0 = cpuUs(children);
    const served = (a['cpu-pids'] || '').split(',').filter(Boolean)
        .map((pid) => ({ pid }));
    const srv0 = cpuUs(served);

    // the load: a fixed rate, spread over the second
    const load = new RawLoad(a.http, 32);
    await load.ready(4);
    let sent = 0;
    const total = rate * seconds;
    const start = performance.now();

    await new Promise((done) => {
        const tick = () => {
            const due = Math.min(total,
                Math.floor((performance.now() - start) / 1000 * rate));
            while (sent < due) {
                sent++;
                load.get('/api/bench/', nowUs);
            }
            if (sent >= total) return done();
            setTimeout(tick, 1);
        };
        tick();
    });
    await load.drain(Number(a.settle || 2) * 1000);
    const failed = load.failed;

    // let the last events arrive
    const want = sent * (clients - refused);
    const settle = performance.now() + Number(a.settle || 2) * 1000;
    while (performance.now() < settle) {
        const counts = await Promise.all(children.map((c) =>
            new Promise((res) => {
                const on = (m) => {
                    if (m.count === undefined) return;
                    c.removeListener('message', on);
                    res(m.count);
                };
                c.on('message', on);
                c.send({ count: true });
            })));
        if (counts.reduce((x, y) => x + y, 0) >= want) break;
        await new Promise((res) => setTimeout(res, 100));
    }

    const wall = nowUs() - since;
    const cpu1 = cpuUs(children);
    const srv1 = cpuUs(served);
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
        closed, refused,
        // the clients' own CPU over the run, as a share of one core
        client_cpu: cpu1 >= 0 && cpu0 >= 0 ? (cpu1 - cpu0) / wall : null,
        // the serving processes' CPU per delivered frame, in us
        server_us_per_frame: served.length && received && srv0 >= 0
            && srv1 >= 0 ? (srv1 - srv0) / received : null,
        nginx_kib_per_client: pids.length
            ? (rss1 - rss0) / clients : null,
    };

    if (mon) Object.assign(out, mon.stop());
    console.log(JSON.stringify(out));
    load.close();
    process.exit(0);
}

if (process.argv.includes('--child')) {
    client({ ws: process.env.BENCH_WS,
             clients: Number(process.env.BENCH_CLIENTS),
             mode: process.env.BENCH_MODE });
} else {
    main().catch((e) => { console.error(e); process.exit(1); });
}
