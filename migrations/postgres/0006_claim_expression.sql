-- `claim_at` (migration 0005) becomes an expression of the index alone (issue 13). As a stored
-- generated column, every statement that writes an execution rebuilt its expression from the
-- catalog's text before running (8 % of the database server's CPU while the engine drained a
-- backlog); an index expression is read once per connection and kept. The claims name the
-- same expression (`claim_at!` in src/store/postgres/executions.rs), so that the planner
-- matches it to the index: when an execution can next be claimed by a worker (Queued: when it
-- was queued; a Wait or an approval timeout: when it wakes; a lease: the millisecond after it
-- runs out), NULL when no worker should ever pick it up (ended, paused, an approval without a
-- timeout).
DROP INDEX executions_claimable;
ALTER TABLE executions DROP COLUMN claim_at;
CREATE INDEX executions_claimable ON executions ((
    CASE WHEN status IN ('Queued', 'Running')
              OR (status = 'ApprovalWaiting' AND wake_at IS NOT NULL)
         THEN GREATEST(created_at, COALESCE(wake_at, 0), COALESCE(lease_until + 1, 0))
    END))
    WHERE (CASE WHEN status IN ('Queued', 'Running')
                     OR (status = 'ApprovalWaiting' AND wake_at IS NOT NULL)
                THEN GREATEST(created_at, COALESCE(wake_at, 0), COALESCE(lease_until + 1, 0))
           END) IS NOT NULL;
