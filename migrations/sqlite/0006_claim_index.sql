-- One index answers the engine's claim: `claim_at` is when an execution can next be claimed by a
-- worker (Queued: when it was queued; a Wait or an approval timeout: when it wakes; a lease: the
-- millisecond after it expires), NULL when no worker should ever pick it up (ended, paused, an
-- approval without a timeout). The claim reads the due entries in order and stops at its limit,
-- instead of filtering and sorting every queued row on each claim, which made a backlog of N
-- executions cost O(N) per claim on the single writer.
ALTER TABLE executions ADD COLUMN claim_at INTEGER GENERATED ALWAYS AS (
    CASE WHEN status IN ('Queued', 'Running')
              OR (status = 'ApprovalWaiting' AND wake_at IS NOT NULL)
         THEN max(created_at, coalesce(wake_at, 0), coalesce(lease_until + 1, 0))
    END) VIRTUAL;
CREATE INDEX executions_claimable ON executions(claim_at) WHERE claim_at IS NOT NULL;

-- Superseded by executions_claimable; nothing else reads them. Each was one more index entry
-- written per execution and per status change.
DROP INDEX executions_runnable;
DROP INDEX executions_by_status;
