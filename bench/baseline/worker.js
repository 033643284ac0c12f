// bench/baseline/worker.js: the BullMQ worker of the stack nginx-activity
// replaces (see server.js): each job is stored into PostgreSQL's
// activity_logs (the same table the activity-worker writes) and then
// published on the Redis channel the Socket.IO server relays.
//
// Environment: REDIS_URL, PG_URL, QUEUE (activity),
// CHANNEL (baseline:dashboard:events), CONCURRENCY (BullMQ's default, 1).

'use strict';

const Redis = require('ioredis');
const { Pool } = require('pg');
const { Worker } = require('bullmq');

const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const channel = process.env.CHANNEL || 'baseline:dashboard:events';

const pool = new Pool({ connectionString: process.env.PG_URL });
const pub = new Redis(redisUrl);

const INSERT = `INSERT INTO activity_logs
    (id, action, user_id, created_at, ip_address, user_agent, endpoint,
     method, status, duration_ms, details)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    ON CONFLICT DO NOTHING`;

const worker = new Worker(process.env.QUEUE || 'activity', async (job) => {
    const e = job.data;
    const m = e.metadata || {};
    await pool.query(INSERT, [e.id, e.eventType, e.userId, e.timestamp,
                              m.ipAddress, m.userAgent, m.endpoint,
                              m.method, m.status, m.durationMs,
                              m.details || {}]);
    await pub.publish(channel, JSON.stringify(e));
}, {
    connection: new Redis(redisUrl, { maxRetriesPerRequest: null }),
    concurrency: Number(process.env.CONCURRENCY || 1),
});

worker.on('failed', (job, err) => console.error('job failed:', err.message));
worker.on('ready', () => console.log('worker ready'));

process.on('SIGTERM', async () => {
    await worker.close();
    process.exit(0);
});
