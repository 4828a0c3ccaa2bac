//! `GET /webhook/triggerExecutionDetails/{eventCorrelationId}` (DESIGN §2.3): readable the
//! moment the POST returns, Harness field names, 404s that reveal nothing, and the key rules.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::{Method, Response};
use serde_json::Value;

use crate::helpers::{assert_error, spawn_app, success_data, TestApp, TestTrigger};

const SAMPLE_BODY: &str = r#"{"sample_key": "sample_value"}"#;

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Fires `t` without a key and returns the eventCorrelationId.
async fn fire(app: &TestApp, t: &TestTrigger, key: Option<&str>) -> String {
    let res = app.post_webhook(&t.v3_path(), key, SAMPLE_BODY).await;
    let data = success_data(res).await;
    data["eventCorrelationId"]
        .as_str()
        .expect("eventCorrelationId")
        .to_owned()
}

fn not_found_message(id: &str) -> String {
    format!("Trigger event history doesn't exist for event with eventId {id}")
}

async fn assert_not_found(res: Response, id: &str) {
    let body = assert_error(res, 404, "RESOURCE_NOT_FOUND", "").await;
    assert_eq!(body["message"], not_found_message(id));
}

// ---- what the status says ----------------------------------------------------------------------

#[tokio::test]
async fn status_is_readable_the_moment_the_post_returns() {
    // Arrange
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let before = now_millis();
    let id = fire(&app, &t, None).await;
    let after = now_millis();

    // Act: a single read, no retry loop.
    let res = app.get_status(&id, "acc", None).await;

    // Assert
    let data = success_data(res).await;
    let d = &data["webhookProcessingDetails"];
    assert_eq!(d["eventFound"], true);
    assert_eq!(d["eventId"], id.as_str());
    assert_eq!(d["accountIdentifier"], "acc");
    assert_eq!(d["orgIdentifier"], "default");
    assert_eq!(d["projectIdentifier"], "proj");
    assert_eq!(d["triggerIdentifier"], "on_push");
    assert_eq!(d["pipelineIdentifier"], "deploy");
    let plan = d["pipelineExecutionId"]
        .as_str()
        .expect("pipelineExecutionId is set");
    assert_eq!(plan.len(), 22, "22 chars of base64url: {plan}");
    assert_eq!(d["exceptionOccured"], false);
    assert_eq!(d["status"], "TARGET_EXECUTION_REQUESTED");
    assert_eq!(
        d["message"],
        "Pipeline execution was requested successfully"
    );
    assert_eq!(d["payload"], SAMPLE_BODY, "the body exactly as sent");
    let created = d["eventCreatedAt"].as_i64().expect("epoch milliseconds");
    assert!(
        (before..=after).contains(&created),
        "{before} <= {created} <= {after}"
    );
    assert_eq!(d["runtimeInput"], "pipeline: {}\n");
}

#[tokio::test]
async fn status_carries_the_harness_pipeline_execution_summary() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let id = fire(&app, &t, None).await;

    let data = success_data(app.get_status(&id, "acc", None).await).await;

    let plan = &data["webhookProcessingDetails"]["pipelineExecutionId"];
    let s = &data["executionDetails"]["pipelineExecutionSummary"];
    assert!(s.is_object(), "{data}");
    assert_eq!(s["pipelineIdentifier"], "deploy");
    assert_eq!(&s["planExecutionId"], plan);
    assert_eq!(s["name"], "deploy");
    // The engine may already have started or finished it (a one-step Wait 0s pipeline).
    assert!(
        matches!(s["status"].as_str(), Some("Queued" | "Running" | "Success")),
        "{s}"
    );
    let info = &s["executionTriggerInfo"];
    assert_eq!(info["triggerType"], "WEBHOOK_CUSTOM");
    assert_eq!(info["isRerun"], false);
    let by = &info["triggeredBy"];
    assert_eq!(by["uuid"], "systemUser");
    assert_eq!(by["identifier"], "on_push");
    assert_eq!(by["extraInfo"]["eventCorrelationId"], id.as_str());
    assert_eq!(
        by["extraInfo"]["execution_trigger_tag_needed_for_abort"],
        "acc:default:proj:deploy"
    );
    assert_eq!(by["extraInfo"]["triggerRef"], "acc/default/proj/on_push");
    assert!(s["createdAt"].as_i64().is_some(), "{s}");
}

#[tokio::test]
async fn run_sequence_counts_the_pipelines_executions() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let first = fire(&app, &t, None).await;
    let second = fire(&app, &t, None).await;

    let first = success_data(app.get_status(&first, "acc", None).await).await;
    let second = success_data(app.get_status(&second, "acc", None).await).await;

    let sequence =
        |d: &Value| d["executionDetails"]["pipelineExecutionSummary"]["runSequence"].clone();
    assert_eq!(sequence(&first), 1);
    assert_eq!(sequence(&second), 2);
}

#[tokio::test]
async fn the_api_url_of_the_intake_response_reads_the_status() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let intake = success_data(app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await).await;
    let api_url = intake["apiUrl"].as_str().expect("apiUrl");

    let res = app.client.get(api_url).send().await.expect("request");

    let data = success_data(res).await;
    assert_eq!(
        data["webhookProcessingDetails"]["eventId"],
        intake["eventCorrelationId"]
    );
}

#[tokio::test]
async fn status_is_served_under_the_harness_alias_prefix() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let id = fire(&app, &t, None).await;

    let res = app
        .request(
            Method::GET,
            &format!(
                "/gateway/pipeline/api/webhook/triggerExecutionDetails/{id}?accountIdentifier=acc"
            ),
        )
        .send()
        .await
        .expect("request");

    let data = success_data(res).await;
    assert_eq!(data["webhookProcessingDetails"]["eventId"], id.as_str());
}

#[tokio::test]
async fn long_poll_answers_once_terminal_or_after_the_wait() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let id = fire(&app, &t, None).await;
    let started = Instant::now();

    let res = app
        .request(
            Method::GET,
            &format!("/webhook/triggerExecutionDetails/{id}?accountIdentifier=acc&wait=2"),
        )
        .send()
        .await
        .expect("request");

    let elapsed = started.elapsed();
    let data = success_data(res).await;
    let status = data["executionDetails"]["pipelineExecutionSummary"]["status"]
        .as_str()
        .expect("status")
        .to_owned();
    let settled = [
        "Success",
        "Failed",
        "Aborted",
        "Expired",
        "ApprovalRejected",
        "Errored",
        "ApprovalWaiting",
    ]
    .contains(&status.as_str());
    assert!(
        settled || elapsed >= Duration::from_millis(1900),
        "answered after {elapsed:?} with a {status} execution: wait=2 was ignored"
    );
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

// ---- 404s --------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_event_id_is_404() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    fire(&app, &t, None).await;
    let unknown = "0123456789abcdef01234567";

    let res = app.get_status(unknown, "acc", None).await;

    assert_not_found(res, unknown).await;
}

#[tokio::test]
async fn malformed_event_id_is_404() {
    let app = spawn_app().await;
    let _t = app.create_trigger().await;

    for id in ["not-an-id", "0123456789ABCDEF01234567", "0123456789abcdef"] {
        let res = app.get_status(id, "acc", None).await;

        assert_not_found(res, id).await;
    }
}

#[tokio::test]
async fn event_of_another_account_is_404() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    app.create_account("other").await;
    let id = fire(&app, &t, None).await;

    let res = app.get_status(&id, "other", None).await;

    assert_not_found(res, &id).await;
}

#[tokio::test]
async fn event_of_another_account_is_404_even_with_that_accounts_key() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    app.create_account("other").await;
    let other_key = app.create_key("other", "admin", None).await;
    let id = fire(&app, &t, None).await;

    let res = app.get_status(&id, "other", Some(&other_key)).await;

    assert_not_found(res, &id).await;
}

// ---- keys and the mandate ----------------------------------------------------------------------

#[tokio::test]
async fn with_the_mandate_on_status_without_a_key_answers_as_for_an_unknown_event() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let id = fire(&app, &t, None).await;
    app.set_mandate("acc", "default", "proj", true, true).await;
    let unknown = "0123456789abcdef01234567";

    let res = app.get_status(&id, "acc", None).await;
    let unknown_res = app.get_status(unknown, "acc", None).await;

    // Nobody without a key learns that the event exists, or which project it is in.
    assert_not_found(res, &id).await;
    assert_not_found(unknown_res, unknown).await;
    let with_key = app.get_status(&id, "acc", Some(&t.admin_key)).await;
    assert_eq!(with_key.status(), 200);
}

#[tokio::test]
async fn with_the_mandate_on_status_with_a_wrong_key_is_rejected_with_401() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    app.create_account("other").await;
    let foreign = app.create_key("other", "admin", None).await;
    let id = fire(&app, &t, None).await;
    app.set_mandate("acc", "default", "proj", true, true).await;

    for key in [
        "garbage",
        foreign.as_str(),
        "pat.acc.0123456789abcdef01234567.AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let res = app.get_status(&id, "acc", Some(key)).await;

        assert_error(
            res,
            401,
            "INVALID_TOKEN",
            "Invalid call: Invalid token or token expired. Account id for API called: acc",
        )
        .await;
    }
}

#[tokio::test]
async fn with_the_mandate_on_status_with_a_key_of_another_project_is_denied_with_403() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let elsewhere = app
        .create_key("acc", "executor", Some(vec!["default/other"]))
        .await;
    let id = fire(&app, &t, None).await;
    app.set_mandate("acc", "default", "proj", true, true).await;

    let res = app.get_status(&id, "acc", Some(&elsewhere)).await;

    assert_error(res, 403, "NG_ACCESS_DENIED", "").await;
}

#[tokio::test]
async fn with_the_mandate_on_status_with_a_valid_executor_key_is_readable() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let executor = app.create_key("acc", "executor", None).await;
    app.set_mandate("acc", "", "", true, false).await;
    let id = fire(&app, &t, Some(&executor)).await;

    let res = app.get_status(&id, "acc", Some(&executor)).await;

    let data = success_data(res).await;
    assert_eq!(data["webhookProcessingDetails"]["eventId"], id.as_str());
}

#[tokio::test]
async fn with_the_mandate_off_status_is_readable_without_a_key() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    app.set_mandate("acc", "default", "proj", false, true).await;
    let id = fire(&app, &t, None).await;

    let res = app.get_status(&id, "acc", None).await;

    let data = success_data(res).await;
    assert_eq!(data["webhookProcessingDetails"]["eventId"], id.as_str());
}

#[tokio::test]
async fn with_the_mandate_off_a_garbage_key_is_still_rejected_with_401() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let id = fire(&app, &t, None).await;

    let res = app.get_status(&id, "acc", Some("garbage")).await;

    assert_error(
        res,
        401,
        "INVALID_TOKEN",
        "Invalid call: Invalid token or token expired. Account id for API called: acc",
    )
    .await;
}

// ---- a settled event, answered from memory ---------------------------------------------------

#[tokio::test]
async fn a_settled_status_answered_from_memory_still_checks_the_account_the_mandate_and_the_key() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    app.create_account("other").await;
    let id = fire(&app, &t, None).await;
    // Settle it, then read it again: the second read is the one kept in memory.
    let settled = success_data(
        app.request(
            Method::GET,
            &format!("/webhook/triggerExecutionDetails/{id}?accountIdentifier=acc&wait=20"),
        )
        .send()
        .await
        .expect("request"),
    )
    .await;
    let status = &settled["executionDetails"]["pipelineExecutionSummary"]["status"];
    assert_eq!(status, "Success", "{settled}");

    let first = success_data(app.get_status(&id, "acc", None).await).await;
    let second = success_data(app.get_status(&id, "acc", None).await).await;

    assert_eq!(first, settled, "the same answer once settled");
    assert_eq!(second, settled, "the same answer from memory");
    assert_not_found(app.get_status(&id, "other", None).await, &id).await;
    app.set_mandate("acc", "default", "proj", true, true).await;
    assert_not_found(app.get_status(&id, "acc", None).await, &id).await;
    let wrong = app
        .get_status(&id, "acc", Some("pat.acc.000000000000000000000000.wrong"))
        .await;
    assert_eq!(wrong.status(), 401);
    let with_key = app.get_status(&id, "acc", Some(&t.admin_key)).await;
    assert_eq!(success_data(with_key).await, settled);
}
