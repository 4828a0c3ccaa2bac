-- Events past retention are found through the listing index by project (its rows are ordered by
-- time within each project) instead of an index of their times of their own, as on SQLite (its
-- migration 0012): that index cost every stored event one more B-tree insert and its WAL
-- (issue 13). `purge_before` in store/postgres/executions.rs skips from one project to the next
-- in the listing index and deletes the front of each project's range.
DROP INDEX IF EXISTS webhook_events_by_time;
