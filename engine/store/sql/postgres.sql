-- The PostgreSQL store's own blocks: its schema and migrations, the fragments of the shared
-- queries (queries.sql), and the queries whose shape differs here.
--
-- Times are unix seconds (double precision), as in the SQLite store. Every "now" is the
-- DATABASE's clock, statement_timestamp(): read when the server receives the statement, one
-- value for the whole statement (so a claim judges every row against the same instant and
-- the planner may use it in an index condition), and the same for every process whatever
-- their own clocks say. Leases, retries and locks are judged by it. A store given a clock
-- of its own (tests, which move it instead of sleeping) sends that clock's time as :now.
--
-- JSON is stored as text, exactly as given: bodies keep their key order and duplicate keys
-- and values Python writes but JSON forbids (NaN) round-trip as with SQLite; cast to jsonb
-- for ad-hoc queries (body::jsonb ->> 'id').

-- name: now
COALESCE(CAST(:now AS float8), extract(epoch FROM statement_timestamp())::float8)

-- name: skip_locked
FOR UPDATE SKIP LOCKED

-- name: for_update
FOR UPDATE

-- name: minute
floor(received_at / 60)::bigint

-- name: migrate_lock
-- Processes starting together take turns: CREATE ... IF NOT EXISTS races otherwise.
SELECT pg_advisory_xact_lock(7310652148901324806);

-- name: state_lock
-- Recorders of rule state take turns (matching when rules keep state, a run of an order_by
-- key finishing, a skip), until their transaction ends.
SELECT pg_advisory_xact_lock(7310652148901324807);

-- name: relaxed_commit
SET LOCAL synchronous_commit = off;

-- name: schema_exists
SELECT to_regclass('schema_version') IS NOT NULL AS present;

-- name: schema_version
SELECT COALESCE(MAX(version), 0) AS version FROM schema_version;

-- name: seq
bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY

-- name: without_rowid

-- name: indexes
-- Retention's: matched events by age, delivery ids by expiry. And the schema's version:
-- "schema" makes the newest, each "migration_N" block brings an older one to N.
CREATE INDEX IF NOT EXISTS events_matched ON events (received_at) WHERE status = 'matched';
CREATE INDEX IF NOT EXISTS deliveries_expires ON deliveries (expires_at);
CREATE TABLE IF NOT EXISTS schema_version (
    version    integer PRIMARY KEY,
    applied_at double precision NOT NULL
);

-- name: migration_2
-- Hover: which verification call worked (hover_logins, new then too, comes with "schema"),
-- and no more rows that a failed handshake alone made. Version 3 brought events_received.
ALTER TABLE hover_webhooks ADD COLUMN IF NOT EXISTS verify_method text;
{forget_phantom_webhooks}

-- name: migration_4
-- Shadow rules: their runs are recorded and rendered, and never run an action.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS shadow boolean NOT NULL DEFAULT false;

-- Version 5 brought the tables of stateful rules, which "schema" (state.sql) creates.

-- name: record_schema_version
INSERT INTO schema_version (version, applied_at) VALUES (:version, {now}) ON CONFLICT (version) DO NOTHING;

-- name: notify_events
-- A wake-up for workers waiting on LISTEN; sent on commit, dropped on rollback. The channel
-- is the schema's own (hookwise_ and the md5 of its name, within PostgreSQL's 63 bytes), so
-- that two hookwise stores in two schemas of one database do not wake each other.
SELECT pg_notify('hookwise_' || md5(current_schema()), '') AS sent;

-- name: events_channel
-- The channel wait_for_events LISTENs on: the one notify_events sends to.
SELECT 'hookwise_' || md5(current_schema()) AS channel;

-- name: claim_events
-- SKIP LOCKED: concurrent claims take different events instead of waiting for each other.
WITH due AS MATERIALIZED (
    SELECT seq FROM events WHERE status = 'pending' AND available_at <= {now}
    ORDER BY available_at, seq LIMIT :limit FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE events e SET available_at = {now} + :lease FROM due WHERE e.seq = due.seq
    RETURNING e.seq, e.id, e.source, e.type, e.delivery_id, e.body, e.headers, e.query, e.received_at, e.depth,
        e.replay_of, e.only_rules
)
SELECT {event_columns} FROM claimed ORDER BY seq;

-- name: claim_steps
-- Due steps (ready, or running with an expired lease), claimed with SKIP LOCKED, returned
-- with what running them needs: the rule, the event, and the outputs of earlier steps.
WITH due AS MATERIALIZED (
    SELECT run_id, idx FROM steps WHERE status IN ('ready', 'running') AND due_at <= {now}
    ORDER BY due_at LIMIT :limit FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE steps s SET status = 'running', attempt = s.attempt + 1, due_at = {now} + :lease, started_at = {now}
    FROM due WHERE s.run_id = due.run_id AND s.idx = due.idx
    RETURNING s.run_id, s.idx, s.step_id, s.action, s.attempt, s.overrides
)
SELECT c.run_id, c.idx, c.step_id, c.action, c.attempt, c.overrides, r.rule, r.rule_version,
    e.id, e.source, e.type, e.delivery_id, e.body, e.headers, e.query, e.received_at, e.depth, e.replay_of, e.only_rules,
    ARRAY(SELECT o.step_id FROM steps o WHERE o.run_id = c.run_id AND o.idx < c.idx AND o.status = 'succeeded'
          ORDER BY o.idx) AS output_ids,
    ARRAY(SELECT o.output FROM steps o WHERE o.run_id = c.run_id AND o.idx < c.idx AND o.status = 'succeeded'
          ORDER BY o.idx) AS output_values
FROM claimed c JOIN runs r ON r.id = c.run_id JOIN events e ON e.id = r.event_id
ORDER BY c.run_id, c.idx;

-- Batches: where the core runs a statement for many rows ("many", "each"), a block NAME_batch
-- here does it in one statement over the rows sent as one JSON array (:rows; each row's
-- place in it is "n", for "each" to hand every row its own results), instead of a
-- statement per row: the same changes, in far less of the server's and the worker's time.

-- name: put_run_batch
WITH input AS (
    SELECT * FROM json_to_recordset(CAST(:rows AS json))
        AS r(n int, id text, event_id text, rule text, version text, shadow boolean)
), made AS (
    INSERT INTO runs (id, event_id, rule, rule_version, status, created_at, updated_at, shadow)
    SELECT id, event_id, rule, version, 'active', {now}, {now}, shadow FROM input ORDER BY n
    ON CONFLICT DO NOTHING
    RETURNING id
)
SELECT input.n, made.id FROM made JOIN input USING (id);

-- name: put_step_batch
INSERT INTO steps (run_id, idx, step_id, action, status, attempt, due_at, started_at)
SELECT run_id, idx, step_id, action, status, attempt, {now} + due_in, CASE WHEN status = 'running' THEN {now} END
FROM json_to_recordset(CAST(:rows AS json))
    AS r(n int, run_id text, idx int, step_id text, action text, status text, attempt int, due_in float8)
ORDER BY n
ON CONFLICT DO NOTHING;

-- name: event_matched_batch
UPDATE events e SET status = 'matched', explain = r.explain
FROM json_to_recordset(CAST(:rows AS json)) AS r(id text, explain text)
WHERE e.id = r.id AND e.status = 'pending';

-- name: finish_step_batch
UPDATE steps s SET status = r.status, output = r.output, params = r.params, error = r.error,
    finished_at = r.finished_at, due_at = NULL
FROM json_to_recordset(CAST(:rows AS json)) AS r(n int, run_id text, idx int, attempt int, status text, output text,
    params text, error text, finished_at float8)
WHERE s.run_id = r.run_id AND s.idx = r.idx AND s.status = 'running' AND s.attempt = r.attempt
RETURNING r.n, s.run_id;

-- name: update_run_batch
UPDATE runs u SET status = r.status, step = r.step, error = r.error, updated_at = {now}
FROM json_to_recordset(CAST(:rows AS json)) AS r(id text, status text, step int, error text)
WHERE u.id = r.id;

-- name: extend_lease_batch
UPDATE steps s SET due_at = {now} + r.lease
FROM json_to_recordset(CAST(:rows AS json)) AS r(run_id text, idx int, attempt int, lease float8)
WHERE s.run_id = r.run_id AND s.idx = r.idx AND s.status = 'running' AND s.attempt = r.attempt;
