-- Live step logs (DESIGN §12): the lines a Run step writes, appended while it runs, so a
-- follower (`logs -f`, the console, another node) reads them before the step ends. `seq` is
-- (attempt << 32) + line number: ordered across retries. `stream` is stdout, stderr or triggerd
-- (the runner's own notes). Bounded per step by the engine; deleted with their execution.
CREATE TABLE step_log_lines (
    plan_execution_id  TEXT COLLATE "C" NOT NULL
        REFERENCES executions(plan_execution_id) ON DELETE CASCADE,
    stage_id           TEXT NOT NULL,
    step_id            TEXT NOT NULL,
    seq                BIGINT NOT NULL,
    stream             TEXT NOT NULL,
    ts                 BIGINT NOT NULL,
    line               TEXT NOT NULL,
    PRIMARY KEY (plan_execution_id, stage_id, step_id, seq)
);
