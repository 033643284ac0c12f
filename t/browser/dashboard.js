'use strict';

// Drives the dashboard page in Debian's headless chromium for
// t/browser.t. One JSON argument: {"timeout": ms}. Commands arrive as
// JSON lines on stdin, {"cmd":…, "tag":…, …}; each is answered by one
// line {"t":"reply","tag":…,"ok":true,"data":…} or {"ok":false,
// "error":…}. Commands: open {url, width, height}, signin {token},
// summary, click {selector}, select {selector, value}, screenshot
// {path, width, height}, route {pattern, status, body} (answer the
// requests to that URL glob with this instead of the server), unroute
// {pattern}, requests {match} (the requests so far whose URL contains
// match: url, method, authorization header present).
// Playwright never downloads a browser here: executablePath is the
// distribution's chromium.

const readline = require('readline');
const { chromium } = require('playwright-core');

const opts = JSON.parse(process.argv[2] || '{}');
const CHROMIUM = process.env.TEST_CHROMIUM || '/usr/bin/chromium';

let browser = null;
let page = null;
const seen = { dialogs: [], errors: [], console: [], requests: [] };

function out(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

async function open(c) {
    if (!browser) {
        browser = await chromium.launch({
            executablePath: CHROMIUM,
            args: ['--headless', '--no-sandbox', '--disable-gpu',
                '--disable-quic', '--no-first-run',
                '--disable-background-networking',
                '--disable-component-update', '--disable-sync'],
        });
    }
    if (page) {
        await page.close();
    }
    page = await browser.newPage({
        viewport: { width: c.width || 1280, height: c.height || 900 },
        deviceScaleFactor: c.scale || 1,
        // https:// in the harness's TLS mode: a self-signed certificate
        ignoreHTTPSErrors: true,
    });
    // an alert() would mean an event field ran as markup
    page.on('dialog', (d) => {
        seen.dialogs.push(d.message());
        d.dismiss().catch(() => {});
    });
    page.on('pageerror', (e) => seen.errors.push(String(e)));
    page.on('request', (r) => seen.requests.push({ url: r.url(),
        method: r.method(),
        authorization: /^Bearer \S+$/.test(r.headers().authorization
            || '') }));
    page.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') {
            seen.console.push(m.type() + ': ' + m.text());
        }
    });
    const r = await page.goto(c.url, { waitUntil: 'load' });
    return { status: r && r.status(), title: await page.title() };
}

async function signin(c) {
    await page.fill('#token', c.token);
    await page.click('#signin-form button[type=submit]');
    return {};
}

// What a person would read on the page.
async function summary() {
    const data = await page.evaluate(() => {
        const q = (s) => document.querySelector(s);
        const visible = (e) => !!e && !e.closest('[hidden]');
        const tiles = {};
        for (const t of document.querySelectorAll('.tile[data-stat]')) {
            tiles[t.dataset.stat] = t.querySelector('.value').textContent;
        }
        const rooms = {};
        for (const r of document.querySelectorAll('[data-room-count]')) {
            rooms[r.dataset.roomCount] = r.textContent.trim();
        }
        const text = (li, s) => li.querySelector(s).textContent;
        const older = q('#older');
        return {
            state: q('#conn').dataset.state,
            connText: q('#conn-text').textContent,
            error: visible(q('#signin-error'))
                ? q('#signin-error').textContent : null,
            signin: visible(q('#signin')),
            board: visible(q('#board')),
            who: visible(q('#who')) ? q('#who-text').textContent : null,
            tiles,
            rooms,
            roomsStatus: q('#rooms-status').textContent,
            feedStatus: q('#feed-status').textContent,
            rows: [...document.querySelectorAll('#feed li')].map((li) => ({
                id: li.dataset.id,
                type: li.dataset.type,
                hidden: li.hidden,
                user: text(li, '.f-user'),
                req: text(li, '.f-req'),
                status: text(li, '.f-status'),
                agent: text(li, '.f-agent'),
                older: li.classList.contains('older'),
                ts: li.querySelector('.f-time').title,
            })),
            older: {
                state: older.dataset.state,
                text: q('#older-status').textContent,
                button: visible(q('#older-btn'))
                    ? q('#older-btn').textContent : null,
                disabled: q('#older-btn').disabled,
            },
            feedImages: document.querySelectorAll('#feed img').length,
            images: document.querySelectorAll('img').length,
            chartPaths: document.querySelectorAll('#chart path').length,
            url: location.href,
            stored: Object.keys(sessionStorage),
            local: Object.keys(localStorage),
        };
    });
    data.dialogs = seen.dialogs;
    data.pageErrors = seen.errors;
    data.console = seen.console;
    return data;
}

async function screenshot(c) {
    if (c.width && c.height) {
        await page.setViewportSize({ width: c.width, height: c.height });
        await page.waitForTimeout(300);
    }
    await page.screenshot({ path: c.path, fullPage: !!c.fullPage });
    return { path: c.path };
}

async function click(c) {
    await page.click(c.selector);
    return {};
}

async function select(c) {
    await page.selectOption(c.selector, c.value);
    return {};
}

async function route(c) {
    await page.route(c.pattern, (r) => r.fulfill({
        status: c.status,
        contentType: c.contentType || 'application/json',
        body: c.body || '',
    }));
    return {};
}

async function unroute(c) {
    await page.unroute(c.pattern);
    return {};
}

async function requests(c) {
    return seen.requests.filter((r) => r.url.includes(c.match || ''));
}

const commands = { open, signin, summary, screenshot, click, select,
    route, unroute, requests };

async function finish(code) {
    if (browser) {
        await browser.close().catch(() => {});
        browser = null;
    }
    out({ t: 'exit' });
    process.stdout.write('', () => process.exit(code));
}

const timer = setTimeout(() => {
    out({ t: 'timeout' });
    finish(1);
}, opts.timeout || 120000);
timer.unref();

// one command at a time, in order
let chain = Promise.resolve();
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
    if (line.trim() === '') {
        return;
    }
    chain = chain.then(async () => {
        let c;
        try {
            c = JSON.parse(line);
        } catch (e) {
            out({ t: 'reply', ok: false, error: 'bad command' });
            return;
        }
        const fn = commands[c.cmd];
        try {
            if (!fn) {
                throw new Error(`unknown command ${c.cmd}`);
            }
            if (c.cmd !== 'open' && !page) {
                throw new Error('open a page first');
            }
            out({ t: 'reply', tag: c.tag, ok: true, data: await fn(c) });
        } catch (e) {
            out({ t: 'reply', tag: c.tag, ok: false,
                error: String(e && e.message || e) });
        }
    });
});
rl.on('close', () => chain.then(() => finish(0)));

out({ t: 'ready' });
