//! `<+...>` references (DESIGN §5).
//!
//! A reference is a dotted path with optional `[n]` indexes and `['quoted key']` segments,
//! checked against the known roots when it is parsed:
//! `<+trigger.payload.a.b[0].c>`, `<+eventPayload.a>`, `<+trigger.header['X-Name']>`,
//! `<+trigger.type>`, `<+trigger.eventId>`, `<+trigger.triggerIdentifier>`,
//! `<+pipeline.identifier>`, `<+pipeline.name>`, `<+pipeline.executionId>`,
//! `<+pipeline.sequenceId>`, `<+pipeline.variables.NAME>`, `<+stage.identifier>`,
//! `<+steps.STEP.output.KEY>`, `<+execution.steps.STAGE.steps.STEP.output.KEY>` and `<+input>`.

use std::fmt;

use serde_json::Value;

use super::ExprError;

/// One step of a path into a JSON value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// `.name` or `['name']`: an object key (on an array, a numeric name is an index).
    Key(String),
    /// `[n]`: an array index.
    Index(usize),
}

impl Segment {
    /// The array index this segment names: `[n]`, or a key that is a number (`a.0` is `a[0]`).
    pub fn as_index(&self) -> Option<usize> {
        match self {
            Segment::Index(i) => Some(*i),
            Segment::Key(k) => k.parse().ok(),
        }
    }
}

/// A parsed `<+...>` reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// `<+trigger.payload...>` or `<+eventPayload...>`: the body, or a path into it.
    Payload(Vec<Segment>),
    /// `<+trigger.header['Name']>`: a request header, name lower-cased.
    Header(String),
    /// `<+trigger.type>`: always `Custom`.
    TriggerType,
    /// `<+trigger.eventId>`: the event's correlation id.
    EventId,
    /// `<+trigger.triggerIdentifier>`.
    TriggerIdentifier,
    /// `<+pipeline.identifier>`.
    PipelineIdentifier,
    /// `<+pipeline.name>`.
    PipelineName,
    /// `<+pipeline.executionId>`: the plan execution id.
    ExecutionId,
    /// `<+pipeline.sequenceId>`: the run number of the pipeline.
    SequenceId,
    /// `<+pipeline.variables.NAME>`.
    Variable(String),
    /// `<+stage.identifier>`.
    StageIdentifier,
    /// `<+steps.STEP.output.KEY>` (`stage: None`, same stage) or
    /// `<+execution.steps.STAGE.steps.STEP.output.KEY>`.
    StepOutput {
        /// The stage, when named.
        stage: Option<String>,
        /// The step identifier.
        step: String,
        /// The output key.
        key: String,
    },
    /// `<+input>`: a runtime input placeholder, only meaningful as a pipeline variable value.
    Input,
    /// `<+event...>`: an outbound event (DESIGN §8), or a path into it; only event-rule filters
    /// may read it.
    Event(Vec<Segment>),
}

impl Reference {
    /// Whether the reference can be resolved when a webhook arrives (before anything runs):
    /// the payload, headers, and trigger and pipeline metadata.
    pub fn is_known_at_intake(&self) -> bool {
        matches!(
            self,
            Self::Payload(_)
                | Self::Header(_)
                | Self::TriggerType
                | Self::EventId
                | Self::TriggerIdentifier
                | Self::PipelineIdentifier
                | Self::PipelineName
                | Self::ExecutionId
        )
    }
}

/// The roots a reference may start with, for error messages.
const KNOWN: &str = "trigger.payload…, eventPayload…, trigger.header['Name'], trigger.type, \
trigger.eventId, trigger.triggerIdentifier, pipeline.identifier, pipeline.name, \
pipeline.executionId, pipeline.sequenceId, pipeline.variables.NAME, stage.identifier, \
steps.STEP.output.KEY, execution.steps.STAGE.steps.STEP.output.KEY, input, event…";

/// Finds where the reference starting at byte `start` of `text` (which begins with `<+`) ends:
/// the byte just past its closing `>`. A `>` inside a quoted `['...']` key does not close it.
pub(crate) fn reference_end(text: &str, start: usize) -> Result<usize, ExprError> {
    let bytes = text.as_bytes();
    let mut i = start + 2;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(_) if b == b'\\' => i += 1,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b'>' => return Ok(i + 1),
            None if b == b'<' && bytes.get(i + 1) == Some(&b'+') => {
                return Err(ExprError::at(
                    text,
                    i,
                    "a reference cannot contain another reference",
                ))
            }
            None => {}
        }
        i += 1;
    }
    Err(ExprError::at(
        text,
        start,
        "unterminated reference: '<+' without a closing '>'",
    ))
}

/// Parses the reference `text[start..end]` (including `<+` and `>`); errors carry the column in
/// `text`.
pub(crate) fn parse_reference(
    text: &str,
    start: usize,
    end: usize,
) -> Result<Reference, ExprError> {
    let inner_start = start + 2;
    let inner = &text[inner_start..end - 1];
    let segments = parse_path(inner)
        .map_err(|(offset, message)| ExprError::at(text, inner_start + offset, message))?;
    classify(segments).map_err(|message| ExprError::at(text, start, message))
}

/// Parses a whole string that must be exactly one reference, such as a condition key written
/// without surrounding text. Used by tests and callers that hold a lone reference.
pub fn parse(text: &str) -> Result<Reference, ExprError> {
    if !text.starts_with("<+") {
        return Err(ExprError::at(text, 0, "a reference starts with '<+'"));
    }
    let end = reference_end(text, 0)?;
    if end != text.len() {
        return Err(ExprError::at(
            text,
            end,
            "unexpected text after the reference",
        ));
    }
    parse_reference(text, 0, end)
}

/// Splits `a.b[0]['c d']` into segments; errors give the byte offset in `inner`.
fn parse_path(inner: &str) -> Result<Vec<Segment>, (usize, String)> {
    let bytes = inner.as_bytes();
    let mut segments = Vec::new();
    let mut i = 0;
    if inner.is_empty() {
        return Err((0, "empty reference '<+>'".to_owned()));
    }
    let mut expect_name = true;
    while i < bytes.len() {
        match bytes[i] {
            b'[' => {
                i += 1;
                match bytes.get(i) {
                    Some(&q) if q == b'\'' || q == b'"' => {
                        let (key, next) = quoted(inner, i, q)?;
                        if bytes.get(next) != Some(&b']') {
                            return Err((next, "expected ']' after the quoted key".to_owned()));
                        }
                        segments.push(Segment::Key(key));
                        i = next + 1;
                    }
                    Some(b) if b.is_ascii_digit() => {
                        let digits_end = inner[i..]
                            .find(|c: char| !c.is_ascii_digit())
                            .map_or(inner.len(), |n| i + n);
                        if bytes.get(digits_end) != Some(&b']') {
                            return Err((digits_end, "expected ']' after the index".to_owned()));
                        }
                        let index = inner[i..digits_end]
                            .parse::<usize>()
                            .map_err(|_| (i, "index is too large".to_owned()))?;
                        segments.push(Segment::Index(index));
                        i = digits_end + 1;
                    }
                    _ => {
                        return Err((
                            i,
                            "expected an index like [0] or a quoted key like ['name']".to_owned(),
                        ))
                    }
                }
                expect_name = false;
            }
            b'.' if !expect_name => {
                i += 1;
                expect_name = true;
                if i >= bytes.len() {
                    return Err((i, "expected a name after '.'".to_owned()));
                }
            }
            _ if expect_name => {
                let end = inner[i..]
                    .find(['.', '[', ']', '\'', '"', '(', ')', ' ', '\t', '\n', '\r'])
                    .map_or(inner.len(), |n| i + n);
                if end == i {
                    return Err(unexpected(inner, i));
                }
                segments.push(Segment::Key(inner[i..end].to_owned()));
                i = end;
                expect_name = false;
            }
            _ => {
                return Err(unexpected(inner, i));
            }
        }
    }
    Ok(segments)
}

fn unexpected(inner: &str, at: usize) -> (usize, String) {
    let c = inner[at..].chars().next().unwrap_or(' ');
    let hint = if c == '(' {
        "; method calls belong in the jexlCondition, outside <+...>"
    } else {
        ""
    };
    (at, format!("unexpected '{c}' in reference{hint}"))
}

/// Reads a quoted key starting at the quote `inner[at]`; returns it and the offset after the
/// closing quote. `\` escapes the next character.
fn quoted(inner: &str, at: usize, quote: u8) -> Result<(String, usize), (usize, String)> {
    let mut key = String::new();
    let mut chars = inner[at + 1..].char_indices();
    while let Some((n, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped)) => key.push(escaped),
                None => break,
            },
            c if c as u32 == u32::from(quote) => return Ok((key, at + 1 + n + 1)),
            c => key.push(c),
        }
    }
    Err((at, "unterminated quoted key".to_owned()))
}

fn key(segment: &Segment) -> Option<&str> {
    match segment {
        Segment::Key(k) => Some(k),
        Segment::Index(_) => None,
    }
}

fn classify(segments: Vec<Segment>) -> Result<Reference, String> {
    let keys: Vec<Option<&str>> = segments.iter().map(key).collect();
    let unknown = || {
        let shown = display_path(&segments);
        format!("unknown reference '<+{shown}>'; expected one of {KNOWN}")
    };
    let name = |i: usize, what: &str| -> Result<String, String> {
        match keys.get(i) {
            Some(Some(k)) if !k.is_empty() => Ok((*k).to_owned()),
            _ => Err(format!(
                "reference '<+{}>' needs {what}",
                display_path(&segments)
            )),
        }
    };
    let exactly = |n: usize, r: Reference| {
        if segments.len() == n {
            Ok(r)
        } else {
            Err(format!(
                "reference '<+{}>' has unexpected segments after '{}'",
                display_path(&segments),
                display_path(&segments[..n])
            ))
        }
    };
    match keys.as_slice() {
        [Some("trigger"), Some("payload"), ..] => Ok(Reference::Payload(segments[2..].to_vec())),
        [Some("eventPayload"), ..] => Ok(Reference::Payload(segments[1..].to_vec())),
        [Some("event"), ..] => Ok(Reference::Event(segments[1..].to_vec())),
        [Some("trigger"), Some("header" | "headers"), ..] => {
            let header = name(2, "a header name, e.g. trigger.header['X-Event']")?;
            exactly(3, Reference::Header(header.to_ascii_lowercase()))
        }
        [Some("trigger"), Some("type"), ..] => exactly(2, Reference::TriggerType),
        [Some("trigger"), Some("eventId"), ..] => exactly(2, Reference::EventId),
        [Some("trigger"), Some("triggerIdentifier"), ..] => {
            exactly(2, Reference::TriggerIdentifier)
        }
        [Some("pipeline"), Some("identifier"), ..] => exactly(2, Reference::PipelineIdentifier),
        [Some("pipeline"), Some("name"), ..] => exactly(2, Reference::PipelineName),
        [Some("pipeline"), Some("executionId"), ..] => exactly(2, Reference::ExecutionId),
        [Some("pipeline"), Some("sequenceId"), ..] => exactly(2, Reference::SequenceId),
        [Some("pipeline"), Some("variables"), ..] => {
            let variable = name(2, "a variable name, e.g. pipeline.variables.image_tag")?;
            exactly(3, Reference::Variable(variable))
        }
        [Some("stage"), Some("identifier"), ..] => exactly(2, Reference::StageIdentifier),
        [Some("steps"), ..] => {
            let step = name(1, "a step, e.g. steps.build.output.KEY")?;
            if keys.get(2) != Some(&Some("output")) {
                return Err(format!(
                    "reference '<+{}>' must have the form steps.STEP.output.KEY",
                    display_path(&segments)
                ));
            }
            let key = name(3, "an output key, e.g. steps.build.output.KEY")?;
            exactly(
                4,
                Reference::StepOutput {
                    stage: None,
                    step,
                    key,
                },
            )
        }
        [Some("execution"), Some("steps"), ..] => {
            let form = || {
                format!(
                    "reference '<+{}>' must have the form execution.steps.STAGE.steps.STEP.output.KEY",
                    display_path(&segments)
                )
            };
            let stage = name(2, "a stage")?;
            if keys.get(3) != Some(&Some("steps")) || keys.get(5) != Some(&Some("output")) {
                return Err(form());
            }
            let step = name(4, "a step")?;
            let key = name(6, "an output key")?;
            exactly(
                7,
                Reference::StepOutput {
                    stage: Some(stage),
                    step,
                    key,
                },
            )
        }
        [Some("input")] => Ok(Reference::Input),
        _ => Err(unknown()),
    }
}

/// Writes segments back as `a.b[0]['c d']`, for messages (bounded).
fn display_path(segments: &[Segment]) -> String {
    let mut out = String::new();
    for (i, s) in segments.iter().enumerate() {
        match s {
            Segment::Key(k) if is_plain(k) => {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Key(k) => {
                out.push_str("['");
                out.push_str(&k.replace('\\', "\\\\").replace('\'', "\\'"));
                out.push_str("']");
            }
            Segment::Index(n) => {
                out.push('[');
                out.push_str(&n.to_string());
                out.push(']');
            }
        }
    }
    crate::domain::ids::truncate_for_message(&out)
}

fn is_plain(key: &str) -> bool {
    !key.is_empty()
        && !key.contains([
            '.', '[', ']', '\'', '"', '(', ')', ' ', '\t', '\n', '\r', '>',
        ])
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = |root: Vec<Segment>| display_path(&root);
        let k = |s: &str| Segment::Key(s.to_owned());
        let shown = match self {
            Self::Payload(p) => {
                let mut all = vec![k("trigger"), k("payload")];
                all.extend(p.iter().cloned());
                path(all)
            }
            Self::Header(h) => format!("trigger.header['{h}']"),
            Self::TriggerType => "trigger.type".into(),
            Self::EventId => "trigger.eventId".into(),
            Self::TriggerIdentifier => "trigger.triggerIdentifier".into(),
            Self::PipelineIdentifier => "pipeline.identifier".into(),
            Self::PipelineName => "pipeline.name".into(),
            Self::ExecutionId => "pipeline.executionId".into(),
            Self::SequenceId => "pipeline.sequenceId".into(),
            Self::Variable(v) => path(vec![k("pipeline"), k("variables"), k(v)]),
            Self::StageIdentifier => "stage.identifier".into(),
            Self::StepOutput {
                stage: None,
                step,
                key,
            } => path(vec![k("steps"), k(step), k("output"), k(key)]),
            Self::StepOutput {
                stage: Some(stage),
                step,
                key,
            } => path(vec![
                k("execution"),
                k("steps"),
                k(stage),
                k("steps"),
                k(step),
                k("output"),
                k(key),
            ]),
            Self::Input => "input".into(),
            Self::Event(p) => {
                let mut all = vec![k("event")];
                all.extend(p.iter().cloned());
                path(all)
            }
        };
        write!(f, "<+{shown}>")
    }
}

/// Follows `path` into `value`; `None` when a step does not exist. On an array, a `Key` that is a
/// number is an index (`a.0` and `a[0]` are the same).
pub fn lookup<'v>(value: &'v Value, path: &[Segment]) -> Option<&'v Value> {
    path.iter()
        .try_fold(value, |current, segment| match (current, segment) {
            (Value::Object(map), Segment::Key(k)) => map.get(k),
            (Value::Array(items), segment) => segment.as_index().and_then(|n| items.get(n)),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Segment {
        Segment::Key(s.to_owned())
    }

    #[test]
    fn payload_paths_with_dots_indexes_and_quoted_keys_parse() {
        assert_eq!(
            parse("<+trigger.payload.a.b[0].c>").unwrap(),
            Reference::Payload(vec![key("a"), key("b"), Segment::Index(0), key("c")])
        );
        assert_eq!(
            parse("<+eventPayload['x.y']['it''s']>").unwrap_err().column,
            27
        );
        assert_eq!(
            parse(r"<+eventPayload['x.y']['it\'s>']>").unwrap(),
            Reference::Payload(vec![key("x.y"), key("it's>")])
        );
        assert_eq!(
            parse("<+trigger.payload>").unwrap(),
            Reference::Payload(vec![])
        );
        assert_eq!(
            parse("<+trigger.payload.head-commit.id>").unwrap(),
            Reference::Payload(vec![key("head-commit"), key("id")])
        );
    }

    #[test]
    fn headers_are_lower_cased_and_need_a_name() {
        assert_eq!(
            parse("<+trigger.header['X-GitHub-Event']>").unwrap(),
            Reference::Header("x-github-event".into())
        );
        assert_eq!(
            parse("<+trigger.header.X-Event>").unwrap(),
            Reference::Header("x-event".into())
        );
        assert!(parse("<+trigger.header>")
            .unwrap_err()
            .message
            .contains("header name"));
    }

    #[test]
    fn metadata_variables_and_step_outputs_parse() {
        assert_eq!(parse("<+trigger.type>").unwrap(), Reference::TriggerType);
        assert_eq!(
            parse("<+pipeline.sequenceId>").unwrap(),
            Reference::SequenceId
        );
        assert_eq!(
            parse("<+pipeline.variables.image_tag>").unwrap(),
            Reference::Variable("image_tag".into())
        );
        assert_eq!(
            parse("<+steps.build.output.TAG>").unwrap(),
            Reference::StepOutput {
                stage: None,
                step: "build".into(),
                key: "TAG".into()
            }
        );
        assert_eq!(
            parse("<+execution.steps.s1.steps.build.output.TAG>").unwrap(),
            Reference::StepOutput {
                stage: Some("s1".into()),
                step: "build".into(),
                key: "TAG".into()
            }
        );
        assert_eq!(parse("<+input>").unwrap(), Reference::Input);
    }

    #[test]
    fn bad_references_say_what_and_where() {
        let e = parse("<+trigger.paylod.x>").unwrap_err();
        assert!(
            e.message
                .starts_with("unknown reference '<+trigger.paylod.x>'"),
            "{e}"
        );
        assert_eq!(e.column, 1);
        let e = parse("<+trigger.payload.a(1)>").unwrap_err();
        assert_eq!(e.column, 20, "{e}");
        assert!(e.message.contains("method calls"));
        assert_eq!(parse("<+trigger.payload[x]>").unwrap_err().column, 19);
        assert!(parse("<+trigger.payload.a")
            .unwrap_err()
            .message
            .contains("unterminated"));
        assert!(parse("<+>").unwrap_err().message.contains("empty"));
        assert!(parse("<+trigger.type.x>")
            .unwrap_err()
            .message
            .contains("unexpected segments"));
        assert!(parse("<+steps.a.x.b>")
            .unwrap_err()
            .message
            .contains("steps.STEP.output.KEY"));
        assert!(parse("<+trigger.payload.>").is_err());
        assert!(parse("<+a<+b>>")
            .unwrap_err()
            .message
            .contains("another reference"));
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "<+trigger.payload.a[0]['x y']>",
            "<+trigger.header['x-event']>",
            "<+execution.steps.s.steps.t.output.K>",
            "<+pipeline.variables.v>",
        ] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn lookup_follows_objects_and_arrays() {
        let v = serde_json::json!({"a": [{"b": 1}, {"b": 2}]});
        let path = |text: &str| match parse(text).unwrap() {
            Reference::Payload(p) => p,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            lookup(&v, &path("<+trigger.payload.a[1].b>")),
            Some(&serde_json::json!(2))
        );
        assert_eq!(
            lookup(&v, &path("<+trigger.payload.a.0.b>")),
            Some(&serde_json::json!(1))
        );
        assert_eq!(lookup(&v, &path("<+trigger.payload.a[5]>")), None);
        assert_eq!(lookup(&v, &path("<+trigger.payload.a.b>")), None);
        assert_eq!(lookup(&v, &path("<+trigger.payload>")), Some(&v));
    }
}
