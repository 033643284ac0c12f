'use strict';

// Shared by the test clients: one JSON line per thing seen on stdout,
// commands as JSON lines on stdin, a hard deadline so no client outlives
// its test.

const readline = require('readline');

function out(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

// The options: one JSON argument.
function options() {
    const o = JSON.parse(process.argv[2] || '{}');
    o.timeout = o.timeout || 30000;
    return o;
}

// With brief, events shrink to what identifies them (large payloads stay
// out of the pipe).
function summary(data, brief) {
    if (!brief || data === null || typeof data !== 'object') {
        return data;
    }
    const one = (e) => (e && typeof e === 'object' && 'id' in e)
        ? { id: e.id, eventType: e.eventType, userId: e.userId } : e;
    if (Array.isArray(data.events)) {
        return { events: data.events.map(one), stats: data.stats };
    }
    return one(data);
}

function start(opts, onCommand, onEnd) {
    const timer = setTimeout(() => {
        out({ t: 'timeout' });
        onEnd();
    }, opts.timeout);
    timer.unref();

    const rl = readline.createInterface({ input: process.stdin });
    rl.on('line', (line) => {
        if (line.trim() === '') {
            return;
        }
        let cmd;
        try {
            cmd = JSON.parse(line);
        } catch (e) {
            out({ t: 'bad-command', line });
            return;
        }
        onCommand(cmd);
    });
    rl.on('close', () => onEnd());
}

function exit(code) {
    out({ t: 'exit' });
    // let stdout drain
    process.stdout.write('', () => process.exit(code || 0));
}

module.exports = { out, options, summary, start, exit };
