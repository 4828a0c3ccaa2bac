-- Events past retention are found through the listing index by project (its rows are ordered by
-- time within each project) instead of an index of their times of their own: that index cost
-- every stored event one more B-tree insert on the writer, and its pages in every commit and
-- checkpoint (issue 13). `purge_events` in store/sqlite/executions.rs skips from one project to
-- the next in the listing index and deletes the front of each project's range.
DROP INDEX IF EXISTS webhook_events_by_time;
