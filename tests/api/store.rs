//! The store contract: the atomicity every backend promises in the `Store` docs, checked
//! through the trait with concurrent callers, so it holds by constraint and not by one writer.
//! Runs against the backend the suite runs on (`TRIGGERD_TEST_BACKEND`, SQLite by default).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinSet;
use triggerd::domain::event_rule::EventRuleSpec;
use triggerd::domain::ids::{
    AccountId, DeliveryId, EventId, Identifier, KeyId, LeaseToken, PlanExecutionId, ProjectRef,
};
use triggerd::store::executions::{
    Claim, Claimed, Control, ControlOutcome, NewManualExecution, NextClaim, QueueLease, RunState,
    Start, StepRecord, Work,
};
use triggerd::store::outbound::{
    AttemptOutcome, AttemptRecord, DeliveryRecord, DueDelivery, EventRuleRecord, NewDelivery, Next,
    RuleEffect,
};
use triggerd::store::{
    now_millis, ApiKeyRecord, EventFilter, NewExecution, PipelineRecord, RecordOutcome, Role,
    Store, StoreError, WebhookEvent, IDEMPOTENCY_WINDOW_MS,
};

use crate::helpers::{on_postgres, TestDatabase};

/// A fresh, migrated store with one project (`acme/default/payments`) and a pipeline `deploy`.
struct Fixture {
    store: Arc<dyn Store>,
    scope: ProjectRef,
    _db: TestDatabase,
}

async fn fixture() -> Fixture {
    let db = TestDatabase::new().await;
    let store = triggerd::store::open(&db.settings())
        .await
        .expect("the store opens");
    let scope = ProjectRef {
        account: AccountId::parse("acme").expect("account"),
        org: Identifier::parse("default", "org").expect("org"),
        project: Identifier::parse("payments", "project").expect("project"),
    };
    store
        .put_account(&scope.account, "Acme")
        .await
        .expect("account");
    store
        .put_project(&scope, "Payments")
        .await
        .expect("project");
    let now = now_millis();
    store
        .put_pipeline(PipelineRecord {
            scope: scope.clone(),
            identifier: Identifier::parse("deploy", "pipeline").expect("id"),
            name: "Deploy".into(),
            spec: json!({"pipeline": {"identifier": "deploy", "name": "Deploy", "stages": []}}),
            created_at: now,
            updated_at: now,
        })
        .await
        .expect("pipeline");
    Fixture {
        store,
        scope,
        _db: db,
    }
}

fn event(scope: &ProjectRef, key: Option<&str>, created_at: i64) -> WebhookEvent {
    WebhookEvent {
        event_id: EventId::generate(),
        scope: scope.clone(),
        pipeline: "deploy".into(),
        trigger: "on_push".into(),
        status: "TARGET_EXECUTION_REQUESTED".into(),
        message: String::new(),
        exception_occured: false,
        payload: "{}".into(),
        headers: triggerd::store::json_text("{}".into()).unwrap(),
        runtime_input: String::new(),
        condition_results: triggerd::store::json_text("[]".into()).unwrap(),
        plan_execution_id: Some(PlanExecutionId::generate()),
        idempotency_key: key.map(str::to_owned),
        created_at,
    }
}

fn queued() -> Option<NewExecution> {
    Some(NewExecution {
        plan_execution_id: PlanExecutionId::generate(),
        pipeline_name: "Deploy".into(),
        trigger_type: "WEBHOOK_CUSTOM",
        lease: None,
    })
}

/// Records `event` with an execution whose id is the event's.
async fn record(store: &dyn Store, event: WebhookEvent) -> RecordOutcome {
    let mut execution = queued();
    if let (Some(x), Some(plan)) = (&mut execution, &event.plan_execution_id) {
        x.plan_execution_id = plan.clone();
    }
    store
        .record_event(event, execution)
        .await
        .expect("record_event")
}

#[tokio::test]
async fn concurrent_events_with_one_idempotency_key_store_exactly_one() {
    let f = fixture().await;
    let now = now_millis();
    let mut set = JoinSet::new();
    for _ in 0..24 {
        let store = f.store.clone();
        let e = event(&f.scope, Some("deploy-42"), now);
        set.spawn(async move { record(store.as_ref(), e).await });
    }
    let (mut stored, mut replayed) = (Vec::new(), Vec::new());
    while let Some(outcome) = set.join_next().await {
        match outcome.expect("task") {
            RecordOutcome::Stored(e) => stored.push(e.event_id),
            RecordOutcome::Replayed(e) => replayed.push(e.event_id),
        }
    }

    assert_eq!(stored.len(), 1, "exactly one is stored");
    assert_eq!(replayed.len(), 23);
    assert!(replayed.iter().all(|id| *id == stored[0]), "all replay it");
    let executions = f
        .store
        .list_executions(&f.scope, &Default::default(), None, 100)
        .await
        .expect("list");
    assert_eq!(executions.items.len(), 1, "one execution queued");
}

#[tokio::test]
async fn an_idempotency_key_is_free_again_after_its_window() {
    let f = fixture().await;
    let first_at = now_millis() - IDEMPOTENCY_WINDOW_MS - 1_000;

    let first = record(f.store.as_ref(), event(&f.scope, Some("k"), first_at)).await;
    let second = record(f.store.as_ref(), event(&f.scope, Some("k"), now_millis())).await;
    let third = record(f.store.as_ref(), event(&f.scope, Some("k"), now_millis())).await;

    let (RecordOutcome::Stored(_), RecordOutcome::Stored(second), RecordOutcome::Replayed(third)) =
        (first, second, third)
    else {
        panic!("stored, stored again after the window, then replayed");
    };
    assert_eq!(second.event_id, third.event_id);
}

#[tokio::test]
async fn of_root_keys_stored_at_once_exactly_one_is_kept_until_it_is_revoked() {
    let f = fixture().await;
    let root_key = || ApiKeyRecord {
        key_id: KeyId::generate(),
        account: AccountId::parse(triggerd::domain::ids::ROOT_ACCOUNT).expect("root"),
        name: "root".into(),
        role: Role::Admin,
        projects: None,
        hash: "not a real hash".into(),
        created_at: now_millis(),
        expires_at: None,
        revoked_at: None,
    };
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let (store, key) = (f.store.clone(), root_key());
        tasks.spawn(async move { (key.key_id.clone(), store.insert_api_key(key).await) });
    }
    let mut stored = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (id, result) = done.expect("task");
        if result.expect("insert") {
            stored.push(id);
        }
    }
    assert_eq!(stored.len(), 1, "one root key stored: {stored:?}");
    assert!(f
        .store
        .revoke_api_key(
            &AccountId::parse(triggerd::domain::ids::ROOT_ACCOUNT).expect("root"),
            &stored[0]
        )
        .await
        .expect("revoke"));
    assert!(f.store.insert_api_key(root_key()).await.expect("insert"));
    // Keys of ordinary accounts are not limited.
    for _ in 0..2 {
        let key = ApiKeyRecord {
            account: f.scope.account.clone(),
            ..root_key()
        };
        assert!(f.store.insert_api_key(key).await.expect("insert"));
    }
}

#[tokio::test]
async fn concurrent_runs_of_one_pipeline_get_distinct_consecutive_numbers() {
    let f = fixture().await;
    let mut set = JoinSet::new();
    for i in 0..40 {
        let store = f.store.clone();
        let scope = f.scope.clone();
        set.spawn(async move {
            if i % 2 == 0 {
                store
                    .queue_execution(NewManualExecution {
                        scope,
                        pipeline: Identifier::parse("deploy", "pipeline").expect("id"),
                        pipeline_name: "Deploy".into(),
                        runtime_input: String::new(),
                    })
                    .await
                    .expect("queue")
                    .run_sequence
            } else {
                let RecordOutcome::Stored(e) =
                    record(store.as_ref(), event(&scope, None, now_millis())).await
                else {
                    panic!("no key, never replayed");
                };
                let id = e.plan_execution_id.expect("execution");
                store
                    .get_execution(&id)
                    .await
                    .expect("read")
                    .expect("exists")
                    .run_sequence
            }
        });
    }
    let mut numbers = Vec::new();
    while let Some(n) = set.join_next().await {
        numbers.push(n.expect("task"));
    }
    numbers.sort_unstable();

    assert_eq!(numbers, (1..=40).collect::<Vec<i64>>());
}

#[tokio::test]
async fn concurrent_claimers_never_get_the_same_execution() {
    let f = fixture().await;
    for _ in 0..30 {
        record(f.store.as_ref(), event(&f.scope, None, now_millis())).await;
    }
    let mut set = JoinSet::new();
    for claimer in 0..4 {
        let store = f.store.clone();
        set.spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..6 {
                let claims = store
                    .claim_executions(&format!("node-{claimer}"), 3, now_millis(), 60_000)
                    .await
                    .expect("claim");
                mine.extend(claims.into_iter().map(|c| c.claim.id.to_string()));
            }
            mine
        });
    }
    let mut all = Vec::new();
    while let Some(ids) = set.join_next().await {
        all.extend(ids.expect("task"));
    }

    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "no execution claimed twice");
    assert_eq!(all.len(), 30, "every queued execution claimed once");
}

/// Long enough never to run out during a test.
const LONG_LEASE: i64 = 60_000;
/// A lease that the test outwaits (see [`outlive_short_lease`]).
const SHORT_LEASE: i64 = 50;

/// Waits until a lease of [`SHORT_LEASE`] renewed before the call has run out.
async fn outlive_short_lease() {
    tokio::time::sleep(Duration::from_millis(4 * SHORT_LEASE as u64)).await;
}

/// A step record of a `Run` step.
fn step(stage_index: u32, step_index: u32, status: &str) -> StepRecord {
    StepRecord {
        stage_index,
        step_index,
        stage: format!("s{stage_index}"),
        stage_name: format!("S{stage_index}"),
        step: format!("t{step_index}"),
        step_name: format!("T{step_index}"),
        step_type: "Run".into(),
        status: status.into(),
        attempt: 0,
        started_at: None,
        ended_at: None,
        outputs: Default::default(),
        message: None,
        log: None,
    }
}

/// Claims up to ten executions for `owner` with a long lease: the claims alone.
async fn claim(f: &Fixture, owner: &str) -> Vec<Claim> {
    f.store
        .claim_executions(owner, 10, now_millis(), LONG_LEASE)
        .await
        .expect("claim")
        .into_iter()
        .map(|c| c.claim)
        .collect()
}

/// Records one event and claims its execution for `node-a` with a long lease. What the store
/// read with the claim, if anything, is what its worker would read.
async fn claimed(f: &Fixture) -> Claim {
    record(f.store.as_ref(), event(&f.scope, None, now_millis())).await;
    let mut claims = f
        .store
        .claim_executions("node-a", 10, now_millis(), LONG_LEASE)
        .await
        .expect("claim");
    assert_eq!(claims.len(), 1, "one execution claimed");
    let Claimed { claim, work } = claims.remove(0);
    // PostgreSQL reads what the worker reads with the claim, SQLite leaves it to the worker.
    assert_eq!(work.is_some(), on_postgres(), "{work:?}");
    if let Some(work) = work {
        same_work(f, &claim, &work).await;
    }
    claim
}

/// `work`, read with `claim`, is what the claim's worker reads now, with the event that
/// queued it and the pipeline it starts.
async fn same_work(f: &Fixture, claim: &Claim, work: &Work) {
    let read = f
        .store
        .load_work(&claim.id)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(format!("{work:?}"), format!("{read:?}"));
    assert!(work.event.is_some() && work.pipeline.is_some(), "{work:?}");
}

/// Ends `claim`'s execution with `status` and nothing else to store, claiming the next with
/// `next`.
async fn end(
    f: &Fixture,
    claim: &Claim,
    status: &str,
    next: Option<&NextClaim>,
) -> Result<Option<Claimed>, StoreError> {
    f.store
        .finish_execution(claim, None, Vec::new(), status, None, now_millis(), next)
        .await
}

/// Makes `claim`'s lease run out: renewed for [`SHORT_LEASE`], then outwaited.
async fn let_run_out(f: &Fixture, claim: &Claim) {
    f.store
        .renew_lease(claim, SHORT_LEASE)
        .await
        .expect("renew while live");
    outlive_short_lease().await;
}

/// The execution `id` as a worker reads it; it must exist.
async fn run_of(f: &Fixture, id: &PlanExecutionId) -> RunState {
    f.store.load_run(id).await.expect("load").expect("exists")
}

fn is_lease_lost<T>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::LeaseLost))
}

/// The execution `event` queues (under the id it names), with `lease` if any; and that id.
fn execution_of(
    event: &WebhookEvent,
    lease: Option<QueueLease>,
) -> (NewExecution, PlanExecutionId) {
    let plan = event.plan_execution_id.clone().expect("an execution");
    let execution = NewExecution {
        plan_execution_id: plan.clone(),
        pipeline_name: "Deploy".into(),
        trigger_type: "WEBHOOK_CUSTOM",
        lease,
    };
    (execution, plan)
}

/// Records `event` with its execution queued under `lease` (for an idle worker, as intake
/// does when one is free).
async fn record_leased(f: &Fixture, event: WebhookEvent, lease: QueueLease) -> PlanExecutionId {
    let (execution, plan) = execution_of(&event, Some(lease));
    let outcome = f
        .store
        .record_event(event, Some(execution))
        .await
        .expect("record_event");
    assert!(matches!(outcome, RecordOutcome::Stored(_)), "{outcome:?}");
    plan
}

/// An execution queued with a lease (for an idle worker of the node that queues it) is that
/// worker's, as if claimed: no claim takes it while the lease lasts, the worker's writes are
/// fenced by its token, and another token is refused. Once the lease runs out without the
/// worker (its node died before running it), a claim takes the execution over and the old
/// token is refused.
#[tokio::test]
async fn an_execution_queued_with_a_lease_is_its_workers_until_the_lease_runs_out() {
    let f = fixture().await;
    let lease = |lease_ms| QueueLease {
        owner: "node-a".into(),
        token: LeaseToken::generate(),
        lease_ms,
    };
    let held = lease(LONG_LEASE);
    let id = record_leased(&f, event(&f.scope, None, now_millis()), held.clone()).await;
    let worker = Claim {
        id: id.clone(),
        token: held.token,
    };

    assert!(
        claim(&f, "node-b").await.is_empty(),
        "leased, not claimable"
    );
    let stranger = Claim {
        id: id.clone(),
        token: LeaseToken::generate(),
    };
    assert!(is_lease_lost(
        f.store.renew_lease(&stranger, LONG_LEASE).await
    ));
    assert_eq!(run_of(&f, &id).await.execution.status, "Queued");
    let ended = end(&f, &worker, "Success", None)
        .await
        .expect("the worker ends it");
    assert!(ended.is_none(), "{ended:?}");
    assert_eq!(run_of(&f, &id).await.execution.status, "Success");

    let orphan = lease(SHORT_LEASE);
    let id = record_leased(&f, event(&f.scope, None, now_millis()), orphan.clone()).await;
    assert!(
        claim(&f, "node-b").await.is_empty(),
        "leased, not claimable"
    );
    outlive_short_lease().await;
    let taken = claim(&f, "node-b").await;
    assert_eq!(
        taken.iter().map(|c| &c.id).collect::<Vec<_>>(),
        [&id],
        "claimed once the lease ran out"
    );
    let old = Claim {
        id,
        token: orphan.token,
    };
    assert!(is_lease_lost(f.store.renew_lease(&old, LONG_LEASE).await));
    assert!(is_lease_lost(end(&f, &old, "Success", None).await));

    // Recorded at once, so stored together (one group on PostgreSQL, one commit on SQLite):
    // the leased ones keep their leases, the others are claimable.
    let mut set = JoinSet::new();
    for n in 0..8 {
        let f_store = f.store.clone();
        let e = event(&f.scope, None, now_millis());
        let leased = (n % 2 == 0).then(|| lease(LONG_LEASE));
        set.spawn(async move {
            let (execution, id) = execution_of(&e, leased.clone());
            f_store
                .record_event(e, Some(execution))
                .await
                .expect("record_event");
            (id, leased)
        });
    }
    let mut free = HashSet::new();
    let mut held = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined.expect("task") {
            (id, None) => {
                free.insert(id.to_string());
            }
            (id, Some(lease)) => held.push(Claim {
                id,
                token: lease.token,
            }),
        }
    }
    let claimed: HashSet<String> = claim(&f, "node-b")
        .await
        .iter()
        .map(|c| c.id.to_string())
        .collect();
    assert_eq!(claimed, free, "only the executions queued without a lease");
    for worker in &held {
        f.store
            .renew_lease(worker, LONG_LEASE)
            .await
            .expect("each leased one is its worker's");
    }
}

/// The engine reserves an idle worker for intake, one per free permit and none once shutdown
/// began; the worker runs the execution queued with its lease with no claim (none could take
/// it: the lease outlasts the test, and the test above shows that the store keeps it), then is
/// free again. A reservation dropped unused (nothing was stored) frees its worker too.
#[tokio::test]
async fn an_idle_worker_runs_the_execution_queued_with_its_lease() {
    let f = fixture().await;
    let now = now_millis();
    f.store
        .put_pipeline(PipelineRecord {
            scope: f.scope.clone(),
            identifier: Identifier::parse("deploy", "pipeline").expect("id"),
            name: "Deploy".into(),
            spec: json!({"pipeline": {"identifier": "deploy", "name": "Deploy", "stages": [
                {"stage": {"identifier": "s", "name": "S", "steps": [
                    {"step": {"identifier": "w", "name": "W", "type": "Wait",
                              "spec": {"duration": "0s"}}}]}}]}}),
            created_at: now,
            updated_at: now,
        })
        .await
        .expect("pipeline");
    let work_root = tempfile::tempdir().expect("work root");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (engine, task) = triggerd::engine::start(
        f.store.clone(),
        triggerd::engine::EngineOptions {
            workers: 1,
            grace: Duration::from_secs(5),
            work_root: work_root.path().to_owned(),
            launch: Default::default(),
            node_id: "node-a".into(),
            lease: Duration::from_millis(LONG_LEASE as u64),
        },
        shutdown.clone(),
    );
    let idle = || async {
        for _ in 0..500 {
            if let Some(worker) = engine.idle_worker() {
                return worker;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no worker became idle");
    };

    let worker = idle().await;
    assert!(
        engine.idle_worker().is_none(),
        "its only worker is reserved"
    );
    let lease = worker.lease();
    assert_eq!(
        (lease.owner.as_str(), lease.lease_ms),
        ("node-a", LONG_LEASE)
    );
    let event = event(&f.scope, None, now_millis());
    let (execution, id) = execution_of(&event, Some(lease));
    let store = f.store.clone();
    let outcome = worker
        .queue(async move { store.record_event(event, Some(execution)).await })
        .await
        .expect("queued");
    assert!(matches!(outcome, RecordOutcome::Stored(_)), "{outcome:?}");
    let mut status = String::new();
    for _ in 0..500 {
        status = run_of(&f, &id).await.execution.status;
        if status == "Success" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, "Success", "run by the worker it was leased to");

    drop(idle().await);
    drop(idle().await);
    // A write that stores nothing (here, refused as an overloaded store would) frees the
    // worker too, and its error reaches the caller.
    let refused = idle()
        .await
        .queue(async { Err(StoreError::Overloaded) })
        .await;
    assert!(
        matches!(refused, Err(StoreError::Overloaded)),
        "{refused:?}"
    );
    drop(idle().await);
    shutdown.cancel();
    task.await.expect("the engine stops");
    assert!(engine.idle_worker().is_none(), "none once shutdown began");
}

/// A worker that ends an execution claims the next runnable one in the same write: with a
/// fresh token under its lease, fenced like any claim, oldest first; without `next` it claims
/// nothing, and with nothing runnable there is no claim.
#[tokio::test]
async fn finishing_an_execution_claims_the_next_one_for_the_same_worker() {
    let f = fixture().await;
    let first = claimed(&f).await;
    record(f.store.as_ref(), event(&f.scope, None, now_millis())).await;
    record(f.store.as_ref(), event(&f.scope, None, now_millis() + 1)).await;
    let next = NextClaim {
        owner: "node-a".into(),
        lease_ms: LONG_LEASE,
    };

    let Claimed {
        claim: second,
        work,
    } = end(&f, &first, "Success", Some(&next))
        .await
        .expect("finish")
        .expect("the next execution is claimed");
    assert_eq!(work.is_some(), on_postgres(), "{work:?}");
    if let Some(work) = work {
        same_work(&f, &second, &work).await;
    }
    assert_eq!(run_of(&f, &first.id).await.execution.status, "Success");
    assert_ne!(second.id, first.id);
    assert_ne!(second.token, first.token);
    let others = claim(&f, "node-b").await;
    assert_eq!(
        others.len(),
        1,
        "the claimed one is leased, the third is not: {others:?}"
    );
    assert_ne!(others[0].id, second.id);
    assert!(
        run_of(&f, &second.id).await.execution.created_at
            < run_of(&f, &others[0].id).await.execution.created_at,
        "the oldest is claimed first"
    );
    f.store
        .renew_lease(&second, LONG_LEASE)
        .await
        .expect("the claim holds a live lease");

    let none = end(&f, &second, "Success", None)
        .await
        .expect("finish without next");
    assert!(none.is_none(), "no claim without next");
    let nothing_left = end(&f, &others[0], "Failed", Some(&next))
        .await
        .expect("finish with nothing runnable");
    assert!(nothing_left.is_none());
    assert_eq!(run_of(&f, &others[0].id).await.execution.status, "Failed");
}

/// A worker whose lease ran out, with nothing taking its execution over, still ends it; the
/// claim of the next execution in the same write must not hand it that execution again, though
/// it was due before the other (by its lease's end) as the rows stood before the write. It gets
/// the other one instead, or none. PostgreSQL writes both in one statement, which reads the
/// rows as they were before it: there the claim leaves the ended execution out by its id, and
/// its row lock would skip a row the statement changed anyway.
#[tokio::test]
async fn a_worker_ending_an_execution_whose_lease_ran_out_is_not_handed_it_again() {
    let f = fixture().await;
    let next = NextClaim {
        owner: "node-a".into(),
        lease_ms: LONG_LEASE,
    };
    let alone = claimed(&f).await;
    let_run_out(&f, &alone).await;
    let claimed_next = end(&f, &alone, "Success", Some(&next))
        .await
        .expect("finish after the lease ran out");
    assert!(claimed_next.is_none(), "nothing else was runnable");
    assert_eq!(run_of(&f, &alone.id).await.execution.status, "Success");

    let first = claimed(&f).await;
    let_run_out(&f, &first).await;
    record(f.store.as_ref(), event(&f.scope, None, now_millis())).await;
    let second = end(&f, &first, "Failed", Some(&next))
        .await
        .expect("finish after the lease ran out")
        .expect("the other execution is claimed")
        .claim;
    assert_ne!(second.id, first.id);
    assert_eq!(run_of(&f, &first.id).await.execution.status, "Failed");
    f.store
        .renew_lease(&second, LONG_LEASE)
        .await
        .expect("the claim holds a live lease");
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_its_old_owner_can_no_longer_renew_it() {
    let f = fixture().await;
    let first = claimed(&f).await;

    let while_live = claim(&f, "node-b").await;
    let_run_out(&f, &first).await;
    let after_expiry = claim(&f, "node-b").await;
    let renewed_by_old_owner = f.store.renew_lease(&first, LONG_LEASE).await;

    assert!(while_live.is_empty(), "a live lease is not taken");
    assert_eq!(after_expiry.len(), 1);
    assert_eq!(
        after_expiry[0].id, first.id,
        "an expired lease is taken over"
    );
    assert_ne!(after_expiry[0].token, first.token, "with a new token");
    assert!(is_lease_lost(renewed_by_old_owner), "the old owner lost it");
}

#[tokio::test]
async fn a_lease_that_ran_out_stays_its_workers_until_something_takes_it_over() {
    let f = fixture().await;
    let claim = claimed(&f).await;
    assert!(f
        .store
        .start_execution(
            &claim,
            json!({"pipeline": {}}),
            vec![step(0, 0, "NotStarted")],
            now_millis()
        )
        .await
        .expect("start"));

    // A stalled worker comes back: nothing took its execution over, so it goes on.
    let_run_out(&f, &claim).await;
    f.store
        .update_step(&claim, step(0, 0, "Running"))
        .await
        .expect("a write after the expiry, nobody having taken over");
    f.store
        .renew_lease(&claim, LONG_LEASE)
        .await
        .expect("a renewal after the expiry");

    // A pause acts directly on an execution whose lease ran out, and takes the lease.
    let_run_out(&f, &claim).await;
    let paused = f
        .store
        .control_execution(&claim.id, Control::Pause, None, now_millis())
        .await
        .expect("control");
    let update = f.store.update_step(&claim, step(0, 0, "Success")).await;
    let renew = f.store.renew_lease(&claim, LONG_LEASE).await;

    assert_eq!(paused, ControlOutcome::Applied, "no live worker holds it");
    assert!(is_lease_lost(update), "update_step after the pause");
    assert!(is_lease_lost(renew), "renew_lease after the pause");
    let run = run_of(&f, &claim.id).await;
    assert_eq!(run.execution.status, "Paused");
    assert_eq!(
        run.steps[0].status, "Running",
        "the write before the pause only"
    );
}

#[tokio::test]
async fn a_worker_whose_lease_was_taken_over_writes_nothing_and_the_new_one_goes_on() {
    let f = fixture().await;
    let old = claimed(&f).await;
    let started = f
        .store
        .start_execution(
            &old,
            json!({"pipeline": {}}),
            vec![step(0, 0, "NotStarted"), step(0, 1, "NotStarted")],
            now_millis(),
        )
        .await
        .expect("start");
    let mut running = step(0, 0, "Running");
    running.attempt = 1;
    running.started_at = Some(now_millis());
    f.store
        .update_step(&old, running.clone())
        .await
        .expect("update under a live lease");
    let_run_out(&f, &old).await;
    let mut taken = f
        .store
        .claim_executions("node-b", 10, now_millis(), LONG_LEASE)
        .await
        .expect("claim");
    assert_eq!(taken.len(), 1, "taken over");
    let Claimed { claim: new, work } = taken.remove(0);
    // It has started: its worker reads it with its steps, not from the claim.
    assert!(work.is_none(), "{work:?}");

    // Everything the old worker might still try, as it wakes up from its pause.
    let mut done = running.clone();
    done.status = "Success".into();
    done.log = Some("ran twice\n".into());
    let mut restarted = step(0, 0, "NotStarted");
    restarted.step = "other".into();
    let refused = [
        (
            "start_execution",
            is_lease_lost(
                f.store
                    .start_execution(
                        &old,
                        json!({"pipeline": {"x": 1}}),
                        vec![restarted],
                        now_millis(),
                    )
                    .await,
            ),
        ),
        (
            "update_step",
            is_lease_lost(f.store.update_step(&old, done.clone()).await),
        ),
        (
            "park_execution",
            is_lease_lost(f.store.park_execution(&old, now_millis() + 60_000).await),
        ),
        (
            "hold_execution",
            is_lease_lost(f.store.hold_execution(&old, "Paused", None).await),
        ),
        (
            "finish_execution",
            is_lease_lost(
                f.store
                    .finish_execution(
                        &old,
                        None,
                        Vec::new(),
                        "Failed",
                        Some("stale".into()),
                        now_millis(),
                        None,
                    )
                    .await,
            ),
        ),
        (
            "finish_execution, starting it too",
            is_lease_lost(
                f.store
                    .finish_execution(
                        &old,
                        Some(Start {
                            pipeline_spec: json!({"pipeline": {"x": 1}}),
                            steps: vec![step(0, 0, "NotStarted")],
                            at: now_millis(),
                        }),
                        vec![done.clone()],
                        "Success",
                        None,
                        now_millis(),
                        None,
                    )
                    .await,
            ),
        ),
        (
            "renew_lease",
            is_lease_lost(f.store.renew_lease(&old, LONG_LEASE).await),
        ),
        (
            "release_lease",
            is_lease_lost(f.store.release_lease(&old).await),
        ),
    ];
    let run = run_of(&f, &old.id).await;
    let steps = f.store.list_steps(&old.id).await.expect("steps");
    let claimed_meanwhile = claim(&f, "node-c").await;

    assert!(started, "the first start stores the steps");
    for (write, lost) in refused {
        assert!(lost, "{write} under the old claim fails with LeaseLost");
    }
    assert_eq!(
        run.execution.status, "Running",
        "not paused, parked or finished"
    );
    assert_eq!(run.failure_message, None);
    assert_eq!(
        run.pipeline_spec,
        Some(json!({"pipeline": {}})),
        "snapshot kept"
    );
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].step, "t0");
    assert_eq!(
        steps[0].status, "Running",
        "the old worker's step result is refused"
    );
    assert_eq!(steps[0].log, None);
    assert!(
        claimed_meanwhile.is_empty(),
        "the old claim's release left the new lease alone"
    );

    // The new claim's writes go through.
    assert_eq!(
        f.store.renew_lease(&new, LONG_LEASE).await.expect("renew"),
        None
    );
    f.store.update_step(&new, done).await.expect("update");
    end(&f, &new, "Success", None).await.expect("finish");
    let run = run_of(&f, &new.id).await;
    assert_eq!(run.execution.status, "Success");
    assert_eq!(run.steps[0].status, "Success");
    assert!(
        is_lease_lost(f.store.update_step(&new, step(0, 1, "Running")).await),
        "a finished execution's lease is gone"
    );
}

#[tokio::test]
async fn every_claim_gets_a_token_of_its_own() {
    let f = fixture().await;
    for _ in 0..5 {
        record(f.store.as_ref(), event(&f.scope, None, now_millis())).await;
    }
    let first = claim(&f, "node-a").await;
    for claim in &first {
        let_run_out(&f, claim).await;
    }
    let second = claim(&f, "node-a").await;

    let ids = |claims: &[Claim]| claims.iter().map(|c| c.id.clone()).collect::<HashSet<_>>();
    assert_eq!(first.len(), 5);
    assert_eq!(
        ids(&first),
        ids(&second),
        "the same executions, claimed again"
    );
    let tokens: HashSet<_> = first
        .iter()
        .chain(&second)
        .map(|c| c.token.clone())
        .collect();
    assert_eq!(tokens.len(), 10, "no two claims share a token");
}

#[tokio::test]
async fn a_renewal_tells_the_worker_of_an_abort_waiting_for_it() {
    let f = fixture().await;
    let claim = claimed(&f).await;

    let outcome = f
        .store
        .control_execution(&claim.id, Control::Abort, None, now_millis())
        .await
        .expect("control");
    let renewed = f
        .store
        .renew_lease(&claim, LONG_LEASE)
        .await
        .expect("renew");

    assert_eq!(outcome, ControlOutcome::Signalled, "its worker holds it");
    assert_eq!(renewed, Some(Control::Abort));
}

#[tokio::test]
async fn an_execution_whose_lease_ran_out_is_aborted_at_once_and_its_worker_is_refused() {
    let f = fixture().await;
    let claim = claimed(&f).await;
    f.store
        .start_execution(
            &claim,
            json!({"pipeline": {}}),
            vec![step(0, 0, "Running")],
            now_millis(),
        )
        .await
        .expect("start");
    let_run_out(&f, &claim).await;

    let outcome = f
        .store
        .control_execution(&claim.id, Control::Abort, None, now_millis())
        .await
        .expect("control");
    let late = end(&f, &claim, "Success", None).await;

    assert_eq!(outcome, ControlOutcome::Applied, "no live worker holds it");
    assert!(is_lease_lost(late));
    let run = run_of(&f, &claim.id).await;
    assert_eq!(run.execution.status, "Aborted");
    assert_eq!(run.steps[0].status, "Aborted");
}

#[tokio::test]
async fn steps_are_upserted_and_read_back_in_order() {
    let f = fixture().await;
    let claim = claimed(&f).await;
    let id = claim.id.clone();
    f.store
        .start_execution(
            &claim,
            json!({"pipeline": {}}),
            vec![
                step(1, 0, "NotStarted"),
                step(0, 0, "NotStarted"),
                step(0, 1, "NotStarted"),
            ],
            now_millis(),
        )
        .await
        .expect("start");
    let mut done = step(0, 1, "Success");
    done.outputs.insert("VERSION".into(), "1.2.3".into());
    done.log = Some("built\n".into());
    f.store.update_step(&claim, done).await.expect("update");

    let steps = f.store.list_steps(&id).await.expect("steps");
    let run = run_of(&f, &id).await;

    let order: Vec<_> = steps
        .iter()
        .map(|s| (s.stage_index, s.step_index))
        .collect();
    assert_eq!(order, [(0, 0), (0, 1), (1, 0)]);
    assert_eq!(steps[1].status, "Success");
    assert_eq!(steps[1].outputs["VERSION"], "1.2.3");
    assert_eq!(steps[1].log.as_deref(), Some("built\n"));
    assert_eq!(run.execution.status, "Running");
    assert_eq!(run.steps.len(), 3);
    assert_eq!(run.steps[1].log, None, "load_run leaves logs out");
}

#[tokio::test]
async fn an_execution_is_started_and_finished_in_one_write_once_and_only_if_it_had_not_started() {
    // With an event rule, the start's state is written and read for its events before the end;
    // without one, each step is written once, as it ended. Both store the same end.
    let f = fixture().await;
    put_rule(&f, rule(&f.scope)).await;
    start_and_finish_in_one_write(&f).await;
    let f = fixture().await;
    let start = start_and_finish_in_one_write(&f).await;

    // Once started, a start with the end is refused and changes nothing.
    let other = claimed(&f).await;
    f.store
        .start_execution(
            &other,
            json!({"pipeline": {}}),
            vec![step(0, 0, "NotStarted")],
            start.at,
        )
        .await
        .expect("start");
    let refused = f
        .store
        .finish_execution(
            &other,
            Some(start),
            Vec::new(),
            "Success",
            None,
            now_millis(),
            None,
        )
        .await;
    let refusal = match &refused {
        Err(e @ StoreError::Database { .. }) => std::error::Error::source(e).map(|s| s.to_string()),
        _ => None,
    };
    assert_eq!(
        refusal.as_deref(),
        Some("the execution had started already"),
        "an execution that had started: {refused:?}"
    );
    let run = run_of(&f, &other.id).await;
    assert_eq!(run.execution.status, "Running", "nothing changed");
    assert_eq!(run.pipeline_spec, Some(json!({"pipeline": {}})));
    assert_eq!(run.steps.len(), 1);
}

/// Starts and finishes a claimed execution in one write and checks what it stored; returns the
/// start it wrote.
async fn start_and_finish_in_one_write(f: &Fixture) -> Start {
    let claim = claimed(f).await;
    let started_at = now_millis() - 5;
    let start = Start {
        pipeline_spec: json!({"pipeline": {"identifier": "deploy"}}),
        steps: vec![
            step(0, 0, "NotStarted"),
            step(0, 1, "NotStarted"),
            step(1, 0, "NotStarted"),
        ],
        at: started_at,
    };
    // Every column of a step holds a value of its own, so that two columns swapped on the
    // way to the database show.
    let waited = StepRecord {
        stage_index: 0,
        step_index: 0,
        stage: "build".into(),
        stage_name: "Build it".into(),
        step: "wait".into(),
        step_name: "Wait a bit".into(),
        step_type: "Wait".into(),
        status: "Success".into(),
        attempt: 1,
        started_at: Some(started_at + 1),
        ended_at: Some(started_at + 2),
        outputs: [("KEY".to_string(), "value".to_string())].into(),
        message: Some("waited".into()),
        log: Some("a line\n".into()),
    };

    f.store
        .finish_execution(
            &claim,
            Some(start.clone()),
            vec![waited.clone(), step(0, 1, "Skipped")],
            "Failed",
            Some("why".into()),
            now_millis(),
            None,
        )
        .await
        .expect("start and finish");

    let run = run_of(f, &claim.id).await;
    assert_eq!(run.execution.status, "Failed");
    assert_eq!(run.execution.started_at, Some(started_at));
    assert!(run.execution.ended_at.is_some_and(|t| t >= started_at));
    assert_eq!(run.pipeline_spec, Some(start.pipeline_spec.clone()));
    assert_eq!(run.failure_message.as_deref(), Some("why"));
    let steps: Vec<_> = run
        .steps
        .iter()
        .map(|s| (s.status.as_str(), s.attempt))
        .collect();
    assert_eq!(
        steps,
        [("Success", 1), ("Skipped", 0), ("NotStarted", 0)],
        "the start's steps, then the updates"
    );
    let stored = f.store.list_steps(&claim.id).await.expect("steps");
    assert_eq!(stored[0], waited, "every column as written");
    start
}

fn rule(scope: &ProjectRef) -> EventRuleRecord {
    let now = now_millis();
    EventRuleRecord {
        scope: scope.clone(),
        identifier: Identifier::parse("ops", "rule").expect("id"),
        spec: serde_json::from_value::<EventRuleSpec>(
            json!({"url": "http://127.0.0.1:9/hook", "sendEverything": true}),
        )
        .expect("spec"),
        secret: "whsec_test".into(),
        previous_secret: None,
        previous_until: None,
        failing_since: None,
        disabled_reason: None,
        created_at: now,
        updated_at: now,
    }
}

/// Puts `rule` in the fixture's project.
async fn put_rule(f: &Fixture, rule: EventRuleRecord) {
    f.store.put_event_rule(rule, None).await.expect("rule");
}

/// Puts a rule like [`rule`] named `name`, enabled or not, and returns its identifier.
async fn put_named_rule(f: &Fixture, name: &str, enabled: bool) -> Identifier {
    let identifier = Identifier::parse(name, "rule").expect("id");
    let mut named = EventRuleRecord {
        identifier: identifier.clone(),
        ..rule(&f.scope)
    };
    named.spec.enabled = enabled;
    put_rule(f, named).await;
    identifier
}

fn delivery(scope: &ProjectRef, execution: &str, event_type: &str) -> NewDelivery {
    NewDelivery {
        id: DeliveryId::generate().to_string(),
        scope: scope.clone(),
        rule: "ops".into(),
        webhook_id: format!("msg_{}", DeliveryId::generate()),
        event_type: event_type.into(),
        payload: "{}".into(),
        due_at: Some(now_millis() - 1),
        execution_id: Some(execution.to_owned()),
        test: false,
    }
}

/// Records one attempt of a claimed delivery: a 204 when it is done, a 503 otherwise.
async fn attempted(f: &Fixture, d: &DueDelivery, next: Next) {
    let status = if matches!(next, Next::Done) { 204 } else { 503 };
    f.store
        .record_attempt(
            AttemptOutcome {
                lease: d.lease.clone(),
                attempt: AttemptRecord {
                    delivery_id: d.delivery.id.clone(),
                    attempt: d.delivery.attempts + 1,
                    started_at: now_millis(),
                    duration_ms: 1,
                    url: d.rule.spec.url.clone(),
                    request_headers: json!({}),
                    response_status: Some(status),
                    response_headers: None,
                    response_body: None,
                    error: None,
                },
                next,
                rule: RuleEffect::Healthy,
            },
            now_millis(),
        )
        .await
        .expect("attempt");
}

/// The deliveries of `rule`, in the order they were made.
async fn deliveries_of(f: &Fixture, rule: &Identifier) -> Vec<DeliveryRecord> {
    let mut page = f
        .store
        .list_deliveries(&f.scope, rule, None, None, 100)
        .await
        .expect("deliveries")
        .items;
    page.sort_by_key(|d| d.seq);
    page
}

/// When each delivery of the rule is next due, by event type.
async fn due_times(f: &Fixture) -> Vec<(String, Option<i64>)> {
    let rule = Identifier::parse("ops", "rule").expect("id");
    deliveries_of(f, &rule)
        .await
        .into_iter()
        .map(|d| (d.event_type, d.next_attempt_at))
        .collect()
}

/// Fans out one event of `execution` to the rule.
async fn fan_out_one(f: &Fixture, execution: &str, event_type: &str) {
    f.store
        .fan_out(vec![delivery(&f.scope, execution, event_type)], i64::MAX)
        .await
        .expect("fan out");
}

/// Claims what is due at `at`.
async fn claim_due(f: &Fixture, at: i64) -> Vec<DueDelivery> {
    f.store
        .claim_deliveries(&[], 10, at, 60_000)
        .await
        .expect("claim")
}

#[tokio::test]
async fn an_event_added_behind_a_retried_head_waits_with_it_and_is_due_when_the_head_is_done() {
    let f = fixture().await;
    put_rule(&f, rule(&f.scope)).await;
    fan_out_one(&f, "x1", "pipeline_start").await;
    let head = claim_due(&f, now_millis())
        .await
        .pop()
        .expect("the head is due");
    let retry_at = now_millis() + 60_000;
    attempted(&f, &head, Next::RetryAt(retry_at, 1)).await;

    // Fanned out after the head's failure was recorded: it waits with the head, not due now.
    fan_out_one(&f, "x1", "pipeline_end").await;
    assert_eq!(
        due_times(&f).await,
        [
            ("pipeline_start".to_owned(), Some(retry_at)),
            ("pipeline_end".to_owned(), Some(retry_at)),
        ]
    );

    // Another execution's events are not held back by this one's head.
    fan_out_one(&f, "x2", "pipeline_start").await;
    let other = claim_due(&f, now_millis()).await;
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].delivery.execution_id.as_deref(), Some("x2"));

    // The head, attempted again and done: the event behind it is due at once.
    let head = claim_due(&f, retry_at)
        .await
        .pop()
        .expect("the head is due again");
    assert_eq!(head.delivery.event_type, "pipeline_start");
    attempted(&f, &head, Next::Done).await;
    let next = claim_due(&f, now_millis()).await;
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(next[0].delivery.event_type, "pipeline_end");
}

#[tokio::test]
async fn the_events_of_one_execution_are_claimed_one_at_a_time_in_order() {
    let f = fixture().await;
    put_rule(&f, rule(&f.scope)).await;
    let kinds = ["pipeline_start", "stage_start", "stage_end", "pipeline_end"];
    let deliveries: Vec<_> = kinds.iter().map(|k| delivery(&f.scope, "x1", k)).collect();
    f.store
        .fan_out(deliveries.clone(), i64::MAX)
        .await
        .expect("fan out");

    let mut sent = Vec::new();
    for _ in 0..kinds.len() {
        // Two claimers at once: only the head of the execution's queue is handed out.
        let (a, b) = tokio::join!(
            f.store.claim_deliveries(&[], 10, now_millis(), 60_000),
            f.store.claim_deliveries(&[], 10, now_millis(), 60_000),
        );
        let mut due = a.expect("claim");
        due.extend(b.expect("claim"));
        assert_eq!(due.len(), 1, "one at a time: {due:?}");
        let d = &due[0];
        sent.push(d.delivery.event_type.clone());
        attempted(&f, d, Next::Done).await;
    }

    assert_eq!(sent, kinds);
    let left = f
        .store
        .claim_deliveries(&[], 10, now_millis(), 60_000)
        .await
        .expect("claim");
    assert!(left.is_empty());
}

#[tokio::test]
async fn a_fan_out_makes_deliveries_in_order_for_enabled_rules_only() {
    let f = fixture().await;
    put_rule(&f, rule(&f.scope)).await;
    let off = put_named_rule(&f, "off", false).await;
    let two = put_named_rule(&f, "two", true).await;
    let never = Identifier::parse("never", "rule").expect("id");
    let start = delivery(&f.scope, "x1", "pipeline_start");
    let stage = delivery(&f.scope, "x1", "stage_start");
    let to = |rule: &Identifier| NewDelivery {
        rule: rule.as_str().into(),
        ..delivery(&f.scope, "x1", "pipeline_start")
    };
    let (to_off, to_two, to_never) = (to(&off), to(&two), to(&never));
    let end = delivery(&f.scope, "x1", "pipeline_end");
    f.store
        .fan_out(
            vec![
                start.clone(),
                to_off,
                to_two.clone(),
                to_never,
                stage.clone(),
            ],
            i64::MAX,
        )
        .await
        .expect("fan out");
    f.store
        .fan_out(vec![end.clone()], i64::MAX)
        .await
        .expect("fan out again");

    let ids = |ds: Vec<DeliveryRecord>| ds.into_iter().map(|d| d.id).collect::<Vec<_>>();
    let ops = Identifier::parse("ops", "rule").expect("id");
    assert_eq!(
        ids(deliveries_of(&f, &ops).await),
        [start.id, stage.id, end.id]
    );
    assert_eq!(
        ids(deliveries_of(&f, &two).await),
        [to_two.id],
        "each enabled rule its own"
    );
    assert!(
        deliveries_of(&f, &off).await.is_empty(),
        "a disabled rule gets nothing"
    );
    assert!(
        deliveries_of(&f, &never).await.is_empty(),
        "nor does a rule that is not there"
    );
}

#[tokio::test]
async fn a_claim_hands_out_deliveries_by_due_time_and_attempts_recorded_at_once_each_count() {
    let f = fixture().await;
    put_rule(&f, rule(&f.scope)).await;
    // Four executions' first events, due in the reverse of the order they were made.
    let now = now_millis();
    let made: Vec<NewDelivery> = (0..4_i64)
        .map(|n| NewDelivery {
            due_at: Some(now - 1 - n),
            ..delivery(&f.scope, &format!("x{n}"), "pipeline_start")
        })
        .collect();
    f.store
        .fan_out(made.clone(), i64::MAX)
        .await
        .expect("fan out");
    let claimed = claim_due(&f, now).await;
    let ids = |ds: &[DueDelivery]| ds.iter().map(|d| d.delivery.id.clone()).collect::<Vec<_>>();
    let by_due: Vec<String> = made.iter().rev().map(|d| d.id.clone()).collect();
    assert_eq!(ids(&claimed), by_due);

    // Recorded at once (together, where a backend groups them): two done, one to retry, and
    // one under a lease the delivery no longer holds, which is logged and changes nothing.
    let retry_at = now + 60_000;
    let stale = DueDelivery {
        lease: "an older lease".into(),
        ..claimed[3].clone()
    };
    tokio::join!(
        attempted(&f, &claimed[0], Next::Done),
        attempted(&f, &claimed[1], Next::Done),
        attempted(&f, &claimed[2], Next::RetryAt(retry_at, 1)),
        attempted(&f, &stale, Next::Done),
    );
    let rule = Identifier::parse("ops", "rule").expect("id");
    let expected = [
        ("Success", None),
        ("Success", None),
        ("Pending", Some(retry_at)),
        ("Pending", Some(now - 1)),
    ];
    for (d, (status, next)) in claimed.iter().zip(expected) {
        let (delivery, attempts) = f
            .store
            .get_delivery(&f.scope, &rule, &d.delivery.id, 10)
            .await
            .expect("read")
            .expect("the delivery");
        assert_eq!(
            (delivery.status.as_str(), delivery.next_attempt_at),
            (status, next),
            "{}",
            d.delivery.id
        );
        let id = &d.delivery.id;
        assert_eq!(delivery.attempts, 1, "{id}");
        assert_eq!(attempts.len(), 1, "{id}");
        assert_eq!(attempts[0].attempt, 1, "{id}");
        let answered = if next == Some(retry_at) { 503 } else { 204 };
        assert_eq!(attempts[0].response_status, Some(answered), "{id}");
    }
    // The stale attempt left the lease in place: the delivery is not handed out again.
    assert!(claim_due(&f, now).await.is_empty());
}

#[tokio::test]
async fn an_attempt_whose_delivery_went_with_its_rule_records_nothing_and_spoils_no_other() {
    let f = fixture().await;
    put_rule(&f, rule(&f.scope)).await;
    let gone = put_named_rule(&f, "gone", true).await;
    let deliveries = vec![
        delivery(&f.scope, "x1", "pipeline_start"),
        NewDelivery {
            rule: gone.as_str().into(),
            ..delivery(&f.scope, "x2", "pipeline_start")
        },
    ];
    f.store
        .fan_out(deliveries, i64::MAX)
        .await
        .expect("fan out");
    let claimed = claim_due(&f, now_millis()).await;
    assert_eq!(claimed.len(), 2);
    // The rule is deleted while its delivery is attempted: its deliveries go with it.
    assert!(f
        .store
        .delete_event_rule(&f.scope, &gone)
        .await
        .expect("deleted"));

    // Both recorded at once: the one of the deleted rule has nothing to be recorded on, and
    // the other is recorded as if it were alone.
    tokio::join!(
        attempted(&f, &claimed[0], Next::Done),
        attempted(&f, &claimed[1], Next::Done),
    );
    for d in &claimed {
        let rule = Identifier::parse(&d.delivery.rule, "rule").expect("id");
        let found = f
            .store
            .get_delivery(&f.scope, &rule, &d.delivery.id, 10)
            .await
            .expect("read");
        match found {
            Some((delivery, attempts)) => {
                assert_eq!(rule.as_str(), "ops");
                assert_eq!(delivery.status, "Success");
                assert_eq!(attempts.len(), 1);
            }
            None => assert_eq!(rule, gone),
        }
    }
}

#[tokio::test]
async fn a_closed_store_refuses_writes_instead_of_losing_them() {
    let f = fixture().await;
    assert!(f.store.ready().await.expect("ready"));

    f.store.close().await;
    let result = f
        .store
        .record_event(event(&f.scope, None, now_millis()), queued())
        .await;

    assert!(
        matches!(result, Err(StoreError::ShuttingDown)),
        "{result:?}"
    );
}

/// What a status watcher was told, in order: `None` for "any event".
type Told = Arc<parking_lot::Mutex<Vec<Option<Vec<EventId>>>>>;

/// Takes what the watcher was told since the last call.
fn take(told: &Told) -> Vec<Option<Vec<EventId>>> {
    std::mem::take(&mut *told.lock())
}

#[tokio::test]
async fn every_change_to_a_status_is_told_before_the_write_is_acknowledged() {
    let f = fixture().await;
    let told: Told = Arc::default();
    let sink = Arc::clone(&told);
    let watched = f.store.watch_statuses(Arc::new(move |events| {
        sink.lock().push(events.map(<[EventId]>::to_vec));
    }));
    if crate::helpers::on_postgres() {
        // Other nodes write the same database: nothing that is not final is cached.
        assert!(!watched, "PostgreSQL cannot see other nodes' writes");
        return;
    }
    assert!(watched, "SQLite sees every write to its file");
    assert!(!f.store.watch_statuses(Arc::new(|_| {})), "one watcher");

    let fired = event(&f.scope, None, now_millis());
    let id = fired.event_id.clone();
    record(f.store.as_ref(), fired).await;
    assert_eq!(take(&told), [], "a new event has no answer cached yet");

    // Each write below is checked as soon as it is acknowledged, without waiting.
    let one = |told: &Told| {
        let all = take(told);
        assert!(!all.is_empty(), "told");
        assert!(
            all.iter().all(|t| t
                .as_ref()
                .is_some_and(|e| !e.is_empty() && e.iter().all(|e| *e == id))),
            "{all:?}"
        );
    };
    let mut claims = claim(&f, "node-a").await;
    let claim = claims.remove(0);
    one(&told);
    f.store
        .start_execution(
            &claim,
            json!({"pipeline": {}}),
            vec![step(0, 0, "NotStarted")],
            now_millis(),
        )
        .await
        .expect("start");
    one(&told);
    f.store
        .update_step(&claim, step(0, 0, "Running"))
        .await
        .expect("step");
    one(&told);

    // A pipeline's change reaches every queued execution's planned steps: any event.
    let now = now_millis();
    f.store
        .put_pipeline(PipelineRecord {
            scope: f.scope.clone(),
            identifier: Identifier::parse("deploy", "pipeline").expect("id"),
            name: "Deploy v2".into(),
            spec: json!({"pipeline": {"identifier": "deploy", "name": "Deploy v2", "stages": []}}),
            created_at: now,
            updated_at: now,
        })
        .await
        .expect("pipeline");
    assert!(
        take(&told).contains(&None),
        "a pipeline change tells of any event"
    );

    // Writes that change no event's status tell nothing.
    f.store
        .put_project(&f.scope, "Payments again")
        .await
        .expect("project");
    assert_eq!(take(&told), []);

    // The end, and retention deleting the execution and the event.
    end(&f, &claim, "Success", None).await.expect("finish");
    one(&told);
    let purged = f
        .store
        .purge_before(now_millis() + 1000, 100)
        .await
        .expect("purge");
    assert_eq!((purged.executions, purged.events), (1, 1));
    one(&told);
}

#[tokio::test]
async fn a_write_is_answered_only_after_the_status_cache_was_told() {
    let f = fixture().await;
    if crate::helpers::on_postgres() {
        return;
    }
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (entered_tx, release_rx) = (
        parking_lot::Mutex::new(entered_tx),
        parking_lot::Mutex::new(release_rx),
    );
    // The watcher holds the writer until released (or until the test ends and drops the sender).
    assert!(f.store.watch_statuses(Arc::new(move |_| {
        let _ = entered_tx.lock().send(());
        let _ = release_rx.lock().recv();
    })));
    record(f.store.as_ref(), event(&f.scope, None, now_millis())).await;

    let store = Arc::clone(&f.store);
    let claim = tokio::spawn(async move {
        store
            .claim_executions("node-a", 10, now_millis(), LONG_LEASE)
            .await
    });
    let told =
        tokio::task::spawn_blocking(move || entered_rx.recv_timeout(Duration::from_secs(10)))
            .await
            .expect("join");
    told.expect("the claim's change is told");
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert!(
        !claim.is_finished(),
        "the claim was answered before the cache was told of it"
    );
    release_tx.send(()).expect("release");
    let claims = claim.await.expect("join").expect("claim");
    assert_eq!(claims.len(), 1);
}

/// Records an event of `trigger` (`pipeline/trigger` for a pipeline other than `deploy`) made at
/// `created_at`, with `status` and no execution.
async fn event_of(
    f: &Fixture,
    scope: &ProjectRef,
    trigger: &str,
    status: &str,
    created_at: i64,
) -> EventId {
    let mut e = event(scope, None, created_at);
    if let Some((pipeline, trigger)) = trigger.split_once('/') {
        e.pipeline = pipeline.into();
        e.trigger = trigger.into();
    } else {
        e.trigger = trigger.into();
    }
    e.status = status.into();
    e.plan_execution_id = None;
    let id = e.event_id.clone();
    f.store.record_event(e, None).await.expect("record_event");
    id
}

#[tokio::test]
async fn a_projects_events_are_listed_newest_first_across_its_triggers_page_by_page() {
    const MATCHED: &str = "TARGET_EXECUTION_REQUESTED";
    const NO_MATCH: &str = "NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS";
    let f = fixture().await;
    let other = ProjectRef {
        project: Identifier::parse("billing", "project").expect("project"),
        ..f.scope.clone()
    };
    let base = now_millis() - 60_000;
    // Three triggers whose events interleave in time, two pairs of them in one millisecond,
    // stored out of their time order; a trigger of another pipeline with the same identifier
    // as one of them; and another project's event among them.
    let events = [
        ("on_tag", 5, MATCHED),
        ("on_push", 1, NO_MATCH),
        ("nightly", 3, MATCHED),
        ("on_push", 3, NO_MATCH),
        ("on_tag", 0, MATCHED),
        ("nightly", 9, NO_MATCH),
        ("on_push", 7, MATCHED),
        ("nightly", 7, MATCHED),
        ("release/on_push", 6, MATCHED),
        ("release/on_push", 2, NO_MATCH),
    ];
    let mut made: Vec<(i64, EventId, &str, &str)> = Vec::new();
    for (trigger, at, status) in events {
        let id = event_of(&f, &f.scope, trigger, status, base + at).await;
        made.push((base + at, id, trigger, status));
    }
    event_of(&f, &other, "on_push", MATCHED, base + 4).await;
    made.sort_by(|a, b| (b.0, b.1.as_str()).cmp(&(a.0, a.1.as_str())));

    let list = |filter: EventFilter, limit: u32| {
        let (store, scope) = (Arc::clone(&f.store), f.scope.clone());
        async move {
            let mut listed: Vec<(i64, EventId)> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = store
                    .list_events(&scope, &filter, cursor.as_deref(), limit)
                    .await
                    .expect("list_events");
                assert!(page.items.len() <= limit as usize);
                listed.extend(page.items.into_iter().map(|e| (e.created_at, e.event_id)));
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => return listed,
                }
            }
        }
    };
    let expected = |keep: &dyn Fn(&str, &str) -> bool| -> Vec<(i64, EventId)> {
        made.iter()
            .filter(|(_, _, trigger, status)| keep(trigger, status))
            .map(|(at, id, _, _)| (*at, id.clone()))
            .collect()
    };
    let filter =
        |trigger: Option<&str>, status: Option<&'static str>, pipeline: Option<&str>| EventFilter {
            trigger: trigger.map(str::to_owned),
            status,
            pipeline: pipeline.map(str::to_owned),
        };
    for limit in [1, 2, 3, 500] {
        assert_eq!(
            list(filter(None, None, None), limit).await,
            expected(&|_, _| true)
        );
    }
    let in_release = |trigger: &str| trigger.starts_with("release/");
    assert_eq!(
        list(filter(None, Some(MATCHED), Some("deploy")), 2).await,
        expected(&|trigger, status| status == MATCHED && !in_release(trigger))
    );
    assert_eq!(
        list(filter(None, None, Some("release")), 1).await,
        expected(&|trigger, _| in_release(trigger))
    );
    assert_eq!(
        list(filter(Some("on_push"), None, None), 2).await,
        expected(&|trigger, _| trigger.ends_with("on_push"))
    );
    assert_eq!(
        list(filter(Some("on_push"), None, Some("deploy")), 1).await,
        expected(&|trigger, _| trigger == "on_push")
    );
    assert_eq!(
        list(filter(Some("nightly"), Some(NO_MATCH), None), 1).await,
        expected(&|trigger, status| trigger == "nightly" && status == NO_MATCH)
    );
    assert_eq!(list(filter(None, None, Some("other")), 2).await, Vec::new());
}

#[tokio::test]
async fn retention_purges_the_events_made_before_the_cutoff_in_batches_and_keeps_the_rest() {
    let f = fixture().await;
    let now = now_millis();
    let day = 24 * 60 * 60 * 1000;
    // Old and recent events in three projects: a purge walks them project by project (neither
    // store has an index of event times), and "billing" and "zeta" have no project record, as
    // after their project was deleted.
    let project = |id: &str| ProjectRef {
        project: Identifier::parse(id, "project").expect("project"),
        ..f.scope.clone()
    };
    let (billing, zeta) = (project("billing"), project("zeta"));
    let mut recent = HashSet::new();
    for (scope, old, new) in [(&f.scope, 5, 3), (&billing, 3, 1), (&zeta, 1, 0)] {
        for i in 0..old {
            event_of(
                &f,
                scope,
                "on_push",
                "NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS",
                now - 40 * day + i,
            )
            .await;
        }
        for i in 0..new {
            let id = event_of(
                &f,
                scope,
                "on_push",
                "NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS",
                now - day + i,
            )
            .await;
            recent.insert(id);
        }
    }

    let purge = || async {
        let p = f
            .store
            .purge_before(now - 30 * day, 2)
            .await
            .expect("purge");
        (p.events, p.more_events)
    };
    let mut purged = Vec::new();
    for _ in 0..10 {
        let (events, more) = purge().await;
        purged.push(events);
        if !more {
            break;
        }
    }
    assert_eq!(purged, [2, 2, 2, 2, 1]);
    let all = EventFilter {
        pipeline: None,
        trigger: None,
        status: None,
    };
    let mut left = HashSet::new();
    for scope in [&f.scope, &billing, &zeta] {
        let page = f
            .store
            .list_events(scope, &all, None, 500)
            .await
            .expect("list");
        left.extend(page.items.into_iter().map(|e| e.event_id));
    }
    assert_eq!(left, recent);
    assert_eq!(purge().await, (0, false), "nothing old is left");

    // The walk went back to the start: an old event in the first project is found again.
    event_of(
        &f,
        &billing,
        "on_push",
        "NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS",
        now - 40 * day,
    )
    .await;
    assert_eq!(purge().await, (1, false));
}

#[tokio::test]
async fn a_purge_visits_a_bounded_number_of_projects_and_the_next_goes_on_after_them() {
    use triggerd::store::executions::PURGE_PROJECTS;
    let f = fixture().await;
    let old = now_millis() - 40 * 24 * 60 * 60 * 1000;
    for i in 0..=PURGE_PROJECTS {
        let scope = ProjectRef {
            project: Identifier::parse(&format!("p{i:04}"), "project").expect("project"),
            ..f.scope.clone()
        };
        event_of(
            &f,
            &scope,
            "on_push",
            "NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS",
            old,
        )
        .await;
    }
    let purge = || async {
        let p = f.store.purge_before(old + 1, 10_000).await.expect("purge");
        (p.events, p.more_events)
    };
    assert_eq!(purge().await, (PURGE_PROJECTS as u64, true));
    assert_eq!(
        purge().await,
        (1, false),
        "the next purge goes on after them"
    );
    assert_eq!(purge().await, (0, false));
}
