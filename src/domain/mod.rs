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
                if payload::nesting_depth(text) > payload::MAX_JSON_DEPTH {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_nesting_is_counted_outside_quotes_and_comments() {
        assert_eq!(payload::nesting_depth("a: [1, {b: [2]}]\n"), 3);
        assert_eq!(
            payload::nesting_depth("a: '[[[' # [[[\nb: \"{{\\\"[\"\n"),
            0
        );
        assert_eq!(payload::nesting_depth("a: 'it''s [x]'\n"), 0);
        let deep = format!("tags: {}{}\n", "[".repeat(200), "]".repeat(200));
        assert!(payload::nesting_depth(&deep) > payload::MAX_JSON_DEPTH);
        let err = BodyFormat::Yaml
            .parse::<serde_json::Value>(&deep)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nests deeper than 128 levels"), "{err}");
        let fine = format!("tags: {}{}\n", "[".repeat(100), "]".repeat(100));
        BodyFormat::Yaml.parse::<serde_json::Value>(&fine).unwrap();
    }
}
