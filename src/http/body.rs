//! Request bodies: read with the size limit enforced while streaming, and decoded by
//! `Content-Type`.

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::domain::BodyFormat;
use crate::error::Error;
use crate::service::BodyLimits;

fn too_large(limit: usize) -> Error {
    Error::PayloadTooLarge(format!(
        "Payload too large: the body exceeds the limit of {limit} bytes"
    ))
}

/// Reads the whole body, failing with 413 as soon as it passes `limits.max_bytes` bytes (a
/// too-large `Content-Length` fails before anything is read), and with 408 when it has not
/// arrived within `limits.deadline` (a sender trickling bytes holds no connection for longer).
pub async fn read_limited(
    req: &HttpRequest,
    payload: web::Payload,
    limits: BodyLimits,
) -> Result<Bytes, Error> {
    tokio::time::timeout(limits.deadline, read_within(req, payload, limits.max_bytes))
        .await
        .unwrap_or_else(|_| {
            Err(Error::RequestTimeout(format!(
                "Request timeout: the body did not arrive within {}",
                crate::domain::pipeline::format_duration(limits.deadline)
            )))
        })
}

async fn read_within(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, Error> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    // Reserve at most 64 KiB up front: a declared length costs nothing to send.
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(limit).min(64 * 1024));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            Error::InvalidRequest(format!("Invalid request: could not read the body: {e}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// What a management body's `Content-Type` says about its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    /// `application/json` (or `text/json`).
    Json,
    /// `application/yaml` and its aliases.
    Yaml,
    /// Nothing useful: no `Content-Type`, or what `curl -d` and `--data-binary` send unless
    /// told otherwise (`application/x-www-form-urlencoded`, `text/plain`).
    Unsaid,
}

/// Reads the `Content-Type` of a management body; a type that is neither JSON, YAML nor one of
/// the unsaid ones is 415.
fn declared_format(req: &HttpRequest) -> Result<Declared, Error> {
    let Some(value) = req.headers().get(CONTENT_TYPE) else {
        return Ok(Declared::Unsaid);
    };
    let mime = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" | "text/json" => Ok(Declared::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
            Ok(Declared::Yaml)
        }
        "" | "application/x-www-form-urlencoded" | "text/plain" => Ok(Declared::Unsaid),
        other => Err(Error::UnsupportedMediaType(format!(
            "Unsupported Content-Type '{}': use application/json or application/yaml",
            crate::domain::ids::truncate_for_message(other)
        ))),
    }
}

/// The format to read `text` in: the declared one, or for an unsaid one, JSON when the body
/// opens like JSON (`{` or `[`) and YAML otherwise (`pipeline:`, `---`, a comment), so that
/// `curl --data-binary @pipeline.yaml` works without a `Content-Type`.
fn chosen_format(declared: Declared, text: &str) -> BodyFormat {
    match declared {
        Declared::Json => BodyFormat::Json,
        Declared::Yaml => BodyFormat::Yaml,
        Declared::Unsaid => {
            let opening = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
            if opening.starts_with(['{', '[']) {
                BodyFormat::Json
            } else {
                BodyFormat::Yaml
            }
        }
    }
}

/// Fails with the JSON syntax error of `text`, if it has one. When the body would have been
/// accepted as a YAML mapping, the message says how to send YAML. Whether the document has the
/// right shape is left to whoever decodes it.
fn check_json_syntax(text: &str) -> Result<(), Error> {
    let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) else {
        return Ok(());
    };
    let reads_as_yaml = BodyFormat::Yaml
        .parse::<serde_json::Value>(text)
        .is_ok_and(|v| v.is_object());
    let hint = if reads_as_yaml {
        "; the body reads as YAML: to send YAML, use Content-Type: application/yaml"
    } else {
        ""
    };
    Err(Error::InvalidRequest(format!(
        "Invalid JSON body: {e}{hint}"
    )))
}

/// Reads a management body as text, and the format to decode it in.
async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limits: BodyLimits,
) -> Result<(String, BodyFormat), Error> {
    let declared = declared_format(req)?;
    let bytes = read_limited(req, payload, limits).await?;
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
        Error::InvalidRequest("Invalid request: the body is not valid UTF-8".into())
    })?;
    let format = chosen_format(declared, &text);
    Ok((text, format))
}

/// Reads a management body as text in its declared (or, without a declaration, its evident)
/// format, for the caller to decode. A body to be read as JSON that is not JSON fails here,
/// with a hint for YAML.
pub async fn read_text(
    req: &HttpRequest,
    payload: web::Payload,
    limits: BodyLimits,
) -> Result<(String, BodyFormat), Error> {
    let (text, format) = read_body(req, payload, limits).await?;
    if format == BodyFormat::Json {
        check_json_syntax(&text)?;
    }
    Ok((text, format))
}

/// Decodes `text` into `T`; a JSON syntax error carries the hint for YAML. The body must be an
/// object: serde also fills a struct from an array of its fields in order, so `[null]` would
/// otherwise pass for `{}`.
fn decode<T: serde::de::DeserializeOwned>(text: &str, format: BodyFormat) -> Result<T, Error> {
    let value = format.parse(text).map_err(|e| {
        if format == BodyFormat::Json {
            if let Err(syntax) = check_json_syntax(text) {
                return syntax;
            }
        }
        Error::from(e)
    })?;
    let is_object = match format {
        BodyFormat::Json => text.trim_start().starts_with('{'),
        BodyFormat::Yaml => format
            .parse::<serde_json::Value>(text)
            .is_ok_and(|v| v.is_object()),
    };
    if !is_object {
        return Err(Error::InvalidRequest(
            "Invalid request: the body must be an object ({...})".into(),
        ));
    }
    Ok(value)
}

/// Like [`read_json`], but an empty body (what `curl -X POST` sends), JSON `null` or an empty
/// YAML document is `T::default()`. A body declared as JSON that holds only whitespace is not
/// JSON, and fails as any other malformed JSON does.
pub async fn read_optional_json<T: serde::de::DeserializeOwned + Default>(
    req: &HttpRequest,
    payload: web::Payload,
    limits: BodyLimits,
) -> Result<T, Error> {
    let (text, format) = read_body(req, payload, limits).await?;
    // No body, JSON `null` or an empty YAML document is the same as an empty object: every
    // field takes its default.
    let empty = match format {
        BodyFormat::Json => text.is_empty() || text.trim() == "null",
        BodyFormat::Yaml => text.trim().is_empty(),
    };
    if empty {
        return Ok(T::default());
    }
    decode(&text, format)
}

/// Reads and decodes a JSON (or YAML) management body into `T`.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    limits: BodyLimits,
) -> Result<T, Error> {
    let (text, format) = read_body(req, payload, limits).await?;
    decode(&text, format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undeclared_body_is_json_when_it_opens_like_json_and_yaml_otherwise() {
        for (text, format) in [
            ("{\"pipeline\":{}}", BodyFormat::Json),
            ("  \n[1]", BodyFormat::Json),
            ("\u{feff}{}", BodyFormat::Json),
            ("pipeline:\n  name: x\n", BodyFormat::Yaml),
            ("---\npipeline: {}\n", BodyFormat::Yaml),
            ("# comment\n{}", BodyFormat::Yaml),
            ("", BodyFormat::Yaml),
        ] {
            assert_eq!(chosen_format(Declared::Unsaid, text), format, "{text:?}");
        }
        assert_eq!(chosen_format(Declared::Json, "a: 1"), BodyFormat::Json);
        assert_eq!(chosen_format(Declared::Yaml, "{}"), BodyFormat::Yaml);
    }

    #[test]
    fn a_json_syntax_error_hints_at_yaml_only_when_the_body_reads_as_yaml() {
        assert!(check_json_syntax("{\"a\": [1, 2]}").is_ok());
        let yaml = check_json_syntax("pipeline:\n  name: x\n")
            .unwrap_err()
            .to_string();
        assert!(
            yaml.starts_with("Invalid JSON body: expected value at line 1 column 1"),
            "{yaml}"
        );
        assert!(
            yaml.ends_with(
                "; the body reads as YAML: to send YAML, use Content-Type: application/yaml"
            ),
            "{yaml}"
        );
        for broken in ["{\"a\": ", "just words", "[[[[", "{\"a\": 1,}x"] {
            let message = check_json_syntax(broken).unwrap_err().to_string();
            assert!(!message.contains("YAML"), "{broken:?}: {message}");
        }
    }
}
