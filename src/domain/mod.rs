//! Domain types and pure logic: identifiers, keys, triggers, pipelines, settings.
//! Nothing here does I/O; everything here is unit-tested next to the code.

pub mod event_rule;
pub mod ids;
pub mod matching;
pub mod payload;
pub mod pipeline;
pub mod ratelimit;
pub mod runtime_input;
pub mod settings;
pub mod signature;
pub mod trigger;

/// A problem with user-supplied input, with a message fit to show to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The input is invalid; the message says exactly what and where.
    #[error("{0}")]
    Invalid(String),
}

impl DomainError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

/// How a management request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`.
    Json,
    /// `application/yaml` (also `application/x-yaml`, `text/yaml`).
    Yaml,
}

impl BodyFormat {
    /// Parses `text` into `T`, mapping syntax errors to [`DomainError::Invalid`] with the position.
    pub fn parse<T: serde::de::DeserializeOwned>(self, text: &str) -> Result<T, DomainError> {
        match self {
            BodyFormat::Json => serde_json::from_str(text)
                .map_err(|e| DomainError::invalid(format!("Invalid JSON body: {e}"))),
            BodyFormat::Yaml => {
                // The YAML parser takes quadratic time on deep flow nesting (`[[[...]]]`):
                // refuse it before parsing, at the depth JSON bodies are held to.
                if yaml_flow_depth(text) > payload::MAX_JSON_DEPTH {
                    return Err(DomainError::invalid(format!(
                        "Invalid YAML body: it nests deeper than {} levels",
                        payload::MAX_JSON_DEPTH
                    )));
                }
                serde_yaml_ng::from_str(text)
                    .map_err(|e| DomainError::invalid(format!("Invalid YAML body: {e}")))
            }
        }
    }
}

/// The deepest nesting of YAML flow collections (`[` and `{`) outside quoted scalars and
/// comments; stops counting once past the limit. Brackets inside plain scalars count too,
/// which can only overstate the depth of documents no one writes by hand.
fn yaml_flow_depth(text: &str) -> usize {
    #[derive(PartialEq)]
    enum In {
        Plain,
        Single,
        Double { escaped: bool },
        Comment,
    }
    let (mut depth, mut max, mut state, mut previous) = (0usize, 0usize, In::Plain, b'\n');
    for b in text.bytes() {
        match &mut state {
            In::Single if b == b'\'' => state = In::Plain,
            In::Double { escaped: true } => state = In::Double { escaped: false },
            In::Double { escaped } if b == b'\\' => *escaped = true,
            In::Double { .. } if b == b'"' => state = In::Plain,
            In::Comment if b == b'\n' => state = In::Plain,
            In::Plain => match b {
                b'\'' => state = In::Single,
                b'"' => state = In::Double { escaped: false },
                b'#' if previous.is_ascii_whitespace() => state = In::Comment,
                b'[' | b'{' => {
                    depth += 1;
                    max = max.max(depth);
                    if max > payload::MAX_JSON_DEPTH {
                        return max;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            },
            _ => {}
        }
        previous = b;
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_nesting_is_counted_outside_quotes_and_comments() {
        assert_eq!(yaml_flow_depth("a: [1, {b: [2]}]\n"), 3);
        assert_eq!(yaml_flow_depth("a: '[[[' # [[[\nb: \"{{\\\"[\"\n"), 0);
        assert_eq!(yaml_flow_depth("a: 'it''s [x]'\n"), 0);
        let deep = format!("tags: {}{}\n", "[".repeat(200), "]".repeat(200));
        assert!(yaml_flow_depth(&deep) > payload::MAX_JSON_DEPTH);
        let err = BodyFormat::Yaml
            .parse::<serde_json::Value>(&deep)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nests deeper than 128 levels"), "{err}");
        let fine = format!("tags: {}{}\n", "[".repeat(100), "]".repeat(100));
        BodyFormat::Yaml.parse::<serde_json::Value>(&fine).unwrap();
    }
}
