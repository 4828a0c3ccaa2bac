//! Outbound event rules (DESIGN §8) end to end: real receivers on loopback record every
//! request, and the tests verify the Standard Webhooks signature themselves.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::Mac;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, spawn_app_with, success_data, Answer, Received, TestApp, TestReceiver,
    TestTrigger,
};

/// The Standard Webhooks signature, computed here independently of triggerd.
fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &str) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Asserts that `r` carries a valid signature by `secret` among its `webhook-signature` list.
fn assert_signed_by(r: &Received, secret: &str) {
    let id = r.header("webhook-id").expect("webhook-id");
    let ts = r.header("webhook-timestamp").expect("webhook-timestamp");
    let now = chrono::Utc::now().timestamp();
    let sent: i64 = ts.parse().expect("unix seconds");
    assert!((now - sent).abs() < 60, "timestamp {sent} is now");
    let want = expected_signature(secret, id, ts, &r.body);
    let list = r.header("webhook-signature").expect("webhook-signature");
    assert!(
        list.split(' ').any(|s| s == want),
        "{list} should contain {want}"
    );
    let body: Value = serde_json::from_str(&r.body).expect("JSON body");
    assert_eq!(body["id"], id, "webhook-id is the payload id");
}

fn rules_path(t: &TestTrigger) -> String {
    format!("{}/eventrules", t.project_path())
}

fn answer(status: u16, headers: &[(&str, &str)]) -> Answer {
    (
        status,
        String::new(),
        headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

async fn put_rule(app: &TestApp, t: &TestTrigger, id: &str, body: Value) -> reqwest::Response {
    app.with_key(
        Method::PUT,
        &format!("{}/{id}", rules_path(t)),
        &t.admin_key,
    )
    .json(&body)
    .send()
    .await
    .expect("request")
}

/// Creates rule `id` and returns its data (with `signingSecret`).
async fn create_rule(app: &TestApp, t: &TestTrigger, id: &str, body: Value) -> Value {
    let res = put_rule(app, t, id, body).await;
    assert_eq!(res.status(), 201, "rule created");
    success_data(res).await
}

async fn get(app: &TestApp, t: &TestTrigger, path: &str) -> Value {
    success_data(
        app.with_key(Method::GET, path, &t.admin_key)
            .send()
            .await
            .expect("request"),
    )
    .await
}

/// Waits until `receiver` has `n` requests (at most 10 s).
async fn wait_for(receiver: &TestReceiver, n: usize) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = receiver.requests();
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `cond` holds for the rule's deliveries (at most 10 s); returns them.
async fn deliveries_until(
    app: &TestApp,
    t: &TestTrigger,
    rule: &str,
    cond: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let path = format!("{}/{rule}/deliveries?limit=500", rules_path(t));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let items = get(app, t, &path).await["content"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if cond(&items) || Instant::now() > deadline {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POSTs `body` (or no body) to `path` with the admin key.
async fn post(
    app: &TestApp,
    t: &TestTrigger,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    call(app, t, Method::POST, path, body).await
}

/// Sends `method` with `body` (or no body) to `path` with the admin key.
async fn call(
    app: &TestApp,
    t: &TestTrigger,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let request = app.with_key(method, path, &t.admin_key);
    match body {
        Some(body) => request.json(&body),
        None => request,
    }
    .send()
    .await
    .expect("request")
}

/// The plan execution id of the project's newest execution.
async fn latest_execution(app: &TestApp, t: &TestTrigger) -> String {
    let history = get(app, t, &format!("{}/executions", t.project_path())).await;
    history["content"][0]["planExecutionId"]
        .as_str()
        .expect("an execution")
        .to_owned()
}

fn event_types(requests: &[Received]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r.header("x-triggerd-event").unwrap_or("?").to_owned())
        .collect()
}

async fn fire(app: &TestApp, t: &TestTrigger) -> Value {
    let res = app.post_webhook(&t.v3_path(), None, r#"{"x":1}"#).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn app() -> TestApp {
    spawn_app_with(|_| {}).await
}

#[tokio::test]
async fn a_rule_gets_a_signed_ping_then_every_event_of_an_execution_in_order() {
    let app = app().await;
    let t = app.create_trigger().await;
    let receiver = TestReceiver::start(200, "ok", &[]).await;
    let rule = create_rule(
        &app,
        &t,
        "ops",
        json!({"name": "Ops", "sendEverything": true, "url": format!("{}/hook", receiver.url),
               "headers": {"X-Team": "ops"}}),
    )
    .await;
    let secret = rule["signingSecret"]
        .as_str()
        .expect("secret returned once");
    assert!(secret.starts_with("whsec_"));
    assert_eq!(STANDARD.decode(&secret[6..]).unwrap().len(), 32);

    let ping = wait_for(&receiver, 1).await;
    assert_eq!(event_types(&ping), ["ping"]);
    assert_signed_by(&ping[0], secret);
    assert_eq!(ping[0].path, "/hook");
    assert_eq!(ping[0].header("x-team"), Some("ops"));
    assert_eq!(ping[0].header("content-type"), Some("application/json"));
    assert!(ping[0]
        .header("user-agent")
        .unwrap()
        .starts_with("triggerd/"));

    // The secret is never shown again.
    let read = get(&app, &t, &format!("{}/ops", rules_path(&t))).await;
    assert!(read.get("signingSecret").is_none(), "{read}");
    assert_eq!(read["url"], format!("{}/hook", receiver.url));

    let fired = fire(&app, &t).await;
    let event_id = fired["data"]["eventCorrelationId"].as_str().unwrap();
    let got = wait_for(&receiver, 5).await;
    assert_eq!(
        event_types(&got),
        [
            "ping",
            "pipeline_start",
            "stage_start",
            "stage_end",
            "pipeline_end"
        ]
    );
    for r in &got {
        assert_signed_by(r, secret);
    }
    let end: Value = serde_json::from_str(&got[4].body).unwrap();
    assert_eq!(end["version"], "v1");
    assert_eq!(end["eventType"], "pipeline_end");
    let d = &end["data"];
    assert_eq!(d["application"]["id"], "proj");
    assert_eq!(d["pipeline"]["id"], "deploy");
    assert_eq!(d["triggeredBy"]["name"], "on_push");
    assert_eq!(d["triggeredByType"], "WEBHOOK_CUSTOM");
    assert_eq!(d["eventCorrelationId"], event_id);
    assert_eq!(d["status"], "SUCCESS");
    assert!(d["startedAt"].as_i64().unwrap() <= d["completedAt"].as_i64().unwrap());
    let stage_end: Value = serde_json::from_str(&got[3].body).unwrap();
    assert_eq!(stage_end["data"]["stage"]["id"], "build");
    assert_eq!(stage_end["data"]["stage"]["name"], "Build");
    assert_eq!(stage_end["data"]["status"], "SUCCESS");
    let start: Value = serde_json::from_str(&got[1].body).unwrap();
    assert!(start["data"].get("status").is_none());

    // The attempt log shows each delivery, newest first, signature masked.
    let items = deliveries_until(&app, &t, "ops", |d| {
        d.len() == 5 && d.iter().all(|d| d["status"] == "Success")
    })
    .await;
    assert!(items.iter().all(|d| d["status"] == "Success"), "{items:?}");
    assert_eq!(items[0]["eventType"], "pipeline_end");
    let detail = get(
        &app,
        &t,
        &format!(
            "{}/ops/deliveries/{}",
            rules_path(&t),
            items[0]["id"].as_str().unwrap()
        ),
    )
    .await;
    let attempt = &detail["attempts"][0];
    assert_eq!(attempt["responseStatus"], 200);
    assert_eq!(attempt["responseBody"], "ok");
    assert_eq!(
        attempt["requestHeaders"]["webhook-signature"],
        "v1,********"
    );
    assert!(
        !detail.to_string().contains(&secret[6..]),
        "secret never shown"
    );
    assert_eq!(detail["payload"]["eventType"], "pipeline_end");
}

#[tokio::test]
async fn filters_choose_pipelines_events_and_jexl() {
    let app = app().await;
    let t = app.create_trigger().await;
    // A failing pipeline in the same project, to tell the statuses apart.
    let fail_yaml = "pipeline:\n  name: broken\n  identifier: broken\n  stages:\n    - stage:\n        name: S\n        identifier: s\n        steps:\n          - step:\n              identifier: boom\n              type: Run\n              spec:\n                shell: sh\n                command: exit 3\n";
    let broken = TestTrigger {
        pipeline: "broken".into(),
        trigger: "on_push".into(),
        ..t.clone()
    };
    app.put_pipeline_yaml(&broken, fail_yaml).await;
    let res = app
        .put_trigger_yaml(&broken, &crate::helpers::trigger_yaml("on_push"))
        .await;
    let created: Value = res.json().await.unwrap();
    let broken = TestTrigger {
        token: created["data"]["customWebhookToken"]
            .as_str()
            .unwrap()
            .into(),
        ..broken
    };

    let failures = TestReceiver::start(200, "", &[]).await;
    create_rule(
        &app,
        &t,
        "failures",
        json!({"pipelines": ["*"], "events": ["pipeline_end"],
               "filter": "<+event.data.status> == \"FAILED\"", "url": failures.url}),
    )
    .await;
    let starts = TestReceiver::start(200, "", &[]).await;
    create_rule(
        &app,
        &t,
        "deploy_starts",
        json!({"pipelines": ["deploy"], "events": ["pipeline_start", "stage_start"], "url": starts.url}),
    )
    .await;

    fire(&app, &t).await;
    fire(&app, &broken).await;
    let got = wait_for(&starts, 3).await;
    let bodies: Vec<Value> = got
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(event_types(&got), ["ping", "pipeline_start", "stage_start"]);
    assert!(bodies[1..]
        .iter()
        .all(|b| b["data"]["pipeline"]["id"] == "deploy"));
    let got = wait_for(&failures, 2).await;
    assert_eq!(event_types(&got), ["ping", "pipeline_end"]);
    let end: Value = serde_json::from_str(&got[1].body).unwrap();
    assert_eq!(end["data"]["pipeline"]["id"], "broken");
    assert_eq!(end["data"]["status"], "FAILED");
    // Nothing more arrives: the successful run and the other events were filtered out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(failures.requests().len(), 2);
    assert_eq!(starts.requests().len(), 3);
}

#[tokio::test]
async fn retries_follow_the_schedule_until_the_receiver_takes_it() {
    let app = app().await;
    let t = app.create_trigger().await;
    let receiver = TestReceiver::scripted(
        0,
        vec![answer(500, &[]), answer(502, &[]), answer(404, &[])],
        answer(204, &[]),
    )
    .await;
    create_rule(
        &app,
        &t,
        "flaky",
        json!({"sendEverything": true, "events": [], "url": receiver.url}),
    )
    .await;
    let got = wait_for(&receiver, 4).await;
    assert_eq!(event_types(&got), ["ping"; 4]);
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "same webhook-id on every attempt"
    );
    let items = deliveries_until(&app, &t, "flaky", |d| {
        d.first().is_some_and(|d| d["status"] == "Success")
    })
    .await;
    assert_eq!(items[0]["attemptCount"], 4);
    let detail = get(
        &app,
        &t,
        &format!(
            "{}/flaky/deliveries/{}",
            rules_path(&t),
            items[0]["id"].as_str().unwrap()
        ),
    )
    .await;
    let statuses: Vec<_> = detail["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["responseStatus"].clone())
        .collect();
    assert_eq!(statuses, [json!(204), json!(404), json!(502), json!(500)]);
    assert_eq!(detail["attempts"][1]["error"], "HTTP 404");
    let rule = get(&app, &t, &format!("{}/flaky", rules_path(&t))).await;
    assert!(rule["failingSince"].is_null(), "healthy again: {rule}");
}

#[tokio::test]
async fn a_delivery_that_never_succeeds_fails_and_can_be_redelivered_or_recovered() {
    let app = app().await;
    let t = app.create_trigger().await;
    let receiver = TestReceiver::scripted(0, vec![answer(500, &[]); 8], answer(200, &[])).await;
    create_rule(
        &app,
        &t,
        "down",
        json!({"sendEverything": true, "url": receiver.url}),
    )
    .await;
    // The schedule has 4 entries: 4 attempts, then Failed.
    let items = deliveries_until(&app, &t, "down", |d| {
        d.first().is_some_and(|d| d["status"] == "Failed")
    })
    .await;
    assert_eq!(items[0]["status"], "Failed", "{items:?}");
    assert_eq!(items[0]["attemptCount"], 4);
    assert_eq!(receiver.requests().len(), 4);
    let failed = get(
        &app,
        &t,
        &format!("{}/down/deliveries?status=Failed", rules_path(&t)),
    )
    .await;
    assert_eq!(failed["content"].as_array().unwrap().len(), 1);

    let id = items[0]["id"].as_str().unwrap();
    let res = post(
        &app,
        &t,
        &format!("{}/down/deliveries/{id}/redeliver", rules_path(&t)),
        None,
    )
    .await;
    assert_eq!(success_data(res).await["status"], "Pending");
    // Four more failures (requests 5 to 8), then Failed again.
    let items = deliveries_until(&app, &t, "down", |d| {
        d[0]["attemptCount"] == 8 && d[0]["status"] == "Failed"
    })
    .await;
    assert_eq!(items[0]["status"], "Failed");
    // Recover: every failed delivery since a time goes again; now the receiver takes it.
    let res = post(
        &app,
        &t,
        &format!("{}/down/recover", rules_path(&t)),
        Some(json!({"since": "2020-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(success_data(res).await["queued"], 1);
    let items = deliveries_until(&app, &t, "down", |d| d[0]["status"] == "Success").await;
    assert_eq!(items[0]["attemptCount"], 9);
    let got = receiver.requests();
    assert_eq!(got.len(), 9);
    assert!(got
        .iter()
        .all(|r| r.header("webhook-id") == got[0].header("webhook-id")));
    let res = post(
        &app,
        &t,
        &format!("{}/down/recover", rules_path(&t)),
        Some(json!({"since": "last week"})),
    )
    .await;
    assert_error(res, 400, "INVALID_REQUEST", "since must be").await;
}

#[tokio::test]
async fn gone_disables_the_rule_and_retry_after_is_honoured() {
    let app = app().await;
    let t = app.create_trigger().await;
    let gone = TestReceiver::start(410, "bye", &[]).await;
    create_rule(
        &app,
        &t,
        "gone",
        json!({"sendEverything": true, "url": gone.url}),
    )
    .await;
    let items = deliveries_until(&app, &t, "gone", |d| {
        d.first().is_some_and(|d| d["status"] == "Failed")
    })
    .await;
    assert_eq!(items[0]["attemptCount"], 1, "no retry after 410");
    let rule = get(&app, &t, &format!("{}/gone", rules_path(&t))).await;
    assert_eq!(rule["enabled"], false);
    assert!(
        rule["disabledReason"].as_str().unwrap().contains("410"),
        "{rule}"
    );
    // A disabled rule gets no events.
    fire(&app, &t).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gone.requests().len(), 1);

    let busy = TestReceiver::scripted(
        0,
        vec![
            answer(429, &[("Retry-After", "2")]),
            answer(503, &[("Retry-After", "1")]),
        ],
        answer(200, &[]),
    )
    .await;
    create_rule(
        &app,
        &t,
        "busy",
        json!({"sendEverything": true, "url": busy.url}),
    )
    .await;
    let got = wait_for(&busy, 3).await;
    assert_eq!(got.len(), 3);
    let items = deliveries_until(&app, &t, "busy", |d| {
        d.first().is_some_and(|d| d["status"] == "Success")
    })
    .await;
    let detail = get(
        &app,
        &t,
        &format!(
            "{}/busy/deliveries/{}",
            rules_path(&t),
            items[0]["id"].as_str().unwrap()
        ),
    )
    .await;
    let starts: Vec<i64> = detail["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|a| a["startedAt"].as_i64().unwrap())
        .collect();
    // The schedule says 100 ms and 200 ms; Retry-After says 2 s and 1 s.
    assert!(starts[1] - starts[0] >= 2000, "{starts:?}");
    assert!(starts[2] - starts[1] >= 1000, "{starts:?}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let app = app().await;
    let t = app.create_trigger().await;
    let target = TestReceiver::start(200, "", &[]).await;
    let redirect = TestReceiver::start(
        307,
        "",
        &[("Location", &format!("{}/elsewhere", target.url))],
    )
    .await;
    create_rule(
        &app,
        &t,
        "moved",
        json!({"sendEverything": true, "url": redirect.url}),
    )
    .await;
    let items = deliveries_until(&app, &t, "moved", |d| {
        d.first().is_some_and(|d| d["status"] == "Failed")
    })
    .await;
    assert_eq!(items[0]["status"], "Failed");
    assert_eq!(items[0]["responseStatus"], 307);
    assert!(items[0]["lastError"]
        .as_str()
        .unwrap()
        .contains("redirects are not followed"));
    assert_eq!(redirect.requests().len(), 4);
    assert!(
        target.requests().is_empty(),
        "the redirect target was never called"
    );
}

#[tokio::test]
async fn the_ssrf_guard_refuses_loopback_by_ip_and_by_name_unless_allowed() {
    let app = spawn_app_with(|s| s.outbound.allowed_cidrs = vec![]).await;
    let t = app.create_trigger().await;
    let receiver = TestReceiver::start(200, "", &[]).await;
    let port = receiver.url.rsplit(':').next().unwrap().to_owned();
    for (rule, url) in [
        ("by_ip", format!("http://127.0.0.1:{port}/")),
        ("by_name", format!("http://localhost:{port}/")),
        ("by_v6", format!("http://[::ffff:127.0.0.1]:{port}/")),
    ] {
        create_rule(&app, &t, rule, json!({"sendEverything": true, "url": url})).await;
        let items = deliveries_until(&app, &t, rule, |d| {
            d.first()
                .is_some_and(|d| d["attemptCount"].as_u64() >= Some(1))
        })
        .await;
        let error = items[0]["lastError"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            error.contains("refused by the SSRF guard"),
            "{rule}: {error}"
        );
        assert!(error.contains("loopback"), "{rule}: {error}");
        // The Test endpoint goes through the same guard.
        let res = post(&app, &t, &format!("{}/{rule}/test", rules_path(&t)), None).await;
        let test = success_data(res).await;
        assert_eq!(test["status"], "Failed");
        assert!(test["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("SSRF"));
    }
    assert!(
        receiver.requests().is_empty(),
        "no request reached loopback"
    );
}

#[tokio::test]
async fn the_test_endpoint_works_while_disabled_and_masks_secrets() {
    let app = app().await;
    let t = app.create_trigger().await;
    let receiver = TestReceiver::start(200, "fine", &[("Set-Cookie", "session=abc")]).await;
    let rule = create_rule(
        &app,
        &t,
        "tok",
        json!({"enabled": false, "sendEverything": true, "url": receiver.url,
               "auth": {"mode": "token"}, "headers": {"Authorization": "Bearer hunter2", "X-Env": "prod"}}),
    )
    .await;
    let secret = rule["signingSecret"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        receiver.requests().is_empty(),
        "a disabled rule gets no ping"
    );
    assert_eq!(rule["headers"]["Authorization"], "********");

    let res = post(
        &app,
        &t,
        &format!("{}/tok/test", rules_path(&t)),
        Some(json!({"eventType": "stage_end"})),
    )
    .await;
    let test = success_data(res).await;
    assert_eq!(test["status"], "Success");
    assert_eq!(test["eventType"], "stage_end");
    let got = receiver.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("x-triggerd-token"), Some(secret.as_str()));
    assert_eq!(got[0].header("authorization"), Some("Bearer hunter2"));
    assert!(
        got[0].header("webhook-signature").is_none(),
        "token mode does not sign"
    );
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["test"], true);
    assert_eq!(body["data"]["stage"]["id"], "sample_stage");

    let attempt = &test["attempts"][0];
    assert_eq!(attempt["requestHeaders"]["X-Triggerd-Token"], "********");
    assert_eq!(attempt["requestHeaders"]["Authorization"], "********");
    assert_eq!(attempt["requestHeaders"]["X-Env"], "prod");
    assert_eq!(attempt["responseHeaders"]["set-cookie"], "********");
    let all = test.to_string();
    assert!(!all.contains("hunter2") && !all.contains(&secret), "{all}");

    // Sending the masked header back keeps the stored value.
    let mut body = get(&app, &t, &format!("{}/tok", rules_path(&t))).await;
    for k in [
        "accountIdentifier",
        "orgIdentifier",
        "projectIdentifier",
        "previousSecretValidUntil",
        "failingSince",
        "disabledReason",
        "createdAt",
        "updatedAt",
    ] {
        body.as_object_mut().unwrap().remove(k);
    }
    body["enabled"] = json!(true);
    let res = put_rule(&app, &t, "tok", body).await;
    assert_eq!(res.status(), 200);
    let got = wait_for(&receiver, 2).await;
    assert_eq!(
        event_types(&got),
        ["stage_end", "ping"],
        "enabling sends a ping"
    );
    assert_eq!(got[1].header("authorization"), Some("Bearer hunter2"));
    let res = post(
        &app,
        &t,
        &format!("{}/tok/test", rules_path(&t)),
        Some(json!({"eventType": "pipeline_explode"})),
    )
    .await;
    assert_error(res, 400, "INVALID_REQUEST", "pipeline_explode").await;
}

#[tokio::test]
async fn rotation_signs_with_both_secrets() {
    let app = app().await;
    let t = app.create_trigger().await;
    let receiver = TestReceiver::start(200, "", &[]).await;
    let old = create_rule(
        &app,
        &t,
        "rot",
        json!({"sendEverything": true, "url": receiver.url}),
    )
    .await;
    let old = old["signingSecret"].as_str().unwrap().to_owned();
    wait_for(&receiver, 1).await;
    let res = post(
        &app,
        &t,
        &format!("{}/rot/rotate-secret", rules_path(&t)),
        None,
    )
    .await;
    let rotated = success_data(res).await;
    let new = rotated["signingSecret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let until = rotated["previousSecretValidUntil"].as_i64().unwrap();
    let day = 24 * 3600 * 1000;
    assert!((until - chrono::Utc::now().timestamp_millis() - day).abs() < 60_000);

    fire(&app, &t).await;
    let got = wait_for(&receiver, 5).await;
    let last = got.last().unwrap();
    assert_eq!(
        last.header("webhook-signature").unwrap().split(' ').count(),
        2
    );
    assert_signed_by(last, &new);
    assert_signed_by(last, &old);
    assert_eq!(
        got[0]
            .header("webhook-signature")
            .unwrap()
            .split(' ')
            .count(),
        1
    );
}

#[tokio::test]
async fn bad_rules_get_clear_errors_and_crud_works() {
    let app = app().await;
    let t = app.create_trigger().await;
    for (body, message) in [
        (
            json!({"sendEverything": true, "url": "ftp://x/"}),
            "only http and https",
        ),
        (json!({"sendEverything": true}), "url"),
        (json!({"url": "https://h.example/"}), "sendEverything"),
        (
            json!({"sendEverything": true, "url": "https://h/", "events": ["nope"]}),
            "unknown event type 'nope'",
        ),
        (
            json!({"sendEverything": true, "url": "https://h/", "filter": "<+event.x> =="}),
            "column",
        ),
        (
            json!({"sendEverything": true, "url": "https://h/", "filter": "<+trigger.payload.x> == 1"}),
            "not available",
        ),
        (
            json!({"sendEverything": true, "url": "https://h/", "headers": {"webhook-id": "x"}}),
            "cannot be overridden",
        ),
        (
            json!({"sendEverything": true, "url": "https://h/", "auth": {"mode": "basic"}}),
            "basic",
        ),
    ] {
        let res = put_rule(&app, &t, "bad", body).await;
        assert_error(res, 400, "INVALID_REQUEST", message).await;
    }
    let res = app
        .with_key(
            Method::PUT,
            &format!("{}/bad", rules_path(&t)),
            &t.admin_key,
        )
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "INVALID_REQUEST", "Invalid JSON").await;
    let res = app
        .request(Method::GET, &rules_path(&t))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "INVALID_TOKEN", "").await;
    let res = app
        .with_key(
            Method::PUT,
            &format!("{}/a-b", rules_path(&t)),
            &t.admin_key,
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "INVALID_REQUEST", "rule identifier").await;

    // YAML works too; an update answers 200 and keeps the secret.
    let res = app
        .with_key(
            Method::PUT,
            &format!("{}/yamlrule", rules_path(&t)),
            &t.admin_key,
        )
        .header("content-type", "application/yaml")
        .body("enabled: false\nsendEverything: true\nurl: https://hooks.example.com/x\n")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = put_rule(&app, &t, "yamlrule", json!({"enabled": false, "pipelines": ["deploy"], "events": ["*"], "url": "https://hooks.example.com/y"})).await;
    assert_eq!(res.status(), 200);
    let data = success_data(res).await;
    assert!(data.get("signingSecret").is_none());
    assert_eq!(data["url"], "https://hooks.example.com/y");
    let list = get(&app, &t, &rules_path(&t)).await;
    assert_eq!(list["content"].as_array().unwrap().len(), 1);
    let res = call(
        &app,
        &t,
        Method::DELETE,
        &format!("{}/yamlrule", rules_path(&t)),
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    let res = call(
        &app,
        &t,
        Method::GET,
        &format!("{}/yamlrule", rules_path(&t)),
        None,
    )
    .await;
    assert_error(res, 404, "RESOURCE_NOT_FOUND", "yamlrule").await;
    let res = call(
        &app,
        &t,
        Method::GET,
        &format!("{}/yamlrule/deliveries/zzz", rules_path(&t)),
        None,
    )
    .await;
    assert_error(res, 404, "RESOURCE_NOT_FOUND", "").await;
    let res = call(
        &app,
        &t,
        Method::PATCH,
        &format!("{}/yamlrule", rules_path(&t)),
        None,
    )
    .await;
    assert_error(res, 405, "METHOD_NOT_ALLOWED", "").await;
}

#[tokio::test]
async fn pause_and_continue_are_published() {
    let app = app().await;
    let t = app.create_trigger().await;
    let yaml = "pipeline:\n  name: deploy\n  identifier: deploy\n  stages:\n    - stage:\n        name: Build\n        identifier: build\n        steps:\n          - step:\n              identifier: hold\n              type: Wait\n              spec:\n                duration: 1s\n          - step:\n              identifier: after\n              type: Wait\n              spec:\n                duration: 0s\n";
    app.put_pipeline_yaml(&t, yaml).await;
    let receiver = TestReceiver::start(200, "", &[]).await;
    create_rule(
        &app,
        &t,
        "all",
        json!({"sendEverything": true, "url": receiver.url}),
    )
    .await;
    fire(&app, &t).await;
    wait_for(&receiver, 3).await;
    let plan = latest_execution(&app, &t).await;
    let (app, t) = (&app, &t);
    let control = |action: &'static str| {
        let path = format!("{}/executions/{plan}/{action}", t.project_path());
        async move { post(app, t, &path, None).await.status() }
    };
    assert_eq!(control("pause").await, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(control("resume").await, 200);
    let got = wait_for(&receiver, 9).await;
    assert_eq!(
        event_types(&got),
        [
            "ping",
            "pipeline_start",
            "stage_start",
            "pipeline_pause",
            "stage_pause",
            "pipeline_continue",
            "stage_continue",
            "stage_end",
            "pipeline_end"
        ]
    );
}

#[tokio::test]
async fn a_rule_failing_for_longer_than_disable_after_is_disabled() {
    let app = spawn_app_with(|s| {
        s.outbound.disable_after = "300ms".into();
        s.outbound.retry_schedule = vec!["0s".into(); 1]
            .into_iter()
            .chain(std::iter::repeat_n("150ms".to_owned(), 20))
            .collect();
    })
    .await;
    let t = app.create_trigger().await;
    let receiver = TestReceiver::start(500, "", &[]).await;
    create_rule(
        &app,
        &t,
        "broken",
        json!({"sendEverything": true, "url": receiver.url}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let rule = loop {
        let rule = get(&app, &t, &format!("{}/broken", rules_path(&t))).await;
        if rule["enabled"] == false || Instant::now() > deadline {
            break rule;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(rule["enabled"], false, "{rule}");
    assert!(
        rule["disabledReason"]
            .as_str()
            .unwrap()
            .contains("failed for longer"),
        "{rule}"
    );
    assert!(rule["failingSince"].as_i64().is_some());
    // Disabled: no more attempts. Redelivery is refused until the rule is enabled again.
    let seen = receiver.requests().len();
    assert!((3..20).contains(&seen), "{seen}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests().len(), seen);
    let items = deliveries_until(&app, &t, "broken", |_| true).await;
    let res = post(
        &app,
        &t,
        &format!(
            "{}/broken/deliveries/{}/redeliver",
            rules_path(&t),
            items[0]["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_error(res, 400, "INVALID_REQUEST", "is disabled").await;
}

#[tokio::test]
async fn selectors_choose_the_nodes_that_deliver() {
    let app = spawn_app_with(|s| s.node.tags = vec!["eu".into(), "prod".into()]).await;
    let t = app.create_trigger().await;
    let here = TestReceiver::start(200, "", &[]).await;
    let elsewhere = TestReceiver::start(200, "", &[]).await;
    create_rule(
        &app,
        &t,
        "here",
        json!({"sendEverything": true, "url": here.url, "selectors": ["eu", "prod"]}),
    )
    .await;
    create_rule(
        &app,
        &t,
        "elsewhere",
        json!({"sendEverything": true, "url": elsewhere.url, "selectors": ["eu", "us"]}),
    )
    .await;
    assert_eq!(event_types(&wait_for(&here, 1).await), ["ping"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        elsewhere.requests().is_empty(),
        "this node lacks the tag us"
    );
    let items = deliveries_until(&app, &t, "elsewhere", |_| true).await;
    assert_eq!(items[0]["status"], "Pending");
    assert_eq!(items[0]["attemptCount"], 0);
}

/// The receiver is down while triggerd is killed (`kill -9`) and started again: every event
/// still arrives, each with the `webhook-id` it had before the crash.
#[tokio::test]
async fn every_event_arrives_after_a_crash_while_the_receiver_was_down() {
    use crate::durability::{free_port, made_up_root_key, set_up_trigger, Daemon};
    let dir = tempfile::tempdir().unwrap();
    let root = made_up_root_key();
    let schedule = std::iter::once("0s")
        .chain(std::iter::repeat_n("250ms", 45))
        .collect::<Vec<_>>()
        .join(",");
    let envs = [
        ("TRIGGERD_ROOT_KEY", root.as_str()),
        ("TRIGGERD_OUTBOUND__ALLOWED_CIDRS", "127.0.0.0/8"),
        ("TRIGGERD_OUTBOUND__RETRY_SCHEDULE", schedule.as_str()),
    ];
    let mut first = Daemon::start(dir.path(), "first", &[], &envs).await;
    let t = set_up_trigger(&first, &root).await;
    let port = free_port();
    let p = "/api/v1/accounts/acc/orgs/default/projects/proj";
    let res = first
        .request(Method::PUT, &format!("{p}/eventrules/ops"))
        .header("X-Api-Key", &t.admin_key)
        .json(&json!({"sendEverything": true, "url": format!("http://127.0.0.1:{port}/events")}))
        .send()
        .await
        .unwrap();
    let secret = success_data(res).await["signingSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..3 {
        let res = first
            .request(Method::POST, &t.v3_path)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    // 1 ping + 3 executions × 4 events. The ping and each execution's first event have been
    // attempted and refused; the later events of an execution wait for its first (in order).
    let deadline = Instant::now() + Duration::from_secs(20);
    let before: Vec<Value> = loop {
        let res = first
            .request(
                Method::GET,
                &format!("{p}/eventrules/ops/deliveries?limit=100"),
            )
            .header("X-Api-Key", &t.admin_key)
            .send()
            .await
            .unwrap();
        let items = success_data(res).await["content"]
            .as_array()
            .cloned()
            .unwrap();
        let tried = items
            .iter()
            .filter(|d| d["attemptCount"].as_u64() >= Some(1))
            .count();
        if (items.len() == 13 && tried >= 4) || Instant::now() > deadline {
            break items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(before.len(), 13);
    assert!(
        before.iter().all(|d| d["status"] == "Pending"),
        "{before:?}"
    );
    let mut ids: Vec<String> = before
        .iter()
        .map(|d| d["webhookId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();

    first.kill_hard();
    let receiver = TestReceiver::scripted(port, vec![], answer(200, &[])).await;
    let _second = Daemon::start(dir.path(), "second", &[], &envs).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut arrived: Vec<String> = loop {
        let got = receiver.requests();
        let mut seen: Vec<String> = got
            .iter()
            .map(|r| r.header("webhook-id").unwrap().to_owned())
            .collect();
        seen.sort();
        seen.dedup();
        if seen.len() >= 13 || Instant::now() > deadline {
            for r in &got {
                assert_signed_by(r, &secret);
            }
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    arrived.sort();
    assert_eq!(arrived, ids, "the same events, with the same webhook-ids");
    let types = event_types(&receiver.requests());
    for (kind, n) in [
        ("ping", 1),
        ("pipeline_start", 3),
        ("stage_start", 3),
        ("stage_end", 3),
        ("pipeline_end", 3),
    ] {
        assert!(
            types.iter().filter(|t| *t == kind).count() >= n,
            "{kind}: {types:?}"
        );
    }
}

#[tokio::test]
async fn a_slow_receiver_gets_one_executions_events_in_order_and_redelivery_waits_for_the_attempt()
{
    let app = app().await;
    let t = app.create_trigger().await;
    let yaml = "pipeline:\n  name: deploy\n  identifier: deploy\n  stages:\n    - stage:\n        name: A\n        identifier: a\n        steps:\n          - step:\n              identifier: w1\n              type: Wait\n              spec:\n                duration: 0s\n    - stage:\n        name: B\n        identifier: b\n        steps:\n          - step:\n              identifier: w2\n              type: Wait\n              spec:\n                duration: 0s\n";
    app.put_pipeline_yaml(&t, yaml).await;
    let receiver = TestReceiver::slow(Duration::from_millis(600), 200).await;
    create_rule(
        &app,
        &t,
        "slow",
        json!({"sendEverything": true, "url": receiver.url}),
    )
    .await;
    // While the ping is in flight it cannot be redelivered.
    let ping = deliveries_until(&app, &t, "slow", |d| !d.is_empty()).await;
    wait_for(&receiver, 1).await;
    let res = post(
        &app,
        &t,
        &format!(
            "{}/slow/deliveries/{}/redeliver",
            rules_path(&t),
            ping[0]["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_error(res, 400, "INVALID_REQUEST", "being attempted right now").await;
    fire(&app, &t).await;
    fire(&app, &t).await;
    let got = wait_for(&receiver, 13).await;
    assert_eq!(got.len(), 13);
    let mut by_execution: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for r in &got[1..] {
        let body: Value = serde_json::from_str(&r.body).unwrap();
        let stage = body["data"]["stage"]["id"]
            .as_str()
            .map(|s| format!(":{s}"))
            .unwrap_or_default();
        by_execution
            .entry(body["data"]["executionId"].as_str().unwrap().to_owned())
            .or_default()
            .push(format!("{}{stage}", body["eventType"].as_str().unwrap()));
    }
    assert_eq!(by_execution.len(), 2);
    for events in by_execution.values() {
        assert_eq!(
            events,
            &[
                "pipeline_start",
                "stage_start:a",
                "stage_end:a",
                "stage_start:b",
                "stage_end:b",
                "pipeline_end"
            ]
        );
    }
    // Each delivery was attempted exactly once.
    let items = deliveries_until(&app, &t, "slow", |d| {
        d.len() == 13 && d.iter().all(|d| d["status"] == "Success")
    })
    .await;
    assert!(items.iter().all(|d| d["attemptCount"] == 1), "{items:?}");
}

#[tokio::test]
async fn pausing_twice_or_before_the_start_sends_no_extra_events() {
    let app = app().await;
    let t = app.create_trigger().await;
    let yaml = "pipeline:\n  name: deploy\n  identifier: deploy\n  stages:\n    - stage:\n        name: Build\n        identifier: build\n        steps:\n          - step:\n              identifier: hold\n              type: Wait\n              spec:\n                duration: 2s\n";
    app.put_pipeline_yaml(&t, yaml).await;
    let receiver = TestReceiver::start(200, "", &[]).await;
    create_rule(
        &app,
        &t,
        "all",
        json!({"sendEverything": true, "url": receiver.url}),
    )
    .await;
    fire(&app, &t).await;
    wait_for(&receiver, 3).await;
    let plan = latest_execution(&app, &t).await;
    for _ in 0..3 {
        let res = post(
            &app,
            &t,
            &format!("{}/executions/{plan}/pause", t.project_path()),
            None,
        )
        .await;
        assert_eq!(res.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        event_types(&receiver.requests()),
        [
            "ping",
            "pipeline_start",
            "stage_start",
            "pipeline_pause",
            "stage_pause"
        ]
    );
}

#[tokio::test]
async fn test_samples_are_never_sent_again_and_disabling_ends_pending_deliveries() {
    let app = app().await;
    let t = app.create_trigger().await;
    let port = crate::durability::free_port();
    create_rule(
        &app,
        &t,
        "r",
        json!({"sendEverything": true, "url": format!("http://127.0.0.1:{port}/")}),
    )
    .await;
    let res = post(&app, &t, &format!("{}/r/test", rules_path(&t)), None).await;
    let test = success_data(res).await;
    assert_eq!(test["status"], "Failed");
    let res = post(
        &app,
        &t,
        &format!(
            "{}/r/deliveries/{}/redeliver",
            rules_path(&t),
            test["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_error(res, 400, "INVALID_REQUEST", "test sample").await;
    // Disabling the rule ends its pending ping (the receiver is down) as Failed.
    let res = put_rule(&app, &t, "r", json!({"enabled": false, "sendEverything": true, "url": format!("http://127.0.0.1:{port}/")})).await;
    assert_eq!(res.status(), 200);
    let items =
        deliveries_until(&app, &t, "r", |d| d.iter().all(|d| d["status"] == "Failed")).await;
    assert!(items.iter().all(|d| d["status"] == "Failed"), "{items:?}");
    // Enabled again with a receiver up, recover sends the ping and the new ping, not the test.
    let receiver = TestReceiver::scripted(port, vec![], answer(200, &[])).await;
    let res = put_rule(
        &app,
        &t,
        "r",
        json!({"sendEverything": true, "url": format!("http://127.0.0.1:{port}/")}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let res = post(
        &app,
        &t,
        &format!("{}/r/recover", rules_path(&t)),
        Some(json!({"since": 0})),
    )
    .await;
    assert_eq!(success_data(res).await["queued"], 1);
    let got = wait_for(&receiver, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        event_types(&receiver.requests()),
        ["ping", "ping"],
        "{got:?}"
    );
    assert!(receiver
        .requests()
        .iter()
        .all(|r| !r.body.contains("\"test\":true")));
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_hanging_receiver_beyond_the_grace_period() {
    let mut app = spawn_app_with(|s| {
        s.shutdown_grace_secs = 1;
        s.outbound.timeout = "60s".into();
        // Every permit busy: the dispatcher waits for one, and must still stop.
        s.outbound.concurrency = 1;
    })
    .await;
    let t = app.create_trigger().await;
    let receiver = TestReceiver::slow(Duration::from_secs(60), 200).await;
    create_rule(
        &app,
        &t,
        "hang",
        json!({"sendEverything": true, "url": receiver.url}),
    )
    .await;
    wait_for(&receiver, 1).await;
    let started = Instant::now();
    app.stop().await;
    // A generous bound: without the grace period this waits for the 60 s receiver.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn later_events_wait_with_a_retried_first_event_of_their_execution() {
    let app = spawn_app_with(|s| {
        s.outbound.retry_schedule = ["0s", "3s", "3s"].map(String::from).to_vec();
    })
    .await;
    let t = app.create_trigger().await;
    let port = crate::durability::free_port();
    create_rule(
        &app,
        &t,
        "down",
        json!({"pipelines": ["*"], "events": ["*"], "url": format!("http://127.0.0.1:{port}/")}),
    )
    .await;
    fire(&app, &t).await;
    let items = deliveries_until(&app, &t, "down", |d| {
        d.len() == 5
            && d.iter().any(|d| {
                d["eventType"] == "pipeline_start"
                    && d["attemptCount"] == 1
                    && d["nextAttemptAt"].is_i64()
            })
    })
    .await;
    let head = items
        .iter()
        .find(|d| d["eventType"] == "pipeline_start")
        .expect("pipeline_start");
    let retry_at = head["nextAttemptAt"].as_i64().unwrap();
    assert!(
        retry_at > head["createdAt"].as_i64().unwrap() + 2000,
        "{head}"
    );
    let later: Vec<_> = items
        .iter()
        .filter(|d| d["eventType"] != "pipeline_start" && d["eventType"] != "ping")
        .collect();
    assert_eq!(later.len(), 3);
    for later in later {
        assert_eq!(later["attemptCount"], 0, "{later}");
        assert_eq!(
            later["nextAttemptAt"].as_i64(),
            Some(retry_at),
            "waits with the head: {later}"
        );
    }
}

#[tokio::test]
async fn unknown_rules_and_deliveries_are_404s() {
    let app = app().await;
    let t = app.create_trigger().await;
    let nope = format!("{}/nope", rules_path(&t));
    for (method, path, body) in [
        (Method::GET, nope.clone(), None),
        (Method::DELETE, nope.clone(), None),
        (Method::POST, format!("{nope}/rotate-secret"), None),
        (Method::POST, format!("{nope}/test"), None),
        (
            Method::POST,
            format!("{nope}/recover"),
            Some(json!({"since": 0})),
        ),
        (Method::GET, format!("{nope}/deliveries"), None),
    ] {
        let res = call(&app, &t, method, &path, body).await;
        assert_error(
            res,
            404,
            "RESOURCE_NOT_FOUND",
            "Event rule nope does not exist",
        )
        .await;
    }
    let receiver = TestReceiver::start(200, "", &[]).await;
    create_rule(
        &app,
        &t,
        "ok",
        json!({"sendEverything": true, "url": receiver.url}),
    )
    .await;
    let ok = format!("{}/ok", rules_path(&t));
    for path in [
        format!("{ok}/deliveries/0123456789abcdef01234567"),
        format!("{ok}/deliveries/not-an-id"),
    ] {
        let res = call(&app, &t, Method::GET, &path, None).await;
        assert_error(
            res,
            404,
            "RESOURCE_NOT_FOUND",
            "does not exist for event rule ok",
        )
        .await;
        let res = post(&app, &t, &format!("{path}/redeliver"), None).await;
        assert_error(
            res,
            404,
            "RESOURCE_NOT_FOUND",
            "does not exist for event rule ok",
        )
        .await;
    }
    let res = call(
        &app,
        &t,
        Method::GET,
        &format!("{ok}/deliveries?status=Lost"),
        None,
    )
    .await;
    assert_error(res, 400, "INVALID_REQUEST", "Pending, Success, Failed").await;
    let res = post(
        &app,
        &t,
        &format!("{ok}/test"),
        Some(json!({"colour": "red"})),
    )
    .await;
    assert_error(res, 400, "INVALID_REQUEST", "colour").await;
}
