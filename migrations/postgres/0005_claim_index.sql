-- One index answers the engine's claim, as on SQLite (its migration 0006): `claim_at` is when an
-- execution can next be claimed by a worker (Queued: when it was queued; a Wait or an approval
-- timeout: when it wakes; a lease: the millisecond after it runs out), NULL when no worker should
-- ever pick it up (ended, paused, an approval without a timeout). The claim reads the due
-- entries in order and stops at its limit. Before, the planner answered the claim's conditions
-- with a bitmap of every queued row from the two indexes below, then sorted them: with a
-- backlog of 10,000 executions each claim read and sorted all 10,000 (7 ms), and the claims
-- took most of the database server's CPU under matched intake (issue 13).
ALTER TABLE executions ADD COLUMN claim_at BIGINT GENERATED ALWAYS AS (
    CASE WHEN status IN ('Queued', 'Running')
              OR (status = 'ApprovalWaiting' AND wake_at IS NOT NULL)
         THEN GREATEST(created_at, COALESCE(wake_at, 0), COALESCE(lease_until + 1, 0))
    END) STORED;
CREATE INDEX executions_claimable ON executions(claim_at) WHERE claim_at IS NOT NULL;

-- Superseded by executions_claimable; nothing else reads them. Each was one more index entry
-- written per execution and per status change.
DROP INDEX executions_runnable;
DROP INDEX executions_by_status;
