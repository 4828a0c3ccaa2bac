//! Event ids that lead to their row without an index.
//!
//! DESIGN §1 makes an eventCorrelationId 12 bytes nobody can guess. Kept under an index of its
//! own, a random id costs every stored event an insert at a random leaf of that index: one more
//! page in the WAL per event and, once the table is large, a page read first and copied back by
//! every checkpoint. Without that index the store alone commits 1.6-1.9 times as many no-match
//! events a second on the development machine (issue 13).
//!
//! So this store mints its event ids itself: an id is the FF1 encryption (NIST SP 800-38G, AES-256,
//! the `fpe` crate) of the rowid the event will be stored at (6 bytes) and 6 random bytes (OS
//! CSPRNG), under a key made once per database and kept in it (`store_keys`). Without the key an
//! id cannot be told from 12 random bytes, nor one made from another. With it, the store decrypts
//! an id to its rowid and compares the id stored there, so a guessed, altered or stale id finds
//! nothing. Rowids are handed out in order, so new events are appended to the table (the
//! listing indexes, which lead with the project, still take them at each project's end).
//!
//! Events stored before migration 0011 keep their random ids: `legacy_id` holds them, under an
//! index that no new event enters.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use aes::Aes256;
use fpe::ff1::{NumeralString, Operations, FF1};
use rand::rngs::OsRng;
use rand::RngCore;
use rusqlite::{Connection, OptionalExtension};

use crate::domain::ids::EventId;
use crate::store::{StoreError, StoreResult};

/// The bytes of an id that hold the rowid: up to 2^48 events.
const ROWID_BYTES: usize = 6;
const ROWID_LIMIT: i64 = 1 << (8 * ROWID_BYTES);
/// How many of the ids minted last `place` finds without decrypting them.
const RECENT: usize = 8;

/// An id's bytes and the rowid it was minted for.
type Minted = ([u8; 12], i64);

/// Mints this database's event ids and finds their rows.
pub(super) struct EventIds {
    ff1: FF1<Aes256>,
    /// The rowid of the next event minted.
    next: AtomicI64,
    /// The last ids minted and their rowids, at `rowid % RECENT`. Intake mints an id and stores
    /// its event moments later: `place` finds the rowid here instead of decrypting the id again
    /// (an FF1 call, about a microsecond of an HTTP worker's time per event).
    recent: Mutex<[Option<Minted>; RECENT]>,
}

impl EventIds {
    /// Reads the database's key, making it on first use, and starts minting after the last event
    /// stored. Runs before the writer starts, on its connection. Refuses to start when the key
    /// is gone while events it minted ids for are stored (a partial copy of the database): a new
    /// key would lead their ids nowhere.
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
                    return Err(unusable(
                        "it is missing from store_keys, yet events stored with it are in the \
                         database (restore the database whole, store_keys included)"
                            .into(),
                    ));
                }
                let mut fresh = [0u8; 32];
                OsRng.fill_bytes(&mut fresh);
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

    /// Where an event of this id is stored: `(rowid, legacy)`. An id this store minted goes to
    /// the rowid it leads to. An id it did not mint (there is none in intake; tests make them)
    /// would lead to a rowid anywhere, perhaps one the counter reaches later: it goes to the
    /// next rowid instead and is found as events from before migration 0011 are.
    pub(super) fn place(&self, id: &EventId) -> (i64, bool) {
        let bytes = id.to_bytes();
        let minted = self.recent.lock().ok().and_then(|recent| {
            recent
                .iter()
                .flatten()
                .find(|(b, _)| *b == bytes)
                .map(|&(_, r)| r)
        });
        let rowid = minted.unwrap_or_else(|| self.rowid(id));
        let next = self.next.load(Ordering::Relaxed);
        // Past 2^48 the store mints random ids (see `mint`).
        if next <= ROWID_LIMIT && rowid < next {
            (rowid, false)
        } else {
            (self.next.fetch_add(1, Ordering::Relaxed), true)
        }
    }

    fn new(key: &[u8], next: i64) -> StoreResult<Self> {
        if key.len() != 32 {
            return Err(unusable(format!("it is {} bytes, not 32", key.len())));
        }
        let ff1 = FF1::<Aes256>::new(key, 2).map_err(|e| unusable(format!("{e:?}")))?;
        Ok(Self {
            ff1,
            next: AtomicI64::new(next),
            recent: Mutex::new([None; RECENT]),
        })
    }

    /// A new event's id, for the next rowid.
    pub(super) fn mint(&self) -> EventId {
        let rowid = self.next.fetch_add(1, Ordering::Relaxed);
        if rowid >= ROWID_LIMIT {
            // Past what an id holds (2^48 events). A random id is then stored as one this store
            // did not mint (see `place`).
            return EventId::generate();
        }
        let mut plain = [0u8; 12];
        plain[..ROWID_BYTES].copy_from_slice(&rowid.to_le_bytes()[..ROWID_BYTES]);
        crate::domain::ids::fill_random(&mut plain[ROWID_BYTES..]);
        match self.crypt(plain, true) {
            Some(id) => {
                if let Ok(mut recent) = self.recent.lock() {
                    recent[rowid as usize % RECENT] = Some((id, rowid));
                }
                EventId::from_bytes(id)
            }
            // Not reached (the input is 96 bits, always a valid length). A random id still
            // works: it leads to a rowid like any other (see `rowid`).
            None => EventId::generate(),
        }
    }

    /// The rowid `id` leads to. Any id leads to one; whether the event there has this id is the
    /// caller's question.
    pub(super) fn rowid(&self, id: &EventId) -> i64 {
        let Some(plain) = self.crypt(id.to_bytes(), false) else {
            return 0;
        };
        let mut rowid = [0u8; 8];
        rowid[..ROWID_BYTES].copy_from_slice(&plain[..ROWID_BYTES]);
        i64::from_le_bytes(rowid)
    }

    fn crypt(&self, input: [u8; 12], encrypt: bool) -> Option<[u8; 12]> {
        let input = Bits96(input);
        let output = if encrypt {
            self.ff1.encrypt(&[], &input)
        } else {
            self.ff1.decrypt(&[], &input)
        };
        output.ok().map(|Bits96(bytes)| bytes)
    }
}

/// 12 bytes as an FF1 numeral string of 96 bits, the way the crate's `BinaryNumeralString`
/// reads them (bits in little-endian order within each byte; each half valued with its first
/// bit most significant), but with each half held in a `u64`. The crate's own type does the
/// half arithmetic in `BigUint`s, 10 us per id here; FF1 itself is the crate's. The test below
/// checks that both give the same ciphertexts.
struct Bits96([u8; 12]);

/// One 48-bit half of [`Bits96`], as its value.
struct Half48(u64);

const HALF_BITS: usize = 48;
const HALF_MASK: u64 = (1 << HALF_BITS) - 1;

impl NumeralString for Bits96 {
    type Ops = Half48;

    fn is_valid(&self, radix: u32) -> bool {
        radix == 2
    }

    fn numeral_count(&self) -> usize {
        2 * HALF_BITS
    }

    fn split(&self) -> (Half48, Half48) {
        let half = |bytes: &[u8]| {
            bytes
                .iter()
                .fold(0u64, |value, b| (value << 8) | u64::from(b.reverse_bits()))
        };
        (Half48(half(&self.0[..6])), Half48(half(&self.0[6..])))
    }

    fn concat(a: Half48, b: Half48) -> Self {
        let mut bytes = [0u8; 12];
        for (half, out) in [a, b].iter().zip(bytes.chunks_mut(6)) {
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = ((half.0 >> (8 * (5 - i))) as u8).reverse_bits();
            }
        }
        Bits96(bytes)
    }
}

impl Operations for Half48 {
    type Bytes = [u8; 6];

    fn numeral_count(&self) -> usize {
        HALF_BITS
    }

    /// FF1 asks for `b = ceil(48 / 8) = 6` bytes.
    fn to_be_bytes(&self, _radix: u32, b: usize) -> [u8; 6] {
        debug_assert_eq!(b, 6);
        let mut bytes = [0u8; 6];
        bytes.copy_from_slice(&self.0.to_be_bytes()[2..]);
        bytes
    }

    /// `other` is a big-endian number; modulo 2^48 only its last 6 bytes count, and its last
    /// 8 are what `u64` arithmetic keeps.
    fn add_mod_exp(self, other: impl Iterator<Item = u8>, _radix: u32, m: usize) -> Self {
        debug_assert_eq!(m, HALF_BITS);
        Half48(self.0.wrapping_add(be_u64(other)) & HALF_MASK)
    }

    fn sub_mod_exp(self, other: impl Iterator<Item = u8>, _radix: u32, m: usize) -> Self {
        debug_assert_eq!(m, HALF_BITS);
        Half48(self.0.wrapping_sub(be_u64(other)) & HALF_MASK)
    }
}

fn be_u64(bytes: impl Iterator<Item = u8>) -> u64 {
    bytes.fold(0u64, |value, b| (value << 8) | u64::from(b))
}

fn unusable(why: String) -> StoreError {
    StoreError::db("loading the event id key", std::io::Error::other(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> [u8; 32] {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        key
    }

    fn ids(next: i64) -> EventIds {
        EventIds::new(&key(), next).unwrap()
    }

    #[test]
    fn an_id_leads_back_to_the_rowid_it_was_minted_for() {
        let ids = ids(41);
        for expected in 41..141 {
            let id = ids.mint();
            assert!(EventId::parse(id.as_str()).is_some());
            assert_eq!(ids.rowid(&id), expected);
        }
    }

    #[test]
    fn ids_minted_moments_ago_and_long_ago_are_placed_where_they_lead() {
        let ids = ids(7);
        let minted: Vec<EventId> = (0..3 * RECENT).map(|_| ids.mint()).collect();
        // The newest are remembered, the oldest decrypted: both give the rowid the id holds.
        for id in minted.iter().rev() {
            assert_eq!(ids.place(id), (ids.rowid(id), false));
        }
        // An empty slot is not an id of zeros at rowid 0: that id, not minted here, is stored
        // next and found as a legacy one (it leads to rowid 0 only with odds of 2^-48).
        let zeros = EventId::from_bytes([0; 12]);
        let fresh = EventIds::new(&key(), 1).unwrap();
        assert_eq!(fresh.place(&zeros), (1, true));
    }

    #[test]
    fn ids_do_not_show_the_rowid_they_hold() {
        // Consecutive rowids, as minted: with the rowid in the clear, the ids would share all
        // but their low bytes. Encrypted, every byte differs between two ids with probability
        // 255/256, so a few hundred equal bytes over a thousand pairs would mean a leak.
        let ids = ids(1);
        let minted: Vec<[u8; 12]> = (0..1000).map(|_| ids.mint().to_bytes()).collect();
        let same: usize = minted
            .windows(2)
            .map(|w| w[0].iter().zip(&w[1]).filter(|(a, b)| a == b).count())
            .sum();
        assert!(same < 200, "{same} equal bytes between consecutive ids");
        // The same rowid minted twice gives two ids (the random half).
        let key = key();
        let (a, b) = (
            EventIds::new(&key, 7).unwrap(),
            EventIds::new(&key, 7).unwrap(),
        );
        let (a, b) = (a.mint(), b.mint());
        assert_ne!(a, b);
        assert_eq!((a_rowid(&key, &a), a_rowid(&key, &b)), (7, 7));
    }

    fn a_rowid(key: &[u8; 32], id: &EventId) -> i64 {
        EventIds::new(key, 1).unwrap().rowid(id)
    }

    #[test]
    fn another_key_or_an_altered_id_leads_elsewhere() {
        let (ours, theirs) = (ids(1000), ids(1000));
        let id = ours.mint();
        assert_ne!(theirs.rowid(&id), 1000);
        let mut bytes = id.to_bytes();
        bytes[11] ^= 1;
        assert_ne!(ours.rowid(&EventId::from_bytes(bytes)), 1000);
    }

    #[test]
    fn the_u64_halves_give_what_the_crates_own_numeral_string_gives() {
        use fpe::ff1::BinaryNumeralString;
        for _ in 0..200 {
            let key = key();
            let ff1 = FF1::<Aes256>::new(&key, 2).unwrap();
            let mut plain = [0u8; 12];
            OsRng.fill_bytes(&mut plain);
            let theirs = ff1
                .encrypt(&[], &BinaryNumeralString::from_bytes_le(&plain))
                .unwrap()
                .to_bytes_le();
            let ours = EventIds::new(&key, 1).unwrap();
            let cipher = ours.crypt(plain, true).unwrap();
            assert_eq!(cipher.to_vec(), theirs);
            assert_eq!(ours.crypt(cipher, false).unwrap(), plain);
        }
    }

    #[test]
    fn past_the_last_rowid_an_id_holds_ids_are_random_and_stored_next() {
        let ids = ids((1 << 48) - 1);
        let last = ids.mint();
        assert_eq!(ids.place(&last), ((1 << 48) - 1, false));
        let random = ids.mint();
        assert!(EventId::parse(random.as_str()).is_some());
        assert_eq!(ids.place(&random), ((1 << 48) + 1, true));
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
