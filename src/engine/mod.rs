//! The execution engine (DESIGN §6.3): a durable queue in the database, a pool of at most
//! `workers` executions running at once, and the step runners.
//!
//! A loop leases runnable executions from the store ([`ExecutionStore::claim_executions`]) and
//! runs each on a task holding one worker permit. A task that ends an execution claims the next
//! runnable one in the same write ([`ExecutionStore::finish_execution`]) and runs it under the
//! same permit, so while there is work a claim costs no commit of its own. Every state change
//! is written before the next step starts, so after a crash the execution continues where it
//! stopped: a step that was running in the dead process is marked `Failed` ("interrupted") at
//! start-up and the pipeline follows its failure rules. A `Wait` step parks the execution with
//! a wake-up time and gives the permit back.
//!
//! Each claim of an execution carries its own lease token, and every write a worker makes is
//! fenced by it (see [`crate::store::executions`]). A worker renews its lease while it runs; when
//! the lease is lost (it ran out during a pause or a partition and another worker claimed the
//! execution) the worker stops at once, kills its running step and writes nothing more: the
//! execution is the new worker's.

mod context;
pub mod control;
pub mod http_step;
pub mod live_log;
pub mod retention;
pub mod run;
pub mod run_user;
pub mod spawner;
pub mod supervise;
pub mod work_dirs;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use self::context::{variables, ExecutionContext};
use self::run::{RunRequest, RunStatus};
use self::work_dirs::WorkDirs;
use crate::domain::ids::{LeaseToken, PlanExecutionId};
use crate::domain::pipeline::{PipelineSpec, Step, StepSpec};
use crate::expr::context::{parse_payload, TriggerContext};
use crate::expr::template::Template;
use crate::store::executions::{
    status, AlreadyStarted, Claim, Claimed, Control, NextClaim, QueueLease, RunState, Start,
    StepRecord, Work,
};
use crate::store::{now_millis, PipelineRecord, RecordOutcome, Store, StoreError, StoreResult};

/// How often the loop looks for work when nobody wakes it.
const POLL: Duration = Duration::from_millis(100);
/// A Run step without `timeout` may run this long.
const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// An Http step without `timeout` (in its spec or on the step) may take this long.
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// The tail of a Run step's output that is kept (DESIGN §6.1).
const MAX_LOG_BYTES: usize = 1024 * 1024;

/// The executions this process is running, and aborts announced for ones it was not running.
type Running = Arc<parking_lot::Mutex<Workers>>;

/// How long an abort announced for an execution this process does not run is kept for a
/// worker that may be about to run it.
const EARLY_ABORT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Workers {
    /// By plan execution id: the claim's token and the token that stops its worker.
    running: HashMap<String, (LeaseToken, CancellationToken)>,
    /// Aborts announced for executions this process did not run, by id, with when. A worker
    /// that claimed one just before the request, and read it with the claim, registers
    /// after the announcement: it is stopped as it registers, then reads the request.
    early: HashMap<String, Instant>,
}

/// A handle to the running engine.
#[derive(Clone)]
pub struct EngineHandle {
    crew: Arc<Crew>,
}

/// What every worker of this node runs with: shared by the run loop, the workers and intake's
/// hand-offs ([`EngineHandle::idle_worker`]).
struct Crew {
    store: Arc<dyn Store>,
    /// The runtime the engine was started on, which every worker runs on.
    runtime: tokio::runtime::Handle,
    /// One permit per execution running at once. None are handed out until the engine has
    /// recovered what the last process left (see [`run_loop`]).
    permits: Arc<Semaphore>,
    /// Wakes the run loop: work was queued, or a worker is free.
    wake: Arc<Notify>,
    /// How many times work was queued for the run loop ([`EngineHandle::notify`]): a worker
    /// whose last end found nothing to claim next wakes the loop only when this moved since.
    queued: AtomicU64,
    shutdown: CancellationToken,
    /// The end of the grace period, the parent of every worker's `stop`.
    abort: CancellationToken,
    running: Running,
    work_dirs: Arc<WorkDirs>,
    launch: Arc<Launch>,
    /// Who holds this node's leases, and for how long: how a worker claims the next execution
    /// as it ends one, and the lease intake queues an execution with for an idle worker.
    next: Arc<NextClaim>,
}

impl EngineHandle {
    /// Tells the engine that work was queued, so it does not wait for its next poll.
    pub fn notify(&self) {
        self.crew.queued.fetch_add(1, Ordering::SeqCst);
        self.crew.wake.notify_one();
    }

    /// Reserves an idle worker of this node for an execution about to be queued, when one is
    /// free (and the engine is not shutting down): the execution is queued with the worker's
    /// lease ([`IdleWorker::lease`]) by [`IdleWorker::queue`], and once it is stored the worker
    /// runs it. No claim
    /// is written for it: while the engine keeps up, an execution costs one write fewer (the
    /// worker reads what it runs itself, as after a claim on SQLite). Dropping the reservation
    /// frees the worker.
    pub fn idle_worker(&self) -> Option<IdleWorker> {
        if self.crew.shutdown.is_cancelled() {
            return None;
        }
        let permit = self.crew.permits.clone().try_acquire_owned().ok()?;
        Some(IdleWorker {
            lease: QueueLease {
                owner: self.crew.next.owner.clone(),
                token: LeaseToken::generate(),
                lease_ms: self.crew.next.lease_ms,
            },
            reserved_at: Instant::now(),
            permit: Some(permit),
            crew: self.crew.clone(),
        })
    }

    /// Removes the working directory of an execution that ended without a worker (aborted or
    /// rejected while it waited).
    pub fn forget(&self, id: &PlanExecutionId) {
        self.crew.work_dirs.remove(id);
    }

    /// Kills the running step of an execution this process runs (after the store flagged the
    /// abort); the worker then records it. False when this process does not run it: the abort
    /// is then kept a while (`EARLY_ABORT`), for a worker here that claimed the execution
    /// and has not registered yet.
    pub fn abort(&self, id: &PlanExecutionId) -> bool {
        self.crew.running.lock().abort(id)
    }
}

impl Workers {
    /// See [`EngineHandle::abort`].
    fn abort(&mut self, id: &PlanExecutionId) -> bool {
        match self.running.get(id.as_str()) {
            Some((_, stop)) => {
                stop.cancel();
                true
            }
            None => {
                let now = Instant::now();
                self.early.retain(|_, at| now - *at < EARLY_ABORT);
                self.early.insert(id.to_string(), now);
                false
            }
        }
    }
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Executions running at once.
    pub workers: usize,
    /// How long running steps may take to finish after shutdown begins.
    pub grace: Duration,
    /// Where each execution gets its working directory (created with mode 0700).
    pub work_root: PathBuf,
    /// How Run steps are started: under which supervisor, as which user.
    pub launch: Launch,
    /// This node's id: the owner of the leases it takes.
    pub node_id: String,
    /// How long a lease on an execution lasts; the worker renews it every third of that, so
    /// another node takes the execution over only once this node is gone.
    pub lease: Duration,
}

/// How Run steps are started.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// The spawner that starts each Run step under a supervisor (which kills every process
    /// the step started, even detached ones, when it ends or the server dies). `None` runs
    /// scripts directly, in a process group only.
    pub spawner: Option<Arc<spawner::Spawner>>,
    /// The user steps run as, when not the server's own (see [`run_user`]).
    pub user: Option<run_user::RunUser>,
}

/// Starts the engine: recovers what a previous process left running, then runs executions
/// until `shutdown` is cancelled. Running steps then get `grace` to finish before they are
/// killed. Returns a handle and the loop's task, which ends when every execution task has.
pub fn start(
    store: Arc<dyn Store>,
    options: EngineOptions,
    shutdown: CancellationToken,
) -> (EngineHandle, tokio::task::JoinHandle<()>) {
    let EngineOptions {
        workers,
        grace,
        work_root,
        launch,
        node_id,
        lease,
    } = options;
    let launch = Arc::new(launch);
    // Spares are kept for supervised steps only (see `work_dirs`).
    let spares = if launch.spawner.is_some() { workers } else { 0 };
    let crew = Arc::new(Crew {
        store,
        runtime: tokio::runtime::Handle::current(),
        // The run loop adds the permits once the last process's leases are recovered: before
        // that, intake must not lease an execution that the recovery would release.
        permits: Arc::new(Semaphore::new(0)),
        wake: Arc::new(Notify::new()),
        queued: AtomicU64::new(0),
        shutdown,
        abort: CancellationToken::new(),
        running: Running::default(),
        work_dirs: Arc::new(WorkDirs::new(work_root, spares)),
        launch,
        next: Arc::new(NextClaim {
            owner: node_id,
            lease_ms: i64::try_from(lease.as_millis()).unwrap_or(i64::MAX),
        }),
    });
    let handle = EngineHandle { crew: crew.clone() };
    let task = tokio::spawn(async move {
        run_loop(&crew, workers).await;
        // Wait for running executions: they hold permits until they finish or park.
        let all = u32::try_from(workers).unwrap_or(u32::MAX);
        let permits = crew.permits.clone();
        if tokio::time::timeout(grace, permits.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("steps still running after the grace period are being killed");
            crew.abort.cancel();
            let _ = permits.acquire_many(all).await;
        }
    });
    (handle, task)
}

/// Recovers what the last process left, then leases runnable executions to free workers until
/// shutdown.
async fn run_loop(crew: &Arc<Crew>, workers: usize) {
    let store = crew.store.as_ref();
    match store.recover_executions(now_millis()).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            steps = n,
            "marked steps interrupted by the last shutdown as failed"
        ),
        Err(e) => tracing::error!(error = %e, "recovering executions failed"),
    }
    if let Err(e) = crew.work_dirs.prepare(store).await {
        tracing::error!(error = %e, dir = %crew.work_dirs.root().display(), "preparing the working directories failed");
    }
    crew.permits.add_permits(workers);
    let lease = Duration::from_millis(crew.next.lease_ms.max(0) as u64);
    loop {
        // The free workers are taken before the claim, so that each execution claimed has one
        // (intake cannot reserve them meanwhile); those left over are freed after it.
        if let Some(mut permits) = free_workers(&crew.permits) {
            let claimed_at = Instant::now();
            let free = permits.num_permits() as u32;
            match store
                .claim_executions(&crew.next.owner, free, now_millis(), crew.next.lease_ms)
                .await
            {
                Ok(claims) => {
                    for Claimed { claim, work } in claims {
                        // The store claims no more than asked for.
                        let Some(permit) = permits.split(1) else {
                            break;
                        };
                        taken("claim");
                        spawn_worker(crew, claim, work, claimed_at + lease, permit);
                    }
                }
                Err(StoreError::ShuttingDown) => return,
                Err(e) => tracing::error!(error = %e, "claiming executions failed"),
            }
        }
        tokio::select! {
            () = crew.shutdown.cancelled() => return,
            () = crew.wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Takes every free worker at once, if any.
fn free_workers(permits: &Arc<Semaphore>) -> Option<tokio::sync::OwnedSemaphorePermit> {
    loop {
        let free = u32::try_from(permits.available_permits()).unwrap_or(u32::MAX);
        if free == 0 {
            return None;
        }
        // Fails only when intake reserved one meanwhile: then fewer are free.
        if let Ok(taken) = permits.clone().try_acquire_many_owned(free) {
            return Some(taken);
        }
    }
}

/// Counts an execution a worker takes up, by how it came to the worker: `intake` (leased as it
/// was queued, to an idle worker), `claim` (the run loop's claim) or `end` (claimed as the
/// worker ended its last).
fn taken(by: &'static str) {
    metrics::counter!("triggerd_executions_taken_total", "by" => by).increment(1);
}

/// Registers `claim` and runs it on a task of its own under `permit` (see [`work_on`]).
fn spawn_worker(
    crew: &Arc<Crew>,
    claim: Claim,
    work: Option<Box<Work>>,
    lease_until: Instant,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let stop = register(&crew.running, &crew.abort, &claim);
    // On the engine's runtime even when intake hands the execution over from an HTTP worker:
    // the engine runs below the HTTP workers' priority, and they stop first at shutdown.
    crew.runtime.spawn(work_on(
        crew.clone(),
        Worker {
            claim,
            work,
            lease_until,
            stop,
        },
        permit,
    ));
}

/// A worker of this node reserved by intake for the execution it is about to queue (see
/// [`EngineHandle::idle_worker`]). Dropped unused, it frees the worker and wakes the run loop,
/// which may have found no free worker for work queued meanwhile.
pub struct IdleWorker {
    lease: QueueLease,
    /// Before the lease is written: the lease is counted from then, as for claims.
    reserved_at: Instant,
    /// Taken when the worker is put to work.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    crew: Arc<Crew>,
}

/// How long a lease given back at shutdown may take to be released: the engine waits for it.
const RELEASE_WITHIN: Duration = Duration::from_secs(5);

impl IdleWorker {
    /// The lease to queue the execution with.
    pub fn lease(&self) -> QueueLease {
        self.lease.clone()
    }

    /// Runs `write`, which queues the execution with [`lease`](Self::lease) (and records its
    /// event), to its end on the engine's runtime whatever becomes of the caller (a client
    /// that goes away does not take the write with it, nor the worker: once the event is
    /// committed, the worker runs the execution), and answers with what it did.
    pub async fn queue<F>(self, write: F) -> StoreResult<RecordOutcome>
    where
        F: std::future::Future<Output = StoreResult<RecordOutcome>> + Send + 'static,
    {
        let runtime = self.crew.runtime.clone();
        let task = runtime.spawn(async move {
            let outcome = write.await;
            if let Ok(RecordOutcome::Stored(event)) = &outcome {
                if let Some(id) = &event.plan_execution_id {
                    self.run(id.clone());
                }
            }
            outcome
        });
        match task.await {
            Ok(outcome) => outcome,
            // The engine's runtime is shutting down.
            Err(_) => Err(StoreError::ShuttingDown),
        }
    }

    /// Runs the execution queued, and committed, with [`lease`](Self::lease). When shutdown
    /// has begun meanwhile, its lease is released instead, so that the next start (or another
    /// node) takes it up at once.
    fn run(mut self, id: PlanExecutionId) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let claim = Claim {
            id,
            token: self.lease.token.clone(),
        };
        if self.crew.shutdown.is_cancelled() {
            let store = self.crew.store.clone();
            self.crew.runtime.spawn(async move {
                let released = tokio::time::timeout(RELEASE_WITHIN, store.release_lease(&claim));
                match released.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(execution = %claim.id, error = %e, "releasing a lease failed; it runs out instead"),
                    Err(_) => tracing::warn!(execution = %claim.id, "releasing a lease took too long; it runs out instead"),
                }
                drop(permit);
            });
            return;
        }
        taken("intake");
        let lease = Duration::from_millis(self.lease.lease_ms.max(0) as u64);
        spawn_worker(&self.crew, claim, None, self.reserved_at + lease, permit);
    }
}

impl Drop for IdleWorker {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            drop(permit);
            self.crew.wake.notify_one();
        }
    }
}

/// Enters a claim in `running`, with the token that stops its worker (a child of `abort`).
fn register(running: &Running, abort: &CancellationToken, claim: &Claim) -> CancellationToken {
    let stop = abort.child_token();
    let mut workers = running.lock();
    let previous = workers
        .running
        .insert(claim.id.to_string(), (claim.token.clone(), stop.clone()));
    if let Some((_, previous)) = previous {
        // An earlier worker here lost this lease: it stops, writing nothing.
        previous.cancel();
    }
    if workers
        .early
        .remove(claim.id.as_str())
        .is_some_and(|at| at.elapsed() < EARLY_ABORT)
    {
        stop.cancel();
    }
    stop
}

/// One worker's claim on an execution (what it shares with the others is the [`Crew`]).
struct Worker {
    claim: Claim,
    /// What the worker reads to run it, when the store read it with the claim.
    work: Option<Box<Work>>,
    /// When the lease runs out as this worker last confirmed it: counted on this node's
    /// monotonic clock from before the claim, renewal or intake's write of the lease was sent,
    /// so never later than the store's lease clock has it (whatever the two clocks read).
    lease_until: Instant,
    /// Kills the running step: a user's abort, a lost lease, or the end of the grace period.
    stop: CancellationToken,
}

/// The execution a worker claimed in the transaction that ended its last one, and when the
/// claim was sent (the lease is counted from then, as for the run loop's claims).
struct Next {
    claim: Claim,
    claimed_at: Instant,
    /// What the worker reads to run it, when the store read it with the claim.
    work: Option<Box<Work>>,
}

/// Runs one claimed execution while renewing its lease, then the next one it claimed as it
/// ended the last (while there is one), then frees the worker permit.
async fn work_on(crew: Arc<Crew>, worker: Worker, permit: tokio::sync::OwnedSemaphorePermit) {
    let Worker {
        mut claim,
        work: mut read,
        mut lease_until,
        mut stop,
    } = worker;
    let Crew {
        store,
        shutdown,
        running,
        work_dirs,
        launch,
        next,
        abort,
        ..
    } = crew.as_ref();
    let store = store.as_ref();
    let lease_ms = next.lease_ms;
    let lease = Duration::from_millis(lease_ms.max(0) as u64);
    // When the last end looked for a next execution and found none: `queued` as it was before.
    let looked = loop {
        let id = claim.id.clone();
        let work = execute(
            store,
            &claim,
            read.take(),
            stop.clone(),
            shutdown.clone(),
            work_dirs,
            launch,
        );
        let result = tokio::select! {
            r = work => r,
            lost = keep_lease(store, &claim, lease_ms, lease_until, &stop) => Err(lost),
        };
        // The end is written out of the race with the lease (no step runs any more, and the
        // write is fenced): a renewal failing just after the end committed with a claim of the
        // next execution would otherwise drop that claim, leaving the execution to wait for
        // its lease to run out.
        let mut looked = None;
        let result = match result {
            Ok(Some(end)) => {
                let next = (!shutdown.is_cancelled()).then_some(next.as_ref());
                let queued = crew.queued.load(Ordering::SeqCst);
                let written = end.write(store, &claim, next).await;
                if next.is_some() && matches!(written, Ok(None)) {
                    looked = Some(queued);
                }
                written
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        let following = match result {
            Ok(following) => following,
            Err(StoreError::LeaseLost) => {
                // Dropping the work above killed a running step; the execution is another
                // worker's now, so nothing more is written, and the lease is not released.
                stop.cancel();
                tracing::warn!(execution = %id, "lease lost; another worker took over");
                None
            }
            Err(e) => {
                tracing::error!(execution = %id, error = %e, "storing an execution's progress failed; releasing it");
                // Claimable again: a step left running is then marked interrupted.
                match store.release_lease(&claim).await {
                    Ok(()) | Err(StoreError::LeaseLost) => {}
                    Err(e) => {
                        tracing::warn!(execution = %id, error = %e, "releasing a lease failed; it runs out instead")
                    }
                }
                None
            }
        };
        {
            let mut workers = running.lock();
            if workers
                .running
                .get(id.as_str())
                .is_some_and(|(token, _)| *token == claim.token)
            {
                workers.running.remove(id.as_str());
            }
        }
        let Some(Next {
            claim: following,
            claimed_at,
            work,
        }) = following
        else {
            break looked;
        };
        if shutdown.is_cancelled() {
            // Shutdown began while the end was written: the next execution is left to the
            // next start (or another node) at once, not when its lease runs out.
            if let Err(e) = store.release_lease(&following).await {
                tracing::warn!(execution = %following.id, error = %e, "releasing a lease failed; it runs out instead");
            }
            break None;
        }
        taken("end");
        stop = register(running, abort, &following);
        claim = following;
        read = work;
        lease_until = claimed_at + lease;
    };
    drop(permit);
    // A worker is free: the loop looks for more work now, not at the next poll. Unless its
    // last end looked for the next execution in its transaction and found none, and no work
    // was queued since: there is none to find, and work queued later wakes the loop itself.
    // (Without this, while intake hands each execution to an idle worker, every execution
    // ended with a claim that found nothing.)
    if looked.is_none_or(|queued| queued != crew.queued.load(Ordering::SeqCst)) {
        crew.wake.notify_one();
    }
}

/// Renews the claim's lease whenever a third of it has passed since it was last confirmed, so
/// a long step is never claimed a second time, and kills the running step when a renewal finds
/// an abort waiting (its announcement may have been missed). A renewal that fails is retried
/// until the lease is confirmed lost or runs out by this node's last view of it
/// (`lease_until`); a renewal still unanswered then counts as failed (so a node cut off from
/// the database stops its step before another node can take the execution over). Returns only
/// then, with [`StoreError::LeaseLost`].
async fn keep_lease(
    store: &dyn Store,
    claim: &Claim,
    lease_ms: i64,
    mut lease_until: Instant,
    stop: &CancellationToken,
) -> StoreError {
    let lease = Duration::from_millis(lease_ms.max(0) as u64);
    let retry = lease / 10;
    // Two thirds of the lease left: renew.
    let mut next = lease_until
        .checked_sub(lease * 2 / 3)
        .unwrap_or(lease_until);
    loop {
        tokio::time::sleep_until(next.into()).await;
        let sent_at = Instant::now();
        // A renewal sent late (this process was stalled) still gets a fair chance: the store
        // renews a lease that ran out if nothing took the execution over meanwhile.
        let wait = lease_until
            .saturating_duration_since(sent_at)
            .max(lease / 3);
        let error = match tokio::time::timeout(wait, store.renew_lease(claim, lease_ms)).await {
            Ok(Ok(control)) => {
                lease_until = sent_at + lease;
                next = sent_at + lease / 3;
                if control == Some(Control::Abort) {
                    stop.cancel();
                }
                continue;
            }
            Ok(Err(StoreError::LeaseLost)) => return StoreError::LeaseLost,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer".to_owned(),
        };
        if Instant::now() >= lease_until {
            tracing::warn!(execution = %claim.id, error, "the lease ran out before it could be renewed");
            return StoreError::LeaseLost;
        }
        tracing::warn!(execution = %claim.id, error, "renewing a lease failed; retrying");
        next = Instant::now() + retry;
    }
}

/// Runs an execution from where it stands until it ends or parks in a `Wait` step, from what
/// the store `read` with its claim or, without that, from what it reads now. Every write is
/// made under `claim`. A normal end (or an expired approval) is returned for the
/// caller to write; every other way out has written its own.
async fn execute(
    store: &dyn Store,
    claim: &Claim,
    read: Option<Box<Work>>,
    abort: CancellationToken,
    shutdown: CancellationToken,
    work_dirs: &WorkDirs,
    launch: &Launch,
) -> Result<Option<End>, StoreError> {
    let id = &claim.id;
    let work_dir = work_dirs.of(id);
    let Some(Work {
        run: mut state,
        control,
        event,
        pipeline: stored,
    }) = (match read {
        Some(work) => Some(*work),
        None => store.load_work(id).await?,
    })
    else {
        return Ok(None);
    };
    if status::is_terminal(&state.execution.status) {
        return Ok(None);
    }
    let pipeline = match snapshot(&state, stored) {
        Ok(pipeline) => pipeline,
        Err(problem) => {
            return store
                .finish_execution(
                    claim,
                    None,
                    Vec::new(),
                    status::FAILED,
                    Some(problem),
                    now_millis(),
                    None,
                )
                .await
                .map(|_| None)
        }
    };
    // Only a Run step makes the working directory. Looking for one that was never made costs a
    // path lookup, and leaves the kernel a negative dentry, for every execution.
    let made_dir = pipeline.has_run_steps().then_some(&work_dir);
    let mut unsaved = Unsaved::default();
    if state.pipeline_spec.is_none() {
        let steps = initial_steps(&pipeline);
        unsaved.start = Some(Start {
            pipeline_spec: pipeline.to_json(),
            steps: steps.clone(),
            at: now_millis(),
        });
        state.steps = steps;
    }

    let body = event.as_ref().map_or("", |e| e.payload.as_str());
    let payload = parse_payload(body);
    let headers: Vec<(String, String)> = event
        .as_ref()
        .and_then(|e| serde_json::from_str::<serde_json::Map<_, _>>(e.headers.get()).ok())
        .map(|m| {
            m.into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let plan = id.as_str().to_owned();
    let trigger_id = state.execution.trigger.clone().unwrap_or_default();
    let event_id = state.execution.event_id.clone().unwrap_or_default();
    let trigger = TriggerContext {
        payload: &payload,
        headers: &headers,
        event_id: &event_id,
        trigger_identifier: &trigger_id,
        pipeline_identifier: pipeline.identifier.as_str(),
        pipeline_name: &pipeline.name,
        execution_id: Some(&plan),
    };
    let vars = variables(&pipeline, &state.execution.runtime_input, &trigger);

    let mut steps = state.steps.clone();
    let mut failure: Option<String> = None;
    // The control request read with the execution, for the first step when nothing was
    // written before it (a request may have come meanwhile); otherwise it is read again. So it
    // is too when the worker was stopped before it began: an abort may have been announced
    // after the read (one read with the claim, before the worker registered).
    let mut control = (!abort.is_cancelled()).then_some(control);
    for index in 0..steps.len() {
        let (si, ji) = (
            steps[index].stage_index as usize,
            steps[index].step_index as usize,
        );
        let Some(step) = pipeline.stages.get(si).and_then(|s| s.steps.get(ji)) else {
            continue;
        };
        if failure.is_some() {
            if steps[index].status == status::NOT_STARTED {
                steps[index].status = status::SKIPPED.into();
                unsaved.steps.push(steps[index].clone());
            }
            continue;
        }
        // A Run or Http step writes what was put off with its own start (`run_with_retries`).
        if matches!(step.spec, StepSpec::Approval { .. }) && unsaved.save(store, claim).await? {
            control = None;
        }
        // A Run or Http step already `Running` was started by a worker that is gone: it is
        // never run a second time.
        if steps[index].status == status::RUNNING
            && matches!(step.spec, StepSpec::Run { .. } | StepSpec::Http { .. })
        {
            let record = &mut steps[index];
            record.status = status::FAILED.into();
            record.ended_at = Some(now_millis());
            record.message = Some("interrupted".into());
            store.update_step(claim, record.clone()).await?;
            control = None;
        }
        match steps[index].status.as_str() {
            status::SUCCESS | status::SKIPPED => continue,
            status::FAILED => {
                if !step.continue_on_failure {
                    failure = Some(failure_text(&steps[index]));
                }
                continue;
            }
            _ => {}
        }
        let pending = match control.take() {
            Some(read) => read,
            None => store.pending_control(id).await?,
        };
        match pending {
            Some(Control::Abort) => {
                unsaved.save(store, claim).await?;
                return abort_now(store, claim, &mut steps, work_dirs, made_dir)
                    .await
                    .map(|()| None);
            }
            Some(Control::Pause) => {
                unsaved.save(store, claim).await?;
                return store
                    .hold_execution(claim, status::PAUSED, None)
                    .await
                    .map(|()| None);
            }
            _ if shutdown.is_cancelled() || abort.is_cancelled() => {
                // Shutting down: start no new step; the rest runs after the next start.
                unsaved.save(store, claim).await?;
                return store
                    .park_execution(claim, now_millis())
                    .await
                    .map(|()| None);
            }
            _ => {}
        }
        if let StepSpec::Approval { .. } = &step.spec {
            let record = &mut steps[index];
            let now = now_millis();
            if record.status == status::NOT_STARTED {
                record.status = status::APPROVAL_WAITING.into();
                record.started_at = Some(now);
                record.attempt = 1;
                store.update_step(claim, record.clone()).await?;
            }
            let started = record.started_at.unwrap_or(now);
            let expires = step.timeout.map(|t| started + t.as_millis() as i64);
            if expires.is_none_or(|at| at > now) {
                return store
                    .hold_execution(claim, status::APPROVAL_WAITING, expires)
                    .await
                    .map(|()| None);
            }
            record.status = status::EXPIRED.into();
            record.ended_at = Some(now);
            record.message = Some("nobody approved or rejected it before its timeout".into());
            unsaved.steps.push(record.clone());
            let message = format!("Approval step {} expired", step.identifier);
            unsaved.steps.extend(skip_rest(&mut steps));
            work_dirs.end(made_dir);
            return Ok(Some(End {
                unsaved,
                status: status::EXPIRED,
                failure: Some(message),
            }));
        }
        if let StepSpec::Wait { duration } = &step.spec {
            let record = &mut steps[index];
            let now = now_millis();
            if record.status == status::NOT_STARTED {
                record.status = status::RUNNING.into();
                record.started_at = Some(now);
                record.attempt = 1;
                // A wait that is already over needs no separate "running" write.
                if !duration.is_zero() {
                    unsaved.save(store, claim).await?;
                    store.update_step(claim, record.clone()).await?;
                }
            }
            let until = record.started_at.unwrap_or(now) + duration.as_millis() as i64;
            if until > now {
                unsaved.save(store, claim).await?;
                return store.park_execution(claim, until).await.map(|()| None);
            }
            record.status = status::SUCCESS.into();
            record.ended_at = Some(now);
            unsaved.steps.push(record.clone());
            continue;
        }
        let stage = pipeline.stages[si].identifier.as_str().to_owned();
        let ended = run_with_retries(
            store,
            claim,
            step,
            &mut steps,
            index,
            &mut unsaved,
            StepContext {
                trigger: &trigger,
                sequence_id: state.execution.run_sequence,
                variables: &vars,
                stage: &stage,
                work_dir: &work_dir,
                work_dirs,
                launch,
                body,
            },
            &abort,
        )
        .await?;
        match ended {
            StepEnd::Aborted => {
                if store.pending_control(id).await? == Some(Control::Abort) {
                    return abort_now(store, claim, &mut steps, work_dirs, made_dir)
                        .await
                        .map(|()| None);
                }
                // Shutting down: the step stays `Running` and is marked interrupted at the
                // next start.
                return Ok(None);
            }
            StepEnd::Failed if !step.continue_on_failure => {
                failure = Some(failure_text(&steps[index]));
            }
            _ => {}
        }
    }
    work_dirs.end(made_dir);
    let final_status = if failure.is_some() {
        status::FAILED
    } else {
        status::SUCCESS
    };
    Ok(Some(End {
        unsaved,
        status: final_status,
        failure,
    }))
}

/// How an execution ended, left for [`work_on`] to write (see there).
struct End {
    unsaved: Unsaved,
    status: &'static str,
    failure: Option<String>,
}

impl End {
    /// Writes the end with what was put off, and claims the next execution with `next`.
    async fn write(
        self,
        store: &dyn Store,
        claim: &Claim,
        next: Option<&NextClaim>,
    ) -> Result<Option<Next>, StoreError> {
        self.unsaved
            .finish(store, claim, self.status, self.failure, next)
            .await
    }
}

/// Writes put off until the next write that must follow them, most often the one that ends
/// the execution, instead of a commit each: the execution's start, and steps that ended
/// without side effects (a Wait already over, a step skipped after a failure). A pipeline of
/// such steps is then started and ended in one commit, and a Run or Http step's start is
/// written with the execution's (a one-step Run pipeline: three commits, four before the
/// twenty-second sitting of issue 13). Lost in a crash, they are simply decided again. The end
/// of a Run or Http step is not put off: lost in a crash, or with a failed write of the
/// execution's end, it would leave the step `Running`, failed as interrupted when the
/// execution is taken up again, though it ran to its end.
#[derive(Default)]
struct Unsaved {
    start: Option<Start>,
    steps: Vec<StepRecord>,
}

impl Unsaved {
    /// Stores what was put off, before a write that must follow it; true when it wrote
    /// anything.
    async fn save(&mut self, store: &dyn Store, claim: &Claim) -> Result<bool, StoreError> {
        let wrote = self.start.is_some() || !self.steps.is_empty();
        if let Some(mut start) = self.start.take() {
            // The steps' records go in with the start: one write.
            for step in self.steps.drain(..) {
                let same = |s: &&mut StepRecord| {
                    (s.stage_index, s.step_index) == (step.stage_index, step.step_index)
                };
                match start.steps.iter_mut().find(same) {
                    Some(s) => *s = step,
                    None => start.steps.push(step),
                }
            }
            if !store
                .start_execution(claim, start.pipeline_spec, start.steps, start.at)
                .await?
            {
                return Err(AlreadyStarted::error());
            }
        }
        for step in self.steps.drain(..) {
            store.update_step(claim, step).await?;
        }
        Ok(wrote)
    }

    /// Ends the execution with a terminal `status`, writing what was put off with it, and
    /// claims the next execution with `next`.
    async fn finish(
        self,
        store: &dyn Store,
        claim: &Claim,
        status: &str,
        failure: Option<String>,
        next: Option<&NextClaim>,
    ) -> Result<Option<Next>, StoreError> {
        let claimed_at = Instant::now();
        let claim = store
            .finish_execution(
                claim,
                self.start,
                self.steps,
                status,
                failure,
                now_millis(),
                next,
            )
            .await?;
        Ok(claim.map(|Claimed { claim, work }| Next {
            claim,
            claimed_at,
            work,
        }))
    }
}

/// Records an abort: the running step `Aborted`, every step not started `Skipped`, the
/// execution `Aborted`.
async fn abort_now(
    store: &dyn Store,
    claim: &Claim,
    steps: &mut [StepRecord],
    work_dirs: &WorkDirs,
    work_dir: Option<&PathBuf>,
) -> Result<(), StoreError> {
    let now = now_millis();
    for step in steps.iter_mut() {
        if step.status == status::RUNNING {
            step.status = status::ABORTED.into();
            step.ended_at = Some(now);
            step.message = Some("aborted".into());
            store.update_step(claim, step.clone()).await?;
        }
    }
    let skipped = skip_rest(steps);
    work_dirs.end(work_dir);
    store
        .finish_execution(
            claim,
            None,
            skipped,
            status::ABORTED,
            Some("Aborted by a user".into()),
            now,
            None,
        )
        .await
        .map(|_| ())
}

/// Marks every step not started `Skipped`; returns them, to be stored with the write that
/// ends the execution.
fn skip_rest(steps: &mut [StepRecord]) -> Vec<StepRecord> {
    let mut skipped = Vec::new();
    for step in steps.iter_mut() {
        if step.status == status::NOT_STARTED {
            step.status = status::SKIPPED.into();
            skipped.push(step.clone());
        }
    }
    skipped
}

fn failure_text(step: &StepRecord) -> String {
    format!(
        "Step {} of stage {} failed: {}",
        step.step,
        step.stage,
        step.message.as_deref().unwrap_or("failed")
    )
}

/// The pipeline an execution runs: its snapshot, or (when it has not started) the pipeline as
/// stored now (`stored`, read with it). An error when there is none to run.
fn snapshot(state: &RunState, stored: Option<PipelineRecord>) -> Result<PipelineSpec, String> {
    let x = &state.execution;
    let spec = match (&state.pipeline_spec, &stored) {
        (Some(spec), _) => spec,
        (None, Some(stored)) => &stored.spec,
        (None, None) => {
            crate::domain::ids::Identifier::parse(&x.pipeline, "pipeline")
                .map_err(|e| e.to_string())?;
            return Err(format!("Pipeline {} no longer exists", x.pipeline));
        }
    };
    PipelineSpec::from_value(spec)
        .map_err(|e| format!("Pipeline {} cannot be run: {e}", x.pipeline))
}

/// Every step of the pipeline, not started (also what a queued execution shows).
pub fn initial_steps(pipeline: &PipelineSpec) -> Vec<StepRecord> {
    pipeline
        .stages
        .iter()
        .enumerate()
        .flat_map(|(si, stage)| {
            stage
                .steps
                .iter()
                .enumerate()
                .map(move |(ji, step)| StepRecord {
                    stage_index: si as u32,
                    step_index: ji as u32,
                    stage: stage.identifier.to_string(),
                    stage_name: stage.name.clone(),
                    step: step.identifier.to_string(),
                    step_name: step.name.clone(),
                    step_type: step.spec.type_name().into(),
                    status: status::NOT_STARTED.into(),
                    attempt: 0,
                    started_at: None,
                    ended_at: None,
                    outputs: BTreeMap::new(),
                    message: None,
                    log: None,
                })
        })
        .collect()
}

/// What a step needs besides itself.
struct StepContext<'a> {
    trigger: &'a TriggerContext<'a>,
    sequence_id: i64,
    variables: &'a BTreeMap<String, serde_json::Value>,
    stage: &'a str,
    work_dir: &'a PathBuf,
    work_dirs: &'a WorkDirs,
    /// See [`EngineOptions::launch`].
    launch: &'a Launch,
    body: &'a str,
}

/// How a step's attempts ended.
enum StepEnd {
    Succeeded,
    Failed,
    Aborted,
}

/// Runs a step up to `1 + retries` times, storing each attempt.
#[allow(clippy::too_many_arguments)]
async fn run_with_retries(
    store: &dyn Store,
    claim: &Claim,
    step: &Step,
    steps: &mut [StepRecord],
    index: usize,
    unsaved: &mut Unsaved,
    cx: StepContext<'_>,
    abort: &CancellationToken,
) -> Result<StepEnd, StoreError> {
    loop {
        let mut record = steps[index].clone();
        record.status = status::RUNNING.into();
        record.attempt += 1;
        record.started_at = Some(now_millis());
        record.ended_at = None;
        record.message = None;
        // Committed before the step runs, with what was put off (the execution's start, steps
        // ended without side effects): a step found `Running` after a crash is never run again.
        unsaved.steps.push(record.clone());
        unsaved.save(store, claim).await?;
        steps[index] = record.clone();

        let live = live_log::Target {
            store,
            claim,
            stage: &record.stage,
            step: &record.step,
            attempt: record.attempt,
        };
        let (ok, message, outputs, log) = run_step(step, steps, &cx, abort, live).await;
        if abort.is_cancelled() && !ok {
            // Left `Running` for [`abort_now`] (a user's abort) or for the next start (shutdown).
            record.log = log;
            store.update_step(claim, record.clone()).await?;
            steps[index] = record;
            return Ok(StepEnd::Aborted);
        }
        record.status = if ok { status::SUCCESS } else { status::FAILED }.into();
        record.ended_at = Some(now_millis());
        record.message = message;
        record.outputs = outputs;
        record.log = log;
        store.update_step(claim, record.clone()).await?;
        steps[index] = record;
        if ok {
            return Ok(StepEnd::Succeeded);
        }
        if steps[index].attempt > step.retries {
            return Ok(StepEnd::Failed);
        }
    }
}

type StepOutcome = (
    bool,
    Option<String>,
    BTreeMap<String, String>,
    Option<String>,
);

async fn run_step(
    step: &Step,
    steps: &[StepRecord],
    cx: &StepContext<'_>,
    abort: &CancellationToken,
    live: live_log::Target<'_>,
) -> StepOutcome {
    let resolver = ExecutionContext {
        trigger: cx.trigger,
        sequence_id: cx.sequence_id,
        variables: cx.variables,
        stage: cx.stage,
        steps,
    };
    match &step.spec {
        StepSpec::Run {
            shell,
            command,
            env,
        } => {
            let payload_file =
                match cx
                    .work_dirs
                    .make(cx.work_dir, cx.launch.user.as_ref(), cx.body)
                {
                    Ok(path) => path,
                    Err(e) => return failed(e.to_string()),
                };
            let mut vars: Vec<(String, String)> = env
                .iter()
                .map(|(k, v)| {
                    let value = Template::parse(v)
                        .map(|t| t.render(&resolver).text)
                        .unwrap_or_default();
                    (k.clone(), value)
                })
                .collect();
            vars.extend([
                (
                    "TRIGGERD_EXECUTION_ID".into(),
                    cx.trigger.execution_id.unwrap_or_default().into(),
                ),
                (
                    "TRIGGERD_PIPELINE".into(),
                    cx.trigger.pipeline_identifier.into(),
                ),
                ("TRIGGERD_STAGE".into(), cx.stage.into()),
                ("TRIGGERD_STEP".into(), step.identifier.to_string()),
                ("TRIGGERD_EVENT_ID".into(), cx.trigger.event_id.into()),
                (
                    "TRIGGERD_PAYLOAD_FILE".into(),
                    payload_file.display().to_string(),
                ),
            ]);
            let (sink, source) = run::LiveSink::channel(live_log::CHANNEL_CHUNKS);
            let run = run::run(
                RunRequest {
                    shell: *shell,
                    command: command.clone(),
                    env: vars,
                    work_dir: cx.work_dir.clone(),
                    output_file: cx
                        .work_dir
                        .join(format!("{}.{}.output", cx.stage, step.identifier)),
                    timeout: step.timeout.unwrap_or(DEFAULT_RUN_TIMEOUT),
                    max_log_bytes: MAX_LOG_BYTES,
                    live: Some(sink),
                    spawner: cx.launch.spawner.clone(),
                    user: cx.launch.user.clone(),
                },
                abort.child_token(),
            );
            let (result, ()) = tokio::join!(run, live_log::pump(source, live));
            if !result.swept {
                cx.work_dirs.keep_none_of(cx.work_dir);
            }
            let ok = matches!(result.status, RunStatus::Succeeded);
            (
                ok,
                (!ok).then_some(result.message),
                result.outputs,
                Some(result.log),
            )
        }
        StepSpec::Http {
            method,
            url,
            headers,
            body,
            expected_status,
            timeout,
        } => {
            let render = |text: &str| {
                Template::parse(text)
                    .map(|t| t.render(&resolver).text)
                    .unwrap_or_default()
            };
            // Values land in the URL encoded for their component (never as path, query or
            // fragment syntax), as they never reach a Run step's shell as code.
            let url = match Template::parse(url)
                .map_err(|e| e.to_string())
                .and_then(|t| t.render_url(&resolver))
            {
                Ok(rendered) => rendered.text,
                Err(why) => return failed(format!("the url cannot be built: {why}")),
            };
            let result = http_step::call(
                http_step::client(),
                http_step::HttpRequest {
                    method: method.clone(),
                    url,
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.clone(), render(v)))
                        .collect(),
                    body: body.as_deref().map(render),
                    expected_status: expected_status.clone(),
                    timeout: timeout.or(step.timeout).unwrap_or(DEFAULT_HTTP_TIMEOUT),
                },
                abort.child_token(),
            )
            .await;
            (
                result.ok,
                (!result.ok).then(|| result.message.clone()),
                result.outputs,
                Some(format!("{}\n", result.message)),
            )
        }
        StepSpec::Wait { .. } | StepSpec::Approval { .. } => (true, None, BTreeMap::new(), None),
    }
}

fn failed(message: String) -> StepOutcome {
    (false, Some(message), BTreeMap::new(), None)
}

/// Sets the CPU priority of `target`, a thread of this process or a child process, `nice` steps
/// below this process's own (at most 19). The engine's threads and the Run steps run there
/// (`engine_nice`), so that under load the HTTP workers are served first.
pub fn lower_priority(target: rustix::process::Pid, nice: i32) -> std::io::Result<()> {
    use rustix::process::{getpid, getpriority_process, setpriority_process};
    let own = getpriority_process(Some(getpid()))?;
    setpriority_process(Some(target), (own + nice).min(19))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An abort announced for an execution this process does not run yet (its worker claimed
    /// it and read it with the claim, before the request) stops the worker that registers it
    /// next, once; a later worker of the same execution runs, and an abort of a running one
    /// stops it at once.
    #[test]
    fn an_abort_announced_before_its_worker_registers_stops_it() {
        let running = Running::default();
        let abort = |id: &PlanExecutionId| running.lock().abort(id);
        let claim = || Claim {
            id: PlanExecutionId::parse("AaJMbQJs8fOIPz-wN0ZfEQ").unwrap(),
            token: LeaseToken::generate(),
        };
        let parent = CancellationToken::new();

        assert!(!abort(&claim().id), "not running here");
        let first = register(&running, &parent, &claim());
        assert!(first.is_cancelled(), "stopped as it registers");

        let second = register(&running, &parent, &claim());
        assert!(!second.is_cancelled(), "the abort stopped one worker only");
        assert!(abort(&claim().id), "running here");
        assert!(second.is_cancelled());
        assert!(running.lock().early.is_empty());
    }
}
