//! What the execution engine stores (DESIGN §6.3): the queue, leases, the pipeline snapshot
//! and one row per step. A separate trait from [`super::Store`] (which requires it) so the
//! engine's SQL sits in one file per backend.
//!
//! # Leases
//!
//! A worker runs an execution under a [`Claim`]. Every write it makes as it goes (the methods
//! that take a claim) is fenced: in the same transaction, the backend checks that the
//! execution still carries the claim's token and otherwise changes nothing and fails with
//! [`StoreError::LeaseLost`](super::StoreError::LeaseLost). So a worker whose lease ran out and
//! was claimed again, on another node or by another worker of its own, can neither overwrite
//! the new owner's state nor start a step twice.
//!
//! The token is the fence, not the expiry. The expiry only makes an execution claimable (and
//! lets a control request act on it directly); whatever takes it over that way replaces or
//! clears the token in the same transaction (a claim, an abort, a pause). A worker whose lease
//! ran out while nothing took it over (a stalled process, a slow disk) therefore renews it and
//! goes on, instead of failing a step that nobody else touched.
//!
//! Lease times are read from the *lease clock*, never passed in: the node's clock on SQLite
//! (one process owns the database), the database server's clock on PostgreSQL (shared by
//! nodes whose clocks may disagree, which must not steal each other's leases). The `now`
//! arguments are timestamps to record and, for claims, the time wake-ups are compared to.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{Execution, Millis, Page, PipelineRecord, StoreResult, WebhookEvent};
use crate::domain::ids::{EventId, Identifier, LeaseToken, PlanExecutionId, ProjectRef};

/// Statuses of executions, stages and steps (DESIGN §6.4).
pub mod status {
    /// Waiting for a worker.
    pub const QUEUED: &str = "Queued";
    /// Being worked on (or waiting in a `Wait` step).
    pub const RUNNING: &str = "Running";
    /// Finished well.
    pub const SUCCESS: &str = "Success";
    /// Finished badly.
    pub const FAILED: &str = "Failed";
    /// Stopped by a user.
    pub const ABORTED: &str = "Aborted";
    /// A stage or step that has not begun.
    pub const NOT_STARTED: &str = "NotStarted";
    /// A stage or step that will not run because an earlier one failed.
    pub const SKIPPED: &str = "Skipped";
    /// Stopped before its next step until resumed.
    pub const PAUSED: &str = "Paused";
    /// An Approval step waits for a person.
    pub const APPROVAL_WAITING: &str = "ApprovalWaiting";
    /// An Approval step was rejected.
    pub const APPROVAL_REJECTED: &str = "ApprovalRejected";
    /// An Approval step timed out.
    pub const EXPIRED: &str = "Expired";
    /// The execution could not be run at all.
    pub const ERRORED: &str = "Errored";

    /// Every status an execution (not a stage or step) can have, in lifecycle order: the values
    /// `GET P/executions?status=` accepts.
    pub const EXECUTION: &[&str] = &[
        QUEUED,
        RUNNING,
        PAUSED,
        APPROVAL_WAITING,
        SUCCESS,
        FAILED,
        ABORTED,
        EXPIRED,
        APPROVAL_REJECTED,
        ERRORED,
    ];

    /// Whether an execution in this status will not change again.
    pub fn is_terminal(status: &str) -> bool {
        matches!(
            status,
            SUCCESS | FAILED | ABORTED | EXPIRED | APPROVAL_REJECTED | ERRORED
        )
    }
}

/// The `'static` form of an execution status, for stage nodes.
fn static_status(s: &str) -> &'static str {
    match s {
        status::ABORTED => status::ABORTED,
        status::EXPIRED => status::EXPIRED,
        status::APPROVAL_REJECTED => status::APPROVAL_REJECTED,
        _ => status::FAILED,
    }
}

/// A stage's state rolled up from its steps (the status summary's stage nodes, and the
/// outbox's stage events).
#[derive(Debug, Clone, PartialEq)]
pub struct StageRollup {
    /// The stage identifier.
    pub id: String,
    /// The stage name.
    pub name: String,
    /// Its [`status`] value.
    pub status: &'static str,
    /// When its first step started.
    pub start: Option<Millis>,
    /// When its last step ended, once it is done.
    pub end: Option<Millis>,
    /// Why it failed.
    pub failure: Option<String>,
}

impl StageRollup {
    /// Whether some step of it has begun.
    pub fn started(&self) -> bool {
        !matches!(self.status, status::NOT_STARTED | status::SKIPPED)
    }

    /// Whether it will not change again.
    pub fn done(&self) -> bool {
        !matches!(
            self.status,
            status::RUNNING | status::NOT_STARTED | status::APPROVAL_WAITING | status::PAUSED
        )
    }
}

/// Groups the steps by stage and rolls their statuses up: a step that failed without
/// `continueOnFailure` (or was aborted, expired or rejected) gives its stage that status; a
/// waiting approval makes it `ApprovalWaiting`; a stage with a running step, or with some steps
/// done and others not, is running; one whose steps all ended is a success; one never begun is
/// `NotStarted` (or `Skipped` when its steps were skipped).
pub fn stage_rollups(r: &RunState) -> Vec<StageRollup> {
    // Read from the snapshot's JSON directly: this runs inside writes (the outbox), where
    // parsing the whole pipeline again would cost more than the rest.
    let continues = |stage: u32, step: u32| {
        r.pipeline_spec
            .as_ref()
            .and_then(|spec| {
                spec.pointer(&format!(
                    "/pipeline/stages/{stage}/stage/steps/{step}/step/continueOnFailure"
                ))
            })
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    };
    let mut nodes: Vec<StageRollup> = Vec::new();
    let mut start = 0;
    while start < r.steps.len() {
        let stage_index = r.steps[start].stage_index;
        let end = r.steps[start..]
            .iter()
            .position(|s| s.stage_index != stage_index)
            .map_or(r.steps.len(), |n| start + n);
        let steps = &r.steps[start..end];
        let failed = steps.iter().find(|s| match s.status.as_str() {
            status::FAILED => !continues(s.stage_index, s.step_index),
            status::ABORTED | status::EXPIRED | status::APPROVAL_REJECTED => true,
            _ => false,
        });
        let status = if let Some(step) = failed {
            match step.status.as_str() {
                status::ABORTED => status::ABORTED,
                status::EXPIRED => status::EXPIRED,
                status::APPROVAL_REJECTED => status::APPROVAL_REJECTED,
                _ => status::FAILED,
            }
        } else if steps.iter().any(|s| s.status == status::APPROVAL_WAITING) {
            status::APPROVAL_WAITING
        } else if steps.iter().all(|s| s.status == status::NOT_STARTED) {
            status::NOT_STARTED
        } else if steps.iter().all(|s| s.status == status::SKIPPED) {
            status::SKIPPED
        } else if steps
            .iter()
            .any(|s| s.status == status::RUNNING || s.status == status::NOT_STARTED)
        {
            status::RUNNING
        } else {
            status::SUCCESS
        };
        let execution_status = r.execution.status.as_str();
        let mixed = steps.iter().any(|s| s.status == status::SKIPPED)
            && steps.iter().any(|s| s.status != status::SKIPPED);
        let status = match (status, execution_status) {
            // Stopped between two of its steps: the stage shares the execution's fate.
            (status::SUCCESS, x) if mixed && status::is_terminal(x) && x != status::SUCCESS => {
                static_status(x)
            }
            (status::RUNNING, status::PAUSED) => status::PAUSED,
            (s, _) => s,
        };
        let done = !matches!(
            status,
            status::RUNNING | status::NOT_STARTED | status::APPROVAL_WAITING | status::PAUSED
        );
        nodes.push(StageRollup {
            id: steps[0].stage.clone(),
            name: steps[0].stage_name.clone(),
            status,
            start: steps.iter().filter_map(|s| s.started_at).min(),
            end: if done {
                steps.iter().filter_map(|s| s.ended_at).max()
            } else {
                None
            },
            failure: failed.map(|s| {
                format!(
                    "Step {} failed: {}",
                    s.step,
                    s.message.as_deref().unwrap_or("failed")
                )
            }),
        });
        start = end;
    }
    nodes
}

/// One step of an execution, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// Position of its stage in the pipeline.
    pub stage_index: u32,
    /// Position in its stage.
    pub step_index: u32,
    /// The stage identifier.
    pub stage: String,
    /// The stage name.
    pub stage_name: String,
    /// The step identifier.
    pub step: String,
    /// The step name.
    pub step_name: String,
    /// `Run`, `Http`, `Approval` or `Wait`.
    pub step_type: String,
    /// [`status`] value.
    pub status: String,
    /// Attempts made so far (retries count).
    pub attempt: u32,
    /// When the current attempt started.
    pub started_at: Option<Millis>,
    /// When it ended.
    pub ended_at: Option<Millis>,
    /// `KEY=VALUE` outputs, readable as `<+steps.ID.output.KEY>`.
    pub outputs: BTreeMap<String, String>,
    /// Why it failed, or a note.
    pub message: Option<String>,
    /// Captured output (bounded), for Run steps.
    pub log: Option<String>,
}

impl StepRecord {
    /// `begun` with each step of `ended` in place of the one at its position: the steps of an
    /// execution started and ended in one write, each written once, as it ended.
    pub(crate) fn with_ends(begun: &[StepRecord], ended: &[StepRecord]) -> Vec<StepRecord> {
        let mut steps = begun.to_vec();
        for end in ended {
            let at = (end.stage_index, end.step_index);
            match steps
                .iter_mut()
                .find(|s| (s.stage_index, s.step_index) == at)
            {
                Some(step) => *step = end.clone(),
                None => steps.push(end.clone()),
            }
        }
        steps
    }
}

/// One line of a step's live log (DESIGN §12).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct LogLine {
    /// Order within the step: `(attempt << 32) + line number`.
    pub seq: i64,
    /// `stdout`, `stderr`, or `triggerd` for the runner's own notes.
    pub stream: String,
    /// When the line was read, epoch milliseconds.
    pub ts: Millis,
    /// The line, without its newline (lossy UTF-8).
    pub text: String,
}

/// An execution as a worker runs it.
#[derive(Debug, Clone)]
pub struct RunState {
    /// The execution row.
    pub execution: Execution,
    /// The pipeline snapshot (`{"pipeline": {...}}`), once started.
    pub pipeline_spec: Option<serde_json::Value>,
    /// Its steps in order (empty before it starts).
    pub steps: Vec<StepRecord>,
    /// Why it failed, when it did.
    pub failure_message: Option<String>,
}

impl RunState {
    /// The event that fired it, if any (and if its stored id parses).
    pub fn event_id(&self) -> Option<EventId> {
        self.execution.event_id.as_deref().and_then(EventId::parse)
    }

    /// Until it has started: the pipeline it will run (if its stored identifier parses), to
    /// be read as stored now.
    pub fn pipeline_to_start(&self) -> Option<Identifier> {
        if self.pipeline_spec.is_some() {
            return None;
        }
        Identifier::parse(&self.execution.pipeline, "pipeline").ok()
    }
}

/// What a worker reads to run a claimed execution (see [`Store::load_work`](super::Store::load_work)).
#[derive(Debug, Clone)]
pub struct Work {
    /// The execution, as [`ExecutionStore::load_run`] reads it.
    pub run: RunState,
    /// The control request waiting for it, as [`ExecutionStore::pending_control`] reads it.
    pub control: Option<Control>,
    /// The event that fired it, if any.
    pub event: Option<WebhookEvent>,
    /// Until it has started: its pipeline as stored now (`None` when it no longer exists or
    /// its identifier does not parse).
    pub pipeline: Option<PipelineRecord>,
}

/// An execution's start (what [`ExecutionStore::start_execution`] stores), written instead
/// with the execution's end when nothing in between had to be stored: a pipeline of steps
/// without side effects then costs one commit, not two.
#[derive(Debug, Clone)]
pub struct Start {
    /// The pipeline snapshot (`{"pipeline": {...}}`).
    pub pipeline_spec: serde_json::Value,
    /// Every step, not started.
    pub steps: Vec<StepRecord>,
    /// When it started.
    pub at: Millis,
}

/// Why a start was refused: the execution had started already. Under a lease that holds this
/// never happens; the worker lets the execution go, to be claimed again and run from its
/// stored snapshot.
#[derive(Debug, thiserror::Error)]
#[error("the execution had started already")]
pub struct AlreadyStarted;

impl AlreadyStarted {
    /// The store error a refused start is reported as.
    pub fn error() -> super::StoreError {
        super::StoreError::db("starting an execution", AlreadyStarted)
    }
}

/// One claim of an execution by a worker (see [Leases](self#leases)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The execution.
    pub id: PlanExecutionId,
    /// This claim's lease token; the next claim of the execution gets another.
    pub token: LeaseToken,
}

/// An execution claimed ([`ExecutionStore::claim_executions`]), or claimed in the transaction
/// that ended another ([`ExecutionStore::finish_execution`]).
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The claim.
    pub claim: Claim,
    /// What its worker reads to run it, when the store read it with the claim (PostgreSQL,
    /// for an execution that had not started: one read fewer on the database for each);
    /// otherwise the worker reads it itself ([`Store::load_work`](super::Store::load_work)).
    pub work: Option<Box<Work>>,
}

/// Who claims the next execution in the transaction that ends one (see
/// [`ExecutionStore::finish_execution`]), and for how long, as in
/// [`ExecutionStore::claim_executions`].
#[derive(Debug, Clone)]
pub struct NextClaim {
    /// This node, recorded for operators.
    pub owner: String,
    /// The lease, from the claim by the lease clock.
    pub lease_ms: i64,
}

/// The lease an execution is queued with when an idle worker of the node that queues it will
/// run it ([`NewExecution::lease`](super::NewExecution::lease)): stored with the execution, as a
/// claim would store it, so no claim is written for it, and no other worker takes it up while
/// the lease lasts. Should the node die before its worker starts, the lease runs out and
/// another node (or the next start) claims the execution.
#[derive(Debug, Clone)]
pub struct QueueLease {
    /// This node, recorded for operators.
    pub owner: String,
    /// The worker's token, as a claim's ([`Claim::token`]).
    pub token: LeaseToken,
    /// The lease, from the write by the lease clock.
    pub lease_ms: i64,
}

/// A control request (`abort`, `pause`, `resume`, `approve`, `reject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop now: kill a running step, skip the rest.
    Abort,
    /// Stop before the next step.
    Pause,
    /// Continue a paused execution.
    Resume,
    /// Approve the Approval step it waits on.
    Approve,
    /// Reject the Approval step it waits on.
    Reject,
}

impl Control {
    /// The control a route's `{action}` names: `abort`, `pause`, `resume`, `approve` or
    /// `reject`.
    pub fn from_action(action: &str) -> Option<Control> {
        match action {
            "abort" => Some(Control::Abort),
            "pause" => Some(Control::Pause),
            "resume" => Some(Control::Resume),
            "approve" => Some(Control::Approve),
            "reject" => Some(Control::Reject),
            _ => None,
        }
    }
}

/// What a control request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlOutcome {
    /// Applied in the database: no worker held the execution.
    Applied,
    /// A worker holds the execution; it applies the request (for abort: the caller should also
    /// cancel the running step).
    Signalled,
    /// Not possible in the execution's current status (given).
    NotAllowed(String),
    /// No such execution.
    Missing,
}

/// A manual run to queue (`POST P/pipelines/{pipe}/execute`).
#[derive(Debug, Clone)]
pub struct NewManualExecution {
    /// Where it runs.
    pub scope: ProjectRef,
    /// The pipeline.
    pub pipeline: Identifier,
    /// The pipeline's name now.
    pub pipeline_name: String,
    /// The resolved runtime input YAML.
    pub runtime_input: String,
}

/// Filters of `GET P/executions`.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    /// `pipelineIdentifier`.
    pub pipeline: Option<String>,
    /// `status`: one of [`status::EXECUTION`], as spelled there.
    pub status: Option<&'static str>,
}

/// A project by its (account, org, project) ids, in the order of the listing index of webhook
/// events: where a purge of old events goes on (see [`ExecutionStore::purge_before`]). Ids are
/// never empty, so the default, `('', '', '')`, comes before every project.
pub type ProjectKey = (String, String, String);

/// How many projects one purge of old webhook events visits at most, so that a database of many
/// projects does not hold a write for long; the next purge goes on from where it stopped.
/// Events have no index of their times (it cost every stored event one more B-tree insert), but
/// each project's old events lead its range of the listing index, and the projects are found by
/// skipping from one to the next in that index.
pub const PURGE_PROJECTS: usize = 256;

/// What one [`ExecutionStore::purge_before`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Executions deleted.
    pub executions: u64,
    /// Webhook events deleted.
    pub events: u64,
    /// The walk over the projects' events stopped before its end (its batch filled, or it
    /// visited [`PURGE_PROJECTS`] projects): the next purge goes on from there. False once it
    /// has gone past the last project.
    pub more_events: bool,
}

impl Purged {
    /// A purge of `executions` and `events`, whose walk over the projects was given `batch`
    /// events and left its cursor at `from`.
    pub fn new(executions: u64, events: u64, batch: u32, from: &ProjectKey) -> Self {
        Self {
            executions,
            events,
            more_events: events >= u64::from(batch) || *from != ProjectKey::default(),
        }
    }
}

/// The engine's storage.
#[async_trait]
pub trait ExecutionStore: Send + Sync + 'static {
    /// Queues a manual execution (`MANUAL`, no event), numbered by the pipeline's counter:
    /// concurrent runs of one pipeline get distinct, consecutive numbers.
    async fn queue_execution(&self, new: NewManualExecution) -> StoreResult<Execution>;

    /// A project's executions, newest first, optionally of one pipeline or in one status.
    async fn list_executions(
        &self,
        p: &ProjectRef,
        filter: &ExecutionFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<Execution>>;

    /// At start, before claiming. A backend that belongs to one process (SQLite) releases
    /// every lease and marks steps that were running in a process (Run, Http) `Failed` with
    /// the message "interrupted", returning how many it marked. A shared backend
    /// (PostgreSQL) must not touch the leases of live nodes: there, a dead node's leases
    /// expire, and the engine marks a Run or Http step it finds `Running` in an execution it
    /// claims as interrupted.
    async fn recover_executions(&self, now: Millis) -> StoreResult<u64>;

    /// Leases up to `limit` runnable executions to `owner` (this node, recorded for operators),
    /// each with a fresh [`LeaseToken`], for `lease_ms` from now by the lease clock: queued
    /// ones, and started ones with no live lease whose wait (if any) is over at `now` (the
    /// caller's clock, which wrote the wake-up times). Oldest first. Exclusive across
    /// processes: no execution is leased to two claims at once. Some stores read what each
    /// worker reads with the claims ([`Claimed::work`]).
    async fn claim_executions(
        &self,
        owner: &str,
        limit: u32,
        now: Millis,
        lease_ms: i64,
    ) -> StoreResult<Vec<Claimed>>;

    /// Extends the claim's lease to `lease_ms` from now by the lease clock, while its worker is
    /// still on it, and returns the control request waiting for that worker, if any (so a
    /// worker learns of an abort even if the announcement was missed). Atomic and fenced:
    /// `LeaseLost`, extending nothing, when the execution no longer carries the claim's token
    /// (claimed again, aborted, paused or ended). A lease that ran out while nothing took it
    /// over is renewed.
    async fn renew_lease(&self, claim: &Claim, lease_ms: i64) -> StoreResult<Option<Control>>;

    /// Drops the claim's lease so the execution can be claimed again at once (after its worker
    /// failed to store its progress). Atomic; only the token is checked, since dropping a lease
    /// that ran out but was not claimed again changes nothing that matters. `LeaseLost` when
    /// the execution is another claim's (or nobody's); nothing changes then.
    async fn release_lease(&self, claim: &Claim) -> StoreResult<()>;

    /// Reads an execution with its snapshot and steps (without their logs). Reads take no
    /// claim and are never fenced.
    async fn load_run(&self, id: &PlanExecutionId) -> StoreResult<Option<RunState>>;

    /// Starts a claimed execution that has not started: stores the pipeline snapshot and its
    /// steps, status `Running` (`started_at` is `now`), and the outbox events this implies,
    /// atomically. Returns false, writing nothing, when it had started already. Fenced.
    async fn start_execution(
        &self,
        claim: &Claim,
        pipeline_spec: serde_json::Value,
        steps: Vec<StepRecord>,
        now: Millis,
    ) -> StoreResult<bool>;

    /// Stores one step's state (an upsert) and the outbox events it implies, atomically.
    /// Fenced.
    async fn update_step(&self, claim: &Claim, step: StepRecord) -> StoreResult<()>;

    /// Gives the execution back until `wake_at` (a `Wait` step), releasing the lease; a
    /// control request that arrived meanwhile is applied instead. Atomic and fenced.
    async fn park_execution(&self, claim: &Claim, wake_at: Millis) -> StoreResult<()>;

    /// Ends the execution with a terminal `status` at `now`, releasing the lease, with its
    /// outbox events, atomically. `steps` are step states not stored yet (steps that ended
    /// without side effects, whose writes the engine saved for this one), stored first in the
    /// same transaction. With `start`, the execution had not started yet: it is started as
    /// [`start_execution`](Self::start_execution) does, in the same transaction, before all
    /// that; an [`AlreadyStarted`] error if it had started already, writing nothing. Fenced.
    ///
    /// With `next`, the same transaction then claims the oldest runnable execution for the
    /// same worker, as [`claim_executions`](Self::claim_executions) would with a limit of one
    /// at `now`, and returns its claim: a worker goes on to the next execution without a
    /// commit of its own for the claim (and, from some stores, without a read of its own).
    #[allow(clippy::too_many_arguments)]
    async fn finish_execution(
        &self,
        claim: &Claim,
        start: Option<Start>,
        steps: Vec<StepRecord>,
        status: &str,
        failure_message: Option<String>,
        now: Millis,
        next: Option<&NextClaim>,
    ) -> StoreResult<Option<Claimed>>;

    /// Appends lines to the live log of a step of an execution the claim holds.
    async fn append_step_log(
        &self,
        claim: &Claim,
        stage: &str,
        step: &str,
        lines: Vec<LogLine>,
    ) -> StoreResult<()>;

    /// Up to `limit` lines of a step's live log with `seq` after `after`, in order.
    async fn step_log(
        &self,
        id: &PlanExecutionId,
        stage: &str,
        step: &str,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<LogLine>>;

    /// The steps of an execution, in order, with their logs.
    async fn list_steps(&self, id: &PlanExecutionId) -> StoreResult<Vec<StepRecord>>;

    /// Retention: deletes up to `batch` executions that ended before `cutoff` (with their steps
    /// and logs), up to `batch` webhook events created before it, and up to `batch` idempotency
    /// keys claimed before it. An event whose execution is still kept stays. Says how many
    /// executions and events went, and whether old events may be left (see [`Purged`]).
    async fn purge_before(&self, cutoff: Millis, batch: u32) -> StoreResult<Purged>;

    /// Applies a control request atomically, as `engine::control::decide` says (see
    /// [`ControlOutcome`]); the execution's row is locked while it is decided, so a worker
    /// claiming or parking it at the same time sees the request. A worker holds the execution
    /// while its lease is live by the lease clock: an execution whose node died is controlled
    /// at once, and its old worker's writes are refused after. `now` is recorded as the time
    /// of what it ends; `comment` on an approved or rejected step.
    async fn control_execution(
        &self,
        id: &PlanExecutionId,
        control: Control,
        comment: Option<String>,
        now: Millis,
    ) -> StoreResult<ControlOutcome>;

    /// The pending control request a worker must apply before the next step, if any.
    async fn pending_control(&self, id: &PlanExecutionId) -> StoreResult<Option<Control>>;

    /// Parks an execution for a person: `status` is `Paused` or `ApprovalWaiting`; `wake_at`
    /// (an approval timeout) makes it runnable again then. Releases the lease and clears the
    /// control request; a control request that arrived meanwhile is applied instead. Atomic
    /// and fenced.
    async fn hold_execution(
        &self,
        claim: &Claim,
        status: &str,
        wake_at: Option<Millis>,
    ) -> StoreResult<()>;
}
