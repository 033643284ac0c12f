// Requests per minute over the last WINDOW: plain SVG, redrawn on every
// stats:update, every few seconds (the time axis moves on) and on
// resize. stats:update may come several times a second: one point per
// SLOT_MS (the latest value in it), joined by straight lines, the last
// one held until now.

import { svg } from './dom.js';

const WINDOW_MS = 10 * 60 * 1000;
const SLOT_MS = 5000;
const PAD = { top: 10, right: 12, bottom: 22, left: 40 };

function niceMax(v) {
    if (v <= 4) {
        return 4;
    }
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) {
        if (m * p >= v) {
            return m * p;
        }
    }
    return 10 * p;
}

function hhmm(t) {
    const d = new Date(t);
    return String(d.getHours()).padStart(2, '0') + ':' +
        String(d.getMinutes()).padStart(2, '0');
}

export function createChart(box) {
    let points = [];                // {t, v}, oldest first

    function draw() {
        const w = box.clientWidth;
        const h = box.clientHeight;
        if (!w || !h) {
            return;
        }
        const now = Date.now();
        const from = now - WINDOW_MS;
        // the last point before the window still says where the line
        // enters it
        const first = points.findIndex((p) => p.t >= from);
        const shown = first === -1 ? points.slice(-1)
            : points.slice(Math.max(0, first - 1));

        const root = svg('svg', { viewBox: `0 0 ${w} ${h}`,
            role: 'img', 'aria-label': 'API requests per minute' });
        const iw = w - PAD.left - PAD.right;
        const ih = h - PAD.top - PAD.bottom;
        const max = niceMax(Math.max(0, ...shown.map((p) => p.v)));
        const x = (t) => PAD.left + (Math.max(t, from) - from) / WINDOW_MS
            * iw;
        const y = (v) => PAD.top + ih - v / max * ih;

        for (let i = 0; i <= 4; i++) {
            const v = max * i / 4;
            root.append(svg('line', { class: 'grid', x1: PAD.left,
                x2: PAD.left + iw, y1: y(v), y2: y(v) }));
            const label = svg('text', { class: 'axis', x: PAD.left - 6,
                y: y(v) + 4, 'text-anchor': 'end' });
            label.textContent = String(Math.round(v * 10) / 10);
            root.append(label);
        }
        const step = iw < 360 ? 5 : 2;
        for (let m = 0; m <= 10; m += step) {
            const t = from + m * 60000;
            const label = svg('text', { class: 'axis', x: x(t),
                y: h - 6, 'text-anchor': m === 0 ? 'start'
                    : m === 10 ? 'end' : 'middle' });
            label.textContent = m === 10 ? 'now' : hhmm(t);
            root.append(label);
        }

        if (shown.length === 0) {
            const t = svg('text', { class: 'empty', x: PAD.left + iw / 2,
                y: PAD.top + ih / 2, 'text-anchor': 'middle' });
            t.textContent = 'waiting for stats:update';
            root.append(t);
        } else {
            let d = '';
            shown.forEach((p, i) => {
                d += (i === 0 ? 'M' : 'L') + x(p.t).toFixed(1) + ',' +
                    y(p.v).toFixed(1);
            });
            const last = shown[shown.length - 1];
            d += `H${x(now).toFixed(1)}`;
            const base = y(0).toFixed(1);
            const area = `${d}V${base}H${x(shown[0].t).toFixed(1)}Z`;
            root.append(svg('path', { class: 'area', d: area }),
                svg('path', { class: 'line', d }),
                svg('circle', { class: 'last', cx: x(now), cy: y(last.v),
                    r: 3.5 }));
        }
        box.replaceChildren(root);
    }

    new ResizeObserver(() => draw()).observe(box);
    setInterval(draw, 5000);
    draw();

    return {
        push(t, v) {
            if (typeof v !== 'number' || !isFinite(v)) {
                return;
            }
            const last = points[points.length - 1];
            if (last && Math.floor(last.t / SLOT_MS)
                === Math.floor(t / SLOT_MS)) {
                last.v = v;
            } else {
                points.push({ t, v });
            }
            const cut = Date.now() - WINDOW_MS;
            while (points.length > 2 && points[1].t < cut) {
                points.shift();
            }
            draw();
        },
        clear() {
            points = [];
            draw();
        },
    };
}
