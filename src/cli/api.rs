//! The client side of the REST API: one `reqwest` client, the envelope unwrapped, and every
//! failure turned into a [`CliError`] with the exit code DESIGN §13 gives it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::CliError;

/// A server and the key to present.
pub struct Api {
    base: url::Url,
    key: Option<String>,
    http: reqwest::Client,
}

/// A request body.
pub enum Body {
    /// No body.
    Empty,
    /// `application/json`.
    Json(Value),
    /// Raw bytes with their content type.
    Raw(&'static str, Vec<u8>),
}

/// A successful answer: status, headers and the envelope's `data` (or the text for
/// `text/plain` answers).
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// `data` of the envelope; `Value::String` for a text answer.
    pub data: Value,
}

/// The certificates in the PEM file `TRIGGERD_CA_CERT` names, trusted besides the public web
/// roots: for a server with a self-signed or private-CA certificate (`tls.cert`).
fn extra_roots() -> Result<Vec<reqwest::Certificate>, CliError> {
    let Some(path) = std::env::var_os("TRIGGERD_CA_CERT").filter(|p| !p.is_empty()) else {
        return Ok(Vec::new());
    };
    let shown = std::path::Path::new(&path).display().to_string();
    let pem = std::fs::read(&path)
        .map_err(|e| CliError::usage(format!("TRIGGERD_CA_CERT {shown}: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| CliError::usage(format!("TRIGGERD_CA_CERT {shown}: {e}")))?;
    if certs.is_empty() {
        return Err(CliError::usage(format!(
            "TRIGGERD_CA_CERT {shown}: no CERTIFICATE block in the file"
        )));
    }
    Ok(certs)
}

impl Api {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, key: Option<String>) -> Result<Self, CliError> {
        let mut base = url::Url::parse(base.trim_end_matches('/')).map_err(|e| {
            CliError::usage(format!(
                "'{base}' is not a server URL ({e}); write it like http://127.0.0.1:8080"
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(CliError::usage(format!(
                "'{base}' is not an http(s) server URL"
            )));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // X-Api-Key is not one of the headers reqwest drops on a redirect to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("triggerd-cli/", env!("CARGO_PKG_VERSION")));
        for cert in extra_roots()? {
            http = http.add_root_certificate(cert);
        }
        let http = http
            .build()
            .map_err(|e| CliError::usage(format!("building the HTTP client: {e}")))?;
        Ok(Self { base, key, http })
    }

    /// The server's base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The key in use, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The URL of `segments` (each percent-encoded) with `query` (empty values left out).
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        let query: Vec<_> = query.iter().filter(|(_, v)| !v.is_empty()).collect();
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends one request and unwraps the envelope. `headers` are extra request headers.
    pub async fn send(
        &self,
        method: Method,
        url: url::Url,
        body: Body,
        headers: &[(String, String)],
    ) -> Result<Answer, CliError> {
        let mut req = self.http.request(method, url.clone());
        if let Some(key) = &self.key {
            req = req.header("X-Api-Key", key);
        }
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req = match body {
            Body::Empty => req,
            Body::Json(v) => req.json(&v),
            Body::Raw(content_type, bytes) => req.header("content-type", content_type).body(bytes),
        };
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let is_json = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(&e))?;
        if !is_json {
            if status.is_success() {
                return Ok(Answer {
                    status,
                    headers,
                    data: Value::String(String::from_utf8_lossy(&bytes).into_owned()),
                });
            }
            let location = headers
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(|l| format!(" (redirected to {l}; use that URL)"))
                .unwrap_or_default();
            return Err(CliError::refused(format!(
                "{} answered {status}{location}",
                self.base()
            )));
        }
        let envelope: Value = serde_json::from_slice(&bytes).map_err(|e| {
            CliError::refused(format!("{} answered malformed JSON: {e}", self.base()))
        })?;
        if status.is_success() && envelope["status"] == "SUCCESS" {
            return Ok(Answer {
                status,
                headers,
                data: envelope.get("data").cloned().unwrap_or(Value::Null),
            });
        }
        Err(refusal(status, &envelope, self.key.is_some()))
    }

    /// `GET`s a text answer and hands each chunk to `sink` as it arrives (for `?follow=true`).
    pub async fn stream(&self, url: url::Url, mut sink: impl FnMut(&[u8])) -> Result<(), CliError> {
        let mut req = self.http.get(url);
        if let Some(key) = &self.key {
            req = req.header("X-Api-Key", key);
        }
        let mut resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let envelope: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(refusal(status, &envelope, self.key.is_some()));
        }
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.unreachable(&e))? {
            sink(&chunk);
        }
        Ok(())
    }

    /// `GET` the `data` of `segments`.
    pub async fn get(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Value, CliError> {
        Ok(self
            .send(Method::GET, self.url(segments, query), Body::Empty, &[])
            .await?
            .data)
    }

    /// Every item of a paged list, following `nextCursor` (at most `max` items; 0 = all).
    pub async fn list(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        max: usize,
    ) -> Result<Vec<Value>, CliError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q: Vec<(&str, &str)> = query.to_vec();
            let limit = if max == 0 {
                500
            } else {
                (max - items.len()).min(500)
            }
            .to_string();
            q.push(("limit", &limit));
            if let Some(c) = &cursor {
                q.push(("cursor", c));
            }
            let page = self.get(segments, &q).await?;
            if let Some(content) = page["content"].as_array() {
                items.extend(content.iter().cloned());
            }
            cursor = page["nextCursor"].as_str().map(str::to_owned);
            if cursor.is_none() || (max != 0 && items.len() >= max) {
                return Ok(items);
            }
        }
    }

    /// `POST` JSON (or nothing) to `segments`.
    pub async fn post(&self, segments: &[&str], body: Option<Value>) -> Result<Value, CliError> {
        let body = body.map_or(Body::Empty, Body::Json);
        Ok(self
            .send(Method::POST, self.url(segments, &[]), body, &[])
            .await?
            .data)
    }

    fn unreachable(&self, e: &reqwest::Error) -> CliError {
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        let hint = if cause.contains("certificate") {
            "; for a self-signed or private-CA certificate, set TRIGGERD_CA_CERT to its PEM file"
        } else {
            ""
        };
        CliError::usage(format!("cannot reach {}: {cause}{hint}", self.base()))
    }
}

/// The one-line error for an error envelope.
fn refusal(status: StatusCode, envelope: &Value, sent_key: bool) -> CliError {
    let code = envelope["code"].as_str().unwrap_or("ERROR");
    let message = envelope["message"]
        .as_str()
        .map_or_else(|| format!("HTTP {status}"), str::to_owned);
    let hint = match status {
        StatusCode::UNAUTHORIZED if sent_key => {
            " (the key was refused: run `triggerd login` again or check TRIGGERD_API_KEY)"
        }
        StatusCode::UNAUTHORIZED => " (no API key: run `triggerd login` or set TRIGGERD_API_KEY)",
        _ => "",
    };
    CliError::refused(format!("{code}: {message}{hint}"))
}
