//! WAL checkpoints: off the writer's critical path, and a WAL that stays bounded.
//!
//! SQLite normally checkpoints inside the commit that pushes the WAL past 1000 pages, which
//! would put copying pages into the database file on the single writer's critical path. The
//! writer disables that (`wal_autocheckpoint=0`) and this thread runs PASSIVE checkpoints
//! instead, concurrently with the writer: every interval while the WAL is idle, and as often as
//! the writer's pace needs while it is not ([`Pace`]), so that each pass copies, and fsyncs into
//! the database file, about [`PASS_FRAMES`] frames instead of whatever a whole interval wrote.
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
//!   fsynced the database pages they dirtied, one random write each, so this thread first
//!   catches up with further passive passes, each shorter than the last (`catch_up`);
//! - once no write has come for one interval, to truncate the WAL to zero bytes and give back
//!   the writer's page cache.
//!
//! A writer that appends faster than the passes come does not wait for the next one: after
//! each commit it looks at the WAL file's size ([`Nudge::after_commit`], one `statx`), and when
//! the commit grew the file past the size it keeps (twice the limit) it wakes this thread at
//! once.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
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

/// What wakes the checkpoint thread before its next pass is due.
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
pub(super) fn nudges(path: &Path, limit_bytes: u64) -> (Nudge, Wakes) {
    let (tx, rx) = mpsc::channel();
    // Next to the file the path resolves to, where SQLite keeps it.
    let mut wal = super::lock::resolve(path).into_os_string();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let sent = Arc::new(AtomicBool::new(false));
    let nudge = Nudge {
        wal: wal.clone(),
        past_bytes: limit_bytes.saturating_mul(2),
        sent: sent.clone(),
        last_len: AtomicU64::new(0),
        wake: tx.clone(),
    };
    (nudge, Wakes { tx, rx, sent, wal })
}

/// The checkpoint thread's end of [`nudges`].
pub(super) struct Wakes {
    tx: mpsc::Sender<Wake>,
    rx: mpsc::Receiver<Wake>,
    sent: Arc<AtomicBool>,
    /// The WAL file, whose header says when the WAL has started over ([`generation`]).
    wal: PathBuf,
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

/// About how many frames one passive pass should find to copy (1 MiB of 4 KiB pages). Each
/// pass ends with an fsync of the database file, which writes every page it copied, and on the
/// development machine's disk a commit's fsync meanwhile waits for all of it: passes of what
/// 500 ms wrote (7 MB at 9,000 matched events/s) held commits for 25-50 ms every few seconds.
const PASS_FRAMES: i64 = 256;

/// The shortest wait between two passes.
const MIN_WAIT: Duration = Duration::from_millis(10);

/// The WAL header's checkpoint sequence number and salts (bytes 12-24), which SQLite changes
/// each time the WAL starts over; `None` while the file holds no header (empty, or missing).
fn generation(wal: &Path) -> Option<[u8; 12]> {
    let mut header = [0u8; 24];
    let file = std::fs::File::open(wal).ok()?;
    file.read_exact_at(&mut header, 0).ok()?;
    header[12..].try_into().ok()
}

/// When the next pass is due, and whether the WAL has gone idle, from what each pass saw.
struct Pace {
    /// The wait while nothing is written, and how long nothing must be written for the WAL to
    /// count as idle.
    every: Duration,
    /// The frame count and WAL generation the last pass saw (`-1`: no pass yet), and when.
    frames: i64,
    generation: Option<[u8; 12]>,
    at: Instant,
    /// When a pass last saw the WAL changed.
    changed_at: Instant,
}

impl Pace {
    fn new(every: Duration, now: Instant) -> Self {
        Self {
            every,
            frames: -1,
            generation: None,
            at: now,
            changed_at: now,
        }
    }

    /// After a pass at `now` that found `frames` in the WAL of `generation`: how long to wait
    /// for the next pass, long enough for about [`PASS_FRAMES`] more at the rate the writer
    /// appended since the last one (between [`MIN_WAIT`] and `every`), and whether the WAL has
    /// been unchanged for `every` or longer.
    fn after_pass(
        &mut self,
        frames: i64,
        generation: Option<[u8; 12]>,
        now: Instant,
    ) -> (Duration, bool) {
        // A WAL that started over since may have regrown past the last count: all it holds is
        // new.
        let restarted = generation != self.generation || frames < self.frames;
        let appended = if restarted {
            frames
        } else {
            frames - self.frames
        };
        if restarted || appended != 0 {
            self.changed_at = now;
        }
        let since = now.saturating_duration_since(self.at);
        let wait = if appended <= 0 {
            self.every
        } else {
            let nanos = since.as_nanos().saturating_mul(PASS_FRAMES as u128) / appended as u128;
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
                .clamp(MIN_WAIT.min(self.every), self.every)
        };
        (self.frames, self.generation, self.at) = (frames, generation, now);
        (
            wait,
            now.saturating_duration_since(self.changed_at) >= self.every,
        )
    }
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
    /// Starts checkpointing through `conn` at the [`Pace`] the writer sets (every `every` while
    /// it writes nothing), and whenever `wakes` says the WAL has grown, asking `writer` to keep
    /// the WAL within `limit_bytes`.
    pub(super) fn start(
        conn: Connection,
        writer: Writer,
        wakes: Wakes,
        every: Duration,
        limit_bytes: u64,
    ) -> std::io::Result<Self> {
        let Wakes { tx, rx, sent, wal } = wakes;
        let handle = std::thread::Builder::new()
            .name("triggerd-sqlite-checkpoint".into())
            .spawn(move || {
                let page_size: i64 = conn
                    .query_row("PRAGMA page_size", [], |r| r.get(0))
                    .unwrap_or(4096);
                // Whether a request to the writer is still queued: one at a time.
                let queued = Arc::new(AtomicBool::new(false));
                let mut pace = Pace::new(every, Instant::now());
                let mut wait = every;
                // Wakes when the next pass is due and when the WAL has grown; a stop message or
                // a dropped sender ends the loop.
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
                    let idle;
                    (wait, idle) = pace.after_pass(frames, generation(&wal), Instant::now());
                    let wanted = ask(frames, copied, idle, page_size, limit_bytes);
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
                            // next pass, not for the next commit.
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
    if wanted == Ask::Truncate && completed {
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
        assert!(
            !finish_checkpoint(&writer, Ask::Truncate),
            "nor can it be truncated"
        );
        let (frames, _) = passive(&writer).unwrap();
        assert!(frames > 0, "the WAL is still there");
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

    /// A pace with a 500 ms interval, its first pass at `t0` on a WAL of generation `g(1)`.
    fn paced(t0: Instant) -> Pace {
        let mut pace = Pace::new(Duration::from_millis(500), t0);
        pace.after_pass(0, g(1), t0);
        pace
    }

    fn g(n: u8) -> Option<[u8; 12]> {
        Some([n; 12])
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn passes_come_sooner_the_faster_the_wal_is_written() {
        let t0 = Instant::now();
        let mut pace = paced(t0);
        assert_eq!(
            pace.after_pass(PASS_FRAMES, g(1), t0 + ms(100)).0,
            ms(100),
            "the same rate"
        );
        assert_eq!(
            pace.after_pass(PASS_FRAMES * 5, g(1), t0 + ms(200)).0,
            ms(25),
            "four times as fast"
        );
        assert_eq!(
            pace.after_pass(PASS_FRAMES * 1000, g(1), t0 + ms(300)).0,
            MIN_WAIT
        );
        assert_eq!(
            pace.after_pass(PASS_FRAMES * 1000 + 1, g(1), t0 + ms(400))
                .0,
            ms(500),
            "a trickle waits the interval"
        );
        assert_eq!(
            pace.after_pass(PASS_FRAMES * 1000 + 1, g(1), t0 + ms(500))
                .0,
            ms(500),
            "nothing written"
        );
        let mut short = Pace::new(ms(2), t0);
        assert_eq!(
            short.after_pass(PASS_FRAMES * 1000, g(1), t0 + ms(1)).0,
            ms(2),
            "an interval shorter than MIN_WAIT"
        );
    }

    #[test]
    fn a_wal_that_started_over_counts_all_it_holds_as_new() {
        let t0 = Instant::now();
        let mut pace = paced(t0);
        pace.after_pass(PASS_FRAMES * 10, g(1), t0 + ms(100));
        // Restarted and regrown past the last count: by the count alone, a trickle.
        assert_eq!(
            pace.after_pass(PASS_FRAMES * 10 + 1, g(2), t0 + ms(200)).0,
            ms(10),
            "a new generation"
        );
        assert_eq!(
            pace.after_pass(PASS_FRAMES * 2, g(2), t0 + ms(300)).0,
            ms(50),
            "fewer frames than before"
        );
    }

    #[test]
    fn a_wal_is_idle_once_no_pass_has_seen_it_change_for_an_interval() {
        let t0 = Instant::now();
        let mut pace = paced(t0);
        assert!(!pace.after_pass(10, g(1), t0 + ms(100)).1, "written");
        assert!(
            !pace.after_pass(10, g(1), t0 + ms(110)).1,
            "unchanged for 10 ms"
        );
        assert!(
            !pace.after_pass(10, g(1), t0 + ms(599)).1,
            "unchanged for 499 ms"
        );
        assert!(
            pace.after_pass(10, g(1), t0 + ms(600)).1,
            "unchanged for 500 ms"
        );
        assert!(
            !pace.after_pass(10, g(2), t0 + ms(1200)).1,
            "started over, as many frames"
        );
        for n in 1..=10 {
            let written = pace.after_pass(10 + n, g(2), t0 + ms(1200 + 400 * n as u64));
            assert!(!written.1, "a trickle is never idle");
        }
    }

    #[test]
    fn the_generation_changes_when_the_wal_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("t.db-wal");
        let conn = wal_with(dir.path(), 0);
        conn.execute("INSERT INTO t VALUES (zeroblob(100))", [])
            .unwrap();
        let first = generation(&wal);
        assert!(first.is_some());
        conn.execute("INSERT INTO t VALUES (zeroblob(100))", [])
            .unwrap();
        assert_eq!(generation(&wal), first, "appended to");
        passive(&conn).unwrap();
        conn.execute("INSERT INTO t VALUES (zeroblob(100))", [])
            .unwrap();
        let (frames, _) = passive(&conn).unwrap();
        assert_eq!(
            frames, 1,
            "copied back in full, the next write started over"
        );
        assert_ne!(generation(&wal), first);
        assert_eq!(generation(&dir.path().join("none-wal")), None, "no file");
    }
}
