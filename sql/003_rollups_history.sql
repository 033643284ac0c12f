-- Per-minute counts per action, and what the history API reads with.
--
-- activity_rollup_minute holds, for every UTC minute and action, how many
-- events were stored. Charts (GET /api/timeseries) read only this table,
-- never activity_logs: a day of minute buckets is at most 1,440 rows per
-- action whatever the event rate.
--
-- It is kept by a statement-level trigger on activity_logs, inside the
-- very transaction that stores a batch, from the transition table of the
-- INSERT: that table holds exactly the rows the INSERT ... ON CONFLICT DO
-- NOTHING really inserted, so a batch stored again (a replay after a
-- crash, a reclaimed processing list) adds nothing twice, and a batch
-- whose transaction rolls back adds nothing at all. Rows a partition
-- maintenance moves out of the default partition go straight into the
-- new partition, which fires no trigger on activity_logs: not counted
-- twice either.
--
-- Rollups outlive --retain-days: dropping a partition leaves its
-- minutes here (small; delete old ones by hand if ever needed).

CREATE TABLE activity_rollup_minute (
    bucket  timestamptz NOT NULL,     -- the minute, UTC
    action  text        NOT NULL,
    count   bigint      NOT NULL,
    PRIMARY KEY (bucket, action)
);

-- A chart of every action over a time range reads the primary key by
-- bucket; one of a single action reads this one.
CREATE INDEX activity_rollup_minute_action_idx
    ON activity_rollup_minute (action, bucket);


-- Rows are upserted in (bucket, action) order, so that two workers
-- storing batches at once lock the rows they share in the same order and
-- never deadlock: the second waits for the first to commit.
CREATE FUNCTION activity_rollup_inserted() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO activity_rollup_minute AS r (bucket, action, count)
    SELECT date_trunc('minute', created_at, 'UTC'), action, count(*)
      FROM activity_inserted
     GROUP BY 1, 2
     ORDER BY 1, 2
    ON CONFLICT (bucket, action)
    DO UPDATE SET count = r.count + EXCLUDED.count;

    RETURN NULL;
END
$$;

CREATE TRIGGER activity_logs_rollup
    AFTER INSERT ON activity_logs
    REFERENCING NEW TABLE AS activity_inserted
    FOR EACH STATEMENT
    EXECUTE FUNCTION activity_rollup_inserted();

-- What was stored before this migration.
INSERT INTO activity_rollup_minute (bucket, action, count)
SELECT date_trunc('minute', created_at, 'UTC'), action, count(*)
  FROM activity_logs
 GROUP BY 1, 2;


-- History filtered by user or by action, newest first: each of these
-- serves "WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT n"
-- (and the keyset condition) as a plain backward index scan per
-- partition. They replace the single-column indexes of 001, which they
-- cover, so storing a row costs no more index updates than before.
CREATE INDEX activity_logs_user_created_idx
    ON activity_logs (user_id, created_at, id);
CREATE INDEX activity_logs_action_created_idx
    ON activity_logs (action, created_at, id);

DROP INDEX activity_logs_user_id_idx;
DROP INDEX activity_logs_action_idx;


-- One page of history, newest first: the query behind GET /api/events.
-- Every argument but p_limit may be NULL (no such filter). The page
-- continues after the row (p_before_at, p_before_id) of the previous one
-- (keyset pagination: stable under inserts, cost independent of depth).
--
-- "created_at <= p_before_at" is implied by the row comparison, but the
-- planner prunes partitions only on plain comparisons of the partition
-- key: it keeps page 2 and later from touching newer days.
--
-- LANGUAGE sql, STABLE, no SET clause: the planner inlines the body into
-- the calling query, so with the arguments known it folds away the
-- filters that are NULL, picks the index that fits the ones given and
-- prunes partitions at plan time. EXPLAIN SELECT * FROM
-- activity_history(...) shows the plan the API gets.
CREATE FUNCTION activity_history(p_user text, p_action text,
    p_from timestamptz, p_to timestamptz,
    p_before_at timestamptz, p_before_id uuid, p_limit int)
RETURNS SETOF activity_logs
LANGUAGE sql STABLE
AS $$
    SELECT *
      FROM activity_logs
     WHERE (p_user IS NULL OR user_id = p_user)
       AND (p_action IS NULL OR action = p_action)
       AND (p_from IS NULL OR created_at >= p_from)
       AND (p_to IS NULL OR created_at < p_to)
       AND (p_before_at IS NULL OR created_at <= p_before_at)
       AND (p_before_at IS NULL
            OR (created_at, id) < (p_before_at, p_before_id))
     ORDER BY created_at DESC, id DESC
     LIMIT p_limit
$$;
