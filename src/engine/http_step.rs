//! Runs one Http step (DESIGN §6.1): a request with rustls, redirects not followed, success
//! judged by `expectedStatus` (default any 2xx), the response status and a bounded body kept as
//! the step's outputs `status` and `body`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use tokio_util::sync::CancellationToken;

use crate::error::ErrorChain;

/// Most response body bytes kept as the `body` output.
pub const MAX_BODY_OUTPUT: usize = 64 * 1024;

/// A resolved Http step.
#[derive(Debug)]
pub struct HttpRequest {
    /// Upper-case method.
    pub method: String,
    /// The URL, expressions resolved.
    pub url: String,
    /// Headers, expressions resolved.
    pub headers: Vec<(String, String)>,
    /// The body, expressions resolved.
    pub body: Option<String>,
    /// Statuses that count as success; empty means any 2xx.
    pub expected_status: Vec<u16>,
    /// The whole call's limit.
    pub timeout: Duration,
}

/// How the call went.
#[derive(Debug)]
pub struct HttpResult {
    /// The status was expected.
    pub ok: bool,
    /// One line: what was called and what came back, or why it failed.
    pub message: String,
    /// `status` and `body` (bounded), when a response came.
    pub outputs: BTreeMap<String, String>,
}

/// Makes the call; `abort` stops it.
pub async fn call(
    client: &reqwest::Client,
    req: HttpRequest,
    abort: CancellationToken,
) -> HttpResult {
    let failed = |message: String| HttpResult {
        ok: false,
        message,
        outputs: BTreeMap::new(),
    };
    let method = match Method::from_bytes(req.method.as_bytes()) {
        Ok(m) => m,
        Err(_) => return failed(format!("invalid method {}", req.method)),
    };
    let url = match reqwest::Url::parse(&req.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => u,
        _ => {
            return failed(format!(
                "the url {:?} is not an http(s) URL",
                crate::domain::ids::truncate_for_message(&req.url)
            ))
        }
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &req.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => {
                headers.append(n, v);
            }
            _ => return failed(format!("header {name} has a value that cannot be sent")),
        }
    }
    let mut builder = client
        .request(method, url.clone())
        .headers(headers)
        .timeout(req.timeout);
    if let Some(body) = req.body {
        builder = builder.body(body);
    }
    let started = Instant::now();
    let response = tokio::select! {
        () = abort.cancelled() => return failed("aborted".into()),
        r = builder.send() => r,
    };
    let response = match response {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return failed(format!(
                "{} {url} timed out after {:?}",
                req.method, req.timeout
            ))
        }
        Err(e) => return failed(format!("{} {url} failed: {}", req.method, ErrorChain(&e))),
    };
    let status = response.status().as_u16();
    let body = tokio::select! {
        () = abort.cancelled() => return failed("aborted".into()),
        b = read_bounded(response) => b,
    };
    let ok = if req.expected_status.is_empty() {
        (200..300).contains(&status)
    } else {
        req.expected_status.contains(&status)
    };
    let expected = if req.expected_status.is_empty() {
        "any 2xx".to_owned()
    } else {
        format!("{:?}", req.expected_status)
    };
    HttpResult {
        ok,
        message: format!(
            "{} {url} answered {status} in {} ms (expected {expected})",
            req.method,
            started.elapsed().as_millis()
        ),
        outputs: BTreeMap::from([
            ("status".to_owned(), status.to_string()),
            ("body".to_owned(), body),
        ]),
    }
}

/// The response body, at most [`MAX_BODY_OUTPUT`] bytes, as lossy UTF-8.
async fn read_bounded(mut response: reqwest::Response) -> String {
    let mut kept = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_BODY_OUTPUT - kept.len();
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if kept.len() >= MAX_BODY_OUTPUT {
            break;
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// The client Http steps share (built once: loading TLS roots is not free): rustls, no
/// redirects followed, no proxy taken from the environment.
pub fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default()
    })
}
