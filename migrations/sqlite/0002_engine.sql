-- The execution engine (DESIGN §6.3): the pipeline snapshot an execution runs, the lease a
-- worker holds on it, when a waiting execution becomes runnable again, and one row per step.

ALTER TABLE executions ADD COLUMN pipeline_spec TEXT;      -- JSON snapshot taken when it starts
ALTER TABLE executions ADD COLUMN lease_owner TEXT;        -- the worker node that holds it
ALTER TABLE executions ADD COLUMN lease_until INTEGER;     -- epoch ms; free after this
ALTER TABLE executions ADD COLUMN wake_at INTEGER;         -- a Wait step: runnable again at
ALTER TABLE executions ADD COLUMN failure_message TEXT;
ALTER TABLE executions ADD COLUMN control TEXT;            -- 'abort' or 'pause', for the worker

-- Runnable work: Queued, or Running with no live lease and nothing to wait for, or an
-- approval whose timeout has passed.
CREATE INDEX executions_runnable ON executions(status, wake_at, created_at)
    WHERE status IN ('Queued', 'Running', 'ApprovalWaiting');

CREATE TABLE execution_steps (
    plan_execution_id  TEXT NOT NULL REFERENCES executions(plan_execution_id) ON DELETE CASCADE,
    stage_index        INTEGER NOT NULL,
    step_index         INTEGER NOT NULL,
    stage_id           TEXT NOT NULL,
    stage_name         TEXT NOT NULL,
    step_id            TEXT NOT NULL,
    step_name          TEXT NOT NULL,
    step_type          TEXT NOT NULL,
    status             TEXT NOT NULL,       -- NotStarted Running Success Failed Skipped Aborted ...
    attempt            INTEGER NOT NULL DEFAULT 0,
    started_at         INTEGER,
    ended_at           INTEGER,
    outputs            TEXT NOT NULL DEFAULT '{}',
    message            TEXT,
    log                TEXT,
    PRIMARY KEY (plan_execution_id, stage_index, step_index)
) WITHOUT ROWID;

-- GET P/executions: a project's executions, newest first.
CREATE INDEX executions_by_project ON executions(account_id, org_id, project_id, created_at DESC);

-- Retention: old events and ended executions, found without scanning the tables.
CREATE INDEX webhook_events_by_time ON webhook_events(created_at);
CREATE INDEX executions_by_end ON executions(ended_at) WHERE ended_at IS NOT NULL;
