//! A minimal receiver for triggerd's outbound events, meant to be copied into your own project.
//!
//! It verifies the Standard Webhooks signature of every POST (any path), rejects stale or
//! replayed deliveries, ignores duplicates (delivery is at-least-once) and prints one line per
//! event. Run it next to triggerd:
//!
//! ```text
//! cargo run --example receiver -- --secret whsec_...
//! ```
//!
//! then point the outbound rule's `url` at `http://127.0.0.1:8787/events`. triggerd refuses
//! loopback targets unless `outbound.allowed_cidrs = ["127.0.0.0/8"]` is configured (which
//! `triggerd serve --demo` does). Without `--secret` (or `TRIGGERD_SIGNING_SECRET`) every
//! request is accepted unchecked: only do that for local experiments.
//!
//! Dependencies: actix-web 4, serde_json, hmac 0.12, sha2 0.10, base64 0.22, subtle 2, chrono,
//! clap 4 (features `derive`, `env`).

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use clap::Parser;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

const MAX_BODY_BYTES: usize = 1024 * 1024;
const SEEN_CAPACITY: usize = 10_000;

#[derive(Parser, Debug)]
#[command(about = "Receive and verify triggerd's signed outbound events")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "RECEIVER_LISTEN", default_value = "127.0.0.1:8787")]
    listen: String,
    /// The rule's signing secret (`whsec_...`). Without it signatures are NOT checked.
    #[arg(long, env = "TRIGGERD_SIGNING_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Accept `webhook-timestamp` values at most this many seconds from now.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(i64).range(0..))]
    tolerance_secs: i64,
    /// Print each event's full body instead of a one-line summary.
    #[arg(long)]
    json: bool,
}

/// Why a delivery was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    MissingHeader(&'static str),
    BadTimestamp,
    StaleTimestamp,
    BadSignature,
}

impl Rejection {
    fn response(&self) -> HttpResponse {
        match self {
            Self::MissingHeader(h) => HttpResponse::BadRequest().body(format!("missing {h}\n")),
            Self::BadTimestamp => HttpResponse::BadRequest().body("invalid webhook-timestamp\n"),
            Self::StaleTimestamp => HttpResponse::BadRequest().body("stale webhook-timestamp\n"),
            Self::BadSignature => HttpResponse::Unauthorized().body("invalid signature\n"),
        }
    }
}

/// Checks a Standard Webhooks signature: HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed with
/// the base64 after `whsec_`. `signatures` is the space-separated `v1,<base64>` list; any one
/// match suffices. The timestamp must be within `tolerance` seconds of `now_unix`.
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now_unix: i64,
    tolerance: i64,
) -> Result<(), Rejection> {
    let ts: i64 = timestamp.parse().map_err(|_| Rejection::BadTimestamp)?;
    if now_unix.abs_diff(ts) > tolerance.unsigned_abs() {
        return Err(Rejection::StaleTimestamp);
    }
    // Like triggerd's signer, fall back to the raw secret if it is not `whsec_<base64>`.
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = STANDARD
        .decode(encoded)
        .unwrap_or_else(|_| secret.as_bytes().to_vec());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| Rejection::BadSignature)?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = mac.finalize().into_bytes();

    signatures
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|sig| bool::from(sig.as_slice().ct_eq(expected.as_slice())))
        .then_some(())
        .ok_or(Rejection::BadSignature)
}

/// The most recent webhook-ids, bounded to `SEEN_CAPACITY` (oldest forgotten first).
#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// Records `id`; false if it was already present.
    fn insert(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() >= SEEN_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        self.ids.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

struct State {
    args: Args,
    seen: Mutex<Seen>,
}

fn header<'a>(req: &'a HttpRequest, name: &'static str) -> Result<&'a str, Rejection> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or(Rejection::MissingHeader(name))
}

/// `pipeline=deploy stage=build execution=... status=SUCCESS` from the body's `data`.
fn summary(event: &Value) -> String {
    let data = &event["data"];
    [
        ("pipeline", &data["pipeline"]["id"]),
        ("stage", &data["stage"]["id"]),
        ("execution", &data["executionId"]),
        ("status", &data["status"]),
    ]
    .iter()
    .filter_map(|(label, v)| v.as_str().map(|s| format!("{label}={s}")))
    .collect::<Vec<_>>()
    .join(" ")
}

/// Verifies the delivery's headers against `secret`; the webhook-id on success.
fn authenticate<'a>(
    req: &'a HttpRequest,
    body: &[u8],
    secret: &str,
    tolerance: i64,
) -> Result<&'a str, Rejection> {
    let id = header(req, "webhook-id")?;
    let ts = header(req, "webhook-timestamp")?;
    let sigs = header(req, "webhook-signature")?;
    let now = chrono::Utc::now().timestamp();
    verify(secret, id, ts, sigs, body, now, tolerance)?;
    Ok(id)
}

async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let id = match &state.args.secret {
        Some(secret) => match authenticate(&req, &body, secret, state.args.tolerance_secs) {
            Ok(id) => Some(id),
            Err(rejection) => {
                eprintln!("rejected: {rejection:?}");
                return rejection.response();
            }
        },
        None => header(&req, "webhook-id").ok(),
    };
    if let Some(id) = id {
        let fresh = state
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
        if !fresh {
            println!("duplicate {id} ignored");
            return HttpResponse::Ok().body("ok");
        }
    }

    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let event_type = header(&req, "x-triggerd-event")
        .ok()
        .or_else(|| parsed.as_ref().and_then(|v| v["eventType"].as_str()))
        .unwrap_or("-");
    let details = match (&parsed, state.args.json) {
        (_, true) => String::from_utf8_lossy(&body).into_owned(),
        (Some(event), false) => summary(event),
        (None, false) => format!("(non-JSON body, {} bytes)", body.len()),
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    println!("{now} {event_type} {} {details}", id.unwrap_or("-"));
    HttpResponse::Ok().body("ok")
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if args.secret.is_none() {
        eprintln!("WARNING: no --secret / TRIGGERD_SIGNING_SECRET: signatures are NOT checked");
    }
    let listen = args.listen.clone();
    let seen = Mutex::new(Seen::default());
    let state = web::Data::new(State { args, seen });
    eprintln!("listening on http://{listen}");
    HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            // Any path; other methods get 405 from the router.
            .service(web::resource("/{path:.*}").route(web::post().to(receive)))
    })
    .bind(listen)?
    .run()
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn check(sigs: &str, body: &[u8], now: i64) -> Result<(), Rejection> {
        verify(SECRET, ID, &TS.to_string(), sigs, body, now, 300)
    }

    #[test]
    fn accepts_the_standard_webhooks_reference_vector() {
        assert_eq!(check(SIG, BODY, TS), Ok(()));
    }

    #[test]
    fn any_matching_signature_in_the_list_suffices() {
        let wrong = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert_eq!(check(&format!("{wrong} {SIG}"), BODY, TS), Ok(()));
        assert_eq!(check(wrong, BODY, TS), Err(Rejection::BadSignature));
        assert_eq!(
            check("v2,garbage nonsense", BODY, TS),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn rejects_a_tampered_body() {
        assert_eq!(
            check(SIG, br#"{"test": 2432232315}"#, TS),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn rejects_timestamps_outside_tolerance() {
        assert_eq!(check(SIG, BODY, TS + 301), Err(Rejection::StaleTimestamp));
        assert_eq!(check(SIG, BODY, TS - 301), Err(Rejection::StaleTimestamp));
        assert_eq!(check(SIG, BODY, TS + 300), Ok(()));
        let bad = verify(SECRET, ID, "yesterday", SIG, BODY, TS, 300);
        assert_eq!(bad, Err(Rejection::BadTimestamp));
    }

    #[test]
    fn remembers_a_bounded_number_of_ids() {
        let mut seen = Seen::default();
        assert!(seen.insert("a"));
        assert!(!seen.insert("a"));
        for i in 0..SEEN_CAPACITY {
            seen.insert(&i.to_string());
        }
        assert_eq!(seen.order.len(), SEEN_CAPACITY);
        assert!(seen.insert("a"), "the oldest id is forgotten");
    }
}
