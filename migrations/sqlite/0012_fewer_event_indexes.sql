-- Two of the three listing indexes of `webhook_events` go. Every stored event entered all three,
-- and SQLite writes an append to an index's right edge as a split that rewrites the last three
-- leaves and their parent (it keeps the quick append for tables' rowids only): in no-match
-- intake the three indexes wrote half of every commit's pages (9.5 of 16.7 per commit, parsed
-- from the WAL), and the store alone committed a fifth more events a second without these two.
-- - `webhook_events_by_project`: a project's listing now merges the listings of its triggers,
--   each walked in `webhook_events_by_trigger` (store/sqlite/mod.rs, `list_events`).
-- - `webhook_events_by_time`: retention walks the events by `seq`, the order they were stored
--   in, up to the first one inside the retention period (store/sqlite/executions.rs).
DROP INDEX webhook_events_by_project;
DROP INDEX webhook_events_by_time;
