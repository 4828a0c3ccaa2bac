//! WAL checkpoints: off the writer's critical path, and a WAL that stays bounded.
//!
//! SQLite normally checkpoints inside the commit that pushes the WAL past 1000 pages, which
//! would put copying pages into the database file on the single writer's critical path. The
//! writer disables that (`wal_autocheckpoint=0`) and this thread runs PASSIVE checkpoints
//! instead, concurrently with the writer: every interval while the WAL is idle, and paced by the
//! rate the writer appends while it is not, so that each pass copies (and fsyncs) a small,
//! steady amount ([`PASS_FRAMES`]) instead of what a whole interval wrote.
//!
//! A passive checkpoint alone does not bound the WAL under sustained load. The WAL starts again
//! from its beginning only when a write finds every frame already copied back, and a writer that
//! never pauses has always appended more by then: the file grew without end (3.8 GiB over a
//! 111 MiB database) and kept that size while idle. So this thread also asks the writer, which
//! runs the request between two batches and outside any transaction:
//! - when the WAL holds more than its limit, to finish the checkpoint (RESTART: copy back the
//!   frames the passive passes here have not, and wait for readers to leave the WAL). The next
//!   commit then writes from the start of the file again, and the file keeps its size
//!   (`journal_size_limit` is twice the limit, see `SqliteStore::open`), so commits overwrite
//!   blocks already allocated instead of growing the file on each commit.
//!   The finish holds the writes queued behind it until it has copied the last frames and
//!   fsynced the database pages they dirtied, one random write each. Asked for straight after
//!   one 500 ms pass, it had to copy everything the writer appended while that pass ran, and
//!   held writes for 17-38 ms on the development machine. So this thread first catches up with
//!   further passive passes, each shorter than the last (`catch_up`); the median finish then
//!   took 6-14 ms;
//! - once no write has come for one interval, to truncate the WAL to zero bytes and give back
//!   the writer's page cache.
//!
//! A writer that appends faster than one interval's worth of limit does not wait for the next
//! tick: after each commit it looks at the WAL file's size ([`Nudge::after_commit`], one
//! `statx`), and when the commit grew the file past the size it keeps (twice the limit) it
//! wakes this thread at once. Waiting for the tick, a writer appending 200 KB payloads as fast as
//! 16 clients sent them took a 1 MiB WAL to 21-76 MiB between two ticks.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::writer::Writer;

/// The running checkpoint thread; [`Checkpointer::stop`] ends it, and so does dropping it (the
/// writer's [`Nudge`] keeps the channel open, so a dropped sender alone would not).
pub(super) struct Checkpointer {
    wake: mpsc::Sender<Wake>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let _ = self.wake.send(Wake::Stop);
    }
}

/// What wakes the checkpoint thread before its interval is up.
enum Wake {
    /// The WAL is past the size it keeps: check it now.
    Grown,
    Stop,
}

/// The writer's side: wakes the checkpoint thread when a commit grew the WAL file past the size
/// it keeps (twice the limit, `journal_size_limit`), instead of leaving it to grow until the
/// next tick.
pub(super) struct Nudge {
    wal: PathBuf,
    past_bytes: u64,
    /// A wake is on its way or being handled: no second one until the WAL has been looked at.
    sent: Arc<AtomicBool>,
    /// The file's size after the commit before. A restart leaves the file as it is until the
    /// next commit cuts it, so only a commit that grew the file says the WAL is still growing.
    last_len: AtomicU64,
    wake: mpsc::Sender<Wake>,
}

impl Nudge {
    /// Called after each commit, on the writer's thread.
    pub(super) fn after_commit(&self) {
        let Ok(len) = std::fs::metadata(&self.wal).map(|m| m.len()) else {
            return;
        };
        let before = self.last_len.swap(len, Ordering::Relaxed);
        if len > self.past_bytes && len != before && !self.sent.swap(true, Ordering::AcqRel) {
            // Stopped: nothing left to wake.
            let _ = self.wake.send(Wake::Grown);
        }
    }
}

/// The channel that wakes a checkpoint thread: its writer's [`Nudge`] for the database at
/// `path` with a WAL limit of `limit_bytes`, and what [`Checkpointer::start`] listens to.
pub(super) fn nudges(path: &std::path::Path, limit_bytes: u64) -> (Nudge, Wakes) {
    let (tx, rx) = mpsc::channel();
    // Next to the file the path resolves to, where SQLite keeps it.
    let mut wal = super::lock::resolve(path).into_os_string();
    wal.push("-wal");
    let sent = Arc::new(AtomicBool::new(false));
    let nudge = Nudge {
        wal: wal.into(),
        past_bytes: limit_bytes.saturating_mul(2),
        sent: sent.clone(),
        last_len: AtomicU64::new(0),
        wake: tx.clone(),
    };
    (nudge, Wakes { tx, rx, sent })
}

/// The checkpoint thread's end of [`nudges`].
pub(super) struct Wakes {
    tx: mpsc::Sender<Wake>,
    rx: mpsc::Receiver<Wake>,
    sent: Arc<AtomicBool>,
}

/// What the WAL looked like after a passive checkpoint, and what to ask of the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Nothing,
    /// Past the limit: finish the checkpoint so the next commit restarts the WAL.
    Restart,
    /// Idle and fully copied back: truncate the file and release memory.
    Truncate,
}

/// A finish is asked for once a passive pass found no more than this many frames appended since
/// the pass before it (1 MiB of 4 KiB pages): about what the writer will still have appended
/// when the finish runs, and the finish waits for their copy and the fsync of the pages they
/// dirty in the database file, one random write each.
const CATCH_UP_FRAMES: i64 = 256;

/// Passive passes to catch up before the finish is asked for anyway, for a writer that appends
/// faster than they copy.
const CATCH_UP_PASSES: usize = 8;

/// One passive checkpoint: `(frames in the WAL, frames copied back)`.
fn passive(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

/// Runs further passive checkpoints after one that found `frames`, until one finds at most
/// [`CATCH_UP_FRAMES`] appended since the pass before it, or no fewer than that pass found, or
/// the WAL past `max_frames`, or [`CATCH_UP_PASSES`] have run. Each pass copies what the writer
/// appended while the previous one copied and synced; a writer that appends faster than that,
/// or a WAL already far past its limit, gets its finish at once rather than a WAL that grows
/// while this thread falls behind. Returns how many passes ran.
fn catch_up(conn: &Connection, mut frames: i64, max_frames: i64) -> usize {
    let mut last_appended = i64::MAX;
    for pass in 0..CATCH_UP_PASSES {
        match passive(conn) {
            // Few appended (or fewer frames than before: the WAL has started over already), no
            // fewer than the pass before (the writer outpaces the copy), or too big to wait.
            Ok((now, _))
                if now - frames <= CATCH_UP_FRAMES
                    || now - frames >= last_appended
                    || now > max_frames =>
            {
                return pass + 1
            }
            Ok((now, _)) => {
                last_appended = now - frames;
                frames = now;
            }
            Err(e) => {
                tracing::debug!(error = %e, "catching up before a WAL restart failed");
                return pass + 1;
            }
        }
    }
    CATCH_UP_PASSES
}

/// About how many frames one passive pass should find to copy (1 MiB of 4 KiB pages): the
/// thread passes again sooner when the writer appends faster ([`next_wait`]).
///
/// Each pass ends with an fsync of the database file, which writes every page the pass copied;
/// on the development machine's virtual disk, the writer's commit fsync that comes meanwhile
/// waits for all of it. With a pass every 500 ms, the 7 MB a pass copied at 9,000 matched
/// events/s (3,400 frames a second) held commits for 25-50 ms every few seconds, and those
/// stalls alone put the p99 of matched intake at 17-90 ms. With passes of about this size (one
/// every 75 ms at that rate): 5.6-6.3 ms; of a quarter of it, no better (5.6-9.3 ms), with four
/// times the passes.
const PASS_FRAMES: i64 = 256;

/// The shortest wait between two passes.
const MIN_WAIT: Duration = Duration::from_millis(10);

/// How long to wait for the next pass, after one that found `appended` frames written since the
/// pass before, which started `since` ago: long enough for about [`PASS_FRAMES`] more at that
/// rate, between [`MIN_WAIT`] and `every` (the wait of an idle WAL).
fn next_wait(appended: i64, since: Duration, every: Duration) -> Duration {
    if appended <= 0 {
        return every;
    }
    let nanos = since.as_nanos().saturating_mul(PASS_FRAMES as u128) / appended as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).clamp(MIN_WAIT.min(every), every)
}

/// Decides from one passive checkpoint's `(frames in the WAL, frames copied back)`, and whether
/// no frame has been written for a whole interval (`idle`).
fn ask(frames: i64, copied: i64, idle: bool, page_size: i64, limit_bytes: u64) -> Ask {
    if frames <= 0 {
        Ask::Nothing
    } else if idle && copied == frames {
        Ask::Truncate
    } else if frames.saturating_mul(page_size) as u64 > limit_bytes {
        Ask::Restart
    } else {
        Ask::Nothing
    }
}

impl Checkpointer {
    /// Starts checkpointing through `conn` every `every`, and whenever `wakes` says the WAL
    /// has grown, asking `writer` to keep the WAL within `limit_bytes`.
    pub(super) fn start(
        conn: Connection,
        writer: Writer,
        wakes: Wakes,
        every: Duration,
        limit_bytes: u64,
    ) -> std::io::Result<Self> {
        let Wakes { tx, rx, sent } = wakes;
        let handle = std::thread::Builder::new()
            .name("triggerd-sqlite-checkpoint".into())
            .spawn(move || {
                let page_size: i64 = conn
                    .query_row("PRAGMA page_size", [], |r| r.get(0))
                    .unwrap_or(4096);
                // Whether a request to the writer is still queued: one at a time.
                let queued = Arc::new(AtomicBool::new(false));
                let mut last_frames = -1;
                let mut last_pass = Instant::now();
                // When the frame count last changed.
                let mut last_write = Instant::now();
                let mut wait = every;
                // Wakes when the pace says (`next_wait`) and when the WAL has grown; a stop
                // message or a dropped sender ends the loop.
                while let Err(RecvTimeoutError::Timeout) | Ok(Wake::Grown) = rx.recv_timeout(wait) {
                    let (frames, copied) = match passive(&conn) {
                        Ok(counts) => counts,
                        Err(e) => {
                            tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                            wait = every;
                            continue;
                        }
                    };
                    metrics::gauge!("triggerd_sqlite_wal_bytes")
                        .set(frames.max(0).saturating_mul(page_size) as f64);
                    // Fewer frames than before: the WAL has started over since.
                    let appended = if frames < last_frames {
                        frames
                    } else {
                        frames - last_frames
                    };
                    let now = Instant::now();
                    if frames != last_frames {
                        last_write = now;
                    }
                    wait = next_wait(appended, now - last_pass, every);
                    last_pass = now;
                    let idle = frames == last_frames && now - last_write >= every;
                    let wanted = ask(frames, copied, idle, page_size, limit_bytes);
                    last_frames = frames;
                    if wanted != Ask::Restart {
                        // Looked at: the writer may wake this thread again. After a restart, it
                        // may once the restart has run (below).
                        sent.store(false, Ordering::Release);
                    }
                    if wanted != Ask::Nothing && !queued.swap(true, Ordering::AcqRel) {
                        if wanted == Ask::Restart {
                            // The size the file keeps (`journal_size_limit`): no catching up
                            // past it.
                            let max_frames =
                                (limit_bytes.saturating_mul(2) / page_size.max(1) as u64) as i64;
                            catch_up(&conn, frames, max_frames);
                        }
                        let (queued, nudged) = (queued.clone(), sent.clone());
                        let sent = writer.maintain_blocking(move |c| {
                            // A finish that readers kept from completing has already held the
                            // writes for up to the busy timeout: the next try waits for the
                            // tick, not for the next commit.
                            if finish_checkpoint(c, wanted) {
                                nudged.store(false, Ordering::Release);
                            }
                            queued.store(false, Ordering::Release);
                        });
                        if !sent {
                            break;
                        }
                    }
                }
            })?;
        Ok(Self {
            wake: tx,
            handle: Some(handle),
        })
    }

    /// Stops the thread and waits for it.
    pub(super) fn stop(mut self) {
        let _ = self.wake.send(Wake::Stop);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Runs on the writer's connection between two batches; whether it completed (no reader kept
/// frames in use, no error).
fn finish_checkpoint(c: &Connection, wanted: Ask) -> bool {
    let sql = match wanted {
        Ask::Nothing => return true,
        Ask::Restart => "PRAGMA wal_checkpoint(RESTART)",
        Ask::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
    };
    let started = std::time::Instant::now();
    let result = c.query_row(sql, [], |r| r.get::<_, i64>(0));
    // The writes queued behind it waited this long.
    metrics::histogram!("triggerd_sqlite_wal_finish_seconds")
        .record(started.elapsed().as_secs_f64());
    let completed = match result {
        // Busy: a reader still uses the WAL; the next tick asks again.
        Ok(busy) if busy != 0 => {
            tracing::debug!(sql, "WAL checkpoint left frames to readers");
            false
        }
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, sql, "WAL checkpoint failed; will retry");
            false
        }
    };
    if wanted == Ask::Truncate {
        // Idle: give the page cache back; it refills from the file when work returns.
        if let Err(e) = c.execute_batch("PRAGMA shrink_memory") {
            tracing::debug!(error = %e, "releasing the writer's cache failed");
        }
        // And what the writer's thread freed since it last collected its heap: it may wait a
        // long time for its next write.
        crate::memory::trim_this_thread();
    }
    completed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database in WAL mode that only checkpoints when asked, with `frames` frames in its WAL
    /// (one page written per transaction).
    fn wal_with(dir: &std::path::Path, frames: i64) -> Connection {
        let conn = Connection::open(dir.join("t.db")).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
             CREATE TABLE t (v BLOB NOT NULL);",
        )
        .unwrap();
        let (now, _) = passive(&conn).unwrap();
        for _ in now..frames {
            conn.execute("INSERT INTO t VALUES (zeroblob(100))", [])
                .unwrap();
        }
        conn
    }

    #[test]
    fn catching_up_stops_at_the_first_pass_that_finds_few_new_frames() {
        let dir = tempfile::tempdir().unwrap();
        let writer = wal_with(dir.path(), CATCH_UP_FRAMES * 2);
        let checkpointer = Connection::open(dir.path().join("t.db")).unwrap();
        let (frames, copied) = passive(&checkpointer).unwrap();
        assert!(frames > CATCH_UP_FRAMES, "{frames} frames");
        assert_eq!(copied, frames, "the first pass copied everything");
        assert_eq!(
            catch_up(&checkpointer, frames, i64::MAX),
            1,
            "nothing was appended since"
        );

        // As if the writer had appended more than the threshold since the first pass.
        assert_eq!(
            catch_up(&checkpointer, frames - CATCH_UP_FRAMES - 1, i64::MAX),
            2,
            "one pass finds more than the threshold appended, the next none"
        );
        assert_eq!(
            catch_up(&checkpointer, frames - CATCH_UP_FRAMES - 1, frames - 1),
            1,
            "a WAL past its bound gets its finish at once"
        );
        drop(writer);
    }

    #[test]
    fn a_commit_that_leaves_the_wal_past_twice_its_limit_wakes_the_thread_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let wal = std::fs::File::create(dir.path().join("t.db-wal")).unwrap();
        let (nudge, wakes) = nudges(&db, MIB);
        // A commit that leaves the file at `len`: whether it woke the thread.
        let commit_at = |len: u64| {
            wal.set_len(len).unwrap();
            nudge.after_commit();
            matches!(wakes.rx.try_recv(), Ok(Wake::Grown))
        };
        let looked_at = || wakes.sent.store(false, Ordering::Release);

        assert!(!commit_at(2 * MIB), "at the size the file keeps");
        assert!(commit_at(3 * MIB), "past it");
        assert!(!commit_at(4 * MIB), "one wake until the thread has looked");

        looked_at();
        assert!(
            !commit_at(4 * MIB),
            "not grown since (a restart the next commit cuts)"
        );
        assert!(commit_at(5 * MIB), "grown again: the restart did not take");

        looked_at();
        assert!(!commit_at(2 * MIB), "cut back after a restart");
        assert!(commit_at(5 * MIB), "past it again");
    }

    #[test]
    fn a_finish_that_a_reader_holds_back_does_not_count_as_completed() {
        let dir = tempfile::tempdir().unwrap();
        let writer = wal_with(dir.path(), 4);
        writer.busy_timeout(Duration::ZERO).unwrap();
        let reader = Connection::open(dir.path().join("t.db")).unwrap();
        reader
            .execute_batch("BEGIN; SELECT COUNT(*) FROM t;")
            .unwrap();
        writer
            .execute("INSERT INTO t VALUES (zeroblob(100))", [])
            .unwrap();
        assert!(
            !finish_checkpoint(&writer, Ask::Restart),
            "a reader still in the WAL"
        );
        reader.execute_batch("COMMIT").unwrap();
        assert!(finish_checkpoint(&writer, Ask::Restart), "no reader left");
    }

    #[test]
    fn a_dropped_checkpointer_ends_its_thread_while_the_writer_still_holds_its_nudge() {
        let dir = tempfile::tempdir().unwrap();
        let conn = wal_with(dir.path(), 1);
        let (nudge, wakes) = nudges(&dir.path().join("t.db"), MIB);
        let probe = wakes.tx.clone();
        let (writer, thread) = Writer::start(conn, 4, 4, move || nudge.after_commit()).unwrap();
        let checkpointer = Checkpointer::start(
            Connection::open(dir.path().join("t.db")).unwrap(),
            writer,
            wakes,
            Duration::from_millis(10),
            MIB,
        )
        .unwrap();
        drop(checkpointer);
        // Its receiver goes with the thread.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while probe.send(Wake::Grown).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the checkpoint thread still runs"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(thread);
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_wal_past_its_limit_and_still_written_is_restarted() {
        assert_eq!(ask(300, 10, false, 4096, MIB), Ask::Restart);
        assert_eq!(ask(300, 300, false, 4096, MIB), Ask::Restart);
    }

    #[test]
    fn an_idle_wal_copied_back_in_full_is_truncated_whatever_its_size() {
        assert_eq!(ask(100, 100, true, 4096, MIB), Ask::Truncate);
        assert_eq!(ask(300, 300, true, 4096, MIB), Ask::Truncate);
    }

    #[test]
    fn a_wal_still_written_or_not_yet_copied_back_is_left_alone() {
        assert_eq!(
            ask(100, 100, false, 4096, MIB),
            Ask::Nothing,
            "written lately"
        );
        assert_eq!(
            ask(100, 80, true, 4096, MIB),
            Ask::Nothing,
            "not copied back"
        );
        assert_eq!(ask(0, 0, true, 4096, MIB), Ask::Nothing, "empty");
        assert_eq!(
            ask(-1, -1, true, 4096, MIB),
            Ask::Nothing,
            "not in WAL mode"
        );
    }

    #[test]
    fn passes_come_sooner_the_faster_the_wal_is_written() {
        let every = Duration::from_millis(500);
        let since = Duration::from_millis(100);
        assert_eq!(next_wait(0, since, every), every, "idle");
        assert_eq!(next_wait(-5, since, every), every, "not in WAL mode");
        assert_eq!(
            next_wait(PASS_FRAMES, since, every),
            since,
            "the same rate: the same wait"
        );
        assert_eq!(
            next_wait(PASS_FRAMES * 4, since, every),
            since / 4,
            "four times as fast"
        );
        assert_eq!(next_wait(PASS_FRAMES * 1000, since, every), MIN_WAIT);
        assert_eq!(
            next_wait(1, since, every),
            every,
            "a trickle waits the interval"
        );
        assert_eq!(
            next_wait(PASS_FRAMES * 1000, since, Duration::from_millis(2)),
            Duration::from_millis(2),
            "never longer than the interval"
        );
    }
}
