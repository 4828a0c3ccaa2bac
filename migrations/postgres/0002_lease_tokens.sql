-- Fenced execution leases: each claim of an execution gets a fresh token, and a worker's writes
-- apply only while the execution's lease_token is still its own and lease_until (by the
-- database clock) has not passed. lease_owner (the node) stays for operators; two workers of
-- one node share it.

ALTER TABLE executions ADD COLUMN lease_token TEXT;   -- the claim that holds the lease
