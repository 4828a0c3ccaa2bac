//! What outbound event rules store (DESIGN §8): the rules, the outbox of execution events, one
//! delivery per (event, rule) and every attempt. A separate trait from [`super::Store`] (which
//! requires it) so this SQL sits in one file per backend.
//!
//! The outbox is written by the execution writes themselves (in the same transaction as the
//! state change, with the events `outbound::events` decides), so this trait only reads and
//! drains it.

use async_trait::async_trait;

use super::{Millis, Page, StoreResult};
use crate::domain::event_rule::EventRuleSpec;
use crate::domain::ids::{Identifier, ProjectRef};

/// Delivery statuses.
pub mod delivery_status {
    /// Waiting for its next attempt (or being attempted).
    pub const PENDING: &str = "Pending";
    /// A 2xx arrived.
    pub const SUCCESS: &str = "Success";
    /// Every attempt of the schedule failed (or the receiver answered 410).
    pub const FAILED: &str = "Failed";
    /// Every delivery status: the values `GET .../deliveries?status=` accepts.
    pub const ALL: &[&str] = &[PENDING, SUCCESS, FAILED];
}

/// A stored event rule. `Debug` leaves out the secrets.
#[derive(Clone)]
pub struct EventRuleRecord {
    /// Where it lives.
    pub scope: ProjectRef,
    /// Its identifier.
    pub identifier: Identifier,
    /// The checked body.
    pub spec: EventRuleSpec,
    /// The signing secret (`whsec_...`).
    pub secret: String,
    /// The secret before the last rotation, which also signs until `previous_until`.
    pub previous_secret: Option<String>,
    /// When the previous secret stops signing.
    pub previous_until: Option<Millis>,
    /// The first failed attempt since the last delivered one.
    pub failing_since: Option<Millis>,
    /// Why triggerd disabled the rule, when it did.
    pub disabled_reason: Option<String>,
    /// Creation time.
    pub created_at: Millis,
    /// Last update time.
    pub updated_at: Millis,
}

impl EventRuleRecord {
    /// The secrets that sign a delivery made at `now`: the current one, and the previous one
    /// while its 24 hours last.
    pub fn signing_secrets(&self, now: Millis) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) = (&self.previous_secret, self.previous_until) {
            if now < until {
                secrets.push(previous);
            }
        }
        secrets
    }
}

impl std::fmt::Debug for EventRuleRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRuleRecord")
            .field("scope", &self.scope)
            .field("identifier", &self.identifier)
            .field("enabled", &self.spec.enabled)
            .finish_non_exhaustive()
    }
}

/// An execution event waiting to be matched to rules.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    /// Its position in the outbox.
    pub seq: i64,
    /// The project of the execution.
    pub scope: ProjectRef,
    /// The pipeline.
    pub pipeline: String,
    /// `pipeline_start`, `stage_end`, ...
    pub event_type: String,
    /// The JSON body.
    pub payload: String,
}

/// A delivery to create.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Its id (24 hex chars).
    pub id: String,
    /// The rule's project.
    pub scope: ProjectRef,
    /// The rule.
    pub rule: String,
    /// The payload id, sent as `webhook-id`.
    pub webhook_id: String,
    /// The event type.
    pub event_type: String,
    /// The JSON body.
    pub payload: String,
    /// When to attempt it first; `None` for a test delivery sent at once by the caller.
    pub due_at: Option<Millis>,
    /// The execution whose event it is: its deliveries to one rule go out in order.
    pub execution_id: Option<String>,
    /// A Test endpoint sample: attempted once by the caller, never queued or sent again.
    pub test: bool,
}

/// A stored delivery.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    /// Its id.
    pub id: String,
    /// The rule's project.
    pub scope: ProjectRef,
    /// The rule.
    pub rule: String,
    /// `webhook-id`.
    pub webhook_id: String,
    /// The event type.
    pub event_type: String,
    /// The JSON body.
    pub payload: String,
    /// [`delivery_status`] value.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// Position in the retry schedule of the next attempt.
    pub schedule_step: u32,
    /// When the next attempt is due (Pending only).
    pub next_attempt_at: Option<Millis>,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
    /// The last attempt's response status, if one arrived.
    pub response_status: Option<u16>,
    /// Creation time.
    pub created_at: Millis,
    /// Last update time.
    pub updated_at: Millis,
    /// The execution whose event it is.
    pub execution_id: Option<String>,
    /// Insertion order (newest first in lists).
    pub seq: i64,
}

/// One attempt, as logged.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// The delivery.
    pub delivery_id: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// When it started.
    pub started_at: Millis,
    /// How long it took.
    pub duration_ms: i64,
    /// Where it went.
    pub url: String,
    /// The request headers, secrets masked (a JSON object).
    pub request_headers: serde_json::Value,
    /// The response status, when one arrived.
    pub response_status: Option<u16>,
    /// The response headers (a JSON object).
    pub response_headers: Option<serde_json::Value>,
    /// The first 16 KiB of the response body.
    pub response_body: Option<String>,
    /// Why it failed (connection refused, timeout, refused by the SSRF guard, a status that is not 2xx).
    pub error: Option<String>,
}

/// What an attempt means for its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Delivered: the delivery is `Success`.
    Done,
    /// Try again at this time, which is this step of the retry schedule.
    RetryAt(Millis, u32),
    /// No more attempts: the delivery is `Failed`.
    GiveUp,
}

/// What an attempt means for its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleEffect {
    /// Nothing (a test delivery).
    None,
    /// The receiver took it: the rule is healthy again.
    Healthy,
    /// It failed; the rule is disabled when it has been failing since before `disable_before`.
    Failing {
        /// Failing since before this time disables the rule.
        disable_before: Millis,
    },
    /// Disable the rule now, for this reason (a `410 Gone`).
    Disable(String),
}

/// The outcome of one attempt, stored in one transaction.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// The lease the attempt was made under; a stale lease (the delivery was redelivered or
    /// claimed again since) logs the attempt but changes nothing else.
    pub lease: String,
    /// The attempt as logged.
    pub attempt: AttemptRecord,
    /// What happens to the delivery.
    pub next: Next,
    /// What happens to the rule.
    pub rule: RuleEffect,
}

/// The lease token of a Test endpoint attempt.
pub const TEST_LEASE: &str = "test";

/// What a redelivery request did.
#[derive(Debug, Clone)]
pub enum Redelivery {
    /// Queued again.
    Queued(Box<DeliveryRecord>),
    /// No such delivery.
    Missing,
    /// An attempt is in flight now.
    InFlight,
    /// A Test endpoint sample, which is never sent again.
    Test,
}

/// A delivery leased to this node, with its rule.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// The lease token to record the attempt with.
    pub lease: String,
    /// The delivery.
    pub delivery: DeliveryRecord,
    /// Its rule.
    pub rule: EventRuleRecord,
}

/// Outbound storage.
#[async_trait]
pub trait OutboundStore: Send + Sync + 'static {
    /// Creates or replaces a rule; an existing rule keeps its secrets. `ping` (for an enabled
    /// rule) is queued in the same transaction. Returns the stored rule and whether it was
    /// created. `ParentMissing` when the project does not exist.
    async fn put_event_rule(
        &self,
        rule: EventRuleRecord,
        ping: Option<NewDelivery>,
    ) -> StoreResult<(EventRuleRecord, bool)>;
    /// Reads a rule.
    async fn get_event_rule(
        &self,
        p: &ProjectRef,
        id: &Identifier,
    ) -> StoreResult<Option<EventRuleRecord>>;
    /// A project's rules by identifier.
    async fn list_event_rules(
        &self,
        p: &ProjectRef,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<EventRuleRecord>>;
    /// Deletes a rule with its deliveries. False when it did not exist.
    async fn delete_event_rule(&self, p: &ProjectRef, id: &Identifier) -> StoreResult<bool>;
    /// Replaces the secret, keeping the old one as `previous_secret` until `previous_until`.
    async fn rotate_event_rule_secret(
        &self,
        p: &ProjectRef,
        id: &Identifier,
        secret: String,
        previous_until: Millis,
    ) -> StoreResult<Option<EventRuleRecord>>;
    /// A project's enabled rules.
    async fn enabled_event_rules(&self, p: &ProjectRef) -> StoreResult<Vec<EventRuleRecord>>;

    /// The oldest `limit` outbox events.
    async fn outbox_events(&self, limit: u32) -> StoreResult<Vec<OutboxEvent>>;
    /// Creates `deliveries` and removes the outbox events up to and including `through_seq`,
    /// atomically. Deliveries to a rule that is disabled or gone by then are left out. The
    /// deliveries of one call share their due time (a store may insert them together, each one
    /// unseen by the others).
    async fn fan_out(&self, deliveries: Vec<NewDelivery>, through_seq: i64) -> StoreResult<()>;
    /// Creates a delivery (a test) that is not queued; the caller attempts it at once.
    async fn insert_delivery(&self, delivery: NewDelivery) -> StoreResult<()>;

    /// Leases up to `limit` due deliveries of enabled rules whose selectors `node_tags`
    /// satisfies, until `now + lease_ms`. Oldest due first. Exclusive across processes: a
    /// delivery is leased to one claimer at a time, and a delivery is never handed out while
    /// an earlier delivery of the same execution to the same rule is still pending.
    async fn claim_deliveries(
        &self,
        node_tags: &[String],
        limit: u32,
        now: Millis,
        lease_ms: i64,
    ) -> StoreResult<Vec<DueDelivery>>;
    /// Stores an attempt and its consequences for the delivery and the rule (as
    /// `outbound::health` decides from the rule's state read in the same transaction);
    /// releases the lease. Atomic; an attempt under a lease that is no longer current is only
    /// logged.
    async fn record_attempt(&self, outcome: AttemptOutcome, now: Millis) -> StoreResult<()>;
    /// At start. A backend that belongs to one process (SQLite) releases every delivery lease
    /// so they are attempted again; a shared one (PostgreSQL) leaves live leases alone (a dead
    /// node's expire). Both end the pending deliveries of disabled rules.
    async fn release_delivery_leases(&self) -> StoreResult<u64>;

    /// A rule's deliveries, newest first, optionally in one status.
    async fn list_deliveries(
        &self,
        p: &ProjectRef,
        rule: &Identifier,
        status: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<DeliveryRecord>>;
    /// A delivery with its newest `attempts` attempts, newest first.
    async fn get_delivery(
        &self,
        p: &ProjectRef,
        rule: &Identifier,
        id: &str,
        attempts: u32,
    ) -> StoreResult<Option<(DeliveryRecord, Vec<AttemptRecord>)>>;
    /// Queues a delivery again from the start of the schedule (same `webhook-id`), unless it
    /// is being attempted now or is a test.
    async fn redeliver(
        &self,
        p: &ProjectRef,
        rule: &Identifier,
        id: &str,
        now: Millis,
    ) -> StoreResult<Redelivery>;
    /// Queues again every `Failed` delivery of the rule (tests excepted) created at or after
    /// `since`. Returns how many.
    async fn recover_deliveries(
        &self,
        p: &ProjectRef,
        rule: &Identifier,
        since: Millis,
        now: Millis,
    ) -> StoreResult<u64>;
    /// Retention: deletes up to `batch` finished deliveries (with their attempts) created
    /// before `cutoff`. Returns how many.
    async fn purge_deliveries_before(&self, cutoff: Millis, batch: u32) -> StoreResult<u64>;
}
