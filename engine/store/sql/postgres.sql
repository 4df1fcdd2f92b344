-- The PostgreSQL store's schema and queries, one named block each ("-- name: NAME").
--
-- Times are unix seconds (double precision), as in the SQLite store, so the contract's
-- float timestamps are unchanged. Every "now" is the DATABASE's clock, written {now} (the
-- block "now" below, put in place when the queries are loaded):
--     extract(epoch FROM statement_timestamp())::float8
-- statement_timestamp() is read when the server receives the statement: one value for the
-- whole statement (so a claim judges every row against the same instant and the planner may
-- use it in an index condition), fresh for each statement of a transaction, and the same for
-- every process whatever their own clocks say. Leases, retries and locks are judged by it.
-- A store given a clock of its own (tests, which move it instead of sleeping) sets the
-- transaction's "hookwise.now" to that clock's time ("set_now"), and {now} reads that instead.
--
-- JSON is stored as text, exactly as given: bodies keep their key order and duplicate keys
-- and values Python writes but JSON forbids (NaN) round-trip as with SQLite; cast to jsonb
-- for ad-hoc queries (body::jsonb ->> 'id').
--
-- Placeholders are psycopg's %(name)s.

-- name: now
COALESCE(NULLIF(current_setting('hookwise.now', true), '')::float8, extract(epoch FROM statement_timestamp())::float8)

-- name: set_now
SELECT set_config('hookwise.now', %(now)s, true);

-- name: migrate_lock
-- Processes starting together take turns: CREATE ... IF NOT EXISTS races otherwise.
SELECT pg_advisory_xact_lock(7310652148901324806);

-- name: relaxed_commit
SET LOCAL synchronous_commit = off;

-- name: schema_exists
SELECT to_regclass('schema_version') IS NOT NULL;

-- name: schema_version
SELECT COALESCE(MAX(version), 0) FROM schema_version;

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
INSERT INTO schema_version (version, applied_at) VALUES (3, {now}) ON CONFLICT (version) DO NOTHING;

-- name: migration_4
-- Shadow rules: their runs are recorded, rendered, and never run an action.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS shadow boolean NOT NULL DEFAULT false;
INSERT INTO schema_version (version, applied_at) VALUES (4, {now}) ON CONFLICT (version) DO NOTHING;

-- name: scan_events
-- Backtest: stored events of a window in the order they arrived, a batch after the seq
-- %(after)s, with the explain record of their matching (null while pending).
SELECT seq, id, source, type, delivery_id, body, headers, query, received_at, depth, replay_of, only_rules, explain
FROM events WHERE received_at >= %(since)s AND (%(until)s::float8 IS NULL OR received_at < %(until)s::float8)
    AND seq > %(after)s AND (%(source)s::text IS NULL OR source = %(source)s::text)
    AND (%(type)s::text IS NULL OR type = %(type)s::text)
ORDER BY seq LIMIT %(limit)s;

-- name: sample_bodies
-- Lint: the bodies of the latest events of one source and type.
SELECT body FROM events WHERE source = %(source)s AND type = %(type)s ORDER BY seq DESC LIMIT %(limit)s;

-- name: migration_5
-- The tables of stateful rules (sql/state.sql, run just before this block).
INSERT INTO schema_version (version, applied_at) VALUES (5, {now}) ON CONFLICT (version) DO NOTHING;

-- name: notify_events
-- A wake-up for workers waiting on LISTEN; sent on commit, dropped on rollback.
NOTIFY hookwise_events;

-- name: listen_events
LISTEN hookwise_events;

-- name: ping
SELECT 1;

-- name: probe_write
-- /readyz: a row of the deliveries table, where every event's delivery id goes, written
-- under a source name no source can have; expired from the start, so retention prunes it.
INSERT INTO deliveries (source, delivery_id, event_id, expires_at)
VALUES ('', 'hookwise.readyz', '', {now})
ON CONFLICT (source, delivery_id) DO UPDATE SET expires_at = excluded.expires_at;

-- name: put_delivery
-- Takes the delivery id unless it is held, unexpired, by an earlier event: one statement,
-- whose returned row says whether this event is new. A concurrent insert of the same id
-- waits for the first transaction: its commit makes this one a duplicate, its rollback
-- leaves the id free (a failed request never burns it).
INSERT INTO deliveries (source, delivery_id, event_id, expires_at)
VALUES (%(source)s, %(delivery_id)s, %(event_id)s, %(expires_at)s)
ON CONFLICT (source, delivery_id) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at
WHERE deliveries.expires_at <= {now}
RETURNING event_id;

-- name: find_delivery
SELECT event_id FROM deliveries WHERE source = %(source)s AND delivery_id = %(delivery_id)s;

-- name: put_event
INSERT INTO events (id, source, type, delivery_id, body, headers, query, received_at, depth, available_at)
VALUES (%(id)s, %(source)s, %(type)s, %(delivery_id)s, %(body)s, %(headers)s, %(query)s, %(received_at)s, %(depth)s, %(available_at)s)
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- name: put_replay
INSERT INTO events (id, source, type, delivery_id, body, headers, query, received_at, depth, available_at, replay_of, only_rules)
SELECT %(id)s, source, type, NULL, body, headers, query, {now}, depth,
    {now}, id, %(only_rules)s
FROM events WHERE id = %(of)s;

-- name: claim_events
-- SKIP LOCKED: concurrent claims take different events instead of waiting for each other.
WITH due AS MATERIALIZED (
    SELECT seq FROM events
    WHERE status = 'pending' AND available_at <= {now}
    ORDER BY available_at, seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE events e SET available_at = {now} + %(lease)s
    FROM due WHERE e.seq = due.seq
    RETURNING e.seq, e.id, e.source, e.type, e.delivery_id, e.body, e.headers, e.query, e.received_at, e.depth,
        e.replay_of, e.only_rules
)
SELECT id, source, type, delivery_id, body, headers, query, received_at, depth, replay_of, only_rules
FROM claimed ORDER BY seq;

-- name: next_due
SELECT LEAST(
    (SELECT MIN(available_at) FROM events WHERE status = 'pending'),
    (SELECT MIN(due_at) FROM steps WHERE status IN ('ready', 'running'))
);

-- name: put_rule_version
INSERT INTO rule_versions (version, name, file, text) VALUES (%(version)s, %(name)s, %(file)s, %(text)s)
ON CONFLICT (version) DO NOTHING;

-- name: get_rule_version
SELECT name, file, text FROM rule_versions WHERE version = %(version)s;

-- name: put_run
-- No row when the (event, rule) pair has its run already (matched before by a worker whose
-- claim ran out); a concurrent insert of the pair waits for the first and then does nothing.
INSERT INTO runs (id, event_id, rule, rule_version, status, created_at, updated_at, shadow)
VALUES (%(id)s, %(event_id)s, %(rule)s, %(version)s, 'active', {now},
    {now}, %(shadow)s)
ON CONFLICT DO NOTHING;

-- name: put_ready_step
INSERT INTO steps (run_id, idx, step_id, action, status, due_at)
VALUES (%(run_id)s, %(idx)s, %(step_id)s, %(action)s, 'ready', {now} + %(delay)s)
ON CONFLICT DO NOTHING;

-- name: put_waiting_step
INSERT INTO steps (run_id, idx, step_id, action, status, due_at)
VALUES (%(run_id)s, %(idx)s, %(step_id)s, %(action)s, 'waiting', NULL)
ON CONFLICT DO NOTHING;

-- name: put_claimed_step
INSERT INTO steps (run_id, idx, step_id, action, status, attempt, due_at, started_at)
VALUES (%(run_id)s, %(idx)s, %(step_id)s, %(action)s, 'running', 1, {now} + %(lease)s,
    {now})
ON CONFLICT DO NOTHING;

-- name: event_matched
UPDATE events SET status = 'matched', explain = %(explain)s WHERE id = %(id)s AND status = 'pending';

-- name: claim_steps
-- Due steps (ready, or running with an expired lease), claimed with SKIP LOCKED, returned
-- with what running them needs: the rule, the event, and the outputs of earlier steps.
WITH due AS MATERIALIZED (
    SELECT run_id, idx FROM steps
    WHERE status IN ('ready', 'running') AND due_at <= {now}
    ORDER BY due_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE steps s SET status = 'running', attempt = s.attempt + 1,
        due_at = {now} + %(lease)s,
        started_at = {now}
    FROM due WHERE s.run_id = due.run_id AND s.idx = due.idx
    RETURNING s.run_id, s.idx, s.step_id, s.action, s.attempt, s.overrides
)
SELECT c.run_id, c.idx, c.step_id, c.action, c.attempt, c.overrides, r.rule, r.rule_version,
    e.id, e.source, e.type, e.delivery_id, e.body, e.headers, e.query, e.received_at, e.depth, e.replay_of, e.only_rules,
    ARRAY(SELECT o.step_id FROM steps o WHERE o.run_id = c.run_id AND o.idx < c.idx AND o.status = 'succeeded' ORDER BY o.idx),
    ARRAY(SELECT o.output FROM steps o WHERE o.run_id = c.run_id AND o.idx < c.idx AND o.status = 'succeeded' ORDER BY o.idx)
FROM claimed c
JOIN runs r ON r.id = c.run_id
JOIN events e ON e.id = r.event_id
ORDER BY c.run_id, c.idx;

-- name: extend_lease
UPDATE steps SET due_at = {now} + %(lease)s
WHERE run_id = %(run_id)s AND idx = %(idx)s AND status = 'running' AND attempt = %(attempt)s;

-- name: finish_step
-- Only the claim that is still current (running, same attempt) records its result.
UPDATE steps SET status = %(status)s, output = %(output)s, params = %(params)s, error = %(error)s,
    finished_at = %(finished_at)s, due_at = NULL
WHERE run_id = %(run_id)s AND idx = %(idx)s AND status = 'running' AND attempt = %(attempt)s;

-- name: retry_step
UPDATE steps SET status = 'ready', due_at = {now} + %(retry_in)s,
    params = %(params)s, error = %(error)s, finished_at = %(finished_at)s
WHERE run_id = %(run_id)s AND idx = %(idx)s AND status = 'running' AND attempt = %(attempt)s;

-- name: defer_step
-- A claimed step that may not start now (delivery control): ready again later, and the
-- attempt it was claimed for given back.
UPDATE steps SET status = 'ready', due_at = {now} + %(retry_in)s, attempt = attempt - 1
WHERE run_id = %(run_id)s AND idx = %(idx)s AND status = 'running' AND attempt = %(attempt)s;

-- name: start_next_step
UPDATE steps SET status = 'ready', due_at = {now} + %(delay)s
WHERE run_id = %(run_id)s AND idx = %(idx)s AND status = 'waiting';

-- name: update_run
UPDATE runs SET status = %(status)s, step = %(step)s, error = %(error)s, updated_at = {now}
WHERE id = %(id)s;

-- name: get_event
SELECT id, source, type, delivery_id, body, headers, query, received_at, depth, status, explain, replay_of, only_rules
FROM events WHERE id = %(id)s;

-- name: list_events
SELECT seq, id, source, type, delivery_id, received_at, status, replay_of,
    (SELECT COUNT(*) FROM runs WHERE runs.event_id = events.id) FROM events
WHERE (%(source)s::text IS NULL OR source = %(source)s::text)
    AND (%(type)s::text IS NULL OR type = %(type)s::text)
    AND (%(status)s::text IS NULL OR status = %(status)s::text)
    AND (%(since)s::float8 IS NULL OR received_at >= %(since)s::float8)
    AND (%(until)s::float8 IS NULL OR received_at < %(until)s::float8)
    AND (%(cursor)s::bigint IS NULL OR seq < %(cursor)s::bigint)
ORDER BY seq DESC LIMIT %(limit)s;

-- name: runs_of_event
SELECT id, event_id, rule, rule_version, status, step, error, created_at, updated_at, shadow FROM runs
WHERE event_id = %(event_id)s ORDER BY created_at, rule;

-- name: get_run
SELECT id, event_id, rule, rule_version, status, step, error, created_at, updated_at, shadow FROM runs WHERE id = %(id)s;

-- name: list_runs
SELECT id, event_id, rule, rule_version, status, step, error, created_at, updated_at, shadow FROM runs
WHERE (%(status)s::text IS NULL OR status = %(status)s::text) AND (%(rule)s::text IS NULL OR rule = %(rule)s::text)
    AND (%(shadow)s::boolean IS NULL OR shadow = %(shadow)s::boolean)
ORDER BY updated_at DESC LIMIT %(limit)s;

-- name: events_per_minute
SELECT source, floor(received_at / 60)::bigint AS minute, COUNT(*) FROM events WHERE received_at >= %(since)s
GROUP BY source, minute ORDER BY minute, source;

-- name: run_status_counts
SELECT status, COUNT(*) FROM runs GROUP BY status;

-- name: retrying_steps
-- Steps waiting for another attempt after a failed one, soonest first.
SELECT s.run_id, r.rule, r.event_id, s.idx, s.step_id, s.action, s.attempt, s.error, s.due_at, s.finished_at
FROM steps s JOIN runs r ON r.id = s.run_id
WHERE s.status IN ('ready', 'running') AND s.error IS NOT NULL ORDER BY s.due_at LIMIT %(limit)s;

-- name: steps_of_run
SELECT run_id, idx, step_id, action, status, attempt, due_at, params, output, error, started_at, finished_at
FROM steps WHERE run_id = %(run_id)s ORDER BY idx;

-- name: dead_step
SELECT idx FROM steps WHERE run_id = %(run_id)s AND status = 'dead';

-- name: revive_run
UPDATE runs SET status = 'active', error = NULL, updated_at = {now}
WHERE id = %(id)s AND status = 'dead';

-- name: retry_dead_step
UPDATE steps SET status = 'ready', attempt = 0, due_at = {now},
    overrides = %(overrides)s, error = NULL
WHERE run_id = %(run_id)s AND idx = %(idx)s AND status = 'dead';

-- name: rule_counts
SELECT rule, status, COUNT(*) FROM runs GROUP BY rule, status;

-- name: prune_runs
DELETE FROM runs WHERE id IN (
    SELECT id FROM runs WHERE status = 'succeeded' AND updated_at < %(before)s LIMIT %(batch)s FOR UPDATE SKIP LOCKED
) RETURNING id;

-- name: prune_steps
DELETE FROM steps WHERE run_id = ANY(%(runs)s);

-- name: prune_events
DELETE FROM events WHERE seq IN (
    SELECT e.seq FROM events e WHERE e.received_at < %(before)s AND e.status = 'matched'
        AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.event_id = e.id)
    ORDER BY e.seq LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
);

-- name: prune_deliveries
DELETE FROM deliveries WHERE (source, delivery_id) IN (
    SELECT source, delivery_id FROM deliveries WHERE expires_at < {now}
    LIMIT %(batch)s FOR UPDATE SKIP LOCKED
);

-- name: open_queue_item
SELECT id, status, attempts, max_attempts, last_request FROM queue_items
WHERE queue = %(queue)s AND key = %(key)s AND status IN ('waiting', 'claimed')
FOR UPDATE;

-- name: insert_queue_item
-- No row when a concurrent requeue of the same key inserted its item first (after waiting
-- for that transaction to end): the caller then updates that item instead.
INSERT INTO queue_items (id, queue, key, status, data, attempts, max_attempts, available_at, last_request, created_at, updated_at)
VALUES (%(id)s, %(queue)s, %(key)s, 'waiting', %(data)s, 1, %(max_attempts)s,
    {now} + %(delay)s, %(request_id)s,
    {now}, {now})
ON CONFLICT (queue, key) WHERE status IN ('waiting', 'claimed') DO NOTHING;

-- name: requeue_item
-- A claimed item keeps its claim (someone is working on it); a waiting one waits anew.
UPDATE queue_items SET data = %(data)s, attempts = attempts + 1, max_attempts = %(max_attempts)s,
    available_at = CASE WHEN status = 'claimed' THEN available_at
                        ELSE {now} + %(delay)s END,
    last_request = %(request_id)s, updated_at = {now}
WHERE id = %(id)s;

-- name: queue_item_dead
UPDATE queue_items SET status = 'dead', error = %(error)s, updated_at = {now}
WHERE id = %(id)s;

-- name: claim_queue_item
UPDATE queue_items SET status = 'claimed', available_at = {now} + %(lease)s,
    updated_at = {now}
WHERE id = (
    SELECT id FROM queue_items
    WHERE queue = %(queue)s AND status IN ('waiting', 'claimed') AND available_at <= {now}
    ORDER BY available_at LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING id, queue, key, status, data, attempts, max_attempts, available_at, error, created_at, updated_at;

-- name: get_queue_item
SELECT id, queue, key, status, data, attempts, max_attempts, available_at, error, created_at, updated_at
FROM queue_items WHERE id = %(id)s;

-- name: queue_item_done
UPDATE queue_items SET status = 'done', error = NULL, updated_at = {now}
WHERE id = %(id)s AND status = 'claimed'
RETURNING id, queue, key, status, data, attempts, max_attempts, available_at, error, created_at, updated_at;

-- name: queue_item_retry
UPDATE queue_items SET status = 'waiting', attempts = attempts + 1,
    available_at = {now} + %(retry_in)s, error = %(error)s,
    updated_at = {now}
WHERE id = %(id)s AND status = 'claimed'
RETURNING id, queue, key, status, data, attempts, max_attempts, available_at, error, created_at, updated_at;

-- name: list_queue_items
SELECT id, queue, key, status, data, attempts, max_attempts, available_at, error, created_at, updated_at FROM queue_items
WHERE queue = %(queue)s AND (%(status)s::text IS NULL OR status = %(status)s::text) ORDER BY created_at LIMIT %(limit)s;

-- name: queue_counts
SELECT queue, status, COUNT(*) FROM queue_items GROUP BY queue, status ORDER BY queue, status;

-- name: get_hover_account
SELECT access_token, refresh_token, expires_at, lock_holder, lock_until FROM hover_account WHERE id = %(account)s;

-- name: save_hover_tokens
INSERT INTO hover_account (id, access_token, refresh_token, expires_at, updated_at)
VALUES (%(account)s, %(access_token)s, %(refresh_token)s, %(expires_at)s, {now})
ON CONFLICT (id) DO UPDATE SET access_token = excluded.access_token, refresh_token = excluded.refresh_token,
    expires_at = excluded.expires_at, updated_at = excluded.updated_at;

-- name: lock_hover_account
-- One statement: creates the account's row holding the lock, or takes the lock on the row
-- if it is free, expired (by the database's clock) or already this holder's. A second
-- process's statement waits for the first to commit, then re-checks the condition against
-- the new lock_until and changes nothing: a row comes back only to the one that got it.
INSERT INTO hover_account (id, lock_holder, lock_until, updated_at)
VALUES (%(account)s, %(holder)s, {now} + %(ttl)s,
    {now})
ON CONFLICT (id) DO UPDATE SET lock_holder = excluded.lock_holder, lock_until = excluded.lock_until
WHERE hover_account.lock_until IS NULL OR hover_account.lock_until < {now}
    OR hover_account.lock_holder = excluded.lock_holder
RETURNING id;

-- name: unlock_hover_account
UPDATE hover_account SET lock_holder = NULL, lock_until = NULL WHERE id = %(account)s AND lock_holder = %(holder)s;

-- name: save_hover_webhook
INSERT INTO hover_webhooks (webhook_id, source, url, verified_at, last_error, verify_method, updated_at)
VALUES (%(webhook_id)s, %(source)s, %(url)s, %(verified_at)s, %(last_error)s, %(verify_method)s,
    {now})
ON CONFLICT (webhook_id) DO UPDATE SET source = COALESCE(excluded.source, hover_webhooks.source),
    url = COALESCE(excluded.url, hover_webhooks.url), verified_at = COALESCE(excluded.verified_at, hover_webhooks.verified_at),
    last_error = excluded.last_error, verify_method = COALESCE(excluded.verify_method, hover_webhooks.verify_method),
    updated_at = excluded.updated_at;

-- name: list_hover_webhooks
SELECT webhook_id, source, url, verified_at, last_error, updated_at, verify_method FROM hover_webhooks
ORDER BY updated_at DESC;

-- name: begin_hover_login
-- Old states go first (kept a day after they expire, for `hookwise hover login` to read).
WITH pruned AS (
    DELETE FROM hover_logins WHERE expires_at < {now} - 86400
)
INSERT INTO hover_logins (state, account, status, expires_at, updated_at)
VALUES (%(state)s, %(account)s, 'pending', {now} + %(ttl)s,
    {now});

-- name: take_hover_login
UPDATE hover_logins SET status = 'taken', updated_at = {now}
WHERE state = %(state)s AND status = 'pending' AND expires_at > {now}
RETURNING account;

-- name: finish_hover_login
UPDATE hover_logins SET status = %(status)s, error = %(error)s,
    updated_at = {now}
WHERE state = %(state)s;

-- name: get_hover_login
SELECT status, error, expires_at <= {now}
FROM hover_logins WHERE state = %(state)s;

-- name: wake_steps
-- Ready steps of one action that wait for something that has just happened (their last
-- error says what): due now.
UPDATE steps SET due_at = {now}
WHERE status = 'ready' AND action = %(action)s AND due_at > {now}
    AND left(error, length(%(prefix)s)) = %(prefix)s;
