//! `POST /webhook/custom/{token}/v3` and `/webhook/custom/v2` (DESIGN §2.1, §2.2): the success
//! envelope, every check in its documented order, body limits and shapes, idempotency and keys.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    assert_error, spawn_app, spawn_app_with, success_data, trigger_yaml, TestApp, TestTrigger,
};

const SAMPLE_BODY: &str = r#"{"sample_key": "sample_value"}"#;

/// A token of the right shape that no trigger has.
const UNKNOWN_TOKEN: &str = "AAAAAAAAAAAAAAAAAAAAAA";

/// The value of a response header, when present and ASCII.
fn header(res: &Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The five identifier query parameters of `t`, in URL order.
fn identifiers(t: &TestTrigger) -> Vec<(&'static str, String)> {
    vec![
        ("accountIdentifier", t.account.clone()),
        ("orgIdentifier", t.org.clone()),
        ("projectIdentifier", t.project.clone()),
        ("pipelineIdentifier", t.pipeline.clone()),
        ("triggerIdentifier", t.trigger.clone()),
    ]
}

/// `/webhook/custom/<token>/v3?<params>`.
fn v3_path(token: &str, params: &[(&str, String)]) -> String {
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("/webhook/custom/{token}/v3?{}", query.join("&"))
}

/// `/webhook/custom/v2?<params>`.
fn v2_path(params: &[(&str, String)]) -> String {
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("/webhook/custom/v2?{}", query.join("&"))
}

/// Disables or enables a trigger with the account's admin key.
async fn set_enabled(app: &TestApp, t: &TestTrigger, enabled: bool) {
    let res = app
        .with_key(Method::PATCH, &t.trigger_path(), &t.admin_key)
        .json(&json!({ "enabled": enabled }))
        .send()
        .await
        .expect("request");
    let data = success_data(res).await;
    assert_eq!(data["enabled"], enabled);
}

/// Adds a second trigger `id` to the pipeline of `t`.
async fn second_trigger(app: &TestApp, t: &TestTrigger, id: &str) -> TestTrigger {
    let mut other = TestTrigger {
        account: t.account.clone(),
        org: t.org.clone(),
        project: t.project.clone(),
        pipeline: t.pipeline.clone(),
        trigger: id.into(),
        token: String::new(),
        admin_key: t.admin_key.clone(),
    };
    let res = app.put_trigger_yaml(&other, &trigger_yaml(id)).await;
    assert_eq!(res.status(), 201, "second trigger created");
    let data = success_data(res).await;
    other.token = data["customWebhookToken"].as_str().expect("token").into();
    other
}

/// POSTs `body` with an `Idempotency-Key`.
async fn post_idempotent(app: &TestApp, path: &str, key: &str, body: &str) -> Response {
    app.request(Method::POST, path)
        .header("content-type", "application/json")
        .header("Idempotency-Key", key)
        .body(body.to_owned())
        .send()
        .await
        .expect("request")
}

/// The eventCorrelationId of a successful intake response.
async fn event_id(res: Response) -> String {
    let data = success_data(res).await;
    data["eventCorrelationId"]
        .as_str()
        .expect("eventCorrelationId")
        .to_owned()
}

/// Sends a POST with `Transfer-Encoding: chunked` over a raw connection, so no `Content-Length`
/// is ever declared, and ends the body only when `finish`. Returns the status and the JSON body
/// of the response, or fails when none arrives within a deadline (a server that waits for the
/// end of an unfinished body would hang here).
async fn post_chunked(app: &TestApp, path: &str, chunks: &[Vec<u8>], finish: bool) -> (u16, Value) {
    let host = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).await.expect("connect");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in chunks {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    if finish {
        request.extend_from_slice(b"0\r\n\r\n");
    }
    stream.write_all(&request).await.expect("write");
    stream.flush().await.expect("flush");

    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .expect("a Content-Length on the response");
                while buf.len() < end + 4 + length {
                    let n = stream.read(&mut chunk).await.expect("read body");
                    assert!(n > 0, "connection closed mid-body");
                    buf.extend_from_slice(&chunk[..n]);
                }
                let status: u16 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("status line");
                let body: Value =
                    serde_json::from_slice(&buf[end + 4..end + 4 + length]).expect("JSON body");
                return (status, body);
            }
            let n = stream.read(&mut chunk).await.expect("read head");
            assert!(n > 0, "connection closed before a response: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response before the body ended")
}

// ---- the success path ------------------------------------------------------------------------

#[tokio::test]
async fn v3_webhook_answers_with_the_harness_success_envelope() {
    // Arrange
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    // Act
    let res = app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await;

    // Assert
    assert_eq!(res.status(), 200);
    let correlation_header = header(&res, "x-correlation-id").expect("X-Correlation-Id");
    assert_eq!(
        header(&res, "x-trigger-status").as_deref(),
        Some("TARGET_EXECUTION_REQUESTED")
    );
    let body: Value = res.json().await.expect("json");
    let keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["status", "data", "metaData", "correlationId"],
        "{body}"
    );
    assert_eq!(body["status"], "SUCCESS");
    assert!(body["metaData"].is_null());
    assert_eq!(body["correlationId"], correlation_header.as_str());
    let uuid = uuid::Uuid::parse_str(&correlation_header).expect("a UUID");
    assert_eq!(uuid.get_version_num(), 4, "a UUID v4: {uuid}");

    let data = body["data"].as_object().expect("data");
    let data_keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(
        data_keys,
        ["eventCorrelationId", "apiUrl", "uiUrl", "uiSetupUrl"]
    );
    let id = data["eventCorrelationId"].as_str().expect("id");
    assert_eq!(id.len(), 24, "{id}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "lowercase hex: {id}"
    );
    let base = &app.address;
    assert_eq!(
        data["apiUrl"],
        format!("{base}/webhook/triggerExecutionDetails/{id}?accountIdentifier=acc")
    );
    assert_eq!(
        data["uiUrl"],
        format!("{base}/ui/accounts/acc/orgs/default/projects/proj/events/{id}")
    );
    assert_eq!(
        data["uiSetupUrl"],
        format!(
            "{base}/ui/accounts/acc/orgs/default/projects/proj/pipelines/deploy/triggers/{}",
            t.trigger
        )
    );
}

#[tokio::test]
async fn each_event_gets_a_fresh_event_id_and_correlation_id() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    let first = app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await;
    let second = app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await;

    assert_ne!(
        header(&first, "x-correlation-id"),
        header(&second, "x-correlation-id")
    );
    assert_ne!(event_id(first).await, event_id(second).await);
}

#[tokio::test]
async fn v3_webhook_works_under_the_harness_alias_prefix() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    let res = app
        .post_webhook(
            &format!("/gateway/pipeline/api{}", t.v3_path()),
            None,
            SAMPLE_BODY,
        )
        .await;

    assert_eq!(
        header(&res, "x-trigger-status").as_deref(),
        Some("TARGET_EXECUTION_REQUESTED")
    );
    let data = success_data(res).await;
    let id = data["eventCorrelationId"].as_str().expect("id");
    // Generated links use the root form, not the alias.
    assert_eq!(
        data["apiUrl"],
        format!(
            "{}/webhook/triggerExecutionDetails/{id}?accountIdentifier=acc",
            app.address
        )
    );
}

#[tokio::test]
async fn v3_webhook_needs_only_account_org_and_project_identifiers() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let path = v3_path(&t.token, &identifiers(&t)[..3]);

    let res = app.post_webhook(&path, None, SAMPLE_BODY).await;

    success_data(res).await;
}

// ---- step 2: the token -------------------------------------------------------------------------

#[tokio::test]
async fn unknown_token_is_rejected_with_400() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    for token in [UNKNOWN_TOKEN, "not-a-token"] {
        let res = app
            .post_webhook(&v3_path(token, &identifiers(&t)), None, SAMPLE_BODY)
            .await;

        let body = assert_error(res, 400, "INVALID_REQUEST", "").await;
        assert_eq!(
            body["message"],
            format!("No custom trigger found for the used custom webhook token: {token}")
        );
    }
}

// ---- step 3: identifiers -----------------------------------------------------------------------

#[tokio::test]
async fn missing_account_org_or_project_identifier_is_rejected_naming_it() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    for missing in ["accountIdentifier", "orgIdentifier", "projectIdentifier"] {
        let params: Vec<_> = identifiers(&t)
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();

        let res = app
            .post_webhook(&v3_path(&t.token, &params), None, SAMPLE_BODY)
            .await;

        assert_error(res, 400, "INVALID_REQUEST", missing).await;
    }
}

#[tokio::test]
async fn identifier_that_differs_from_the_tokens_trigger_is_rejected_naming_it() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    for wrong in [
        "accountIdentifier",
        "orgIdentifier",
        "projectIdentifier",
        "pipelineIdentifier",
        "triggerIdentifier",
    ] {
        let params: Vec<_> = identifiers(&t)
            .into_iter()
            .map(|(k, v)| {
                if k == wrong {
                    (k, "elsewhere".into())
                } else {
                    (k, v)
                }
            })
            .collect();

        let res = app
            .post_webhook(&v3_path(&t.token, &params), None, SAMPLE_BODY)
            .await;

        let body = assert_error(res, 400, "INVALID_REQUEST", wrong).await;
        assert!(
            !body["message"]
                .as_str()
                .unwrap()
                .contains("No custom trigger found"),
            "the token is known: {body}"
        );
    }
}

// ---- step 4: disabled triggers -----------------------------------------------------------------

#[tokio::test]
async fn disabled_trigger_is_rejected_with_400_and_works_again_when_re_enabled() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    set_enabled(&app, &t, false).await;
    let disabled = app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await;
    set_enabled(&app, &t, true).await;
    let enabled = app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await;

    let body = assert_error(disabled, 400, "INVALID_REQUEST", "").await;
    assert_eq!(
        body["message"],
        format!(
            "No enabled custom trigger found for the used custom webhook token: {}",
            t.token
        )
    );
    success_data(enabled).await;
}

#[tokio::test]
async fn a_refused_request_records_no_event() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    set_enabled(&app, &t, false).await;

    let res = app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await;

    assert_eq!(res.status(), 400);
    assert!(app.events(&t).await.is_empty());
}

// ---- the order of the checks -------------------------------------------------------------------

#[tokio::test]
async fn unknown_token_is_reported_before_a_missing_identifier() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let without_account: Vec<_> = identifiers(&t)[1..].to_vec();

    let res = app
        .post_webhook(&v3_path(UNKNOWN_TOKEN, &without_account), None, SAMPLE_BODY)
        .await;

    assert_error(
        res,
        400,
        "INVALID_REQUEST",
        "No custom trigger found for the used custom webhook token",
    )
    .await;
}

#[tokio::test]
async fn mismatched_identifier_is_reported_before_a_disabled_trigger() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    set_enabled(&app, &t, false).await;
    let params: Vec<_> = identifiers(&t)
        .into_iter()
        .map(|(k, v)| {
            if k == "projectIdentifier" {
                (k, "elsewhere".into())
            } else {
                (k, v)
            }
        })
        .collect();

    let res = app
        .post_webhook(&v3_path(&t.token, &params), None, SAMPLE_BODY)
        .await;

    let body = assert_error(res, 400, "INVALID_REQUEST", "projectIdentifier").await;
    assert!(!body["message"].as_str().unwrap().contains("No enabled"));
}

#[tokio::test]
async fn mismatched_identifier_is_reported_before_a_bad_key() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let params: Vec<_> = identifiers(&t)
        .into_iter()
        .map(|(k, v)| {
            if k == "orgIdentifier" {
                (k, "elsewhere".into())
            } else {
                (k, v)
            }
        })
        .collect();

    let res = app
        .post_webhook(&v3_path(&t.token, &params), Some("garbage"), SAMPLE_BODY)
        .await;

    assert_error(res, 400, "INVALID_REQUEST", "orgIdentifier").await;
}

#[tokio::test]
async fn disabled_trigger_is_reported_before_a_bad_key() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    set_enabled(&app, &t, false).await;

    let res = app
        .post_webhook(&t.v3_path(), Some("garbage"), SAMPLE_BODY)
        .await;

    assert_error(
        res,
        400,
        "INVALID_REQUEST",
        "No enabled custom trigger found for the used custom webhook token",
    )
    .await;
}

#[tokio::test]
async fn disabled_trigger_is_reported_before_the_mandate() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    app.set_mandate("acc", "", "", true, false).await;
    set_enabled(&app, &t, false).await;

    let res = app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await;

    assert_error(
        res,
        400,
        "INVALID_REQUEST",
        "No enabled custom trigger found",
    )
    .await;
}

#[tokio::test]
async fn oversized_body_is_reported_before_an_unknown_token() {
    let app = spawn_app_with(|s| s.max_body_bytes = 1024).await;
    let t = app.create_trigger().await;

    let res = app
        .post_webhook(
            &v3_path(UNKNOWN_TOKEN, &identifiers(&t)),
            None,
            &"x".repeat(1025),
        )
        .await;

    assert_error(res, 413, "PAYLOAD_TOO_LARGE", "").await;
}

#[tokio::test]
async fn v2_body_over_the_limit_is_rejected_with_413_before_the_key_is_checked() {
    let app = spawn_app_with(|s| s.max_body_bytes = 1024).await;
    let t = app.create_trigger().await;

    let res = app
        .post_webhook(&t.v2_path(), None, &"x".repeat(1025))
        .await;

    assert_error(res, 413, "PAYLOAD_TOO_LARGE", "").await;
}

// ---- step 1: the body limit --------------------------------------------------------------------

#[tokio::test]
async fn body_over_the_limit_with_content_length_is_rejected_with_413() {
    let app = spawn_app_with(|s| s.max_body_bytes = 1024).await;
    let t = app.create_trigger().await;

    let res = app
        .post_webhook(&t.v3_path(), None, &"x".repeat(1025))
        .await;

    assert_error(res, 413, "PAYLOAD_TOO_LARGE", "").await;
    assert!(app.events(&t).await.is_empty());
}

#[tokio::test]
async fn body_exactly_at_the_limit_is_accepted_whole() {
    let app = spawn_app_with(|s| s.max_body_bytes = 1024).await;
    let t = app.create_trigger().await;
    let filler = "a".repeat(1024 - r#"{"k":""}"#.len());
    let body = format!(r#"{{"k":"{filler}"}}"#);
    assert_eq!(body.len(), 1024);

    let res = app.post_webhook(&t.v3_path(), None, &body).await;

    let id = event_id(res).await;
    let status = success_data(app.get_status(&id, "acc", None).await).await;
    assert_eq!(status["webhookProcessingDetails"]["payload"], body.as_str());
}

#[tokio::test]
async fn chunked_body_within_the_limit_is_accepted() {
    // The control for the streaming test below: the raw chunked client itself works.
    let app = spawn_app_with(|s| s.max_body_bytes = 1024).await;
    let t = app.create_trigger().await;
    let chunks = vec![
        br#"{"sample_key": "#.to_vec(),
        br#""sample_value"}"#.to_vec(),
    ];

    let (status, body) = post_chunked(&app, &t.v3_path(), &chunks, true).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "SUCCESS");
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_rejected_with_413() {
    let app = spawn_app_with(|s| s.max_body_bytes = 1024).await;
    let t = app.create_trigger().await;
    let chunks = vec![vec![b'x'; 512]; 3];

    let (status, body) = post_chunked(&app, &t.v3_path(), &chunks, true).await;

    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "PAYLOAD_TOO_LARGE");
    assert!(app.events(&t).await.is_empty());
}

#[tokio::test]
async fn streamed_body_is_cut_off_at_the_limit_without_waiting_for_its_end() {
    let app = spawn_app_with(|s| s.max_body_bytes = 1024).await;
    let t = app.create_trigger().await;
    // 1280 bytes sent, no length declared and no final chunk: only a server that counts while
    // streaming can answer.
    let chunks = vec![vec![b'x'; 256]; 5];

    let (status, body) = post_chunked(&app, &t.v3_path(), &chunks, false).await;

    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(body["status"], "ERROR");
}

// ---- body shapes -------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_utf8_body_is_rejected_with_400() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    let res = app
        .request(Method::POST, &t.v3_path())
        .header("content-type", "application/json")
        .body(b"{\"a\": \"\xff\xfe\"}".to_vec())
        .send()
        .await
        .expect("request");

    assert_error(res, 400, "INVALID_REQUEST", "UTF-8").await;
    assert!(app.events(&t).await.is_empty());
}

#[tokio::test]
async fn plain_text_body_is_accepted_and_kept_as_a_raw_string() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let text = "build finished: ok {not json";

    let res = app
        .request(Method::POST, &t.v3_path())
        .header("content-type", "text/plain")
        .body(text)
        .send()
        .await
        .expect("request");

    let id = event_id(res).await;
    let status = success_data(app.get_status(&id, "acc", None).await).await;
    assert_eq!(status["webhookProcessingDetails"]["payload"], text);
}

#[tokio::test]
async fn empty_body_is_accepted() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    let res = app.post_webhook(&t.v3_path(), None, "").await;

    let id = event_id(res).await;
    let status = success_data(app.get_status(&id, "acc", None).await).await;
    assert_eq!(status["webhookProcessingDetails"]["payload"], "");
}

#[tokio::test]
async fn json_nested_129_deep_is_rejected_and_128_deep_is_accepted() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = |depth: usize| format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));

    let too_deep = app.post_webhook(&t.v3_path(), None, &nested(129)).await;
    let too_deep_objects = app.post_webhook(&t.v3_path(), None, &objects(129)).await;
    let at_limit = app.post_webhook(&t.v3_path(), None, &nested(128)).await;
    let at_limit_objects = app.post_webhook(&t.v3_path(), None, &objects(128)).await;

    assert_error(too_deep, 400, "INVALID_REQUEST", "128").await;
    assert_error(too_deep_objects, 400, "INVALID_REQUEST", "128").await;
    success_data(at_limit).await;
    success_data(at_limit_objects).await;
}

// ---- v2 ----------------------------------------------------------------------------------------

#[tokio::test]
async fn v2_without_a_key_is_rejected_with_the_mandate_message_even_when_the_mandate_is_off() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    let res = app.post_webhook(&t.v2_path(), None, SAMPLE_BODY).await;

    let body = assert_error(res, 400, "INVALID_REQUEST", "").await;
    assert_eq!(
        body["message"],
        "Invalid request: Authorization is mandatory for custom triggers in acc:default:proj. Please add X-Api-Key header in the request"
    );
}

#[tokio::test]
async fn v2_without_pipeline_or_trigger_identifier_is_rejected_naming_it() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    for missing in ["pipelineIdentifier", "triggerIdentifier"] {
        let params: Vec<_> = identifiers(&t)
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();

        let res = app
            .post_webhook(&v2_path(&params), Some(&t.admin_key), SAMPLE_BODY)
            .await;

        assert_error(res, 400, "INVALID_REQUEST", missing).await;
    }
}

#[tokio::test]
async fn v2_with_a_valid_key_records_a_readable_event() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let executor = app.create_key("acc", "executor", None).await;

    let res = app
        .post_webhook(&t.v2_path(), Some(&executor), SAMPLE_BODY)
        .await;

    assert_eq!(
        header(&res, "x-trigger-status").as_deref(),
        Some("TARGET_EXECUTION_REQUESTED")
    );
    let id = event_id(res).await;
    let status = success_data(app.get_status(&id, "acc", None).await).await;
    let details = &status["webhookProcessingDetails"];
    assert_eq!(details["eventId"], id.as_str());
    assert_eq!(details["triggerIdentifier"], "on_push");
    assert_eq!(details["payload"], SAMPLE_BODY);
}

#[tokio::test]
async fn v2_with_unknown_trigger_identifiers_is_rejected_with_400() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    for wrong in ["pipelineIdentifier", "triggerIdentifier"] {
        let params: Vec<_> = identifiers(&t)
            .into_iter()
            .map(|(k, v)| {
                if k == wrong {
                    (k, "nothing_here".into())
                } else {
                    (k, v)
                }
            })
            .collect();

        let res = app
            .post_webhook(&v2_path(&params), Some(&t.admin_key), SAMPLE_BODY)
            .await;

        assert_error(res, 400, "INVALID_REQUEST", "No custom trigger found").await;
    }
}

#[tokio::test]
async fn v2_with_a_disabled_trigger_is_rejected_with_400() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    set_enabled(&app, &t, false).await;

    let res = app
        .post_webhook(&t.v2_path(), Some(&t.admin_key), SAMPLE_BODY)
        .await;

    assert_error(
        res,
        400,
        "INVALID_REQUEST",
        "No enabled custom trigger found",
    )
    .await;
}

#[tokio::test]
async fn v2_with_a_key_of_another_account_is_rejected_with_401() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    app.create_account("other").await;
    let foreign = app.create_key("other", "admin", None).await;

    let res = app
        .post_webhook(&t.v2_path(), Some(&foreign), SAMPLE_BODY)
        .await;

    assert_error(
        res,
        401,
        "INVALID_TOKEN",
        "Invalid call: Invalid token or token expired. Account id for API called: acc",
    )
    .await;
}

// ---- step 6: the per-trigger rate limit --------------------------------------------------------

#[tokio::test]
async fn trigger_over_its_rate_limit_answers_429_with_retry_after() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    // A burst of 2 that refills once every 100 s: the third request in a row is over.
    let yaml = format!(
        "{}  rateLimit:\n    perSecond: 0.01\n    burst: 2\n",
        trigger_yaml(&t.trigger)
    );
    let res = app.put_trigger_yaml(&t, &yaml).await;
    assert_eq!(
        res.status(),
        200,
        "trigger updated: {}",
        res.text().await.unwrap()
    );

    let first = app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await;
    let second = app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await;
    let third = app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await;

    success_data(first).await;
    success_data(second).await;
    assert_eq!(third.status(), 429, "the third request is over the limit");
    let retry_after = header(&third, "retry-after").expect("Retry-After on a 429");
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s >= 1),
        "Retry-After in seconds: {retry_after}"
    );
    assert_error(third, 429, "TOO_MANY_REQUESTS", "").await;
    assert_eq!(
        app.events(&t).await.len(),
        2,
        "the refused request is not recorded"
    );
}

#[tokio::test]
async fn a_bad_key_is_reported_before_the_rate_limit() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let yaml = format!(
        "{}  rateLimit:\n    perSecond: 0.01\n    burst: 1\n",
        trigger_yaml(&t.trigger)
    );
    assert_eq!(app.put_trigger_yaml(&t, &yaml).await.status(), 200);
    success_data(app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await).await;

    let res = app
        .post_webhook(&t.v3_path(), Some("garbage"), SAMPLE_BODY)
        .await;

    assert_error(res, 401, "INVALID_TOKEN", "").await;
}

// ---- step 7: idempotency -----------------------------------------------------------------------

#[tokio::test]
async fn repeated_idempotency_key_replays_the_original_event() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    let first = post_idempotent(&app, &t.v3_path(), "delivery-1", SAMPLE_BODY).await;
    let second = post_idempotent(&app, &t.v3_path(), "delivery-1", SAMPLE_BODY).await;

    assert_eq!(header(&first, "idempotent-replayed"), None);
    assert_eq!(
        header(&second, "idempotent-replayed").as_deref(),
        Some("true")
    );
    assert_eq!(
        header(&second, "x-trigger-status").as_deref(),
        Some("TARGET_EXECUTION_REQUESTED")
    );
    let (first_id, second_id) = (event_id(first).await, event_id(second).await);
    assert_eq!(first_id, second_id);
    let events = app.events(&t).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["eventId"], first_id.as_str());
}

#[tokio::test]
async fn a_different_idempotency_key_records_a_new_event() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    let first = post_idempotent(&app, &t.v3_path(), "delivery-1", SAMPLE_BODY).await;
    let second = post_idempotent(&app, &t.v3_path(), "delivery-2", SAMPLE_BODY).await;

    assert_eq!(header(&second, "idempotent-replayed"), None);
    assert_ne!(event_id(first).await, event_id(second).await);
    assert_eq!(app.events(&t).await.len(), 2);
}

#[tokio::test]
async fn the_same_idempotency_key_on_another_trigger_records_a_new_event() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let other = second_trigger(&app, &t, "on_tag").await;

    let first = post_idempotent(&app, &t.v3_path(), "delivery-1", SAMPLE_BODY).await;
    let second = post_idempotent(&app, &other.v3_path(), "delivery-1", SAMPLE_BODY).await;

    assert_eq!(header(&second, "idempotent-replayed"), None);
    assert_ne!(event_id(first).await, event_id(second).await);
    assert_eq!(app.events(&t).await.len(), 2);
}

#[tokio::test]
async fn concurrent_requests_with_one_idempotency_key_record_one_event() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let path = t.v3_path();

    let responses = futures_util::future::join_all(
        (0..8).map(|_| post_idempotent(&app, &path, "delivery-1", SAMPLE_BODY)),
    )
    .await;

    let mut ids = Vec::new();
    let mut replayed = 0;
    for res in responses {
        if header(&res, "idempotent-replayed").as_deref() == Some("true") {
            replayed += 1;
        }
        ids.push(event_id(res).await);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one event id for all: {ids:?}");
    assert_eq!(replayed, 7, "all but the first are replays");
    assert_eq!(app.events(&t).await.len(), 1);
}

#[tokio::test]
async fn a_repeated_idempotency_key_with_a_bad_api_key_is_refused_not_replayed() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let first = post_idempotent(&app, &t.v3_path(), "delivery-1", SAMPLE_BODY).await;
    success_data(first).await;

    let res = app
        .request(Method::POST, &t.v3_path())
        .header("content-type", "application/json")
        .header("Idempotency-Key", "delivery-1")
        .header("X-Api-Key", "garbage")
        .body(SAMPLE_BODY)
        .send()
        .await
        .expect("request");

    assert_eq!(header(&res, "idempotent-replayed"), None);
    assert_error(res, 401, "INVALID_TOKEN", "").await;
}

#[tokio::test]
async fn invalid_idempotency_key_is_rejected_with_400() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    let res = post_idempotent(&app, &t.v3_path(), &"k".repeat(300), SAMPLE_BODY).await;

    assert_error(res, 400, "INVALID_REQUEST", "Idempotency-Key").await;
    assert!(app.events(&t).await.is_empty());
}

// ---- step 5: keys ------------------------------------------------------------------------------

#[tokio::test]
async fn keys_allowed_in_the_project_are_accepted_when_the_mandate_is_off() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let scoped = app
        .create_key("acc", "executor", Some(vec!["default/proj"]))
        .await;

    for key in [&t.admin_key, &scoped, &app.root_key] {
        let res = app.post_webhook(&t.v3_path(), Some(key), SAMPLE_BODY).await;

        success_data(res).await;
    }
}

#[tokio::test]
async fn executor_key_limited_to_another_project_is_denied_with_403() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let key = app
        .create_key("acc", "executor", Some(vec!["default/other"]))
        .await;

    let res = app
        .post_webhook(&t.v3_path(), Some(&key), SAMPLE_BODY)
        .await;

    assert_error(res, 403, "NG_ACCESS_DENIED", "").await;
    assert!(app.events(&t).await.is_empty());
}

#[tokio::test]
async fn key_of_another_account_is_rejected_with_401() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    app.create_account("other").await;
    let foreign = app.create_key("other", "executor", None).await;

    let res = app
        .post_webhook(&t.v3_path(), Some(&foreign), SAMPLE_BODY)
        .await;

    let body = assert_error(res, 401, "INVALID_TOKEN", "").await;
    assert_eq!(
        body["message"],
        "Invalid call: Invalid token or token expired. Account id for API called: acc"
    );
}

#[tokio::test]
async fn malformed_key_is_rejected_with_401() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let bad_secret = {
        let mut k = t.admin_key.clone();
        k.pop();
        k.push(if t.admin_key.ends_with('A') { 'B' } else { 'A' });
        k
    };

    for key in [
        "garbage",
        "pat.acc",
        "pat.acc.nothex.secret",
        "sample_api_key",
        bad_secret.as_str(),
    ] {
        let res = app.post_webhook(&t.v3_path(), Some(key), SAMPLE_BODY).await;

        assert_error(
            res,
            401,
            "INVALID_TOKEN",
            "Invalid call: Invalid token or token expired. Account id for API called: acc",
        )
        .await;
    }
    assert!(app.events(&t).await.is_empty());
}

// ---- trigger extensions: signature, allowed sources, dry run ---------------------------------

/// Stores `t` again with `extra` YAML appended at trigger level.
async fn with_extension(app: &TestApp, t: &TestTrigger, extra: &str) {
    let yaml = format!("{}{extra}", trigger_yaml(&t.trigger));
    let res = app.put_trigger_yaml(t, &yaml).await;
    assert_eq!(
        res.status(),
        200,
        "trigger updated: {}",
        res.text().await.unwrap()
    );
}

const SIGNING_SECRET: &str = "a-shared-secret-of-some-length";

fn github_signature(body: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SIGNING_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post_signed(app: &TestApp, t: &TestTrigger, signature: Option<&str>) -> Response {
    let mut req = app
        .request(Method::POST, &t.v3_path())
        .header("content-type", "application/json")
        .body(SAMPLE_BODY);
    if let Some(sig) = signature {
        req = req.header("X-Hub-Signature-256", sig);
    }
    req.send().await.expect("request")
}

#[tokio::test]
async fn a_signed_trigger_refuses_a_missing_or_wrong_signature_with_401() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    with_extension(
        &app,
        &t,
        &format!("  signature:\n    type: hmac-sha256\n    header: X-Hub-Signature-256\n    secret: {SIGNING_SECRET}\n    prefix: \"sha256=\"\n"),
    )
    .await;

    let missing = post_signed(&app, &t, None).await;
    let wrong = post_signed(&app, &t, Some(&github_signature("another body"))).await;

    assert_error(missing, 401, "INVALID_TOKEN", "X-Hub-Signature-256").await;
    assert_error(wrong, 401, "INVALID_TOKEN", "X-Hub-Signature-256").await;
    assert!(app.events(&t).await.is_empty(), "nothing recorded");
}

#[tokio::test]
async fn a_correct_signature_is_accepted_and_never_stored() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    with_extension(
        &app,
        &t,
        &format!("  signature:\n    header: X-Hub-Signature-256\n    secret: {SIGNING_SECRET}\n    prefix: \"sha256=\"\n"),
    )
    .await;
    let signature = github_signature(SAMPLE_BODY);

    let res = post_signed(&app, &t, Some(&signature)).await;

    success_data(res).await;
    let events = app.events(&t).await;
    assert_eq!(events.len(), 1);
    let stored = events[0]["headers"].to_string();
    assert!(
        !stored.contains(&signature[7..]),
        "signature stored: {stored}"
    );
    assert_eq!(events[0]["headers"]["x-hub-signature-256"], "********");
}

#[tokio::test]
async fn a_source_outside_the_allowed_ranges_is_refused_with_403() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    with_extension(&app, &t, "  allowedSourceCidrs: [\"203.0.113.0/24\"]\n").await;

    let res = app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await;

    assert_error(res, 403, "NG_ACCESS_DENIED", "allowed source ranges").await;
    with_extension(
        &app,
        &t,
        "  allowedSourceCidrs: [\"203.0.113.0/24\", \"127.0.0.0/8\"]\n",
    )
    .await;
    let res = app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await;
    success_data(res).await;
}

#[tokio::test]
async fn a_dry_run_answers_what_would_happen_and_stores_nothing() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    let res = app
        .request(Method::POST, &t.v3_path())
        .header("content-type", "application/json")
        .header("X-Trigger-Dry-Run", "true")
        .body(SAMPLE_BODY)
        .send()
        .await
        .expect("request");

    assert_eq!(
        header(&res, "x-trigger-status").as_deref(),
        Some("TARGET_EXECUTION_REQUESTED")
    );
    let data = success_data(res).await;
    assert_eq!(data["dryRun"]["status"], "TARGET_EXECUTION_REQUESTED");
    assert_eq!(data["dryRun"]["runtimeInput"], "pipeline: {}\n");
    assert!(data["eventCorrelationId"].is_null(), "{data}");
    assert!(app.events(&t).await.is_empty(), "a dry run stores nothing");
}

#[tokio::test]
async fn a_dry_run_still_checks_the_key() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    let res = app
        .request(Method::POST, &t.v3_path())
        .header("X-Trigger-Dry-Run", "true")
        .header(
            "X-Api-Key",
            "pat.acc.0123456789abcdef01234567.AAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .body(SAMPLE_BODY)
        .send()
        .await
        .expect("request");

    assert_error(res, 401, "INVALID_TOKEN", "Invalid call").await;
}

#[tokio::test]
async fn a_vanishingly_small_rate_limit_answers_429_without_crashing() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    with_extension(
        &app,
        &t,
        "  rateLimit:\n    perSecond: 1.0e-300\n    burst: 1\n",
    )
    .await;

    let first = app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await;
    let second = app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await;

    success_data(first).await;
    assert_error(second, 429, "TOO_MANY_REQUESTS", "").await;
    let health = app
        .request(Method::GET, "/healthz")
        .send()
        .await
        .expect("request");
    assert_eq!(health.status(), 200);
}
