//! Text with `<+...>` references in it, such as a condition key `<+trigger.payload.ref>` or an
//! input value `v<+trigger.payload.version>`, parsed once and rendered to a string.

use serde_json::Value;

use super::reference::{parse_reference, reference_end};
use super::value::render;
use super::{ExprError, Reference, Resolver, MAX_EXPRESSION_BYTES};

/// What a value put into a URL is encoded to: everything but the unreserved characters.
const URL_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

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
        self.render_with(resolver, |text, value, _| text.push_str(value))
    }

    /// Renders with `put` writing each resolved value's text into the output so far (with the
    /// reference it came from).
    fn render_with<'a>(
        &'a self,
        resolver: &dyn Resolver,
        mut put: impl FnMut(&mut String, &str, &'a Reference),
    ) -> Rendered {
        let mut text = String::new();
        let mut missing = None;
        for part in &self.parts {
            match part {
                Part::Text(t) => text.push_str(t),
                Part::Reference(r) => match resolver.resolve(r) {
                    Some(value) => put(&mut text, &render(&value), r),
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

    /// Renders a URL template: each value is percent-encoded for the component it lands in (a
    /// path segment, a query value or the fragment: everything but `A-Z a-z 0-9 - . _ ~`), so a
    /// webhook sender can neither add path segments, query parameters or a fragment, nor climb
    /// the path: a value that makes a whole segment `.` or `..` (which URL parsers resolve
    /// away, encoded or not) is refused with the reason.
    pub fn render_url(&self, resolver: &dyn Resolver) -> Result<Rendered, String> {
        let mut in_path = Vec::new();
        let rendered = self.render_with(resolver, |text, value, reference| {
            let start = text.len();
            text.extend(percent_encoding::utf8_percent_encode(value, URL_VALUE));
            if !text[..start].contains(['?', '#']) {
                in_path.push((start, reference));
            }
        });
        let text = &rendered.text;
        for (at, reference) in in_path {
            let start = text[..at].rfind('/').map_or(0, |i| i + 1);
            let end = text[at..]
                .find(['/', '?', '#'])
                .map_or(text.len(), |i| at + i);
            let segment = text[start..end].to_ascii_lowercase().replace("%2e", ".");
            if segment == "." || segment == ".." {
                return Err(format!(
                    "the value of {reference} makes the URL path segment '{}', which would climb the path",
                    &text[start..end]
                ));
            }
        }
        Ok(rendered)
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
    fn values_in_a_url_are_encoded_for_where_they_land_and_cannot_climb_the_path() {
        let payload = Payload(
            json!({"p": "../../admin", "q": "a&b=c#frag", "dots": "..", "dot": ".", "u": "ü x"}),
        );
        let url = |t: &str| Template::parse(t).unwrap().render_url(&payload);

        assert_eq!(
            url("http://h/in/<+trigger.payload.p>?q=<+trigger.payload.q>")
                .unwrap()
                .text,
            "http://h/in/..%2F..%2Fadmin?q=a%26b%3Dc%23frag"
        );
        assert_eq!(
            url("http://h/<+trigger.payload.u>").unwrap().text,
            "http://h/%C3%BC%20x"
        );
        let climbing = url("http://h/in/<+trigger.payload.dots>/x").unwrap_err();
        assert!(climbing.contains("climb the path"), "{climbing}");
        assert!(
            url("http://h/in/.<+trigger.payload.dot>").is_err(),
            "'.' then '.' is '..'"
        );
        assert!(
            url("http://h/in/.<+trigger.payload.dots>").is_ok(),
            "'...' is a name"
        );
        assert!(url("http://h/in/x<+trigger.payload.dots>").is_ok());
        assert!(
            url("http://h/in?d=<+trigger.payload.dots>").is_ok(),
            "dots in a query value"
        );
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
