//! No secret leaves the server: not in stored headers, status output, API listings, error
//! messages, nor the logs (DESIGN §1, §2.3, §7).

use std::time::Duration;

use rand::distributions::{Alphanumeric, DistString};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

use crate::durability::{made_up_root_key, set_up_trigger, Daemon};
use crate::helpers::{assert_error, spawn_app, success_data, trigger_yaml, TestApp, TestTrigger};

/// The part of a `pat.<acc>.<keyId>.<secret>` key after the last dot.
fn secret_part(key: &str) -> &str {
    key.rsplit('.').next().expect("a key")
}

/// The same key id with a different, well-formed secret.
fn forged(key: &str) -> String {
    let (prefix, _) = key.rsplit_once('.').expect("a key");
    format!(
        "{prefix}.{}",
        Alphanumeric.sample_string(&mut rand::thread_rng(), 32)
    )
}

const BEARER: &str = "s3cr3t-value";
const SIGNATURE: &str = "sha256=5f1c0d2e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";
const COOKIE: &str = "session=c00kie-value";
const GITLAB_TOKEN: &str = "gl-t0ken-value";

/// An intake request carrying every kind of secret header, plus one ordinary header.
fn with_secret_headers(req: RequestBuilder, key: &str) -> RequestBuilder {
    req.header("content-type", "application/json")
        .header("X-Api-Key", key)
        .header("Authorization", format!("Bearer {BEARER}"))
        .header("X-Hub-Signature-256", SIGNATURE)
        .header("Cookie", COOKIE)
        .header("X-Gitlab-Token", GITLAB_TOKEN)
        .header("X-Auth-Password", "pa55word-value")
        .header("X-Private-Key", "pr1vate-value")
        .header("X-Credential", "cred-value")
        .header("X-Session-Id", "sess10n-value")
        .header("Idempotency-Key", "not-a-secret")
        .header("X-Event", "push")
}

/// Fires `t` with the secret headers and `key`; returns the eventCorrelationId.
async fn fire_with_secrets(app: &TestApp, t: &TestTrigger, key: &str) -> String {
    let res = with_secret_headers(app.request(Method::POST, &t.v3_path()), key)
        .body(r#"{"ref":"main"}"#)
        .send()
        .await
        .expect("request");
    success_data(res).await["eventCorrelationId"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// `text` without ANSI colour sequences (`ESC [ ... letter`), so that a secret split by colouring
/// would still be found.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn assert_free_of(text: &str, secrets: &[&str], place: &str) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "{place} must not contain {secret:?}:\n{text}"
        );
    }
}

#[tokio::test]
async fn stored_headers_show_secret_values_masked() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    fire_with_secrets(&app, &t, &t.admin_key).await;

    let res = app
        .with_key(
            Method::GET,
            &format!("{}/webhookevents", t.project_path()),
            &app.root_key,
        )
        .send()
        .await
        .expect("request");

    let text = res.text().await.expect("text");
    let body: Value = serde_json::from_str(&text).expect("json");
    let headers = &body["data"]["content"][0]["headers"];
    for name in [
        "x-api-key",
        "authorization",
        "x-hub-signature-256",
        "cookie",
        "x-gitlab-token",
        "x-auth-password",
        "x-private-key",
        "x-credential",
        "x-session-id",
    ] {
        assert_eq!(headers[name], "********", "{name} in {headers}");
    }
    assert_eq!(headers["x-event"], "push", "ordinary headers are kept");
    assert_eq!(headers["idempotency-key"], "not-a-secret");
    assert_free_of(
        &text,
        &[
            &t.admin_key,
            secret_part(&t.admin_key),
            BEARER,
            SIGNATURE,
            "c00kie-value",
            GITLAB_TOKEN,
            "pa55word-value",
            "pr1vate-value",
            "cred-value",
            "sess10n-value",
        ],
        "the webhook event list",
    );
}

#[tokio::test]
async fn the_status_output_shows_no_secret_header_value() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let id = fire_with_secrets(&app, &t, &t.admin_key).await;

    let res = app.get_status(&id, &t.account, Some(&t.admin_key)).await;

    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("text");
    assert!(text.contains(&id), "the status of the event: {text}");
    assert_free_of(
        &text,
        &[
            &t.admin_key,
            secret_part(&t.admin_key),
            BEARER,
            SIGNATURE,
            "c00kie-value",
            GITLAB_TOKEN,
        ],
        "the status output",
    );
}

#[tokio::test]
async fn a_refused_key_is_not_echoed_in_the_error() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let wrong = forged(&t.admin_key);

    let intake = app.post_webhook(&t.v3_path(), Some(&wrong), "{}").await;
    let management = app
        .with_key(Method::GET, "/api/v1/accounts/acc", &wrong)
        .send()
        .await
        .expect("request");

    for res in [intake, management] {
        let body = assert_error(res, 401, "INVALID_TOKEN", "Invalid token").await;
        assert_free_of(&body.to_string(), &[secret_part(&wrong)], "a 401 envelope");
    }
}

#[tokio::test]
async fn the_api_key_list_never_returns_a_secret_or_a_hash() {
    let app = spawn_app().await;
    app.create_account("acc").await;
    let admin = app.create_key("acc", "admin", None).await;
    let executor = app
        .create_key("acc", "executor", Some(vec!["default/proj"]))
        .await;

    let res = app
        .with_key(Method::GET, "/api/v1/accounts/acc/apikeys", &admin)
        .send()
        .await
        .expect("request");

    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("text");
    assert_free_of(
        &text,
        &[
            &admin,
            secret_part(&admin),
            &executor,
            secret_part(&executor),
            "$argon2",
        ],
        "the API key list",
    );
    let body: Value = serde_json::from_str(&text).expect("json");
    let items = body["data"]["content"].as_array().expect("content");
    assert_eq!(items.len(), 2);
    for item in items {
        let id = item["identifier"].as_str().expect("identifier");
        assert!(admin.contains(id) || executor.contains(id), "{item}");
        assert!(item.get("key").is_none(), "no key field: {item}");
        assert!(item.get("hash").is_none(), "no hash field: {item}");
    }
}

#[tokio::test]
async fn a_trigger_signature_secret_is_never_returned() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let secret = "whsec-only-the-sender-knows-this";
    let yaml = format!(
        "{}  signature:\n    type: hmac-sha256\n    header: X-Hub-Signature-256\n    secret: {secret}\n    prefix: \"sha256=\"\n",
        trigger_yaml("on_push")
    );

    let put = app.put_trigger_yaml(&t, &yaml).await;
    assert_eq!(put.status(), 200, "an update of the existing trigger");
    let put_text = put.text().await.expect("text");
    let get = app
        .with_key(Method::GET, &t.trigger_path(), &app.root_key)
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    let list = app
        .with_key(
            Method::GET,
            &format!("{}/pipelines/{}/triggers", t.project_path(), t.pipeline),
            &app.root_key,
        )
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");

    for (place, text) in [("PUT", &put_text), ("GET", &get), ("list", &list)] {
        assert_free_of(text, &[secret], place);
    }
    let body: Value = serde_json::from_str(&get).expect("json");
    assert_eq!(
        body["data"]["spec"]["trigger"]["signature"]["secret"], "********",
        "{body}"
    );
    assert!(
        !body["data"]["yaml"].as_str().unwrap_or("").contains(secret),
        "yaml: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logs_never_contain_keys_tokens_or_secret_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = made_up_root_key();
    let mut daemon = Daemon::start(
        dir.path(),
        "logs",
        &[],
        &[
            ("TRIGGERD_ROOT_KEY", root.as_str()),
            ("TRIGGERD_LOG__LEVEL", "debug"),
        ],
    )
    .await;
    let t = set_up_trigger(&daemon, &root).await;
    let wrong = forged(&t.admin_key);
    let intake = |key: &str| {
        with_secret_headers(daemon.request(Method::POST, &t.v3_path), key)
            .body(r#"{"ref":"main"}"#)
            .send()
    };

    let valid = intake(&t.admin_key).await.expect("request");
    let invalid = intake(&wrong).await.expect("request");
    let wrong_management = daemon
        .request(Method::GET, "/api/v1/accounts/acc/apikeys")
        .header("X-Api-Key", &wrong)
        .send()
        .await
        .expect("request");
    let unknown_route = daemon
        .request(Method::GET, &format!("/webhook/custom/{}/v9", t.token))
        .header("Authorization", format!("Bearer {BEARER}"))
        .send()
        .await
        .expect("request");
    let wrong_method = daemon
        .request(Method::GET, &t.v3_path)
        .send()
        .await
        .expect("request");
    daemon.terminate();
    let status = daemon.wait_for_exit(Duration::from_secs(30)).await;

    assert_eq!(valid.status(), 200);
    assert_eq!(invalid.status(), 401);
    assert_eq!(wrong_management.status(), 401);
    assert_eq!(unknown_route.status(), 404);
    assert_eq!(wrong_method.status(), 405);
    assert!(status.success(), "{status}");
    let stdout = strip_ansi(&daemon.stdout_text());
    let stderr = strip_ansi(&daemon.stderr_text());
    assert!(
        stderr.contains("DEBUG") && stderr.contains("status=401"),
        "debug logs and the request lines were captured:\n{stderr}"
    );
    for (place, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert_free_of(
            text,
            &[
                &root,
                secret_part(&root),
                &t.admin_key,
                secret_part(&t.admin_key),
                &wrong,
                secret_part(&wrong),
                &t.token,
                BEARER,
                SIGNATURE,
                "c00kie-value",
                GITLAB_TOKEN,
            ],
            place,
        );
    }
}

#[tokio::test]
async fn a_fresh_key_is_shown_once_at_creation() {
    let app = spawn_app().await;
    app.create_account("acc").await;

    let res = app
        .with_key(Method::POST, "/api/v1/accounts/acc/apikeys", &app.root_key)
        .json(&json!({"name": "ci", "role": "executor"}))
        .send()
        .await
        .expect("request");

    assert_eq!(res.status(), 201);
    let data = success_data(res).await;
    let key = data["key"].as_str().expect("key");
    let id = data["identifier"].as_str().expect("identifier");
    assert!(key.starts_with(&format!("pat.acc.{id}.")), "{key}");
    assert!(secret_part(key).len() >= 27, "≥ 160 bits of base62: {key}");
    let list = app
        .with_key(Method::GET, "/api/v1/accounts/acc/apikeys", &app.root_key)
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    assert!(list.contains(id), "{list}");
    assert_free_of(&list, &[secret_part(key)], "the list after creation");
}
