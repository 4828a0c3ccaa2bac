//! Outbound event rules (DESIGN §8): what a rule is, how its JSON body is checked, and which
//! events it selects. Pure; the dispatcher in `outbound` delivers what a rule selects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ids::Identifier;
use super::payload::{is_secret_header, REDACTED};
use super::DomainError;
use crate::expr::jexl::{Jexl, Verdict};
use crate::expr::reference::lookup;
use crate::expr::{Reference, Resolver};

/// The event types (DESIGN §8).
pub const EVENT_TYPES: &[&str] = &[
    "pipeline_start",
    "pipeline_end",
    "pipeline_pause",
    "pipeline_continue",
    "stage_start",
    "stage_end",
    "stage_pause",
    "stage_continue",
    "ping",
];

/// Headers a rule may not set: triggerd sets them, and a rule that overrode the signature or
/// the framing would break every receiver.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "host",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// Most custom headers on one rule.
const MAX_HEADERS: usize = 32;
/// Longest URL accepted.
const MAX_URL_BYTES: usize = 2048;

/// How a delivery proves where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Standard Webhooks `webhook-signature` (the default).
    #[default]
    Signature,
    /// The secret itself in `X-Triggerd-Token`.
    Token,
    /// Nothing.
    None,
}

/// The `auth` object of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// The mode.
    #[serde(default)]
    pub mode: AuthMode,
}

/// A rule's body as the API takes and returns it (without its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventRuleSpec {
    /// The rule identifier (must equal the one in the URL when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    /// Display name; the identifier when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether it sends.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Every event type of every pipeline, present and future.
    #[serde(default)]
    pub send_everything: bool,
    /// Pipeline identifiers, or `["*"]`.
    #[serde(default)]
    pub pipelines: Vec<String>,
    /// Event types, or `["*"]`.
    #[serde(default)]
    pub events: Vec<String>,
    /// A JEXL condition on the event (`<+event.data.status> == "FAILED"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Where events go: `http` or `https`.
    #[schema(pattern = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")]
    pub url: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How deliveries are authenticated.
    #[serde(default)]
    pub auth: Auth,
    /// Whether the receiver's certificate is checked.
    #[serde(default = "yes")]
    pub verify_tls: bool,
    /// Node tags that must all be present on the node that delivers.
    #[serde(default)]
    pub selectors: Vec<String>,
}

fn yes() -> bool {
    true
}

/// A checked rule, ready to match events.
#[derive(Debug, Clone)]
pub struct EventRule {
    /// The body, normalised (identifier and name filled in).
    pub spec: EventRuleSpec,
    filter: Option<Jexl>,
}

impl EventRule {
    /// Checks a rule body for rule `id`. Every problem is a 400 that names the field.
    pub fn from_value(id: &Identifier, value: Value) -> Result<Self, DomainError> {
        let mut spec: EventRuleSpec = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                DomainError::invalid(format!("Invalid event rule: {}", e.inner()))
            } else {
                DomainError::invalid(format!("Invalid event rule: {path}: {}", e.inner()))
            }
        })?;
        if let Some(given) = &spec.identifier {
            if given != id.as_str() {
                return Err(DomainError::invalid(format!(
                    "Invalid request: identifier '{}' in the body does not match '{id}' in the URL",
                    super::ids::truncate_for_message(given)
                )));
            }
        }
        spec.identifier = Some(id.to_string());
        let name = spec.name.take().unwrap_or_default();
        let name = name.trim();
        if name.chars().count() > 256 {
            return Err(DomainError::invalid(
                "Invalid event rule: name is longer than 256 characters",
            ));
        }
        spec.name = Some(if name.is_empty() {
            id.to_string()
        } else {
            name.to_owned()
        });
        check_url(&spec.url)?;
        for pipeline in &spec.pipelines {
            if pipeline != "*" {
                Identifier::parse(pipeline, "pipelines entry")?;
            }
        }
        for event in &spec.events {
            if event != "*" && !EVENT_TYPES.contains(&event.as_str()) {
                return Err(DomainError::invalid(format!(
                    "Invalid event rule: unknown event type '{}' in events; known: {}, or \"*\"",
                    super::ids::truncate_for_message(event),
                    EVENT_TYPES.join(", ")
                )));
            }
        }
        if !spec.send_everything && (spec.pipelines.is_empty() || spec.events.is_empty()) {
            return Err(DomainError::invalid(
                "Invalid event rule: give pipelines and events (either may be [\"*\"]), or set sendEverything to true",
            ));
        }
        check_headers(&spec.headers)?;
        for tag in &spec.selectors {
            if tag.is_empty() || tag.len() > 128 || tag.chars().any(char::is_whitespace) {
                return Err(DomainError::invalid(format!(
                    "Invalid event rule: selector '{}' must be a tag of 1 to 128 characters without spaces",
                    super::ids::truncate_for_message(tag)
                )));
            }
        }
        let filter = match spec.filter.as_deref().map(str::trim) {
            None | Some("") => {
                spec.filter = None;
                None
            }
            Some(text) => Some(compile_filter(text)?),
        };
        Ok(Self { spec, filter })
    }

    /// Reads a stored rule back without checking it again (it was checked when saved). A
    /// filter that no longer compiles selects nothing and says why once in the log.
    pub fn from_stored(spec: EventRuleSpec) -> Self {
        let filter = spec.filter.as_deref().and_then(|text| match compile_filter(text) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(rule = ?spec.identifier, error = %e, "stored event rule filter no longer compiles");
                Some(Jexl::compile("false").ok()?)
            }
        });
        Self { spec, filter }
    }

    /// Whether the rule selects an `event_type` event of `pipeline` with body `event`
    /// (`enabled` is checked by the caller; `ping` is never selected this way).
    pub fn selects(&self, pipeline: &str, event_type: &str, event: &Value) -> bool {
        if event_type == "ping" {
            return false;
        }
        let s = &self.spec;
        let listed = |list: &[String], item: &str| list.iter().any(|x| x == "*" || x == item);
        let chosen =
            s.send_everything || (listed(&s.pipelines, pipeline) && listed(&s.events, event_type));
        if !chosen {
            return false;
        }
        match &self.filter {
            None => true,
            Some(filter) => filter.verdict(&EventResolver(event)) == Verdict::Bool(true),
        }
    }

    /// The body as `GET` shows it: secret-looking header values replaced by `********`.
    pub fn redacted(&self) -> EventRuleSpec {
        let mut spec = self.spec.clone();
        for (name, value) in spec.headers.iter_mut() {
            if is_sensitive_header(name) {
                *value = REDACTED.to_owned();
            }
        }
        spec
    }
}

/// Whether a header's value is masked when a rule or an attempt is shown: the same rule as
/// the intake's ([`is_secret_header`]).
pub fn is_sensitive_header(name: &str) -> bool {
    is_secret_header(&name.to_ascii_lowercase())
}

/// Puts back, into a rule body sent to `PUT`, the stored values of headers that were sent as
/// the `********` placeholder a `GET` shows (so a read-modify-write keeps them). Refused when
/// the URL's origin changed: a stored credential is never sent somewhere new without being
/// given again.
pub fn keep_redacted_headers(new: &mut Value, stored: &EventRuleSpec) -> Result<(), DomainError> {
    let origin = |url: Option<&str>| {
        url.and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.origin().ascii_serialization())
    };
    let same_origin = origin(new.get("url").and_then(Value::as_str)) == origin(Some(&stored.url));
    let tls_kept =
        !stored.verify_tls || new.get("verifyTls").and_then(Value::as_bool) != Some(false);
    let Some(headers) = new.get_mut("headers").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    for (name, value) in headers.iter_mut() {
        if value.as_str() != Some(REDACTED) {
            continue;
        }
        let Some(old) = stored.headers.get(name) else {
            return Err(DomainError::invalid(format!(
                "Invalid event rule: header {name} is the placeholder {REDACTED} but no value is stored for it; send its real value"
            )));
        };
        if !same_origin {
            return Err(DomainError::invalid(format!(
                "Invalid event rule: header {name} was sent as {REDACTED} but the url now points elsewhere; send its value again"
            )));
        }
        if !tls_kept {
            return Err(DomainError::invalid(format!(
                "Invalid event rule: header {name} was sent as {REDACTED} but verifyTls is being turned off; send its value again"
            )));
        }
        *value = Value::String(old.clone());
    }
    Ok(())
}

/// Fields a `GET` shows that a `PUT` may send back unchanged; they are ignored.
pub const READ_ONLY_FIELDS: &[&str] = &[
    "signingSecret",
    "previousSecretValidUntil",
    "failingSince",
    "disabledReason",
    "createdAt",
    "updatedAt",
];

fn compile_filter(text: &str) -> Result<Jexl, DomainError> {
    let jexl = Jexl::compile(text)
        .map_err(|e| DomainError::invalid(format!("Invalid event rule filter: {e}")))?;
    if let Some(other) = jexl
        .references()
        .into_iter()
        .find(|r| !matches!(r, Reference::Event(_)))
    {
        return Err(DomainError::invalid(format!(
            "Invalid event rule filter: {other} is not available here; a filter reads the event, e.g. <+event.data.status> or <+event.eventType>"
        )));
    }
    Ok(jexl)
}

fn check_url(text: &str) -> Result<(), DomainError> {
    let bad = |why: &str| {
        Err(DomainError::invalid(format!(
            "Invalid event rule url: {why}"
        )))
    };
    if text.len() > MAX_URL_BYTES {
        return bad(&format!("longer than {MAX_URL_BYTES} bytes"));
    }
    let url = match url::Url::parse(text) {
        Ok(url) => url,
        Err(e) => return bad(&e.to_string()),
    };
    if !matches!(url.scheme(), "http" | "https") {
        return bad("only http and https are allowed");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return bad("it has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("credentials in the URL are not allowed; use headers or auth");
    }
    Ok(())
}

fn check_headers(headers: &BTreeMap<String, String>) -> Result<(), DomainError> {
    if headers.len() > MAX_HEADERS {
        return Err(DomainError::invalid(format!(
            "Invalid event rule: at most {MAX_HEADERS} headers"
        )));
    }
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if actix_http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(DomainError::invalid(format!(
                "Invalid event rule: '{}' is not a valid header name",
                super::ids::truncate_for_message(name)
            )));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-triggerd-") {
            return Err(DomainError::invalid(format!(
                "Invalid event rule: header {name} is set by triggerd and cannot be overridden"
            )));
        }
        if value.len() > 4096 || actix_http::header::HeaderValue::from_str(value).is_err() {
            return Err(DomainError::invalid(format!(
                "Invalid event rule: the value of header {name} is not a valid header value (visible ASCII, at most 4096 bytes)"
            )));
        }
    }
    Ok(())
}

/// What an execution event says (DESIGN §8 payload); [`ExecutionEvent::body`] renders it.
#[derive(Debug, Clone)]
pub struct ExecutionEvent<'a> {
    /// `pipeline_start`, `stage_end`, ...
    pub event_type: &'a str,
    /// The project identifier and name.
    pub project: (&'a str, &'a str),
    /// The pipeline identifier and name.
    pub pipeline: (&'a str, &'a str),
    /// The stage identifier and name, for `stage_*` events.
    pub stage: Option<(&'a str, &'a str)>,
    /// The trigger that fired the execution, if one did.
    pub trigger: Option<&'a str>,
    /// `WEBHOOK_CUSTOM` or `MANUAL`.
    pub trigger_type: &'a str,
    /// The webhook event that fired it, if one did.
    pub event_correlation_id: Option<&'a str>,
    /// The plan execution id.
    pub execution_id: &'a str,
    /// When the pipeline (or stage) started.
    pub started_at: Option<i64>,
    /// When it ended (`*_end` only).
    pub completed_at: Option<i64>,
    /// Its status (`*_end` only), as stored (`Success`, `ApprovalRejected`, ...).
    pub status: Option<&'a str>,
}

impl ExecutionEvent<'_> {
    /// The JSON body, with a fresh random `id` (the `webhook-id` of every delivery of it).
    pub fn body(&self) -> Value {
        let mut data = serde_json::Map::new();
        data.insert(
            "application".into(),
            serde_json::json!({"id": self.project.0, "name": self.project.1}),
        );
        data.insert(
            "pipeline".into(),
            serde_json::json!({"id": self.pipeline.0, "name": self.pipeline.1}),
        );
        if let Some((id, name)) = self.stage {
            data.insert("stage".into(), serde_json::json!({"id": id, "name": name}));
        }
        data.insert(
            "triggeredBy".into(),
            serde_json::json!({"uuid": "systemUser", "name": self.trigger.unwrap_or("systemUser"), "email": null}),
        );
        data.insert("triggeredByType".into(), self.trigger_type.into());
        data.insert(
            "eventCorrelationId".into(),
            self.event_correlation_id.into(),
        );
        data.insert("executionId".into(), self.execution_id.into());
        data.insert("startedAt".into(), self.started_at.into());
        if self.event_type.ends_with("_end") {
            data.insert("completedAt".into(), self.completed_at.into());
            data.insert("status".into(), self.status.map(upper_snake).into());
        }
        data.insert("services".into(), Value::Array(vec![]));
        data.insert("environments".into(), Value::Array(vec![]));
        data.insert("infraDefinitions".into(), Value::Array(vec![]));
        envelope(self.event_type, Value::Object(data))
    }
}

/// The body of a `ping`, sent when a rule is created or changed.
pub fn ping_body(project: &str, rule: &str, rule_name: &str) -> Value {
    envelope(
        "ping",
        serde_json::json!({
            "application": {"id": project},
            "rule": {"id": rule, "name": rule_name},
            "message": "triggerd will send this rule's events to this URL",
        }),
    )
}

/// A sample event of `event_type` for the Test endpoint: made-up ids, marked `"test": true`.
pub fn sample_body(event_type: &str, project: (&str, &str)) -> Value {
    if event_type == "ping" {
        return ping_body(project.0, "test", "test");
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut body = ExecutionEvent {
        event_type,
        project,
        pipeline: ("sample_pipeline", "Sample pipeline"),
        stage: event_type
            .starts_with("stage_")
            .then_some(("sample_stage", "Sample stage")),
        trigger: Some("sample_trigger"),
        trigger_type: "WEBHOOK_CUSTOM",
        event_correlation_id: Some("000000000000000000000000"),
        execution_id: "sampleExecutionId000000",
        started_at: Some(now - 1000),
        completed_at: Some(now),
        status: Some("Success"),
    }
    .body();
    body["test"] = Value::Bool(true);
    body
}

fn envelope(event_type: &str, data: Value) -> Value {
    serde_json::json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "version": "v1",
        "eventType": event_type,
        "data": data,
    })
}

/// `ApprovalRejected` → `APPROVAL_REJECTED`.
pub fn upper_snake(status: &str) -> String {
    let mut out = String::with_capacity(status.len() + 4);
    for (i, c) in status.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Reads `<+event...>` paths from an event body.
pub struct EventResolver<'a>(pub &'a Value);

impl Resolver for EventResolver<'_> {
    fn resolve(&self, reference: &Reference) -> Option<Value> {
        match reference {
            Reference::Event(path) => lookup(self.0, path).cloned(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id() -> Identifier {
        Identifier::parse("ops", "rule").unwrap()
    }

    fn rule(v: Value) -> Result<EventRule, DomainError> {
        EventRule::from_value(&id(), v)
    }

    fn err(v: Value) -> String {
        rule(v).unwrap_err().to_string()
    }

    #[test]
    fn defaults_fill_in() {
        let r = rule(json!({"url": "https://h.example/x", "sendEverything": true})).unwrap();
        assert_eq!(r.spec.name.as_deref(), Some("ops"));
        assert!(r.spec.enabled && r.spec.verify_tls);
        assert_eq!(r.spec.auth.mode, AuthMode::Signature);
    }

    #[test]
    fn bad_bodies_are_refused_naming_the_field() {
        let base = |extra: Value| {
            let mut v = json!({"url": "https://h.example/", "sendEverything": true});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v
        };
        assert!(err(base(json!({"url": "ftp://h/"}))).contains("only http and https"));
        assert!(err(base(json!({"url": "not a url"}))).contains("url"));
        assert!(err(base(json!({"url": "https://u:p@h/"}))).contains("credentials"));
        assert!(err(base(json!({"events": ["pipeline_explode"]}))).contains("pipeline_explode"));
        assert!(err(base(json!({"pipelines": ["bad-id"]}))).contains("pipelines"));
        assert!(err(base(json!({"headers": {"webhook-signature": "x"}})))
            .contains("cannot be overridden"));
        assert!(err(base(json!({"headers": {"X-Triggerd-Event": "x"}})))
            .contains("cannot be overridden"));
        assert!(err(base(json!({"headers": {"X-A": "line\nbreak"}}))).contains("header value"));
        assert!(err(base(json!({"auth": {"mode": "magic"}}))).contains("magic"));
        assert!(err(base(json!({"colour": "red"}))).contains("colour"));
        assert!(err(base(json!({"identifier": "other"}))).contains("does not match"));
        assert!(err(base(json!({"filter": "<+event.data.status> =="}))).contains("column"));
        assert!(err(base(json!({"filter": "<+trigger.payload.a> == 1"}))).contains("not available"));
        assert!(err(base(json!({"selectors": ["has space"]}))).contains("selector"));
        assert!(err(json!({"url": "https://h/"})).contains("sendEverything"));
        assert!(err(json!({"url": "https://h/", "pipelines": ["*"]})).contains("sendEverything"));
    }

    fn event(status: &str) -> Value {
        json!({"eventType": "pipeline_end", "data": {"status": status, "pipeline": {"id": "deploy"}}})
    }

    #[test]
    fn selection_follows_pipelines_events_and_filter() {
        let r = rule(
            json!({"url": "https://h/", "pipelines": ["deploy"], "events": ["pipeline_end"],
            "filter": "<+event.data.status> == \"FAILED\""}),
        )
        .unwrap();
        assert!(r.selects("deploy", "pipeline_end", &event("FAILED")));
        assert!(!r.selects("deploy", "pipeline_end", &event("SUCCESS")));
        assert!(!r.selects("other", "pipeline_end", &event("FAILED")));
        assert!(!r.selects("deploy", "pipeline_start", &event("FAILED")));
        let all = rule(json!({"url": "https://h/", "sendEverything": true})).unwrap();
        assert!(all.selects("anything", "stage_pause", &json!({})));
        assert!(!all.selects("anything", "ping", &json!({})));
        let stars =
            rule(json!({"url": "https://h/", "pipelines": ["*"], "events": ["*"]})).unwrap();
        assert!(stars.selects("x", "stage_end", &json!({})));
    }

    #[test]
    fn a_filter_that_fails_to_evaluate_selects_nothing() {
        let r = rule(json!({"url": "https://h/", "sendEverything": true,
            "filter": "<+event.data.missing>.length() > 1"}))
        .unwrap();
        assert!(!r.selects("p", "pipeline_end", &event("FAILED")));
    }

    #[test]
    fn the_example_rule_is_valid_and_selects_what_it_says() {
        let text = include_str!("../../examples/eventrules/ops.yaml");
        let doc: serde_json::Value = serde_yaml_ng::from_str(text).unwrap();
        let r = rule(doc["eventRule"].clone()).unwrap();
        let stage_end =
            |status: &str| json!({"eventType": "stage_end", "data": {"status": status}});
        assert!(r.selects("any", "pipeline_end", &event("SUCCESS")));
        assert!(r.selects("any", "stage_end", &stage_end("FAILED")));
        assert!(!r.selects("any", "stage_end", &stage_end("SUCCESS")));
        assert!(!r.selects("any", "stage_start", &json!({"eventType": "stage_start"})));
    }

    #[test]
    fn statuses_are_upper_snake_case() {
        assert_eq!(upper_snake("Success"), "SUCCESS");
        assert_eq!(upper_snake("ApprovalRejected"), "APPROVAL_REJECTED");
    }

    #[test]
    fn end_events_carry_status_and_completion_start_events_do_not() {
        let mut e = ExecutionEvent {
            event_type: "stage_end",
            project: ("proj", "Project"),
            pipeline: ("deploy", "Deploy"),
            stage: Some(("build", "Build")),
            trigger: Some("t"),
            trigger_type: "WEBHOOK_CUSTOM",
            event_correlation_id: Some("abc"),
            execution_id: "x",
            started_at: Some(1),
            completed_at: Some(2),
            status: Some("Failed"),
        };
        let end = e.body();
        assert_eq!(end["data"]["status"], "FAILED");
        assert_eq!(end["data"]["stage"]["id"], "build");
        assert_eq!(end["version"], "v1");
        assert_eq!(end["id"].as_str().unwrap().len(), 36);
        e.event_type = "pipeline_start";
        e.stage = None;
        let start = e.body();
        assert!(start["data"].get("status").is_none());
        assert!(start["data"].get("stage").is_none());
        assert_ne!(start["id"], end["id"]);
    }

    #[test]
    fn secret_headers_are_redacted_and_kept_on_put() {
        let r = rule(json!({"url": "https://h/", "sendEverything": true,
            "headers": {"Authorization": "Bearer s3cr3t", "X-Team": "ops"}}))
        .unwrap();
        let shown = r.redacted();
        assert_eq!(shown.headers["Authorization"], REDACTED);
        assert_eq!(shown.headers["X-Team"], "ops");
        let mut back = serde_json::to_value(&shown).unwrap();
        keep_redacted_headers(&mut back, &r.spec).unwrap();
        assert_eq!(back["headers"]["Authorization"], "Bearer s3cr3t");
        let mut moved = serde_json::to_value(&shown).unwrap();
        moved["url"] = json!("https://attacker.example/");
        let e = keep_redacted_headers(&mut moved, &r.spec).unwrap_err();
        assert!(e.to_string().contains("send its value again"), "{e}");
        let mut path_only = serde_json::to_value(&shown).unwrap();
        path_only["url"] = json!("https://h/other/path");
        keep_redacted_headers(&mut path_only, &r.spec).unwrap();
        let mut insecure = serde_json::to_value(&shown).unwrap();
        insecure["verifyTls"] = json!(false);
        let e = keep_redacted_headers(&mut insecure, &r.spec).unwrap_err();
        assert!(e.to_string().contains("verifyTls"), "{e}");
        let mut unknown = serde_json::to_value(&shown).unwrap();
        unknown["headers"]["X-New-Key"] = json!(REDACTED);
        let e = keep_redacted_headers(&mut unknown, &r.spec).unwrap_err();
        assert!(e.to_string().contains("no value is stored"), "{e}");
    }

    #[test]
    fn credential_looking_headers_are_sensitive() {
        for h in [
            "Authorization",
            "Api-Key",
            "DD-API-KEY",
            "X-Auth",
            "X-Password",
            "Cookie",
            "X-Token",
        ] {
            assert!(is_sensitive_header(h), "{h}");
        }
        for h in ["X-Team", "X-Env", "Accept"] {
            assert!(!is_sensitive_header(h), "{h}");
        }
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let e = err(json!({"url": "https://h/", "sendEverything": "yes"}));
        assert!(e.contains("sendEverything"), "{e}");
        let e = err(json!({"url": "https://h/", "sendEverything": true, "headers": {"A": 1}}));
        assert!(e.contains("headers.A"), "{e}");
    }
}
