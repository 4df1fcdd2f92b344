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

-- name: relaxed_commit
SET LOCAL synchronous_commit = off;

-- name: schema_exists
SELECT to_regclass('schema_version') IS NOT NULL AS present;

-- name: schema_version
SELECT COALESCE(MAX(version), 0) AS version FROM schema_version;

-- name: schema
CREATE TABLE IF NOT EXISTS schema_version (
    version    integer PRIMARY KEY,
    applied_at double precision NOT NULL
);

CREATE TABLE IF NOT EXISTS events (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           text NOT NULL UNIQUE,
    source       text NOT NULL,
    type         text NOT NULL,
    delivery_id  text,
    body         text NOT NULL,
    headers      text NOT NULL,
    query        text NOT NULL,
    received_at  double precision NOT NULL,
    depth        integer NOT NULL DEFAULT 0,
    status       text NOT NULL DEFAULT 'pending',   -- pending | matched
    available_at double precision NOT NULL,         -- not before (a delay, or a claim's lease)
    explain      text,
    replay_of    text,                              -- the event this one replays
    only_rules   text                               -- a replay for these rules only (JSON list)
);
CREATE INDEX IF NOT EXISTS events_pending ON events (available_at, seq) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS events_matched ON events (received_at) WHERE status = 'matched';

CREATE TABLE IF NOT EXISTS deliveries (
    source      text NOT NULL,
    delivery_id text NOT NULL,
    event_id    text NOT NULL,
    expires_at  double precision NOT NULL,
    PRIMARY KEY (source, delivery_id)
);
CREATE INDEX IF NOT EXISTS deliveries_expires ON deliveries (expires_at);

CREATE TABLE IF NOT EXISTS rule_versions (
    version text PRIMARY KEY,
    name    text NOT NULL,
    file    text NOT NULL,
    text    text NOT NULL
);

CREATE TABLE IF NOT EXISTS runs (
    id           text PRIMARY KEY,
    event_id     text NOT NULL,
    rule         text NOT NULL,
    rule_version text NOT NULL,
    status       text NOT NULL,                     -- active | succeeded | dead
    step         integer NOT NULL DEFAULT 0,        -- the step running or last run
    error        text,
    created_at   double precision NOT NULL,
    updated_at   double precision NOT NULL,
    UNIQUE (event_id, rule)                         -- exactly one run per (event, rule)
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, updated_at);

CREATE TABLE IF NOT EXISTS steps (
    run_id      text NOT NULL,
    idx         integer NOT NULL,
    step_id     text NOT NULL,
    action      text NOT NULL,
    status      text NOT NULL,                      -- waiting | ready | running | succeeded | skipped | failed | dead
    attempt     integer NOT NULL DEFAULT 0,
    due_at      double precision,                   -- ready: not before; running: lease end
    params      text,
    overrides   text,
    output      text,
    error       text,
    started_at  double precision,
    finished_at double precision,
    PRIMARY KEY (run_id, idx)
);
CREATE INDEX IF NOT EXISTS steps_due ON steps (due_at) WHERE status IN ('ready', 'running');

CREATE TABLE IF NOT EXISTS queue_items (
    id           text PRIMARY KEY,
    queue        text NOT NULL,
    key          text NOT NULL,
    status       text NOT NULL,                     -- waiting | claimed | done | dead
    data         text,
    attempts     integer NOT NULL DEFAULT 1,
    max_attempts integer NOT NULL,
    available_at double precision NOT NULL,         -- waiting: not before; claimed: lease end
    last_request text,                              -- idempotency key of the last requeue
    error        text,
    created_at   double precision NOT NULL,
    updated_at   double precision NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS queue_items_open ON queue_items (queue, key) WHERE status IN ('waiting', 'claimed');
CREATE INDEX IF NOT EXISTS queue_items_due ON queue_items (queue, available_at) WHERE status IN ('waiting', 'claimed');

CREATE TABLE IF NOT EXISTS hover_account (
    id            text PRIMARY KEY,
    access_token  text,
    refresh_token text,
    expires_at    double precision,
    lock_holder   text,
    lock_until    double precision,                 -- the refresh lock's end, by the database's clock
    updated_at    double precision NOT NULL
);

CREATE TABLE IF NOT EXISTS hover_webhooks (
    webhook_id  text PRIMARY KEY,
    source      text,
    url         text,
    verified_at double precision,
    last_error  text,
    updated_at  double precision NOT NULL
);

-- Version 1 is the schema above. A later change adds a block "migration_N" (ALTER TABLE ...
-- ADD COLUMN IF NOT EXISTS ...), applied under the same lock when schema_version < N.
INSERT INTO schema_version (version, applied_at) VALUES (1, extract(epoch FROM statement_timestamp())::float8)
ON CONFLICT (version) DO NOTHING;

-- name: migration_2
-- Hover: which verification call worked; the OAuth states of logins hookwise started; and
-- no more rows that a failed handshake alone made (never registered, never verified).
ALTER TABLE hover_webhooks ADD COLUMN IF NOT EXISTS verify_method text;   -- PUT or POST

CREATE TABLE IF NOT EXISTS hover_logins (
    state      text PRIMARY KEY,                    -- the OAuth state of a login hookwise started
    account    text NOT NULL,
    status     text NOT NULL,                       -- pending | taken | done | failed
    error      text,
    expires_at double precision NOT NULL,           -- by the database's clock
    updated_at double precision NOT NULL
);

DELETE FROM hover_webhooks WHERE url IS NULL AND verified_at IS NULL;

INSERT INTO schema_version (version, applied_at) VALUES (2, extract(epoch FROM statement_timestamp())::float8)
ON CONFLICT (version) DO NOTHING;

-- name: migration_3
-- Events per minute by source (the web UI's overview) read this index alone.
CREATE INDEX IF NOT EXISTS events_received ON events (received_at, source);

-- name: record_schema_version
INSERT INTO schema_version (version, applied_at) VALUES (:version, {now}) ON CONFLICT (version) DO NOTHING;

-- name: notify_events
-- A wake-up for workers waiting on LISTEN; sent on commit, dropped on rollback.
NOTIFY hookwise_events;

-- name: listen_events
LISTEN hookwise_events;

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
