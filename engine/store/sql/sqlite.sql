-- The SQLite store's schema and queries, one named block each ("-- name: NAME").
-- Times are unix seconds (REAL). JSON is stored as text.

-- name: schema
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    source       TEXT NOT NULL,
    type         TEXT NOT NULL,
    delivery_id  TEXT,
    body         TEXT NOT NULL,
    headers      TEXT NOT NULL,
    query        TEXT NOT NULL,
    received_at  REAL NOT NULL,
    depth        INTEGER NOT NULL DEFAULT 0,
    status       TEXT NOT NULL DEFAULT 'pending',   -- pending | matched
    available_at REAL NOT NULL,                     -- not before (a delay, or a claim's lease)
    explain      TEXT,
    replay_of    TEXT,                              -- the event this one replays
    only_rules   TEXT                               -- a replay for these rules only (JSON list)
);
CREATE INDEX IF NOT EXISTS events_pending ON events (available_at) WHERE status = 'pending';
-- Events per minute by source (the UI's overview) read this index alone; appended in order.
CREATE INDEX IF NOT EXISTS events_received ON events (received_at, source);

CREATE TABLE IF NOT EXISTS deliveries (
    source      TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    expires_at  REAL NOT NULL,
    PRIMARY KEY (source, delivery_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS rule_versions (
    version TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    file    TEXT NOT NULL,
    text    TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS runs (
    id           TEXT PRIMARY KEY,
    event_id     TEXT NOT NULL,
    rule         TEXT NOT NULL,
    rule_version TEXT NOT NULL,
    status       TEXT NOT NULL,                     -- active | succeeded | dead
    step         INTEGER NOT NULL DEFAULT 0,        -- the step running or last run
    error        TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    shadow       INTEGER NOT NULL DEFAULT 0,        -- 1: a shadow rule's run (rendered, no action runs)
    UNIQUE (event_id, rule)
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, updated_at);

CREATE TABLE IF NOT EXISTS steps (
    run_id      TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    step_id     TEXT NOT NULL,
    action      TEXT NOT NULL,
    status      TEXT NOT NULL,                      -- waiting | ready | running | succeeded | skipped | failed | dead
    attempt     INTEGER NOT NULL DEFAULT 0,
    due_at      REAL,                               -- ready: not before; running: lease end
    params      TEXT,
    overrides   TEXT,
    output      TEXT,
    error       TEXT,
    started_at  REAL,
    finished_at REAL,
    PRIMARY KEY (run_id, idx)
);
CREATE INDEX IF NOT EXISTS steps_due ON steps (due_at) WHERE status IN ('ready', 'running');

CREATE TABLE IF NOT EXISTS queue_items (
    id           TEXT PRIMARY KEY,
    queue        TEXT NOT NULL,
    key          TEXT NOT NULL,
    status       TEXT NOT NULL,                     -- waiting | claimed | done | dead
    data         TEXT,
    attempts     INTEGER NOT NULL DEFAULT 1,
    max_attempts INTEGER NOT NULL,
    available_at REAL NOT NULL,                     -- waiting: not before; claimed: lease end
    last_request TEXT,                              -- idempotency key of the last requeue
    error        TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS queue_items_open ON queue_items (queue, key) WHERE status IN ('waiting', 'claimed');
CREATE INDEX IF NOT EXISTS queue_items_due ON queue_items (queue, available_at) WHERE status IN ('waiting', 'claimed');

CREATE TABLE IF NOT EXISTS hover_account (
    id            TEXT PRIMARY KEY,
    access_token  TEXT,
    refresh_token TEXT,
    expires_at    REAL,
    lock_holder   TEXT,
    lock_until    REAL,
    updated_at    REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS hover_webhooks (
    webhook_id    TEXT PRIMARY KEY,
    source        TEXT,
    url           TEXT,
    verified_at   REAL,
    last_error    TEXT,
    updated_at    REAL NOT NULL,
    verify_method TEXT                              -- PUT or POST: the verification call that worked
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS hover_logins (
    state      TEXT PRIMARY KEY,                    -- the OAuth state of a login hookwise started
    account    TEXT NOT NULL,
    status     TEXT NOT NULL,                       -- pending | taken | done | failed
    error      TEXT,
    expires_at REAL NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;

-- name: find_delivery
SELECT event_id FROM deliveries WHERE source = ? AND delivery_id = ?;

-- name: put_events
-- {rows}: the events' rows, (id, ..., available_at) each.
INSERT OR IGNORE INTO events (id, source, type, delivery_id, body, headers, query, received_at, depth, available_at)
VALUES {rows};

-- name: put_deliveries
-- {rows}: (source, delivery_id, event_id, expires_at) each; then the time now. Takes each
-- delivery id unless it is held, unexpired, by an earlier event: the row count says how
-- many events are new.
INSERT INTO deliveries (source, delivery_id, event_id, expires_at) VALUES {rows}
ON CONFLICT (source, delivery_id) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at
WHERE deliveries.expires_at <= ?;

-- name: probe_write
-- /readyz: a row of the deliveries table, where every event's delivery id goes, written
-- under a source name no source can have; expired from the start, so retention prunes it.
INSERT INTO deliveries (source, delivery_id, event_id, expires_at) VALUES ('', 'hookwise.readyz', '', ?)
ON CONFLICT (source, delivery_id) DO UPDATE SET expires_at = excluded.expires_at;

-- name: put_replay
INSERT INTO events (id, source, type, delivery_id, body, headers, query, received_at, depth, available_at, replay_of, only_rules)
SELECT :id, source, type, NULL, body, headers, query, :now, depth, :now, id, :only_rules FROM events WHERE id = :of;

-- name: claim_events
UPDATE events SET available_at = :lease_until
WHERE seq IN (
    SELECT seq FROM events WHERE status = 'pending' AND available_at <= :now ORDER BY available_at, seq LIMIT :limit
)
RETURNING id, source, type, delivery_id, body, headers, query, received_at, depth, replay_of, only_rules;

-- name: due_events
-- Events due for matching, read inside the write transaction that records their matches.
SELECT id, source, type, delivery_id, body, headers, query, received_at, depth, replay_of, only_rules
FROM events WHERE status = 'pending' AND available_at <= :now ORDER BY available_at, seq LIMIT :limit;

-- name: scan_events
-- Backtest: stored events of a window in the order they arrived, a batch after the seq
-- :after, with the explain record of their matching (null while pending).
SELECT seq, id, source, type, delivery_id, body, headers, query, received_at, depth, replay_of, only_rules, explain
FROM events WHERE received_at >= :since AND (:until IS NULL OR received_at < :until) AND seq > :after
    AND (:source IS NULL OR source = :source) AND (:type IS NULL OR type = :type)
ORDER BY seq LIMIT :limit;

-- name: sample_bodies
-- Lint: the bodies of the latest events of one source and type.
SELECT body FROM events WHERE source = :source AND type = :type ORDER BY seq DESC LIMIT :limit;

-- name: next_event_due
SELECT MIN(available_at) FROM events WHERE status = 'pending';

-- name: put_rule_version
INSERT OR IGNORE INTO rule_versions (version, name, file, text) VALUES (?, ?, ?, ?);

-- name: get_rule_version
SELECT name, file, text FROM rule_versions WHERE version = ?;

-- name: put_run
INSERT OR IGNORE INTO runs (id, event_id, rule, rule_version, status, created_at, updated_at, shadow)
VALUES (?, ?, ?, ?, 'active', ?, ?, ?);

-- name: put_step
INSERT OR IGNORE INTO steps (run_id, idx, step_id, action, status, due_at) VALUES (?, ?, ?, ?, ?, ?);

-- name: put_claimed_step
INSERT OR IGNORE INTO steps (run_id, idx, step_id, action, status, attempt, due_at, started_at)
VALUES (?, ?, ?, ?, 'running', 1, ?, ?);

-- name: event_matched
UPDATE events SET status = 'matched', explain = ? WHERE id = ? AND status = 'pending';

-- name: claim_steps
UPDATE steps SET status = 'running', attempt = attempt + 1, due_at = :lease_until, started_at = :now
WHERE rowid IN (
    SELECT rowid FROM steps WHERE status IN ('ready', 'running') AND due_at <= :now ORDER BY due_at LIMIT :limit
)
RETURNING run_id, idx, step_id, action, attempt, overrides;

-- name: extend_lease
UPDATE steps SET due_at = ? WHERE run_id = ? AND idx = ? AND status = 'running' AND attempt = ?;

-- name: next_step_due
SELECT MIN(due_at) FROM steps WHERE status IN ('ready', 'running');

-- name: step_context
SELECT r.rule, r.rule_version, e.id, e.source, e.type, e.delivery_id, e.body, e.headers, e.query, e.received_at, e.depth,
    e.replay_of, e.only_rules
FROM runs r JOIN events e ON e.id = r.event_id
WHERE r.id = ?;

-- name: step_outputs
SELECT step_id, output FROM steps WHERE run_id = ? AND idx < ? AND status = 'succeeded';

-- name: finish_step
UPDATE steps SET status = ?, output = ?, params = ?, error = ?, finished_at = ?, due_at = NULL
WHERE run_id = ? AND idx = ? AND status = 'running' AND attempt = ?;

-- name: retry_step
UPDATE steps SET status = 'ready', due_at = ?, params = ?, error = ?, finished_at = ?
WHERE run_id = ? AND idx = ? AND status = 'running' AND attempt = ?;

-- name: defer_step
-- A claimed step that may not start now (delivery control): ready again later, and the
-- attempt it was claimed for given back.
UPDATE steps SET status = 'ready', due_at = ?, attempt = attempt - 1
WHERE run_id = ? AND idx = ? AND status = 'running' AND attempt = ?;

-- name: start_next_step
UPDATE steps SET status = 'ready', due_at = ? WHERE run_id = ? AND idx = ? AND status = 'waiting';

-- name: update_run
UPDATE runs SET status = ?, step = ?, error = ?, updated_at = ? WHERE id = ?;

-- name: get_event
SELECT id, source, type, delivery_id, body, headers, query, received_at, depth, status, explain, replay_of, only_rules
FROM events WHERE id = ?;

-- name: list_events
SELECT seq, id, source, type, delivery_id, received_at, status, replay_of,
    (SELECT COUNT(*) FROM runs WHERE runs.event_id = events.id) FROM events
WHERE (:source IS NULL OR source = :source) AND (:type IS NULL OR type = :type) AND (:status IS NULL OR status = :status)
    AND (:since IS NULL OR received_at >= :since) AND (:until IS NULL OR received_at < :until)
    AND (:cursor IS NULL OR seq < :cursor)
ORDER BY seq DESC LIMIT :limit;

-- name: runs_of_event
SELECT id, event_id, rule, rule_version, status, step, error, created_at, updated_at, shadow FROM runs WHERE event_id = ? ORDER BY created_at, rule;

-- name: get_run
SELECT id, event_id, rule, rule_version, status, step, error, created_at, updated_at, shadow FROM runs WHERE id = ?;

-- name: list_runs
SELECT id, event_id, rule, rule_version, status, step, error, created_at, updated_at, shadow FROM runs
WHERE (:status IS NULL OR status = :status) AND (:rule IS NULL OR rule = :rule) AND (:shadow IS NULL OR shadow = :shadow)
ORDER BY updated_at DESC LIMIT :limit;

-- name: retry_dead_step
UPDATE steps SET status = 'ready', attempt = 0, due_at = ?, overrides = ?, error = NULL
WHERE run_id = ? AND idx = ? AND status = 'dead';

-- name: revive_run
UPDATE runs SET status = 'active', error = NULL, updated_at = ? WHERE id = ? AND status = 'dead';

-- name: rule_counts
SELECT rule, status, COUNT(*) FROM runs GROUP BY rule, status;

-- name: prune_runs
DELETE FROM runs WHERE rowid IN (
    SELECT rowid FROM runs WHERE status = 'succeeded' AND updated_at < ? LIMIT ?
) RETURNING id;

-- name: prune_steps
DELETE FROM steps WHERE run_id = ?;

-- name: prune_events
DELETE FROM events WHERE seq IN (
    SELECT e.seq FROM events e WHERE e.received_at < ? AND e.status = 'matched'
        AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.event_id = e.id)
    ORDER BY e.seq LIMIT ?
);

-- name: prune_deliveries
DELETE FROM deliveries WHERE (source, delivery_id) IN (
    SELECT source, delivery_id FROM deliveries WHERE expires_at < ? LIMIT ?
);

-- name: steps_of_run
SELECT run_id, idx, step_id, action, status, attempt, due_at, params, output, error, started_at, finished_at
FROM steps WHERE run_id = ? ORDER BY idx;

-- name: events_per_minute
SELECT source, CAST(received_at / 60 AS INTEGER) AS minute, COUNT(*) FROM events WHERE received_at >= ?
GROUP BY source, minute ORDER BY minute, source;

-- name: run_status_counts
SELECT status, COUNT(*) FROM runs GROUP BY status;

-- name: retrying_steps
-- Steps waiting for another attempt after a failed one, soonest first.
SELECT s.run_id, r.rule, r.event_id, s.idx, s.step_id, s.action, s.attempt, s.error, s.due_at, s.finished_at
FROM steps s JOIN runs r ON r.id = s.run_id
WHERE s.status IN ('ready', 'running') AND s.error IS NOT NULL ORDER BY s.due_at LIMIT ?;

-- name: count_events
SELECT status, COUNT(*) FROM events GROUP BY status;

-- name: open_queue_item
SELECT id, status, attempts, max_attempts, last_request FROM queue_items WHERE queue = ? AND key = ? AND status IN ('waiting', 'claimed');

-- name: insert_queue_item
INSERT INTO queue_items (id, queue, key, status, data, attempts, max_attempts, available_at, last_request, created_at, updated_at)
VALUES (?, ?, ?, 'waiting', ?, 1, ?, ?, ?, ?, ?);

-- name: requeue_item
-- A claimed item keeps its claim (someone is working on it); a waiting one waits anew.
UPDATE queue_items SET data = ?, attempts = attempts + 1, max_attempts = ?,
    available_at = CASE WHEN status = 'claimed' THEN available_at ELSE ? END, last_request = ?, updated_at = ?
WHERE id = ?;

-- name: queue_item_dead
UPDATE queue_items SET status = 'dead', error = ?, updated_at = ? WHERE id = ?;

-- name: claim_queue_item
UPDATE queue_items SET status = 'claimed', available_at = :lease_until, updated_at = :now
WHERE id = (
    SELECT id FROM queue_items WHERE queue = :queue AND status IN ('waiting', 'claimed') AND available_at <= :now
    ORDER BY available_at LIMIT 1
)
RETURNING id, queue, key, status, data, attempts, max_attempts, available_at, error, created_at, updated_at;

-- name: get_queue_item
SELECT id, queue, key, status, data, attempts, max_attempts, available_at, error, created_at, updated_at FROM queue_items WHERE id = ?;

-- name: queue_item_done
UPDATE queue_items SET status = 'done', error = NULL, updated_at = ? WHERE id = ? AND status = 'claimed';

-- name: queue_item_retry
UPDATE queue_items SET status = 'waiting', attempts = attempts + 1, available_at = ?, error = ?, updated_at = ? WHERE id = ? AND status = 'claimed';

-- name: list_queue_items
SELECT id, queue, key, status, data, attempts, max_attempts, available_at, error, created_at, updated_at FROM queue_items
WHERE queue = :queue AND (:status IS NULL OR status = :status) ORDER BY created_at LIMIT :limit;

-- name: queue_counts
SELECT queue, status, COUNT(*) FROM queue_items GROUP BY queue, status ORDER BY queue, status;

-- name: get_hover_account
SELECT access_token, refresh_token, expires_at, lock_holder, lock_until FROM hover_account WHERE id = ?;

-- name: save_hover_tokens
INSERT INTO hover_account (id, access_token, refresh_token, expires_at, updated_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET access_token = excluded.access_token, refresh_token = excluded.refresh_token,
    expires_at = excluded.expires_at, updated_at = excluded.updated_at;

-- name: ensure_hover_account
INSERT OR IGNORE INTO hover_account (id, updated_at) VALUES (?, ?);

-- name: lock_hover_account
UPDATE hover_account SET lock_holder = ?, lock_until = ? WHERE id = ? AND (lock_until IS NULL OR lock_until < ? OR lock_holder = ?);

-- name: unlock_hover_account
UPDATE hover_account SET lock_holder = NULL, lock_until = NULL WHERE id = ? AND lock_holder = ?;

-- name: save_hover_webhook
INSERT INTO hover_webhooks (webhook_id, source, url, verified_at, last_error, verify_method, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (webhook_id) DO UPDATE SET source = COALESCE(excluded.source, source), url = COALESCE(excluded.url, url),
    verified_at = COALESCE(excluded.verified_at, verified_at), last_error = excluded.last_error,
    verify_method = COALESCE(excluded.verify_method, verify_method), updated_at = excluded.updated_at;

-- name: list_hover_webhooks
SELECT webhook_id, source, url, verified_at, last_error, updated_at, verify_method FROM hover_webhooks
ORDER BY updated_at DESC;

-- name: forget_phantom_webhooks
-- Rows that earlier versions made from a failed handshake alone: never registered here,
-- never verified, and perhaps no webhook at all.
DELETE FROM hover_webhooks WHERE url IS NULL AND verified_at IS NULL;

-- name: begin_hover_login
INSERT INTO hover_logins (state, account, status, expires_at, updated_at)
VALUES (:state, :account, 'pending', :now + :ttl, :now);

-- name: prune_hover_logins
DELETE FROM hover_logins WHERE expires_at < :before;

-- name: take_hover_login
UPDATE hover_logins SET status = 'taken', updated_at = :now
WHERE state = :state AND status = 'pending' AND expires_at > :now
RETURNING account;

-- name: finish_hover_login
UPDATE hover_logins SET status = :status, error = :error, updated_at = :now WHERE state = :state;

-- name: get_hover_login
SELECT status, error, expires_at <= :now FROM hover_logins WHERE state = :state;

-- name: wake_steps
-- Ready steps of one action that wait for something that has just happened (their last
-- error says what): due now.
UPDATE steps SET due_at = :now
WHERE status = 'ready' AND action = :action AND due_at > :now AND substr(error, 1, length(:prefix)) = :prefix;
