//! API keys (DESIGN §1, §3, §7): the one-time secret and its format, lists without secrets,
//! revocation and expiry that take effect at once, and which key may do what.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, spawn_app_with, success_data, TestApp, TestTrigger};

const SAMPLE_BODY: &str = r#"{"sample_key": "sample_value"}"#;

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn invalid_key_message(account: &str) -> String {
    format!("Invalid call: Invalid token or token expired. Account id for API called: {account}")
}

/// POSTs a key request for `account` with `key`.
async fn post_key(app: &TestApp, account: &str, key: &str, body: Value) -> Response {
    app.with_key(
        Method::POST,
        &format!("/api/v1/accounts/{account}/apikeys"),
        key,
    )
    .json(&body)
    .send()
    .await
    .expect("request")
}

/// Creates a key with the root key; returns `data` of the 201 response.
async fn create_key_data(app: &TestApp, account: &str, body: Value) -> Value {
    let res = post_key(app, account, &app.root_key, body).await;
    assert_eq!(res.status(), 201, "create key");
    success_data(res).await
}

/// Lists the keys of `account` with `key`; returns the response text and the parsed items.
async fn list_keys(app: &TestApp, account: &str, key: &str) -> (String, Vec<Value>) {
    let res = app
        .with_key(
            Method::GET,
            &format!("/api/v1/accounts/{account}/apikeys"),
            key,
        )
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("text");
    let body: Value = serde_json::from_str(&text).expect("json");
    let items = body["data"]["content"].as_array().expect("content").clone();
    (text, items)
}

async fn revoke(app: &TestApp, account: &str, key_id: &str, key: &str) -> Response {
    app.with_key(
        Method::DELETE,
        &format!("/api/v1/accounts/{account}/apikeys/{key_id}"),
        key,
    )
    .send()
    .await
    .expect("request")
}

/// The key id inside `pat.<acc>.<keyId>.<secret>`.
fn key_id_of(key: &str) -> &str {
    key.split('.').nth(2).expect("a key id")
}

async fn fire(app: &TestApp, t: &TestTrigger, key: &str) -> Response {
    app.post_webhook(&t.v3_path(), Some(key), SAMPLE_BODY).await
}

// ---- creation ----------------------------------------------------------------------------------

#[tokio::test]
async fn created_key_is_returned_once_in_the_documented_format() {
    let app = spawn_app().await;
    app.create_account("acc").await;

    let res = post_key(
        &app,
        "acc",
        &app.root_key,
        json!({"name": "ci", "role": "executor"}),
    )
    .await;

    assert_eq!(res.status(), 201);
    let data = success_data(res).await;
    let key = data["key"].as_str().expect("key");
    let parts: Vec<&str> = key.split('.').collect();
    assert_eq!(parts.len(), 4, "{key}");
    assert_eq!(parts[0], "pat");
    assert_eq!(parts[1], "acc");
    assert_eq!(parts[2].len(), 24, "{key}");
    assert!(
        parts[2]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "key id is lowercase hex: {key}"
    );
    assert_eq!(data["identifier"], parts[2]);
    // At least 160 random bits in base62 or base64url: 27 characters or more.
    assert!(parts[3].len() >= 27, "secret too short: {key}");
    assert!(
        parts[3]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{key}"
    );
    assert_eq!(data["role"], "executor");
}

#[tokio::test]
async fn two_keys_never_share_an_id_or_a_secret() {
    let app = spawn_app().await;
    app.create_account("acc").await;

    let a = app.create_key("acc", "executor", None).await;
    let b = app.create_key("acc", "executor", None).await;

    let split = |k: &str| {
        let parts: Vec<String> = k.split('.').map(str::to_owned).collect();
        (parts[2].clone(), parts[3].clone())
    };
    let ((id_a, secret_a), (id_b, secret_b)) = (split(&a), split(&b));
    assert_ne!(id_a, id_b);
    assert_ne!(secret_a, secret_b);
}

#[tokio::test]
async fn creating_a_key_for_an_account_that_does_not_exist_is_404() {
    let app = spawn_app().await;

    let res = post_key(
        &app,
        "nobody",
        &app.root_key,
        json!({"name": "ci", "role": "admin"}),
    )
    .await;

    assert_error(res, 404, "RESOURCE_NOT_FOUND", "nobody").await;
}

#[tokio::test]
async fn creating_a_key_with_an_unknown_role_is_400() {
    let app = spawn_app().await;
    app.create_account("acc").await;

    let res = post_key(
        &app,
        "acc",
        &app.root_key,
        json!({"name": "ci", "role": "superuser"}),
    )
    .await;

    assert_error(res, 400, "INVALID_REQUEST", "").await;
    let (_, items) = list_keys(&app, "acc", &app.root_key).await;
    assert!(items.is_empty(), "{items:?}");
}

#[tokio::test]
async fn creating_a_key_that_expires_in_the_past_is_400() {
    let app = spawn_app().await;
    app.create_account("acc").await;

    for expires_at in [json!(now_millis() - 1000), json!("2020-01-01T00:00:00Z")] {
        let res = post_key(
            &app,
            "acc",
            &app.root_key,
            json!({"name": "ci", "role": "executor", "expiresAt": expires_at}),
        )
        .await;

        assert_error(res, 400, "INVALID_REQUEST", "expiresAt").await;
    }
}

// ---- lists -------------------------------------------------------------------------------------

#[tokio::test]
async fn key_list_never_contains_a_secret() {
    let app = spawn_app().await;
    app.create_account("acc").await;
    let admin = app.create_key("acc", "admin", None).await;
    let executor = app
        .create_key("acc", "executor", Some(vec!["default/proj"]))
        .await;

    let (text, items) = list_keys(&app, "acc", &admin).await;

    assert_eq!(items.len(), 2, "{text}");
    for key in [&admin, &executor] {
        let secret = key.rsplit('.').next().expect("secret");
        assert!(!text.contains(key.as_str()), "the key is listed: {text}");
        assert!(!text.contains(secret), "the secret is listed: {text}");
        let item = items
            .iter()
            .find(|i| i["identifier"] == key_id_of(key))
            .expect("each key is listed by its id");
        assert!(item.get("key").is_none(), "{item}");
        assert!(item["revokedAt"].is_null(), "{item}");
    }
}

// ---- revocation --------------------------------------------------------------------------------

#[tokio::test]
async fn revoked_key_is_refused_at_once_even_after_it_was_cached() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let key = app.create_key("acc", "executor", None).await;
    // A successful call puts the key in the verified-key cache.
    success_data(fire(&app, &t, &key).await).await;

    let revoked = revoke(&app, "acc", key_id_of(&key), &t.admin_key).await;
    let res = fire(&app, &t, &key).await;

    success_data(revoked).await;
    assert_error(res, 401, "INVALID_TOKEN", &invalid_key_message("acc")).await;
}

#[tokio::test]
async fn revoked_admin_key_can_no_longer_manage_its_account() {
    let app = spawn_app().await;
    app.create_account("acc").await;
    let admin = app.create_key("acc", "admin", None).await;
    list_keys(&app, "acc", &admin).await;

    success_data(revoke(&app, "acc", key_id_of(&admin), &app.root_key).await).await;
    let res = app
        .with_key(Method::GET, "/api/v1/accounts/acc/apikeys", &admin)
        .send()
        .await
        .expect("request");

    assert_error(res, 401, "INVALID_TOKEN", &invalid_key_message("acc")).await;
}

#[tokio::test]
async fn key_list_shows_when_a_key_was_revoked() {
    let app = spawn_app().await;
    app.create_account("acc").await;
    let kept = app.create_key("acc", "executor", None).await;
    let gone = app.create_key("acc", "executor", None).await;
    let before = now_millis();

    success_data(revoke(&app, "acc", key_id_of(&gone), &app.root_key).await).await;
    let (_, items) = list_keys(&app, "acc", &app.root_key).await;

    let find = |key: &str| {
        items
            .iter()
            .find(|i| i["identifier"] == key_id_of(key))
            .expect("listed")
            .clone()
    };
    let revoked_at = find(&gone)["revokedAt"]
        .as_i64()
        .expect("revokedAt in epoch milliseconds");
    assert!(
        (before..=now_millis()).contains(&revoked_at),
        "{revoked_at}"
    );
    assert!(find(&kept)["revokedAt"].is_null());
}

#[tokio::test]
async fn revoking_an_unknown_key_is_404() {
    let app = spawn_app().await;
    app.create_account("acc").await;
    app.create_account("other").await;
    let others = app.create_key("other", "executor", None).await;

    for key_id in [
        "0123456789abcdef01234567",
        "not-a-key-id",
        key_id_of(&others),
    ] {
        let res = revoke(&app, "acc", key_id, &app.root_key).await;

        assert_error(res, 404, "RESOURCE_NOT_FOUND", "").await;
    }
    // The other account's key was not touched.
    let (_, items) = list_keys(&app, "other", &app.root_key).await;
    assert!(items[0]["revokedAt"].is_null());
}

// ---- expiry ------------------------------------------------------------------------------------

#[tokio::test]
async fn key_stops_working_once_it_expires() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let expires_at = now_millis() + 3000;
    let data = create_key_data(
        &app,
        "acc",
        json!({"name": "short", "role": "executor", "expiresAt": expires_at}),
    )
    .await;
    assert_eq!(data["expiresAt"], expires_at);
    let key = data["key"].as_str().expect("key").to_owned();

    // Valid (and now cached) before it expires...
    let first = fire(&app, &t, &key).await;
    assert!(
        now_millis() < expires_at,
        "the machine was too slow to test before expiry"
    );
    success_data(first).await;

    // ...and refused once it has, within a deadline.
    let deadline = Instant::now() + Duration::from_secs(15);
    let refused = loop {
        let res = fire(&app, &t, &key).await;
        if res.status() != 200 {
            break res;
        }
        assert!(
            Instant::now() < deadline,
            "the key still works long after it expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(now_millis() >= expires_at, "refused before its expiry");
    assert_error(refused, 401, "INVALID_TOKEN", &invalid_key_message("acc")).await;
}

// ---- which key may do what ---------------------------------------------------------------------

#[tokio::test]
async fn management_without_a_key_is_401() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    for (method, path) in [
        (Method::GET, "/api/v1/accounts/acc/apikeys".to_owned()),
        (Method::GET, t.trigger_path()),
        (Method::GET, format!("{}/webhookevents", t.project_path())),
    ] {
        let res = app.request(method, &path).send().await.expect("request");

        assert_error(res, 401, "INVALID_TOKEN", "").await;
    }
}

#[tokio::test]
async fn malformed_key_on_management_is_401() {
    let app = spawn_app().await;
    app.create_account("acc").await;

    for key in [
        "garbage",
        "pat.acc.0123456789abcdef01234567.AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let res = app
            .with_key(Method::GET, "/api/v1/accounts/acc/apikeys", key)
            .send()
            .await
            .expect("request");

        assert_error(res, 401, "INVALID_TOKEN", &invalid_key_message("acc")).await;
    }
}

#[tokio::test]
async fn key_of_another_account_relabelled_as_this_account_is_rejected_with_401() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    app.create_account("other").await;
    let foreign = app.create_key("other", "admin", None).await;
    // Same key id and secret, with the account part rewritten to the target account.
    let relabelled = foreign.replacen("pat.other.", "pat.acc.", 1);
    success_data(
        app.with_key(Method::GET, "/api/v1/accounts/other/apikeys", &foreign)
            .send()
            .await
            .expect("request"),
    )
    .await;

    let intake = fire(&app, &t, &relabelled).await;
    let manage = app
        .with_key(Method::GET, "/api/v1/accounts/acc/apikeys", &relabelled)
        .send()
        .await
        .expect("request");

    assert_error(intake, 401, "INVALID_TOKEN", &invalid_key_message("acc")).await;
    assert_error(manage, 401, "INVALID_TOKEN", &invalid_key_message("acc")).await;
}

#[tokio::test]
async fn executor_key_on_the_management_api_is_denied_with_403() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let executor = app.create_key("acc", "executor", None).await;

    let attempts = [
        app.with_key(Method::GET, "/api/v1/accounts/acc/apikeys", &executor),
        app.with_key(Method::POST, "/api/v1/accounts/acc/apikeys", &executor)
            .json(&json!({"name": "escalate", "role": "admin"})),
        app.with_key(Method::GET, &t.trigger_path(), &executor),
        app.with_key(Method::PATCH, &t.trigger_path(), &executor)
            .json(&json!({"enabled": false})),
        app.with_key(
            Method::PUT,
            "/api/v1/settings/mandate_custom_webhook_authorization?accountIdentifier=acc",
            &executor,
        )
        .json(&json!({"value": false, "allowOverrides": true})),
    ];
    for attempt in attempts {
        let res = attempt.send().await.expect("request");

        assert_error(res, 403, "NG_ACCESS_DENIED", "").await;
    }
    // Nothing changed: the trigger still fires, and no key was added.
    success_data(app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await).await;
    let (_, items) = list_keys(&app, "acc", &app.root_key).await;
    assert_eq!(items.len(), 2, "the admin and executor keys only");
}

#[tokio::test]
async fn admin_key_of_one_account_is_rejected_with_401_on_another() {
    let app = spawn_app().await;
    app.create_account("alpha").await;
    app.create_account("beta").await;
    let alpha_admin = app.create_key("alpha", "admin", None).await;

    let list = app
        .with_key(Method::GET, "/api/v1/accounts/beta/apikeys", &alpha_admin)
        .send()
        .await
        .expect("request");
    let create = post_key(
        &app,
        "beta",
        &alpha_admin,
        json!({"name": "intruder", "role": "admin"}),
    )
    .await;
    let org = app
        .with_key(
            Method::PUT,
            "/api/v1/accounts/beta/orgs/default",
            &alpha_admin,
        )
        .json(&json!({"name": "intruder"}))
        .send()
        .await
        .expect("request");

    for res in [list, create, org] {
        assert_error(res, 401, "INVALID_TOKEN", &invalid_key_message("beta")).await;
    }
    let (_, items) = list_keys(&app, "beta", &app.root_key).await;
    assert!(items.is_empty(), "{items:?}");
}

#[tokio::test]
async fn admin_key_cannot_create_or_change_accounts() {
    let app = spawn_app().await;
    app.create_account("acc").await;
    let admin = app.create_key("acc", "admin", None).await;

    let res = app
        .with_key(Method::PUT, "/api/v1/accounts/acc", &admin)
        .json(&json!({"name": "renamed"}))
        .send()
        .await
        .expect("request");

    assert_error(res, 403, "NG_ACCESS_DENIED", "").await;
}

#[tokio::test]
async fn root_key_manages_any_account() {
    let app = spawn_app().await;

    for account in ["alpha", "beta-2_x"] {
        let put = app
            .with_key(
                Method::PUT,
                &format!("/api/v1/accounts/{account}"),
                &app.root_key,
            )
            .json(&json!({"name": account}))
            .send()
            .await
            .expect("request");
        assert!(put.status().is_success(), "{account}: {}", put.status());
        let org = app
            .with_key(
                Method::PUT,
                &format!("/api/v1/accounts/{account}/orgs/default"),
                &app.root_key,
            )
            .json(&json!({"name": "Default"}))
            .send()
            .await
            .expect("request");
        assert!(org.status().is_success(), "{account}: {}", org.status());
        let created = create_key_data(&app, account, json!({"name": "ci", "role": "admin"})).await;

        let (_, items) = list_keys(&app, account, &app.root_key).await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["identifier"], created["identifier"]);
        success_data(
            revoke(
                &app,
                account,
                created["identifier"].as_str().unwrap(),
                &app.root_key,
            )
            .await,
        )
        .await;
    }
}

#[tokio::test]
async fn admin_key_manages_its_own_account() {
    let app = spawn_app().await;
    app.create_account("acc").await;
    let admin = app.create_key("acc", "admin", None).await;

    let res = post_key(
        &app,
        "acc",
        &admin,
        json!({"name": "ci", "role": "executor"}),
    )
    .await;

    assert_eq!(res.status(), 201);
    let data = success_data(res).await;
    assert!(data["key"].as_str().unwrap().starts_with("pat.acc."));
}

#[tokio::test]
async fn wrong_secrets_for_a_key_id_do_not_lock_out_its_owner() {
    // A zero TTL makes every request miss the verified-key cache, as after a restart or expiry.
    let app = spawn_app_with(|s| s.auth.key_cache_ttl_secs = 0).await;
    let t = app.create_trigger().await;
    let key = app.create_key("acc", "executor", None).await;
    let ok = app.post_webhook(&t.v3_path(), Some(&key), "{}").await;
    assert_eq!(ok.status(), 200, "the owner's key works");
    let (prefix, _) = key.rsplit_once('.').expect("pat.acc.id.secret");
    let wrong = format!("{prefix}.{}", "W".repeat(32));

    for _ in 0..15 {
        let res = app.post_webhook(&t.v3_path(), Some(&wrong), "{}").await;
        assert_eq!(res.status(), 401);
    }
    let owner = app.post_webhook(&t.v3_path(), Some(&key), "{}").await;

    assert_eq!(owner.status(), 200, "the owner is not locked out");
}

#[tokio::test]
async fn strangers_guessing_a_never_verified_key_id_do_not_lock_out_its_owner_elsewhere() {
    // As after a restart: nobody's key is in the verified cache, and the owner's never was.
    let app = spawn_app_with(|s| s.auth.key_cache_ttl_secs = 0).await;
    let t = app.create_trigger().await;
    let key = app.create_key("acc", "executor", None).await;
    let (prefix, _) = key.rsplit_once('.').expect("pat.acc.id.secret");
    let wrong = format!("{prefix}.{}", "W".repeat(32));
    // The strangers (from 127.0.0.1) spend every failure they are allowed for this key id.
    for _ in 0..15 {
        let res = app.post_webhook(&t.v3_path(), Some(&wrong), "{}").await;
        assert_eq!(res.status(), 401);
    }
    // The owner calls from another address (127.0.0.2, still loopback): its budget is its own.
    let owner = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let res = owner
        .post(format!("{}{}", app.address, t.v3_path()))
        .header("X-Api-Key", &key)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the owner is not locked out");
}
