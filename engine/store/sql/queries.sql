-- The store's queries, the same on every backend: one named block each ("-- name: NAME").
--
-- Parameters are named (:name). Times are unix seconds; "now" is written {now}: on SQLite
-- the caller's clock, on PostgreSQL the database's clock (or the store's own, when it was
-- given one). {skip_locked} and {for_update} lock the rows a claim takes where the backend
-- has row locks (PostgreSQL; SQLite's writer holds the whole file). A backend's own file
-- (sqlite.sql, postgres.sql) holds its schema, these fragments, and the few queries whose
-- shape differs there; a block of the same name there replaces the one here.
-- JSON is stored as text, exactly as given.

-- name: schema
-- The tables and indexes of this version, created where missing; {state_schema}, stateful
-- rules' (state.sql). {seq}, {without_rowid} and {indexes} are the backend's: how a row
-- counter is declared, how a table keyed by its primary key alone is stored, and the
-- indexes only that backend wants.
CREATE TABLE IF NOT EXISTS events (
    seq          {seq},
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
-- Events per minute by source (the UI's overview) read this index alone; appended in order.
CREATE INDEX IF NOT EXISTS events_received ON events (received_at, source);

CREATE TABLE IF NOT EXISTS deliveries (
    source      text NOT NULL,
    delivery_id text NOT NULL,
    event_id    text NOT NULL,
    expires_at  double precision NOT NULL,
    PRIMARY KEY (source, delivery_id)
) {without_rowid};

CREATE TABLE IF NOT EXISTS rule_versions (
    version text PRIMARY KEY,
    name    text NOT NULL,
    file    text NOT NULL,
    text    text NOT NULL
) {without_rowid};

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
    shadow       boolean NOT NULL DEFAULT false,    -- a shadow rule's run: rendered, no action runs
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
    lock_until    double precision,                 -- the refresh lock's end
    updated_at    double precision NOT NULL
) {without_rowid};

CREATE TABLE IF NOT EXISTS hover_webhooks (
    webhook_id    text PRIMARY KEY,
    source        text,
    url           text,
    verified_at   double precision,
    last_error    text,
    updated_at    double precision NOT NULL,
    verify_method text                              -- PUT or POST: the verification call that worked
) {without_rowid};

CREATE TABLE IF NOT EXISTS hover_logins (
    state      text PRIMARY KEY,                    -- the OAuth state of a login hookwise started
    account    text NOT NULL,
    status     text NOT NULL,                       -- pending | taken | done | failed
    error      text,
    expires_at double precision NOT NULL,
    updated_at double precision NOT NULL
) {without_rowid};
{state_schema}
{indexes}

-- name: probe_write
-- /readyz: a row of the deliveries table, where every event's delivery id goes, written
-- under a source name no source can have; expired from the start, so retention prunes it.
INSERT INTO deliveries (source, delivery_id, event_id, expires_at) VALUES ('', 'hookwise.readyz', '', {now})
ON CONFLICT (source, delivery_id) DO UPDATE SET expires_at = excluded.expires_at;

-- name: ping
SELECT 1 AS one;

-- name: put_delivery
-- Takes the delivery id unless it is held, unexpired, by an earlier event: the returned row
-- says this event is new. (PostgreSQL: a concurrent insert of the same id waits for the
-- first transaction; its rollback leaves the id free, so a failed request never burns it.)
INSERT INTO deliveries (source, delivery_id, event_id, expires_at)
VALUES (:source, :delivery_id, :event_id, :expires_at)
ON CONFLICT (source, delivery_id) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at
WHERE deliveries.expires_at <= {now}
RETURNING event_id;

-- name: find_delivery
SELECT event_id FROM deliveries WHERE source = :source AND delivery_id = :delivery_id;

-- name: put_event
INSERT INTO events (id, source, type, delivery_id, body, headers, query, received_at, depth, available_at)
VALUES (:id, :source, :type, :delivery_id, :body, :headers, :query, :received_at, :depth, :available_at)
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- name: put_replay
INSERT INTO events (id, source, type, delivery_id, body, headers, query, received_at, depth, available_at, replay_of, only_rules)
SELECT :id, source, type, NULL, body, headers, query, {now}, depth, {now}, id, :only_rules FROM events WHERE id = :of;

-- name: event_columns
id, source, type, delivery_id, body, headers, query, received_at, depth, replay_of, only_rules

-- name: due_events
-- Events due for matching, taken by the transaction that records their matches.
SELECT {event_columns} FROM events WHERE status = 'pending' AND available_at <= {now}
ORDER BY available_at, seq LIMIT :limit {skip_locked};

-- name: scan_events
-- Backtest: stored events of a window in the order they arrived, a page after the seq
-- :after, with the explain record of their matching (null while pending).
SELECT seq, {event_columns}, explain FROM events
WHERE received_at >= :since AND (CAST(:until AS DOUBLE PRECISION) IS NULL OR received_at < :until) AND seq > :after
    AND (CAST(:source AS TEXT) IS NULL OR source = :source) AND (CAST(:type AS TEXT) IS NULL OR type = :type)
ORDER BY seq LIMIT :limit;

-- name: sample_bodies
-- Lint: the bodies of the latest events of one source and type.
SELECT body FROM events WHERE source = :source AND type = :type ORDER BY seq DESC LIMIT :limit;

-- name: next_event_due
SELECT MIN(available_at) AS due FROM events WHERE status = 'pending';

-- name: next_step_due
SELECT MIN(due_at) AS due FROM steps WHERE status IN ('ready', 'running');

-- name: next_due
SELECT MIN(due) AS due FROM (
    SELECT MIN(available_at) AS due FROM events WHERE status = 'pending'
    UNION ALL SELECT MIN(due_at) FROM steps WHERE status IN ('ready', 'running')
    UNION ALL SELECT MIN(due_at) FROM rule_timers WHERE status = 'pending'
) AS soonest;

-- name: clock
-- The time {now} stands for, where the database's clock judges it.
SELECT {now} AS now;

-- name: put_rule_version
INSERT INTO rule_versions (version, name, file, text) VALUES (:version, :name, :file, :text)
ON CONFLICT (version) DO NOTHING;

-- name: get_rule_version
SELECT name, file, text FROM rule_versions WHERE version = :version;

-- name: put_run
-- No row when the (event, rule) pair has its run already (matched before by a worker whose
-- claim ran out): exactly one run per pair, from the unique key.
INSERT INTO runs (id, event_id, rule, rule_version, status, created_at, updated_at, shadow)
VALUES (:id, :event_id, :rule, :version, 'active', {now}, {now}, :shadow)
ON CONFLICT DO NOTHING
RETURNING id;

-- name: put_step
-- A new run's step: waiting (no due time), ready (due in :due_in seconds), or running
-- (claimed with its run, the lease ending in :due_in seconds).
INSERT INTO steps (run_id, idx, step_id, action, status, attempt, due_at, started_at)
VALUES (:run_id, :idx, :step_id, :action, :status, :attempt, {now} + :due_in,
    CASE WHEN :status = 'running' THEN {now} END)
ON CONFLICT DO NOTHING;

-- name: event_matched
UPDATE events SET status = 'matched', explain = :explain WHERE id = :id AND status = 'pending';

-- name: extend_lease
UPDATE steps SET due_at = {now} + :lease WHERE run_id = :run_id AND idx = :idx AND status = 'running' AND attempt = :attempt;

-- name: step_key
run_id = :run_id AND idx = :idx AND status = 'running' AND attempt = :attempt

-- name: finish_step
-- Only the claim that is still current (running, same attempt) records its result.
UPDATE steps SET status = :status, output = :output, params = :params, error = :error, finished_at = :finished_at,
    due_at = NULL
WHERE {step_key}
RETURNING run_id;

-- name: retry_step
UPDATE steps SET status = 'ready', due_at = {now} + :retry_in, params = :params, error = :error, finished_at = :finished_at
WHERE {step_key};

-- name: defer_step
-- A claimed step that may not start now (delivery control): ready again later, and the
-- attempt it was claimed for given back.
UPDATE steps SET status = 'ready', due_at = {now} + :retry_in, attempt = attempt - 1 WHERE {step_key};

-- name: start_next_step
UPDATE steps SET status = 'ready', due_at = {now} + :delay WHERE run_id = :run_id AND idx = :idx AND status = 'waiting'
RETURNING idx;

-- name: update_run
UPDATE runs SET status = :status, step = :step, error = :error, updated_at = {now} WHERE id = :id;

-- name: get_event
SELECT id, source, type, delivery_id, body, headers, query, received_at, depth, status, explain, replay_of, only_rules
FROM events WHERE id = :id;

-- name: list_events
SELECT seq, id, source, type, delivery_id, received_at, status, replay_of,
    (SELECT COUNT(*) FROM runs WHERE runs.event_id = events.id) AS runs FROM events
WHERE (CAST(:source AS TEXT) IS NULL OR source = :source) AND (CAST(:type AS TEXT) IS NULL OR type = :type)
    AND (CAST(:status AS TEXT) IS NULL OR status = :status)
    AND (CAST(:since AS DOUBLE PRECISION) IS NULL OR received_at >= :since) AND (CAST(:until AS DOUBLE PRECISION) IS NULL OR received_at < :until)
    AND (CAST(:cursor AS BIGINT) IS NULL OR seq < :cursor)
ORDER BY seq DESC LIMIT :limit;

-- name: run_columns
id, event_id, rule, rule_version, status, step, error, created_at, updated_at, shadow

-- name: runs_of_event
SELECT {run_columns} FROM runs WHERE event_id = :event_id ORDER BY created_at, rule;

-- name: get_run
SELECT {run_columns} FROM runs WHERE id = :id;

-- name: list_runs
SELECT {run_columns} FROM runs
WHERE (CAST(:status AS TEXT) IS NULL OR status = :status) AND (CAST(:rule AS TEXT) IS NULL OR rule = :rule)
    AND (CAST(:shadow AS BOOLEAN) IS NULL OR shadow = :shadow)
ORDER BY updated_at DESC LIMIT :limit;

-- name: steps_of_run
SELECT run_id, idx AS "index", step_id AS id, action, status, attempt, due_at, params, output, error, started_at,
    finished_at
FROM steps WHERE run_id = :run_id ORDER BY idx;

-- name: dead_step
SELECT idx FROM steps WHERE run_id = :run_id AND status = 'dead';

-- name: revive_run
UPDATE runs SET status = 'active', error = NULL, updated_at = {now} WHERE id = :id AND status = 'dead';

-- name: retry_dead_step
UPDATE steps SET status = 'ready', attempt = 0, due_at = {now}, overrides = :overrides, error = NULL
WHERE run_id = :run_id AND idx = :idx AND status = 'dead';

-- name: rule_counts
SELECT rule, status, COUNT(*) AS count FROM runs GROUP BY rule, status;

-- name: run_status_counts
SELECT status, COUNT(*) AS count FROM runs GROUP BY status;

-- name: events_per_minute
SELECT source, {minute} AS minute, COUNT(*) AS count FROM events WHERE received_at >= :since
GROUP BY source, minute ORDER BY minute, source;

-- name: retrying_steps
-- Steps waiting for another attempt after a failed one, soonest first.
SELECT s.run_id, r.rule, r.event_id, s.idx AS "index", s.step_id AS id, s.action, s.attempt, s.error, s.due_at,
    s.finished_at
FROM steps s JOIN runs r ON r.id = s.run_id
WHERE s.status IN ('ready', 'running') AND s.error IS NOT NULL ORDER BY s.due_at LIMIT :limit;

-- name: prune_runs
DELETE FROM runs WHERE id IN (
    SELECT id FROM runs WHERE status = 'succeeded' AND updated_at < :before LIMIT :batch {skip_locked}
) RETURNING id;

-- name: prune_steps
DELETE FROM steps WHERE run_id = :run_id;

-- name: prune_events
DELETE FROM events WHERE seq IN (
    SELECT e.seq FROM events e WHERE e.received_at < :before AND e.status = 'matched'
        AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.event_id = e.id)
    ORDER BY e.seq LIMIT :batch {skip_locked}
);

-- name: prune_deliveries
DELETE FROM deliveries WHERE (source, delivery_id) IN (
    SELECT source, delivery_id FROM deliveries WHERE expires_at < {now} LIMIT :batch {skip_locked}
);

-- name: queue_columns
id, queue, key, status, data, attempts, max_attempts, available_at, error, created_at, updated_at

-- name: open_queue_item
SELECT id, attempts, last_request FROM queue_items
WHERE queue = :queue AND key = :key AND status IN ('waiting', 'claimed') {for_update};

-- name: insert_queue_item
-- No row when a concurrent requeue of the same key inserted its item first (PostgreSQL,
-- after waiting for that transaction to end): the caller then updates that item instead.
INSERT INTO queue_items (id, queue, key, status, data, attempts, max_attempts, available_at, last_request, created_at,
    updated_at)
VALUES (:id, :queue, :key, 'waiting', :data, 1, :max_attempts, {now} + :delay, :request_id, {now}, {now})
ON CONFLICT (queue, key) WHERE status IN ('waiting', 'claimed') DO NOTHING
RETURNING id;

-- name: requeue_item
-- A claimed item keeps its claim (someone is working on it); a waiting one waits anew.
UPDATE queue_items SET data = :data, attempts = attempts + 1, max_attempts = :max_attempts,
    available_at = CASE WHEN status = 'claimed' THEN available_at ELSE {now} + :delay END,
    last_request = :request_id, updated_at = {now}
WHERE id = :id;

-- name: queue_item_dead
UPDATE queue_items SET status = 'dead', error = :error, updated_at = {now} WHERE id = :id;

-- name: claim_queue_item
UPDATE queue_items SET status = 'claimed', available_at = {now} + :lease, updated_at = {now}
WHERE id = (
    SELECT id FROM queue_items WHERE queue = :queue AND status IN ('waiting', 'claimed') AND available_at <= {now}
    ORDER BY available_at LIMIT 1 {skip_locked}
)
RETURNING {queue_columns};

-- name: get_queue_item
SELECT {queue_columns} FROM queue_items WHERE id = :id;

-- name: queue_item_done
UPDATE queue_items SET status = 'done', error = NULL, updated_at = {now} WHERE id = :id AND status = 'claimed'
RETURNING {queue_columns};

-- name: queue_item_retry
UPDATE queue_items SET status = 'waiting', attempts = attempts + 1, available_at = {now} + :retry_in, error = :error,
    updated_at = {now}
WHERE id = :id AND status = 'claimed'
RETURNING {queue_columns};

-- name: list_queue_items
SELECT {queue_columns} FROM queue_items WHERE queue = :queue AND (CAST(:status AS TEXT) IS NULL OR status = :status)
ORDER BY created_at LIMIT :limit;

-- name: queue_counts
SELECT queue, status, COUNT(*) AS count FROM queue_items GROUP BY queue, status ORDER BY queue, status;

-- name: get_hover_account
SELECT access_token, refresh_token, expires_at FROM hover_account WHERE id = :account;

-- name: save_hover_tokens
INSERT INTO hover_account (id, access_token, refresh_token, expires_at, updated_at)
VALUES (:account, :access_token, :refresh_token, :expires_at, {now})
ON CONFLICT (id) DO UPDATE SET access_token = excluded.access_token, refresh_token = excluded.refresh_token,
    expires_at = excluded.expires_at, updated_at = excluded.updated_at;

-- name: lock_hover_account
-- One statement: creates the account's row holding the lock, or takes the lock on the row
-- if it is free, expired or already this holder's. (PostgreSQL: a second process's
-- statement waits for the first to commit, then re-checks the condition against the new
-- lock_until and changes nothing.) A row comes back only to the one that got the lock.
INSERT INTO hover_account (id, lock_holder, lock_until, updated_at) VALUES (:account, :holder, {now} + :ttl, {now})
ON CONFLICT (id) DO UPDATE SET lock_holder = excluded.lock_holder, lock_until = excluded.lock_until
WHERE hover_account.lock_until IS NULL OR hover_account.lock_until < {now}
    OR hover_account.lock_holder = excluded.lock_holder
RETURNING id;

-- name: unlock_hover_account
UPDATE hover_account SET lock_holder = NULL, lock_until = NULL WHERE id = :account AND lock_holder = :holder;

-- name: save_hover_webhook
-- None keeps what was recorded, but for last_error: replaced, so that a success clears it.
INSERT INTO hover_webhooks (webhook_id, source, url, verified_at, last_error, verify_method, updated_at)
VALUES (:webhook_id, :source, :url, :verified_at, :last_error, :verify_method, {now})
ON CONFLICT (webhook_id) DO UPDATE SET source = COALESCE(excluded.source, hover_webhooks.source),
    url = COALESCE(excluded.url, hover_webhooks.url),
    verified_at = COALESCE(excluded.verified_at, hover_webhooks.verified_at), last_error = excluded.last_error,
    verify_method = COALESCE(excluded.verify_method, hover_webhooks.verify_method), updated_at = excluded.updated_at;

-- name: list_hover_webhooks
SELECT webhook_id, source, url, verified_at, last_error, updated_at, verify_method FROM hover_webhooks
ORDER BY updated_at DESC;

-- name: forget_phantom_webhooks
-- Rows that earlier versions made from a failed handshake alone: never registered here,
-- never verified, and perhaps no webhook at all.
DELETE FROM hover_webhooks WHERE url IS NULL AND verified_at IS NULL;

-- name: prune_hover_logins
-- Login states are kept a day after they expire, for `hookwise hover login` to read.
DELETE FROM hover_logins WHERE expires_at < {now} - 86400;

-- name: begin_hover_login
INSERT INTO hover_logins (state, account, status, expires_at, updated_at)
VALUES (:state, :account, 'pending', {now} + :ttl, {now});

-- name: take_hover_login
UPDATE hover_logins SET status = 'taken', updated_at = {now}
WHERE state = :state AND status = 'pending' AND expires_at > {now}
RETURNING account;

-- name: finish_hover_login
UPDATE hover_logins SET status = :status, error = :error, updated_at = {now} WHERE state = :state;

-- name: get_hover_login
SELECT status, error, expires_at <= {now} AS expired FROM hover_logins WHERE state = :state;

-- name: wake_steps
-- Ready steps of one action that wait for something that has just happened (their last
-- error says what): due now.
UPDATE steps SET due_at = {now}
WHERE status = 'ready' AND action = :action AND due_at > {now} AND substr(error, 1, length(:prefix)) = :prefix;
