-- One event id, one row; retention that never queues readers.
--
-- activity_logs' primary key is (id, created_at): a key of a partitioned
-- table must hold the partition key. So the same id arriving twice with
-- two timestamps (a client's retry where ingest filled in "now") would
-- be two rows. activity_event_ids, not partitioned, is keyed by the id
-- alone; the worker fills it in the very transaction that stores a
-- batch (INSERT ... ON CONFLICT DO NOTHING RETURNING) and stores only
-- the rows whose id it really inserted (worker/pgwriter.c). An id is
-- kept as long as the day its row belongs to: partition maintenance
-- deletes ids older than --retain-days with the partitions.
--
-- BRIN on created_at: ids arrive roughly in time order, so a block
-- range index finds the old ones for pruning at almost no write cost
-- (a btree would be a second index update per stored event).

CREATE TABLE activity_event_ids (
    id          uuid        PRIMARY KEY,
    created_at  timestamptz NOT NULL
);

CREATE INDEX activity_event_ids_created_at_idx
    ON activity_event_ids USING brin (created_at);

-- What was stored before this migration (earliest timestamp per id).
INSERT INTO activity_event_ids (id, created_at)
SELECT DISTINCT ON (id) id, created_at
  FROM activity_logs
 ORDER BY id, created_at
ON CONFLICT DO NOTHING;


-- The daily partitions of days before today - retain_days (UTC), for the
-- worker's retention (worker/partitions.c), which detaches and drops
-- them one statement at a time under a short lock_timeout: DETACH
-- PARTITION ... CONCURRENTLY cannot run inside a function. detach_pending
-- is true for a partition whose DETACH ... CONCURRENTLY was interrupted
-- (it must be FINALIZEd).
CREATE FUNCTION activity_expired_partitions(retain_days int)
RETURNS TABLE (nsp text, name text, detach_pending boolean)
LANGUAGE sql STABLE
AS $$
    SELECT n.nspname::text, c.relname::text, i.inhdetachpending
      FROM pg_inherits i
      JOIN pg_class c ON c.oid = i.inhrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE i.inhparent = 'activity_logs'::regclass
       AND c.relname ~ '^activity_logs_[0-9]{8}$'
       AND to_date(substr(c.relname, 15), 'YYYYMMDD')
           < (now() AT TIME ZONE 'UTC')::date - retain_days
     ORDER BY c.relname
$$;


-- The manual form of retention, as before, now also forgetting the ids
-- of the days it drops. It takes ACCESS EXCLUSIVE on activity_logs
-- briefly per partition; the worker does not call it.
CREATE OR REPLACE FUNCTION activity_drop_partitions(retain_days int DEFAULT 30)
RETURNS int
LANGUAGE plpgsql
SET timezone = 'UTC'
SET lock_timeout = '5s'
AS $$
DECLARE
    cutoff   date := (now() AT TIME ZONE 'UTC')::date - retain_days;
    part     record;
    dropped  int := 0;
BEGIN
    IF retain_days IS NULL OR retain_days < 0 THEN
        RAISE EXCEPTION 'retain_days must be >= 0, got %', retain_days;
    END IF;

    PERFORM pg_advisory_xact_lock(1094931542, 2);

    FOR part IN SELECT * FROM activity_expired_partitions(retain_days)
    LOOP
        EXECUTE format('DROP TABLE %I.%I', part.nsp, part.name);
        dropped := dropped + 1;
    END LOOP;

    DELETE FROM activity_logs_default
     WHERE created_at < cutoff::timestamp AT TIME ZONE 'UTC';

    DELETE FROM activity_event_ids
     WHERE created_at < cutoff::timestamp AT TIME ZONE 'UTC';

    RETURN dropped;
END
$$;
