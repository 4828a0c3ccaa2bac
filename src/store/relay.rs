//! The writer's answers to the requests of one HTTP worker, delivered with one wake of that
//! worker instead of one per request.
//!
//! A request waits for its write on a `oneshot` channel, and the SQLite writer thread answers it.
//! Waking a task of another thread's runtime is a system call (an `eventfd` write), so the writer
//! made about one per stored event: 4.6-6.5 % of its time in no-match intake (issue 13). Each
//! HTTP worker now has a relay ([`on_http_worker`]): for each group of coalesced writes a commit
//! holds (webhook events, executions' ends), the writer hands a worker's relay the answers of
//! that worker's requests at once and wakes it once ([`Deliveries`]). The relay, a task on the
//! worker, sends them, and waking a task of one's own thread is a queue push. A caller on any
//! other thread (the engine's, a test's), and the writer's other jobs, are answered directly.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// An answer, sent when called.
type Delivery = Box<dyn FnOnce() + Send>;

/// The answers waiting for one HTTP worker's relay task.
pub(crate) struct Relay {
    inbox: parking_lot::Mutex<Vec<Delivery>>,
    ready: Notify,
    /// False once the task is gone (its worker stopping): answers are then sent by whoever
    /// hands them over, never left in the inbox.
    alive: AtomicBool,
}

impl Relay {
    /// Sends every answer in the inbox.
    fn deliver(&self) {
        let answers = std::mem::take(&mut *self.inbox.lock());
        for answer in answers {
            answer();
        }
    }
}

/// Held by the relay task: when the task is dropped, its relay is marked gone, taken off the
/// thread, and what its inbox holds is sent.
struct Running(Arc<Relay>);

impl Drop for Running {
    fn drop(&mut self) {
        // Under the inbox's lock, so an answer is either in the inbox now or handed over by
        // someone who will see the relay gone.
        {
            let _inbox = self.0.inbox.lock();
            self.0.alive.store(false, Ordering::Release);
        }
        let _ = HERE.try_with(|here| here.try_borrow_mut().map(|mut here| here.take()));
        self.0.deliver();
    }
}

thread_local! {
    /// This thread's relay, on an HTTP worker.
    static HERE: RefCell<Option<Arc<Relay>>> = const { RefCell::new(None) };
}

/// Called on each HTTP worker thread as it builds its app: starts, once per thread, the task
/// that delivers the writer's answers to this worker's requests. Must run where
/// `tokio::task::spawn_local` can (actix runs the app factory on the worker's local runtime).
pub fn on_http_worker() {
    HERE.with(|here| {
        if here.borrow().is_some() {
            return;
        }
        let relay = Arc::new(Relay {
            inbox: parking_lot::Mutex::new(Vec::new()),
            ready: Notify::new(),
            alive: AtomicBool::new(true),
        });
        let task = Running(Arc::clone(&relay));
        tokio::task::spawn_local(async move {
            loop {
                task.0.ready.notified().await;
                task.0.deliver();
            }
        });
        *here.borrow_mut() = Some(relay);
    });
}

/// The calling thread's relay, if it is an HTTP worker's.
pub(crate) fn here() -> Option<Arc<Relay>> {
    HERE.try_with(|here| here.borrow().clone()).ok().flatten()
}

/// Answers gathered on the writer thread: each relay's are handed over and the relay woken once,
/// when this is dropped; answers without a relay are sent at once.
#[derive(Default)]
pub(crate) struct Deliveries {
    relays: Vec<(Arc<Relay>, Vec<Delivery>)>,
}

impl Deliveries {
    /// Sends `answer` through `relay`, or now without one.
    pub(crate) fn add(
        &mut self,
        relay: Option<&Arc<Relay>>,
        answer: impl FnOnce() + Send + 'static,
    ) {
        let Some(relay) = relay else {
            answer();
            return;
        };
        let answer: Delivery = Box::new(answer);
        match self.relays.iter_mut().find(|(r, _)| Arc::ptr_eq(r, relay)) {
            Some((_, answers)) => answers.push(answer),
            None => self.relays.push((Arc::clone(relay), vec![answer])),
        }
    }
}

impl Drop for Deliveries {
    fn drop(&mut self) {
        for (relay, answers) in self.relays.drain(..) {
            let alive = {
                let mut inbox = relay.inbox.lock();
                inbox.extend(answers);
                relay.alive.load(Ordering::Acquire)
            };
            match alive {
                true => relay.ready.notify_one(),
                false => relay.deliver(),
            }
        }
    }
}

/// Runs `work` on this thread as an HTTP worker runs a request: on a current-thread runtime and
/// a local set, with this thread's relay started. For tests.
#[cfg(test)]
pub(crate) fn on_a_test_worker<F: std::future::Future>(work: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, async {
        on_http_worker();
        work.await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers from another thread reach every waiting task, sent on the tasks' own thread by
    /// its relay, whether or not the relay was busy when they came.
    #[test]
    fn answers_from_another_thread_reach_every_waiting_task_through_the_relay() {
        on_a_test_worker(async {
            on_http_worker(); // once per thread
            let relay = here().expect("a relay on this thread");
            let this_thread = std::thread::current().id();
            for round in 0..3 {
                let (senders, receivers): (Vec<_>, Vec<_>) =
                    (0..50).map(|_| tokio::sync::oneshot::channel()).unzip();
                let relay = Arc::clone(&relay);
                let writer = std::thread::spawn(move || {
                    // Two commits' worth, the second while the relay may still be delivering.
                    let mut senders = senders.into_iter().enumerate();
                    for _ in 0..2 {
                        let mut deliveries = Deliveries::default();
                        for (i, tx) in senders.by_ref().take(25) {
                            deliveries.add(Some(&relay), move || {
                                let _ = tx.send((round * 100 + i, std::thread::current().id()));
                            });
                        }
                    }
                });
                let mut got = Vec::new();
                for rx in receivers {
                    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), rx);
                    let (n, sent_on) = answer.await.expect("in time").expect("answered");
                    assert_eq!(sent_on, this_thread, "sent by the relay, on this thread");
                    got.push(n);
                }
                writer.join().unwrap();
                assert_eq!(got, (0..50).map(|i| round * 100 + i).collect::<Vec<_>>());
            }
        });
        // A thread without a relay is answered at once.
        std::thread::spawn(|| {
            assert!(here().is_none());
            let (tx, rx) = std::sync::mpsc::channel();
            Deliveries::default().add(None, move || tx.send(7).unwrap());
            assert_eq!(rx.try_recv(), Ok(7));
        })
        .join()
        .unwrap();
    }

    /// A relay whose task is gone (its worker stopped) loses nothing: what its inbox held is
    /// sent as the task goes, and later answers are sent by whoever hands them over.
    #[test]
    fn answers_for_a_relay_whose_task_is_gone_are_still_sent() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        let relay = local.block_on(&rt, async {
            on_http_worker();
            here().expect("a relay on this thread")
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let answer = |n| {
            let tx = tx.clone();
            move || tx.send(n).unwrap()
        };
        // Handed over while nothing runs the task.
        Deliveries::default().add(Some(&relay), answer(1));
        assert_eq!(rx.try_recv().ok(), None);
        drop(local);
        assert_eq!(rx.try_recv().ok(), Some(1));
        assert!(here().is_none(), "taken off the thread");
        Deliveries::default().add(Some(&relay), answer(2));
        assert_eq!(rx.try_recv().ok(), Some(2));
    }
}
