//! The trigger context: what a webhook's conditions and runtime input can read (DESIGN §5).

use serde_json::Value;

use super::reference::lookup;
use super::{Reference, Resolver};

/// A received webhook as expressions see it.
#[derive(Debug)]
pub struct TriggerContext<'a> {
    /// The body: a parsed JSON object or array, or the raw text as a string.
    pub payload: &'a Value,
    /// Request headers, lower-case names, first value of each.
    pub headers: &'a [(String, String)],
    /// The event's correlation id.
    pub event_id: &'a str,
    /// The trigger identifier.
    pub trigger_identifier: &'a str,
    /// The pipeline identifier.
    pub pipeline_identifier: &'a str,
    /// The pipeline name.
    pub pipeline_name: &'a str,
    /// The plan execution id the event will start, when known.
    pub execution_id: Option<&'a str>,
}

/// Reads a body as a payload: a JSON object or array is parsed; anything else (including a JSON
/// scalar or malformed JSON) is kept as the raw string (DESIGN §2.1).
pub fn parse_payload(body: &str) -> Value {
    let trimmed = body.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        if let Ok(value @ (Value::Object(_) | Value::Array(_))) = serde_json::from_str(body) {
            return value;
        }
    }
    Value::String(body.to_owned())
}

impl Resolver for TriggerContext<'_> {
    fn resolve(&self, reference: &Reference) -> Option<Value> {
        let text = |s: &str| Some(Value::String(s.to_owned()));
        match reference {
            Reference::Payload(path) => lookup(self.payload, path).cloned(),
            Reference::Header(name) => self
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| Value::String(v.clone())),
            Reference::TriggerType => text("Custom"),
            Reference::EventId => text(self.event_id),
            Reference::TriggerIdentifier => text(self.trigger_identifier),
            Reference::PipelineIdentifier => text(self.pipeline_identifier),
            Reference::PipelineName => text(self.pipeline_name),
            Reference::ExecutionId => self.execution_id.and_then(text),
            Reference::SequenceId
            | Reference::Variable(_)
            | Reference::StageIdentifier
            | Reference::StepOutput { .. }
            | Reference::Input
            | Reference::Event(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::reference::parse;
    use serde_json::json;

    #[test]
    fn only_objects_and_arrays_are_parsed() {
        assert_eq!(parse_payload(r#" {"a":1}"#), json!({"a": 1}));
        assert_eq!(parse_payload("[1]"), json!([1]));
        assert_eq!(parse_payload("42"), json!("42"));
        assert_eq!(parse_payload(r#""s""#), json!("\"s\""));
        assert_eq!(parse_payload("{broken"), json!("{broken"));
    }

    #[test]
    fn the_context_resolves_payload_headers_and_metadata() {
        let payload = json!({"a": {"b": [10]}});
        let headers = vec![("x-github-event".to_owned(), "push".to_owned())];
        let ctx = TriggerContext {
            payload: &payload,
            headers: &headers,
            event_id: "ev1",
            trigger_identifier: "t",
            pipeline_identifier: "p",
            pipeline_name: "P",
            execution_id: None,
        };
        let get = |t: &str| ctx.resolve(&parse(t).unwrap());
        assert_eq!(get("<+trigger.payload.a.b[0]>"), Some(json!(10)));
        assert_eq!(get("<+eventPayload.a.b.0>"), Some(json!(10)));
        assert_eq!(
            get("<+trigger.header['X-GitHub-Event']>"),
            Some(json!("push"))
        );
        assert_eq!(get("<+trigger.header['X-Other']>"), None);
        assert_eq!(get("<+trigger.type>"), Some(json!("Custom")));
        assert_eq!(get("<+trigger.eventId>"), Some(json!("ev1")));
        assert_eq!(get("<+pipeline.name>"), Some(json!("P")));
        assert_eq!(get("<+pipeline.executionId>"), None);
        assert_eq!(get("<+steps.a.output.b>"), None);
    }
}
