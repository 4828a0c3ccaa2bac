//! The single writer: one thread owns the read-write connection and group-commits every write
//! that is queued while the previous batch was committing.
//!
//! With `synchronous=FULL` each commit costs one fsync; batching turns N concurrent writes into
//! one fsync while each caller still learns of its own success only after the commit. Each job
//! runs inside its own SAVEPOINT, so one failing job does not undo the others in its batch.
//!
//! Maintenance (finishing a WAL checkpoint, releasing cache memory) also runs on this thread,
//! between two batches and outside any transaction, so it never competes with the writer for
//! the database's write lock.

use std::sync::Arc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::error::ErrorChain;
use crate::store::relay::{self, Deliveries, Relay};
use crate::store::{StoreError, StoreResult};

/// What a job hands back after running: called once the batch has committed (or failed).
type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// A unit of work for the writer thread; given an error instead of the connection when the
/// batch could not even begin.
type Job = Box<dyn FnOnce(Result<&Connection, &StoreError>) -> Completion + Send>;

/// Work on the connection outside any transaction (see [`Writer::maintain_blocking`]).
type Maintenance = Box<dyn FnOnce(&Connection) + Send>;

enum Msg {
    Job(Job),
    Maintain(Maintenance),
    Shutdown(oneshot::Sender<()>),
}

/// Handle to the writer thread. Cloning shares the same thread.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Msg>,
}

/// Joins the writer thread on shutdown.
pub(crate) struct WriterThread {
    handle: Option<JoinHandle<()>>,
    tx: mpsc::Sender<Msg>,
}

impl Writer {
    /// Starts the writer thread on `conn`. `committed` runs after each batch's transaction has
    /// ended, before any of its callers is answered.
    pub(crate) fn start(
        conn: Connection,
        capacity: usize,
        max_batch: usize,
        committed: impl Fn() + Send + 'static,
    ) -> std::io::Result<(Writer, WriterThread)> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let handle = std::thread::Builder::new()
            .name("triggerd-sqlite-writer".into())
            .spawn(move || run(conn, rx, max_batch.max(1), &committed))?;
        Ok((
            Writer { tx: tx.clone() },
            WriterThread {
                handle: Some(handle),
                tx,
            },
        ))
    }

    /// Runs `f` in the next batch, waiting for queue space if needed.
    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (job, rx) = make_job(f);
        self.tx
            .send(Msg::Job(job))
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        rx.await.map_err(|_| StoreError::ShuttingDown)?
    }
}

/// Writes of one kind, written together: every item queued while the writer is busy goes into
/// one job under one savepoint, instead of a job and a savepoint each.
///
/// A savepoint copies each page the first time it changes it (SQLite's sub-journal), so with one
/// savepoint per webhook event every event copied the same few B-tree leaves again: a fifth of
/// the writer thread's time in the profile of matched intake. If an item fails, the group is
/// rolled back and each item is written again in its own savepoint, so a failing item still
/// fails alone. The items are kept until then, so `write` takes them by reference and each is
/// handed back with its result.
pub(crate) struct Coalescer<I, O> {
    writer: Writer,
    queue: Arc<parking_lot::Mutex<Vec<Pending<I, O>>>>,
    write: WriteOne<I, O>,
}

/// How a [`Coalescer`] writes one item.
type WriteOne<I, O> = Arc<dyn Fn(&Connection, &I) -> StoreResult<O> + Send + Sync>;

/// An item waiting for the next group, and where its result goes: through the relay of the
/// HTTP worker that queued it, if it was one.
struct Pending<I, O> {
    item: I,
    done: oneshot::Sender<(I, StoreResult<O>)>,
    relay: Option<Arc<Relay>>,
}

/// At most this many items wait for a group; more fail with `Overloaded`, like a full queue.
pub(crate) const MAX_PENDING: usize = 8192;

/// The histogram of how many writes each transaction held.
pub(crate) const BATCH_SIZE_METRIC: &str = "triggerd_writer_batch_size";

/// The histogram of how many items each coalesced group held (at most [`MAX_PENDING`]); on
/// PostgreSQL, how many webhook events each of intake's writes stored.
pub(crate) const GROUP_SIZE_METRIC: &str = "triggerd_writer_group_size";

impl<I: Send + 'static, O: Send + 'static> Coalescer<I, O> {
    /// Groups items for `writer`; `write` writes one.
    pub(crate) fn new(
        writer: Writer,
        write: impl Fn(&Connection, &I) -> StoreResult<O> + Send + Sync + 'static,
    ) -> Self {
        Self {
            writer,
            queue: Arc::new(parking_lot::Mutex::new(Vec::new())),
            write: Arc::new(write),
        }
    }

    /// Writes `item` with whatever else is queued; answers once the group has committed, with
    /// the item back. Fails at once with `Overloaded` when the writer's queue is full.
    pub(crate) async fn write(&self, item: I) -> StoreResult<(I, O)> {
        self.enqueue(item, None).await
    }

    /// As [`write`](Self::write), but waits for room in the writer's queue instead of failing
    /// with `Overloaded`: for writes whose callers are bounded (the engine's workers) and have
    /// nobody to hand an `Overloaded` to.
    pub(crate) async fn write_waiting(&self, item: I) -> StoreResult<(I, O)> {
        // Room is reserved before the item is queued, so a caller dropped while it waits
        // leaves nothing behind.
        let room = self
            .writer
            .tx
            .reserve()
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        self.enqueue(item, Some(room)).await
    }

    async fn enqueue(&self, item: I, room: Option<mpsc::Permit<'_, Msg>>) -> StoreResult<(I, O)> {
        let (done, rx) = oneshot::channel();
        let first = {
            let mut queue = self.queue.lock();
            if room.is_none() && queue.len() >= MAX_PENDING {
                return Err(StoreError::Overloaded);
            }
            queue.push(Pending {
                item,
                done,
                relay: relay::here(),
            });
            queue.len() == 1
        };
        // The first item of a group queues the job that will take the group: later ones join
        // it until it starts (and give back the room they reserved).
        if let (true, Some(room)) = (first, room) {
            room.send(Msg::Job(self.job()));
        } else if first {
            if let Err(e) = self.writer.try_submit(self.job()) {
                // No job will take what is queued: it all fails as the submission did
                // (`Overloaded` or `ShuttingDown`, which carry nothing, so each gets its own).
                let full = matches!(e, StoreError::Overloaded);
                for p in std::mem::take(&mut *self.queue.lock()) {
                    let e = match full {
                        true => StoreError::Overloaded,
                        false => StoreError::ShuttingDown,
                    };
                    let _ = p.done.send((p.item, Err(e)));
                }
            }
        }
        let (item, result) = rx.await.map_err(|_| StoreError::ShuttingDown)?;
        result.map(|out| (item, out))
    }

    fn job(&self) -> Job {
        let queue = Arc::clone(&self.queue);
        let write = Arc::clone(&self.write);
        Box::new(
            move |conn: Result<&Connection, &StoreError>| -> Completion {
                let group = std::mem::take(&mut *queue.lock());
                metrics::histogram!(GROUP_SIZE_METRIC).record(group.len() as f64);
                let results: Vec<StoreResult<O>> = match conn {
                    Ok(conn) => write_group(conn, &group, &*write),
                    Err(e) => group.iter().map(|_| Err(batch_failed(e))).collect(),
                };
                Box::new(move |commit_error: Option<&StoreError>| {
                    let mut deliveries = Deliveries::default();
                    for (p, result) in group.into_iter().zip(results) {
                        let result = match commit_error {
                            Some(e) => Err(batch_failed(e)),
                            None => result,
                        };
                        let (done, item) = (p.done, p.item);
                        deliveries.add(p.relay.as_ref(), move || {
                            let _ = done.send((item, result));
                        });
                    }
                })
            },
        )
    }
}

/// Writes a group under one savepoint; when an item fails, each item again under its own.
fn write_group<I, O>(
    conn: &Connection,
    group: &[Pending<I, O>],
    write: &dyn Fn(&Connection, &I) -> StoreResult<O>,
) -> Vec<StoreResult<O>> {
    let together = in_savepoint(conn, |c| {
        group
            .iter()
            .map(|p| write(c, &p.item))
            .collect::<StoreResult<Vec<O>>>()
    });
    match together {
        Ok(outputs) => outputs.into_iter().map(Ok).collect(),
        Err(e) if group.len() == 1 => vec![Err(e)],
        Err(_) => group
            .iter()
            .map(|p| {
                if conn.is_autocommit() {
                    // The failure rolled back the whole transaction (see commit_batch).
                    Err(rolled_back())
                } else {
                    in_savepoint(conn, |c| write(c, &p.item))
                }
            })
            .collect(),
    }
}

impl Writer {
    /// Queues a job as it is: it opens its own savepoints. Fails at once when the queue is full.
    fn try_submit(&self, job: Job) -> StoreResult<()> {
        self.tx.try_send(Msg::Job(job)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => StoreError::ShuttingDown,
        })?;
        metrics::gauge!("triggerd_writer_queue_depth")
            .set((self.tx.max_capacity() - self.tx.capacity()) as f64);
        Ok(())
    }

    /// Runs `f` on the writer's connection after the batch in progress has committed, outside
    /// any transaction. Blocks until queued, so it is for plain threads only (the checkpoint
    /// thread), never async code. False once the writer has stopped.
    pub(crate) fn maintain_blocking(&self, f: impl FnOnce(&Connection) + Send + 'static) -> bool {
        self.tx.blocking_send(Msg::Maintain(Box::new(f))).is_ok()
    }
}

impl WriterThread {
    /// Commits everything queued so far, then stops the thread. Later writes fail with
    /// `ShuttingDown`.
    pub(crate) async fn shutdown(mut self) {
        let (ack_tx, ack_rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(ack_tx)).await.is_ok() {
            let _ = ack_rx.await;
        }
        if let Some(handle) = self.handle.take() {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

fn make_job<T, F>(f: F) -> (Job, oneshot::Receiver<StoreResult<T>>)
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(
        move |conn: Result<&Connection, &StoreError>| -> Completion {
            let result = match conn {
                Ok(conn) => in_savepoint(conn, f),
                Err(e) => Err(batch_failed(e)),
            };
            Box::new(move |commit_error: Option<&StoreError>| {
                let result = match (commit_error, result) {
                    (Some(e), _) => Err(batch_failed(e)),
                    (None, r) => r,
                };
                let _ = tx.send(result);
            })
        },
    );
    (job, rx)
}

fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    // Prepared once per connection: a batch opens and closes one savepoint per job.
    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([]));
    run("SAVEPOINT job").map_err(|e| StoreError::db("opening a savepoint", e))?;
    let result = f(conn);
    let end = if result.is_ok() {
        run("RELEASE job")
    } else {
        run("ROLLBACK TO job").and_then(|_| run("RELEASE job"))
    };
    end.map_err(|e| StoreError::db("closing a savepoint", e))?;
    result
}

/// The error each caller of a failed batch receives, with the batch's error and its causes in
/// its text (the error itself stays with the writer's log).
fn batch_failed(e: &StoreError) -> StoreError {
    StoreError::db("writing a batch", BatchFailed(ErrorChain(e).to_string()))
}

/// The error of a job that did not run because its batch's transaction was already gone.
fn rolled_back() -> StoreError {
    StoreError::db(
        "writing a batch",
        BatchFailed("the transaction was rolled back".into()),
    )
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BatchFailed(String);

fn run(conn: Connection, mut rx: mpsc::Receiver<Msg>, max_batch: usize, committed: &dyn Fn()) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    let mut shutdown: Option<oneshot::Sender<()>> = None;
    let mut maintenance: Option<Maintenance> = None;
    while shutdown.is_none() {
        match rx.blocking_recv() {
            Some(Msg::Job(job)) => batch.push(job),
            Some(Msg::Maintain(f)) => maintenance = Some(f),
            Some(Msg::Shutdown(ack)) => shutdown = Some(ack),
            None => break,
        }
        // Collect what is queued into this batch; maintenance ends the batch so that it runs
        // after what was queued before it.
        while batch.len() < max_batch && shutdown.is_none() && maintenance.is_none() {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => batch.push(job),
                Ok(Msg::Maintain(f)) => maintenance = Some(f),
                Ok(Msg::Shutdown(ack)) => shutdown = Some(ack),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(&conn, &mut batch, committed);
        }
        if let Some(f) = maintenance.take() {
            f(&conn);
            committed();
        }
        crate::memory::now_and_then();
    }
    rx.close();
    // Everything is committed; fold the WAL into the database file so it is left tidy.
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "final WAL checkpoint failed; the WAL will be replayed on start");
    }
    if let Some(ack) = shutdown {
        let _ = ack.send(());
    }
    tracing::debug!("sqlite writer stopped");
}

fn commit_batch(conn: &Connection, batch: &mut Vec<Job>, committed: &dyn Fn()) {
    metrics::histogram!(BATCH_SIZE_METRIC).record(batch.len() as f64);
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let err = StoreError::db("starting a write batch", e);
        tracing::error!(error = %err, "write batch failed");
        for job in batch.drain(..) {
            job(Err(&err))(Some(&err));
        }
        return;
    }
    // Some errors (disk full, I/O) make SQLite roll back the whole transaction. A job run after
    // that would run in autocommit mode and commit on its own while its caller is told the
    // batch failed, so once the transaction is gone the remaining jobs do not run.
    let aborted = rolled_back();
    let completions: Vec<Completion> = batch
        .drain(..)
        .map(|job| {
            if conn.is_autocommit() {
                job(Err(&aborted))
            } else {
                job(Ok(conn))
            }
        })
        .collect();
    let commit_error = conn
        .execute_batch("COMMIT")
        .err()
        .map(|e| StoreError::db("committing a write batch", e));
    if let Some(e) = &commit_error {
        tracing::error!(error = %e, "write batch commit failed");
        let _ = conn.execute_batch("ROLLBACK");
    }
    committed();
    for done in completions {
        done(commit_error.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(dir: &tempfile::TempDir) -> Connection {
        let conn = Connection::open(dir.path().join("w.db")).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (v INTEGER NOT NULL UNIQUE);")
            .unwrap();
        conn
    }

    fn count(dir: &tempfile::TempDir) -> i64 {
        Connection::open(dir.path().join("w.db"))
            .unwrap()
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    fn insert(v: i64) -> impl FnOnce(&Connection) -> StoreResult<()> + Send + 'static {
        move |c: &Connection| {
            c.execute("INSERT INTO t (v) VALUES (?1)", [v])
                .map(|_| ())
                .map_err(|e| StoreError::db("inserting", e))
        }
    }

    /// Holds the writer thread inside a job until the sender is sent to (or dropped).
    async fn hold(
        writer: &Writer,
    ) -> (
        tokio::task::JoinHandle<StoreResult<()>>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (started_tx, started_rx) = oneshot::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::spawn({
            let w = writer.clone();
            async move {
                w.write(move |_c: &Connection| {
                    let _ = started_tx.send(());
                    let _ = go_rx.recv();
                    Ok(())
                })
                .await
            }
        });
        started_rx.await.unwrap();
        (blocker, go_tx)
    }

    fn insert_one(c: &Connection, v: &i64) -> StoreResult<()> {
        insert(*v)(c)
    }

    type CoalescedWrite = tokio::task::JoinHandle<StoreResult<(i64, ())>>;

    /// Writes each item from a task of its own, and waits until all are queued in the
    /// coalescer (behind a held writer, they then form one group).
    async fn queue_writes(
        coalescer: &Arc<Coalescer<i64, ()>>,
        items: &[i64],
    ) -> Vec<CoalescedWrite> {
        let writes: Vec<_> = items
            .iter()
            .map(|&v| {
                let c = Arc::clone(coalescer);
                tokio::spawn(async move { c.write(v).await })
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while coalescer.queue.lock().len() < items.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "the items never queued"
            );
            tokio::task::yield_now().await;
        }
        writes
    }

    #[tokio::test]
    async fn coalesced_items_are_written_together_and_a_failing_one_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, thread) = Writer::start(table(&dir), 16, 16, || {}).unwrap();
        let coalescer = Arc::new(Coalescer::new(writer.clone(), insert_one));
        // Hold the writer thread so that the items queue up behind it as one group.
        let (blocker, go_tx) = hold(&writer).await;
        // 7 is there twice: UNIQUE refuses the second.
        let writes = queue_writes(&coalescer, &[5, 6, 7, 7, 8]).await;
        assert_eq!(
            writer.tx.max_capacity() - writer.tx.capacity(),
            1,
            "five items, one queued job"
        );
        go_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        let mut stored = Vec::new();
        let mut failed = 0;
        for w in writes {
            match w.await.unwrap() {
                Ok((item, ())) => stored.push(item),
                Err(_) => failed += 1,
            }
        }
        thread.shutdown().await;
        stored.sort();
        assert_eq!(stored, vec![5, 6, 7, 8], "each stored item comes back");
        assert_eq!(failed, 1, "only the duplicate fails");
        assert_eq!(count(&dir), 4, "the group's other items are committed");
    }

    /// Inserts the value; 0 instead rolls the whole transaction back, as a full disk would.
    fn insert_or_roll_back(c: &Connection, v: &i64) -> StoreResult<()> {
        if *v == 0 {
            let _ = c.execute_batch("ROLLBACK");
            return Err(StoreError::db(
                "inserting",
                BatchFailed("rolled back".into()),
            ));
        }
        insert_one(c, v)
    }

    #[tokio::test]
    async fn a_group_whose_transaction_is_rolled_back_commits_none_of_its_items_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, thread) = Writer::start(table(&dir), 16, 16, || {}).unwrap();
        let coalescer = Arc::new(Coalescer::new(writer.clone(), insert_or_roll_back));
        let (blocker, go_tx) = hold(&writer).await;
        let writes = queue_writes(&coalescer, &[1, 0, 2]).await;

        go_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        let mut failed = 0;
        for w in writes {
            failed += usize::from(w.await.unwrap().is_err());
        }
        thread.shutdown().await;

        assert_eq!(failed, 3, "every item of the lost transaction fails");
        assert_eq!(
            count(&dir),
            0,
            "none was written again outside a transaction"
        );
    }

    #[tokio::test]
    async fn a_coalesced_write_after_shutdown_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, thread) = Writer::start(table(&dir), 16, 16, || {}).unwrap();
        thread.shutdown().await;

        let late = Coalescer::new(writer, insert_one).write(1).await;

        assert!(matches!(late, Err(StoreError::ShuttingDown)), "{late:?}");
        assert_eq!(count(&dir), 0);
    }

    #[tokio::test]
    async fn a_failing_job_does_not_undo_the_others_in_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, thread) = Writer::start(table(&dir), 64, 64, || {}).unwrap();

        // Queued together, so they share batches; the duplicate violates UNIQUE.
        let results = tokio::join!(
            writer.write(insert(1)),
            writer.write(insert(2)),
            writer.write(insert(1)),
            writer.write(insert(3)),
        );

        assert!(results.0.is_ok() && results.1.is_ok() && results.3.is_ok());
        assert!(results.2.is_err(), "the duplicate fails");
        thread.shutdown().await;
        assert_eq!(count(&dir), 3, "every job that succeeded is committed");
    }

    #[tokio::test]
    async fn maintenance_runs_after_what_was_queued_before_it_outside_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, thread) = Writer::start(table(&dir), 64, 64, || {}).unwrap();
        let queued = tokio::spawn({
            let w = writer.clone();
            async move { w.write(insert(1)).await }
        });
        // Wait until the insert is queued, then ask for maintenance from a plain thread, as the
        // checkpoint thread does.
        while writer.tx.capacity() == writer.tx.max_capacity() && !queued.is_finished() {
            tokio::task::yield_now().await;
        }
        let (seen_tx, seen_rx) = oneshot::channel();
        let w = writer.clone();
        let sent = std::thread::spawn(move || {
            w.maintain_blocking(move |c| {
                let rows: i64 = c
                    .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
                    .unwrap();
                let _ = seen_tx.send((rows, c.is_autocommit()));
            })
        })
        .join()
        .unwrap();

        assert!(sent);
        assert_eq!(
            seen_rx.await.unwrap(),
            (1, true),
            "(rows seen, outside a transaction)"
        );
        queued.await.unwrap().unwrap();
        thread.shutdown().await;
        let w = writer.clone();
        let refused = std::thread::spawn(move || w.maintain_blocking(|_| {}))
            .join()
            .unwrap();
        assert!(!refused, "a stopped writer takes no maintenance");
    }

    #[test]
    fn the_callers_of_a_failed_batch_are_told_its_cause() {
        let failed = StoreError::db(
            "committing a write batch",
            std::io::Error::other("disk I/O error"),
        );
        let told = ErrorChain(&batch_failed(&failed)).to_string();
        assert_eq!(
            told,
            "writing a batch: committing a write batch: disk I/O error"
        );
    }

    #[tokio::test]
    async fn shutdown_commits_what_was_queued_and_refuses_what_comes_after() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, thread) = Writer::start(table(&dir), 64, 64, || {}).unwrap();
        let queued: Vec<_> = (0..20)
            .map(|v| {
                tokio::spawn({
                    let w = writer.clone();
                    async move { w.write(insert(v)).await }
                })
            })
            .collect();
        for q in queued {
            q.await.unwrap().unwrap();
        }

        thread.shutdown().await;
        let late = writer.write(insert(99)).await;

        assert!(matches!(late, Err(StoreError::ShuttingDown)), "{late:?}");
        assert_eq!(count(&dir), 20);
    }

    /// A writer whose queue holds one write, held inside a job with its queue full: the
    /// writer, its thread, the held job and the sender that lets it go, and the queued write.
    struct FullQueue {
        writer: Writer,
        thread: WriterThread,
        blocker: tokio::task::JoinHandle<StoreResult<()>>,
        go: std::sync::mpsc::Sender<()>,
        filler: tokio::task::JoinHandle<StoreResult<()>>,
    }

    async fn full_queue(dir: &tempfile::TempDir) -> FullQueue {
        let (writer, thread) = Writer::start(table(dir), 1, 1, || {}).unwrap();
        let (blocker, go) = hold(&writer).await;
        // The queue holds one write: fill it, and wait until it is really queued.
        let filler = tokio::spawn({
            let w = writer.clone();
            async move { w.write(insert(1)).await }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while writer.tx.capacity() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the filler never queued"
            );
            tokio::task::yield_now().await;
        }
        FullQueue {
            writer,
            thread,
            blocker,
            go,
            filler,
        }
    }

    impl FullQueue {
        /// Lets the held job and the queued write finish.
        async fn release(&mut self) {
            self.go.send(()).unwrap();
            (&mut self.blocker).await.unwrap().unwrap();
            (&mut self.filler).await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_full_queue_answers_overloaded_and_stores_nothing_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut full = full_queue(&dir).await;

        let overloaded = Coalescer::new(full.writer.clone(), insert_one)
            .write(2)
            .await;

        assert!(
            matches!(overloaded, Err(StoreError::Overloaded)),
            "{overloaded:?}"
        );
        full.release().await;
        full.thread.shutdown().await;
        assert_eq!(count(&dir), 1, "only the queued write is stored");
    }

    #[tokio::test]
    async fn a_waiting_write_waits_for_room_in_a_full_queue_and_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let mut full = full_queue(&dir).await;
        let coalescer = Arc::new(Coalescer::new(full.writer.clone(), insert_one));

        let waiting = tokio::spawn({
            let c = Arc::clone(&coalescer);
            async move { c.write_waiting(2).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "it waits while the queue is full");

        full.release().await;
        let (item, ()) = waiting.await.unwrap().expect("stored once there is room");
        assert_eq!(item, 2);
        full.thread.shutdown().await;
        assert_eq!(count(&dir), 2);
    }

    /// Writes queued on an HTTP worker's thread carry that worker's relay, and are answered
    /// through it once their group commits; a write from any other thread carries none.
    #[test]
    fn writes_queued_on_an_http_worker_carry_its_relay() {
        relay::on_a_test_worker(async {
            let worker = relay::here().expect("a relay on this thread");
            let dir = tempfile::tempdir().unwrap();
            let (writer, thread) = Writer::start(table(&dir), 16, 16, || {}).unwrap();
            let coalescer = Arc::new(Coalescer::new(writer.clone(), insert_one));
            let (blocker, go_tx) = hold(&writer).await;

            let writes = queue_writes(&coalescer, &[1, 2, 3]).await;
            let elsewhere = std::thread::spawn({
                let c = Arc::clone(&coalescer);
                move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    rt.block_on(c.write(4))
                }
            });
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while coalescer.queue.lock().len() < 4 {
                assert!(std::time::Instant::now() < deadline, "never queued");
                tokio::task::yield_now().await;
            }
            let relays: Vec<(i64, bool)> = coalescer
                .queue
                .lock()
                .iter()
                .map(|p| {
                    let through_worker = p.relay.as_ref().is_some_and(|r| Arc::ptr_eq(r, &worker));
                    assert!(through_worker || p.relay.is_none());
                    (p.item, through_worker)
                })
                .collect();
            assert_eq!(relays, [(1, true), (2, true), (3, true), (4, false)]);

            go_tx.send(()).unwrap();
            blocker.await.unwrap().unwrap();
            for (w, v) in writes.into_iter().zip(1..) {
                assert_eq!(w.await.unwrap().unwrap(), (v, ()));
            }
            assert_eq!(elsewhere.join().unwrap().unwrap(), (4, ()));
            thread.shutdown().await;
            assert_eq!(count(&dir), 4);
        });
    }
}
