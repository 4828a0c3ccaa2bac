-- triggerd schema on PostgreSQL: the SQLite schema (migrations/sqlite/0001..0003) in one file,
-- plus what several nodes sharing one database need: identity columns instead of rowids, an
-- idempotency-key table and a run counter enforced by the schema, and rule selectors as an
-- array the delivery claim can test.
-- Times are epoch milliseconds. JSON columns hold serde_json text. Identifiers compare
-- byte-wise (COLLATE "C"), as in SQLite, so lists and cursors order the same on both backends.
-- A webhook body is kept as bytes: TEXT cannot hold the NUL character a body may contain.

CREATE TABLE accounts (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE orgs (
    account_id  TEXT COLLATE "C" NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    id          TEXT COLLATE "C" NOT NULL,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (account_id, id)
);

CREATE TABLE projects (
    account_id  TEXT COLLATE "C" NOT NULL,
    org_id      TEXT COLLATE "C" NOT NULL,
    id          TEXT COLLATE "C" NOT NULL,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (account_id, org_id, id),
    FOREIGN KEY (account_id, org_id) REFERENCES orgs(account_id, id) ON DELETE CASCADE
);

CREATE TABLE api_keys (
    key_id      TEXT COLLATE "C" PRIMARY KEY,
    account_id  TEXT COLLATE "C" NOT NULL,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    projects    TEXT,            -- JSON array of "org/project", NULL = every project
    hash        TEXT NOT NULL,   -- argon2id PHC string of the whole key
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX api_keys_by_account ON api_keys(account_id, created_at);
-- One unrevoked root key: nodes that create it at once cannot both succeed.
CREATE UNIQUE INDEX api_keys_one_root ON api_keys(account_id)
    WHERE account_id = '_root' AND revoked_at IS NULL;

-- org_id / project_id are '' for a setting at a wider scope.
CREATE TABLE settings (
    account_id       TEXT COLLATE "C" NOT NULL,
    org_id           TEXT COLLATE "C" NOT NULL,
    project_id       TEXT COLLATE "C" NOT NULL,
    name             TEXT NOT NULL,
    value            BOOLEAN NOT NULL,
    allow_overrides  BOOLEAN NOT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (account_id, org_id, project_id, name)
);

CREATE TABLE pipelines (
    account_id  TEXT COLLATE "C" NOT NULL,
    org_id      TEXT COLLATE "C" NOT NULL,
    project_id  TEXT COLLATE "C" NOT NULL,
    id          TEXT COLLATE "C" NOT NULL,
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,   -- canonical JSON of the pipeline
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (account_id, org_id, project_id, id),
    FOREIGN KEY (account_id, org_id, project_id)
        REFERENCES projects(account_id, org_id, id) ON DELETE CASCADE
);

CREATE TABLE triggers (
    account_id   TEXT COLLATE "C" NOT NULL,
    org_id       TEXT COLLATE "C" NOT NULL,
    project_id   TEXT COLLATE "C" NOT NULL,
    pipeline_id  TEXT COLLATE "C" NOT NULL,
    id           TEXT COLLATE "C" NOT NULL,
    name         TEXT NOT NULL,
    token        TEXT NOT NULL,
    -- Lookups go by SHA-256 of the token, so no comparison ever runs on the secret itself.
    token_sha256 BYTEA NOT NULL UNIQUE,
    enabled      BOOLEAN NOT NULL,
    spec         TEXT NOT NULL,  -- canonical JSON of the trigger, secrets included
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (account_id, org_id, project_id, pipeline_id, id),
    FOREIGN KEY (account_id, org_id, project_id, pipeline_id)
        REFERENCES pipelines(account_id, org_id, project_id, id) ON DELETE CASCADE
);

-- Webhook events and executions deliberately have no foreign keys: they stay readable after
-- the trigger or pipeline is deleted, until retention removes them.
CREATE TABLE webhook_events (
    event_id            TEXT COLLATE "C" PRIMARY KEY,
    account_id          TEXT COLLATE "C" NOT NULL,
    org_id              TEXT COLLATE "C" NOT NULL,
    project_id          TEXT COLLATE "C" NOT NULL,
    pipeline_id         TEXT COLLATE "C" NOT NULL,
    trigger_id          TEXT COLLATE "C" NOT NULL,
    status              TEXT NOT NULL,
    message             TEXT NOT NULL,
    exception_occured   BOOLEAN NOT NULL,
    payload             BYTEA NOT NULL,  -- the body as received (UTF-8)
    headers             TEXT NOT NULL,   -- JSON object, secret headers removed
    runtime_input       TEXT NOT NULL,
    condition_results   TEXT NOT NULL,   -- JSON array
    plan_execution_id   TEXT COLLATE "C",
    idempotency_key     TEXT,
    created_at          BIGINT NOT NULL
);
CREATE INDEX webhook_events_by_project
    ON webhook_events(account_id, org_id, project_id, created_at DESC, event_id DESC);
CREATE INDEX webhook_events_by_trigger
    ON webhook_events(account_id, org_id, project_id, trigger_id, created_at DESC, event_id DESC);
CREATE INDEX webhook_events_by_time ON webhook_events(created_at);

-- An Idempotency-Key belongs to the first event that used it for 24 hours. The primary key
-- makes two nodes that receive the same key at once agree on one owner.
CREATE TABLE idempotency_keys (
    account_id   TEXT COLLATE "C" NOT NULL,
    org_id       TEXT COLLATE "C" NOT NULL,
    project_id   TEXT COLLATE "C" NOT NULL,
    pipeline_id  TEXT COLLATE "C" NOT NULL,
    trigger_id   TEXT COLLATE "C" NOT NULL,
    key          TEXT NOT NULL,
    event_id     TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (account_id, org_id, project_id, pipeline_id, trigger_id, key)
);
CREATE INDEX idempotency_keys_by_time ON idempotency_keys(created_at);

-- The last run sequence number of each pipeline: incremented in the transaction that queues
-- an execution, so concurrent nodes never hand out the same number.
CREATE TABLE pipeline_counters (
    account_id   TEXT COLLATE "C" NOT NULL,
    org_id       TEXT COLLATE "C" NOT NULL,
    project_id   TEXT COLLATE "C" NOT NULL,
    pipeline_id  TEXT COLLATE "C" NOT NULL,
    last         BIGINT NOT NULL,
    PRIMARY KEY (account_id, org_id, project_id, pipeline_id)
);

CREATE TABLE executions (
    plan_execution_id  TEXT COLLATE "C" PRIMARY KEY,
    account_id         TEXT COLLATE "C" NOT NULL,
    org_id             TEXT COLLATE "C" NOT NULL,
    project_id         TEXT COLLATE "C" NOT NULL,
    pipeline_id        TEXT COLLATE "C" NOT NULL,
    pipeline_name      TEXT NOT NULL,
    status             TEXT NOT NULL,
    trigger_type       TEXT NOT NULL,   -- WEBHOOK_CUSTOM | MANUAL
    trigger_id         TEXT,
    event_id           TEXT,
    run_sequence       BIGINT NOT NULL,
    runtime_input      TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    started_at         BIGINT,
    ended_at           BIGINT,
    pipeline_spec      TEXT,            -- JSON snapshot taken when it starts
    lease_owner        TEXT,            -- the worker node that holds it
    lease_until        BIGINT,          -- epoch ms; free after this
    wake_at            BIGINT,          -- a Wait step: runnable again at
    failure_message    TEXT,
    control            TEXT,            -- 'abort' or 'pause', for the worker
    events_sent        TEXT             -- which execution events have been written (once each)
);
CREATE INDEX executions_by_pipeline
    ON executions(account_id, org_id, project_id, pipeline_id, run_sequence DESC);
CREATE INDEX executions_by_status ON executions(status, created_at);
-- Runnable work: Queued, or Running with no live lease and nothing to wait for, or an
-- approval whose timeout has passed.
CREATE INDEX executions_runnable ON executions(created_at)
    WHERE status IN ('Queued', 'Running', 'ApprovalWaiting');
-- GET P/executions: a project's executions, newest first.
CREATE INDEX executions_by_project
    ON executions(account_id, org_id, project_id, created_at DESC, plan_execution_id DESC);
-- Retention: ended executions, found without scanning the table.
CREATE INDEX executions_by_end ON executions(ended_at) WHERE ended_at IS NOT NULL;

CREATE TABLE execution_steps (
    plan_execution_id  TEXT COLLATE "C" NOT NULL
        REFERENCES executions(plan_execution_id) ON DELETE CASCADE,
    stage_index        INTEGER NOT NULL,
    step_index         INTEGER NOT NULL,
    stage_id           TEXT NOT NULL,
    stage_name         TEXT NOT NULL,
    step_id            TEXT NOT NULL,
    step_name          TEXT NOT NULL,
    step_type          TEXT NOT NULL,
    status             TEXT NOT NULL,       -- NotStarted Running Success Failed Skipped Aborted ...
    attempt            INTEGER NOT NULL DEFAULT 0,
    started_at         BIGINT,
    ended_at           BIGINT,
    outputs            TEXT NOT NULL DEFAULT '{}',
    message            TEXT,
    log                TEXT,
    PRIMARY KEY (plan_execution_id, stage_index, step_index)
);

-- Outbound event rules (DESIGN §8).
CREATE TABLE event_rules (
    account_id           TEXT COLLATE "C" NOT NULL,
    org_id               TEXT COLLATE "C" NOT NULL,
    project_id           TEXT COLLATE "C" NOT NULL,
    id                   TEXT COLLATE "C" NOT NULL,
    enabled              BOOLEAN NOT NULL,     -- the truth; spec.enabled is what the last PUT said
    spec                 TEXT NOT NULL,        -- JSON: name, filters, url, headers, auth, verifyTls, selectors
    selectors            TEXT[] NOT NULL DEFAULT '{}', -- spec.selectors, for the delivery claim
    secret               TEXT NOT NULL,        -- whsec_...
    previous_secret      TEXT,                 -- still signs until previous_until (rotation)
    previous_until       BIGINT,
    failing_since        BIGINT,               -- first failed attempt since the last success
    disabled_reason      TEXT,                 -- why triggerd disabled it (410, continuous failure)
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    PRIMARY KEY (account_id, org_id, project_id, id),
    FOREIGN KEY (account_id, org_id, project_id) REFERENCES projects(account_id, org_id, id)
        ON DELETE CASCADE
);

-- Execution events, written in the same transaction as the state change, until a dispatcher
-- has matched them to rules (and then deleted them).
CREATE TABLE outbox_events (
    seq                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id           TEXT COLLATE "C" NOT NULL,
    org_id               TEXT COLLATE "C" NOT NULL,
    project_id           TEXT COLLATE "C" NOT NULL,
    pipeline_id          TEXT NOT NULL,
    event_type           TEXT NOT NULL,
    payload              TEXT NOT NULL,        -- the whole JSON body, id included
    created_at           BIGINT NOT NULL
);

CREATE TABLE deliveries (
    id                   TEXT COLLATE "C" PRIMARY KEY, -- 24 hex chars
    seq                  BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE, -- insertion order
    account_id           TEXT COLLATE "C" NOT NULL,
    org_id               TEXT COLLATE "C" NOT NULL,
    project_id           TEXT COLLATE "C" NOT NULL,
    rule_id              TEXT COLLATE "C" NOT NULL,
    webhook_id           TEXT NOT NULL,        -- the payload id: the same on every attempt
    execution_id         TEXT,                 -- the execution whose event it is (delivered in order)
    event_type           TEXT NOT NULL,
    payload              TEXT NOT NULL,
    status               TEXT NOT NULL,        -- Pending, Success, Failed
    attempts             INTEGER NOT NULL DEFAULT 0,
    schedule_step        INTEGER NOT NULL DEFAULT 0, -- position in the retry schedule
    next_attempt_at      BIGINT,
    lease_until          BIGINT,
    lease_token          TEXT,                 -- the attempt that holds it; only it may record
    is_test              BOOLEAN NOT NULL DEFAULT FALSE, -- a Test endpoint sample: never sent again
    last_error           TEXT,
    response_status      INTEGER,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    FOREIGN KEY (account_id, org_id, project_id, rule_id)
        REFERENCES event_rules(account_id, org_id, project_id, id) ON DELETE CASCADE
);
CREATE INDEX deliveries_due ON deliveries(next_attempt_at, seq) WHERE status = 'Pending';
-- One execution's events go to a rule in order: a delivery waits for the earlier pending ones.
CREATE INDEX deliveries_pending_by_execution ON deliveries(execution_id, rule_id, seq)
    WHERE status = 'Pending' AND execution_id IS NOT NULL;
CREATE INDEX deliveries_by_rule ON deliveries(account_id, org_id, project_id, rule_id, seq DESC);
CREATE INDEX deliveries_by_time ON deliveries(created_at);
-- An event goes to a rule once, even when two nodes fan out the same outbox rows.
CREATE UNIQUE INDEX deliveries_once_per_event
    ON deliveries(account_id, org_id, project_id, rule_id, webhook_id) WHERE NOT is_test;

CREATE TABLE delivery_attempts (
    delivery_id          TEXT COLLATE "C" NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    attempt              INTEGER NOT NULL,
    started_at           BIGINT NOT NULL,
    duration_ms          BIGINT NOT NULL,
    url                  TEXT NOT NULL,
    request_headers      TEXT NOT NULL,        -- JSON object, secrets masked
    response_status      INTEGER,
    response_headers     TEXT,                 -- JSON object
    response_body        TEXT,                 -- the first 16 KiB
    error                TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
