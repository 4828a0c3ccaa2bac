//! Outbound event rules (DESIGN §8): create, read, change and delete rules; rotate their
//! secret; send a test event; read, redeliver and recover deliveries.

use serde::Serialize;
use serde_json::Value;

use super::Gateway;
use crate::domain::event_rule::{
    keep_redacted_headers, ping_body, sample_body, EventRule, EventRuleSpec, EVENT_TYPES,
    READ_ONLY_FIELDS,
};
use crate::domain::ids::{DeliveryId, Identifier, ProjectRef};
use crate::domain::BodyFormat;
use crate::error::Error;
use crate::outbound::deliver::Response;
use crate::store::outbound::{
    AttemptOutcome, AttemptRecord, DeliveryRecord, EventRuleRecord, NewDelivery, Next, Redelivery,
    RuleEffect, TEST_LEASE,
};
use crate::store::{now_millis, Millis, Page};

/// How long a rotated-out secret keeps signing.
pub const ROTATION_OVERLAP_MS: Millis = 24 * 3600 * 1000;
/// Attempts shown with a delivery when no `limit` is given (the newest).
pub const ATTEMPTS_SHOWN: u32 = 20;

/// A rule as the API reports it: the body (secret-looking header values masked) plus state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventRuleView {
    /// The body.
    #[serde(flatten)]
    #[schema(inline)]
    pub spec: EventRuleSpec,
    /// Account.
    pub account_identifier: String,
    /// Org.
    pub org_identifier: String,
    /// Project.
    pub project_identifier: String,
    /// The signing secret: only in the answer that creates or rotates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
    /// Until when the previous secret also signs, after a rotation.
    pub previous_secret_valid_until: Option<Millis>,
    /// The first failed attempt since the last delivered one.
    pub failing_since: Option<Millis>,
    /// Why triggerd disabled the rule (410, continuous failure).
    pub disabled_reason: Option<String>,
    /// Creation time.
    pub created_at: Millis,
    /// Last update time.
    pub updated_at: Millis,
}

impl EventRuleView {
    fn of(r: &EventRuleRecord, show_secret: bool) -> Self {
        Self {
            spec: EventRule::from_stored(r.spec.clone()).redacted(),
            account_identifier: r.scope.account.to_string(),
            org_identifier: r.scope.org.to_string(),
            project_identifier: r.scope.project.to_string(),
            signing_secret: show_secret.then(|| r.secret.clone()),
            previous_secret_valid_until: r
                .previous_until
                .filter(|until| *until > now_millis() && r.previous_secret.is_some()),
            failing_since: r.failing_since,
            disabled_reason: r.disabled_reason.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A delivery as the API reports it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    /// Its id.
    pub id: String,
    /// The rule.
    pub rule_identifier: String,
    /// `webhook-id`: the same on every attempt and redelivery.
    pub webhook_id: String,
    /// The event type.
    pub event_type: String,
    /// `Pending`, `Success` or `Failed`.
    pub status: String,
    /// Attempts made.
    pub attempt_count: u32,
    /// When the next attempt is due (Pending only).
    pub next_attempt_at: Option<Millis>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// The last attempt's response status.
    pub response_status: Option<u16>,
    /// Creation time.
    pub created_at: Millis,
    /// Last update time.
    pub updated_at: Millis,
    /// The body sent (detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    /// The newest attempts (detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptView>>,
}

impl DeliveryView {
    fn of(d: &DeliveryRecord) -> Self {
        Self {
            id: d.id.clone(),
            rule_identifier: d.rule.clone(),
            webhook_id: d.webhook_id.clone(),
            event_type: d.event_type.clone(),
            status: d.status.clone(),
            attempt_count: d.attempts,
            next_attempt_at: (d.status == crate::store::outbound::delivery_status::PENDING)
                .then_some(d.next_attempt_at)
                .flatten(),
            last_error: d.last_error.clone(),
            response_status: d.response_status,
            created_at: d.created_at,
            updated_at: d.updated_at,
            payload: None,
            attempts: None,
        }
    }
}

/// One attempt as the API reports it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    /// 1-based number.
    pub attempt: u32,
    /// When it started.
    pub started_at: Millis,
    /// How long it took.
    pub duration_ms: i64,
    /// Where it went.
    pub url: String,
    /// Request headers, secrets masked.
    #[schema(value_type = Object)]
    pub request_headers: Value,
    /// Response status.
    pub response_status: Option<u16>,
    /// Response headers.
    #[schema(value_type = Option<Object>)]
    pub response_headers: Option<Value>,
    /// The first 16 KiB of the response body.
    pub response_body: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

impl From<AttemptRecord> for AttemptView {
    fn from(a: AttemptRecord) -> Self {
        Self {
            attempt: a.attempt,
            started_at: a.started_at,
            duration_ms: a.duration_ms,
            url: a.url,
            request_headers: a.request_headers,
            response_status: a.response_status,
            response_headers: a.response_headers,
            response_body: a.response_body,
            error: a.error,
        }
    }
}

/// Removes what a `GET` adds to a rule, so that a rule read can be sent back as it is. The
/// scope fields must name the project of the URL.
fn drop_read_only_fields(doc: &mut Value, project: &ProjectRef) -> Result<(), Error> {
    let Some(map) = doc.as_object_mut() else {
        return Ok(());
    };
    for (field, expected) in [
        ("accountIdentifier", project.account.as_str()),
        ("orgIdentifier", project.org.as_str()),
        ("projectIdentifier", project.project.as_str()),
    ] {
        if let Some(given) = map.remove(field) {
            if given.as_str() != Some(expected) {
                return Err(Error::InvalidRequest(format!(
                    "Invalid request: {field} in the body does not match '{expected}' in the URL"
                )));
            }
        }
    }
    for field in READ_ONLY_FIELDS {
        map.remove(*field);
    }
    Ok(())
}

fn delivery_missing(rule: &Identifier, id: &str) -> Error {
    Error::NotFound(format!(
        "Delivery {} does not exist for event rule {rule}",
        crate::domain::ids::truncate_for_message(id)
    ))
}

fn rule_missing(id: &Identifier, project: &ProjectRef) -> Error {
    Error::NotFound(format!("Event rule {id} does not exist in {project}"))
}

impl Gateway {
    /// Validates and stores a rule given as JSON or YAML, queueing a `ping` when it is enabled.
    /// A new rule's signing secret is in the answer, and only there.
    pub async fn put_event_rule(
        &self,
        project: &ProjectRef,
        id: &Identifier,
        text: &str,
        format: BodyFormat,
        dry_run: bool,
    ) -> Result<(EventRuleView, bool), Error> {
        let mut doc: Value = format.parse(text)?;
        drop_read_only_fields(&mut doc, project)?;
        let stored = self.store.get_event_rule(project, id).await?;
        if let Some(stored) = &stored {
            keep_redacted_headers(&mut doc, &stored.spec)?;
        }
        let rule = EventRule::from_value(id, doc)?;
        let now = now_millis();
        let name = rule.spec.name.clone().unwrap_or_default();
        let ping = rule.spec.enabled.then(|| {
            let body = ping_body(project.project.as_str(), id.as_str(), &name);
            NewDelivery {
                id: DeliveryId::generate().to_string(),
                scope: project.clone(),
                rule: id.to_string(),
                webhook_id: body["id"].as_str().unwrap_or_default().to_owned(),
                event_type: "ping".into(),
                payload: body.to_string(),
                due_at: Some(now),
                execution_id: None,
                test: false,
            }
        });
        let record = EventRuleRecord {
            scope: project.clone(),
            identifier: id.clone(),
            spec: rule.spec,
            secret: crate::outbound::signature::generate_secret(),
            previous_secret: None,
            previous_until: None,
            failing_since: None,
            disabled_reason: None,
            created_at: now,
            updated_at: now,
        };
        if dry_run {
            return Ok((EventRuleView::of(&record, false), stored.is_none()));
        }
        let (stored, created) = self.store.put_event_rule(record, ping).await?;
        self.dispatcher.notify();
        Ok((EventRuleView::of(&stored, created), created))
    }

    /// Reads a rule (without its secret).
    pub async fn get_event_rule(
        &self,
        project: &ProjectRef,
        id: &Identifier,
    ) -> Result<EventRuleView, Error> {
        let rule = self.rule(project, id).await?;
        Ok(EventRuleView::of(&rule, false))
    }

    async fn rule(&self, project: &ProjectRef, id: &Identifier) -> Result<EventRuleRecord, Error> {
        self.store
            .get_event_rule(project, id)
            .await?
            .ok_or_else(|| rule_missing(id, project))
    }

    /// A project's rules.
    pub async fn list_event_rules(
        &self,
        project: &ProjectRef,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<EventRuleView>, Error> {
        let page = self.store.list_event_rules(project, cursor, limit).await?;
        Ok(Page {
            items: page
                .items
                .iter()
                .map(|r| EventRuleView::of(r, false))
                .collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// Deletes a rule and its deliveries.
    pub async fn delete_event_rule(
        &self,
        project: &ProjectRef,
        id: &Identifier,
    ) -> Result<bool, Error> {
        Ok(self.store.delete_event_rule(project, id).await?)
    }

    /// Replaces the signing secret; the old one keeps signing (alongside) for 24 hours. The new
    /// secret is in the answer, and only there.
    pub async fn rotate_event_rule_secret(
        &self,
        project: &ProjectRef,
        id: &Identifier,
    ) -> Result<EventRuleView, Error> {
        let rule = self
            .store
            .rotate_event_rule_secret(
                project,
                id,
                crate::outbound::signature::generate_secret(),
                now_millis() + ROTATION_OVERLAP_MS,
            )
            .await?
            .ok_or_else(|| rule_missing(id, project))?;
        Ok(EventRuleView::of(&rule, true))
    }

    /// Sends a sample event to the rule's URL now, even when the rule is disabled, and returns
    /// the delivery with its one attempt. A test is never retried and does not count towards
    /// disabling the rule.
    pub async fn test_event_rule(
        &self,
        project: &ProjectRef,
        id: &Identifier,
        event_type: Option<&str>,
    ) -> Result<DeliveryView, Error> {
        let event_type = event_type.unwrap_or("pipeline_end");
        if !EVENT_TYPES.contains(&event_type) {
            return Err(Error::InvalidRequest(format!(
                "Invalid request: unknown eventType '{}'; known: {}",
                crate::domain::ids::truncate_for_message(event_type),
                EVENT_TYPES.join(", ")
            )));
        }
        let rule = self.rule(project, id).await?;
        let project_name = self
            .store
            .get_project(project)
            .await?
            .map_or_else(|| project.project.to_string(), |p| p.name);
        let body = sample_body(event_type, (project.project.as_str(), &project_name));
        let new = NewDelivery {
            id: DeliveryId::generate().to_string(),
            scope: project.clone(),
            rule: id.to_string(),
            webhook_id: body["id"].as_str().unwrap_or_default().to_owned(),
            event_type: event_type.to_owned(),
            payload: body.to_string(),
            due_at: None,
            execution_id: None,
            test: true,
        };
        self.store.insert_delivery(new.clone()).await?;
        let now = now_millis();
        let delivery = DeliveryRecord {
            id: new.id.clone(),
            scope: new.scope,
            rule: new.rule,
            webhook_id: new.webhook_id,
            event_type: new.event_type,
            payload: new.payload,
            status: crate::store::outbound::delivery_status::PENDING.into(),
            attempts: 0,
            schedule_step: 0,
            next_attempt_at: None,
            last_error: None,
            response_status: None,
            created_at: now,
            updated_at: now,
            execution_id: None,
            seq: 0,
        };
        let (attempt, response) = self.sender.send(&rule, &delivery, 1).await;
        let next = if response == Response::Delivered {
            Next::Done
        } else {
            Next::GiveUp
        };
        self.store
            .record_attempt(
                AttemptOutcome {
                    lease: TEST_LEASE.into(),
                    attempt,
                    next,
                    rule: RuleEffect::None,
                },
                now_millis(),
            )
            .await?;
        self.delivery(project, id, &new.id, ATTEMPTS_SHOWN).await
    }

    /// A rule's deliveries, newest first, optionally only those in `status` (a
    /// [`delivery_status`](crate::store::outbound::delivery_status) value).
    pub async fn list_deliveries(
        &self,
        project: &ProjectRef,
        id: &Identifier,
        status: Option<&'static str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<DeliveryView>, Error> {
        self.rule(project, id).await?;
        let page = self
            .store
            .list_deliveries(project, id, status, cursor, limit)
            .await?;
        Ok(Page {
            items: page.items.iter().map(DeliveryView::of).collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// A delivery with its newest `attempts` attempts.
    pub async fn delivery(
        &self,
        project: &ProjectRef,
        rule: &Identifier,
        id: &str,
        attempts: u32,
    ) -> Result<DeliveryView, Error> {
        let missing = || delivery_missing(rule, id);
        if DeliveryId::parse(id).is_none() {
            return Err(missing());
        }
        let (delivery, attempts) = self
            .store
            .get_delivery(project, rule, id, attempts)
            .await?
            .ok_or_else(missing)?;
        let mut view = DeliveryView::of(&delivery);
        view.payload = serde_json::from_str(&delivery.payload).ok();
        view.attempts = Some(attempts.into_iter().map(AttemptView::from).collect());
        Ok(view)
    }

    /// Queues a delivery again, from the start of the schedule, with the same `webhook-id`.
    pub async fn redeliver(
        &self,
        project: &ProjectRef,
        rule: &Identifier,
        id: &str,
    ) -> Result<DeliveryView, Error> {
        self.enabled_rule(project, rule).await?;
        let missing = || delivery_missing(rule, id);
        if DeliveryId::parse(id).is_none() {
            return Err(missing());
        }
        let delivery = match self
            .store
            .redeliver(project, rule, id, now_millis())
            .await?
        {
            Redelivery::Queued(delivery) => delivery,
            Redelivery::Missing => return Err(missing()),
            Redelivery::InFlight => {
                return Err(Error::InvalidRequest(format!(
                    "Invalid request: delivery {id} is being attempted right now; redeliver it once this attempt has ended"
                )))
            }
            Redelivery::Test => {
                return Err(Error::InvalidRequest(format!(
                    "Invalid request: delivery {id} is a test sample, which is never sent again; use POST .../test to send another"
                )))
            }
        };
        self.dispatcher.notify();
        Ok(DeliveryView::of(&delivery))
    }

    /// Queues again every failed delivery of the rule created since `since`; returns how many.
    pub async fn recover_deliveries(
        &self,
        project: &ProjectRef,
        rule: &Identifier,
        since: Millis,
    ) -> Result<u64, Error> {
        self.enabled_rule(project, rule).await?;
        let n = self
            .store
            .recover_deliveries(project, rule, since, now_millis())
            .await?;
        self.dispatcher.notify();
        Ok(n)
    }

    /// The rule, which must be enabled for deliveries to be queued again.
    async fn enabled_rule(
        &self,
        project: &ProjectRef,
        id: &Identifier,
    ) -> Result<EventRuleRecord, Error> {
        let rule = self.rule(project, id).await?;
        if !rule.spec.enabled {
            return Err(Error::InvalidRequest(format!(
                "Invalid request: event rule {id} is disabled{}; enable it (PUT with \"enabled\": true) before queueing deliveries again",
                rule.disabled_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )));
        }
        Ok(rule)
    }
}
