// bench/lib.js: what the bench/*.js drivers share.

'use strict';

const { performance } = require('perf_hooks');

// Microseconds on one clock for every process on the machine
// (performance.timeOrigin + performance.now()).
function nowUs() {
    return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

// The command line's `--name value` pairs as { name: value }.
function args() {
    const a = {};
    const v = process.argv.slice(2);
    for (let i = 0; i < v.length; i += 2) {
        a[v[i].replace(/^--/, '')] = v[i + 1];
    }
    return a;
}

module.exports = { nowUs, args };
