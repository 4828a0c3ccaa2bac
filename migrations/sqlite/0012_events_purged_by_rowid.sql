-- Events are purged in rowid order instead of through an index of their times. Rowids are handed
-- out in the order events are stored (store/sqlite/event_ids.rs), so the oldest events are at
-- the table's start, and the purge walks it from there to the first event inside retention
-- (`purge_before` in store/sqlite/executions.rs). The index cost every stored event one more
-- B-tree insert on the writer, and its pages in every commit and checkpoint (issue 13).
DROP INDEX webhook_events_by_time;
