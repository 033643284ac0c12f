-- activity_logs: every stored event, range-partitioned by day (UTC).
--
-- The primary key must contain the partition key, hence (id, created_at).
-- The worker takes created_at from the event itself, never now(), so the
-- same event stored twice (a replayed batch) is the same key and is
-- skipped by ON CONFLICT DO NOTHING.
--
-- Daily partitions activity_logs_YYYYMMDD are made by
-- activity_ensure_partitions() (002_partitions.sql); the default
-- partition catches any row whose day has none (yet).

CREATE TABLE activity_logs (
    id           uuid        NOT NULL,
    action       text        NOT NULL,
    user_id      text,
    created_at   timestamptz NOT NULL,
    ip_address   inet,
    user_agent   text,
    endpoint     text,
    method       text,
    status       smallint,
    duration_ms  real,
    details      jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE activity_logs_default PARTITION OF activity_logs DEFAULT;

-- Partitioned indexes: every partition gets its own copy.
CREATE INDEX activity_logs_user_id_idx ON activity_logs (user_id);
CREATE INDEX activity_logs_action_idx ON activity_logs (action);

-- One index serves both "by time" queries (created_at leads) and keyset
-- paging on (created_at, id); a separate created_at index would only
-- double the write cost.
CREATE INDEX activity_logs_created_at_id_idx ON activity_logs (created_at, id);
