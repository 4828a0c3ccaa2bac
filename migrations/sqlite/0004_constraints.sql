-- Uniqueness and counters enforced by the schema, not by there being one writer.

-- An Idempotency-Key belongs to the first event that used it for 24 h: the key's row is
-- claimed with INSERT .. ON CONFLICT, and taken over only once it is older than the window.
CREATE TABLE idempotency_keys (
    account_id   TEXT NOT NULL,
    org_id       TEXT NOT NULL,
    project_id   TEXT NOT NULL,
    pipeline_id  TEXT NOT NULL,
    trigger_id   TEXT NOT NULL,
    key          TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (account_id, org_id, project_id, pipeline_id, trigger_id, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_by_time ON idempotency_keys(created_at);

-- The newest use of each key already stored.
INSERT INTO idempotency_keys
SELECT account_id, org_id, project_id, pipeline_id, trigger_id, idempotency_key, event_id, MAX(created_at)
FROM webhook_events WHERE idempotency_key IS NOT NULL
GROUP BY account_id, org_id, project_id, pipeline_id, trigger_id, idempotency_key;

DROP INDEX webhook_events_by_idempotency_key;

-- Run sequence numbers: one counter per pipeline, bumped atomically, never MAX()+1.
CREATE TABLE pipeline_counters (
    account_id   TEXT NOT NULL,
    org_id       TEXT NOT NULL,
    project_id   TEXT NOT NULL,
    pipeline_id  TEXT NOT NULL,
    last         INTEGER NOT NULL,
    PRIMARY KEY (account_id, org_id, project_id, pipeline_id)
) WITHOUT ROWID;

INSERT INTO pipeline_counters
SELECT account_id, org_id, project_id, pipeline_id, MAX(run_sequence)
FROM executions GROUP BY account_id, org_id, project_id, pipeline_id;

-- One unrevoked root key is enforced by the insert itself (`insert_api_key`: root keys are
-- stored only WHERE NOT EXISTS another), under SQLite's writer lock; not by a unique index,
-- which a database that already holds two root keys (two processes racing at the very
-- first start, before the file lock) could not take.
