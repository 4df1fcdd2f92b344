-- The SQLite store's own blocks: its schema, the fragments of the shared queries
-- (queries.sql), and the queries whose shape differs here. Times are unix seconds (REAL).

-- name: now
:now

-- name: skip_locked

-- name: for_update

-- name: minute
CAST(received_at / 60 AS INTEGER)

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
