-- The SQLite store's own blocks: its schema, the fragments of the shared queries
-- (queries.sql), and the queries whose shape differs here. Times are unix seconds (REAL).

-- name: now
:now

-- name: skip_locked

-- name: for_update

-- name: state_lock
-- Recorders of rule state take turns: SQLite's one writer already does.
SELECT 1 AS locked;

-- name: minute
CAST(received_at / 60 AS INTEGER)

-- name: seq
INTEGER PRIMARY KEY AUTOINCREMENT

-- name: without_rowid
WITHOUT ROWID

-- name: indexes

-- name: put_events_rows
-- {rows}: the events' rows; the whole batch in one statement (see SQLiteBackend.put_new_events).
INSERT INTO events (id, source, type, delivery_id, body, headers, query, received_at, depth, available_at)
VALUES {rows} ON CONFLICT (id) DO NOTHING;

-- name: put_deliveries_rows
-- {rows}: the delivery ids' rows. The row count says how many events are new.
INSERT INTO deliveries (source, delivery_id, event_id, expires_at) VALUES {rows}
ON CONFLICT (source, delivery_id) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at
WHERE deliveries.expires_at <= :now;

-- name: claim_events
UPDATE events SET available_at = :now + :lease
WHERE seq IN (
    SELECT seq FROM events WHERE status = 'pending' AND available_at <= :now ORDER BY available_at, seq LIMIT :limit
)
RETURNING {event_columns};

-- name: claim_steps
UPDATE steps SET status = 'running', attempt = attempt + 1, due_at = :now + :lease, started_at = :now
WHERE rowid IN (
    SELECT rowid FROM steps WHERE status IN ('ready', 'running') AND due_at <= :now ORDER BY due_at LIMIT :limit
)
RETURNING run_id, idx, step_id, action, attempt, overrides;

-- name: step_contexts
-- The rule and event of each run in :runs (a JSON list of run ids).
SELECT r.id AS run_id, r.rule, r.rule_version, e.id, e.source, e.type, e.delivery_id, e.body, e.headers, e.query,
    e.received_at, e.depth, e.replay_of, e.only_rules
FROM runs r JOIN events e ON e.id = r.event_id
WHERE r.id IN (SELECT value FROM json_each(:runs));

-- name: step_outputs
-- The outputs of the succeeded steps of each run in :runs (a JSON list of run ids).
SELECT run_id, idx, step_id, output FROM steps
WHERE run_id IN (SELECT value FROM json_each(:runs)) AND status = 'succeeded' ORDER BY run_id, idx;
