//! Webhook intake (DESIGN §2.1, §2.2) and the status read (§2.3).
//!
//! The checks run in exactly the documented order; the HTTP layer has already enforced the body
//! limit (step 1) while streaming.

use std::sync::Arc;

use bytes::Bytes;

use super::Gateway;
use crate::domain::ids::{
    truncate_for_message, AccountId, EventId, Identifier, PlanExecutionId, ProjectRef,
};
use crate::domain::matching::{results_json, ConditionResult, Outcome};
use crate::domain::payload::{check_body, is_secret_header, REDACTED};
use crate::domain::runtime_input::EMPTY_RUNTIME_INPUT;
use crate::error::Error;
use crate::expr::context::TriggerContext;
use crate::store::cache::CachedTrigger;
pub use crate::store::cache::EventStatus;
use crate::store::{now_millis, JsonText, NewExecution, RecordOutcome, WebhookEvent};

/// Status of an event that queued its pipeline.
pub const TARGET_EXECUTION_REQUESTED: &str = "TARGET_EXECUTION_REQUESTED";
const EXECUTION_REQUESTED_MESSAGE: &str = "Pipeline execution was requested successfully";
/// Status of an event whose payload conditions did not hold.
pub const NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS: &str =
    "NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS";
/// Status of an event whose header conditions did not hold.
pub const NO_MATCHING_TRIGGER_FOR_HEADER_CONDITIONS: &str =
    "NO_MATCHING_TRIGGER_FOR_HEADER_CONDITIONS";
/// Status of an event whose JEXL condition did not hold.
pub const NO_MATCHING_TRIGGER_FOR_JEXL_CONDITIONS: &str = "NO_MATCHING_TRIGGER_FOR_JEXL_CONDITIONS";
/// Status of an event whose runtime input is missing or mistyped.
pub const INVALID_RUNTIME_INPUT_YAML: &str = "INVALID_RUNTIME_INPUT_YAML";
/// Status of an event whose pipeline could not be loaded.
pub const EXCEPTION_WHILE_PROCESSING: &str = "EXCEPTION_WHILE_PROCESSING";
/// Every `webhookProcessingDetails.status` of DESIGN §2.3: the values
/// `GET P/webhookevents?status=` accepts. The last two are Harness's; no stored event has them
/// (a disabled trigger's webhook is refused before anything is stored).
pub const EVENT_STATUSES: &[&str] = &[
    TARGET_EXECUTION_REQUESTED,
    NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS,
    NO_MATCHING_TRIGGER_FOR_HEADER_CONDITIONS,
    NO_MATCHING_TRIGGER_FOR_JEXL_CONDITIONS,
    INVALID_RUNTIME_INPUT_YAML,
    EXCEPTION_WHILE_PROCESSING,
    "NO_ENABLED_CUSTOM_TRIGGER_FOUND",
    "TARGET_DID_NOT_EXECUTE",
];
/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The identifier query parameters of an intake URL, as given.
#[derive(Debug, Default, Clone)]
pub struct IntakeQuery {
    /// `accountIdentifier`.
    pub account: Option<String>,
    /// `orgIdentifier`.
    pub org: Option<String>,
    /// `projectIdentifier`.
    pub project: Option<String>,
    /// `pipelineIdentifier`.
    pub pipeline: Option<String>,
    /// `triggerIdentifier`.
    pub trigger: Option<String>,
}

impl IntakeQuery {
    /// Builds the query from `key=value` pairs; the first occurrence of each key wins.
    pub fn from_pairs<'a>(
        pairs: impl Iterator<Item = (std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
    ) -> Self {
        let mut q = IntakeQuery::default();
        for (k, v) in pairs {
            let slot = match k.as_ref() {
                "accountIdentifier" => &mut q.account,
                "orgIdentifier" => &mut q.org,
                "projectIdentifier" => &mut q.project,
                "pipelineIdentifier" => &mut q.pipeline,
                "triggerIdentifier" => &mut q.trigger,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(v.into_owned());
            }
        }
        q
    }
}

/// The parts of an intake request the service needs.
/// `Debug` leaves out the key and the headers.
pub struct IntakeRequest<'a> {
    /// The identifier query parameters.
    pub query: IntakeQuery,
    /// `X-Api-Key`, when sent.
    pub api_key: Option<&'a str>,
    /// A caller already verified by a console session (DESIGN §12), authorized instead of
    /// `api_key` by the same rule.
    pub signed_in: Option<&'a crate::auth::Principal>,
    /// `Idempotency-Key`, when sent.
    pub idempotency_key: Option<&'a str>,
    /// Every request header (lower-case name, first value); secrets are redacted here.
    pub headers: Vec<(String, String)>,
    /// The body, already within the size limit.
    pub body: Bytes,
    /// The connecting peer's address, for `allowedSourceCidrs`.
    pub source_ip: Option<std::net::IpAddr>,
    /// `X-Trigger-Dry-Run: true`: evaluate everything, store and run nothing.
    pub dry_run: bool,
}

impl std::fmt::Debug for IntakeRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntakeRequest")
            .field("query", &self.query)
            .field("api_key", &self.api_key.map(|_| "********"))
            .field("body_bytes", &self.body.len())
            .field("source_ip", &self.source_ip)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

/// An accepted event: stored now, or the original of an idempotent replay.
#[derive(Debug)]
pub struct Accepted {
    /// The stored event.
    pub event: WebhookEvent,
    /// True when this answers a repeated `Idempotency-Key`.
    pub replayed: bool,
    /// True for a dry run: `event` was evaluated but not stored.
    pub dry_run: bool,
}

fn require<'q>(value: &'q Option<String>, name: &str) -> Result<&'q str, Error> {
    value.as_deref().ok_or_else(|| {
        Error::InvalidRequest(format!(
            "Invalid request: query parameter {name} is required"
        ))
    })
}

/// POST /webhook/custom/{token}/v3.
pub async fn custom_v3(
    gw: &Gateway,
    token: &str,
    req: IntakeRequest<'_>,
) -> Result<Accepted, Error> {
    // 2. The token.
    let unknown = || {
        Error::InvalidRequest(format!(
            "No custom trigger found for the used custom webhook token: {}",
            truncate_for_message(token)
        ))
    };
    let trigger = match crate::domain::ids::WebhookToken::parse(token) {
        Some(t) => {
            gw.cache
                .trigger_by_token(gw.store.as_ref(), t.as_str())
                .await?
        }
        None => None,
    }
    .ok_or_else(unknown)?;
    let t = &trigger.record;

    // 3. Identifier cross-check.
    let q = &req.query;
    let given = [
        (
            "accountIdentifier",
            require(&q.account, "accountIdentifier")?,
        ),
        ("orgIdentifier", require(&q.org, "orgIdentifier")?),
        (
            "projectIdentifier",
            require(&q.project, "projectIdentifier")?,
        ),
    ];
    let expected = [
        t.scope.account.as_str(),
        t.scope.org.as_str(),
        t.scope.project.as_str(),
    ];
    let optional = [
        (
            "pipelineIdentifier",
            q.pipeline.as_deref(),
            t.pipeline.as_str(),
        ),
        (
            "triggerIdentifier",
            q.trigger.as_deref(),
            t.identifier.as_str(),
        ),
    ];
    let mismatched = given
        .iter()
        .zip(expected)
        .map(|(&(name, value), want)| (name, Some(value), want))
        .chain(optional)
        .find(|&(_, value, want)| value.is_some_and(|v| v != want));
    if let Some((name, Some(value), _)) = mismatched {
        return Err(Error::InvalidRequest(format!(
            "Invalid request: {name} '{}' does not match the trigger of this custom webhook token",
            truncate_for_message(value)
        )));
    }

    // 4. Disabled trigger.
    if !t.enabled {
        return Err(Error::InvalidRequest(format!(
            "No enabled custom trigger found for the used custom webhook token: {}",
            t.token
        )));
    }

    // 5. Authorization, with the mandate.
    match req.signed_in {
        Some(principal) => super::require_execute(principal, &t.scope)?,
        None => {
            let mandate = gw.cache.mandate(gw.store.as_ref(), &t.scope).await?;
            gw.authorize_execute(req.api_key, &t.scope, mandate.value)
                .await?;
        }
    }

    accept(gw, &trigger, req).await
}

/// POST /webhook/custom/v2: identifiers instead of a token, and a key is always required.
pub async fn custom_v2(gw: &Gateway, req: IntakeRequest<'_>) -> Result<Accepted, Error> {
    let q = &req.query;
    let account = require(&q.account, "accountIdentifier")?;
    let org = require(&q.org, "orgIdentifier")?;
    let project = require(&q.project, "projectIdentifier")?;
    let pipeline = require(&q.pipeline, "pipelineIdentifier")?;
    let trigger = require(&q.trigger, "triggerIdentifier")?;
    let scope = ProjectRef {
        account: AccountId::parse(account)?,
        org: Identifier::parse(org, "orgIdentifier")?,
        project: Identifier::parse(project, "projectIdentifier")?,
    };
    let pipeline = Identifier::parse(pipeline, "pipelineIdentifier")?;
    let trigger_id = Identifier::parse(trigger, "triggerIdentifier")?;

    // Identifiers are guessable, so the key comes before anything about the trigger is revealed.
    match req.signed_in {
        Some(principal) => super::require_execute(principal, &scope)?,
        None => {
            gw.authorize_execute(req.api_key, &scope, true).await?;
        }
    }

    let described =
        format!("pipelineIdentifier {pipeline} and triggerIdentifier {trigger_id} in {scope}");
    let record = gw
        .store
        .get_trigger(&scope, &pipeline, &trigger_id)
        .await?
        .ok_or_else(|| Error::InvalidRequest(format!("No custom trigger found for {described}")))?;
    let trigger = gw
        .cache
        .trigger_by_token(gw.store.as_ref(), &record.token)
        .await?
        .ok_or_else(|| Error::InvalidRequest(format!("No custom trigger found for {described}")))?;
    if !trigger.record.enabled {
        return Err(Error::InvalidRequest(format!(
            "No enabled custom trigger found for {described}"
        )));
    }
    accept(gw, &trigger, req).await
}

/// What follows authorization, shared by v2 and v3: the trigger's own source and signature
/// checks (DESIGN §4), the rate limit (step 6), body validation, then idempotency and the
/// durable record with its queued execution in one transaction (steps 7 and 8). A dry run stops
/// before anything is stored.
async fn accept(
    gw: &Gateway,
    trigger: &Arc<CachedTrigger>,
    req: IntakeRequest<'_>,
) -> Result<Accepted, Error> {
    check_source_and_signature(trigger, &req)?;
    check_rate_limit(gw, trigger)?;
    let payload = check_body(&req.body)?.to_owned();
    let idempotency_key = req
        .idempotency_key
        .map(validate_idempotency_key)
        .transpose()?;
    let t = &trigger.record;

    // Secret headers are masked for storage and for the runtime input (which is shown and
    // reaches steps); conditions compare the real values but show only the mask.
    let signature_header = trigger
        .spec
        .signature
        .as_ref()
        .map(|s| s.header.to_ascii_lowercase());
    let masked: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(name, value)| {
            let secret =
                is_secret_header(name) || signature_header.as_deref() == Some(name.as_str());
            let value = if secret { REDACTED } else { value.as_str() };
            (name.clone(), value.to_owned())
        })
        .collect();
    let event_id = gw.store.new_event_id().await?;
    let plan = PlanExecutionId::generate();
    let (decision, payload, masked) = if trigger.spec.jexl_condition.is_some() {
        // A JEXL condition may take up to its whole budget: it is evaluated on a blocking
        // thread, a few at a time, so that it never holds an HTTP worker (health checks and
        // other webhooks go on meanwhile).
        let _turn = gw
            .evaluations
            .acquire()
            .await
            .map_err(|_| Error::Unavailable {
                message: "The server is shutting down; retry shortly".into(),
                retry_after_secs: 5,
            })?;
        let (trigger, headers) = (Arc::clone(trigger), req.headers);
        let (event, execution) = (event_id.clone(), plan.clone());
        tokio::task::spawn_blocking(move || {
            let decision = decide(&trigger, &payload, &headers, &masked, &event, &execution);
            (decision, payload, masked)
        })
        .await
        .map_err(|e| {
            Error::Unexpected(crate::store::StoreError::db("evaluating the conditions", e))
        })?
    } else {
        let decision = decide(trigger, &payload, &req.headers, &masked, &event_id, &plan);
        (decision, payload, masked)
    };
    let event = WebhookEvent {
        event_id,
        scope: t.scope.clone(),
        pipeline: t.pipeline.to_string(),
        trigger: t.identifier.to_string(),
        status: decision.status.into(),
        message: decision.message,
        exception_occured: decision.status == EXCEPTION_WHILE_PROCESSING,
        payload,
        headers: headers_json(&masked),
        runtime_input: decision.runtime_input,
        condition_results: results_json(&decision.results),
        plan_execution_id: decision.execute.then(|| plan.clone()),
        idempotency_key,
        created_at: now_millis(),
    };
    if req.dry_run {
        return Ok(Accepted {
            event,
            replayed: false,
            dry_run: true,
        });
    }
    // An idle worker of this node, when there is one, runs the execution under a lease it is
    // queued with: no claim to write for it. The write then goes on, and the worker runs the
    // execution, even if the caller goes away; nothing stored, the worker is freed.
    let worker = event
        .plan_execution_id
        .as_ref()
        .and_then(|_| gw.engine.idle_worker());
    let execution = event.plan_execution_id.is_some().then(|| NewExecution {
        plan_execution_id: plan,
        pipeline_name: trigger.pipeline_name.clone(),
        trigger_type: "WEBHOOK_CUSTOM",
        lease: worker.as_ref().map(|w| w.lease()),
    });
    let outcome = match worker {
        Some(worker) => {
            let store = gw.store.clone();
            worker
                .queue(async move { store.record_event(event, execution).await })
                .await?
        }
        None => {
            let outcome = gw.store.record_event(event, execution).await?;
            if matches!(&outcome, RecordOutcome::Stored(e) if e.plan_execution_id.is_some()) {
                gw.work_queued();
            }
            outcome
        }
    };
    let (event, replayed) = match outcome {
        RecordOutcome::Stored(event) => {
            metrics::counter!("triggerd_webhook_events_total").increment(1);
            (event, false)
        }
        RecordOutcome::Replayed(event) => (event, true),
    };
    Ok(Accepted {
        event,
        replayed,
        dry_run: false,
    })
}

/// What a webhook leads to: the Harness status of DESIGN §2.3, its message, the resolved
/// runtime input, every condition's result, and whether the pipeline is queued.
struct Decision {
    status: &'static str,
    message: String,
    runtime_input: String,
    results: Vec<ConditionResult>,
    execute: bool,
}

/// Evaluates the conditions (payload, header, JEXL) and resolves the runtime input. The first
/// failing condition group decides the status; the runtime input is resolved even then when it
/// can be, so a dry run shows it.
fn decide(
    trigger: &CachedTrigger,
    body: &str,
    headers: &[(String, String)],
    masked_headers: &[(String, String)],
    event_id: &EventId,
    plan: &PlanExecutionId,
) -> Decision {
    let spec = &trigger.spec;
    let evaluates_anything = !spec.payload_conditions.is_empty()
        || !spec.header_conditions.is_empty()
        || spec.jexl_condition.is_some()
        || spec.input_yaml.is_some()
        || trigger
            .pipeline
            .as_ref()
            .is_ok_and(|p| p.runtime_inputs().next().is_some());
    let compiled = trigger.conditions.is_ok() && trigger.input.is_ok();
    if !evaluates_anything && trigger.pipeline.is_ok() && compiled {
        return Decision {
            status: TARGET_EXECUTION_REQUESTED,
            message: EXECUTION_REQUESTED_MESSAGE.into(),
            runtime_input: EMPTY_RUNTIME_INPUT.into(),
            results: Vec::new(),
            execute: true,
        };
    }
    // Only the parts of the body that an expression reads are parsed.
    let payload = trigger.projection.project(body);
    let ctx = TriggerContext {
        payload: &payload,
        headers,
        event_id: event_id.as_str(),
        trigger_identifier: trigger.record.identifier.as_str(),
        pipeline_identifier: trigger.record.pipeline.as_str(),
        pipeline_name: &trigger.pipeline_name,
        execution_id: Some(plan.as_str()),
    };
    let (conditions, input) = match (&trigger.conditions, &trigger.input) {
        (Ok(conditions), Ok(input)) => (conditions, input),
        (Err(problem), _) | (_, Err(problem)) => {
            return Decision {
                status: EXCEPTION_WHILE_PROCESSING,
                message: format!(
                    "Trigger {} cannot be evaluated ({problem}); save it again to fix it",
                    trigger.record.identifier
                ),
                runtime_input: EMPTY_RUNTIME_INPUT.into(),
                results: Vec::new(),
                execute: false,
            }
        }
    };
    let evaluation = conditions.evaluate(&ctx);
    let masked_ctx = TriggerContext {
        headers: masked_headers,
        ..ctx
    };
    let input = match &trigger.pipeline {
        Ok(pipeline) => input.resolve(pipeline, &masked_ctx),
        Err(problem) => Err(format!("The {problem}")),
    };
    let mismatch = match evaluation.outcome {
        Outcome::Matched => None,
        Outcome::PayloadMismatch => Some(NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS),
        Outcome::HeaderMismatch => Some(NO_MATCHING_TRIGGER_FOR_HEADER_CONDITIONS),
        Outcome::JexlMismatch => Some(NO_MATCHING_TRIGGER_FOR_JEXL_CONDITIONS),
    };
    let (status, message, runtime_input, execute) = match (mismatch, input) {
        (Some(status), input) => (
            status,
            evaluation.message.unwrap_or_default(),
            input.unwrap_or_else(|_| EMPTY_RUNTIME_INPUT.into()),
            false,
        ),
        (None, Ok(yaml)) => (
            TARGET_EXECUTION_REQUESTED,
            EXECUTION_REQUESTED_MESSAGE.into(),
            yaml,
            true,
        ),
        (None, Err(problem)) if trigger.pipeline.is_err() => (
            EXCEPTION_WHILE_PROCESSING,
            problem,
            EMPTY_RUNTIME_INPUT.into(),
            false,
        ),
        (None, Err(problem)) => (
            INVALID_RUNTIME_INPUT_YAML,
            problem,
            EMPTY_RUNTIME_INPUT.into(),
            false,
        ),
    };
    Decision {
        status,
        message,
        runtime_input,
        results: evaluation.results,
        execute,
    }
}

fn validate_idempotency_key(key: &str) -> Result<String, Error> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| (0x21..=0x7e).contains(&b))
    {
        return Err(Error::InvalidRequest(format!(
            "Invalid request: Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        )));
    }
    Ok(key.to_owned())
}

/// Execution statuses after which a long poll answers at once: terminal, or waiting for a person.
const SETTLED: &[&str] = &[
    "Success",
    "Failed",
    "Aborted",
    "Expired",
    "ApprovalRejected",
    "Errored",
    "ApprovalWaiting",
];

/// How often a long poll re-reads the execution.
const LONG_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// GET /webhook/triggerExecutionDetails/{id}: readable without a key unless the mandate is on
/// for the event's project; a key that is sent must be valid. With `wait`, answers as soon as
/// the execution settles, or when `wait` has passed, with the state then.
pub async fn event_status(
    gw: &Gateway,
    event_id: &str,
    account: Option<&str>,
    api_key: Option<&str>,
    wait: std::time::Duration,
) -> Result<Arc<EventStatus>, Error> {
    let account = account.ok_or_else(|| {
        Error::InvalidRequest(
            "Invalid request: query parameter accountIdentifier is required".into(),
        )
    })?;
    let not_found = || {
        Error::NotFound(format!(
            "Trigger event history doesn't exist for event with eventId {}",
            truncate_for_message(event_id)
        ))
    };
    let id = EventId::parse(event_id).ok_or_else(not_found)?;
    // Who may read an event is decided on every poll, from memory or not. A long poll of an
    // execution that has not ended waits for it below.
    if let Some(hit) = gw.cache.statuses.get(&id) {
        if wait.is_zero() || hit.is_final() {
            may_read(gw, &hit.event, account, api_key, not_found).await?;
            return Ok(hit);
        }
    }
    let reservation = gw.cache.statuses.reserve(&id);
    let (event, mut run) = gw
        .store
        .get_event_with_run(&id)
        .await?
        .ok_or_else(not_found)?;
    may_read(gw, &event, account, api_key, not_found).await?;
    let run = match &event.plan_execution_id {
        None => None,
        Some(plan) => {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let settled = run
                    .as_ref()
                    .is_none_or(|r| SETTLED.contains(&r.execution.status.as_str()));
                if settled || tokio::time::Instant::now() + LONG_POLL_INTERVAL > deadline {
                    break match run {
                        Some(run) => Some(gw.with_planned_steps(run).await?),
                        None => None,
                    };
                }
                tokio::time::sleep(LONG_POLL_INTERVAL).await;
                run = gw.store.load_run(plan).await?;
            }
        }
    };
    let status = Arc::new(EventStatus::new(event, run));
    gw.cache.statuses.put(&status, reservation);
    Ok(status)
}

/// Whether the caller may read `event`'s status; refused as `not_found`, the answer for an id
/// that does not exist, unless a key was sent and is refused.
async fn may_read(
    gw: &Gateway,
    event: &WebhookEvent,
    account: &str,
    api_key: Option<&str>,
    not_found: impl Fn() -> Error,
) -> Result<(), Error> {
    if event.scope.account.as_str() != account {
        return Err(not_found());
    }
    let mandate = gw.cache.mandate(gw.store.as_ref(), &event.scope).await?;
    if mandate.value && api_key.is_none() {
        // Without a key, nobody learns that an event exists, or which project it belongs to.
        return Err(not_found());
    }
    gw.authorize_execute(api_key, &event.scope, mandate.value)
        .await?;
    Ok(())
}

/// The trigger's `allowedSourceCidrs` (403) and `signature` (401), when configured.
fn check_source_and_signature(
    trigger: &CachedTrigger,
    req: &IntakeRequest<'_>,
) -> Result<(), Error> {
    let spec = &trigger.spec;
    if !spec.allowed_source_cidrs.is_empty()
        && !req.source_ip.is_some_and(|ip| spec.allows_source(ip))
    {
        return Err(Error::AccessDenied(format!(
            "Access denied: the source address is not in the allowed source ranges of trigger {}",
            trigger.record.identifier
        )));
    }
    if let Some(signature) = &spec.signature {
        let wanted = signature.header.to_ascii_lowercase();
        let presented = req
            .headers
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, value)| value.as_str());
        if !crate::domain::signature::verify(signature, presented, &req.body) {
            return Err(Error::InvalidToken(format!(
                "Invalid call: the {} header does not carry a valid HMAC-SHA256 signature of the body",
                signature.header
            )));
        }
    }
    Ok(())
}

/// Step 6: the trigger's own `rateLimit`, when configured.
fn check_rate_limit(gw: &Gateway, trigger: &CachedTrigger) -> Result<(), Error> {
    let Some(limit) = &trigger.spec.rate_limit else {
        return Ok(());
    };
    gw.rate_limits
        .check(&trigger.record.token, limit.per_second, limit.burst)
        .map_err(|wait| Error::TooManyRequests {
            message: format!(
                "Too many requests: trigger {} accepts {} per second (burst {}); retry later",
                trigger.record.identifier, limit.per_second, limit.burst
            ),
            retry_after_secs: wait.as_secs().saturating_add(1),
        })
}

/// The masked headers as a JSON object, in `masked`'s order: one entry per name, as
/// [`IntakeRequest::headers`] holds them (HTTP intake keeps a name's first value, the console's
/// test fire its last).
fn headers_json(masked: &[(String, String)]) -> JsonText {
    struct Headers<'a>(&'a [(String, String)]);
    impl serde::Serialize for Headers<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|(name, value)| (name, value)))
        }
    }
    // Cannot fail: strings only.
    serde_json::value::to_raw_value(&Headers(masked))
        .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_an_object_in_the_order_received() {
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        let json = headers_json(&pairs(&[
            ("x-b", "2"),
            ("content-type", "application/json"),
            ("x-a", "quote \" and \\ and \u{1}"),
        ]));
        assert_eq!(
            json.get(),
            r#"{"x-b":"2","content-type":"application/json","x-a":"quote \" and \\ and \u0001"}"#
        );
        assert_eq!(headers_json(&[]).get(), "{}");
    }
}
