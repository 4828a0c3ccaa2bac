//! The dispatcher (DESIGN §8): drains the outbox into deliveries, one per matching rule, and
//! attempts due deliveries with bounded concurrency, storing every attempt.
//!
//! Everything it needs is in the database: execution events are written in the same
//! transaction as the state change, a delivery is created in the same transaction that removes
//! its outbox event, and a delivery is leased while it is attempted. After a crash the leases
//! are released at start and every undelivered event goes out again, with the same
//! `webhook-id` (at-least-once). An attempt records its result under the lease it was made
//! with, so a stale attempt (the delivery was redelivered meanwhile) cannot undo a newer state.
//!
//! The events of one execution reach a rule in the order they happened: the claim skips a
//! delivery while an earlier event of the same execution to the same rule is still pending.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::deliver::{Response, Sender};
use crate::domain::event_rule::EventRule;
use crate::domain::ids::{DeliveryId, ProjectRef};
use crate::store::outbound::{AttemptOutcome, DueDelivery, NewDelivery, Next, RuleEffect};
use crate::store::{now_millis, Millis, Store, StoreError};

/// How often the loop looks for work when nobody wakes it, and at an outbox found empty.
const POLL: Duration = Duration::from_millis(50);
/// Outbox events matched to rules per round.
const FAN_OUT_BATCH: u32 = 512;
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How the dispatcher runs.
#[derive(Clone)]
pub struct DispatcherOptions {
    /// Sends the requests.
    pub sender: Sender,
    /// Delay before each attempt: `[0s, 5s, 5m, ...]`; its length is the number of attempts.
    pub retry_schedule: Vec<Duration>,
    /// A rule whose attempts have all failed for this long is disabled.
    pub disable_after: Duration,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// This node's tags; a rule's `selectors` must all be among them.
    pub node_tags: Vec<String>,
    /// How long attempts in flight may take to finish after shutdown begins; the rest are
    /// dropped and attempted again after the next start.
    pub grace: Duration,
    /// How long a claim on a delivery lasts: longer than one attempt may take, so that another
    /// node attempts it again only once this one is gone.
    pub lease: Duration,
}

/// A handle to the running dispatcher.
#[derive(Clone, Default)]
pub struct DispatcherHandle {
    wake: Arc<Notify>,
}

impl DispatcherHandle {
    /// Tells the dispatcher that deliveries were queued.
    pub fn notify(&self) {
        self.wake.notify_one();
    }
}

/// Starts the dispatcher; it runs until `shutdown` is cancelled, then waits for the attempts in
/// flight (each bounded by the timeout).
pub fn start(
    store: Arc<dyn Store>,
    options: DispatcherOptions,
    shutdown: CancellationToken,
) -> (DispatcherHandle, tokio::task::JoinHandle<()>) {
    let handle = DispatcherHandle::default();
    let wake = handle.wake.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = store.release_delivery_leases().await {
            tracing::error!(error = %e, "could not release delivery leases");
        }
        let options = Arc::new(options);
        let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
        let mut next_look = tokio::time::Instant::now();
        while !shutdown.is_cancelled() {
            let look = tokio::time::Instant::now() >= next_look;
            let busy = match round(&store, &options, &permits, &shutdown, look).await {
                Ok(Round { fanned, claimed }) => {
                    // An outbox found empty is looked at again after `POLL`, not every round:
                    // in a drain on PostgreSQL, the look was a quarter of each round (issue 13).
                    if look && fanned == 0 {
                        next_look = tokio::time::Instant::now() + POLL;
                    }
                    fanned > 0 || claimed > 0
                }
                Err(e) => {
                    tracing::error!(error = %e, "outbound dispatcher round failed");
                    false
                }
            };
            if !busy {
                tokio::select! {
                    // Woken, it looks at once, as it did before looks were spaced.
                    () = wake.notified() => next_look = tokio::time::Instant::now(),
                    () = tokio::time::sleep(POLL) => {}
                    () = shutdown.cancelled() => {}
                }
            }
        }
        let all = u32::try_from(options.concurrency.max(1)).unwrap_or(u32::MAX);
        if tokio::time::timeout(options.grace, permits.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("delivery attempts still running after the grace period are dropped; they are retried after the next start");
        }
    });
    (handle, task)
}

/// What one round did.
struct Round {
    /// Outbox events fanned out.
    fanned: usize,
    /// Deliveries claimed and started.
    claimed: usize,
}

/// One round: fan out the outbox (when `look`), then start attempts for as many due deliveries
/// as there are free permits.
async fn round(
    store: &Arc<dyn Store>,
    options: &Arc<DispatcherOptions>,
    permits: &Arc<Semaphore>,
    shutdown: &CancellationToken,
    look: bool,
) -> Result<Round, StoreError> {
    let first_delay = options.retry_schedule.first().copied().unwrap_or_default();
    let fanned = if look {
        fan_out(store.as_ref(), first_delay).await?
    } else {
        0
    };
    let batch = (options.concurrency / 8).max(1);
    if permits.available_permits() < batch {
        // Wait for attempts to finish rather than spin, and claim several at once: each claim
        // is a write, so claiming one delivery per finished attempt would cap throughput.
        let wanted = u32::try_from(batch).unwrap_or(1);
        if let Ok(held) = tokio::time::timeout(
            Duration::from_millis(2),
            permits.clone().acquire_many_owned(wanted),
        )
        .await
        {
            drop(held);
        } else if permits.available_permits() == 0 {
            tokio::select! {
                _ = permits.clone().acquire_owned() => {}
                () = shutdown.cancelled() => return Ok(Round { fanned, claimed: 0 }),
            }
        }
    }
    let free = permits.available_permits();
    if free == 0 || shutdown.is_cancelled() {
        return Ok(Round { fanned, claimed: 0 });
    }
    let due = store
        .claim_deliveries(
            &options.node_tags,
            u32::try_from(free.min(256)).unwrap_or(256),
            now_millis(),
            i64::try_from(options.lease.as_millis()).unwrap_or(i64::MAX),
        )
        .await?;
    let claimed = due.len();
    // The claim holds back a delivery behind an earlier pending event of the same execution to
    // the same rule, so each one here can go at once, in parallel.
    for item in due {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (store, options) = (store.clone(), options.clone());
        tokio::spawn(async move {
            attempt(store.as_ref(), &options, item).await;
            drop(permit);
        });
    }
    Ok(Round { fanned, claimed })
}

/// Matches a batch of outbox events to the enabled rules of their projects and turns them into
/// deliveries. Returns how many events it consumed.
async fn fan_out(store: &dyn Store, first_delay: Duration) -> Result<usize, StoreError> {
    let events = store.outbox_events(FAN_OUT_BATCH).await?;
    let Some(last) = events.last().map(|e| e.seq) else {
        return Ok(0);
    };
    let due = now_millis() + jitter(first_delay).as_millis() as Millis;
    let mut rules: HashMap<ProjectRef, Vec<EventRule>> = HashMap::new();
    let mut deliveries = Vec::new();
    for event in &events {
        if !rules.contains_key(&event.scope) {
            let loaded = store
                .enabled_event_rules(&event.scope)
                .await?
                .into_iter()
                .map(|r| EventRule::from_stored(r.spec))
                .collect();
            rules.insert(event.scope.clone(), loaded);
        }
        let body: serde_json::Value = serde_json::from_str(&event.payload).unwrap_or_default();
        let webhook_id = body["id"].as_str().unwrap_or_default().to_owned();
        for rule in &rules[&event.scope] {
            if rule.selects(&event.pipeline, &event.event_type, &body) {
                deliveries.push(NewDelivery {
                    id: DeliveryId::generate().to_string(),
                    scope: event.scope.clone(),
                    rule: rule.spec.identifier.clone().unwrap_or_default(),
                    webhook_id: webhook_id.clone(),
                    event_type: event.event_type.clone(),
                    payload: event.payload.clone(),
                    due_at: Some(due),
                    execution_id: body["data"]["executionId"].as_str().map(str::to_owned),
                    test: false,
                });
            }
        }
    }
    store.fan_out(deliveries, last).await?;
    Ok(events.len())
}

/// Attempts one leased delivery and stores the attempt with its consequences.
async fn attempt(store: &dyn Store, options: &DispatcherOptions, item: DueDelivery) {
    let DueDelivery {
        lease,
        delivery,
        rule,
    } = item;
    let number = delivery.attempts + 1;
    let (record, response) = options.sender.send(&rule, &delivery, number).await;
    let now = now_millis();
    let next_delay = |extra: Option<Duration>| -> Next {
        let step = delivery.schedule_step + 1;
        match options.retry_schedule.get(step as usize) {
            Some(delay) => {
                let mut wait = jitter(*delay);
                if let Some(extra) = extra {
                    wait = wait.max(extra.min(MAX_RETRY_AFTER));
                }
                Next::RetryAt(now + wait.as_millis() as Millis, step)
            }
            None => Next::GiveUp,
        }
    };
    let failing = RuleEffect::Failing {
        disable_before: now - options.disable_after.as_millis() as Millis,
    };
    let (next, rule_effect) = match response {
        Response::Delivered => (Next::Done, RuleEffect::Healthy),
        Response::Gone => (
            Next::GiveUp,
            RuleEffect::Disable("disabled by triggerd: the receiver answered 410 Gone".into()),
        ),
        Response::RetryAfter(secs) => (next_delay(Some(Duration::from_secs(secs))), failing),
        Response::Failed => (next_delay(None), failing),
    };
    if let Some(error) = &record.error {
        tracing::warn!(
            rule = %rule.identifier,
            delivery = %delivery.id,
            attempt = number,
            error = %error,
            "outbound delivery attempt failed"
        );
    }
    metrics::counter!("triggerd_outbound_attempts_total", "result" => match response {
        Response::Delivered => "delivered",
        _ => "failed",
    })
    .increment(1);
    let outcome = AttemptOutcome {
        lease,
        attempt: record,
        next,
        rule: rule_effect,
    };
    if let Err(e) = store.record_attempt(outcome, now).await {
        // The lease runs out and the delivery is attempted again: at-least-once.
        tracing::error!(delivery = %delivery.id, error = %e, "could not record a delivery attempt");
    }
}

/// `delay` ± 20 %.
fn jitter(delay: Duration) -> Duration {
    if delay.is_zero() {
        return delay;
    }
    delay.mul_f64(rand::thread_rng().gen_range(0.8..=1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_secs(100));
            assert!(
                d >= Duration::from_secs(80) && d <= Duration::from_secs(120),
                "{d:?}"
            );
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
