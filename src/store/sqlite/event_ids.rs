//! SQLite's event ids ([`crate::store::event_ids`]): an id holds the rowid its event is stored
//! at, handed out in order after the last event's.
//!
//! Events stored before migration 0011 keep their random ids: `legacy_id` holds them, under an
//! index that no new event enters.

use std::sync::atomic::{AtomicI64, Ordering};

use rusqlite::{Connection, OptionalExtension};

use crate::domain::ids::EventId;
use crate::store::event_ids::{unusable, Cipher, MISSING_KEY, NUMBER_LIMIT};
use crate::store::{StoreError, StoreResult};

/// Mints this database's event ids and finds their rows.
pub(super) struct EventIds {
    cipher: Cipher,
    /// The rowid of the next event minted.
    next: AtomicI64,
}

impl EventIds {
    /// Reads the database's key, making it on first use, and starts minting after the last event
    /// stored. Runs before the writer starts, on its connection. Refuses to start when the key
    /// is gone while events it minted ids for are stored.
    pub(super) fn load(c: &Connection) -> StoreResult<Self> {
        let read = |c: &Connection| {
            c.query_row(
                "SELECT key FROM store_keys WHERE name = 'event_ids'",
                [],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
            .map_err(|e| StoreError::db("reading the event id key", e))
        };
        let key = match read(c)? {
            Some(key) => key,
            None => {
                // Only events from before migration 0011 (a full scan, once, at the first start
                // after it), or none.
                let minted: bool = c
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM webhook_events WHERE legacy_id IS NULL)",
                        [],
                        |r| r.get(0),
                    )
                    .map_err(|e| StoreError::db("checking for the event id key", e))?;
                if minted {
                    return Err(unusable(MISSING_KEY.into()));
                }
                let fresh = Cipher::fresh_key();
                c.execute(
                    "INSERT INTO store_keys (name, key) VALUES ('event_ids', ?1)",
                    [&fresh[..]],
                )
                .map_err(|e| StoreError::db("making the event id key", e))?;
                fresh.to_vec()
            }
        };
        let last: i64 = c
            .query_row(
                "SELECT coalesce(max(rowid), 0) FROM webhook_events",
                [],
                |r| r.get(0),
            )
            .map_err(|e| StoreError::db("reading the last event's rowid", e))?;
        Self::new(&key, last + 1)
    }

    fn new(key: &[u8], next: i64) -> StoreResult<Self> {
        Ok(Self {
            cipher: Cipher::new(key)?,
            next: AtomicI64::new(next),
        })
    }

    /// A new event's id, for the next rowid.
    pub(super) fn mint(&self) -> EventId {
        self.cipher.mint(self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Where an event of this id is stored: `(rowid, legacy)`. An id this store minted goes to
    /// the rowid it leads to. An id it did not mint (there is none in intake; tests make them)
    /// would lead to a rowid anywhere, perhaps one the counter reaches later: it goes to the
    /// next rowid instead and is found as events from before migration 0011 are.
    pub(super) fn place(&self, id: &EventId) -> (i64, bool) {
        let rowid = self.cipher.number(id);
        let next = self.next.load(Ordering::Relaxed);
        // Past 2^48 the store mints random ids (see `Cipher::mint`).
        if next <= NUMBER_LIMIT && rowid < next {
            (rowid, false)
        } else {
            (self.next.fetch_add(1, Ordering::Relaxed), true)
        }
    }

    /// The rowid `id` leads to. Any id leads to one; whether the event there has this id is the
    /// caller's question.
    pub(super) fn rowid(&self, id: &EventId) -> i64 {
        self.cipher.decrypt(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(next: i64) -> EventIds {
        EventIds::new(&Cipher::fresh_key(), next).unwrap()
    }

    #[test]
    fn ids_are_minted_for_the_next_rowids_and_placed_where_they_lead() {
        let ids = ids(41);
        let minted: Vec<EventId> = (0..100).map(|_| ids.mint()).collect();
        for (id, expected) in minted.iter().zip(41..) {
            assert_eq!(ids.rowid(id), expected);
            assert_eq!(ids.place(id), (expected, false));
        }
        // An id of zeros, not minted here, is stored next and found as a legacy one (it leads
        // to rowid 0, below the counter, only with odds of 2^-48).
        let zeros = EventId::from_bytes([0; 12]);
        let fresh = EventIds::new(&Cipher::fresh_key(), 1).unwrap();
        assert_eq!(fresh.place(&zeros), (1, true));
    }

    #[test]
    fn past_the_last_rowid_an_id_holds_ids_are_random_and_stored_next() {
        let ids = ids(NUMBER_LIMIT - 1);
        let last = ids.mint();
        assert_eq!(ids.place(&last), (NUMBER_LIMIT - 1, false));
        let random = ids.mint();
        assert!(EventId::parse(random.as_str()).is_some());
        assert_eq!(ids.place(&random), (NUMBER_LIMIT + 1, true));
    }

    #[test]
    fn an_id_minted_elsewhere_is_stored_next_not_where_it_leads() {
        let ids = ids(10);
        let ours = ids.mint();
        let foreign = EventId::generate();
        assert_eq!(ids.place(&foreign), (11, true));
        assert_eq!(ids.place(&ours), (10, false));
        assert_eq!(ids.rowid(&ids.mint()), 12);
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused() {
        assert!(EventIds::new(&[0u8; 16], 1).is_err());
    }
}
