// bench/connect.js: how long N dashboards take to connect.
//
// Opens N dashboard connections at once (the `ws` library, no
// compression), each with the same bearer token, and reports the time
// from the first connection attempt until every one has received its
// snapshot, and the CPU time (utime + stime from /proc/PID/stat) the
// nginx worker processes spent meanwhile.  Then closes them all and
// starts the next round; prints the median time of the rounds and the
// CPU time per connection over all rounds (connects and closes).
//
//   node bench/connect.js --url URL --protocol websocket|socketio
//        --token TOKEN --clients N --rounds R [--nginx-pids PID,PID]

'use strict';

const fs = require('fs');
const WebSocket = require('ws');
const { performance } = require('perf_hooks');
const { args } = require('./lib');

const TICK = 100;       // USER_HZ: /proc times are in 1/100 s on Linux

function cpuTicks(pids) {
    let sum = 0;
    for (const pid of pids) {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        // the fields after the command name, which may hold spaces
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        sum += Number(f[11]) + Number(f[12]);   // utime, stime
    }
    return sum;
}

function round(opt, pids) {
    return new Promise((resolve, reject) => {
        const socks = [];
        let done = 0;
        const t0 = performance.now();
        const c0 = cpuTicks(pids);
        const timer = setTimeout(() => reject(new Error(
            `only ${done} of ${opt.clients} snapshots in 60 s`)), 60000);

        const got = () => {
            if (++done < opt.clients) return;
            const ms = performance.now() - t0;
            const cpu = cpuTicks(pids) - c0;
            clearTimeout(timer);
            let closed = 0;
            for (const s of socks) {
                s.on('close', () => {
                    if (++closed === socks.length) resolve({ ms, cpu });
                });
                s.terminate();
            }
        };

        for (let i = 0; i < opt.clients; i++) {
            let url = opt.url, headers = {};
            if (opt.protocol === 'socketio') {
                url += `?EIO=4&transport=websocket&token=${opt.token}`;
            } else {
                headers.Authorization = `Bearer ${opt.token}`;
            }
            const ws = new WebSocket(url, { perMessageDeflate: false,
                headers });
            let seen = false;
            ws.on('message', (m) => {
                const s = m.toString();
                if (opt.protocol === 'socketio') {
                    if (s[0] === '0') ws.send('40/dashboard,');
                    else if (s.startsWith('2') && s.length === 1) ws.send('3');
                    else if (!seen && s.startsWith('42/dashboard,["snapshot"')) {
                        seen = true;
                        got();
                    }
                } else if (!seen && s.startsWith('{"event":"snapshot"')) {
                    seen = true;
                    got();
                }
            });
            ws.on('error', (e) => reject(e));
            socks.push(ws);
        }
    });
}

function median(a) {
    const s = [...a].sort((x, y) => x - y);
    return s[Math.floor(s.length / 2)];
}

async function main() {
    const a = args();
    const opt = {
        url: a.url,
        protocol: a.protocol || 'websocket',
        token: a.token,
        clients: Number(a.clients || 1000),
        rounds: Number(a.rounds || 5),
    };
    const pids = (a['nginx-pids'] || '').split(',').filter(Boolean);
    const ms = [], cpu = [];

    for (let i = 0; i < opt.rounds; i++) {
        const r = await round(opt, pids);
        ms.push(r.ms);
        cpu.push(r.cpu);
        await new Promise((res) => setTimeout(res, 500));
    }

    // /proc counts in 10 ms ticks: a round's few ticks are coarse, the
    // sum over every round less so
    const cpuMs = median(cpu) * 1000 / TICK;
    const cpuAllUs = cpu.reduce((x, y) => x + y, 0) * 1e6 / TICK;
    console.log(JSON.stringify({
        protocol: opt.protocol,
        clients: opt.clients,
        rounds: opt.rounds,
        all_snapshots_ms: Math.round(median(ms)),
        rounds_ms: ms.map(Math.round),
        nginx_cpu_ms: cpuMs,
        nginx_cpu_us_per_connection:
            Math.round(cpuAllUs / (opt.clients * opt.rounds)),
    }));
}

main().catch((e) => { console.error(e.message); process.exit(1); });
