//! Whether a webhook fires its trigger (DESIGN §4): payload conditions, then header conditions,
//! then the JEXL condition, all ANDed, every result recorded so the user sees exactly why.
//!
//! [`CompiledConditions::compile`] is the save-time check (an unknown reference, an expression
//! syntax error or a bad regex is a 400 with its column); the compiled form is kept in memory
//! with the trigger, so a webhook only evaluates.

use serde::Serialize;

use std::sync::Arc;

use ::regex::Regex;
use subtle::ConstantTimeEq;

use super::ids::truncate_for_message;
use super::payload::{is_secret_header, REDACTED};
use super::trigger::{Condition, Operator, TriggerSpec};
use super::DomainError;
use crate::expr::jexl::{Jexl, Verdict};
use crate::expr::regex::{self, Mode};
use crate::expr::template::{Rendered, Template};
use crate::expr::value::{render, type_name};
use crate::expr::{ExprError, Reference, Resolver};

/// What the conditions decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every condition held.
    Matched,
    /// A payload condition failed.
    PayloadMismatch,
    /// Payload conditions held, a header condition failed.
    HeaderMismatch,
    /// Payload and header conditions held, the JEXL condition did not.
    JexlMismatch,
}

/// One condition's result, as `conditionResults` shows it (DESIGN §2.3).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ConditionResult {
    /// `payload`, `header` or `jexl`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// The condition key, or the JEXL expression.
    pub key: String,
    /// The operator name (`JEXL` for the JEXL condition).
    #[schema(value_type = String)]
    pub operator: &'static str,
    /// The condition value (`true` for the JEXL condition).
    pub expected: String,
    /// What the key rendered to; `null` when it is missing or the expression failed.
    pub actual: Option<String>,
    /// Whether this condition held.
    pub matched: bool,
    /// Why the JEXL condition could not be evaluated, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The outcome, the message explaining the first failure, and every result.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// What the conditions decided.
    pub outcome: Outcome,
    /// Names the first condition that failed; `None` when matched.
    pub message: Option<String>,
    /// Every condition's result, in evaluation order.
    pub results: Vec<ConditionResult>,
}

/// A trigger's conditions, parsed once.
#[derive(Debug, Clone)]
pub struct CompiledConditions {
    payload: Vec<Compiled>,
    header: Vec<Compiled>,
    jexl: Option<CompiledJexl>,
}

#[derive(Debug, Clone)]
struct Compiled {
    condition: Condition,
    key: Template,
    matcher: Matcher,
    /// The key reads a secret header: compared in constant time, never shown.
    secret: bool,
}

#[derive(Debug, Clone)]
struct CompiledJexl {
    jexl: Jexl,
    /// The expression reads a secret header: neither it nor what it saw is shown.
    secret: bool,
}

/// Longest `actual` kept in `conditionResults`, in bytes; longer values are cut.
pub const MAX_ACTUAL_BYTES: usize = 1024;
/// What `conditionResults` shows for a JEXL condition that reads a secret header.
const HIDDEN_JEXL: &str = "jexlCondition (not shown: it reads a secret header)";

impl CompiledConditions {
    /// Parses every condition key and the JEXL condition, compiles `Regex` and `In` values, and
    /// checks that every reference can be known when a webhook arrives.
    pub fn compile(spec: &TriggerSpec) -> Result<Self, DomainError> {
        let signature_header = spec
            .signature
            .as_ref()
            .map(|s| s.header.to_ascii_lowercase());
        let is_secret = |r: &Reference| -> bool {
            match r {
                Reference::Header(name) => {
                    is_secret_header(name) || signature_header.as_deref() == Some(name.as_str())
                }
                _ => false,
            }
        };
        let group = |conditions: &[Condition], name: &str| {
            conditions
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let what = format!("{name}[{i}]");
                    let key = Template::parse(&c.key)
                        .map_err(|e| expression_error(&format!("{what}: key"), &e))?;
                    for reference in key.references() {
                        check_known_at_intake(reference, &format!("{what}: key"))?;
                    }
                    let matcher = Matcher::new(c.operator, &c.value).map_err(|e| {
                        DomainError::invalid(format!("{what}: value is not a usable regex: {e}"))
                    })?;
                    let secret = key.references().any(is_secret);
                    Ok(Compiled {
                        condition: c.clone(),
                        key,
                        matcher,
                        secret,
                    })
                })
                .collect::<Result<Vec<_>, DomainError>>()
        };
        let jexl = match &spec.jexl_condition {
            None => None,
            Some(text) => {
                let jexl =
                    Jexl::compile(text).map_err(|e| expression_error("jexlCondition", &e))?;
                for reference in jexl.references() {
                    check_known_at_intake(reference, "jexlCondition")?;
                }
                let secret = jexl.references().into_iter().any(is_secret);
                Some(CompiledJexl { jexl, secret })
            }
        };
        Ok(Self {
            payload: group(&spec.payload_conditions, "payloadConditions")?,
            header: group(&spec.header_conditions, "headerConditions")?,
            jexl,
        })
    }

    /// Every reference the conditions read.
    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.payload
            .iter()
            .chain(&self.header)
            .flat_map(|c| c.key.references())
            .chain(self.jexl.iter().flat_map(|j| j.jexl.references()))
    }

    /// Evaluates every condition against a webhook. Header values are the real ones; what a
    /// condition on a secret header expected and saw is shown only as the mask.
    pub fn evaluate(&self, ctx: &dyn Resolver) -> Evaluation {
        let mut results = Vec::with_capacity(self.payload.len() + self.header.len() + 1);
        let mut outcome = Outcome::Matched;
        let mut message = None;
        for (conditions, kind, label, failed) in [
            (
                &self.payload,
                "payload",
                "Payload",
                Outcome::PayloadMismatch,
            ),
            (&self.header, "header", "Header", Outcome::HeaderMismatch),
        ] {
            for (i, c) in conditions.iter().enumerate() {
                let rendered = c.key.render(ctx);
                let matched = c.matcher.matches(&rendered, c.secret);
                let expected = if c.secret && !is_blank(&c.condition.value) {
                    REDACTED.to_owned()
                } else {
                    c.condition.value.clone()
                };
                let actual = match &rendered.missing {
                    Some(_) => None,
                    None if c.secret => Some(REDACTED.to_owned()),
                    None => Some(bounded(&rendered.text)),
                };
                if !matched && outcome == Outcome::Matched {
                    outcome = failed;
                    let seen = match (&rendered.missing, &actual) {
                        (Some(reference), _) => format!(
                            "missing ({} is not in the webhook)",
                            truncate_for_message(reference)
                        ),
                        (None, Some(actual)) => format!("\"{}\"", truncate_for_message(actual)),
                        (None, None) => String::new(),
                    };
                    message = Some(format!(
                        "{label} condition {} of {} did not match: {} {} \"{}\", actual {seen}",
                        i + 1,
                        conditions.len(),
                        truncate_for_message(&c.condition.key),
                        c.condition.operator,
                        truncate_for_message(&expected),
                    ));
                }
                results.push(ConditionResult {
                    kind,
                    key: c.condition.key.clone(),
                    operator: c.condition.operator.as_str(),
                    expected,
                    actual,
                    matched,
                    error: None,
                });
            }
        }
        if let Some(CompiledJexl { jexl, secret }) = &self.jexl {
            let (matched, actual, error, problem) = match jexl.verdict(ctx) {
                Verdict::Bool(b) => (
                    b,
                    Some(b.to_string()),
                    None,
                    "evaluated to false".to_owned(),
                ),
                Verdict::NotBoolean(_) if *secret => (
                    false,
                    Some(REDACTED.to_owned()),
                    None,
                    "did not evaluate to a boolean".to_owned(),
                ),
                Verdict::NotBoolean(v) => {
                    let problem = format!(
                        "did not evaluate to a boolean (got {} {})",
                        type_name(&v),
                        truncate_for_message(&render(&v))
                    );
                    (false, Some(bounded(&render(&v))), None, problem)
                }
                Verdict::Error(e) => {
                    let error = if *secret {
                        format!("evaluation failed at column {} (details hidden)", e.column)
                    } else {
                        e.to_string()
                    };
                    (false, None, Some(error.clone()), format!("failed: {error}"))
                }
            };
            let key = if *secret {
                HIDDEN_JEXL.to_owned()
            } else {
                jexl.source().to_owned()
            };
            if !matched && outcome == Outcome::Matched {
                outcome = Outcome::JexlMismatch;
                message = Some(format!(
                    "JEXL condition {problem}: {}",
                    truncate_for_message(&key)
                ));
            }
            results.push(ConditionResult {
                kind: "jexl",
                key,
                operator: "JEXL",
                expected: "true".into(),
                actual,
                matched,
                error,
            });
        }
        Evaluation {
            outcome,
            message,
            results,
        }
    }
}

/// `text`, cut to at most [`MAX_ACTUAL_BYTES`] (at a character boundary) with `…` appended.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_ACTUAL_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_ACTUAL_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `what: <message> at column N`, the save-time error for an expression.
pub fn expression_error(what: &str, error: &ExprError) -> DomainError {
    DomainError::invalid(format!("{what}: {error}"))
}

fn check_known_at_intake(reference: &Reference, what: &str) -> Result<(), DomainError> {
    if reference.is_known_at_intake() {
        return Ok(());
    }
    Err(DomainError::invalid(format!(
        "{what}: {reference} is not known when a webhook arrives; triggers can read \
<+trigger.payload...>, <+trigger.header['Name']>, <+trigger.type>, <+trigger.eventId>, \
<+trigger.triggerIdentifier>, <+pipeline.identifier>, <+pipeline.name> and <+pipeline.executionId>"
    )))
}

fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

/// An operator with its value, compiled once: the operator table of DESIGN §4.
#[derive(Debug, Clone)]
pub struct Matcher {
    operator: Operator,
    value: String,
    /// `In`/`NotIn`: each item, with its regex when it compiles as one.
    items: Vec<(String, Option<Arc<Regex>>)>,
    /// `Regex`: the compiled value.
    regex: Option<Arc<Regex>>,
}

impl Matcher {
    /// Compiles `value` for `operator`; the error says why a `Regex` value does not compile.
    pub fn new(operator: Operator, value: &str) -> Result<Self, String> {
        let blank = is_blank(value);
        let items = match operator {
            Operator::In | Operator::NotIn if !blank => in_items(value)
                .into_iter()
                .map(|item| {
                    let regex = regex::compile_uncached(&item, Mode::FullMatchDotAll).ok();
                    (item, regex)
                })
                .collect(),
            _ => Vec::new(),
        };
        let regex = match operator {
            Operator::Regex if !blank => {
                Some(regex::compile_uncached(value, Mode::FullMatchDotAll)?)
            }
            _ => None,
        };
        Ok(Self {
            operator,
            value: value.to_owned(),
            items,
            regex,
        })
    }

    /// Whether `input` (the rendered key) satisfies the condition. With `constant_time`,
    /// `Equals` and `NotEquals` compare without an early exit (for secret headers).
    pub fn matches(&self, input: &Rendered, constant_time: bool) -> bool {
        let text = input.text.as_str();
        let value = self.value.as_str();
        let value_blank = is_blank(value);
        let input_blank = is_blank(text);
        let equal = || {
            if constant_time {
                bool::from(text.as_bytes().ct_eq(value.as_bytes()))
            } else {
                text == value
            }
        };
        match self.operator {
            Operator::Equals if value_blank => input_blank,
            Operator::Equals => equal(),
            Operator::NotEquals if value_blank => !input_blank,
            Operator::NotEquals => !equal(),
            _ if value_blank => true,
            Operator::StartsWith
            | Operator::EndsWith
            | Operator::Contains
            | Operator::DoesNotContain
                if input_blank =>
            {
                false
            }
            Operator::StartsWith => text.starts_with(value),
            Operator::EndsWith => text.ends_with(value),
            Operator::Contains => text.contains(value),
            Operator::DoesNotContain => !text.contains(value),
            Operator::In => self.in_list(text),
            Operator::NotIn => !self.in_list(text),
            Operator::Regex if input.missing.is_some() => false,
            Operator::Regex => self.regex.as_ref().is_some_and(|re| re.is_match(text)),
        }
    }

    /// `In`: the input equals an item, or an item read as a regex fully matches it.
    fn in_list(&self, input: &str) -> bool {
        self.items.iter().any(|(item, regex)| {
            item == input || regex.as_ref().is_some_and(|re| re.is_match(input))
        })
    }
}

/// Splits an `In` value on commas outside double quotes; items are trimmed and unquoted (`""`
/// inside quotes is one `"`). An empty unquoted item (`a,,b`, a trailing comma) is dropped; a
/// quoted `""` is kept as the empty string.
pub fn in_items(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = value.chars().peekable();
    let mut finish = |current: &mut String, quoted: &mut bool| {
        let raw = std::mem::take(current);
        let trimmed = raw.trim();
        if *quoted {
            items.push(unquote(trimmed));
        } else if !trimmed.is_empty() {
            items.push(trimmed.to_owned());
        }
        *quoted = false;
    };
    while let Some(c) = chars.next() {
        match c {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                chars.next();
                current.push_str("\"\"");
            }
            '"' if in_quotes => {
                in_quotes = false;
                current.push('"');
            }
            '"' if current.trim().is_empty() => {
                in_quotes = true;
                quoted = true;
                current.clear();
                current.push('"');
            }
            ',' if !in_quotes => finish(&mut current, &mut quoted),
            c => current.push(c),
        }
    }
    finish(&mut current, &mut quoted);
    items
}

/// `"a""b"` → `a"b`; text after the closing quote (`"a" x`) is kept as it is, unquoted.
fn unquote(text: &str) -> String {
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => text.trim_start_matches('"').replace("\"\"", "\""),
    }
}

/// The conditions' results as stored JSON.
pub fn results_json(results: &[ConditionResult]) -> crate::store::JsonText {
    // Cannot fail: strings and booleans only.
    serde_json::value::to_raw_value(results)
        .or_else(|_| serde_json::value::RawValue::from_string("[]".into()))
        .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::trigger::parse_trigger;
    use crate::domain::BodyFormat;
    use crate::expr::context::TriggerContext;
    use crate::store::json_tree;
    use serde_json::json;
    use serde_json::Value;

    fn rendered(text: &str) -> Rendered {
        Rendered {
            text: text.to_owned(),
            missing: None,
        }
    }

    fn missing() -> Rendered {
        Rendered {
            text: String::new(),
            missing: Some("<+trigger.payload.x>".into()),
        }
    }

    /// (operator, input (None = missing), value, expected)
    const TABLE: &[(Operator, Option<&str>, &str, bool)] = &[
        (Operator::Equals, Some("main"), "main", true),
        (Operator::Equals, Some("Main"), "main", false),
        (Operator::Equals, Some(""), "", true),
        (Operator::Equals, Some("  "), " ", true),
        (Operator::Equals, Some("x"), "", false),
        (Operator::Equals, None, "", true),
        (Operator::Equals, None, "main", false),
        (Operator::NotEquals, Some("dev"), "main", true),
        (Operator::NotEquals, Some("main"), "main", false),
        (Operator::NotEquals, Some("x"), "", true),
        (Operator::NotEquals, Some(""), "", false),
        (Operator::NotEquals, None, "main", true),
        (
            Operator::StartsWith,
            Some("refs/heads/main"),
            "refs/heads/",
            true,
        ),
        (
            Operator::StartsWith,
            Some("refs/tags/v1"),
            "refs/heads/",
            false,
        ),
        (Operator::StartsWith, Some(""), "", true),
        (Operator::StartsWith, None, "", true),
        (Operator::StartsWith, Some(""), "x", false),
        (Operator::StartsWith, None, "x", false),
        (Operator::EndsWith, Some("app.yaml"), ".yaml", true),
        (Operator::EndsWith, Some("app.yml"), ".yaml", false),
        (Operator::EndsWith, Some(" "), ".yaml", false),
        (Operator::Contains, Some("feature/login"), "login", true),
        (Operator::Contains, Some("feature/logout"), "login", false),
        (Operator::Contains, None, "login", false),
        (Operator::Contains, Some("x"), " ", true),
        (Operator::DoesNotContain, Some("feature/x"), "wip", true),
        (Operator::DoesNotContain, Some("wip: x"), "wip", false),
        (Operator::DoesNotContain, Some(""), "wip", false),
        (Operator::DoesNotContain, None, "", true),
        (Operator::In, Some("push"), "push, release", true),
        (Operator::In, Some("release"), "push, release", true),
        (Operator::In, Some("pull"), "push, release", false),
        (Operator::In, Some("a, b"), r#""a, b", c"#, true),
        (Operator::In, Some("a"), r#""a, b", c"#, false),
        (Operator::In, Some(r#"say "hi""#), r#""say ""hi""""#, true),
        (Operator::In, Some("release-1.2"), "push, release-.*", true),
        (Operator::In, Some("xrelease-1"), "push, release-.*", false),
        (Operator::In, Some("anything"), "", true),
        (Operator::In, None, "push", false),
        (Operator::In, Some(""), "push,", false),
        (Operator::In, Some(""), r#"push, """#, true),
        (Operator::In, Some("a(b"), "a(b, c", true),
        (Operator::NotIn, Some("pull"), "push, release", true),
        (Operator::NotIn, Some("push"), "push, release", false),
        (Operator::NotIn, Some("push"), "", true),
        (Operator::NotIn, Some("v2"), "v[0-9]", false),
        (
            Operator::Regex,
            Some("refs/heads/main"),
            "refs/heads/.*",
            true,
        ),
        (
            Operator::Regex,
            Some("xrefs/heads/main"),
            "refs/heads/.*",
            false,
        ),
        (Operator::Regex, Some("line1\nline2"), "line1.line2", true),
        (Operator::Regex, Some("anything"), "", true),
        (Operator::Regex, None, ".*", false),
        (Operator::Regex, Some(""), ".*", true),
        (Operator::Regex, Some("abc"), "b", false),
    ];

    #[test]
    fn the_operator_table_holds_row_by_row() {
        for (i, (op, input, value, expected)) in TABLE.iter().enumerate() {
            let input = input.map_or_else(missing, rendered);
            assert_eq!(
                Matcher::new(*op, value).unwrap().matches(&input, false),
                *expected,
                "row {i}: {op} input {:?} value {value:?}",
                input.text
            );
        }
    }

    #[test]
    fn in_items_split_on_commas_outside_quotes() {
        assert_eq!(in_items(" a , b ,c"), ["a", "b", "c"]);
        assert_eq!(in_items(r#""a,b", c"#), ["a,b", "c"]);
        assert_eq!(in_items(r#""x""y""#), [r#"x"y"#]);
        assert_eq!(in_items("a,,b,"), ["a", "b"]);
        assert_eq!(in_items(r#""""#), [""]);
        assert_eq!(in_items(r#"a"b, c"#), [r#"a"b"#, "c"]);
    }

    fn spec(conditions: &str) -> TriggerSpec {
        let text = format!(
            "trigger:\n  name: t\n  identifier: t\n  source:\n    type: Webhook\n    spec:\n      type: Custom\n      spec:\n{conditions}"
        );
        parse_trigger(&text, BodyFormat::Yaml).unwrap()
    }

    fn evaluate(spec: &TriggerSpec, payload: Value, headers: &[(&str, &str)]) -> Evaluation {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), (*v).to_owned()))
            .collect();
        let ctx = TriggerContext {
            payload: &payload,
            headers: &headers,
            event_id: "e",
            trigger_identifier: "t",
            pipeline_identifier: "p",
            pipeline_name: "P",
            execution_id: None,
        };
        CompiledConditions::compile(spec).unwrap().evaluate(&ctx)
    }

    const ALL_GROUPS: &str = "        payloadConditions:\n          - {key: '<+trigger.payload.ref>', operator: Equals, value: refs/heads/main}\n        headerConditions:\n          - {key: \"<+trigger.header['X-Event']>\", operator: In, value: 'push, release'}\n        jexlCondition: '<+trigger.payload.size> > 3'\n";

    #[test]
    fn all_groups_hold_and_every_result_is_recorded() {
        let e = evaluate(
            &spec(ALL_GROUPS),
            json!({"ref": "refs/heads/main", "size": 4}),
            &[("X-Event", "push")],
        );
        assert_eq!(e.outcome, Outcome::Matched);
        assert_eq!(e.message, None);
        assert_eq!(
            json_tree(&results_json(&e.results)),
            json!([
                {"type": "payload", "key": "<+trigger.payload.ref>", "operator": "Equals", "expected": "refs/heads/main", "actual": "refs/heads/main", "matched": true},
                {"type": "header", "key": "<+trigger.header['X-Event']>", "operator": "In", "expected": "push, release", "actual": "push", "matched": true},
                {"type": "jexl", "key": "<+trigger.payload.size> > 3", "operator": "JEXL", "expected": "true", "actual": "true", "matched": true}
            ])
        );
    }

    #[test]
    fn the_first_failing_group_sets_the_outcome_but_all_are_evaluated() {
        let s = spec(ALL_GROUPS);
        let e = evaluate(
            &s,
            json!({"ref": "refs/heads/dev", "size": 1}),
            &[("x-event", "pull")],
        );
        assert_eq!(e.outcome, Outcome::PayloadMismatch);
        assert_eq!(
            e.message.as_deref(),
            Some("Payload condition 1 of 1 did not match: <+trigger.payload.ref> Equals \"refs/heads/main\", actual \"refs/heads/dev\"")
        );
        assert_eq!(e.results.iter().filter(|r| !r.matched).count(), 3);

        let e = evaluate(&s, json!({"ref": "refs/heads/main", "size": 1}), &[]);
        assert_eq!(e.outcome, Outcome::HeaderMismatch);
        assert!(
            e.message
                .as_deref()
                .unwrap()
                .contains("actual missing (<+trigger.header['x-event']> is not in the webhook)"),
            "{:?}",
            e.message
        );
        assert_eq!(e.results[1].actual, None);

        let e = evaluate(
            &s,
            json!({"ref": "refs/heads/main", "size": 1}),
            &[("X-EVENT", "release")],
        );
        assert_eq!(e.outcome, Outcome::JexlMismatch);
        assert_eq!(
            e.message.as_deref(),
            Some("JEXL condition evaluated to false: <+trigger.payload.size> > 3")
        );
    }

    #[test]
    fn a_jexl_condition_that_is_not_boolean_or_fails_does_not_match_and_says_why() {
        let s = spec("        jexlCondition: '<+trigger.payload.name>'\n");
        let e = evaluate(&s, json!({"name": "api"}), &[]);
        assert_eq!(e.outcome, Outcome::JexlMismatch);
        assert_eq!(
            e.message.as_deref(),
            Some("JEXL condition did not evaluate to a boolean (got string api): <+trigger.payload.name>")
        );
        let s = spec("        jexlCondition: '<+trigger.payload.name>.contains(\"a\")'\n");
        let e = evaluate(&s, json!({}), &[]);
        assert_eq!(e.outcome, Outcome::JexlMismatch);
        let error = e.results[0].error.as_deref().unwrap();
        assert!(
            error.contains("cannot call .contains() on null (<+trigger.payload.name> is missing)"),
            "{error}"
        );
        assert!(e.message.unwrap().starts_with("JEXL condition failed: "));
    }

    #[test]
    fn long_actual_values_are_cut_at_a_character_boundary() {
        let s = spec("        payloadConditions:\n          - {key: '<+trigger.payload>', operator: Equals, value: x}\n");
        let long = "é".repeat(MAX_ACTUAL_BYTES);
        let e = evaluate(&s, json!(long), &[]);
        let actual = e.results[0].actual.as_deref().unwrap();
        assert!(actual.ends_with('…'), "{actual}");
        assert!(actual.len() <= MAX_ACTUAL_BYTES + '…'.len_utf8());
        assert!(long.starts_with(actual.trim_end_matches('…')));
    }

    #[test]
    fn conditions_on_secret_headers_are_masked_and_the_signature_header_counts_as_secret() {
        let mut s = spec("        headerConditions:\n          - {key: \"<+trigger.header['X-Sig']>\", operator: Equals, value: sig-value}\n");
        let shown = evaluate(&s, json!({}), &[("X-Sig", "sig-value")]);
        assert_eq!(
            shown.results[0].actual.as_deref(),
            Some("sig-value"),
            "not secret yet"
        );
        s.signature = Some(crate::domain::trigger::SignatureSpec {
            algorithm: crate::domain::trigger::SignatureAlgorithm::HmacSha256,
            header: "X-Sig".into(),
            secret: "a-secret-of-sixteen-chars".into(),
            prefix: String::new(),
        });
        let hidden = evaluate(&s, json!({}), &[("X-Sig", "other")]);
        assert_eq!(hidden.outcome, Outcome::HeaderMismatch);
        assert_eq!(hidden.results[0].expected, REDACTED);
        assert_eq!(hidden.results[0].actual.as_deref(), Some(REDACTED));
        let message = hidden.message.unwrap();
        assert!(
            !message.contains("sig-value") && !message.contains("other"),
            "{message}"
        );
        let matched = evaluate(&s, json!({}), &[("X-Sig", "sig-value")]);
        assert_eq!(matched.outcome, Outcome::Matched);
    }

    #[test]
    fn no_conditions_always_match() {
        let e = evaluate(&spec("        payloadConditions: []\n"), json!("raw"), &[]);
        assert_eq!(e.outcome, Outcome::Matched);
        assert!(e.results.is_empty());
    }

    #[test]
    fn save_time_errors_name_the_condition_and_column() {
        let cases = [
            (
                "        payloadConditions:\n          - {key: '<+trigger.payload.a(1)>', operator: Equals, value: x}\n",
                "payloadConditions[0]: key: unexpected '(' in reference; method calls belong in the jexlCondition, outside <+...> at column 20",
            ),
            (
                "        headerConditions:\n          - {key: '<+steps.a.output.b>', operator: Equals, value: x}\n",
                "headerConditions[0]: key: <+steps.a.output.b> is not known when a webhook arrives",
            ),
            (
                "        payloadConditions:\n          - {key: '<+trigger.payload.a>', operator: Regex, value: 'a(b'}\n",
                "payloadConditions[0]: value is not a usable regex: invalid regex: ",
            ),
            (
                "        jexlCondition: '<+trigger.payload.a> == '\n",
                "jexlCondition: expected a value, a reference or '(', found end of the expression at column 25",
            ),
            (
                "        jexlCondition: 'x == 1'\n",
                "jexlCondition: unknown name 'x'",
            ),
            (
                "        jexlCondition: '<+pipeline.variables.v> == 1'\n",
                "jexlCondition: <+pipeline.variables.v> is not known when a webhook arrives",
            ),
        ];
        for (conditions, expected) in cases {
            let text = format!(
                "trigger:\n  name: t\n  identifier: t\n  source:\n    type: Webhook\n    spec:\n      type: Custom\n      spec:\n{conditions}"
            );
            let error = parse_trigger(&text, BodyFormat::Yaml)
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with(expected),
                "{conditions}\n got: {error}\nwant: {expected}"
            );
        }
    }
}
