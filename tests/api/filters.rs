//! List filters fail loudly: on every list that filters by an enumerated value, the value
//! matches ignoring case (and underscores), an unknown one is a 400 that names the accepted
//! values, and an empty filter is no filter.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, success_data, TestApp, TestReceiver, TestTrigger};

/// A GET with the trigger's admin key; the response as it came.
async fn get(app: &TestApp, t: &TestTrigger, path: &str) -> reqwest::Response {
    app.with_key(
        Method::GET,
        &format!("{}{path}", t.project_path()),
        &t.admin_key,
    )
    .send()
    .await
    .expect("request")
}

/// The `content` of a successful list.
async fn listed(app: &TestApp, t: &TestTrigger, path: &str) -> Vec<Value> {
    let data = success_data(get(app, t, path).await).await;
    data["content"].as_array().expect("content").clone()
}

/// Fires the trigger and waits (long-polling the status endpoint, at most ~30 s) until the
/// execution it queued has settled; returns the event id.
async fn fire_and_settle(app: &TestApp, t: &TestTrigger) -> String {
    let fired = success_data(app.post_webhook(&t.v3_path(), None, "{}").await).await;
    let event = fired["eventCorrelationId"]
        .as_str()
        .expect("event id")
        .to_owned();
    let path = format!(
        "/webhook/triggerExecutionDetails/{event}?accountIdentifier={}&wait=5",
        t.account
    );
    for _ in 0..6 {
        let res = app
            .request(Method::GET, &path)
            .send()
            .await
            .expect("request");
        let data = success_data(res).await;
        let status = &data["executionDetails"]["pipelineExecutionSummary"]["status"];
        if status != "Queued" && status != "Running" {
            return event;
        }
    }
    panic!("the execution of event {event} did not settle");
}

const EXECUTION_STATUSES: &str =
    "Queued, Running, Paused, ApprovalWaiting, Success, Failed, Aborted, Expired, ApprovalRejected, Errored";

#[tokio::test]
async fn execution_status_filters_match_ignoring_case_and_underscores() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    fire_and_settle(&app, &t).await;

    for query in ["Success", "success", "SUCCESS", "  success "] {
        let items = listed(&app, &t, &format!("/executions?status={query}")).await;
        assert_eq!(items.len(), 1, "status={query}: {items:?}");
        assert_eq!(items[0]["status"], "Success");
    }
    for query in ["failed", "approval_waiting", "APPROVAL_REJECTED", "errored"] {
        let items = listed(&app, &t, &format!("/executions?status={query}")).await;
        assert_eq!(items, Vec::<Value>::new(), "status={query}");
    }
    let both = listed(
        &app,
        &t,
        "/executions?pipelineIdentifier=deploy&status=success",
    )
    .await;
    assert_eq!(both.len(), 1);
}

#[tokio::test]
async fn an_unknown_execution_status_is_400_naming_the_accepted_values() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    let res = get(&app, &t, "/executions?status=bogus").await;
    let body = assert_error(res, 400, "INVALID_REQUEST", "status 'bogus' is not one of").await;
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(EXECUTION_STATUSES), "{message}");

    // A stage or step status is not an execution status.
    let res = get(&app, &t, "/executions?status=Skipped").await;
    assert_error(res, 400, "INVALID_REQUEST", EXECUTION_STATUSES).await;
    // A pipeline filter that cannot be an identifier could never match.
    let res = get(&app, &t, "/executions?pipelineIdentifier=no-such%20thing").await;
    assert_error(
        res,
        400,
        "INVALID_REQUEST",
        "pipelineIdentifier 'no-such thing'",
    )
    .await;
}

#[tokio::test]
async fn empty_execution_filters_are_ignored() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    fire_and_settle(&app, &t).await;

    for query in [
        "status=",
        "pipelineIdentifier=",
        "status=&pipelineIdentifier=",
        "status=%20",
    ] {
        let items = listed(&app, &t, &format!("/executions?{query}")).await;
        assert_eq!(items.len(), 1, "{query}: {items:?}");
    }
}

#[tokio::test]
async fn webhook_event_filters_match_ignoring_case_and_refuse_unknown_statuses() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    fire_and_settle(&app, &t).await;

    for query in [
        "status=target_execution_requested",
        "status=Target_Execution_Requested",
        "status=",
        "triggerIdentifier=",
        "status=&triggerIdentifier=",
        "triggerIdentifier=on_push&status=TARGET_EXECUTION_REQUESTED",
    ] {
        let items = listed(&app, &t, &format!("/webhookevents?{query}")).await;
        assert_eq!(items.len(), 1, "{query}: {items:?}");
    }
    let none = listed(
        &app,
        &t,
        "/webhookevents?status=no_matching_trigger_for_payload_conditions",
    )
    .await;
    assert_eq!(none, Vec::<Value>::new());

    let res = get(&app, &t, "/webhookevents?status=Success").await;
    assert_error(
        res,
        400,
        "INVALID_REQUEST",
        "status 'Success' is not one of TARGET_EXECUTION_REQUESTED, NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS",
    )
    .await;
    let res = get(&app, &t, "/webhookevents?triggerIdentifier=9lives").await;
    assert_error(res, 400, "INVALID_REQUEST", "triggerIdentifier '9lives'").await;
}

#[tokio::test]
async fn delivery_status_filters_match_ignoring_case_and_refuse_unknown_values() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let receiver = TestReceiver::start(200, "", &[]).await;
    let rule = format!("{}/eventrules/ops", t.project_path());
    let res = app
        .with_key(Method::PUT, &rule, &t.admin_key)
        .json(&json!({"sendEverything": true, "url": receiver.url}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 201, "rule created");
    // Creating the rule sends a ping; wait until it is delivered.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while listed(&app, &t, "/eventrules/ops/deliveries?status=Success")
        .await
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the ping was not delivered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    for query in ["status=success", "status=SUCCESS", "status="] {
        let items = listed(&app, &t, &format!("/eventrules/ops/deliveries?{query}")).await;
        assert_eq!(items.len(), 1, "{query}: {items:?}");
    }
    let pending = listed(&app, &t, "/eventrules/ops/deliveries?status=pending").await;
    assert_eq!(pending, Vec::<Value>::new());
    let res = get(&app, &t, "/eventrules/ops/deliveries?status=Delivered").await;
    assert_error(
        res,
        400,
        "INVALID_REQUEST",
        "status 'Delivered' is not one of Pending, Success, Failed",
    )
    .await;
}

#[tokio::test]
async fn query_parameters_a_list_does_not_take_are_ignored() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    fire_and_settle(&app, &t).await;

    // Harness clients add their scope parameters to every call; caches add their own.
    for path in [
        "/executions?accountIdentifier=acc&orgIdentifier=default&_=1",
        "/webhookevents?projectIdentifier=proj",
        "/pipelines?searchTerm=x",
    ] {
        let items = listed(&app, &t, path).await;
        assert_eq!(items.len(), 1, "{path}: {items:?}");
    }
}
