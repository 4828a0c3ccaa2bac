-- Outbound event rules (DESIGN §8): the rules, the outbox of events waiting to be matched to
-- rules, one delivery per (event, rule) and every attempt to deliver it.

CREATE TABLE event_rules (
    account_id           TEXT NOT NULL,
    org_id               TEXT NOT NULL,
    project_id           TEXT NOT NULL,
    id                   TEXT NOT NULL,
    enabled              INTEGER NOT NULL,     -- the truth; spec.enabled is what the last PUT said
    spec                 TEXT NOT NULL,        -- JSON: name, filters, url, headers, auth, verifyTls, selectors
    secret               TEXT NOT NULL,        -- whsec_...
    previous_secret      TEXT,                 -- still signs until previous_until (rotation)
    previous_until       INTEGER,
    failing_since        INTEGER,              -- first failed attempt since the last success
    disabled_reason      TEXT,                 -- why triggerd disabled it (410, continuous failure)
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    PRIMARY KEY (account_id, org_id, project_id, id),
    FOREIGN KEY (account_id, org_id, project_id) REFERENCES projects(account_id, org_id, id)
        ON DELETE CASCADE
);

-- Execution events, written in the same transaction as the state change, until the dispatcher
-- has matched them to rules (and then deleted them).
CREATE TABLE outbox_events (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id           TEXT NOT NULL,
    org_id               TEXT NOT NULL,
    project_id           TEXT NOT NULL,
    pipeline_id          TEXT NOT NULL,
    event_type           TEXT NOT NULL,
    payload              TEXT NOT NULL,        -- the whole JSON body, id included
    created_at           INTEGER NOT NULL
);

-- Which execution events have been written, so that each is written once.
ALTER TABLE executions ADD COLUMN events_sent TEXT;

CREATE TABLE deliveries (
    id                   TEXT PRIMARY KEY,     -- 24 hex chars
    account_id           TEXT NOT NULL,
    org_id               TEXT NOT NULL,
    project_id           TEXT NOT NULL,
    rule_id              TEXT NOT NULL,
    webhook_id           TEXT NOT NULL,        -- the payload id: the same on every attempt
    execution_id         TEXT,                 -- the execution whose event it is (delivered in order)
    event_type           TEXT NOT NULL,
    payload              TEXT NOT NULL,
    status               TEXT NOT NULL,        -- Pending, Success, Failed
    attempts             INTEGER NOT NULL DEFAULT 0,
    schedule_step        INTEGER NOT NULL DEFAULT 0, -- position in the retry schedule
    next_attempt_at      INTEGER,
    lease_until          INTEGER,
    lease_token          TEXT,                 -- the attempt that holds it; only it may record
    is_test              INTEGER NOT NULL DEFAULT 0, -- a Test endpoint sample: never sent again
    last_error           TEXT,
    response_status      INTEGER,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    FOREIGN KEY (account_id, org_id, project_id, rule_id)
        REFERENCES event_rules(account_id, org_id, project_id, id) ON DELETE CASCADE
);
CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE status = 'Pending';
-- One execution's events go to a rule in order: a delivery waits for the earlier pending ones.
CREATE INDEX deliveries_pending_by_execution ON deliveries(execution_id, rule_id)
    WHERE status = 'Pending' AND execution_id IS NOT NULL;
CREATE INDEX deliveries_by_rule ON deliveries(account_id, org_id, project_id, rule_id, created_at DESC);
CREATE INDEX deliveries_by_time ON deliveries(created_at);

CREATE TABLE delivery_attempts (
    delivery_id          TEXT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    attempt              INTEGER NOT NULL,
    started_at           INTEGER NOT NULL,
    duration_ms          INTEGER NOT NULL,
    url                  TEXT NOT NULL,
    request_headers      TEXT NOT NULL,        -- JSON object, secrets masked
    response_status      INTEGER,
    response_headers     TEXT,                 -- JSON object
    response_body        TEXT,                 -- the first 16 KiB
    error                TEXT,
    PRIMARY KEY (delivery_id, attempt)
) WITHOUT ROWID;
