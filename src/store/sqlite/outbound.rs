//! [`OutboundStore`] on SQLite, and the outbox writes that execution changes make in their own
//! transaction ([`sync_events`], [`emit_control_events`]).

use std::sync::LazyLock;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{
    execution_row, identifier_col, is_fk_violation, project_cols, sql_err, SqliteStore,
    EXECUTION_COLS,
};
use crate::domain::event_rule::EventRuleSpec;
use crate::domain::ids::{Identifier, LeaseToken, PlanExecutionId, ProjectRef};
use crate::outbound::events::{implied_events, SentEvents};
use crate::outbound::health::{after_attempt, RuleHealth};
use crate::store::cursor::{decode_cursor, encode_cursor, page};
use crate::store::executions::{RunState, StepRecord};
use crate::store::outbound::{
    delivery_status, AttemptOutcome, AttemptRecord, DeliveryRecord, DueDelivery, EventRuleRecord,
    NewDelivery, Next, OutboundStore, OutboxEvent, Redelivery, TEST_LEASE,
};
use crate::store::{Millis, Page, StoreError, StoreResult};

const RULE_COLS: &str = "account_id, org_id, project_id, id, spec, secret, previous_secret, \
     previous_until, failing_since, disabled_reason, created_at, updated_at, enabled";
/// The written columns of a delivery (a macro so that [`DELIVERY_SELECT`] can extend it).
macro_rules! delivery_cols {
    () => {
        "id, account_id, org_id, project_id, rule_id, webhook_id, event_type, payload, status, \
         attempts, schedule_step, next_attempt_at, last_error, response_status, created_at, \
         updated_at, execution_id"
    };
}
const DELIVERY_COLS: &str = delivery_cols!();
/// [`DELIVERY_COLS`] and the insertion order, for reading.
const DELIVERY_SELECT: &str = concat!(delivery_cols!(), ", rowid");
const ATTEMPT_COLS: &str = "delivery_id, attempt, started_at, duration_ms, url, request_headers, \
     response_status, response_headers, response_body, error";

/// `cols` with each column qualified by `alias` (`a, b` → `d.a, d.b`).
fn qualified(cols: &str, alias: &str) -> String {
    cols.split(", ")
        .map(|col| format!("{alias}.{}", col.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The claim: leases due deliveries and returns them (built once: the dispatcher runs it for
/// every claim).
static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE deliveries SET lease_until = ?2, lease_token = ?5 WHERE id IN ( \
           SELECT d.id FROM deliveries d JOIN event_rules r \
             ON r.account_id = d.account_id AND r.org_id = d.org_id \
            AND r.project_id = d.project_id AND r.id = d.rule_id \
           WHERE d.status = 'Pending' AND d.next_attempt_at <= ?1 \
             AND (d.lease_until IS NULL OR d.lease_until < ?1) AND r.enabled = 1 \
             AND NOT EXISTS (SELECT 1 FROM json_each(r.spec, '$.selectors') s \
                             WHERE s.value NOT IN (SELECT value FROM json_each(?3))) \
             AND (d.execution_id IS NULL OR NOT EXISTS ( \
                   SELECT 1 FROM deliveries e WHERE e.execution_id = d.execution_id \
                   AND e.rule_id = d.rule_id AND e.status = 'Pending' \
                   AND e.rowid < d.rowid)) \
           ORDER BY d.next_attempt_at, d.rowid LIMIT ?4) \
         RETURNING {DELIVERY_SELECT}"
    )
});

/// The execution and its project's name, when the project has an enabled rule (built once: it
/// runs inside every execution write).
static EXECUTION_FOR_EVENTS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, x.events_sent, x.pipeline_spec, p.name FROM executions x \
         JOIN projects p ON p.account_id = x.account_id AND p.org_id = x.org_id AND p.id = x.project_id \
         WHERE x.plan_execution_id = ?1 AND EXISTS (SELECT 1 FROM event_rules r \
           WHERE r.account_id = x.account_id AND r.org_id = x.org_id \
             AND r.project_id = x.project_id AND r.enabled = 1)",
        qualified(EXECUTION_COLS, "x")
    )
});

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: r.get(0)?,
        scope: project_cols(r, 1)?,
        rule: r.get(4)?,
        webhook_id: r.get(5)?,
        event_type: r.get(6)?,
        payload: r.get(7)?,
        status: r.get(8)?,
        attempts: r.get(9)?,
        schedule_step: r.get(10)?,
        next_attempt_at: r.get(11)?,
        last_error: r.get(12)?,
        response_status: r.get(13)?,
        created_at: r.get(14)?,
        updated_at: r.get(15)?,
        execution_id: r.get(16)?,
        seq: r.get(17)?,
    })
}

fn json_col(text: Option<String>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn attempt_row(r: &Row<'_>) -> rusqlite::Result<AttemptRecord> {
    Ok(AttemptRecord {
        delivery_id: r.get(0)?,
        attempt: r.get(1)?,
        started_at: r.get(2)?,
        duration_ms: r.get(3)?,
        url: r.get(4)?,
        request_headers: json_col(r.get(5)?).unwrap_or_default(),
        response_status: r.get(6)?,
        response_headers: json_col(r.get(7)?),
        response_body: r.get(8)?,
        error: r.get(9)?,
    })
}

fn insert_delivery(c: &Connection, d: &NewDelivery, now: Millis) -> rusqlite::Result<usize> {
    // A test is attempted by the caller at once under its own lease, never by the dispatcher;
    // it is `Failed` until that attempt is recorded. A later event of an execution is due no
    // earlier than the pending ones before it to the same rule: behind a retried head it waits
    // with it, as [`follow_the_head`] keeps it.
    let (status, lease) = if d.test {
        (delivery_status::FAILED, Some(TEST_LEASE))
    } else {
        (delivery_status::PENDING, None)
    };
    c.prepare_cached(&format!(
        "INSERT INTO deliveries ({DELIVERY_COLS}, lease_token, is_test) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, 0, \
           COALESCE(MAX(?10, (SELECT MAX(h.next_attempt_at) FROM deliveries h \
             WHERE h.execution_id = ?12 AND h.rule_id = ?5 AND h.status = 'Pending' \
               AND NOT ?14)), ?10), \
           NULL, NULL, ?11, ?11, ?12, ?13, ?14)"
    ))?
    .execute(params![
        d.id,
        d.scope.account.as_str(),
        d.scope.org.as_str(),
        d.scope.project.as_str(),
        d.rule,
        d.webhook_id,
        d.event_type,
        d.payload,
        status,
        d.due_at,
        now,
        d.execution_id,
        lease,
        d.test
    ])
}

/// Keeps the later pending events of the same execution to the same rule due no earlier than
/// this delivery: behind a head that is retried later they wait with it (so the claim does not
/// scan them again and again), and once the head is done they are due now.
fn follow_the_head(
    c: &Connection,
    delivery: &str,
    retry_at: Option<Millis>,
    now: Millis,
) -> rusqlite::Result<usize> {
    // Only rows that must move are written: most heads succeed at once, and their followers
    // are already due.
    let (sql, at) = match retry_at {
        Some(at) => ("e.next_attempt_at < ?2", at),
        None => ("e.next_attempt_at > ?2", now),
    };
    c.prepare_cached(&format!(
        "UPDATE deliveries SET next_attempt_at = ?2 WHERE rowid IN ( \
           SELECT e.rowid FROM deliveries h JOIN deliveries e \
             ON e.execution_id = h.execution_id AND e.rule_id = h.rule_id \
           WHERE h.id = ?1 AND e.execution_id IS NOT NULL AND e.status = 'Pending' \
             AND e.rowid > h.rowid AND {sql})"
    ))?
    .execute(params![delivery, at])
}

fn rule_enabled(c: &Connection, key: [&str; 4]) -> rusqlite::Result<bool> {
    c.prepare_cached(
        "SELECT enabled FROM event_rules WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND id = ?4",
    )?
    .query_row(params![key[0], key[1], key[2], key[3]], |r| r.get(0))
    .optional()
    .map(|e| e.unwrap_or(false))
}

/// Marks the pending deliveries of a disabled rule that no attempt holds `Failed` (they can be
/// recovered once it is enabled again), so nothing waits forever behind a disabled rule.
fn fail_pending_of_disabled(
    c: &Connection,
    key: [&str; 4],
    now: Millis,
) -> rusqlite::Result<usize> {
    c.prepare_cached(
        "UPDATE deliveries SET status = 'Failed', next_attempt_at = NULL, updated_at = ?5, \
         last_error = COALESCE(last_error || '; ', '') || 'not sent: the rule is disabled' \
         WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND rule_id = ?4 \
           AND status = 'Pending' AND (lease_until IS NULL OR lease_until < ?5) \
           AND EXISTS (SELECT 1 FROM event_rules r WHERE r.account_id = ?1 AND r.org_id = ?2 \
                       AND r.project_id = ?3 AND r.id = ?4 AND r.enabled = 0)",
    )?
    .execute(params![key[0], key[1], key[2], key[3], now])
}

fn project_params(p: &ProjectRef) -> [&str; 3] {
    [p.account.as_str(), p.org.as_str(), p.project.as_str()]
}

#[async_trait]
impl OutboundStore for SqliteStore {
    async fn put_event_rule(
        &self,
        rule: EventRuleRecord,
        ping: Option<NewDelivery>,
    ) -> StoreResult<(EventRuleRecord, bool)> {
        self.writer
            .write(move |c| {
                let [acc, org, proj] = project_params(&rule.scope);
                let spec = serde_json::to_string(&rule.spec)
                    .map_err(|e| StoreError::db("encoding an event rule", e))?;
                let existed: bool = c
                    .query_row(
                        "SELECT EXISTS(SELECT 1 FROM event_rules WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND id = ?4)",
                        params![acc, org, proj, rule.identifier.as_str()],
                        |r| r.get(0),
                    )
                    .map_err(sql_err("reading an event rule"))?;
                let result = if existed {
                    // A change starts the rule afresh: its failure streak and any reason
                    // triggerd disabled it are forgotten. The secrets stay.
                    c.execute(
                        "UPDATE event_rules SET enabled = ?5, spec = ?6, failing_since = NULL, \
                         disabled_reason = NULL, updated_at = ?7 \
                         WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND id = ?4",
                        params![acc, org, proj, rule.identifier.as_str(), rule.spec.enabled, spec, rule.updated_at],
                    )
                } else {
                    c.execute(
                        "INSERT INTO event_rules (account_id, org_id, project_id, id, enabled, spec, secret, \
                         created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                        params![acc, org, proj, rule.identifier.as_str(), rule.spec.enabled, spec, rule.secret, rule.created_at],
                    )
                };
                result.map_err(|e| {
                    if is_fk_violation(&e) {
                        StoreError::ParentMissing(format!("Project {} does not exist", rule.scope))
                    } else {
                        StoreError::db("writing an event rule", e)
                    }
                })?;
                if let Some(ping) = &ping {
                    insert_delivery(c, ping, rule.updated_at).map_err(sql_err("queueing a ping"))?;
                }
                if !rule.spec.enabled {
                    fail_pending_of_disabled(c, [acc, org, proj, rule.identifier.as_str()], rule.updated_at)
                        .map_err(sql_err("ending the deliveries of a disabled rule"))?;
                }
                let stored = c
                    .prepare_cached(&format!(
                        "SELECT {RULE_COLS} FROM event_rules WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND id = ?4"
                    ))
                    .and_then(|mut s| s.query_row(params![acc, org, proj, rule.identifier.as_str()], rule_row))
                    .map_err(sql_err("reading an event rule"))?;
                Ok((stored, !existed))
            })
            .await
    }

    async fn get_event_rule(
        &self,
        p: &ProjectRef,
        id: &Identifier,
    ) -> StoreResult<Option<EventRuleRecord>> {
        self.read("reading an event rule", |c| {
            let [acc, org, proj] = project_params(p);
            c.prepare_cached(&format!(
                "SELECT {RULE_COLS} FROM event_rules WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND id = ?4"
            ))?
            .query_row(params![acc, org, proj, id.as_str()], rule_row)
            .optional()
        })
    }

    async fn list_event_rules(
        &self,
        p: &ProjectRef,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<EventRuleRecord>> {
        let after = decode_cursor(cursor, 1)?
            .and_then(|v| v.into_iter().next())
            .unwrap_or_default();
        let items = self.read("listing event rules", |c| {
            let [acc, org, proj] = project_params(p);
            c.prepare_cached(&format!(
                "SELECT {RULE_COLS} FROM event_rules WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 \
                 AND id > ?4 ORDER BY id LIMIT ?5"
            ))?
            .query_map(params![acc, org, proj, after, limit + 1], rule_row)?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(page(items, limit, |r| {
            encode_cursor(&[r.identifier.as_str()])
        }))
    }

    async fn delete_event_rule(&self, p: &ProjectRef, id: &Identifier) -> StoreResult<bool> {
        let (p, id) = (p.clone(), id.clone());
        self.writer
            .write(move |c| {
                let [acc, org, proj] = project_params(&p);
                let n = c
                    .execute(
                        "DELETE FROM event_rules WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND id = ?4",
                        params![acc, org, proj, id.as_str()],
                    )
                    .map_err(sql_err("deleting an event rule"))?;
                Ok(n == 1)
            })
            .await
    }

    async fn rotate_event_rule_secret(
        &self,
        p: &ProjectRef,
        id: &Identifier,
        secret: String,
        previous_until: Millis,
    ) -> StoreResult<Option<EventRuleRecord>> {
        let (p, id) = (p.clone(), id.clone());
        self.writer
            .write(move |c| {
                let [acc, org, proj] = project_params(&p);
                c.prepare_cached(&format!(
                    "UPDATE event_rules SET previous_secret = secret, previous_until = ?5, secret = ?6, updated_at = ?7 \
                     WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND id = ?4 RETURNING {RULE_COLS}"
                ))
                .and_then(|mut s| {
                    s.query_row(
                        params![acc, org, proj, id.as_str(), previous_until, secret, crate::store::now_millis()],
                        rule_row,
                    )
                    .optional()
                })
                .map_err(sql_err("rotating a signing secret"))
            })
            .await
    }

    async fn enabled_event_rules(&self, p: &ProjectRef) -> StoreResult<Vec<EventRuleRecord>> {
        self.read("reading event rules", |c| {
            let [acc, org, proj] = project_params(p);
            c.prepare_cached(&format!(
                "SELECT {RULE_COLS} FROM event_rules WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 \
                 AND enabled = 1 ORDER BY id"
            ))?
            .query_map(params![acc, org, proj], rule_row)?
            .collect()
        })
    }

    async fn outbox_events(&self, limit: u32) -> StoreResult<Vec<OutboxEvent>> {
        self.read("reading the outbox", |c| {
            c.prepare_cached(
                "SELECT seq, account_id, org_id, project_id, pipeline_id, event_type, payload \
                 FROM outbox_events ORDER BY seq LIMIT ?1",
            )?
            .query_map([limit], |r| {
                Ok(OutboxEvent {
                    seq: r.get(0)?,
                    scope: project_cols(r, 1)?,
                    pipeline: r.get(4)?,
                    event_type: r.get(5)?,
                    payload: r.get(6)?,
                })
            })?
            .collect()
        })
    }

    async fn fan_out(&self, deliveries: Vec<NewDelivery>, through_seq: i64) -> StoreResult<()> {
        let now = crate::store::now_millis();
        self.writer
            .write(move |c| {
                for d in &deliveries {
                    // A rule disabled or deleted since the events were read gets nothing.
                    let [acc, org, proj] = project_params(&d.scope);
                    if !rule_enabled(c, [acc, org, proj, &d.rule])
                        .map_err(sql_err("reading an event rule"))?
                    {
                        continue;
                    }
                    match insert_delivery(c, d, now) {
                        Err(e) if is_fk_violation(&e) => {}
                        other => {
                            other.map_err(sql_err("creating a delivery"))?;
                        }
                    }
                }
                c.prepare_cached("DELETE FROM outbox_events WHERE seq <= ?1")
                    .and_then(|mut s| s.execute([through_seq]))
                    .map_err(sql_err("draining the outbox"))?;
                Ok(())
            })
            .await
    }

    async fn insert_delivery(&self, delivery: NewDelivery) -> StoreResult<()> {
        let now = crate::store::now_millis();
        self.writer
            .write(move |c| {
                insert_delivery(c, &delivery, now).map_err(sql_err("creating a delivery"))?;
                Ok(())
            })
            .await
    }

    async fn claim_deliveries(
        &self,
        node_tags: &[String],
        limit: u32,
        now: Millis,
        lease_ms: i64,
    ) -> StoreResult<Vec<DueDelivery>> {
        let tags = serde_json::to_string(node_tags).unwrap_or_else(|_| "[]".into());
        let lease = LeaseToken::generate().to_string();
        self.writer
            .write(move |c| {
                // Due, of an enabled rule whose selectors this node has, and not behind an
                // earlier pending event of the same execution to the same rule. The rows come
                // back from the update itself, in no particular order.
                let mut claimed: Vec<DeliveryRecord> = c
                    .prepare_cached(&CLAIM_SQL)
                    .and_then(|mut s| {
                        s.query_map(
                            params![now, now + lease_ms, tags, limit, lease],
                            delivery_row,
                        )?
                        .collect()
                    })
                    .map_err(sql_err("claiming deliveries"))?;
                claimed.sort_by_key(|d| (d.next_attempt_at, d.seq));
                // Each rule is read (and its spec parsed) once per claim, however many of its
                // deliveries the claim took.
                let mut rules: Vec<EventRuleRecord> = Vec::new();
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT {RULE_COLS} FROM event_rules \
                         WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND id = ?4"
                    ))
                    .map_err(sql_err("reading claimed deliveries' rules"))?;
                claimed
                    .into_iter()
                    .map(|delivery| {
                        let known = rules.iter().position(|r| {
                            r.scope == delivery.scope && r.identifier.as_str() == delivery.rule
                        });
                        let rule = match known {
                            Some(i) => rules[i].clone(),
                            None => {
                                let [acc, org, proj] = project_params(&delivery.scope);
                                let rule = stmt
                                    .query_row(params![acc, org, proj, delivery.rule], rule_row)
                                    .map_err(sql_err("reading claimed deliveries' rules"))?;
                                rules.push(rule.clone());
                                rule
                            }
                        };
                        Ok(DueDelivery {
                            lease: lease.clone(),
                            delivery,
                            rule,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn record_attempt(&self, outcome: AttemptOutcome, now: Millis) -> StoreResult<()> {
        let attempt = Attempt {
            headers: outcome.attempt.request_headers.to_string(),
            response_headers: outcome
                .attempt
                .response_headers
                .as_ref()
                .map(|h| h.to_string()),
            outcome,
            now,
        };
        self.attempts.write_waiting(attempt).await.map(|_| ())
    }

    async fn release_delivery_leases(&self) -> StoreResult<u64> {
        self.writer
            .write(|c| {
                let n = c
                    .execute(
                        "UPDATE deliveries SET lease_until = NULL, lease_token = NULL \
                         WHERE lease_until IS NOT NULL AND is_test = 0",
                        [],
                    )
                    .map_err(sql_err("releasing delivery leases"))?;
                // Attempts cut short on a rule that is disabled now are not queued again.
                c.execute(
                    "UPDATE deliveries SET status = 'Failed', next_attempt_at = NULL, updated_at = ?1, \
                     last_error = COALESCE(last_error || '; ', '') || 'not sent: the rule is disabled' \
                     WHERE status = 'Pending' AND EXISTS (SELECT 1 FROM event_rules r \
                       WHERE r.account_id = deliveries.account_id AND r.org_id = deliveries.org_id \
                         AND r.project_id = deliveries.project_id AND r.id = deliveries.rule_id \
                         AND r.enabled = 0)",
                    [crate::store::now_millis()],
                )
                .map_err(sql_err("ending the deliveries of disabled rules"))?;
                Ok(n as u64)
            })
            .await
    }

    async fn list_deliveries(
        &self,
        p: &ProjectRef,
        rule: &Identifier,
        status_filter: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<DeliveryRecord>> {
        let before: i64 = match decode_cursor(cursor, 1)? {
            Some(v) => v[0].parse().map_err(|_| StoreError::InvalidCursor)?,
            None => i64::MAX,
        };
        let items = self.read("listing deliveries", |c| {
            let [acc, org, proj] = project_params(p);
            c.prepare_cached(&format!(
                "SELECT {DELIVERY_SELECT} FROM deliveries WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 \
                 AND rule_id = ?4 AND (?5 IS NULL OR status = ?5) AND rowid < ?6 \
                 ORDER BY rowid DESC LIMIT ?7"
            ))?
            .query_map(
                params![acc, org, proj, rule.as_str(), status_filter, before, limit + 1],
                delivery_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(page(items, limit, |d| encode_cursor(&[&d.seq.to_string()])))
    }

    async fn get_delivery(
        &self,
        p: &ProjectRef,
        rule: &Identifier,
        id: &str,
        attempts: u32,
    ) -> StoreResult<Option<(DeliveryRecord, Vec<AttemptRecord>)>> {
        self.read("reading a delivery", |c| {
            let [acc, org, proj] = project_params(p);
            let Some(delivery) = c
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_SELECT} FROM deliveries WHERE account_id = ?1 AND org_id = ?2 \
                     AND project_id = ?3 AND rule_id = ?4 AND id = ?5"
                ))?
                .query_row(params![acc, org, proj, rule.as_str(), id], delivery_row)
                .optional()?
            else {
                return Ok(None);
            };
            let attempts = c
                .prepare_cached(&format!(
                    "SELECT {ATTEMPT_COLS} FROM delivery_attempts WHERE delivery_id = ?1 \
                     ORDER BY attempt DESC LIMIT ?2"
                ))?
                .query_map(params![id, attempts], attempt_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some((delivery, attempts)))
        })
    }

    async fn redeliver(
        &self,
        p: &ProjectRef,
        rule: &Identifier,
        id: &str,
        now: Millis,
    ) -> StoreResult<Redelivery> {
        let (p, rule, id) = (p.clone(), rule.clone(), id.to_owned());
        self.writer
            .write(move |c| {
                let [acc, org, proj] = project_params(&p);
                let state: Option<(bool, bool)> = c
                    .prepare_cached(
                        "SELECT is_test, lease_until IS NOT NULL AND lease_until >= ?6 FROM deliveries \
                         WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND rule_id = ?4 AND id = ?5",
                    )
                    .and_then(|mut s| {
                        s.query_row(params![acc, org, proj, rule.as_str(), id, now], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .optional()
                    })
                    .map_err(sql_err("reading a delivery"))?;
                match state {
                    None => return Ok(Redelivery::Missing),
                    Some((true, _)) => return Ok(Redelivery::Test),
                    Some((_, true)) => return Ok(Redelivery::InFlight),
                    Some(_) => {}
                }
                c.prepare_cached(&format!(
                    "UPDATE deliveries SET status = 'Pending', schedule_step = 0, next_attempt_at = ?2, \
                     lease_until = NULL, lease_token = NULL, updated_at = ?2 \
                     WHERE id = ?1 RETURNING {DELIVERY_SELECT}"
                ))
                .and_then(|mut s| s.query_row(params![id, now], delivery_row))
                .map(|d| Redelivery::Queued(Box::new(d)))
                .map_err(sql_err("queueing a redelivery"))
            })
            .await
    }

    async fn recover_deliveries(
        &self,
        p: &ProjectRef,
        rule: &Identifier,
        since: Millis,
        now: Millis,
    ) -> StoreResult<u64> {
        let (p, rule) = (p.clone(), rule.clone());
        self.writer
            .write(move |c| {
                let [acc, org, proj] = project_params(&p);
                let n = c
                    .execute(
                        "UPDATE deliveries SET status = 'Pending', schedule_step = 0, next_attempt_at = ?6, \
                         lease_until = NULL, lease_token = NULL, updated_at = ?6 \
                         WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND rule_id = ?4 \
                           AND status = 'Failed' AND is_test = 0 AND created_at >= ?5",
                        params![acc, org, proj, rule.as_str(), since, now],
                    )
                    .map_err(sql_err("recovering deliveries"))?;
                Ok(n as u64)
            })
            .await
    }

    async fn purge_deliveries_before(&self, cutoff: Millis, batch: u32) -> StoreResult<u64> {
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached(
                        "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
                         WHERE created_at < ?1 AND status != 'Pending' LIMIT ?2)",
                    )
                    .and_then(|mut s| s.execute(params![cutoff, batch]))
                    .map_err(sql_err("purging old deliveries"))?;
                Ok(n as u64)
            })
            .await
    }
}

/// A rule from its columns ([`RULE_COLS`]).
fn rule_row(r: &Row<'_>) -> rusqlite::Result<EventRuleRecord> {
    let spec: String = r.get(4)?;
    Ok(EventRuleRecord {
        scope: project_cols(r, 0)?,
        identifier: identifier_col(r, 3)?,
        spec: serde_json::from_str::<EventRuleSpec>(&spec).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e))
        })?,
        secret: r.get(5)?,
        previous_secret: r.get(6)?,
        previous_until: r.get(7)?,
        failing_since: r.get(8)?,
        disabled_reason: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
    })
    .and_then(|mut rule| {
        // The column is the truth: triggerd disables rules without rewriting their body.
        rule.spec.enabled = r.get(12)?;
        Ok(rule)
    })
}

/// An attempt to record, its JSON columns already written out by the dispatcher's task, off the
/// writer's thread. Attempts are recorded in groups, one savepoint for all that were queued
/// while the writer was busy (see [`super::writer::Coalescer`]).
pub(super) struct Attempt {
    outcome: AttemptOutcome,
    headers: String,
    response_headers: Option<String>,
    now: Millis,
}

/// Records an attempt and its consequences: the delivery's state, the later events of its
/// execution, and its rule's health.
pub(super) fn write_attempt(c: &Connection, attempt: &Attempt) -> StoreResult<()> {
    record_attempt(c, attempt).map_err(sql_err("recording a delivery attempt"))
}

fn record_attempt(c: &Connection, attempt: &Attempt) -> rusqlite::Result<()> {
    let Attempt {
        outcome: o,
        headers,
        response_headers,
        now,
    } = attempt;
    let (a, now) = (&o.attempt, *now);
    // Numbered here, so an attempt made under a stale lease is logged too, never overwritten.
    let logged = c
        .prepare_cached(&format!(
            "INSERT INTO delivery_attempts ({ATTEMPT_COLS}) VALUES (?1, \
             (SELECT COALESCE(MAX(attempt), 0) + 1 FROM delivery_attempts WHERE delivery_id = ?1), \
             ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        ))?
        .execute(params![
            a.delivery_id,
            a.started_at,
            a.duration_ms,
            a.url,
            headers,
            a.response_status,
            response_headers,
            a.response_body,
            a.error
        ]);
    match logged {
        // Deleted with its rule while the attempt ran: there is nothing to record it on (and
        // no reason to fail the group it came in).
        Err(e) if is_fk_violation(&e) => return Ok(()),
        other => other?,
    };
    let (status, next_at, step) = match o.next {
        Next::Done => (delivery_status::SUCCESS, None, None),
        Next::RetryAt(at, step) => (delivery_status::PENDING, Some(at), Some(step)),
        Next::GiveUp => (delivery_status::FAILED, None, None),
    };
    // The rule's health comes back with the delivery: its key is the delivery's.
    let recorded = c
        .prepare_cached(
            "UPDATE deliveries SET status = ?2, attempts = attempts + 1, \
             schedule_step = COALESCE(?4, schedule_step), next_attempt_at = ?5, lease_until = NULL, \
             lease_token = NULL, last_error = ?6, response_status = ?7, updated_at = ?8 \
             WHERE id = ?1 AND lease_token = ?3 \
             RETURNING account_id, org_id, project_id, rule_id, attempts, execution_id IS NOT NULL, \
               (SELECT enabled FROM event_rules r WHERE r.account_id = deliveries.account_id \
                  AND r.org_id = deliveries.org_id AND r.project_id = deliveries.project_id \
                  AND r.id = deliveries.rule_id), \
               (SELECT failing_since FROM event_rules r WHERE r.account_id = deliveries.account_id \
                  AND r.org_id = deliveries.org_id AND r.project_id = deliveries.project_id \
                  AND r.id = deliveries.rule_id)",
        )?
        .query_row(
            params![
                a.delivery_id,
                status,
                o.lease,
                step,
                next_at,
                a.error,
                a.response_status,
                now
            ],
            |r| {
                let key: [String; 4] = [r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?];
                let (attempts, in_execution): (u32, bool) = (r.get(4)?, r.get(5)?);
                let health = RuleHealth {
                    // Never NULL: deleting a rule deletes its deliveries (foreign key).
                    enabled: r.get(6)?,
                    failing_since: r.get(7)?,
                };
                Ok((key, attempts, in_execution, health))
            },
        )
        .optional()?;
    let Some((key, attempts, in_execution, current)) = recorded else {
        // Redelivered or claimed again while this attempt ran: it is logged, nothing else.
        c.prepare_cached("UPDATE deliveries SET attempts = attempts + 1 WHERE id = ?1")?
            .execute([&a.delivery_id])?;
        return Ok(());
    };
    // Later events of the execution move only behind a head that is retried (or was before).
    if in_execution && (next_at.is_some() || attempts > 1) {
        follow_the_head(c, &a.delivery_id, next_at, now)?;
    }
    let [acc, org, proj, rule] = key;
    let update = after_attempt(current, &o.rule, o.next, a.started_at);
    if update.failing_since != current.failing_since {
        c.prepare_cached(
            "UPDATE event_rules SET failing_since = ?5 \
             WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND id = ?4",
        )?
        .execute(params![acc, org, proj, rule, update.failing_since])?;
    }
    if let Some(reason) = &update.disable {
        c.prepare_cached(
            "UPDATE event_rules SET enabled = 0, disabled_reason = ?5, updated_at = ?6 \
             WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND id = ?4",
        )?
        .execute(params![acc, org, proj, rule, reason, now])?;
    }
    if update.end_pending {
        fail_pending_of_disabled(c, [&acc, &org, &proj, &rule], now)?;
    }
    Ok(())
}

/// Inside an execution write: adds to the outbox the events [`implied_events`] finds in the
/// execution's state now (with `control`, its pause or continue events). Nothing is written
/// (and nothing read beyond one indexed lookup) when the project has no enabled rule.
pub(super) fn write_events(
    c: &Connection,
    id: &PlanExecutionId,
    now: Millis,
    control: Option<bool>,
) -> rusqlite::Result<()> {
    let row = c
        .prepare_cached(&EXECUTION_FOR_EVENTS_SQL)?
        .query_row([id.as_str()], |r| {
            Ok((
                execution_row(r)?,
                r.get::<_, Option<String>>(15)?,
                r.get::<_, Option<String>>(16)?,
                r.get::<_, String>(17)?,
            ))
        })
        .optional()?;
    let Some((execution, sent, spec, project_name)) = row else {
        return Ok(());
    };
    let steps = c
        .prepare_cached(&format!(
            "SELECT stage_index, step_index, stage_id, stage_name, status, started_at, ended_at \
             FROM execution_steps WHERE {} ORDER BY stage_index, step_index",
            super::executions::STEPS_OF
        ))?
        .query_map([id.as_str()], |r| {
            Ok(StepRecord {
                stage_index: r.get(0)?,
                step_index: r.get(1)?,
                stage: r.get(2)?,
                stage_name: r.get(3)?,
                step: String::new(),
                step_name: String::new(),
                step_type: String::new(),
                status: r.get(4)?,
                attempt: 0,
                started_at: r.get(5)?,
                ended_at: r.get(6)?,
                outputs: Default::default(),
                message: None,
                log: None,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let run = RunState {
        pipeline_spec: spec.and_then(|s| serde_json::from_str(&s).ok()),
        steps,
        failure_message: None,
        execution,
    };
    let mut sent = SentEvents::parse(sent.as_deref());
    let events = implied_events(&run, &project_name, &mut sent, control);
    if events.is_empty() {
        return Ok(());
    }
    let x = &run.execution;
    let mut insert = c.prepare_cached(
        "INSERT INTO outbox_events (account_id, org_id, project_id, pipeline_id, event_type, payload, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let [acc, org, proj] = project_params(&x.scope);
    for event in &events {
        insert.execute(params![
            acc,
            org,
            proj,
            x.pipeline,
            event.event_type,
            event.body,
            now
        ])?;
    }
    c.prepare_cached("UPDATE executions SET events_sent = ?2 WHERE plan_execution_id = ?1")?
        .execute(params![id.as_str(), sent.to_stored()])?;
    Ok(())
}
