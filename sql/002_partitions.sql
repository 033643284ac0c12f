-- Daily partition maintenance for activity_logs, callable by any number
-- of workers at once.
--
--   SELECT activity_ensure_partitions(7);   -- yesterday .. today+7
--   SELECT activity_drop_partitions(30);    -- drop days before today-30
--
-- Days are UTC days whatever the session's time zone: the functions pin
-- timezone to UTC for their own duration and do all day arithmetic on
-- UTC dates.
--
-- Locks. Each function takes the transaction-level advisory lock
-- (0x41435456 "ACTV", 2), so concurrent callers queue instead of racing
-- on CREATE TABLE. A partition is created standalone and then ATTACHed,
-- which takes only SHARE UPDATE EXCLUSIVE on activity_logs (CREATE TABLE
-- ... PARTITION OF would take ACCESS EXCLUSIVE and stall every insert).

-- The partition name for a UTC day: activity_logs_YYYYMMDD.
CREATE FUNCTION activity_partition_name(day date) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$ SELECT 'activity_logs_' || to_char(day, 'YYYYMMDD') $$;


-- Create the partition for one UTC day unless it exists. Rows the default
-- partition already holds for that day would make ATTACH fail ("updated
-- partition constraint for default partition would be violated"), so they
-- move into the new table first, in this same transaction, with the
-- default partition locked so no new row for that day can slip in
-- between the move and the ATTACH. Returns true when it created one.
CREATE FUNCTION activity_create_partition(day date) RETURNS boolean
LANGUAGE plpgsql
SET timezone = 'UTC'
AS $$
DECLARE
    part  text := activity_partition_name(day);
    lo    timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi    timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
    nsp   text;
BEGIN
    SELECT n.nspname INTO nsp
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = 'activity_logs'::regclass;

    IF EXISTS (SELECT 1
                 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'activity_logs'::regclass
                  AND c.relname = part)
    THEN
        RETURN false;
    END IF;

    -- ATTACH would take this lock anyway (to scan the default); taking it
    -- first closes the window between the move and the ATTACH.
    EXECUTE format('LOCK TABLE %I.activity_logs_default IN ACCESS EXCLUSIVE MODE',
                   nsp);

    EXECUTE format('CREATE TABLE %I.%I (LIKE %I.activity_logs INCLUDING ALL)',
                   nsp, part, nsp);

    EXECUTE format('WITH moved AS (DELETE FROM %I.activity_logs_default'
                   ' WHERE created_at >= $1 AND created_at < $2 RETURNING *)'
                   ' INSERT INTO %I.%I SELECT * FROM moved',
                   nsp, nsp, part)
        USING lo, hi;

    EXECUTE format('ALTER TABLE %I.activity_logs ATTACH PARTITION %I.%I'
                   ' FOR VALUES FROM (%L) TO (%L)',
                   nsp, nsp, part, lo, hi);

    RETURN true;
END
$$;


-- Make sure partitions exist for yesterday .. today + days_ahead (UTC).
-- Yesterday is included so late events from just before midnight still
-- land in a real partition. Returns how many were created.
CREATE FUNCTION activity_ensure_partitions(days_ahead int DEFAULT 7)
RETURNS int
LANGUAGE plpgsql
SET timezone = 'UTC'
AS $$
DECLARE
    today    date := (now() AT TIME ZONE 'UTC')::date;
    day      date;
    created  int := 0;
BEGIN
    IF days_ahead IS NULL OR days_ahead < 0 THEN
        RAISE EXCEPTION 'days_ahead must be >= 0, got %', days_ahead;
    END IF;

    PERFORM pg_advisory_xact_lock(1094931542, 2);

    FOR day IN SELECT generate_series(today - 1, today + days_ahead,
                                      interval '1 day')::date
    LOOP
        IF activity_create_partition(day) THEN
            created := created + 1;
        END IF;
    END LOOP;

    RETURN created;
END
$$;


-- Drop the daily partitions of days before today - retain_days (UTC) and
-- delete rows that old from the default partition. Returns how many
-- partitions were dropped. Dropping a partition briefly takes ACCESS
-- EXCLUSIVE on activity_logs; lock_timeout keeps a busy table from
-- queueing every insert behind us: the next hourly run tries again.
CREATE FUNCTION activity_drop_partitions(retain_days int DEFAULT 30)
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

    FOR part IN
        SELECT n.nspname, c.relname
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE i.inhparent = 'activity_logs'::regclass
           AND c.relname ~ '^activity_logs_[0-9]{8}$'
         ORDER BY c.relname
    LOOP
        IF to_date(substr(part.relname, 15), 'YYYYMMDD') < cutoff THEN
            EXECUTE format('DROP TABLE %I.%I', part.nspname, part.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;

    DELETE FROM activity_logs_default
     WHERE created_at < cutoff::timestamp AT TIME ZONE 'UTC';

    RETURN dropped;
END
$$;
