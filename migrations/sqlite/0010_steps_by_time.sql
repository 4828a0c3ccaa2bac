-- Steps keyed by their execution's creation time before its id. Keyed by the random id alone,
-- the steps of every new execution went to a random leaf of this table: one more page written
-- per execution, a sixth of the WAL frames of the matched-intake benchmark. Keyed by time, new
-- executions' steps go where the last ones went. Every read and write of one execution's steps
-- finds the time through the execution (`STEPS_OF` in store/sqlite/executions.rs). triggerd
-- never changes an execution's created_at; the triggers below keep the steps with their
-- execution if someone else does.
CREATE TABLE execution_steps_by_time (
    execution_created_at INTEGER NOT NULL,
    plan_execution_id  TEXT NOT NULL,
    stage_index        INTEGER NOT NULL,
    step_index         INTEGER NOT NULL,
    stage_id           TEXT NOT NULL,
    stage_name         TEXT NOT NULL,
    step_id            TEXT NOT NULL,
    step_name          TEXT NOT NULL,
    step_type          TEXT NOT NULL,
    status             TEXT NOT NULL,
    attempt            INTEGER NOT NULL DEFAULT 0,
    started_at         INTEGER,
    ended_at           INTEGER,
    outputs            TEXT NOT NULL DEFAULT '{}',
    message            TEXT,
    log                TEXT,
    PRIMARY KEY (execution_created_at, plan_execution_id, stage_index, step_index)
) WITHOUT ROWID;

INSERT INTO execution_steps_by_time
SELECT e.created_at, s.plan_execution_id, s.stage_index, s.step_index, s.stage_id, s.stage_name,
       s.step_id, s.step_name, s.step_type, s.status, s.attempt, s.started_at, s.ended_at,
       s.outputs, s.message, s.log
FROM execution_steps s JOIN executions e ON e.plan_execution_id = s.plan_execution_id;

DROP TABLE execution_steps;
ALTER TABLE execution_steps_by_time RENAME TO execution_steps;

-- What the foreign key's ON DELETE CASCADE did; a foreign key would need an index on the
-- random id to find the steps.
CREATE TRIGGER executions_delete_steps AFTER DELETE ON executions BEGIN
    DELETE FROM execution_steps
    WHERE execution_created_at = OLD.created_at AND plan_execution_id = OLD.plan_execution_id;
END;

CREATE TRIGGER executions_move_steps AFTER UPDATE OF created_at ON executions
WHEN NEW.created_at IS NOT OLD.created_at BEGIN
    UPDATE execution_steps SET execution_created_at = NEW.created_at
    WHERE execution_created_at = OLD.created_at AND plan_execution_id = OLD.plan_execution_id;
END;
