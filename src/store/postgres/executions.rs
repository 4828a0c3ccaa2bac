//! [`ExecutionStore`] on PostgreSQL: the queue, leases and step rows.
//!
//! Several nodes share the queue. A claim takes runnable executions with
//! `FOR UPDATE SKIP LOCKED`, so two nodes never lease the same one; every write to an
//! execution first locks its row, so a control request and a worker's progress are applied
//! one after the other.
//!
//! The lease clock is the database server's ([`lease_now!`]): nodes whose clocks disagree
//! still agree on when a lease runs out, so none takes over a live one.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::groups::alike;
use super::outbound::sync_events;
use super::{
    col, event_by_id, event_cols, event_row_at, execute, execution_cols, execution_row,
    execution_row_at, invalid, pipeline_cols, pipeline_row_at, query, query_one, query_opt, text,
    Params, PgResultExt as _, PgStore, EXECUTION_COLS,
};
use crate::domain::ids::{EventId, LeaseToken, PlanExecutionId, ProjectRef};
use crate::engine::control::{self, ControlAction};
use crate::store::cursor::{decode_time_cursor, encode_cursor, page};
use crate::store::executions::{
    status, AlreadyStarted, Claim, Claimed, Control, ControlOutcome, ExecutionFilter,
    ExecutionStore, LogLine, NewManualExecution, NextClaim, ProjectKey, Purged, RunState, Start,
    StepRecord, Work, PURGE_PROJECTS,
};
use crate::store::{Execution, Millis, Page, StoreError, StoreResult, WebhookEvent};

/// The lease clock in SQL: the database server's time now, in epoch milliseconds.
/// `clock_timestamp()`, not `now()`, which is when the transaction began (maybe before it
/// waited for a row lock).
macro_rules! lease_now {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}
pub(super) use lease_now;

/// The columns of a step's row after its execution's id, in [`step_row`]'s order.
macro_rules! step_cols {
    () => {
        "stage_index, step_index, stage_id, stage_name, step_id, step_name, \
         step_type, status, attempt, started_at, ended_at, outputs, message, log"
    };
}
const STEP_COLS: &str = step_cols!();

/// When an execution can next be claimed, NULL if never: the expression of the index
/// `executions_claimable` (migration 0006), written as there so that the planner matches it.
macro_rules! claim_at {
    () => {
        "(CASE WHEN status IN ('Queued', 'Running') \
              OR (status = 'ApprovalWaiting' AND wake_at IS NOT NULL) \
         THEN GREATEST(created_at, COALESCE(wake_at, 0), COALESCE(lease_until + 1, 0)) END)"
    };
}

/// Settings for the rest of a transaction that make the plan of [`END_SQL`] and of
/// [`CLAIM_SQL`] find each row it reads through an index, whatever the table's size was when it
/// was made: no sequential scans, and nested loops for joins. A generic plan, made once for
/// every execution of the cached statement, not five custom plans first (nor a custom plan each
/// time, which the claim had kept making: the planner priced its generic plan higher). Every
/// execution of the two statements runs with them, so that no generic plan is ever made and
/// cached without them. The nested loops cost comparisons between a group's parts (its steps
/// and its ends, its ends and its claims): up to 65,536 for a full group of one-step
/// executions, where a hash join would take hundreds.
macro_rules! by_indexes {
    () => {
        "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; \
         SET LOCAL enable_mergejoin = off; SET LOCAL plan_cache_mode = force_generic_plan"
    };
}

/// Opens a transaction for [`END_SQL`] or [`CLAIM_SQL`], with the settings of [`by_indexes!`].
pub(super) const PLAN_BY_INDEXES: &str = concat!("BEGIN; ", by_indexes!());

/// Runs `statement` (a cached [`END_SQL`] or [`CLAIM_SQL`]) in a transaction of its own, with
/// the settings of [`by_indexes!`], in one round trip: the transaction, its settings, the
/// statement and the commit, sent together. A failed statement fails the transaction, and its
/// COMMIT rolls it back. Each is awaited, not only up to the first failure: a COMMIT never
/// sent would leave the pooled connection inside the transaction.
async fn by_indexes_alone(
    c: &deadpool_postgres::Client,
    statement: &tokio_postgres::Statement,
    params: Params<'_>,
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let (opened, rows, committed) = tokio::join!(
        c.batch_execute(PLAN_BY_INDEXES),
        c.query(statement, params),
        c.batch_execute("COMMIT")
    );
    opened.and(rows).and_then(|rows| committed.map(|()| rows))
}

/// An execution's lease is over, or it has none: a claim's condition besides `claim_at`.
macro_rules! lease_over {
    () => {
        concat!("(lease_until IS NULL OR lease_until < ", lease_now!(), ")")
    };
}

/// How a step row written again replaces the stored one: every column but its key.
macro_rules! step_upsert {
    () => {
        "ON CONFLICT (plan_execution_id, stage_index, step_index) DO UPDATE SET \
         stage_id = EXCLUDED.stage_id, stage_name = EXCLUDED.stage_name, \
         step_id = EXCLUDED.step_id, step_name = EXCLUDED.step_name, \
         step_type = EXCLUDED.step_type, status = EXCLUDED.status, \
         attempt = EXCLUDED.attempt, started_at = EXCLUDED.started_at, \
         ended_at = EXCLUDED.ended_at, outputs = EXCLUDED.outputs, \
         message = EXCLUDED.message, log = EXCLUDED.log"
    };
}

fn step_row(r: &Row) -> StoreResult<StepRecord> {
    let outputs: String = col(r, 11)?;
    Ok(StepRecord {
        stage_index: col::<i32>(r, 0)? as u32,
        step_index: col::<i32>(r, 1)? as u32,
        stage: col(r, 2)?,
        stage_name: col(r, 3)?,
        step: col(r, 4)?,
        step_name: col(r, 5)?,
        step_type: col(r, 6)?,
        status: col(r, 7)?,
        attempt: col::<i32>(r, 8)? as u32,
        started_at: col(r, 9)?,
        ended_at: col(r, 10)?,
        outputs: serde_json::from_str(&outputs).unwrap_or_default(),
        message: col(r, 12)?,
        log: col(r, 13)?,
    })
}

/// A step's outputs as its row stores them (JSON).
fn outputs_text(s: &StepRecord) -> String {
    serde_json::to_string(&s.outputs).unwrap_or_else(|_| "{}".into())
}

async fn upsert_step(
    c: &impl GenericClient,
    id: &PlanExecutionId,
    s: &StepRecord,
) -> StoreResult<u64> {
    let outputs = outputs_text(s);
    execute(
        c,
        "storing a step",
        concat!(
            "INSERT INTO execution_steps (plan_execution_id, ",
            step_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ",
            step_upsert!()
        ),
        &[
            &id.as_str(),
            &(s.stage_index as i32),
            &(s.step_index as i32),
            &s.stage,
            &s.stage_name,
            &s.step,
            &s.step_name,
            &s.step_type,
            &s.status,
            &(s.attempt as i32),
            &s.started_at,
            &s.ended_at,
            &outputs,
            &s.message.as_deref().map(text),
            &s.log.as_deref().map(text),
        ],
    )
    .await
}

/// An execution to queue, as [`INSERT_QUEUED`] stores it.
pub(super) struct QueuedExecution<'a> {
    pub plan: &'a str,
    /// Account, org and project.
    pub scope: [&'a str; 3],
    pub pipeline: &'a str,
    pub pipeline_name: &'a str,
    pub trigger_type: &'a str,
    pub trigger: Option<&'a str>,
    pub event_id: Option<&'a str>,
    /// As PostgreSQL can store it ([`text`]).
    pub runtime_input: std::borrow::Cow<'a, str>,
    pub run_sequence: i64,
    pub created_at: Millis,
}

/// Takes the next run sequence number of `pipeline` from its counter row.
macro_rules! next_number {
    () => {
        "INSERT INTO pipeline_counters (account_id, org_id, project_id, pipeline_id, last) \
         VALUES ($1, $2, $3, $4, 1) \
         ON CONFLICT (account_id, org_id, project_id, pipeline_id) \
         DO UPDATE SET last = pipeline_counters.last + 1 RETURNING last"
    };
}

/// The next run sequence number of each pipeline in `wanted` (one per entry; a pipeline named
/// twice gets two), with one bump of each counter, in a statement of its own on `c` (a pooled
/// connection, never a transaction: the type says so), committed without waiting for its WAL
/// flush so that the counter rows are held for microseconds, not for an fsync.
///
/// Safe because a number is only used by a write committed after it with
/// `synchronous_commit = on`, and flushing that write's commit record flushes every record
/// before it: a number is durable whenever something uses it, so none is handed out twice,
/// crashes included. A write that fails after numbering leaves a gap.
pub(super) async fn next_run_sequences(
    c: &super::Client,
    wanted: &[(&ProjectRef, &str)],
) -> StoreResult<Vec<i64>> {
    // How many numbers each pipeline needs, in one order for every caller, so that two writes
    // that bump the same counters take their rows' locks in the same order.
    let mut counts = std::collections::BTreeMap::<[&str; 4], i64>::new();
    for (scope, pipeline) in wanted {
        let [acc, org, proj] = super::project_params(scope);
        *counts.entry([acc, org, proj, pipeline]).or_default() += 1;
    }
    if counts.is_empty() {
        return Ok(Vec::new());
    }
    const SQL: &str = "WITH async AS (SELECT set_config('synchronous_commit', 'off', true)), \
         next AS (INSERT INTO pipeline_counters AS c (account_id, org_id, project_id, pipeline_id, last) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[]) \
         ON CONFLICT (account_id, org_id, project_id, pipeline_id) \
         DO UPDATE SET last = c.last + EXCLUDED.last \
         RETURNING account_id, org_id, project_id, pipeline_id, last) \
         SELECT next.* FROM next, async";
    let column = |i: usize| counts.keys().map(|k| k[i]).collect::<Vec<_>>();
    let (acc, org, proj, pipeline) = (column(0), column(1), column(2), column(3));
    let needed: Vec<i64> = counts.values().copied().collect();
    let rows = super::query(
        c,
        "numbering executions",
        SQL,
        &[&acc, &org, &proj, &pipeline, &needed],
    )
    .await?;
    // Each pipeline's range ends at its counter's new value; its numbers are handed out from
    // the range's start, in the order asked.
    let mut next = std::collections::HashMap::with_capacity(rows.len());
    for r in &rows {
        let key: [String; 4] = [col(r, 0)?, col(r, 1)?, col(r, 2)?, col(r, 3)?];
        let last: i64 = col(r, 4)?;
        let count = *counts
            .get(&[&*key[0], &*key[1], &*key[2], &*key[3]])
            .ok_or_else(|| super::invalid("a pipeline counter"))?;
        next.insert(key, last - count + 1);
    }
    let mut numbers = Vec::with_capacity(wanted.len());
    for (scope, pipeline) in wanted {
        let [acc, org, proj] = super::project_params(scope);
        let key = [acc, org, proj, pipeline].map(str::to_owned);
        let n = next
            .get_mut(&key)
            .ok_or_else(|| super::invalid("a pipeline counter"))?;
        numbers.push(*n);
        *n += 1;
    }
    Ok(numbers)
}

/// The next run sequence number of `pipeline`, in the caller's transaction, which holds the
/// counter row until it commits: gap-free, but every queue on the pipeline waits for the
/// previous one's commit. For writes that may still turn out to store nothing (an idempotent
/// replay).
pub(super) async fn next_run_sequence_in(
    tx: &deadpool_postgres::Transaction<'_>,
    scope: &ProjectRef,
    pipeline: &str,
) -> StoreResult<i64> {
    number(tx, next_number!(), scope, pipeline).await
}

async fn number(
    c: &impl GenericClient,
    sql: &str,
    scope: &ProjectRef,
    pipeline: &str,
) -> StoreResult<i64> {
    let [acc, org, proj] = super::project_params(scope);
    let row = query_one(
        c,
        "numbering an execution",
        sql,
        &[&acc, &org, &proj, &pipeline],
    )
    .await?;
    col(&row, 0)
}

/// The `INSERT` of a `Queued` execution, its values ([`QueuedExecution::params`]) in the
/// twelve placeholders given.
macro_rules! insert_queued {
    ($a:literal, $b:literal, $c:literal, $d:literal, $e:literal, $f:literal, $g:literal, $h:literal, $i:literal, $j:literal, $k:literal, $l:literal) => {
        concat!(
            "INSERT INTO executions (",
            execution_cols!(),
            ") VALUES (",
            $a,
            ", ",
            $b,
            ", ",
            $c,
            ", ",
            $d,
            ", ",
            $e,
            ", ",
            $f,
            ", 'Queued', ",
            $g,
            ", ",
            $h,
            ", ",
            $i,
            ", ",
            $j,
            ", ",
            $k,
            ", ",
            $l,
            ", NULL, NULL)"
        )
    };
}

/// [`insert_queued!`] with the values as `$1` to `$12`.
const INSERT_QUEUED: &str =
    insert_queued!("$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12");

impl QueuedExecution<'_> {
    /// The values of [`INSERT_QUEUED`].
    pub(super) fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 12] {
        [
            &self.plan,
            &self.scope[0],
            &self.scope[1],
            &self.scope[2],
            &self.pipeline,
            &self.pipeline_name,
            &self.trigger_type,
            &self.trigger,
            &self.event_id,
            &self.run_sequence,
            &self.runtime_input,
            &self.created_at,
        ]
    }
}

/// An execution as [`run_state`] reads it: [`execution_cols!`], then its snapshot and failure.
macro_rules! run_cols {
    () => {
        concat!(execution_cols!(), ", pipeline_spec, failure_message")
    };
}

const RUN_SQL: &str = concat!(
    "SELECT ",
    run_cols!(),
    " FROM executions WHERE plan_execution_id = $1"
);

/// The joins that read what a worker reads besides the execution `$x` (whose columns are
/// [`run_cols!`], `control` and `event_seq`): its event `we` ([`EVENT_COLS`]) and its pipeline
/// `wp` ([`PIPELINE_COLS`]), each a lookup by primary key, NULL when there is none.
macro_rules! work_joins {
    ($x:literal) => {
        concat!(
            "LEFT JOIN LATERAL (SELECT ",
            event_cols!(),
            " FROM webhook_events WHERE seq = ",
            $x,
            ".event_seq) we ON true \
             LEFT JOIN LATERAL (SELECT ",
            pipeline_cols!(),
            " FROM pipelines WHERE account_id = ",
            $x,
            ".account_id AND org_id = ",
            $x,
            ".org_id AND project_id = ",
            $x,
            ".project_id AND id = ",
            $x,
            ".pipeline_id) wp ON true"
        )
    };
}

/// What a worker reads to run an execution, in one statement (see [`PgStore::read_work`]): the
/// execution ([`run_cols!`], columns 0-16), its control request (17), its event's `seq` (18),
/// its event ([`EVENT_COLS`] from 19) and its pipeline as stored now ([`PIPELINE_COLS`] from 35),
/// NULL when there is none. The pipeline is used only until the execution has started.
const WORK_SQL: &str = concat!(
    "SELECT x.*, we.*, wp.* FROM (SELECT ",
    run_cols!(),
    ", control, event_seq FROM executions WHERE plan_execution_id = $1) x ",
    work_joins!("x")
);

/// The first column of the event and of the pipeline in [`WORK_SQL`]'s row.
const WORK_EVENT: usize = 19;
const WORK_PIPELINE: usize = 35;

/// The steps of the execution whose id `$execution` (SQL) gives, as [`step_row`] reads them.
/// Logs (up to 1 MiB each) are left out: status polls read this often.
macro_rules! steps_of {
    ($($execution:tt)*) => {
        concat!(
            "SELECT stage_index, step_index, stage_id, stage_name, step_id, step_name, step_type, \
             status, attempt, started_at, ended_at, outputs, message, NULL::text FROM execution_steps \
             WHERE plan_execution_id = ",
            $($execution)*,
            " ORDER BY stage_index, step_index"
        )
    };
}

/// One row of `sql` and the steps `steps` selects ([`steps_of!`]), both with `params`, sent
/// together on one connection: one round trip.
async fn row_and_steps(
    c: &impl GenericClient,
    what: &str,
    sql: &str,
    steps: &'static str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> StoreResult<(Option<Row>, Vec<StepRecord>)> {
    let (row, steps) = tokio::try_join!(
        query_opt(c, what, sql, params),
        query(c, what, steps, params)
    )?;
    let steps = steps.iter().map(step_row).collect::<StoreResult<_>>()?;
    Ok((row, steps))
}

/// An event ([`event_by_id!`]) and, when it queued one, its execution ([`run_cols!`] from
/// [`EVENT_RUN`], NULL when there is none): a status poll's read.
const EVENT_WITH_RUN_SQL: &str = concat!(
    "SELECT e.*, x.* FROM ",
    event_by_id!(event_cols!()),
    " e \
     LEFT JOIN LATERAL (SELECT ",
    run_cols!(),
    " FROM executions WHERE plan_execution_id = e.plan_execution_id) x ON true"
);
const EVENT_RUN: usize = 16;

/// The column of the pipeline snapshot (NULL until the execution has started) in
/// [`run_cols!`].
const RUN_SPEC: usize = 15;

/// The run state from a row whose columns from `at` are [`run_cols!`], and the execution's steps.
fn run_state_at(row: &Row, at: usize, steps: Vec<StepRecord>) -> StoreResult<RunState> {
    let spec: Option<String> = col(row, at + RUN_SPEC)?;
    Ok(RunState {
        execution: execution_row_at(row, at)?,
        pipeline_spec: spec.and_then(|s| serde_json::from_str(&s).ok()),
        steps,
        failure_message: col(row, at + 16)?,
    })
}

fn run_state(row: &Row, steps: Vec<StepRecord>) -> StoreResult<RunState> {
    run_state_at(row, 0, steps)
}

impl PgStore {
    /// [`Store::get_event_with_run`](crate::store::Store::get_event_with_run) in one round trip
    /// on one connection: [`EVENT_WITH_RUN_SQL`] and the steps of the event's execution, sent
    /// together (three statements in two round trips before). The event and its execution come
    /// from one snapshot, the steps from a second, as with `load_run`: a poll that races a
    /// step's write may show the step as of just after the execution's row.
    pub(super) async fn read_event_with_run(
        &self,
        id: &EventId,
    ) -> StoreResult<Option<(WebhookEvent, Option<RunState>)>> {
        let (row, steps) = row_and_steps(
            &self.client().await?,
            "reading a webhook event and its execution",
            EVENT_WITH_RUN_SQL,
            steps_of!(event_by_id!("plan_execution_id")),
            &[&self.event_ids.seq(id), &id.as_str()],
        )
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let event = event_row_at(&row, 0)?;
        let run = match (
            &event.plan_execution_id,
            col::<Option<String>>(&row, EVENT_RUN)?,
        ) {
            (Some(_), Some(_)) => Some(run_state_at(&row, EVENT_RUN, steps)?),
            _ => None,
        };
        Ok(Some((event, run)))
    }

    /// [`Store::load_work`](crate::store::Store::load_work) in one round trip on one connection:
    /// [`WORK_SQL`] and the steps, sent together. Five statements one after another before, on
    /// four connections, each a parse-bind-execute on the database server's CPU, which the
    /// engine shares with intake (issue 13).
    pub(super) async fn read_work(&self, id: &PlanExecutionId) -> StoreResult<Option<Work>> {
        let (row, steps) = row_and_steps(
            &self.client().await?,
            "loading an execution to run",
            WORK_SQL,
            steps_of!("$1"),
            &[&id.as_str()],
        )
        .await?;
        row.map(|row| work_at(&row, 0, steps)).transpose()
    }
}

/// What a worker reads, from a row whose columns from `at` are those of [`WORK_SQL`]'s, and
/// the execution's `steps`.
fn work_at(row: &Row, at: usize, steps: Vec<StepRecord>) -> StoreResult<Work> {
    let run = run_state_at(row, at, steps)?;
    let control: Option<String> = col(row, at + 17)?;
    let event = match (run.event_id(), col::<Option<String>>(row, at + WORK_EVENT)?) {
        (Some(_), Some(_)) => Some(event_row_at(row, at + WORK_EVENT)?),
        _ => None,
    };
    let pipeline = match (
        run.pipeline_to_start(),
        col::<Option<String>>(row, at + WORK_PIPELINE)?,
    ) {
        (Some(_), Some(_)) => Some(pipeline_row_at(row, at + WORK_PIPELINE)?),
        _ => None,
    };
    Ok(Work {
        run,
        control: control::from_stored(control.as_deref()),
        event,
        pipeline,
    })
}

/// The claim: leases to `$1` for `$2` ms up to `$4` executions due by `$3` (the node's clock),
/// oldest due first, handing each the token at its row number in `$5`. It walks
/// `executions_claimable` (migration 0006) from its start to `$3` and stops at its limit; a lease
/// is over only once it has run out by the database's clock, checked on each entry read (an
/// entry for a lease that ended by `$3` but not yet by that clock is passed over). SKIP LOCKED:
/// rows another node is claiming (or writing) are left to it; a locked row is re-checked against
/// the conditions after it is locked. One row per claim: its token, then what its worker reads
/// (as in [`WORK_SQL`]'s rows). `numbered` shares no column name with `executions`, so that
/// the names the update returns are the execution's.
pub(super) const CLAIM_SQL: &str = concat!(
    "WITH picked AS ( \
       SELECT plan_execution_id, ",
    claim_at!(),
    " AS claim_at FROM executions WHERE ",
    claim_at!(),
    " <= $3 AND ",
    lease_over!(),
    " ORDER BY claim_at LIMIT $4 FOR UPDATE SKIP LOCKED), \
     numbered AS ( \
       SELECT plan_execution_id AS id, \
              row_number() OVER (ORDER BY claim_at, plan_execution_id) AS n \
       FROM picked), \
     claimed AS ( \
       UPDATE executions x SET lease_owner = $1, lease_until = ",
    lease_now!(),
    " + $2, lease_token = ($5::text[])[numbered.n::int] \
       FROM numbered WHERE x.plan_execution_id = numbered.id \
       RETURNING lease_token, ",
    run_cols!(),
    ", control, event_seq) \
     SELECT c.*, we.*, wp.* FROM claimed c ",
    work_joins!("c")
);

/// Where a claim runs: in a transaction of its own, or as the last statement of the caller's.
enum ClaimIn<'a> {
    /// Sent with its transaction's `BEGIN` and `COMMIT` in one round trip.
    Own(&'a deadpool_postgres::Client),
    Transaction(&'a deadpool_postgres::Transaction<'a>),
}

/// Leases up to `limit` runnable executions to `owner` (see
/// [`ExecutionStore::claim_executions`]), with the plan of [`by_indexes!`].
async fn claim_runnable(
    within: ClaimIn<'_>,
    owner: &str,
    limit: u32,
    now: Millis,
    lease_ms: i64,
) -> StoreResult<Vec<Claimed>> {
    const WHAT: &str = "claiming executions";
    // One fresh token per execution that may be picked, handed out by row number.
    let tokens: Vec<String> = (0..limit)
        .map(|_| LeaseToken::generate().to_string())
        .collect();
    let params: Params<'_> = &[&owner, &lease_ms, &now, &i64::from(limit), &tokens];
    let rows = match within {
        ClaimIn::Own(c) => {
            let statement = c.prepare_cached(CLAIM_SQL).await.ctx(WHAT)?;
            by_indexes_alone(c, &statement, params).await.ctx(WHAT)?
        }
        ClaimIn::Transaction(tx) => {
            tx.batch_execute(by_indexes!()).await.ctx(WHAT)?;
            query(tx, WHAT, CLAIM_SQL, params).await?
        }
    };
    rows.iter().map(|r| claimed_at(r, 0)).collect()
}

/// A claim from a row whose column `at` is its lease token, followed by the columns of
/// [`WORK_SQL`]'s row. What its worker reads comes with it when the execution has not
/// started, and so has no steps yet; one that has, its worker reads with its steps. Work that
/// cannot be read is logged and left for the worker to read again, not a reason to lose the
/// claim.
fn claimed_at(row: &Row, at: usize) -> StoreResult<Claimed> {
    let claim = claim_of(col(row, at + 1)?, col(row, at)?)?;
    let work = match col::<Option<&str>>(row, at + 1 + RUN_SPEC)? {
        Some(_) => None,
        None => work_at(row, at + 1, Vec::new())
            .inspect_err(|e| {
                tracing::warn!(execution = %claim.id, error = %crate::error::ErrorChain(e),
                    "reading a claimed execution with its claim; its worker reads it again")
            })
            .ok()
            .map(Box::new),
    };
    Ok(Claimed { claim, work })
}

/// A claim as a claiming statement returns it: the execution's id and the lease token.
fn claim_of(id: &str, token: &str) -> StoreResult<Claim> {
    Ok(Claim {
        id: PlanExecutionId::parse(id).ok_or_else(|| invalid("execution id"))?,
        token: LeaseToken::parse(token).ok_or_else(|| invalid("lease token"))?,
    })
}

/// Locks the execution's row for the rest of the transaction, if it still carries `claim`'s
/// token (see [`ExecutionStore`]'s "Leases" for why the token, not the expiry, is the fence);
/// otherwise fails with
/// [`StoreError::LeaseLost`] before anything is written. Every write to an execution takes
/// this lock first, so writes to one execution never deadlock on its step rows, and the lease
/// cannot be claimed again (claims skip locked rows) or controlled before the write commits.
async fn fence(c: &impl GenericClient, claim: &Claim) -> StoreResult<()> {
    query_opt(
        c,
        "checking a lease",
        "SELECT 1 FROM executions WHERE plan_execution_id = $1 AND lease_token = $2 FOR UPDATE",
        &[&claim.id.as_str(), &claim.token.as_str()],
    )
    .await?
    .map(drop)
    .ok_or(StoreError::LeaseLost)
}

/// Deletes up to `batch` webhook events made before `cutoff` whose execution is gone, project by
/// project from the one after `from`, and leaves `from` where the next purge goes on: back at
/// the start once the walk has reached the last project (migration 0007 dropped the index of
/// their times; see [`PURGE_PROJECTS`]). SKIP LOCKED: nodes purging at the same time take
/// different events.
async fn purge_events(
    c: &impl GenericClient,
    cutoff: Millis,
    batch: u64,
    from: &mut ProjectKey,
) -> StoreResult<u64> {
    let mut purged = 0;
    for _ in 0..PURGE_PROJECTS {
        let Some(row) = query_opt(
            c,
            "finding the next project with webhook events",
            "SELECT account_id, org_id, project_id FROM webhook_events \
             WHERE (account_id, org_id, project_id) > ($1, $2, $3) \
             ORDER BY account_id, org_id, project_id LIMIT 1",
            &[&from.0, &from.1, &from.2],
        )
        .await?
        else {
            *from = ProjectKey::default();
            break;
        };
        let project: ProjectKey = (row.get(0), row.get(1), row.get(2));
        let left = i64::try_from(batch - purged).unwrap_or(i64::MAX);
        purged += execute(
            c,
            "purging old webhook events",
            "DELETE FROM webhook_events WHERE seq IN ( \
               SELECT e.seq FROM webhook_events e \
               WHERE e.account_id = $1 AND e.org_id = $2 AND e.project_id = $3 \
               AND e.created_at < $4 \
               AND NOT EXISTS (SELECT 1 FROM executions x \
                               WHERE x.plan_execution_id = e.plan_execution_id) \
               LIMIT $5 FOR UPDATE OF e SKIP LOCKED)",
            &[&project.0, &project.1, &project.2, &cutoff, &left],
        )
        .await?;
        if purged >= batch {
            // `from` stays before this project, whose old events may not all be gone yet.
            break;
        }
        *from = project;
    }
    Ok(purged)
}

#[async_trait]
impl ExecutionStore for PgStore {
    async fn queue_execution(&self, new: NewManualExecution) -> StoreResult<Execution> {
        let created_at = crate::store::now_millis();
        let plan = PlanExecutionId::generate();
        let c = self.client().await?;
        let [run_sequence] =
            next_run_sequences(&c, &[(&new.scope, new.pipeline.as_str())]).await?[..]
        else {
            return Err(super::invalid("a pipeline counter"));
        };
        let queued = QueuedExecution {
            plan: plan.as_str(),
            scope: super::project_params(&new.scope),
            pipeline: new.pipeline.as_str(),
            pipeline_name: &new.pipeline_name,
            trigger_type: "MANUAL",
            trigger: None,
            event_id: None,
            runtime_input: text(&new.runtime_input),
            run_sequence,
            created_at,
        };
        execute(&c, "queueing an execution", INSERT_QUEUED, &queued.params()).await?;
        Ok(Execution {
            plan_execution_id: plan,
            scope: new.scope,
            pipeline: new.pipeline.to_string(),
            pipeline_name: new.pipeline_name,
            status: status::QUEUED.into(),
            trigger_type: "MANUAL".into(),
            trigger: None,
            event_id: None,
            run_sequence,
            runtime_input: new.runtime_input,
            created_at,
            started_at: None,
            ended_at: None,
        })
    }

    async fn list_executions(
        &self,
        p: &ProjectRef,
        filter: &ExecutionFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<Execution>> {
        let (before_ts, before_id) = decode_time_cursor(cursor)?;
        let c = self.client().await?;
        let [acc, org, proj] = super::project_params(p);
        let items = query(
            &c,
            "listing executions",
            &format!(
                "SELECT {EXECUTION_COLS} FROM executions WHERE account_id = $1 AND org_id = $2 AND project_id = $3 \
                 AND ($4::text IS NULL OR pipeline_id = $4) AND ($5::text IS NULL OR status = $5) \
                 AND (created_at, plan_execution_id) < ($6, $7) \
                 ORDER BY created_at DESC, plan_execution_id DESC LIMIT $8"
            ),
            &[
                &acc,
                &org,
                &proj,
                &filter.pipeline,
                &filter.status,
                &before_ts,
                &before_id,
                &(i64::from(limit) + 1),
            ],
        )
        .await?
        .iter()
        .map(execution_row)
        .collect::<StoreResult<Vec<_>>>()?;
        Ok(page(items, limit, |x| {
            encode_cursor(&[&x.created_at.to_string(), x.plan_execution_id.as_str()])
        }))
    }

    /// Does nothing and returns 0: other nodes may be running executions right now, so no
    /// lease is released at start. An execution whose node died becomes claimable when its
    /// lease expires, and the engine marks a Run or Http step it finds `Running` in it as
    /// `Failed` ("interrupted") before going on.
    async fn recover_executions(&self, _now: Millis) -> StoreResult<u64> {
        Ok(0)
    }

    async fn claim_executions(
        &self,
        owner: &str,
        limit: u32,
        now: Millis,
        lease_ms: i64,
    ) -> StoreResult<Vec<Claimed>> {
        claim_runnable(
            ClaimIn::Own(&self.client().await?),
            owner,
            limit,
            now,
            lease_ms,
        )
        .await
    }

    async fn renew_lease(&self, claim: &Claim, lease_ms: i64) -> StoreResult<Option<Control>> {
        let c = self.client().await?;
        let row = query_opt(
            &c,
            "renewing a lease",
            concat!(
                "UPDATE executions SET lease_until = ",
                lease_now!(),
                " + $3 WHERE plan_execution_id = $1 AND lease_token = $2 RETURNING control"
            ),
            &[&claim.id.as_str(), &claim.token.as_str(), &lease_ms],
        )
        .await?
        .ok_or(StoreError::LeaseLost)?;
        let pending: Option<String> = col(&row, 0)?;
        Ok(control::from_stored(pending.as_deref()))
    }

    async fn release_lease(&self, claim: &Claim) -> StoreResult<()> {
        let c = self.client().await?;
        let n = execute(
            &c,
            "releasing a lease",
            "UPDATE executions SET lease_owner = NULL, lease_until = NULL, lease_token = NULL \
             WHERE plan_execution_id = $1 AND lease_token = $2",
            &[&claim.id.as_str(), &claim.token.as_str()],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::LeaseLost);
        }
        Ok(())
    }

    async fn load_run(&self, id: &PlanExecutionId) -> StoreResult<Option<RunState>> {
        let (row, steps) = row_and_steps(
            &self.client().await?,
            "loading an execution",
            RUN_SQL,
            steps_of!("$1"),
            &[&id.as_str()],
        )
        .await?;
        row.map(|row| run_state(&row, steps)).transpose()
    }

    async fn start_execution(
        &self,
        claim: &Claim,
        pipeline_spec: serde_json::Value,
        steps: Vec<StepRecord>,
        now: Millis,
    ) -> StoreResult<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        fence(&tx, claim).await?;
        if !start(&tx, &claim.id, &pipeline_spec, &steps, now).await? {
            return Ok(false);
        }
        tx.commit().await.ctx("committing an execution start")?;
        Ok(true)
    }

    async fn update_step(&self, claim: &Claim, step: StepRecord) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        fence(&tx, claim).await?;
        upsert_step(&tx, &claim.id, &step).await?;
        sync_events(&tx, &claim.id, crate::store::now_millis(), None).await?;
        tx.commit().await.ctx("committing a step")
    }

    async fn park_execution(&self, claim: &Claim, wake_at: Millis) -> StoreResult<()> {
        let id = &claim.id;
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        fence(&tx, claim).await?;
        if !apply_pending_control(&tx, id).await? {
            execute(
                &tx,
                "parking an execution",
                "UPDATE executions SET wake_at = $2, lease_owner = NULL, lease_until = NULL, \
                 lease_token = NULL WHERE plan_execution_id = $1",
                &[&id.as_str(), &wake_at],
            )
            .await?;
        }
        tx.commit().await.ctx("committing a parked execution")
    }

    async fn finish_execution(
        &self,
        claim: &Claim,
        begun: Option<Start>,
        steps: Vec<StepRecord>,
        final_status: &str,
        failure_message: Option<String>,
        now: Millis,
        next: Option<&NextClaim>,
    ) -> StoreResult<Option<Claimed>> {
        let mut end = End {
            claim: claim.clone(),
            begun,
            steps,
            status: final_status.to_owned(),
            failure_message,
            now,
            next: next.cloned(),
        };
        // An end whose row was busy goes with the next group once, before the slower path
        // below, which waits for the row.
        for last in [false, true] {
            let (back, ended) = self.ends.submit(end).await?;
            end = back;
            match ended? {
                AtOnce::Ended(claimed) => return Ok(claimed),
                AtOnce::Busy if !last => {}
                AtOnce::Busy | AtOnce::Declined => break,
            }
        }
        let End {
            begun,
            steps,
            failure_message,
            ..
        } = end;
        let mut c = self.client().await?;
        // The execution's project has an enabled event rule (the events below read the state
        // as stored), or the lease is lost, or the start is refused: each step in its turn.
        let tx = c.transaction().await.ctx("starting a transaction")?;
        let id = &claim.id;
        fence(&tx, claim).await?;
        if let Some(b) = &begun {
            if !start(&tx, id, &b.pipeline_spec, &b.steps, b.at).await? {
                return Err(AlreadyStarted::error());
            }
        }
        for step in &steps {
            upsert_step(&tx, id, step).await?;
        }
        finish(&tx, id, final_status, failure_message, now).await?;
        let claimed = match next {
            Some(n) => claim_runnable(ClaimIn::Transaction(&tx), &n.owner, 1, now, n.lease_ms)
                .await?
                .pop(),
            None => None,
        };
        tx.commit().await.ctx("committing a finished execution")?;
        Ok(claimed)
    }

    async fn control_execution(
        &self,
        id: &PlanExecutionId,
        control: Control,
        comment: Option<String>,
        now: Millis,
    ) -> StoreResult<ControlOutcome> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        // A lease held by a node counts only while it lasts by the lease clock: a dead node's
        // execution is controlled at once rather than waiting for another node to claim it.
        let Some(row) = query_opt(
            &tx,
            "reading an execution for a control request",
            concat!(
                "SELECT status, lease_owner IS NOT NULL AND lease_until >= ",
                lease_now!(),
                ", control FROM executions WHERE plan_execution_id = $1 FOR UPDATE"
            ),
            &[&id.as_str()],
        )
        .await?
        else {
            return Ok(ControlOutcome::Missing);
        };
        let (current, leased, pending): (String, bool, Option<String>) =
            (col(&row, 0)?, col(&row, 1)?, col(&row, 2)?);
        let outcome = apply_control(
            &tx,
            id,
            &current,
            leased,
            pending.as_deref(),
            control,
            comment,
            now,
        )
        .await?;
        tx.commit().await.ctx("committing a control request")?;
        Ok(outcome)
    }

    async fn pending_control(&self, id: &PlanExecutionId) -> StoreResult<Option<Control>> {
        let c = self.client().await?;
        let stored: Option<String> = match query_opt(
            &c,
            "reading a control request",
            "SELECT control FROM executions WHERE plan_execution_id = $1",
            &[&id.as_str()],
        )
        .await?
        {
            Some(row) => col(&row, 0)?,
            None => None,
        };
        Ok(control::from_stored(stored.as_deref()))
    }

    async fn hold_execution(
        &self,
        claim: &Claim,
        hold_status: &str,
        wake_at: Option<Millis>,
    ) -> StoreResult<()> {
        let id = &claim.id;
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        fence(&tx, claim).await?;
        if !apply_pending_control(&tx, id).await? {
            execute(
                &tx,
                "holding an execution",
                "UPDATE executions SET status = $2, wake_at = $3, lease_owner = NULL, \
                 lease_until = NULL, lease_token = NULL, control = NULL \
                 WHERE plan_execution_id = $1",
                &[&id.as_str(), &hold_status, &wake_at],
            )
            .await?;
            let paused = (hold_status == status::PAUSED).then_some(true);
            sync_events(&tx, id, crate::store::now_millis(), paused).await?;
        }
        tx.commit().await.ctx("committing a held execution")
    }

    async fn purge_before(&self, cutoff: Millis, batch: u32) -> StoreResult<Purged> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        // SKIP LOCKED: nodes purging at the same time take different batches. Their steps and
        // log lines go with them (no foreign key does it: migration 0009).
        let gone = query_one(
            &tx,
            "purging old executions",
            "WITH gone AS ( \
               DELETE FROM executions WHERE plan_execution_id IN ( \
                 SELECT plan_execution_id FROM executions WHERE ended_at < $1 \
                 AND status IN ('Success', 'Failed', 'Aborted', 'Expired', 'ApprovalRejected', 'Errored') \
                 LIMIT $2 FOR UPDATE SKIP LOCKED) \
               RETURNING plan_execution_id), \
             steps AS ( \
               DELETE FROM execution_steps WHERE plan_execution_id IN (SELECT plan_execution_id FROM gone)), \
             lines AS ( \
               DELETE FROM step_log_lines WHERE plan_execution_id IN (SELECT plan_execution_id FROM gone)) \
             SELECT count(*) FROM gone",
            &[&cutoff, &i64::from(batch)],
        )
        .await?;
        let executions = col::<i64>(&gone, 0)? as u64;
        // The cursor moves only once the purge has committed: a failed one is walked again.
        let mut from = self.purge_from.lock().clone();
        let events = purge_events(&tx, cutoff, u64::from(batch), &mut from).await?;
        // Keys whose 24 hours are over own nothing any more.
        let expired = cutoff.min(crate::store::now_millis() - crate::store::IDEMPOTENCY_WINDOW_MS);
        execute(
            &tx,
            "purging old idempotency keys",
            "DELETE FROM idempotency_keys WHERE ctid IN ( \
               SELECT ctid FROM idempotency_keys WHERE created_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&expired, &i64::from(batch)],
        )
        .await?;
        tx.commit().await.ctx("committing a purge")?;
        let purged = Purged::new(executions, events, batch, &from);
        *self.purge_from.lock() = from;
        Ok(purged)
    }

    async fn append_step_log(
        &self,
        claim: &Claim,
        stage: &str,
        step: &str,
        lines: Vec<LogLine>,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        fence(&tx, claim).await?;
        let seqs: Vec<i64> = lines.iter().map(|l| l.seq).collect();
        let streams: Vec<&str> = lines.iter().map(|l| l.stream.as_str()).collect();
        let times: Vec<i64> = lines.iter().map(|l| l.ts).collect();
        let texts: Vec<std::borrow::Cow<'_, str>> =
            lines.iter().map(|l| super::text(&l.text)).collect();
        execute(
            &tx,
            "appending to a step log",
            "INSERT INTO step_log_lines (plan_execution_id, stage_id, step_id, seq, stream, ts, line) \
             SELECT $1, $2, $3, seq, stream, ts, line \
             FROM unnest($4::bigint[], $5::text[], $6::bigint[], $7::text[]) AS l(seq, stream, ts, line) \
             ON CONFLICT DO NOTHING",
            &[&claim.id.as_str(), &stage, &step, &seqs, &streams, &times, &texts],
        )
        .await?;
        tx.commit().await.ctx("committing a step log")
    }

    async fn step_log(
        &self,
        id: &PlanExecutionId,
        stage: &str,
        step: &str,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<LogLine>> {
        let c = self.client().await?;
        Ok(query(
            &c,
            "reading a step log",
            "SELECT seq, stream, ts, line FROM step_log_lines \
             WHERE plan_execution_id = $1 AND stage_id = $2 AND step_id = $3 AND seq > $4 \
             ORDER BY seq LIMIT $5",
            &[&id.as_str(), &stage, &step, &after, &i64::from(limit)],
        )
        .await?
        .iter()
        .map(|r| LogLine {
            seq: r.get(0),
            stream: r.get(1),
            ts: r.get(2),
            text: r.get(3),
        })
        .collect())
    }

    async fn list_steps(&self, id: &PlanExecutionId) -> StoreResult<Vec<StepRecord>> {
        let c = self.client().await?;
        query(
            &c,
            "listing execution steps",
            &format!(
                "SELECT {STEP_COLS} FROM execution_steps WHERE plan_execution_id = $1 \
                 ORDER BY stage_index, step_index"
            ),
            &[&id.as_str()],
        )
        .await?
        .iter()
        .map(step_row)
        .collect()
    }
}

/// One control request against an execution in status `current`, inside the caller's
/// transaction (which holds the execution's row): carries out what [`control::decide`] says.
/// An execution a worker holds (`leased`) is only flagged; the worker applies it.
#[allow(clippy::too_many_arguments)]
async fn apply_control(
    c: &impl GenericClient,
    id: &PlanExecutionId,
    current: &str,
    leased: bool,
    pending: Option<&str>,
    request: Control,
    comment: Option<String>,
    now: Millis,
) -> StoreResult<ControlOutcome> {
    let comment = comment.as_deref();
    match control::decide(current, leased, control::from_stored(pending), request) {
        ControlAction::NotAllowed => Ok(ControlOutcome::NotAllowed(current.to_owned())),
        ControlAction::Signal(request) => {
            flag(c, id, control::stored(request)).await?;
            Ok(ControlOutcome::Signalled)
        }
        ControlAction::Withdraw => {
            flag(c, id, None).await?;
            Ok(ControlOutcome::Applied)
        }
        ControlAction::AbortNow => {
            execute(
                c,
                "aborting steps",
                "UPDATE execution_steps SET status = $2, ended_at = $3, message = 'aborted' \
                 WHERE plan_execution_id = $1 AND status IN ('Running', 'ApprovalWaiting')",
                &[&id.as_str(), &status::ABORTED, &now],
            )
            .await?;
            skip_the_rest(c, id).await?;
            let message = control::abort_message(comment);
            finish(c, id, status::ABORTED, Some(message), now).await?;
            Ok(ControlOutcome::Applied)
        }
        ControlAction::PauseNow { announce } => {
            execute(
                c,
                "pausing an execution",
                // The lease goes too: a worker whose lease ran out may no longer write.
                "UPDATE executions SET status = $2, control = NULL, lease_owner = NULL, \
                 lease_until = NULL, lease_token = NULL WHERE plan_execution_id = $1",
                &[&id.as_str(), &status::PAUSED],
            )
            .await?;
            if announce {
                sync_events(c, id, now, Some(true)).await?;
            }
            Ok(ControlOutcome::Applied)
        }
        ControlAction::ResumeNow => {
            execute(
                c,
                "resuming an execution",
                "UPDATE executions SET status = CASE WHEN pipeline_spec IS NULL THEN $2 ELSE $3 END, \
                 control = NULL, wake_at = NULL WHERE plan_execution_id = $1",
                &[&id.as_str(), &status::QUEUED, &status::RUNNING],
            )
            .await?;
            sync_events(c, id, now, Some(false)).await?;
            Ok(ControlOutcome::Applied)
        }
        ControlAction::Settle { approve } => {
            let step: Option<String> = match query_opt(
                c,
                "reading the waiting approval",
                "SELECT step_id FROM execution_steps WHERE plan_execution_id = $1 AND status = $2",
                &[&id.as_str(), &status::APPROVAL_WAITING],
            )
            .await?
            {
                Some(row) => Some(col(&row, 0)?),
                None => None,
            };
            let note = control::approval_note(approve, comment);
            let step_status = if approve {
                status::SUCCESS
            } else {
                status::APPROVAL_REJECTED
            };
            execute(
                c,
                "settling an approval",
                "UPDATE execution_steps SET status = $2, ended_at = $3, message = $4 \
                 WHERE plan_execution_id = $1 AND status = $5",
                &[
                    &id.as_str(),
                    &step_status,
                    &now,
                    &note,
                    &status::APPROVAL_WAITING,
                ],
            )
            .await?;
            if approve {
                execute(
                    c,
                    "approving an execution",
                    "UPDATE executions SET status = $2, wake_at = NULL WHERE plan_execution_id = $1",
                    &[&id.as_str(), &status::RUNNING],
                )
                .await?;
            } else {
                skip_the_rest(c, id).await?;
                let message = control::rejection_message(step.as_deref(), &note);
                finish(c, id, status::APPROVAL_REJECTED, Some(message), now).await?;
            }
            Ok(ControlOutcome::Applied)
        }
    }
}

/// Sets (or clears) the control request a worker applies before its next step.
async fn flag(
    c: &impl GenericClient,
    id: &PlanExecutionId,
    value: Option<&str>,
) -> StoreResult<()> {
    execute(
        c,
        "flagging a control request",
        "UPDATE executions SET control = $2 WHERE plan_execution_id = $1",
        &[&id.as_str(), &value],
    )
    .await?;
    Ok(())
}

/// Marks the steps that have not begun `Skipped`.
async fn skip_the_rest(c: &impl GenericClient, id: &PlanExecutionId) -> StoreResult<()> {
    execute(
        c,
        "skipping steps",
        "UPDATE execution_steps SET status = $2 WHERE plan_execution_id = $1 AND status = $3",
        &[&id.as_str(), &status::SKIPPED, &status::NOT_STARTED],
    )
    .await?;
    Ok(())
}

/// Inside a park or hold: a control request that arrived while the worker was finishing its
/// step is applied now, as the worker lets go (an abort ends the execution, a pause pauses it),
/// instead of being lost. True when one was applied.
async fn apply_pending_control(c: &impl GenericClient, id: &PlanExecutionId) -> StoreResult<bool> {
    let pending: Option<String> = match query_opt(
        c,
        "reading a control request",
        "SELECT control FROM executions WHERE plan_execution_id = $1",
        &[&id.as_str()],
    )
    .await?
    {
        Some(row) => col(&row, 0)?,
        None => None,
    };
    let Some(request) = control::from_stored(pending.as_deref()) else {
        return Ok(false);
    };
    execute(
        c,
        "releasing a lease",
        "UPDATE executions SET lease_owner = NULL, lease_until = NULL, lease_token = NULL \
         WHERE plan_execution_id = $1",
        &[&id.as_str()],
    )
    .await?;
    Box::pin(apply_control(
        c,
        id,
        status::RUNNING,
        false,
        None,
        request,
        None,
        crate::store::now_millis(),
    ))
    .await?;
    Ok(true)
}

/// Starts an execution that has not started (see `start_execution`); false, writing nothing,
/// when it had.
async fn start(
    c: &impl GenericClient,
    id: &PlanExecutionId,
    spec: &serde_json::Value,
    steps: &[StepRecord],
    now: Millis,
) -> StoreResult<bool> {
    let started = execute(
        c,
        "starting an execution",
        "UPDATE executions SET pipeline_spec = $2, status = $3, started_at = $4 \
         WHERE plan_execution_id = $1 AND pipeline_spec IS NULL",
        &[&id.as_str(), &spec.to_string(), &status::RUNNING, &now],
    )
    .await?;
    if started == 0 {
        return Ok(false);
    }
    for step in steps {
        upsert_step(c, id, step).await?;
    }
    sync_events(c, id, now, None).await?;
    Ok(true)
}

/// Executions ended together, one statement and one commit per group ([`super::groups`]): the
/// workers that end an execution while the write in flight commits wait for the next one, which
/// ends them all. One statement per execution had bounded the engine on PostgreSQL: of the
/// server's CPU, each end's statement start, its claim of the next execution past the rows the
/// other ends were claiming, and its commit. One write at a time, not intake's four: the
/// larger the groups, the less each execution's share of a statement and a commit, and two
/// groups at once contend for the same claimable rows. Alternating runs of 32 workers draining
/// a backlog, one, two and four writes in flight: 4,978, 4,460–4,718 and 3,858–3,919 executions
/// a second, the server's CPU 204, 263–283 and 361–369 µs per execution; matched intake
/// meanwhile 10,082, 8,424 and 6,872 events a second (the thirtieth sitting of issue 13, each
/// group planned on its own then). With the plan cached (the thirty-first), one write in flight
/// drained 3,743 and 4,305 executions a second, two 3,541 and 3,510.
pub(super) const END_WRITES_IN_FLIGHT: u32 = 1;

/// Most executions one statement ends (more wait for the next write).
const MAX_ENDS: usize = 256;

/// Most ends queued, beyond which `Overloaded`: each worker waits for its own end, so the
/// workers bound the queue, and a node has at most 1,024 (`workers`).
pub(super) const MAX_QUEUED_ENDS: usize = 4096;

/// The executions of a group ended in one statement, committed on its own (see [`Ends`]). One
/// element per end in `$1`–`$8`: the execution's id, the lease token it must still hold, its
/// pipeline snapshot when it had not started (started too then: at `$5`, and only if it had
/// not), its end status, failure message and time, and whether its worker wants the next
/// execution. Each is ended only while it holds its token and no enabled event rule of its
/// project wants the events that the state as stored yields, and only if its row is not locked
/// by another transaction (a control request, say): such an end is declined, and its worker
/// waits for the lock alone, on the step-by-step path, not the whole group behind it. Their steps
/// follow, one element per step in `$9`–`$23` (the end's place in the group, from 1, then
/// [`step_cols!`]), written for the ends that ended. Then as many runnable executions as ended
/// ones want (`$28` at most, how many of the group want one), oldest due by `$24` first, are
/// leased to `$25` for `$26` ms with the tokens of `$27` by row number, as [`CLAIM_SQL`] would.
/// One row per end that ended: its place in the group, a row number, then a claim's token and
/// what its worker reads (as in [`WORK_SQL`]'s row), NULL when the row has none. Claims are
/// paired with ended rows by number only, to share their rows (there are never more claims
/// than ends that want one), not with the end that asked for one. Then one row per end
/// declined while another transaction held its row, which still carried its token in the
/// statement's snapshot: minus its place, and NULLs ([`AtOnce::Busy`]; it may have been
/// declined for another reason too, which sending it again finds out).
///
/// Ends are told apart by their place, not by the execution's id: a group may hold two ends of
/// one execution (a worker whose lease ran out while its end waited, and the worker that
/// claimed it next), of which only the token holder's ends it.
///
/// Every part reads the statement's snapshot, taken before its own writes, where the leases of
/// the executions ended may have run out already: the claim leaves them out by id (its lock
/// would skip the rows this statement ended anyway; the ids say so where they are read). The
/// claimed rows are found by their ids, not joined to what was picked: the planner does not
/// know how many a group ends, and a join it guessed large would scan the whole table.
pub(super) const END_SQL: &str = concat!(
    "WITH r AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
       $5::int8[], $6::text[], $7::int8[], $8::bool[]) WITH ORDINALITY \
       AS r(id, token, spec, status, begun_at, failure, at, next, place)), \
     locked AS ( \
       SELECT plan_execution_id FROM executions WHERE plan_execution_id = ANY ($1::text[]) \
       FOR NO KEY UPDATE SKIP LOCKED), \
     ended AS ( \
       UPDATE executions x SET pipeline_spec = COALESCE(r.spec, x.pipeline_spec), \
         status = r.status, started_at = COALESCE(r.begun_at, x.started_at, r.at), \
         failure_message = r.failure, ended_at = r.at, \
         lease_owner = NULL, lease_until = NULL, lease_token = NULL, wake_at = NULL, \
         control = NULL \
       FROM r \
       WHERE x.plan_execution_id = r.id AND x.lease_token = r.token \
         AND x.plan_execution_id IN (SELECT plan_execution_id FROM locked) \
         AND (r.spec IS NULL OR x.pipeline_spec IS NULL) \
         AND NOT EXISTS (SELECT 1 FROM event_rules e WHERE e.account_id = x.account_id \
           AND e.org_id = x.org_id AND e.project_id = x.project_id AND e.enabled) \
       RETURNING x.plan_execution_id, r.place, r.next), \
     steps AS ( \
       INSERT INTO execution_steps (plan_execution_id, ",
    step_cols!(),
    ") SELECT ended.plan_execution_id, ",
    step_cols!(),
    " FROM unnest($9::int8[], $10::int[], $11::int[], $12::text[], $13::text[], \
         $14::text[], $15::text[], $16::text[], $17::text[], $18::int[], $19::bigint[], \
         $20::bigint[], $21::text[], $22::text[], $23::text[]) \
         AS s(place, stage_index, step_index, stage_id, stage_name, step_id, step_name, \
           step_type, status, attempt, started_at, ended_at, outputs, message, log) \
       JOIN ended ON ended.place = s.place ",
    step_upsert!(),
    "), \
     picked AS ( \
       SELECT plan_execution_id, ",
    claim_at!(),
    " AS claim_at FROM executions \
       WHERE plan_execution_id <> ALL ($1::text[]) AND ",
    claim_at!(),
    " <= $24 AND ",
    lease_over!(),
    " ORDER BY ",
    claim_at!(),
    " LIMIT $28 FOR UPDATE SKIP LOCKED), \
     numbered AS ( \
       SELECT plan_execution_id, \
              row_number() OVER (ORDER BY claim_at, plan_execution_id) AS n \
       FROM picked), \
     claimed AS ( \
       UPDATE executions x SET lease_owner = $25, lease_until = ",
    lease_now!(),
    " + $26::bigint, lease_token = ($27::text[])[(SELECT n FROM numbered \
         WHERE numbered.plan_execution_id = x.plan_execution_id)::int] \
       WHERE x.plan_execution_id = ANY (ARRAY(SELECT plan_execution_id FROM numbered \
         WHERE n <= (SELECT count(*) FROM ended WHERE ended.next))) \
       RETURNING lease_token, ",
    run_cols!(),
    ", control, event_seq) \
     SELECT e.place, c.*, we.*, wp.* FROM ( \
       SELECT place, row_number() OVER () AS k FROM ended \
       UNION ALL SELECT -r.place, NULL::bigint FROM r \
       WHERE NOT EXISTS (SELECT 1 FROM locked l WHERE l.plan_execution_id = r.id) \
         AND EXISTS (SELECT 1 FROM executions x \
           WHERE x.plan_execution_id = r.id AND x.lease_token = r.token)) e \
     LEFT JOIN (SELECT row_number() OVER () AS k, claimed.* FROM claimed) c ON c.k = e.k ",
    work_joins!("c")
);

/// The column of a claim's lease token in [`END_SQL`]'s rows, followed by those of
/// [`WORK_SQL`]'s row.
const END_CLAIMED: usize = 2;

/// Ends executions in groups; see [`END_SQL`].
pub(super) struct Ends {
    pub(super) pool: deadpool_postgres::Pool,
}

/// An end as [`ExecutionStore::finish_execution`] is asked for it.
pub(super) struct End {
    pub(super) claim: Claim,
    pub(super) begun: Option<Start>,
    pub(super) steps: Vec<StepRecord>,
    pub(super) status: String,
    pub(super) failure_message: Option<String>,
    pub(super) now: Millis,
    pub(super) next: Option<NextClaim>,
}

/// What the group's statement did with an end.
#[derive(Debug)]
pub(super) enum AtOnce {
    /// It ended the execution, and claimed this one next.
    Ended(Option<Claimed>),
    /// It wrote nothing: the lease is lost, the start refused, or the project has an enabled
    /// event rule. The caller ends the execution step by step, which tells these apart.
    Declined,
    /// It wrote nothing, and another transaction held the execution's row, which still
    /// carried the end's token. With two nodes on one database that is mostly the other node's
    /// claim: a row it found queued in its snapshot, that this node's claim had leased by the
    /// time it came to lock it, stays locked until its commit (PostgreSQL keeps the lock of a
    /// row that fails the re-check after locking). The caller submits it again, once.
    Busy,
}

impl super::groups::Write for Ends {
    type Job = End;
    type Answer = (End, StoreResult<AtOnce>);
    const MAX_GROUP: usize = MAX_ENDS;

    async fn write(&self, group: Vec<End>) -> Vec<Self::Answer> {
        const WHAT: &str = "ending executions";
        let results = match super::client(&self.pool).await {
            Ok(c) => match end_group(&c, &group).await {
                Ok(results) => results.into_iter().map(Ok).collect(),
                // The database refused the statement: find which end it refused by writing
                // each alone.
                Err(StoreError::Database { .. }) if group.len() > 1 => {
                    let mut results = Vec::with_capacity(group.len());
                    for end in &group {
                        results.push(
                            end_group(&c, std::slice::from_ref(end))
                                .await
                                .and_then(|mut r| r.pop().ok_or_else(|| invalid("an end"))),
                        );
                    }
                    results
                }
                Err(e) => group.iter().map(|_| Err(alike(&e, WHAT))).collect(),
            },
            Err(e) => group.iter().map(|_| Err(alike(&e, WHAT))).collect(),
        };
        group.into_iter().zip(results).collect()
    }
}

/// Ends `group` in one statement ([`END_SQL`]): what it did with each end, in order.
async fn end_group(c: &deadpool_postgres::Client, group: &[End]) -> StoreResult<Vec<AtOnce>> {
    let ids: Vec<&str> = group.iter().map(|e| e.claim.id.as_str()).collect();
    let tokens: Vec<&str> = group.iter().map(|e| e.claim.token.as_str()).collect();
    let specs: Vec<Option<String>> = group
        .iter()
        .map(|e| e.begun.as_ref().map(|b| b.pipeline_spec.to_string()))
        .collect();
    let statuses: Vec<&str> = group.iter().map(|e| e.status.as_str()).collect();
    let begun_at: Vec<Option<Millis>> = group
        .iter()
        .map(|e| e.begun.as_ref().map(|b| b.at))
        .collect();
    let failures: Vec<Option<std::borrow::Cow<'_, str>>> = group
        .iter()
        .map(|e| e.failure_message.as_deref().map(text))
        .collect();
    let at: Vec<Millis> = group.iter().map(|e| e.now).collect();
    let next: Vec<bool> = group.iter().map(|e| e.next.is_some()).collect();
    // Each execution's steps: those it started with, as its ended ones left them.
    let steps: Vec<(i64, StepRecord)> = (1..)
        .zip(group)
        .flat_map(|(place, e)| {
            StepRecord::with_ends(e.begun.as_ref().map_or(&[], |b| &b.steps), &e.steps)
                .into_iter()
                .map(move |s| (place, s))
        })
        .collect();
    let ints =
        |f: fn(&StepRecord) -> u32| steps.iter().map(|(_, s)| f(s) as i32).collect::<Vec<_>>();
    let texts = |f: fn(&StepRecord) -> &str| steps.iter().map(|(_, s)| f(s)).collect::<Vec<_>>();
    let step_of: Vec<i64> = steps.iter().map(|(place, _)| *place).collect();
    let (stage_index, step_index, attempt) = (
        ints(|s| s.stage_index),
        ints(|s| s.step_index),
        ints(|s| s.attempt),
    );
    let (stage, stage_name, step, step_name, step_type, status) = (
        texts(|s| &s.stage),
        texts(|s| &s.stage_name),
        texts(|s| &s.step),
        texts(|s| &s.step_name),
        texts(|s| &s.step_type),
        texts(|s| &s.status),
    );
    let started_at: Vec<_> = steps.iter().map(|(_, s)| s.started_at).collect();
    let ended_at: Vec<_> = steps.iter().map(|(_, s)| s.ended_at).collect();
    let outputs: Vec<_> = steps.iter().map(|(_, s)| outputs_text(s)).collect();
    let message: Vec<_> = steps
        .iter()
        .map(|(_, s)| s.message.as_deref().map(text))
        .collect();
    let log: Vec<_> = steps
        .iter()
        .map(|(_, s)| s.log.as_deref().map(text))
        .collect();
    // The claims go to one owner, for one lease: a node's workers all name the same.
    let wanted = group.iter().find_map(|e| e.next.as_ref());
    debug_assert!(group
        .iter()
        .filter_map(|e| e.next.as_ref())
        .all(
            |n| Some(n.owner.as_str()) == wanted.map(|w| w.owner.as_str())
                && Some(n.lease_ms) == wanted.map(|w| w.lease_ms)
        ));
    let claim_tokens: Vec<String> = group
        .iter()
        .filter(|e| e.next.is_some())
        .map(|_| LeaseToken::generate().to_string())
        .collect();
    let due = at.iter().copied().max().unwrap_or_default();
    let owner = wanted.map(|n| n.owner.as_str());
    let lease_ms = wanted.map_or(0, |n| n.lease_ms);
    use tokio_postgres::types::Type;
    let typed: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 28] = [
        (&ids, Type::TEXT_ARRAY),
        (&tokens, Type::TEXT_ARRAY),
        (&specs, Type::TEXT_ARRAY),
        (&statuses, Type::TEXT_ARRAY),
        (&begun_at, Type::INT8_ARRAY),
        (&failures, Type::TEXT_ARRAY),
        (&at, Type::INT8_ARRAY),
        (&next, Type::BOOL_ARRAY),
        (&step_of, Type::INT8_ARRAY),
        (&stage_index, Type::INT4_ARRAY),
        (&step_index, Type::INT4_ARRAY),
        (&stage, Type::TEXT_ARRAY),
        (&stage_name, Type::TEXT_ARRAY),
        (&step, Type::TEXT_ARRAY),
        (&step_name, Type::TEXT_ARRAY),
        (&step_type, Type::TEXT_ARRAY),
        (&status, Type::TEXT_ARRAY),
        (&attempt, Type::INT4_ARRAY),
        (&started_at, Type::INT8_ARRAY),
        (&ended_at, Type::INT8_ARRAY),
        (&outputs, Type::TEXT_ARRAY),
        (&message, Type::TEXT_ARRAY),
        (&log, Type::TEXT_ARRAY),
        (&due, Type::INT8),
        (&owner, Type::TEXT),
        (&lease_ms, Type::INT8),
        (&claim_tokens, Type::TEXT_ARRAY),
        (&(claim_tokens.len() as i64), Type::INT8),
    ];
    // A cached statement, its plan made without scans of whole tables or joins that hash or
    // sort one (see [`by_indexes!`]): a plan cached while `executions` was small, the cheapest
    // way to find ten rows among a few hundred, scanned the whole table once it was not, and
    // nothing replans it unless the table is analyzed. Planning each group with its values
    // instead (an unnamed statement) kept the plans right, at about a millisecond of the
    // server's CPU a group: 70 µs an execution in groups of 14.
    let types = typed.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>();
    let values = typed.iter().map(|(v, _)| *v).collect::<Vec<_>>();
    let statement = c
        .prepare_typed_cached(END_SQL, &types)
        .await
        .ctx("ending executions")?;
    let rows = by_indexes_alone(c, &statement, &values)
        .await
        .ctx("ending executions")?;
    // The statement has committed: a row that cannot be read is logged and left (a claim then
    // runs out as any lost lease does), never a reason to write the group again.
    let mut ended = std::collections::HashSet::new();
    let mut busy = std::collections::HashSet::new();
    let mut claims = Vec::new();
    for r in &rows {
        let row = (|| -> StoreResult<()> {
            let place = col::<i64>(r, 0)?;
            if place < 0 {
                busy.insert(-place);
                return Ok(());
            }
            ended.insert(place);
            if col::<Option<&str>>(r, END_CLAIMED)?.is_some() {
                claims.push(claimed_at(r, END_CLAIMED)?);
            }
            Ok(())
        })();
        if let Err(e) = row {
            tracing::error!(error = %crate::error::ErrorChain(&e), "reading a group of ends");
        }
    }
    Ok((1..)
        .zip(group)
        .map(|(place, e)| {
            if ended.contains(&place) {
                AtOnce::Ended(e.next.as_ref().and_then(|_| claims.pop()))
            } else if busy.contains(&place) {
                AtOnce::Busy
            } else {
                AtOnce::Declined
            }
        })
        .collect())
}

async fn finish(
    c: &impl GenericClient,
    id: &PlanExecutionId,
    final_status: &str,
    failure_message: Option<String>,
    now: Millis,
) -> StoreResult<()> {
    execute(
        c,
        "finishing an execution",
        "UPDATE executions SET status = $2, failure_message = $3, ended_at = $4, \
         started_at = COALESCE(started_at, $4), \
         lease_owner = NULL, lease_until = NULL, lease_token = NULL, wake_at = NULL, \
         control = NULL WHERE plan_execution_id = $1",
        &[
            &id.as_str(),
            &final_status,
            &failure_message.as_deref().map(text),
            &now,
        ],
    )
    .await?;
    sync_events(c, id, now, None).await
}
