//! One delivery attempt (DESIGN §8): the signed request, sent through the SSRF guard without
//! following redirects, and what came back, as the attempt log keeps it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::guard::{check_url, AddressPolicy, GuardedResolver, ResolveError};
use super::signature;
use crate::domain::event_rule::{is_sensitive_header, AuthMode};
use crate::domain::payload::REDACTED;
use crate::error::ErrorChain;
use crate::store::outbound::{AttemptRecord, DeliveryRecord, EventRuleRecord};
use crate::store::{now_millis, Millis};

/// Most response body bytes kept in the attempt log.
pub const MAX_RESPONSE_BODY: usize = 16 * 1024;

/// What one attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// A 2xx.
    Delivered,
    /// `410 Gone`: the receiver wants no more.
    Gone,
    /// 429 or 503 with a `Retry-After` (seconds to wait).
    RetryAfter(u64),
    /// Anything else: another status, a timeout, a refused connection or address.
    Failed,
}

/// Sends deliveries: two HTTP clients (one that checks TLS certificates, one for rules with
/// `verifyTls: false`), both with the guarded resolver, no proxy and no redirects.
#[derive(Clone)]
pub struct Sender {
    verified: reqwest::Client,
    unverified: reqwest::Client,
    policy: Arc<AddressPolicy>,
    timeout: Duration,
}

impl Sender {
    /// Builds the clients.
    pub fn new(policy: Arc<AddressPolicy>, timeout: Duration) -> anyhow::Result<Self> {
        let build = |verify: bool| {
            reqwest::Client::builder()
                .dns_resolver(Arc::new(GuardedResolver::new(policy.clone())))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(10)))
                .danger_accept_invalid_certs(!verify)
                .pool_max_idle_per_host(64)
                .build()
        };
        Ok(Self {
            verified: build(true)?,
            unverified: build(false)?,
            policy,
            timeout,
        })
    }

    /// Makes attempt number `attempt` of `delivery` to `rule`'s URL; returns the attempt as
    /// logged (secrets masked) and what it means.
    pub async fn send(
        &self,
        rule: &EventRuleRecord,
        delivery: &DeliveryRecord,
        attempt: u32,
    ) -> (AttemptRecord, Response) {
        let started_at = now_millis();
        let clock = Instant::now();
        let (headers, shown) = request_headers(rule, delivery, started_at);
        let mut record = AttemptRecord {
            delivery_id: delivery.id.clone(),
            attempt,
            started_at,
            duration_ms: 0,
            url: rule.spec.url.clone(),
            request_headers: shown,
            response_status: None,
            response_headers: None,
            response_body: None,
            error: None,
        };
        let url = match reqwest::Url::parse(&rule.spec.url) {
            Ok(url) => url,
            Err(e) => {
                record.error = Some(format!("invalid url: {e}"));
                return (record, Response::Failed);
            }
        };
        if let Err(reason) = check_url(&self.policy, &url) {
            record.error = Some(format!("refused by the SSRF guard: {reason}"));
            return (record, Response::Failed);
        }
        let client = if rule.spec.verify_tls {
            &self.verified
        } else {
            &self.unverified
        };
        let sent = client
            .post(url)
            .headers(headers)
            .body(delivery.payload.clone())
            .send()
            .await;
        let outcome = match sent {
            Err(e) => {
                record.error = Some(describe(e, self.timeout));
                Response::Failed
            }
            Ok(mut response) => {
                let code = response.status().as_u16();
                record.response_status = Some(code);
                record.response_headers = Some(header_map(response.headers()));
                let retry_after = retry_after(response.headers());
                let mut body = Vec::new();
                loop {
                    match response.chunk().await {
                        Ok(Some(chunk)) => {
                            let room = MAX_RESPONSE_BODY - body.len();
                            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                            if body.len() >= MAX_RESPONSE_BODY {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            record.error = Some(format!(
                                "reading the response: {}",
                                describe(e, self.timeout)
                            ));
                            break;
                        }
                    }
                }
                record.response_body = Some(String::from_utf8_lossy(&body).into_owned());
                match code {
                    200..=299 => Response::Delivered,
                    410 => {
                        record.error = Some("410 Gone: the rule is disabled".into());
                        Response::Gone
                    }
                    429 | 503 => {
                        record.error = Some(format!("HTTP {code}"));
                        retry_after.map_or(Response::Failed, Response::RetryAfter)
                    }
                    300..=399 => {
                        record.error = Some(format!("HTTP {code}: redirects are not followed"));
                        Response::Failed
                    }
                    _ => {
                        record.error = Some(format!("HTTP {code}"));
                        Response::Failed
                    }
                }
            }
        };
        record.duration_ms = clock.elapsed().as_millis() as i64;
        (record, outcome)
    }
}

/// The request headers, and the same as a JSON object with every secret masked.
fn request_headers(
    rule: &EventRuleRecord,
    delivery: &DeliveryRecord,
    now: Millis,
) -> (HeaderMap, Value) {
    let mut headers = HeaderMap::new();
    let mut shown = Map::new();
    let mut add = |name: &str, value: &str, masked: Option<String>| {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
            shown.insert(
                name.to_owned(),
                Value::String(masked.unwrap_or_else(|| value.to_owned())),
            );
        }
    };
    for (name, value) in &rule.spec.headers {
        let masked = is_sensitive_header(name).then(|| REDACTED.to_owned());
        add(name, value, masked);
    }
    add("Content-Type", "application/json", None);
    add(
        "User-Agent",
        concat!("triggerd/", env!("CARGO_PKG_VERSION")),
        None,
    );
    add("X-Triggerd-Event", &delivery.event_type, None);
    let timestamp = now / 1000;
    add("webhook-id", &delivery.webhook_id, None);
    add("webhook-timestamp", &timestamp.to_string(), None);
    match rule.spec.auth.mode {
        AuthMode::Signature => {
            let secrets = rule.signing_secrets(now);
            let value = signature::header_value(
                secrets.iter().copied(),
                &delivery.webhook_id,
                timestamp,
                delivery.payload.as_bytes(),
            );
            let masked = vec!["v1,********"; secrets.len()].join(" ");
            add("webhook-signature", &value, Some(masked));
        }
        AuthMode::Token => add("X-Triggerd-Token", &rule.secret, Some(REDACTED.to_owned())),
        AuthMode::None => {}
    }
    (headers, Value::Object(shown))
}

/// Response headers as a JSON object (first value of each), secret-looking ones masked.
fn header_map(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for (name, value) in headers {
        let name = name.as_str();
        if map.contains_key(name) {
            continue;
        }
        let shown = if is_sensitive_header(name) {
            REDACTED.to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        map.insert(name.to_owned(), Value::String(shown));
    }
    Value::Object(map)
}

/// `Retry-After` in seconds: a number, or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<u64> {
    let text = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(secs);
    }
    let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    let secs = at.timestamp() - chrono::Utc::now().timestamp();
    Some(secs.max(0) as u64)
}

/// One line saying why a request failed, naming the SSRF guard when it refused the address.
fn describe(e: reqwest::Error, timeout: Duration) -> String {
    // Without the URL: webhook URLs often hold a secret in their path or query, and this text
    // is logged.
    let e = &e.without_url();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e as _);
    while let Some(err) = source {
        if let Some(refused) = err.downcast_ref::<ResolveError>() {
            return match refused {
                ResolveError::Refused { .. } => format!("refused by the SSRF guard: {refused}"),
                other => format!("DNS lookup failed: {other}"),
            };
        }
        source = err.source();
    }
    if e.is_timeout() {
        return format!("timed out after {} s", timeout.as_secs_f64());
    }
    ErrorChain(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(7));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        h.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let secs = retry_after(&h).unwrap();
        assert!((118..=120).contains(&secs), "{secs}");
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
