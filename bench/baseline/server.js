// bench/baseline/server.js: the API and dashboard half of the stack
// nginx-activity replaces, written the ordinary Node way, as a
// benchmark yardstick (not a product).
//
// - HTTP: every request is answered 200 and, once the response is sent,
//   recorded as an API_CALL event: one BullMQ job on the queue.
// - Socket.IO: namespace /dashboard, a HS256 JWT with role admin in
//   `auth.token`; every event published by the worker (worker.js) on the
//   Redis channel is emitted as `activity:new` to every client.
//
// Environment: PORT, REDIS_URL, JWT_SECRET, QUEUE (activity),
// CHANNEL (baseline:dashboard:events).

'use strict';

const http = require('http');
const crypto = require('crypto');
const Redis = require('ioredis');
const jwt = require('jsonwebtoken');
const { Queue } = require('bullmq');
const { Server } = require('socket.io');

const port = Number(process.env.PORT || 3000);
const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const secret = process.env.JWT_SECRET;
const channel = process.env.CHANNEL || 'baseline:dashboard:events';

if (!secret) {
    console.error('JWT_SECRET is required');
    process.exit(1);
}

const queue = new Queue(process.env.QUEUE || 'activity', {
    connection: new Redis(redisUrl, { maxRetriesPerRequest: null }),
});

function track(req, res, began) {
    const event = {
        id: crypto.randomUUID(),
        eventType: 'API_CALL',
        userId: null,
        timestamp: new Date().toISOString(),
        metadata: {
            ipAddress: req.socket.remoteAddress,
            userAgent: req.headers['user-agent'] || null,
            endpoint: req.url.split('?')[0],
            method: req.method,
            status: res.statusCode,
            durationMs: Number(process.hrtime.bigint() - began) / 1e6,
            details: {},
        },
    };
    queue.add(event.eventType, event,
              { removeOnComplete: true, removeOnFail: 1000 })
        .catch((err) => console.error('enqueue:', err.message));
}

const server = http.createServer((req, res) => {
    const began = process.hrtime.bigint();
    res.on('finish', () => track(req, res, began));
    req.resume();
    res.end();
});

const io = new Server(server);
const dashboard = io.of('/dashboard');

dashboard.use((socket, next) => {
    try {
        const claims = jwt.verify(socket.handshake.auth.token, secret,
                                  { algorithms: ['HS256'] });
        if (claims.role !== 'admin') {
            return next(new Error('forbidden'));
        }
        socket.data.user = claims.sub;
        next();
    } catch (err) {
        next(new Error('unauthorized'));
    }
});

const sub = new Redis(redisUrl);
sub.subscribe(channel);
sub.on('message', (ch, message) => {
    dashboard.emit('activity:new', JSON.parse(message));
});

server.listen(port, '127.0.0.1', () => console.log(`listening on ${port}`));

process.on('SIGTERM', () => process.exit(0));
