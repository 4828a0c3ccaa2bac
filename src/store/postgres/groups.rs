//! Writes that callers share (issue 13), as SQLite's writer groups its commits: what callers
//! queue while every write of a kind is in flight waits for the next free one, which takes the
//! whole group (up to [`Write::MAX_GROUP`]) with one statement and one commit.
//!
//! One statement and one commit per caller bounded PostgreSQL's intake and engine: each cost the
//! server a statement's planning and start, its execution, a commit and a WAL flush, with a
//! pooled connection held across each. A group costs that once. Every caller is still answered
//! only after its group's commit, so what a caller is told is on the server's disk.
//!
//! Writes run on the store's thread (`triggerd-pg`; see [`super::StoreThread`]), not in a
//! caller's future: a caller that goes away (a client hanging up) does not cancel the write of
//! the others in its group, and an HTTP worker that stops at shutdown takes no write with it.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::store::relay::{self, Deliveries, Relay};
use crate::store::{StoreError, StoreResult};

/// A kind of write that callers share.
pub(super) trait Write: Send + Sync + 'static {
    /// What a caller queues.
    type Job: Send + 'static;
    /// What the caller is answered.
    type Answer: Send + 'static;
    /// Most jobs one write takes.
    const MAX_GROUP: usize;
    /// Most bytes one write carries, by [`Write::size`] (a group holds one job at least).
    const MAX_BYTES: usize = usize::MAX;

    /// What a job weighs against [`Write::MAX_BYTES`].
    fn size(_job: &Self::Job) -> usize {
        0
    }

    /// Writes one group: an answer for each job, in the group's order.
    fn write(&self, group: Vec<Self::Job>) -> impl Future<Output = Vec<Self::Answer>> + Send;
}

/// Jobs of one kind, written in groups; see the module's documentation.
pub(super) struct Groups<W: Write> {
    shared: Arc<Shared<W>>,
    /// The writes' runtime: the store's thread.
    runtime: tokio::runtime::Handle,
    in_flight: u32,
}

struct Shared<W: Write> {
    writer: W,
    queue: parking_lot::Mutex<Vec<Pending<W>>>,
    /// More queued jobs than this fail with `Overloaded`, as a full SQLite writer queue does.
    max_pending: usize,
    /// One permit per write in flight.
    slots: Arc<Semaphore>,
}

/// A job waiting for a write, and where its answer goes: through the relay of the HTTP worker
/// that queued it, if it was one, so that a worker is woken once per group.
struct Pending<W: Write> {
    job: W::Job,
    done: oneshot::Sender<W::Answer>,
    relay: Option<Arc<Relay>>,
}

impl<W: Write> Groups<W> {
    /// Writes with `writer` on `runtime` (the store's thread), up to `in_flight` groups at once,
    /// with up to `max_pending` jobs queued.
    pub(super) fn start(
        writer: W,
        runtime: tokio::runtime::Handle,
        in_flight: u32,
        max_pending: usize,
    ) -> Self {
        let in_flight = in_flight.max(1);
        Self {
            shared: Arc::new(Shared {
                writer,
                queue: parking_lot::Mutex::new(Vec::new()),
                max_pending,
                slots: Arc::new(Semaphore::new(in_flight as usize)),
            }),
            runtime,
            in_flight,
        }
    }

    /// Waits until every write in flight has ended and nothing is queued: at shutdown, before
    /// the pool closes, once no more jobs come.
    pub(super) async fn flush(&self) {
        let Ok(_every_slot) = self.shared.slots.acquire_many(self.in_flight).await else {
            return;
        };
        // Only a write that panicked leaves jobs queued with no write to take them.
        loop {
            let group = self.shared.take();
            if group.is_empty() {
                return;
            }
            self.shared.write(group).await;
        }
    }

    /// Queues `job` for the next free write and answers once that write has committed.
    pub(super) async fn submit(&self, job: W::Job) -> StoreResult<W::Answer> {
        let (done, answer) = oneshot::channel();
        {
            let mut queue = self.shared.queue.lock();
            if queue.len() >= self.shared.max_pending {
                return Err(StoreError::Overloaded);
            }
            queue.push(Pending {
                job,
                done,
                relay: relay::here(),
            });
        }
        if let Ok(slot) = Arc::clone(&self.shared.slots).try_acquire_owned() {
            self.runtime.spawn(Arc::clone(&self.shared).drain(slot));
        }
        answer.await.map_err(|_| StoreError::ShuttingDown)
    }
}

impl<W: Write> Shared<W> {
    /// The next group: the oldest queued jobs, up to [`Write::MAX_GROUP`] and
    /// [`Write::MAX_BYTES`].
    fn take(&self) -> Vec<Pending<W>> {
        let mut queue = self.queue.lock();
        let mut bytes = 0usize;
        let n = queue
            .iter()
            .take(W::MAX_GROUP)
            .take_while(|p| {
                bytes = bytes.saturating_add(W::size(&p.job));
                bytes <= W::MAX_BYTES
            })
            .count()
            .max(1)
            .min(queue.len());
        queue.drain(..n).collect()
    }

    /// Writes what is queued, group after group, until nothing is.
    async fn drain(self: Arc<Self>, mut slot: OwnedSemaphorePermit) {
        loop {
            let group = self.take();
            if !group.is_empty() {
                self.write(group).await;
                continue;
            }
            drop(slot);
            // A job queued between the look above and the slot's release found every slot
            // taken: take one back for it, unless another write took it and will look again.
            if self.queue.lock().is_empty() {
                return;
            }
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(again) => slot = again,
                Err(_) => return,
            }
        }
    }

    /// Writes one group and answers each of its callers.
    async fn write(&self, group: Vec<Pending<W>>) {
        let mut callers = Vec::with_capacity(group.len());
        let jobs = group
            .into_iter()
            .map(|p| {
                callers.push((p.done, p.relay));
                p.job
            })
            .collect();
        let answers = self.writer.write(jobs).await;
        let mut deliveries = Deliveries::default();
        for ((done, relay), answer) in callers.into_iter().zip(answers) {
            deliveries.add(relay.as_ref(), move || {
                let _ = done.send(answer);
            });
        }
    }
}

/// The same error for each job of a group that failed as a whole: an unreachable database,
/// an exhausted pool or a stopping store carry nothing to share.
pub(super) fn alike(e: &StoreError, what: &'static str) -> StoreError {
    match e {
        StoreError::Overloaded => StoreError::Overloaded,
        StoreError::ShuttingDown => StoreError::ShuttingDown,
        StoreError::Unavailable => StoreError::Unavailable,
        e => StoreError::db(what, GroupFailed(crate::error::ErrorChain(e).to_string())),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct GroupFailed(String);
