-- Events found through their row's own key instead of an index of random ids. The id of an event
-- stored from now on is the encryption of its rowid and 6 random bytes under a key kept in
-- `store_keys` (store/sqlite/event_ids.rs), so reading it needs no index, and storing it writes no
-- page at a random place: the `TEXT PRIMARY KEY` on event_id cost every event a random leaf of
-- its own B-tree. SQLite cannot drop a primary key, so the table is rebuilt, rowids kept. The
-- events stored before keep their random ids, found through `legacy_id` and its index, which no
-- new event enters. `seq` names the rowid, so that VACUUM, `.dump` and restores keep it: an id
-- that led to a row must lead to it for good.
CREATE TABLE webhook_events_by_rowid (
    seq                 INTEGER PRIMARY KEY,
    event_id            TEXT NOT NULL,
    account_id          TEXT NOT NULL,
    org_id              TEXT NOT NULL,
    project_id          TEXT NOT NULL,
    pipeline_id         TEXT NOT NULL,
    trigger_id          TEXT NOT NULL,
    status              TEXT NOT NULL,
    message             TEXT NOT NULL,
    exception_occured   INTEGER NOT NULL,
    payload             TEXT NOT NULL,
    headers             TEXT NOT NULL,   -- JSON object, secret headers removed
    runtime_input       TEXT NOT NULL,
    condition_results   TEXT NOT NULL,   -- JSON array
    plan_execution_id   TEXT,
    idempotency_key     TEXT,
    created_at          INTEGER NOT NULL,
    legacy_id           TEXT             -- event_id of an event stored before this migration
);

INSERT INTO webhook_events_by_rowid
    (seq, event_id, account_id, org_id, project_id, pipeline_id, trigger_id, status, message,
     exception_occured, payload, headers, runtime_input, condition_results, plan_execution_id,
     idempotency_key, created_at, legacy_id)
SELECT rowid, event_id, account_id, org_id, project_id, pipeline_id, trigger_id, status, message,
       exception_occured, payload, headers, runtime_input, condition_results, plan_execution_id,
       idempotency_key, created_at, event_id
FROM webhook_events ORDER BY rowid;

DROP TABLE webhook_events;
ALTER TABLE webhook_events_by_rowid RENAME TO webhook_events;

CREATE UNIQUE INDEX webhook_events_by_legacy_id ON webhook_events(legacy_id)
    WHERE legacy_id IS NOT NULL;
CREATE INDEX webhook_events_by_project
    ON webhook_events(account_id, org_id, project_id, created_at, event_id);
CREATE INDEX webhook_events_by_trigger
    ON webhook_events(account_id, org_id, project_id, trigger_id, created_at, event_id);
CREATE INDEX webhook_events_by_time ON webhook_events(created_at);

-- Keys the store makes for itself (OS CSPRNG, on first start), by use: 'event_ids'.
CREATE TABLE store_keys (
    name  TEXT PRIMARY KEY,
    key   BLOB NOT NULL
);
