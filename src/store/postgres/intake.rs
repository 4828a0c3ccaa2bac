//! Webhook events written together ([`super::groups`]): the events that arrive while intake's
//! writes are all in flight wait for the next free one, which stores the whole group (up to
//! [`MAX_GROUP`]) with one statement and one commit, after one more statement that numbers the
//! group's executions with one counter bump per pipeline.
//!
//! One statement and one commit per event bounded PostgreSQL's intake: each event cost the
//! server a statement's planning and execution, a commit and a WAL flush, with a pooled
//! connection held across each. A group costs that once. Every caller is still answered only
//! after its group's commit, so a 200 still means the event is on the server's disk.
//!
//! A group whose statement fails for a reason of the database (not an unreachable server or an
//! exhausted pool, which fail every event alike and store nothing) is written again event by
//! event, so that an event the database refuses fails alone.
//!
//! An event is queued for its write as soon as it is recorded, unless its id is not one this
//! node minted and the node must first take a block of row numbers (`event_ids.rs`): a caller
//! that goes away meanwhile has stored nothing.

use deadpool_postgres::{GenericClient, Pool};

use super::event_ids::Placed;
use super::executions;
use super::groups::{self, alike, Groups};
use crate::store::{NewExecution, StoreError, StoreResult, WebhookEvent};

/// At most this many events wait for a write; more fail with `Overloaded`, as a full SQLite
/// writer queue does.
const MAX_PENDING: usize = 8192;

/// Most events one statement stores.
pub(super) const MAX_GROUP: usize = 256;

/// Most payload bytes one statement carries (a group holds one event at least): with bodies of
/// up to 64 MiB (`max_body_bytes`), a group bound by its count alone could pass PostgreSQL's
/// 1 GB limit on one message.
const MAX_GROUP_BYTES: usize = 16 << 20;

/// How many groups are written at once: the events of the next group gather while these are
/// committing. Enough to keep the server's cores busy; few enough that each group holds many
/// events under load.
pub(super) const WRITES_IN_FLIGHT: u32 = 4;

/// Groups webhook events into shared writes; see the module's documentation.
pub(super) struct Intake(Groups<Events>);

/// The write that stores a group of events.
struct Events {
    pool: Pool,
}

/// An event waiting for a write.
struct Pending {
    event: WebhookEvent,
    placed: Placed,
    /// Given only with the event's `plan_execution_id`.
    execution: Option<NewExecution>,
}

impl Intake {
    /// Writes on `runtime` (the store's thread), up to `writes_in_flight` at once.
    pub(super) fn start(
        pool: Pool,
        runtime: tokio::runtime::Handle,
        writes_in_flight: u32,
    ) -> Self {
        Self(Groups::start(
            Events { pool },
            runtime,
            writes_in_flight,
            MAX_PENDING,
        ))
    }

    /// Waits until every write in flight has ended and nothing is queued: at shutdown, before
    /// the pool closes, once no more events come.
    pub(super) async fn flush(&self) {
        self.0.flush().await;
    }

    /// Stores `event` where it was placed and, when given, its execution (numbered), with
    /// whatever else is queued; answers once that write has committed, with the event back.
    pub(super) async fn record(
        &self,
        event: WebhookEvent,
        placed: Placed,
        execution: Option<NewExecution>,
    ) -> StoreResult<WebhookEvent> {
        let (event, result) = self
            .0
            .submit(Pending {
                event,
                placed,
                execution,
            })
            .await?;
        result.map(|()| event)
    }
}

impl groups::Write for Events {
    type Job = Pending;
    type Answer = (WebhookEvent, StoreResult<()>);
    const MAX_GROUP: usize = MAX_GROUP;
    const MAX_BYTES: usize = MAX_GROUP_BYTES;

    fn size(job: &Pending) -> usize {
        job.event.payload.len()
    }

    async fn write(&self, group: Vec<Pending>) -> Vec<Self::Answer> {
        let results = write_group(&self.pool, &group).await;
        metrics::histogram!(crate::store::sqlite::GROUP_SIZE_METRIC).record(group.len() as f64);
        group
            .into_iter()
            .zip(results)
            .map(|(p, result)| (p.event, result))
            .collect()
    }
}

/// Numbers the group's executions, then stores it; each event's result.
async fn write_group(pool: &Pool, group: &[Pending]) -> Vec<StoreResult<()>> {
    let all = |e: StoreError| {
        group
            .iter()
            .map(|_| Err(alike(&e, "writing webhook events")))
            .collect()
    };
    let c = match super::client(pool).await {
        Ok(c) => c,
        Err(e) => return all(e),
    };
    let numbered: Vec<_> = group
        .iter()
        .filter(|p| p.execution.is_some())
        .map(|p| (&p.event.scope, p.event.pipeline.as_str()))
        .collect();
    let mut numbers = match executions::next_run_sequences(&c, &numbered).await {
        Ok(numbers) => numbers.into_iter(),
        Err(e) => return all(e),
    };
    let rows: Vec<_> = group
        .iter()
        .map(|p| {
            let queued = p.execution.as_ref();
            (
                &p.event,
                p.placed,
                queued.map(|x| (x, numbers.next().expect("a number for each execution"))),
            )
        })
        .collect();
    match insert_events(&c, &rows).await {
        Ok(()) => group.iter().map(|_| Ok(())).collect(),
        // The database refused the statement: find which event it refused by writing each
        // alone, with the numbers already taken.
        Err(StoreError::Database { .. }) if rows.len() > 1 => {
            let mut results = Vec::with_capacity(rows.len());
            for row in &rows {
                results.push(insert_events(&c, std::slice::from_ref(row)).await);
            }
            results
        }
        Err(e) => all(e),
    }
}

/// An event to store, where, and, when it queues one, its execution with its run sequence
/// number.
pub(super) type EventRow<'a> = (&'a WebhookEvent, Placed, Option<(&'a NewExecution, i64)>);

/// Stores every event of `rows` and each execution given, in one statement.
pub(super) async fn insert_events(
    c: &impl GenericClient,
    rows: &[EventRow<'_>],
) -> StoreResult<()> {
    // The events' 16 columns ([`event_cols!`]), the three an execution adds (its pipeline's
    // name, trigger type and run sequence, NULL when the event queues none), where the event
    // goes (its `seq`, and its id again when it is found as a legacy one), then the lease an
    // execution is queued with for an idle worker ([`QueueLease`]: owner, token and length,
    // NULL without one), its end by the lease clock as a claim's.
    const INSERT: &str = concat!(
        "WITH e AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
         $5::text[], $6::text[], $7::text[], $8::text[], $9::bool[], $10::bytea[], $11::text[], \
         $12::text[], $13::text[], $14::text[], $15::text[], $16::int8[], $17::text[], \
         $18::text[], $19::int8[], $20::int8[], $21::text[], $22::text[], $23::text[], \
         $24::int8[]) AS e(",
        super::event_cols!(),
        ", pipeline_name, trigger_type, run_sequence, seq, legacy_id, lease_owner, lease_token, \
         lease_ms)), \
         queued AS (INSERT INTO executions (",
        super::execution_cols!(),
        ", event_seq, lease_owner, lease_until, lease_token) SELECT plan_execution_id, \
         account_id, org_id, project_id, pipeline_id, pipeline_name, 'Queued', trigger_type, \
         trigger_id, event_id, run_sequence, runtime_input, created_at, NULL, NULL, seq, \
         lease_owner, ",
        executions::lease_now!(),
        " + lease_ms, lease_token FROM e WHERE run_sequence IS NOT NULL) \
         INSERT INTO webhook_events (seq, legacy_id, ",
        super::event_cols!(),
        ") SELECT seq, legacy_id, ",
        super::event_cols!(),
        " FROM e"
    );
    let n = rows.len();
    let mut cols = Columns::with_capacity(n);
    for &(e, placed, queued) in rows {
        cols.event_id.push(e.event_id.as_str());
        cols.account_id.push(e.scope.account.as_str());
        cols.org_id.push(e.scope.org.as_str());
        cols.project_id.push(e.scope.project.as_str());
        cols.pipeline_id.push(&e.pipeline);
        cols.trigger_id.push(&e.trigger);
        cols.status.push(&e.status);
        cols.message.push(super::text(&e.message));
        cols.exception_occured.push(e.exception_occured);
        cols.payload.push(e.payload.as_bytes());
        cols.headers.push(e.headers.get());
        cols.runtime_input.push(super::text(&e.runtime_input));
        cols.condition_results.push(e.condition_results.get());
        cols.plan_execution_id
            .push(e.plan_execution_id.as_ref().map(|p| p.as_str()));
        cols.idempotency_key.push(e.idempotency_key.as_deref());
        cols.created_at.push(e.created_at);
        cols.pipeline_name
            .push(queued.map(|(x, _)| x.pipeline_name.as_str()));
        cols.trigger_type.push(queued.map(|(x, _)| x.trigger_type));
        cols.run_sequence.push(queued.map(|(_, n)| n));
        cols.seq.push(placed.seq);
        cols.legacy_id
            .push(placed.legacy.then(|| e.event_id.as_str()));
        let lease = queued.and_then(|(x, _)| x.lease.as_ref());
        cols.lease_owner.push(lease.map(|l| l.owner.as_str()));
        cols.lease_token.push(lease.map(|l| l.token.as_str()));
        cols.lease_ms.push(lease.map(|l| l.lease_ms));
    }
    super::execute(c, "recording webhook events", INSERT, &cols.params()).await?;
    Ok(())
}

/// [`insert_events`]'s values, a column each.
struct Columns<'a> {
    event_id: Vec<&'a str>,
    account_id: Vec<&'a str>,
    org_id: Vec<&'a str>,
    project_id: Vec<&'a str>,
    pipeline_id: Vec<&'a str>,
    trigger_id: Vec<&'a str>,
    status: Vec<&'a str>,
    message: Vec<std::borrow::Cow<'a, str>>,
    exception_occured: Vec<bool>,
    payload: Vec<&'a [u8]>,
    headers: Vec<&'a str>,
    runtime_input: Vec<std::borrow::Cow<'a, str>>,
    condition_results: Vec<&'a str>,
    plan_execution_id: Vec<Option<&'a str>>,
    idempotency_key: Vec<Option<&'a str>>,
    created_at: Vec<i64>,
    pipeline_name: Vec<Option<&'a str>>,
    trigger_type: Vec<Option<&'a str>>,
    run_sequence: Vec<Option<i64>>,
    seq: Vec<i64>,
    legacy_id: Vec<Option<&'a str>>,
    lease_owner: Vec<Option<&'a str>>,
    lease_token: Vec<Option<&'a str>>,
    lease_ms: Vec<Option<i64>>,
}

impl<'a> Columns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            event_id: Vec::with_capacity(n),
            account_id: Vec::with_capacity(n),
            org_id: Vec::with_capacity(n),
            project_id: Vec::with_capacity(n),
            pipeline_id: Vec::with_capacity(n),
            trigger_id: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            message: Vec::with_capacity(n),
            exception_occured: Vec::with_capacity(n),
            payload: Vec::with_capacity(n),
            headers: Vec::with_capacity(n),
            runtime_input: Vec::with_capacity(n),
            condition_results: Vec::with_capacity(n),
            plan_execution_id: Vec::with_capacity(n),
            idempotency_key: Vec::with_capacity(n),
            created_at: Vec::with_capacity(n),
            pipeline_name: Vec::with_capacity(n),
            trigger_type: Vec::with_capacity(n),
            run_sequence: Vec::with_capacity(n),
            seq: Vec::with_capacity(n),
            legacy_id: Vec::with_capacity(n),
            lease_owner: Vec::with_capacity(n),
            lease_token: Vec::with_capacity(n),
            lease_ms: Vec::with_capacity(n),
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 24] {
        [
            &self.event_id,
            &self.account_id,
            &self.org_id,
            &self.project_id,
            &self.pipeline_id,
            &self.trigger_id,
            &self.status,
            &self.message,
            &self.exception_occured,
            &self.payload,
            &self.headers,
            &self.runtime_input,
            &self.condition_results,
            &self.plan_execution_id,
            &self.idempotency_key,
            &self.created_at,
            &self.pipeline_name,
            &self.trigger_type,
            &self.run_sequence,
            &self.seq,
            &self.legacy_id,
            &self.lease_owner,
            &self.lease_token,
            &self.lease_ms,
        ]
    }
}
