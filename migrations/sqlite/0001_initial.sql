-- triggerd schema v1: tenancy, keys, settings, pipelines, triggers, webhook events, executions.
-- Times are epoch milliseconds. JSON columns hold serde_json text.

CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE orgs (
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (account_id, id)
);

CREATE TABLE projects (
    account_id  TEXT NOT NULL,
    org_id      TEXT NOT NULL,
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (account_id, org_id, id),
    FOREIGN KEY (account_id, org_id) REFERENCES orgs(account_id, id) ON DELETE CASCADE
);

CREATE TABLE api_keys (
    key_id      TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    projects    TEXT,            -- JSON array of "org/project", NULL = every project
    hash        TEXT NOT NULL,   -- argon2id PHC string of the whole key
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);
CREATE INDEX api_keys_by_account ON api_keys(account_id, created_at);

-- org_id / project_id are '' for a setting at a wider scope.
CREATE TABLE settings (
    account_id       TEXT NOT NULL,
    org_id           TEXT NOT NULL,
    project_id       TEXT NOT NULL,
    name             TEXT NOT NULL,
    value            INTEGER NOT NULL,
    allow_overrides  INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (account_id, org_id, project_id, name)
);

CREATE TABLE pipelines (
    account_id  TEXT NOT NULL,
    org_id      TEXT NOT NULL,
    project_id  TEXT NOT NULL,
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,   -- canonical JSON of the pipeline
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (account_id, org_id, project_id, id),
    FOREIGN KEY (account_id, org_id, project_id)
        REFERENCES projects(account_id, org_id, id) ON DELETE CASCADE
);

CREATE TABLE triggers (
    account_id   TEXT NOT NULL,
    org_id       TEXT NOT NULL,
    project_id   TEXT NOT NULL,
    pipeline_id  TEXT NOT NULL,
    id           TEXT NOT NULL,
    name         TEXT NOT NULL,
    token        TEXT NOT NULL,
    -- Lookups go by SHA-256 of the token, so no comparison ever runs on the secret itself.
    token_sha256 BLOB NOT NULL UNIQUE,
    enabled      INTEGER NOT NULL,
    spec         TEXT NOT NULL,  -- canonical JSON of the trigger, secrets included
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (account_id, org_id, project_id, pipeline_id, id),
    FOREIGN KEY (account_id, org_id, project_id, pipeline_id)
        REFERENCES pipelines(account_id, org_id, project_id, id) ON DELETE CASCADE
);

-- Webhook events and executions deliberately have no foreign keys: they stay readable after
-- the trigger or pipeline is deleted, until retention removes them.
CREATE TABLE webhook_events (
    event_id            TEXT PRIMARY KEY,
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
    created_at          INTEGER NOT NULL
);
CREATE INDEX webhook_events_by_project
    ON webhook_events(account_id, org_id, project_id, created_at DESC, event_id DESC);
CREATE INDEX webhook_events_by_trigger
    ON webhook_events(account_id, org_id, project_id, trigger_id, created_at DESC, event_id DESC);
CREATE INDEX webhook_events_by_idempotency_key
    ON webhook_events(account_id, org_id, project_id, pipeline_id, trigger_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE executions (
    plan_execution_id  TEXT PRIMARY KEY,
    account_id         TEXT NOT NULL,
    org_id             TEXT NOT NULL,
    project_id         TEXT NOT NULL,
    pipeline_id        TEXT NOT NULL,
    pipeline_name      TEXT NOT NULL,
    status             TEXT NOT NULL,
    trigger_type       TEXT NOT NULL,   -- WEBHOOK_CUSTOM | MANUAL
    trigger_id         TEXT,
    event_id           TEXT,
    run_sequence       INTEGER NOT NULL,
    runtime_input      TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    started_at         INTEGER,
    ended_at           INTEGER
);
CREATE INDEX executions_by_pipeline
    ON executions(account_id, org_id, project_id, pipeline_id, run_sequence DESC);
CREATE INDEX executions_by_status ON executions(status, created_at);
