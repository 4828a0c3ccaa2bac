-- Events found through a number of their own instead of an index of random ids, as on SQLite
-- (its migration 0011; issue 13). The id of an event stored from now on is the encryption of its
-- `seq` and 6 random bytes under a key kept in `store_keys` (src/store/event_ids.rs), so reading
-- it needs no index of ids, and storing it writes no page at a random place: the `TEXT PRIMARY
-- KEY` on event_id cost every event a random leaf of its own B-tree (10-13 us of the server's CPU
-- and 120 bytes of WAL per no-match event, measured by dropping it). Nodes take `seq`s in blocks
-- of 4096 from `webhook_event_seq` (src/store/postgres/event_ids.rs), so each node appends to
-- the primary key near its right edge.
--
-- The events stored before keep their random ids, found through `legacy_id` and its index,
-- which no new event enters. They are numbered here in the order they were stored; an execution
-- reaches its event through `event_seq`, filled here for the executions queued before.
--
-- Every event is updated once: on a large database this migration takes a while, with every
-- node stopped (nodes of an earlier version cannot store events once it has run), and the table
-- holds the old row versions until (auto)vacuum reclaims them.
CREATE SEQUENCE webhook_event_seq AS BIGINT MINVALUE 1;

ALTER TABLE webhook_events ADD COLUMN seq BIGINT, ADD COLUMN legacy_id TEXT COLLATE "C";
UPDATE webhook_events SET legacy_id = event_id, seq = numbered.n
    FROM (SELECT event_id AS id, nextval('webhook_event_seq') AS n
          FROM (SELECT event_id FROM webhook_events ORDER BY created_at, event_id) ordered) numbered
    WHERE webhook_events.event_id = numbered.id;

ALTER TABLE executions ADD COLUMN event_seq BIGINT;
UPDATE executions x SET event_seq = e.seq FROM webhook_events e WHERE e.event_id = x.event_id;

ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_pkey;
ALTER TABLE webhook_events ALTER COLUMN seq SET NOT NULL, ADD PRIMARY KEY (seq);
CREATE UNIQUE INDEX webhook_events_by_legacy_id ON webhook_events(legacy_id)
    WHERE legacy_id IS NOT NULL;
ALTER SEQUENCE webhook_event_seq INCREMENT BY 4096;

-- Keys the store makes for itself (OS CSPRNG, on first start), by use: 'event_ids'.
CREATE TABLE store_keys (
    name  TEXT PRIMARY KEY,
    key   BYTEA NOT NULL
);
