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

/// The format of a management body from its `Content-Type` (JSON when absent).
pub fn body_format(req: &HttpRequest) -> Result<BodyFormat, Error> {
    let Some(value) = req.headers().get(CONTENT_TYPE) else {
        return Ok(BodyFormat::Json);
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
        // curl -d sends form-urlencoded unless told otherwise; the body is JSON all the same.
        "application/json" | "text/json" | "application/x-www-form-urlencoded" => {
            Ok(BodyFormat::Json)
        }
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
            Ok(BodyFormat::Yaml)
        }
        other => Err(Error::UnsupportedMediaType(format!(
            "Unsupported Content-Type '{}': use application/json or application/yaml",
            crate::domain::ids::truncate_for_message(other)
        ))),
    }
}

/// Reads a management body as text in its declared format.
pub async fn read_text(
    req: &HttpRequest,
    payload: web::Payload,
    limits: BodyLimits,
) -> Result<(String, BodyFormat), Error> {
    let format = body_format(req)?;
    let bytes = read_limited(req, payload, limits).await?;
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
        Error::InvalidRequest("Invalid request: the body is not valid UTF-8".into())
    })?;
    Ok((text, format))
}

/// Like [`read_json`], but an empty body (what `curl -X POST` sends) is `T::default()`.
pub async fn read_optional_json<T: serde::de::DeserializeOwned + Default>(
    req: &HttpRequest,
    payload: web::Payload,
    limits: BodyLimits,
) -> Result<T, Error> {
    let (text, format) = read_text(req, payload, limits).await?;
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    Ok(format.parse(&text)?)
}

/// Reads and decodes a JSON (or YAML) management body into `T`.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    limits: BodyLimits,
) -> Result<T, Error> {
    let (text, format) = read_text(req, payload, limits).await?;
    Ok(format.parse(&text)?)
}
