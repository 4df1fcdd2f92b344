-- The state of stateful rules (SPEC 14): its tables and queries, the same on every backend,
-- loaded with queries.sql (the backend's file over both; see engine/store/queries.py).
-- Parameters are named (:name). Times are unix seconds; "now" is always a parameter here,
-- the transaction's time (engine.store.state.clock): the explain records and the times
-- stored are computed from it.

-- name: state_schema
-- Part of "schema" (queries.sql).
CREATE TABLE IF NOT EXISTS rule_throttles (
    rule    text NOT NULL,
    key     text NOT NULL,
    until   double precision NOT NULL,             -- later matches of the key are skipped until then
    run_id  text NOT NULL,                         -- the run that set it
    set_at  double precision NOT NULL,
    PRIMARY KEY (rule, key)
);
CREATE INDEX IF NOT EXISTS rule_throttles_until ON rule_throttles (until);

CREATE TABLE IF NOT EXISTS rule_hits (
    rule       text NOT NULL,
    key        text NOT NULL,
    event_id   text NOT NULL,                      -- one hit per event: a second matching counts once
    at         double precision NOT NULL,
    expires_at double precision NOT NULL,          -- at + the window: pruned after it
    PRIMARY KEY (rule, key, event_id)
);
CREATE INDEX IF NOT EXISTS rule_hits_expires ON rule_hits (expires_at);

CREATE TABLE IF NOT EXISTS rule_timers (
    id           text PRIMARY KEY,
    rule         text NOT NULL,
    key          text NOT NULL,
    status       text NOT NULL,                    -- pending | fired | cancelled
    due_at       double precision NOT NULL,
    after_event  text NOT NULL,                    -- the event that started it
    after_type   text NOT NULL,
    after_source text NOT NULL,
    after_body   text NOT NULL,
    ended_by     text,                             -- fired: the rule.absence event; cancelled: the expect event
    created_at   double precision NOT NULL,
    updated_at   double precision NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS rule_timers_open ON rule_timers (rule, key) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS rule_timers_due ON rule_timers (due_at) WHERE status = 'pending';

CREATE TABLE IF NOT EXISTS run_order (
    run_id     text PRIMARY KEY,
    rule       text NOT NULL,
    key        text NOT NULL,
    pos        bigint NOT NULL,                    -- arrival order within (rule, key)
    done       integer NOT NULL DEFAULT 0,         -- 1: succeeded or skipped, the next may start
    created_at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS run_order_open ON run_order (rule, key, pos) WHERE done = 0;

-- name: event_pending
-- State is applied once per event: only while the event is still to be recorded.
SELECT 1 AS pending FROM events WHERE id = :event_id AND status = 'pending';

-- name: throttle_take
-- Set the key's throttle for this run, unless another run holds it and it has not ended.
-- The conflict clause locks the row on PostgreSQL, so two workers cannot both take it.
INSERT INTO rule_throttles (rule, key, until, run_id, set_at) VALUES (:rule, :key, :until, :run_id, :now)
ON CONFLICT (rule, key) DO UPDATE SET until = excluded.until, run_id = excluded.run_id, set_at = excluded.set_at
WHERE rule_throttles.until <= :now OR rule_throttles.run_id = excluded.run_id
RETURNING run_id;

-- name: throttle_get
SELECT until, run_id FROM rule_throttles WHERE rule = :rule AND key = :key;

-- name: hit_put
INSERT INTO rule_hits (rule, key, event_id, at, expires_at) VALUES (:rule, :key, :event_id, :now, :expires_at)
ON CONFLICT (rule, key, event_id) DO NOTHING;

-- name: hit_count
SELECT COUNT(*) AS count FROM rule_hits WHERE rule = :rule AND key = :key AND at > :since;

-- name: hit_reset
-- The threshold fired: it starts over.
DELETE FROM rule_hits WHERE rule = :rule AND key = :key;

-- name: timer_start
INSERT INTO rule_timers (id, rule, key, status, due_at, after_event, after_type, after_source, after_body,
    created_at, updated_at)
VALUES (:id, :rule, :key, 'pending', :due_at, :event_id, :type, :source, :body, :now, :now)
ON CONFLICT (rule, key) WHERE status = 'pending' DO NOTHING;

-- name: timer_pending
SELECT id, due_at FROM rule_timers WHERE rule = :rule AND key = :key AND status = 'pending';

-- name: timer_cancel
UPDATE rule_timers SET status = 'cancelled', ended_by = :event_id, updated_at = :now
WHERE rule = :rule AND key = :key AND status = 'pending' AND due_at > :now;

-- name: next_timer_due
SELECT MIN(due_at) AS due FROM rule_timers WHERE status = 'pending';

-- name: timers_due
-- Due timers, each taken by one worker: the others skip the rows it holds.
SELECT id, rule, key, due_at, after_event, after_type, after_source, after_body, created_at
FROM rule_timers WHERE status = 'pending' AND due_at <= :now ORDER BY due_at LIMIT :limit {skip_locked};

-- name: timer_fired
UPDATE rule_timers SET status = 'fired', ended_by = :event_id, updated_at = :now WHERE id = :id AND status = 'pending';

-- name: order_head
-- The first unfinished run of a key: the one the others wait for.
SELECT run_id FROM run_order WHERE rule = :rule AND key = :key AND done = 0 ORDER BY pos LIMIT 1;

-- name: order_put
INSERT INTO run_order (run_id, rule, key, pos, done, created_at)
VALUES (:run_id, :rule, :key,
    COALESCE((SELECT MAX(pos) FROM run_order WHERE rule = :rule AND key = :key), 0) + 1, 0, :now)
ON CONFLICT (run_id) DO NOTHING;

-- name: order_done
UPDATE run_order SET done = 1 WHERE run_id = :run_id AND done = 0 RETURNING rule, key;

-- name: order_of_run
SELECT rule, key, done FROM run_order WHERE run_id = :run_id;

-- name: run_wait
UPDATE runs SET status = 'waiting', error = :reason, updated_at = :now WHERE id = :run_id;

-- name: run_release
UPDATE runs SET status = 'active', error = NULL, updated_at = :now WHERE id = :run_id AND status = 'waiting';

-- name: step_release
UPDATE steps SET status = 'ready', due_at = :now WHERE run_id = :run_id AND idx = 0 AND status = 'waiting';

-- name: run_skip
-- A dead run (or one waiting for its key) is put aside: its key's next run may start.
UPDATE runs SET status = 'skipped', updated_at = :now WHERE id = :run_id AND status IN ('dead', 'waiting');

-- name: steps_skip
UPDATE steps SET status = 'skipped', due_at = NULL WHERE run_id = :run_id AND status IN ('dead', 'waiting', 'ready');

-- name: get_run_status
SELECT status FROM runs WHERE id = :run_id;

-- name: prune_throttles
DELETE FROM rule_throttles WHERE until < :now;

-- name: prune_hits
DELETE FROM rule_hits WHERE expires_at < :now;

-- name: prune_timers
DELETE FROM rule_timers WHERE status <> 'pending' AND updated_at < :before;

-- name: prune_order
DELETE FROM run_order WHERE done = 1 AND created_at < :before;

-- name: list_throttles
SELECT key, until, run_id FROM rule_throttles WHERE rule = :rule AND until > :now ORDER BY until DESC LIMIT :limit;

-- name: list_counters
SELECT key, COUNT(*) AS count, MIN(at) AS first_at, MAX(at) AS last_at FROM rule_hits
WHERE rule = :rule AND expires_at > :now GROUP BY key ORDER BY MAX(at) DESC LIMIT :limit;

-- name: list_timers
SELECT id, key, status, due_at, after_event, ended_by, created_at FROM rule_timers
WHERE rule = :rule ORDER BY (CASE WHEN status = 'pending' THEN 0 ELSE 1 END), due_at DESC LIMIT :limit;

-- name: list_waiting
SELECT o.run_id, o.key, r.status FROM run_order o JOIN runs r ON r.id = o.run_id
WHERE o.rule = :rule AND o.done = 0 ORDER BY o.key, o.pos LIMIT :limit;

-- name: timers_of_event
SELECT id, rule, key, status, due_at, ended_by FROM rule_timers WHERE after_event = :event_id OR ended_by = :event_id;
