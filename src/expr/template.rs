//! Text with `<+...>` references in it, such as a condition key `<+trigger.payload.ref>` or an
//! input value `v<+trigger.payload.version>`, parsed once and rendered to a string.

use serde_json::Value;

use super::reference::{parse_reference, reference_end};
use super::value::render;
use super::{ExprError, Reference, Resolver, MAX_EXPRESSION_BYTES};

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Reference(Reference),
}

/// A rendered template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The text, with each reference replaced by its value's text (`""` when missing).
    pub text: String,
    /// The first reference that did not resolve, if any.
    pub missing: Option<String>,
}

impl Template {
    /// Parses `text`; every `<+` must start a valid reference.
    pub fn parse(text: &str) -> Result<Self, ExprError> {
        if text.len() > MAX_EXPRESSION_BYTES {
            return Err(ExprError::at(
                text,
                0,
                format!(
                    "the expression is {} bytes long; at most {MAX_EXPRESSION_BYTES} are allowed",
                    text.len()
                ),
            ));
        }
        let mut parts = Vec::new();
        let mut at = 0;
        while let Some(found) = text[at..].find("<+") {
            let start = at + found;
            if start > at {
                parts.push(Part::Text(text[at..start].to_owned()));
            }
            let end = reference_end(text, start)?;
            parts.push(Part::Reference(parse_reference(text, start, end)?));
            at = end;
        }
        if at < text.len() {
            parts.push(Part::Text(text[at..].to_owned()));
        }
        Ok(Self { parts })
    }

    /// The references in the template, in order.
    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.parts.iter().filter_map(|p| match p {
            Part::Reference(r) => Some(r),
            Part::Text(_) => None,
        })
    }

    /// When the template is exactly one reference and nothing else, that reference.
    pub fn as_single_reference(&self) -> Option<&Reference> {
        match self.parts.as_slice() {
            [Part::Reference(r)] => Some(r),
            _ => None,
        }
    }

    /// Renders the template.
    pub fn render(&self, resolver: &dyn Resolver) -> Rendered {
        let mut text = String::new();
        let mut missing = None;
        for part in &self.parts {
            match part {
                Part::Text(t) => text.push_str(t),
                Part::Reference(r) => match resolver.resolve(r) {
                    Some(value) => text.push_str(&render(&value)),
                    None => {
                        if missing.is_none() {
                            missing = Some(r.to_string());
                        }
                    }
                },
            }
        }
        Rendered { text, missing }
    }

    /// Like [`Template::render`], but a lone reference keeps its JSON type (a number stays a
    /// number) instead of becoming text. `None` for a lone reference that is missing.
    pub fn render_value(&self, resolver: &dyn Resolver) -> Result<Value, String> {
        if let Some(reference) = self.as_single_reference() {
            return resolver
                .resolve(reference)
                .ok_or_else(|| reference.to_string());
        }
        let rendered = self.render(resolver);
        match rendered.missing {
            Some(reference) => Err(reference),
            None => Ok(Value::String(rendered.text)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Payload(Value);

    impl Resolver for Payload {
        fn resolve(&self, reference: &Reference) -> Option<Value> {
            match reference {
                Reference::Payload(path) => super::super::reference::lookup(&self.0, path).cloned(),
                _ => None,
            }
        }
    }

    #[test]
    fn text_and_references_render_together() {
        let t = Template::parse("v<+trigger.payload.major>.<+trigger.payload.minor> ok").unwrap();
        let r = t.render(&Payload(json!({"major": 1, "minor": "2"})));
        assert_eq!(r.text, "v1.2 ok");
        assert_eq!(r.missing, None);
    }

    #[test]
    fn missing_references_render_empty_and_are_reported() {
        let t = Template::parse("<+trigger.payload.a>-<+trigger.payload.b>").unwrap();
        let r = t.render(&Payload(json!({"b": true})));
        assert_eq!(r.text, "-true");
        assert_eq!(r.missing.as_deref(), Some("<+trigger.payload.a>"));
    }

    #[test]
    fn a_lone_reference_keeps_its_type() {
        let t = Template::parse("<+trigger.payload.n>").unwrap();
        assert_eq!(t.render_value(&Payload(json!({"n": 5}))), Ok(json!(5)));
        assert_eq!(
            t.render_value(&Payload(json!({}))),
            Err("<+trigger.payload.n>".to_owned())
        );
        let t = Template::parse("n=<+trigger.payload.n>").unwrap();
        assert_eq!(t.render_value(&Payload(json!({"n": 5}))), Ok(json!("n=5")));
    }

    #[test]
    fn text_without_references_is_kept_and_bad_references_fail_with_the_column() {
        assert_eq!(
            Template::parse("plain < text >")
                .unwrap()
                .render(&Payload(json!(null)))
                .text,
            "plain < text >"
        );
        let e = Template::parse("ab <+trigger.nope>").unwrap_err();
        assert_eq!(e.column, 4);
    }
}
