//! PostgreSQL's event ids ([`crate::store::event_ids`]): an id holds the `seq` its event is
//! stored under. Each node takes `seq`s in blocks from the sequence `webhook_event_seq`
//! (migration 0008), as many as its increment (4,096), one round trip per block, and hands them
//! out in order, so nodes never share one and each appends to the primary key near its right
//! edge. A block's unused rest is lost when the node stops: 2^48 `seq`s leave room for that.
//!
//! Events stored before migration 0008 keep their random ids: `legacy_id` holds them, under an
//! index that no new event enters. So does an event whose id this node did not mint: it is stored
//! at a `seq` of its own and found by `legacy_id` (its id is then unique only on that path: the
//! same id recorded on two nodes would be stored twice, and read as the first; intake records an
//! event on the node that minted its id).

use deadpool_postgres::{GenericClient, Pool};

use super::{col, query_one, PgResultExt as _};
use crate::domain::ids::EventId;
use crate::store::event_ids::{unusable, Cipher, MISSING_KEY};
use crate::store::{StoreError, StoreResult};

/// How many of the latest `seq`s it took a node knows its own ids in (16 blocks of 4,096): an id
/// minted in an older block and stored only now (in intake, an event whose JEXL condition took
/// its whole budget while that many others came in) is stored as one minted elsewhere, and
/// still found.
const KEPT: i64 = 65_536;

/// Where an event is stored: its `seq`, and whether it is found by `legacy_id` (an id this node
/// did not mint).
#[derive(Clone, Copy, Debug)]
pub(super) struct Placed {
    pub seq: i64,
    pub legacy: bool,
}

/// Mints the database's event ids on this node and finds their rows.
pub(super) struct EventIds {
    cipher: Cipher,
    blocks: parking_lot::Mutex<Blocks>,
    /// Held while a block is taken: of the callers that find the block used up, one takes the
    /// next and the others wait for it.
    taking: tokio::sync::Mutex<()>,
}

/// The `seq`s this node has taken and not yet handed out.
#[derive(Default)]
struct Blocks {
    /// How many `seq`s a block holds: the sequence's increment.
    size: i64,
    /// The next `seq` to hand out, and the end of its block.
    next: i64,
    end: i64,
    /// The starts of the latest blocks taken, newest last.
    starts: std::collections::VecDeque<i64>,
    /// How many attempts to take a block have ended, and whether the last one failed: a caller
    /// that waited for another's attempt takes from its block, or fails as it did, instead of
    /// waiting for the database once more behind it.
    attempts: u64,
    failed: bool,
}

impl Blocks {
    fn take(&mut self) -> Option<i64> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// Hands out the block that begins at `start` from now on, and keeps it among the latest.
    fn begin(&mut self, start: i64) {
        (self.next, self.end) = (start, start + self.size);
        self.starts.push_back(start);
        while self.starts.len() as i64 > (KEPT / self.size).max(1) {
            self.starts.pop_front();
        }
    }

    fn used_up(&self) -> bool {
        self.next >= self.end
    }

    /// Whether this node handed `seq` out, in one of its latest blocks (blocks come in order, so
    /// every `seq` of the earlier ones was).
    fn handed_out(&self, seq: i64) -> bool {
        let later = self.starts.partition_point(|&start| start <= seq);
        seq < self.next && later > 0 && seq < self.starts[later - 1] + self.size
    }
}

impl EventIds {
    /// Reads the database's key, making it on first use (of nodes that start at once, the first
    /// to insert it), and the size of a block. Refuses to start when the key is gone while events
    /// it minted ids for are stored (a partial copy of the database): a new key would lead their
    /// ids nowhere. Moves the sequence past the events stored when it is behind them (a database
    /// copied without it, as logical replication does), so that no block holds a `seq` in use.
    pub(super) async fn load(c: &impl GenericClient) -> StoreResult<Self> {
        let read = || async {
            super::query_opt(
                c,
                "reading the event id key",
                "SELECT key FROM store_keys WHERE name = 'event_ids'",
                &[],
            )
            .await?
            .map(|r| col::<Vec<u8>>(&r, 0))
            .transpose()
        };
        let key = match read().await? {
            Some(key) => key,
            None => {
                // Only events from before migration 0008 (a full scan, once, at the first start
                // after it), or none.
                let minted: bool = col(
                    &query_one(
                        c,
                        "checking for the event id key",
                        "SELECT EXISTS (SELECT 1 FROM webhook_events WHERE legacy_id IS NULL)",
                        &[],
                    )
                    .await?,
                    0,
                )?;
                if minted {
                    return Err(unusable(MISSING_KEY.into()));
                }
                c.execute(
                    "INSERT INTO store_keys (name, key) VALUES ('event_ids', $1) \
                     ON CONFLICT (name) DO NOTHING",
                    &[&&Cipher::fresh_key()[..]],
                )
                .await
                .ctx("making the event id key")?;
                read()
                    .await?
                    .ok_or_else(|| unusable("it vanished as it was made".into()))?
            }
        };
        let size: i64 = col(
            &query_one(
                c,
                "reading the event numbers' sequence",
                "WITH q AS (SELECT last_value, increment_by FROM pg_sequences \
                   WHERE schemaname = current_schema() AND sequencename = 'webhook_event_seq'), \
                 stored AS (SELECT max(seq) AS last FROM webhook_events) \
                 SELECT q.increment_by, setval('webhook_event_seq', stored.last) \
                 FROM q LEFT JOIN stored \
                   ON stored.last >= coalesce(q.last_value, 0) + q.increment_by",
                &[],
            )
            .await?,
            0,
        )?;
        Ok(Self {
            cipher: Cipher::new(&key)?,
            blocks: parking_lot::Mutex::new(Blocks {
                size: size.max(1),
                ..Blocks::default()
            }),
            taking: tokio::sync::Mutex::new(()),
        })
    }

    /// A new event's id, for the next `seq` of this node's block (a new block when it is used
    /// up).
    pub(super) async fn mint(&self, pool: &Pool) -> StoreResult<EventId> {
        Ok(self.cipher.mint(self.next(pool).await?))
    }

    /// Where an event of this id is stored. An id this node minted goes to the `seq` it leads
    /// to. An id it did not mint (another node's, a test's, or one of its own minted [`KEPT`]
    /// `seq`s ago) would lead to a `seq` anywhere, perhaps one a node hands out later: it takes
    /// the next `seq` instead and is found as events from before migration 0008 are.
    pub(super) async fn place(&self, pool: &Pool, id: &EventId) -> StoreResult<Placed> {
        let seq = self.cipher.number(id);
        if self.blocks.lock().handed_out(seq) {
            return Ok(Placed { seq, legacy: false });
        }
        Ok(Placed {
            seq: self.next(pool).await?,
            legacy: true,
        })
    }

    /// The `seq` `id` leads to. Any id leads to one; whether the event there has this id is the
    /// caller's question.
    pub(super) fn seq(&self, id: &EventId) -> i64 {
        self.cipher.decrypt(id)
    }

    async fn next(&self, pool: &Pool) -> StoreResult<i64> {
        loop {
            let seen = {
                let mut blocks = self.blocks.lock();
                if let Some(seq) = blocks.take() {
                    return Ok(seq);
                }
                blocks.attempts
            };
            let _taking = self.taking.lock().await;
            {
                let blocks = self.blocks.lock();
                if blocks.attempts != seen {
                    // Another caller's attempt ended while this one waited for it.
                    if blocks.failed && blocks.used_up() {
                        return Err(StoreError::Unavailable);
                    }
                    continue;
                }
            }
            // Dropped while it waits (its caller gone), an attempt takes nothing: the next caller
            // makes its own.
            let taken = take_block(pool).await;
            let mut blocks = self.blocks.lock();
            blocks.attempts += 1;
            blocks.failed = taken.is_err();
            blocks.begin(taken?);
        }
    }
}

/// The first `seq` of a new block.
async fn take_block(pool: &Pool) -> StoreResult<i64> {
    let c = super::client(pool).await?;
    col(
        &query_one(
            &c,
            "taking a block of event numbers",
            "SELECT nextval('webhook_event_seq')",
            &[],
        )
        .await?,
        0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_knows_the_seqs_it_handed_out_in_its_latest_blocks_only() {
        const BLOCK: i64 = 4096;
        let mut blocks = Blocks {
            size: BLOCK,
            ..Blocks::default()
        };
        assert_eq!(blocks.take(), None, "no block yet");
        // Every other block is another node's.
        let starts: Vec<i64> = (0..=KEPT / BLOCK).map(|n| 2 * n * BLOCK + 1).collect();
        for &start in &starts {
            assert!(!blocks.handed_out(start));
            blocks.begin(start);
            assert_eq!(blocks.take(), Some(start));
            assert_eq!(blocks.take(), Some(start + 1));
            assert!(blocks.handed_out(start + 1));
            assert!(!blocks.handed_out(start + 2), "not yet handed out");
        }
        // The first block has left the latest ones; another node's block was never here.
        assert!(!blocks.handed_out(starts[0]));
        assert!(blocks.handed_out(starts[1]));
        assert!(!blocks.handed_out(starts[1] + BLOCK));
        // A used-up block hands nothing out.
        blocks.next = blocks.end;
        assert!(blocks.used_up());
        assert_eq!(blocks.take(), None);
        assert!(blocks.handed_out(blocks.end - 1));
    }
}
