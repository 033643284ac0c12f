// bench/deflate.js: permessage-deflate against plain frames, same events.
//
// Each round opens N raw-socket dashboard clients (in P forked processes)
// that either offer permessage-deflate or do not, waits for every
// snapshot, then PUBLISHes E events (API_CALL events shaped like the
// module's, each different) to dashboard:events straight into Redis at
// a fixed rate, and waits until every client has every frame.  Clients
// count the bytes they read after the 101 (WebSocket frames: headers and
// payloads) and the text frames; one client per process inflates its
// frames and checks that each is a whole activity:new frame (its start
// and end as published, not byte for byte).  nginx's CPU is
// utime + stime of its worker process (/proc/PID/stat) over the round.
// The snapshot each client gets first holds the last 50 events of the
// rounds before; its size on the wire is reported too.
// Rounds alternate plain / deflate; the medians are printed, and one
// JSON line at the end.
//
//   node bench/deflate.js --ws URL --redis PORT --nginx-pid PID
//        [--clients N] [--events E] [--rate R] [--rounds K] [--procs P]

'use strict';

const { fork } = require('child_process');
const net = require('net');
const fs = require('fs');
const zlib = require('zlib');
const { args } = require('./lib');

const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

function client(opt) {
    const u = new URL(opt.ws);
    let open = 0, bytes = 0, frames = 0, rsv1 = 0, bad = 0, checked = 0;
    let snapshotBytes = 0;
    let counting = false;
    const socks = [];

    for (let i = 0; i < opt.clients; i++) {
        const checker = (i === 0);
        const sock = net.connect(Number(u.port), u.hostname);
        let upgraded = false, snapshot = false, carry = null, skip = 0;
        let cur = null;               // the frame a checker is gathering

        sock.setNoDelay(true);
        sock.on('connect', () => {
            sock.write(`GET ${u.pathname}${u.search} HTTP/1.1\r\n`
                + `Host: ${u.host}\r\nUpgrade: websocket\r\n`
                + 'Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n'
                + 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n'
                + (opt.deflate ? 'Sec-WebSocket-Extensions: '
                   + 'permessage-deflate; client_max_window_bits\r\n' : '')
                + '\r\n');
        });

        const frame = (b0, payload) => {
            if (!snapshot) {
                snapshot = true;
                if (++open === opt.clients) process.send({ open: true });
                return;
            }
            if (!counting || (b0 & 0x0f) !== 1) return;
            frames++;
            if (b0 & 0x40) rsv1++;
            if (payload) {
                const text = (b0 & 0x40)
                    ? zlib.inflateRawSync(Buffer.concat([payload, TAIL]),
                        { finishFlush: zlib.constants.Z_SYNC_FLUSH })
                        .toString()
                    : payload.toString();
                if (!/^\{"event":"activity:new","data":\{"id":/.test(text)
                    || !text.endsWith('"details":{}}}}')) bad++;
                checked++;
            }
        };

        sock.on('data', (chunk) => {
            let buf = carry ? Buffer.concat([carry, chunk]) : chunk;
            carry = null;
            if (!upgraded) {
                const end = buf.indexOf('\r\n\r\n');
                if (end < 0) { carry = buf; return; }
                upgraded = true;
                buf = buf.subarray(end + 4);
            } else if (counting) {
                bytes += chunk.length;
            }
            let i = 0;
            for (;;) {
                if (skip) {
                    const take = Math.min(skip, buf.length - i);
                    if (cur) cur.parts.push(buf.subarray(i, i + take));
                    i += take;
                    skip -= take;
                    if (skip) break;
                    if (cur) {
                        frame(cur.b0, Buffer.concat(cur.parts));
                        cur = null;
                    }
                }
                if (buf.length - i < 2) break;
                const b0 = buf[i];
                let n = buf[i + 1] & 0x7f, h = 2;
                if (n === 126) {
                    if (buf.length - i < 4) break;
                    n = buf.readUInt16BE(i + 2);
                    h = 4;
                } else if (n === 127) {
                    if (buf.length - i < 10) break;
                    n = Number(buf.readBigUInt64BE(i + 2));
                    h = 10;
                }
                i += h;
                if (!snapshot && checker) snapshotBytes = h + n;
                if (checker && snapshot && counting) {
                    cur = { b0, parts: [] };
                    skip = n;
                    if (n === 0) { frame(b0, Buffer.alloc(0)); cur = null; }
                } else {
                    frame(b0, null);
                    skip = n;
                }
            }
            if (i < buf.length) carry = Buffer.from(buf.subarray(i));
        });
        sock.on('error', () => {});
        socks.push(sock);
    }

    process.on('message', (msg) => {
        if (msg.start) {
            counting = true;
        }
        if (msg.count) {
            process.send({ frames, bytes, rsv1, bad, checked,
                           snapshotBytes });
        }
        if (msg.stop) {
            socks.forEach((s) => s.destroy());
            setTimeout(() => process.exit(0), 50);
        }
    });
}


function cpu(pid) {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
        .replace(/^.*\)\s+/s, '').split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;     // CLK_TCK 100
}

const AGENTS = [
    'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)'
        + ' Chrome/131.0 Safari/537.36',
    'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15'
        + ' (KHTML, like Gecko) Version/17.1 Safari/605.1.15',
    'curl/8.5.0',
];
const ENDPOINTS = ['/api/products', '/api/products/42', '/api/orders',
                   '/api/users/me', '/api/cart/items'];

// An API_CALL event as the module makes it, different every time.
function event(k) {
    const id = `0193a1b2-c3d4-7${(k % 4096).toString(16).padStart(3, '0')}-`
        + `8${(k * 7919 % 4096).toString(16).padStart(3, '0')}-`
        + `${(k * 104729).toString(16).padStart(12, '0').slice(-12)}`;
    const ts = new Date(Date.UTC(2026, 10, 29, 10, 0, 0) + k * 37)
        .toISOString();
    return `{"id":"${id}","eventType":"API_CALL","userId":"${1000 + k % 97}",`
        + `"timestamp":"${ts}","metadata":{"ipAddress":"203.0.113.`
        + `${k % 250}","userAgent":"${AGENTS[k % AGENTS.length]}",`
        + `"endpoint":"${ENDPOINTS[k % ENDPOINTS.length]}","method":"GET",`
        + `"status":200,"durationMs":${(k % 50) / 10 + 0.5},"details":{}}}`;
}

function resp(parts) {
    let s = `*${parts.length}\r\n`;
    for (const p of parts) s += `$${Buffer.byteLength(p)}\r\n${p}\r\n`;
    return s;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function round(a, deflate, base) {
    const clients = Number(a.clients || 1000);
    const procs = Number(a.procs || (clients >= 1000 ? 2 : 1));
    const events = Number(a.events || 500);
    const rate = Number(a.rate || 100);
    const pid = a['nginx-pid'];

    const children = [];
    for (let i = 0; i < procs; i++) {
        const share = Math.floor(clients / procs)
            + (i < clients % procs ? 1 : 0);
        children.push(fork(__filename, ['--child', '1'], { env: {
            ...process.env, BENCH_WS: a.ws, BENCH_CLIENTS: String(share),
            BENCH_DEFLATE: deflate ? '1' : '' } }));
    }
    await Promise.all(children.map((c) => new Promise((res) => {
        c.on('message', (m) => { if (m.open) res(); });
    })));
    await sleep(500);
    children.forEach((c) => c.send({ start: true }));
    await sleep(100);

    const redis = net.connect(Number(a.redis), '127.0.0.1');
    redis.on('data', () => {});
    await new Promise((res) => redis.on('connect', res));

    const cpu0 = cpu(pid);
    const t0 = Date.now();
    for (let k = 0; k < events; k++) {
        redis.write(resp(['PUBLISH', 'dashboard:events',
                          `[${event(base + k)}]`]));
        const due = t0 + (k + 1) * 1000 / rate;
        const wait = due - Date.now();
        if (wait > 0) await sleep(wait);
    }

    const count = () => Promise.all(children.map((c) =>
        new Promise((res) => {
            const on = (m) => {
                if (m.frames !== undefined) { c.off('message', on); res(m); }
            };
            c.on('message', on);
            c.send({ count: true });
        })));

    let r, end = Date.now() + 30000;
    for (;;) {
        r = await count();
        const got = r.reduce((s, x) => s + x.frames, 0);
        if (got >= events * clients || Date.now() > end) break;
        await sleep(100);
    }
    const cpu1 = cpu(pid);

    children.forEach((c) => c.send({ stop: true }));
    redis.end();
    await sleep(500);

    const sum = (k) => r.reduce((s, x) => s + x[k], 0);
    const frames = sum('frames');
    return {
        mode: deflate ? 'deflate' : 'plain',
        clients, events,
        delivered: frames / (events * clients),
        bytes_per_frame: sum('bytes') / frames,
        compressed: sum('rsv1') / frames,
        cpu_us_per_frame: (cpu1 - cpu0) * 1e6 / frames,
        checked: sum('checked'), bad: sum('bad'),
        snapshot_bytes: r[0].snapshotBytes,
    };
}

function median(v) {
    const s = [...v].sort((x, y) => x - y);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function main() {
    const a = args();
    const rounds = Number(a.rounds || 5);
    const results = { plain: [], deflate: [] };
    let base = 0;

    console.log('round  mode     delivered  bytes/frame  compressed'
        + '  nginx us/frame  checked  snapshot B');
    for (let i = 0; i < rounds; i++) {
        // alternate which goes first, so that drift favours neither
        const order = i % 2 ? [true, false] : [false, true];
        for (const deflate of order) {
            const r = await round(a, deflate, base);
            base += r.events;
            results[r.mode].push(r);
            console.log(`${String(i + 1).padStart(5)}  ${r.mode.padEnd(7)}`
                + `  ${r.delivered.toFixed(4).padStart(9)}`
                + `  ${r.bytes_per_frame.toFixed(1).padStart(11)}`
                + `  ${(r.compressed * 100).toFixed(0).padStart(9)}%`
                + `  ${r.cpu_us_per_frame.toFixed(2).padStart(14)}`
                + `  ${(r.checked - r.bad + '/' + r.checked).padStart(7)}`
                + `  ${String(r.snapshot_bytes).padStart(10)}`);
        }
    }

    const m = (mode, k) => median(results[mode].map((r) => r[k]));
    const out = {
        clients: results.plain[0].clients,
        events: results.plain[0].events,
        rounds,
        plain_bytes_per_frame: m('plain', 'bytes_per_frame'),
        deflate_bytes_per_frame: m('deflate', 'bytes_per_frame'),
        plain_cpu_us_per_frame: m('plain', 'cpu_us_per_frame'),
        deflate_cpu_us_per_frame: m('deflate', 'cpu_us_per_frame'),
        // the first round's snapshot is empty: the last round's holds 50
        plain_snapshot_bytes: results.plain[rounds - 1].snapshot_bytes,
        deflate_snapshot_bytes: results.deflate[rounds - 1].snapshot_bytes,
        bad: results.deflate.concat(results.plain)
            .reduce((s, r) => s + r.bad, 0),
    };
    out.bytes_ratio = out.deflate_bytes_per_frame / out.plain_bytes_per_frame;
    out.cpu_ratio = out.deflate_cpu_us_per_frame / out.plain_cpu_us_per_frame;

    console.log(`medians: plain ${out.plain_bytes_per_frame.toFixed(1)} B, `
        + `${out.plain_cpu_us_per_frame.toFixed(2)} us; deflate `
        + `${out.deflate_bytes_per_frame.toFixed(1)} B, `
        + `${out.deflate_cpu_us_per_frame.toFixed(2)} us a frame; bytes x`
        + `${out.bytes_ratio.toFixed(3)}, CPU x${out.cpu_ratio.toFixed(3)}`);
    console.log(JSON.stringify(out));
    process.exit(out.bad ? 1 : 0);
}

if (process.argv.includes('--child')) {
    client({ ws: process.env.BENCH_WS,
             clients: Number(process.env.BENCH_CLIENTS),
             deflate: !!process.env.BENCH_DEFLATE });
} else {
    main().catch((e) => { console.error(e); process.exit(1); });
}
