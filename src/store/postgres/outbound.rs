//! [`OutboundStore`] on PostgreSQL, and the outbox writes that execution changes make in their
//! own transaction ([`sync_events`]).
//!
//! Several nodes run a dispatcher each. The outbox is read under an advisory lock that waits
//! for every transaction still writing to it, so no event can appear behind one already read;
//! two nodes that fan out the same rows create each delivery once (a unique index); due
//! deliveries are claimed with `FOR UPDATE SKIP LOCKED` under a lease token.

use std::sync::LazyLock;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::groups::alike;
use super::{
    col, execute, execution_cols, execution_row, identifier_col, is_fk_violation, pg_err,
    project_cols, project_params, query, query_one, query_opt, PgResultExt as _, PgStore,
};
use crate::domain::event_rule::EventRuleSpec;
use crate::domain::ids::{Identifier, LeaseToken, PlanExecutionId, ProjectRef};
use crate::outbound::events::{implied_events, SentEvents};
use crate::outbound::health::{after_attempt, RuleHealth};
use crate::store::cursor::{decode_name_cursor, decode_seq_cursor, encode_cursor, page};
use crate::store::executions::{RunState, StepRecord};
use crate::store::outbound::{
    delivery_status, AttemptOutcome, AttemptRecord, DeliveryRecord, DueDelivery, EventRuleRecord,
    NewDelivery, Next, OutboundStore, OutboxEvent, Redelivery, RuleEffect, TEST_LEASE,
};
use crate::store::{Millis, Page, StoreError, StoreResult};

/// Held shared by every transaction that adds outbox events, and exclusively while the outbox
/// is read ("trgd" "obox" in ASCII).
const OUTBOX_LOCK: i64 = 0x7472_6764_6f62_6f78;
/// Serialises fan-outs across nodes ("trgd" "fout"). An attempt that moves the later events of
/// an execution holds it shared, so a fan-out reads a head's due time either before that
/// attempt or after its commit, and the attempt moves what the fan-out added.
const FAN_OUT_LOCK: i64 = 0x7472_6764_666f_7574;

/// The rule columns [`rule_row_at`] reads (a macro so that other lists can extend it).
macro_rules! rule_cols {
    ($p:literal) => {
        concat!(
            $p,
            "account_id, ",
            $p,
            "org_id, ",
            $p,
            "project_id, ",
            $p,
            "id, ",
            $p,
            "spec, ",
            $p,
            "secret, ",
            $p,
            "previous_secret, ",
            $p,
            "previous_until, ",
            $p,
            "failing_since, ",
            $p,
            "disabled_reason, ",
            $p,
            "created_at, ",
            $p,
            "updated_at, ",
            $p,
            "enabled"
        )
    };
}
const RULE_COLS: &str = rule_cols!("");
/// The columns [`delivery_row`] reads (a macro so that other lists can extend it).
macro_rules! delivery_cols {
    ($p:literal) => {
        concat!(
            $p,
            "id, ",
            $p,
            "account_id, ",
            $p,
            "org_id, ",
            $p,
            "project_id, ",
            $p,
            "rule_id, ",
            $p,
            "webhook_id, ",
            $p,
            "event_type, ",
            $p,
            "payload, ",
            $p,
            "status, ",
            $p,
            "attempts, ",
            $p,
            "schedule_step, ",
            $p,
            "next_attempt_at, ",
            $p,
            "last_error, ",
            $p,
            "response_status, ",
            $p,
            "created_at, ",
            $p,
            "updated_at, ",
            $p,
            "execution_id, ",
            $p,
            "seq"
        )
    };
}
const DELIVERY_COLS: &str = delivery_cols!("");
/// How many columns [`delivery_row`] reads.
const DELIVERY_WIDTH: usize = 18;
const ATTEMPT_COLS: &str = "delivery_id, attempt, started_at, duration_ms, url, request_headers, \
     response_status, response_headers, response_body, error";

/// The execution and its project's name, when the project has an enabled rule; it locks the
/// execution's row (built once: it runs inside every execution write).
static EXECUTION_FOR_EVENTS_SQL: LazyLock<String> = LazyLock::new(|| {
    let cols = execution_cols!()
        .split(", ")
        .map(|c| format!("x.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT {cols}, x.events_sent, x.pipeline_spec, p.name FROM executions x \
         JOIN projects p ON p.account_id = x.account_id AND p.org_id = x.org_id AND p.id = x.project_id \
         WHERE x.plan_execution_id = $1 AND EXISTS (SELECT 1 FROM event_rules r \
           WHERE r.account_id = x.account_id AND r.org_id = x.org_id \
             AND r.project_id = x.project_id AND r.enabled) \
         FOR UPDATE OF x"
    )
});

fn rule_row(r: &Row) -> StoreResult<EventRuleRecord> {
    rule_row_at(r, 0)
}

/// [`rule_row`] for a row whose rule columns start at `first`.
fn rule_row_at(r: &Row, first: usize) -> StoreResult<EventRuleRecord> {
    let spec: String = col(r, first + 4)?;
    let mut spec = serde_json::from_str::<EventRuleSpec>(&spec)
        .map_err(|e| StoreError::db("reading an event rule", e))?;
    // The column is the truth: triggerd disables rules without rewriting their body.
    spec.enabled = col(r, first + 12)?;
    Ok(EventRuleRecord {
        scope: project_cols(r, first)?,
        identifier: identifier_col(r, first + 3)?,
        spec,
        secret: col(r, first + 5)?,
        previous_secret: col(r, first + 6)?,
        previous_until: col(r, first + 7)?,
        failing_since: col(r, first + 8)?,
        disabled_reason: col(r, first + 9)?,
        created_at: col(r, first + 10)?,
        updated_at: col(r, first + 11)?,
    })
}

fn delivery_row(r: &Row) -> StoreResult<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: col(r, 0)?,
        scope: project_cols(r, 1)?,
        rule: col(r, 4)?,
        webhook_id: col(r, 5)?,
        event_type: col(r, 6)?,
        payload: col(r, 7)?,
        status: col(r, 8)?,
        attempts: col::<i32>(r, 9)? as u32,
        schedule_step: col::<i32>(r, 10)? as u32,
        next_attempt_at: col(r, 11)?,
        last_error: col(r, 12)?,
        response_status: col::<Option<i32>>(r, 13)?.map(|s| s as u16),
        created_at: col(r, 14)?,
        updated_at: col(r, 15)?,
        execution_id: col(r, 16)?,
        seq: col(r, 17)?,
    })
}

fn json_text(text: Option<String>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn attempt_row(r: &Row) -> StoreResult<AttemptRecord> {
    Ok(AttemptRecord {
        delivery_id: col(r, 0)?,
        attempt: col::<i32>(r, 1)? as u32,
        started_at: col(r, 2)?,
        duration_ms: col(r, 3)?,
        url: col(r, 4)?,
        request_headers: json_text(col(r, 5)?).unwrap_or_default(),
        response_status: col::<Option<i32>>(r, 6)?.map(|s| s as u16),
        response_headers: json_text(col(r, 7)?),
        response_body: col(r, 8)?,
        error: col(r, 9)?,
    })
}

/// Claims up to `$4` due deliveries (`$1`: now) for the lease `$5` until `$2`: due, of an
/// enabled rule whose selectors this node has (`$3`), and not behind an earlier pending event of
/// the same execution to the same rule. That check reads the status, not row locks: an earlier
/// delivery another node is attempting (and has locked or leased) is still `Pending`, so its
/// successor waits on every node. Returns each claimed delivery with its rule (in no order).
/// Run with [`CLAIM_PLAN`].
pub(super) const CLAIM_SQL: &str = concat!(
    "UPDATE deliveries d SET lease_until = $2, lease_token = $5 FROM event_rules r \
     WHERE d.id IN ( \
       SELECT d.id FROM deliveries d JOIN event_rules r \
         ON r.account_id = d.account_id AND r.org_id = d.org_id \
        AND r.project_id = d.project_id AND r.id = d.rule_id \
       WHERE d.status = 'Pending' AND d.next_attempt_at <= $1 \
         AND (d.lease_until IS NULL OR d.lease_until < $1) AND r.enabled \
         AND r.selectors <@ $3::text[] \
         AND (d.execution_id IS NULL OR NOT EXISTS ( \
               SELECT 1 FROM deliveries e WHERE e.execution_id = d.execution_id \
               AND e.rule_id = d.rule_id AND e.status = 'Pending' AND e.seq < d.seq)) \
       ORDER BY d.next_attempt_at, d.seq LIMIT $4 \
       FOR UPDATE OF d SKIP LOCKED) \
       AND r.account_id = d.account_id AND r.org_id = d.org_id \
       AND r.project_id = d.project_id AND r.id = d.rule_id \
     RETURNING ",
    delivery_cols!("d."),
    ", ",
    rule_cols!("r.")
);

/// Settings for [`CLAIM_SQL`] that make its plan walk `deliveries_due` in order and stop at the
/// limit, whatever the statistics say: with those of a table that a backlog filled seconds
/// before (a recover, a receiver back from an outage), the planner had started from the rule,
/// read every delivery of it through `deliveries_by_rule` and sorted them, 40 ms a claim in a
/// drain of 5,000 deliveries against 5 ms for the walk (issue 13).
pub(super) const CLAIM_PLAN: &str =
    "SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off";

/// Inserts deliveries in one statement, in order (so that an execution's events keep theirs);
/// one whose event already has a delivery for its rule (another node fanned it out first) is
/// left out. Returns how many it inserted.
///
/// One statement for a whole fan-out: inserted one at a time, with a check of the rule's each,
/// two round trips a delivery had capped a fan-out at about 500 deliveries a second while the
/// engine kept the database busy, and the outbox grew behind it (issue 13).
async fn insert_deliveries(
    c: &impl GenericClient,
    deliveries: &[&NewDelivery],
    now: Millis,
) -> Result<u64, tokio_postgres::Error> {
    // A test is attempted by the caller at once under its own lease, never by the dispatcher;
    // it is `Failed` until that attempt is recorded. A later event of an execution is due no
    // earlier than the pending ones before it to the same rule: behind a retried head it waits
    // with it, as [`follow_the_head`] keeps it. The deliveries of one statement share a due
    // time, so none of them needs to see the others.
    if deliveries.is_empty() {
        return Ok(0);
    }
    let column =
        |f: fn(&NewDelivery) -> &str| -> Vec<&str> { deliveries.iter().map(|d| f(d)).collect() };
    let ids = column(|d| d.id.as_str());
    let accounts = column(|d| d.scope.account.as_str());
    let orgs = column(|d| d.scope.org.as_str());
    let projects = column(|d| d.scope.project.as_str());
    let rules = column(|d| d.rule.as_str());
    let webhook_ids = column(|d| d.webhook_id.as_str());
    let event_types = column(|d| d.event_type.as_str());
    let payloads = column(|d| d.payload.as_str());
    let due: Vec<Option<Millis>> = deliveries.iter().map(|d| d.due_at).collect();
    let executions: Vec<Option<&str>> = deliveries
        .iter()
        .map(|d| d.execution_id.as_deref())
        .collect();
    let tests: Vec<bool> = deliveries.iter().map(|d| d.test).collect();
    let stmt = c
        .prepare_cached(
            "INSERT INTO deliveries (id, account_id, org_id, project_id, rule_id, webhook_id, \
             event_type, payload, status, next_attempt_at, created_at, updated_at, execution_id, \
             lease_token, is_test) \
             SELECT n.id, n.acc, n.org, n.proj, n.rule, n.webhook_id, n.event_type, n.payload, \
               CASE WHEN n.test THEN $13 ELSE 'Pending' END, \
               GREATEST(n.due, (SELECT MAX(h.next_attempt_at) FROM deliveries h \
                 WHERE h.execution_id = n.execution AND h.rule_id = n.rule \
                   AND h.status = 'Pending' AND NOT n.test)), \
               $12, $12, n.execution, CASE WHEN n.test THEN $14 END, n.test \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
               $7::text[], $8::text[], $9::bigint[], $10::text[], $11::bool[]) WITH ORDINALITY \
               AS n(id, acc, org, proj, rule, webhook_id, event_type, payload, due, execution, \
                    test, nth) \
             ORDER BY n.nth \
             ON CONFLICT (account_id, org_id, project_id, rule_id, webhook_id) WHERE NOT is_test \
             DO NOTHING",
        )
        .await?;
    c.execute(
        &stmt,
        &[
            &ids,
            &accounts,
            &orgs,
            &projects,
            &rules,
            &webhook_ids,
            &event_types,
            &payloads,
            &due,
            &executions,
            &tests,
            &now,
            &delivery_status::FAILED,
            &TEST_LEASE,
        ],
    )
    .await
}

/// Keeps the later pending events of the same execution to the same rule due no earlier than
/// this delivery: behind a head that is retried later they wait with it (so the claim does not
/// scan them again and again), and once the head is done they are due now.
async fn follow_the_head(
    c: &impl GenericClient,
    delivery: &str,
    retry_at: Option<Millis>,
    now: Millis,
) -> StoreResult<u64> {
    // Only rows that must move are written: most heads succeed at once, and their followers
    // are already due.
    let (cond, at) = match retry_at {
        Some(at) => ("e.next_attempt_at < $2", at),
        None => ("e.next_attempt_at > $2", now),
    };
    execute(
        c,
        "moving later events of an execution",
        &format!(
            "UPDATE deliveries e SET next_attempt_at = $2 FROM deliveries h \
             WHERE h.id = $1 AND e.execution_id = h.execution_id AND e.rule_id = h.rule_id \
               AND e.execution_id IS NOT NULL AND e.status = 'Pending' AND e.seq > h.seq AND {cond}"
        ),
        &[&delivery, &at],
    )
    .await
}

/// Whether the rule exists and is enabled; its key is then held until the transaction ends,
/// so it cannot be deleted under a delivery being created for it.
async fn rule_enabled(c: &impl GenericClient, key: [&str; 4]) -> StoreResult<bool> {
    let row = query_opt(
        c,
        "reading an event rule",
        "SELECT enabled FROM event_rules WHERE account_id = $1 AND org_id = $2 AND project_id = $3 \
         AND id = $4 FOR KEY SHARE",
        &[&key[0], &key[1], &key[2], &key[3]],
    )
    .await?;
    row.map_or(Ok(false), |r| col(&r, 0))
}

/// Marks the pending deliveries of a disabled rule that no attempt holds `Failed` (they can be
/// recovered once it is enabled again), so nothing waits forever behind a disabled rule.
async fn fail_pending_of_disabled(
    c: &impl GenericClient,
    key: [&str; 4],
    now: Millis,
) -> StoreResult<u64> {
    execute(
        c,
        "ending the deliveries of a disabled rule",
        "UPDATE deliveries SET status = 'Failed', next_attempt_at = NULL, updated_at = $5, \
         last_error = COALESCE(last_error || '; ', '') || 'not sent: the rule is disabled' \
         WHERE account_id = $1 AND org_id = $2 AND project_id = $3 AND rule_id = $4 \
           AND status = 'Pending' AND (lease_until IS NULL OR lease_until < $5) \
           AND EXISTS (SELECT 1 FROM event_rules r WHERE r.account_id = $1 AND r.org_id = $2 \
                       AND r.project_id = $3 AND r.id = $4 AND NOT r.enabled)",
        &[&key[0], &key[1], &key[2], &key[3], &now],
    )
    .await
}

#[async_trait]
impl OutboundStore for PgStore {
    async fn put_event_rule(
        &self,
        rule: EventRuleRecord,
        ping: Option<NewDelivery>,
    ) -> StoreResult<(EventRuleRecord, bool)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        let [acc, org, proj] = project_params(&rule.scope);
        let id = rule.identifier.as_str();
        let spec = serde_json::to_string(&rule.spec)
            .map_err(|e| StoreError::db("encoding an event rule", e))?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO event_rules (account_id, org_id, project_id, id, enabled, spec, selectors, \
                 secret, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
                 ON CONFLICT (account_id, org_id, project_id, id) DO NOTHING",
            )
            .await
            .ctx("writing an event rule")?;
        let created =
            tx.execute(
                &stmt,
                &[
                    &acc,
                    &org,
                    &proj,
                    &id,
                    &rule.spec.enabled,
                    &spec,
                    &rule.spec.selectors,
                    &rule.secret,
                    &rule.created_at,
                ],
            )
            .await
            .map_err(|e| {
                if is_fk_violation(&e) {
                    StoreError::ParentMissing(format!("Project {} does not exist", rule.scope))
                } else {
                    pg_err("writing an event rule")(e)
                }
            })? == 1;
        if !created {
            // A change starts the rule afresh: its failure streak and any reason triggerd
            // disabled it are forgotten. The secrets stay.
            execute(
                &tx,
                "writing an event rule",
                "UPDATE event_rules SET enabled = $5, spec = $6, selectors = $7, failing_since = NULL, \
                 disabled_reason = NULL, updated_at = $8 \
                 WHERE account_id = $1 AND org_id = $2 AND project_id = $3 AND id = $4",
                &[
                    &acc,
                    &org,
                    &proj,
                    &id,
                    &rule.spec.enabled,
                    &spec,
                    &rule.spec.selectors,
                    &rule.updated_at,
                ],
            )
            .await?;
        }
        if let Some(ping) = &ping {
            insert_deliveries(&tx, &[ping], rule.updated_at)
                .await
                .ctx("queueing a ping")?;
        }
        if !rule.spec.enabled {
            fail_pending_of_disabled(&tx, [acc, org, proj, id], rule.updated_at).await?;
        }
        let row = query_one(
            &tx,
            "reading an event rule",
            &format!(
                "SELECT {RULE_COLS} FROM event_rules WHERE account_id = $1 AND org_id = $2 AND project_id = $3 AND id = $4"
            ),
            &[&acc, &org, &proj, &id],
        )
        .await?;
        let stored = rule_row(&row)?;
        tx.commit().await.ctx("committing an event rule")?;
        Ok((stored, created))
    }

    async fn get_event_rule(
        &self,
        p: &ProjectRef,
        id: &Identifier,
    ) -> StoreResult<Option<EventRuleRecord>> {
        let c = self.client().await?;
        let [acc, org, proj] = project_params(p);
        query_opt(
            &c,
            "reading an event rule",
            &format!(
                "SELECT {RULE_COLS} FROM event_rules WHERE account_id = $1 AND org_id = $2 AND project_id = $3 AND id = $4"
            ),
            &[&acc, &org, &proj, &id.as_str()],
        )
        .await?
        .as_ref()
        .map(rule_row)
        .transpose()
    }

    async fn list_event_rules(
        &self,
        p: &ProjectRef,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<EventRuleRecord>> {
        let after = decode_name_cursor(cursor)?;
        let c = self.client().await?;
        let [acc, org, proj] = project_params(p);
        let items = query(
            &c,
            "listing event rules",
            &format!(
                "SELECT {RULE_COLS} FROM event_rules WHERE account_id = $1 AND org_id = $2 AND project_id = $3 \
                 AND id > $4 ORDER BY id LIMIT $5"
            ),
            &[&acc, &org, &proj, &after, &(i64::from(limit) + 1)],
        )
        .await?
        .iter()
        .map(rule_row)
        .collect::<StoreResult<Vec<_>>>()?;
        Ok(page(items, limit, |r| {
            encode_cursor(&[r.identifier.as_str()])
        }))
    }

    async fn delete_event_rule(&self, p: &ProjectRef, id: &Identifier) -> StoreResult<bool> {
        let c = self.client().await?;
        let [acc, org, proj] = project_params(p);
        let n = execute(
            &c,
            "deleting an event rule",
            "DELETE FROM event_rules WHERE account_id = $1 AND org_id = $2 AND project_id = $3 AND id = $4",
            &[&acc, &org, &proj, &id.as_str()],
        )
        .await?;
        Ok(n == 1)
    }

    async fn rotate_event_rule_secret(
        &self,
        p: &ProjectRef,
        id: &Identifier,
        secret: String,
        previous_until: Millis,
    ) -> StoreResult<Option<EventRuleRecord>> {
        let c = self.client().await?;
        let [acc, org, proj] = project_params(p);
        query_opt(
            &c,
            "rotating a signing secret",
            &format!(
                "UPDATE event_rules SET previous_secret = secret, previous_until = $5, secret = $6, updated_at = $7 \
                 WHERE account_id = $1 AND org_id = $2 AND project_id = $3 AND id = $4 RETURNING {RULE_COLS}"
            ),
            &[
                &acc,
                &org,
                &proj,
                &id.as_str(),
                &previous_until,
                &secret,
                &crate::store::now_millis(),
            ],
        )
        .await?
        .as_ref()
        .map(rule_row)
        .transpose()
    }

    async fn enabled_event_rules(&self, p: &ProjectRef) -> StoreResult<Vec<EventRuleRecord>> {
        let c = self.client().await?;
        let [acc, org, proj] = project_params(p);
        query(
            &c,
            "reading event rules",
            &format!(
                "SELECT {RULE_COLS} FROM event_rules WHERE account_id = $1 AND org_id = $2 AND project_id = $3 \
                 AND enabled ORDER BY id"
            ),
            &[&acc, &org, &proj],
        )
        .await?
        .iter()
        .map(rule_row)
        .collect()
    }

    async fn outbox_events(&self, limit: u32) -> StoreResult<Vec<OutboxEvent>> {
        let mut c = self.client().await?;
        // The dispatcher asks every 50 ms: an empty outbox is answered without the exclusive
        // lock below, which would make every execution write wait for it. An event committed
        // just after this look is found by the next one.
        let pending = query_one(
            &c,
            "reading the outbox",
            "SELECT EXISTS (SELECT 1 FROM outbox_events)",
            &[],
        )
        .await?;
        if !col::<bool>(&pending, 0)? {
            return Ok(Vec::new());
        }
        let tx = c.transaction().await.ctx("starting a transaction")?;
        // Sequence numbers are taken in insertion order, not commit order: waiting for every
        // transaction that is adding events makes sure none can still commit one numbered
        // below an event read here (which the fan-out would then delete unread).
        execute(
            &tx,
            "locking the outbox",
            "SELECT pg_advisory_xact_lock($1)",
            &[&OUTBOX_LOCK],
        )
        .await?;
        let rows = query(
            &tx,
            "reading the outbox",
            "SELECT seq, account_id, org_id, project_id, pipeline_id, event_type, payload \
             FROM outbox_events ORDER BY seq LIMIT $1",
            &[&i64::from(limit)],
        )
        .await?;
        tx.commit().await.ctx("reading the outbox")?;
        rows.iter()
            .map(|r| {
                Ok(OutboxEvent {
                    seq: col(r, 0)?,
                    scope: project_cols(r, 1)?,
                    pipeline: col(r, 4)?,
                    event_type: col(r, 5)?,
                    payload: col(r, 6)?,
                })
            })
            .collect()
    }

    async fn fan_out(&self, deliveries: Vec<NewDelivery>, through_seq: i64) -> StoreResult<()> {
        let now = crate::store::now_millis();
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        // One fan-out at a time: a node that read the same rows as another finds their
        // deliveries made and adds none (the unique index on the event id per rule).
        execute(
            &tx,
            "locking the fan-out",
            "SELECT pg_advisory_xact_lock($1)",
            &[&FAN_OUT_LOCK],
        )
        .await?;
        // A rule disabled or deleted since the events were read gets nothing. Each rule is
        // checked once, in key order.
        fn key(d: &NewDelivery) -> [&str; 4] {
            let [acc, org, proj] = project_params(&d.scope);
            [acc, org, proj, d.rule.as_str()]
        }
        let rules: std::collections::BTreeSet<[&str; 4]> = deliveries.iter().map(key).collect();
        let mut enabled = std::collections::BTreeSet::new();
        for rule in rules {
            if rule_enabled(&tx, rule).await? {
                enabled.insert(rule);
            }
        }
        let kept: Vec<&NewDelivery> = deliveries
            .iter()
            .filter(|d| enabled.contains(&key(d)))
            .collect();
        insert_deliveries(&tx, &kept, now)
            .await
            .ctx("creating deliveries")?;
        execute(
            &tx,
            "draining the outbox",
            "DELETE FROM outbox_events WHERE seq <= $1",
            &[&through_seq],
        )
        .await?;
        tx.commit().await.ctx("committing a fan-out")
    }

    async fn insert_delivery(&self, delivery: NewDelivery) -> StoreResult<()> {
        let c = self.client().await?;
        insert_deliveries(&c, &[&delivery], crate::store::now_millis())
            .await
            .ctx("creating a delivery")?;
        Ok(())
    }

    async fn claim_deliveries(
        &self,
        node_tags: &[String],
        limit: u32,
        now: Millis,
        lease_ms: i64,
    ) -> StoreResult<Vec<DueDelivery>> {
        let lease = LeaseToken::generate().to_string();
        let c = self.client().await?;
        // One round trip: each claim is a step of every delivery's way out.
        let rows = super::query_alone(
            &c,
            "claiming deliveries",
            CLAIM_PLAN,
            CLAIM_SQL,
            &[
                &now,
                &(now + lease_ms),
                &node_tags,
                &i64::from(limit),
                &lease,
            ],
        )
        .await?;
        let mut due = rows
            .iter()
            .map(|r| {
                Ok(DueDelivery {
                    lease: lease.clone(),
                    delivery: delivery_row(r)?,
                    rule: rule_row_at(r, DELIVERY_WIDTH)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        due.sort_by_key(|d| (d.delivery.next_attempt_at, d.delivery.seq));
        Ok(due)
    }

    async fn record_attempt(&self, outcome: AttemptOutcome, now: Millis) -> StoreResult<()> {
        // A delivered attempt on a healthy rule goes with the others that end meanwhile: one
        // statement and one commit for the group. What the group declines is recorded alone.
        let outcome = if Delivered::is(&outcome) {
            let (back, recorded) = self.attempts.submit(Delivered { outcome, now }).await?;
            if recorded? {
                return Ok(());
            }
            back.outcome
        } else {
            outcome
        };
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        record_attempt(&tx, &outcome, now).await?;
        tx.commit().await.ctx("committing a delivery attempt")
    }

    /// Releases no lease: other nodes may be attempting deliveries right now. A dead node's
    /// deliveries are claimed again when their leases expire. Only the sweep remains: pending
    /// deliveries of disabled rules that no live lease holds are marked `Failed`. Returns 0.
    async fn release_delivery_leases(&self) -> StoreResult<u64> {
        let c = self.client().await?;
        execute(
            &c,
            "ending the deliveries of disabled rules",
            "UPDATE deliveries SET status = 'Failed', next_attempt_at = NULL, updated_at = $1, \
             last_error = COALESCE(last_error || '; ', '') || 'not sent: the rule is disabled' \
             WHERE status = 'Pending' AND (lease_until IS NULL OR lease_until < $1) \
               AND EXISTS (SELECT 1 FROM event_rules r \
                 WHERE r.account_id = deliveries.account_id AND r.org_id = deliveries.org_id \
                   AND r.project_id = deliveries.project_id AND r.id = deliveries.rule_id \
                   AND NOT r.enabled)",
            &[&crate::store::now_millis()],
        )
        .await?;
        Ok(0)
    }

    async fn list_deliveries(
        &self,
        p: &ProjectRef,
        rule: &Identifier,
        status_filter: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<DeliveryRecord>> {
        let before = decode_seq_cursor(cursor)?;
        let c = self.client().await?;
        let [acc, org, proj] = project_params(p);
        let items = query(
            &c,
            "listing deliveries",
            &format!(
                "SELECT {DELIVERY_COLS} FROM deliveries WHERE account_id = $1 AND org_id = $2 AND project_id = $3 \
                 AND rule_id = $4 AND ($5::text IS NULL OR status = $5) AND seq < $6 \
                 ORDER BY seq DESC LIMIT $7"
            ),
            &[
                &acc,
                &org,
                &proj,
                &rule.as_str(),
                &status_filter,
                &before,
                &(i64::from(limit) + 1),
            ],
        )
        .await?
        .iter()
        .map(delivery_row)
        .collect::<StoreResult<Vec<_>>>()?;
        Ok(page(items, limit, |d| encode_cursor(&[&d.seq.to_string()])))
    }

    async fn get_delivery(
        &self,
        p: &ProjectRef,
        rule: &Identifier,
        id: &str,
        attempts: u32,
    ) -> StoreResult<Option<(DeliveryRecord, Vec<AttemptRecord>)>> {
        let c = self.client().await?;
        let [acc, org, proj] = project_params(p);
        let Some(row) = query_opt(
            &c,
            "reading a delivery",
            &format!(
                "SELECT {DELIVERY_COLS} FROM deliveries WHERE account_id = $1 AND org_id = $2 \
                 AND project_id = $3 AND rule_id = $4 AND id = $5"
            ),
            &[&acc, &org, &proj, &rule.as_str(), &id],
        )
        .await?
        else {
            return Ok(None);
        };
        let attempts = query(
            &c,
            "reading delivery attempts",
            &format!(
                "SELECT {ATTEMPT_COLS} FROM delivery_attempts WHERE delivery_id = $1 \
                 ORDER BY attempt DESC LIMIT $2"
            ),
            &[&id, &i64::from(attempts)],
        )
        .await?
        .iter()
        .map(attempt_row)
        .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some((delivery_row(&row)?, attempts)))
    }

    async fn redeliver(
        &self,
        p: &ProjectRef,
        rule: &Identifier,
        id: &str,
        now: Millis,
    ) -> StoreResult<Redelivery> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        let [acc, org, proj] = project_params(p);
        let Some(state) = query_opt(
            &tx,
            "reading a delivery",
            "SELECT is_test, lease_until IS NOT NULL AND lease_until >= $6 FROM deliveries \
             WHERE account_id = $1 AND org_id = $2 AND project_id = $3 AND rule_id = $4 AND id = $5 \
             FOR UPDATE",
            &[&acc, &org, &proj, &rule.as_str(), &id, &now],
        )
        .await?
        else {
            return Ok(Redelivery::Missing);
        };
        if col::<bool>(&state, 0)? {
            return Ok(Redelivery::Test);
        }
        if col::<bool>(&state, 1)? {
            return Ok(Redelivery::InFlight);
        }
        let row = query_one(
            &tx,
            "queueing a redelivery",
            &format!(
                "UPDATE deliveries SET status = 'Pending', schedule_step = 0, next_attempt_at = $2, \
                 lease_until = NULL, lease_token = NULL, updated_at = $2 \
                 WHERE id = $1 RETURNING {DELIVERY_COLS}"
            ),
            &[&id, &now],
        )
        .await?;
        let delivery = delivery_row(&row)?;
        tx.commit().await.ctx("committing a redelivery")?;
        Ok(Redelivery::Queued(Box::new(delivery)))
    }

    async fn recover_deliveries(
        &self,
        p: &ProjectRef,
        rule: &Identifier,
        since: Millis,
        now: Millis,
    ) -> StoreResult<u64> {
        let c = self.client().await?;
        let [acc, org, proj] = project_params(p);
        execute(
            &c,
            "recovering deliveries",
            "UPDATE deliveries SET status = 'Pending', schedule_step = 0, next_attempt_at = $6, \
             lease_until = NULL, lease_token = NULL, updated_at = $6 \
             WHERE account_id = $1 AND org_id = $2 AND project_id = $3 AND rule_id = $4 \
               AND status = 'Failed' AND NOT is_test AND created_at >= $5",
            &[&acc, &org, &proj, &rule.as_str(), &since, &now],
        )
        .await
    }

    async fn purge_deliveries_before(&self, cutoff: Millis, batch: u32) -> StoreResult<u64> {
        let c = self.client().await?;
        execute(
            &c,
            "purging old deliveries",
            "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
             WHERE created_at < $1 AND status != 'Pending' LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&cutoff, &i64::from(batch)],
        )
        .await
    }
}

async fn record_attempt(
    c: &impl GenericClient,
    o: &AttemptOutcome,
    now: Millis,
) -> StoreResult<()> {
    let a = &o.attempt;
    // The rule, then the delivery: the order in which a rule change locks them too. The rule's
    // row is locked (so every attempt on the rule would wait for the previous one's commit)
    // only when the attempt may change the rule: a delivered attempt on a healthy rule changes
    // nothing on it, whatever else happens to the rule meanwhile.
    const RULE_OF_DELIVERY: &str =
        "SELECT r.account_id, r.org_id, r.project_id, r.id, r.enabled, r.failing_since \
         FROM deliveries d JOIN event_rules r \
           ON r.account_id = d.account_id AND r.org_id = d.org_id \
          AND r.project_id = d.project_id AND r.id = d.rule_id \
         WHERE d.id = $1";
    let delivered = Delivered::is(o);
    let mut key = None;
    if delivered {
        key = query_opt(
            c,
            "reading a delivery's rule",
            RULE_OF_DELIVERY,
            &[&a.delivery_id],
        )
        .await?
        .filter(|r| matches!(col::<Option<Millis>>(r, 5), Ok(None)));
    }
    if key.is_none() {
        key = query_opt(
            c,
            "locking a delivery's rule",
            &format!("{RULE_OF_DELIVERY} FOR NO KEY UPDATE OF r"),
            &[&a.delivery_id],
        )
        .await?;
    }
    let Some(key) = key else {
        // Deleted with its rule while the attempt ran: there is nothing to record it on.
        return Ok(());
    };
    let (acc, org, proj, rule): (String, String, String, String) =
        (col(&key, 0)?, col(&key, 1)?, col(&key, 2)?, col(&key, 3)?);
    let health = RuleHealth {
        enabled: col(&key, 4)?,
        failing_since: col(&key, 5)?,
    };
    execute(
        c,
        "locking a delivery",
        "SELECT 1 FROM deliveries WHERE id = $1 FOR UPDATE",
        &[&a.delivery_id],
    )
    .await?;
    let headers = a.request_headers.to_string();
    let response_headers = a.response_headers.as_ref().map(|h| h.to_string());
    let response_status = a.response_status.map(i32::from);
    // Numbered here, so an attempt made under a stale lease is logged too, never overwritten.
    execute(
        c,
        "logging a delivery attempt",
        &format!(
            "INSERT INTO delivery_attempts ({ATTEMPT_COLS}) VALUES ($1, \
             (SELECT COALESCE(MAX(attempt), 0) + 1 FROM delivery_attempts WHERE delivery_id = $1), \
             $2, $3, $4, $5, $6, $7, $8, $9)"
        ),
        &[
            &a.delivery_id,
            &a.started_at,
            &a.duration_ms,
            &a.url,
            &headers,
            &response_status,
            &response_headers,
            &a.response_body,
            &a.error,
        ],
    )
    .await?;
    let (status, next_at, step) = match o.next {
        Next::Done => (delivery_status::SUCCESS, None, None),
        Next::RetryAt(at, step) => (delivery_status::PENDING, Some(at), Some(step as i32)),
        Next::GiveUp => (delivery_status::FAILED, None, None),
    };
    let updated = query_opt(
        c,
        "recording a delivery attempt",
        "UPDATE deliveries SET status = $2, attempts = attempts + 1, \
         schedule_step = COALESCE($4, schedule_step), next_attempt_at = $5, lease_until = NULL, \
         lease_token = NULL, last_error = $6, response_status = $7, updated_at = $8 \
         WHERE id = $1 AND lease_token = $3 \
         RETURNING attempts, execution_id IS NOT NULL",
        &[
            &a.delivery_id,
            &status,
            &o.lease,
            &step,
            &next_at,
            &a.error,
            &response_status,
            &now,
        ],
    )
    .await?;
    let Some(updated) = updated else {
        // Redelivered or claimed again while this attempt ran: it is logged, nothing else.
        execute(
            c,
            "recording a delivery attempt",
            "UPDATE deliveries SET attempts = attempts + 1 WHERE id = $1",
            &[&a.delivery_id],
        )
        .await?;
        return Ok(());
    };
    let (attempts, in_order): (i32, bool) = (col(&updated, 0)?, col(&updated, 1)?);
    // Later events of the execution move only behind a head that is retried (or was before).
    if in_order && (next_at.is_some() || attempts > 1) {
        execute(
            c,
            "locking out fan-outs",
            "SELECT pg_advisory_xact_lock_shared($1)",
            &[&FAN_OUT_LOCK],
        )
        .await?;
        follow_the_head(c, &a.delivery_id, next_at, now).await?;
    }
    let update = after_attempt(health, &o.rule, o.next, a.started_at);
    let key: [&(dyn ToSql + Sync); 4] = [&acc, &org, &proj, &rule];
    if update.failing_since != health.failing_since {
        execute(
            c,
            "storing a rule's failing streak",
            "UPDATE event_rules SET failing_since = $5 \
             WHERE account_id = $1 AND org_id = $2 AND project_id = $3 AND id = $4",
            &[key[0], key[1], key[2], key[3], &update.failing_since],
        )
        .await?;
    }
    if let Some(reason) = &update.disable {
        execute(
            c,
            "disabling a rule",
            "UPDATE event_rules SET enabled = FALSE, disabled_reason = $5, updated_at = $6 \
             WHERE account_id = $1 AND org_id = $2 AND project_id = $3 AND id = $4",
            &[key[0], key[1], key[2], key[3], reason, &now],
        )
        .await?;
    }
    if update.end_pending {
        fail_pending_of_disabled(c, [&acc, &org, &proj, &rule], now).await?;
    }
    Ok(())
}

/// Delivered attempts recorded in groups (issue 13), as [`super::executions::Ends`] ends
/// executions: the attempts that end while the group in flight commits go with the next one,
/// one statement ([`DELIVERED_SQL`]) and one commit for them all. Recorded one at a time, with
/// five statements and a commit each, the attempts bounded outbound deliveries on PostgreSQL
/// at 1.4–2.0 k/s: the server's CPU went to starting statements and commits, 540 µs of it per
/// delivery (the thirty-sixth sitting).
pub(super) struct Attempts {
    pub(super) pool: deadpool_postgres::Pool,
}

/// One write in flight: the attempts of a drain end about together, and the larger the group,
/// the smaller each attempt's share of its statements.
pub(super) const ATTEMPT_WRITES_IN_FLIGHT: u32 = 1;

/// Most attempts one group records (more wait for the next write).
const MAX_ATTEMPTS: usize = 256;

/// Most attempts queued, beyond which `Overloaded`: the dispatcher's `outbound.concurrency`
/// bounds them, and the attempt of a Test endpoint is never queued.
pub(super) const MAX_QUEUED_ATTEMPTS: usize = 4096;

/// A delivered attempt on a rule that was healthy (the one outcome the group records).
pub(super) struct Delivered {
    outcome: AttemptOutcome,
    now: Millis,
}

impl Delivered {
    /// Whether the group may record `outcome`: delivered, so the rule is healthy after it.
    fn is(outcome: &AttemptOutcome) -> bool {
        matches!(
            (&outcome.rule, outcome.next),
            (RuleEffect::Healthy, Next::Done)
        )
    }
}

/// Records the delivered attempts `$1`..`$9` (one array element per attempt) at `$10`: each
/// one whose delivery its lease still holds and whose rule has no failing streak (so nothing
/// changes on the rule), as [`record_attempt`] would, and moves the later events of the heads
/// that were retried before as [`follow_the_head`] would, when `$11` says the transaction holds
/// the fan-out lock. Returns the attempts it recorded (id and lease). The others (a stale lease,
/// a failing streak to end, a rule deleted meanwhile) are left to [`record_attempt`], alone.
///
/// The deliveries are found by id (`ANY($1)`) and each one's rule by a subquery, never by a
/// join the planner could turn around: with the statistics of a table a backlog had filled
/// seconds before, it read every delivery of the rule through `deliveries_by_rule` instead,
/// 12 ms for a group of 25. The later events moved are none of the group's (`<> ALL($1)`): one
/// statement does not update a row twice.
///
/// The attempt's number is read in the statement's snapshot: an attempt logged under a stale
/// lease of the same delivery meanwhile makes the insert fail on the key, and the group is
/// recorded one by one instead.
const DELIVERED_SQL: &str = "WITH j AS ( \
      SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], \
        $6::text[], $7::int[], $8::text[], $9::text[]) \
        AS j(id, lease, started_at, duration_ms, url, request_headers, response_status, \
             response_headers, response_body)), \
    done AS ( \
      UPDATE deliveries d SET status = 'Success', attempts = d.attempts + 1, \
        next_attempt_at = NULL, lease_until = NULL, lease_token = NULL, last_error = NULL, \
        response_status = j.response_status, updated_at = $10 \
      FROM j WHERE d.id = ANY($1) AND d.id = j.id AND d.lease_token = j.lease \
        AND (SELECT r.failing_since FROM event_rules r WHERE r.account_id = d.account_id \
               AND r.org_id = d.org_id AND r.project_id = d.project_id AND r.id = d.rule_id) \
            IS NULL \
      RETURNING d.id, j.lease, d.execution_id, d.rule_id, d.seq, d.attempts), \
    logged AS ( \
      INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, url, \
        request_headers, response_status, response_headers, response_body, error) \
      SELECT j.id, (SELECT COALESCE(MAX(a.attempt), 0) + 1 FROM delivery_attempts a \
                    WHERE a.delivery_id = j.id), \
        j.started_at, j.duration_ms, j.url, j.request_headers, j.response_status, \
        j.response_headers, j.response_body, NULL \
      FROM j JOIN done ON done.id = j.id AND done.lease = j.lease), \
    followed AS ( \
      UPDATE deliveries e SET next_attempt_at = $10 FROM done h \
      WHERE $11 AND h.execution_id IS NOT NULL AND h.attempts > 1 \
        AND e.execution_id = h.execution_id AND e.rule_id = h.rule_id \
        AND e.status = 'Pending' AND e.seq > h.seq AND e.next_attempt_at > $10 \
        AND e.id <> ALL($1)) \
    SELECT id, lease FROM done";

impl super::groups::Write for Attempts {
    type Job = Delivered;
    /// The job back, and whether the group recorded it.
    type Answer = (Delivered, StoreResult<bool>);
    const MAX_GROUP: usize = MAX_ATTEMPTS;

    async fn write(&self, group: Vec<Delivered>) -> Vec<Self::Answer> {
        const WHAT: &str = "recording delivery attempts";
        let recorded: Vec<StoreResult<bool>> = match super::client(&self.pool).await {
            Ok(c) => match record_delivered(&c, &group).await {
                Ok(recorded) => recorded.into_iter().map(Ok).collect(),
                // The database refused the group: each attempt is recorded alone, by the path
                // that tells which one it refused and why.
                Err(StoreError::Database { .. }) => group.iter().map(|_| Ok(false)).collect(),
                Err(e) => group.iter().map(|_| Err(alike(&e, WHAT))).collect(),
            },
            Err(e) => group.iter().map(|_| Err(alike(&e, WHAT))).collect(),
        };
        group.into_iter().zip(recorded).collect()
    }
}

/// Records `group` with [`DELIVERED_SQL`] in one round trip: whether it recorded each attempt,
/// in order.
async fn record_delivered(
    c: &deadpool_postgres::Client,
    group: &[Delivered],
) -> StoreResult<Vec<bool>> {
    let attempts: Vec<&AttemptRecord> = group.iter().map(|d| &d.outcome.attempt).collect();
    let ids: Vec<&str> = attempts.iter().map(|a| a.delivery_id.as_str()).collect();
    let leases: Vec<&str> = group.iter().map(|d| d.outcome.lease.as_str()).collect();
    let started_at: Vec<Millis> = attempts.iter().map(|a| a.started_at).collect();
    let durations: Vec<i64> = attempts.iter().map(|a| a.duration_ms).collect();
    let urls: Vec<&str> = attempts.iter().map(|a| a.url.as_str()).collect();
    let headers: Vec<String> = attempts
        .iter()
        .map(|a| a.request_headers.to_string())
        .collect();
    let statuses: Vec<Option<i32>> = attempts
        .iter()
        .map(|a| a.response_status.map(i32::from))
        .collect();
    let response_headers: Vec<Option<String>> = attempts
        .iter()
        .map(|a| a.response_headers.as_ref().map(|h| h.to_string()))
        .collect();
    let bodies: Vec<Option<&str>> = attempts
        .iter()
        .map(|a| a.response_body.as_deref())
        .collect();
    let now = group.iter().map(|d| d.now).max().unwrap_or_default();
    // A delivery attempted before may be the head of later events that wait for it: moving
    // them takes the fan-out lock, before the statement, so that its snapshot holds every
    // delivery a fan-out committed behind the head.
    let follow = attempts.iter().any(|a| a.attempt > 1);
    let lock = format!("SELECT pg_advisory_xact_lock_shared({FAN_OUT_LOCK})");
    let rows = super::query_alone(
        c,
        "recording delivery attempts",
        if follow { &lock } else { "" },
        DELIVERED_SQL,
        &[
            &ids,
            &leases,
            &started_at,
            &durations,
            &urls,
            &headers,
            &statuses,
            &response_headers,
            &bodies,
            &now,
            &follow,
        ],
    )
    .await?;
    let done = rows
        .iter()
        .map(|r| Ok((col::<String>(r, 0)?, col::<String>(r, 1)?)))
        .collect::<StoreResult<std::collections::HashSet<_>>>()?;
    Ok(group
        .iter()
        .map(|d| {
            let key = (
                d.outcome.attempt.delivery_id.clone(),
                d.outcome.lease.clone(),
            );
            done.contains(&key)
        })
        .collect())
}

/// Inside an execution write: adds to the outbox the events the execution's state now implies
/// that were not added before ([`implied_events`] decides), and records them as sent. Nothing is
/// written (and nothing read beyond one indexed lookup) when the project has no enabled rule.
pub(super) async fn sync_events(
    c: &impl GenericClient,
    id: &PlanExecutionId,
    now: Millis,
    control: Option<bool>,
) -> StoreResult<()> {
    let Some(row) = query_opt(
        c,
        "reading an execution for its events",
        &EXECUTION_FOR_EVENTS_SQL,
        &[&id.as_str()],
    )
    .await?
    else {
        return Ok(());
    };
    let execution = execution_row(&row)?;
    let sent: Option<String> = col(&row, 15)?;
    let spec: Option<String> = col(&row, 16)?;
    let project_name: String = col(&row, 17)?;
    let mut sent = SentEvents::parse(sent.as_deref());
    let steps = query(
        c,
        "reading steps for events",
        "SELECT stage_index, step_index, stage_id, stage_name, status, started_at, ended_at \
         FROM execution_steps WHERE plan_execution_id = $1 ORDER BY stage_index, step_index",
        &[&id.as_str()],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(StepRecord {
            stage_index: col::<i32>(r, 0)? as u32,
            step_index: col::<i32>(r, 1)? as u32,
            stage: col(r, 2)?,
            stage_name: col(r, 3)?,
            step: String::new(),
            step_name: String::new(),
            step_type: String::new(),
            status: col(r, 4)?,
            attempt: 0,
            started_at: col(r, 5)?,
            ended_at: col(r, 6)?,
            outputs: Default::default(),
            message: None,
            log: None,
        })
    })
    .collect::<StoreResult<Vec<_>>>()?;
    let run = RunState {
        pipeline_spec: spec.and_then(|s| serde_json::from_str(&s).ok()),
        steps,
        failure_message: None,
        execution,
    };
    let events = implied_events(&run, &project_name, &mut sent, control);
    if events.is_empty() {
        return Ok(());
    }
    // Shared: event writers do not wait for each other, only the outbox reader waits for them.
    execute(
        c,
        "locking the outbox",
        "SELECT pg_advisory_xact_lock_shared($1)",
        &[&OUTBOX_LOCK],
    )
    .await?;
    let x = &run.execution;
    let [acc, org, proj] = project_params(&x.scope);
    for event in &events {
        execute(
            c,
            "writing an execution event",
            "INSERT INTO outbox_events (account_id, org_id, project_id, pipeline_id, event_type, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&acc, &org, &proj, &x.pipeline, &event.event_type, &event.body, &now],
        )
        .await?;
    }
    execute(
        c,
        "writing an execution event",
        "UPDATE executions SET events_sent = $2 WHERE plan_execution_id = $1",
        &[&id.as_str(), &sent.to_stored()],
    )
    .await?;
    Ok(())
}
