//! Event ids that lead to their row without an index, for both stores.
//!
//! DESIGN §1 makes an eventCorrelationId 12 bytes nobody can guess. Kept under an index of its
//! own, a random id costs every stored event an insert at a random leaf of that index: one more
//! page in the WAL per event and, once the table is large, a page read first and copied back by
//! every checkpoint. Without that index SQLite's store alone commits 1.6-1.9 times as many
//! no-match events a second on the development machine, and PostgreSQL spends 10-13 us less of
//! its CPU and writes 120 bytes less WAL per event (issue 13).
//!
//! So the stores mint their event ids themselves: an id is the FF1 encryption (NIST SP 800-38G,
//! AES-256, the `fpe` crate) of the number of the row the event will be stored at (6 bytes: the
//! rowid on SQLite, `seq` on PostgreSQL) and 6 random bytes (OS CSPRNG), under a key made once
//! per database and kept in it (`store_keys`). Without the key an id cannot be told from 12
//! random bytes, nor one made from another. With it, the store decrypts an id to its row's
//! number and compares the id stored there, so a guessed, altered or stale id finds nothing.
//! Rows are numbered in order, so new events are appended to the table (the listing indexes,
//! which lead with the project, still take them at each project's end).
//!
//! Each store hands out the numbers ([`super::sqlite`]: the next rowid; [`super::postgres`]:
//! blocks of a sequence, one block per node at a time) and keeps the events stored before these
//! ids, with their random ids, under an index of `legacy_id` that no new event enters.

use std::sync::Mutex;

use aes::Aes256;
use fpe::ff1::{NumeralString, Operations, FF1};
use rand::rngs::OsRng;
use rand::RngCore;

use crate::domain::ids::EventId;
use crate::store::{StoreError, StoreResult};

/// The bytes of an id that hold its row's number: up to 2^48 events.
const NUMBER_BYTES: usize = 6;
/// The first number an id cannot hold. Past it the stores store events under random ids, found
/// as legacy ones.
pub(crate) const NUMBER_LIMIT: i64 = 1 << (8 * NUMBER_BYTES);
/// How many of the ids minted last [`Cipher::number`] finds without decrypting them.
const RECENT: usize = 8;

/// An id's bytes and the number it was minted for.
type Minted = ([u8; 12], i64);

/// A database's event id key: mints ids for row numbers and reads the number back.
pub(crate) struct Cipher {
    ff1: FF1<Aes256>,
    /// The last ids minted and their numbers, at `number % RECENT`. Intake mints an id and
    /// stores its event moments later: `number` finds it here instead of decrypting the id
    /// again (an FF1 call, about a microsecond of an HTTP worker's time per event).
    recent: Mutex<[Option<Minted>; RECENT]>,
}

impl Cipher {
    /// A new key, from the OS CSPRNG, for a database that has none.
    pub(crate) fn fresh_key() -> [u8; 32] {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        key
    }

    pub(crate) fn new(key: &[u8]) -> StoreResult<Self> {
        if key.len() != 32 {
            return Err(unusable(format!("it is {} bytes, not 32", key.len())));
        }
        let ff1 = FF1::<Aes256>::new(key, 2).map_err(|e| unusable(format!("{e:?}")))?;
        Ok(Self {
            ff1,
            recent: Mutex::new([None; RECENT]),
        })
    }

    /// A new event's id, for the row numbered `number`; a random one past [`NUMBER_LIMIT`]
    /// (2^48 events), which the store keeps as one it did not mint.
    pub(crate) fn mint(&self, number: i64) -> EventId {
        if !(0..NUMBER_LIMIT).contains(&number) {
            return EventId::generate();
        }
        let mut plain = [0u8; 12];
        plain[..NUMBER_BYTES].copy_from_slice(&number.to_le_bytes()[..NUMBER_BYTES]);
        crate::domain::ids::fill_random(&mut plain[NUMBER_BYTES..]);
        match self.crypt(plain, true) {
            Some(id) => {
                if let Ok(mut recent) = self.recent.lock() {
                    recent[number as usize % RECENT] = Some((id, number));
                }
                EventId::from_bytes(id)
            }
            // Not reached (the input is 96 bits, always a valid length). A random id still
            // works: it leads to a number like any other (see `decrypt`).
            None => EventId::generate(),
        }
    }

    /// The number `id` leads to, as [`decrypt`](Self::decrypt) gives it, found among the ids
    /// minted moments ago first.
    pub(crate) fn number(&self, id: &EventId) -> i64 {
        let bytes = id.to_bytes();
        let minted = self.recent.lock().ok().and_then(|recent| {
            recent
                .iter()
                .flatten()
                .find(|(b, _)| *b == bytes)
                .map(|&(_, n)| n)
        });
        minted.unwrap_or_else(|| self.decrypt(id))
    }

    /// The number `id` leads to. Any id leads to one; whether the event there has this id is
    /// the caller's question.
    pub(crate) fn decrypt(&self, id: &EventId) -> i64 {
        let Some(plain) = self.crypt(id.to_bytes(), false) else {
            return 0;
        };
        let mut number = [0u8; 8];
        number[..NUMBER_BYTES].copy_from_slice(&plain[..NUMBER_BYTES]);
        i64::from_le_bytes(number)
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

/// Why a store refuses to start when its key is gone while events it minted ids for are stored
/// (a partial copy of the database): a new key would lead their ids nowhere.
pub(crate) const MISSING_KEY: &str = "it is missing from store_keys, yet events stored with it \
     are in the database (restore the database whole, store_keys included)";

/// The error of a key a store cannot use.
pub(crate) fn unusable(why: String) -> StoreError {
    StoreError::db("loading the event id key", std::io::Error::other(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> Cipher {
        Cipher::new(&Cipher::fresh_key()).unwrap()
    }

    #[test]
    fn an_id_leads_back_to_the_number_it_was_minted_for() {
        let ids = cipher();
        for expected in 41..141 {
            let id = ids.mint(expected);
            assert!(EventId::parse(id.as_str()).is_some());
            assert_eq!(ids.decrypt(&id), expected);
        }
    }

    #[test]
    fn ids_minted_moments_ago_and_long_ago_give_the_number_they_hold() {
        let ids = cipher();
        let minted: Vec<EventId> = (7..7 + 3 * RECENT as i64).map(|n| ids.mint(n)).collect();
        // The newest are remembered, the oldest decrypted: both give the number the id holds.
        for id in minted.iter().rev() {
            assert_eq!(ids.number(id), ids.decrypt(id));
        }
        // An empty slot is not an id of zeros for number 0.
        let zeros = EventId::from_bytes([0; 12]);
        let fresh = cipher();
        assert_eq!(fresh.number(&zeros), fresh.decrypt(&zeros));
    }

    #[test]
    fn ids_do_not_show_the_number_they_hold() {
        // Consecutive numbers, as minted: with the number in the clear, the ids would share all
        // but their low bytes. Encrypted, every byte differs between two ids with probability
        // 255/256, so a few hundred equal bytes over a thousand pairs would mean a leak.
        let ids = cipher();
        let minted: Vec<[u8; 12]> = (1..1001).map(|n| ids.mint(n).to_bytes()).collect();
        let same: usize = minted
            .windows(2)
            .map(|w| w[0].iter().zip(&w[1]).filter(|(a, b)| a == b).count())
            .sum();
        assert!(same < 200, "{same} equal bytes between consecutive ids");
        // The same number minted twice gives two ids (the random half).
        let (a, b) = (ids.mint(7), ids.mint(7));
        assert_ne!(a, b);
        assert_eq!((ids.decrypt(&a), ids.decrypt(&b)), (7, 7));
    }

    #[test]
    fn another_key_or_an_altered_id_leads_elsewhere() {
        let (ours, theirs) = (cipher(), cipher());
        let id = ours.mint(1000);
        assert_ne!(theirs.decrypt(&id), 1000);
        let mut bytes = id.to_bytes();
        bytes[11] ^= 1;
        assert_ne!(ours.decrypt(&EventId::from_bytes(bytes)), 1000);
    }

    #[test]
    fn the_u64_halves_give_what_the_crates_own_numeral_string_gives() {
        use fpe::ff1::BinaryNumeralString;
        for _ in 0..200 {
            let key = Cipher::fresh_key();
            let ff1 = FF1::<Aes256>::new(&key, 2).unwrap();
            let mut plain = [0u8; 12];
            OsRng.fill_bytes(&mut plain);
            let theirs = ff1
                .encrypt(&[], &BinaryNumeralString::from_bytes_le(&plain))
                .unwrap()
                .to_bytes_le();
            let ours = Cipher::new(&key).unwrap();
            let cipher = ours.crypt(plain, true).unwrap();
            assert_eq!(cipher.to_vec(), theirs);
            assert_eq!(ours.crypt(cipher, false).unwrap(), plain);
        }
    }

    #[test]
    fn past_the_last_number_an_id_holds_ids_are_random() {
        let ids = cipher();
        let last = ids.mint(NUMBER_LIMIT - 1);
        assert_eq!(ids.decrypt(&last), NUMBER_LIMIT - 1);
        let random = ids.mint(NUMBER_LIMIT);
        assert!(EventId::parse(random.as_str()).is_some());
        assert_ne!(random, ids.mint(NUMBER_LIMIT));
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused() {
        assert!(Cipher::new(&[0u8; 16]).is_err());
    }
}
