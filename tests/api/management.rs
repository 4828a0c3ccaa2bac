//! The management API of DESIGN §3: accounts, orgs, projects, pipelines, triggers, the webhook
//! event list, and the operational endpoints.

use std::collections::HashSet;

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, on_postgres, pipeline_yaml, spawn_app, success_data, trigger_yaml, TestApp,
    TestReceiver, TestTrigger,
};

/// `P` for account `acc`, org `default`, project `proj`.
const P: &str = "/api/v1/accounts/acc/orgs/default/projects/proj";

async fn put_yaml(app: &TestApp, path: &str, yaml: &str) -> Response {
    app.with_key(Method::PUT, path, &app.root_key)
        .header("content-type", "application/yaml")
        .body(yaml.to_owned())
        .send()
        .await
        .expect("request")
}

async fn put_json(app: &TestApp, path: &str, body: &Value) -> Response {
    app.with_key(Method::PUT, path, &app.root_key)
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn get(app: &TestApp, path: &str) -> Response {
    app.with_key(Method::GET, path, &app.root_key)
        .send()
        .await
        .expect("request")
}

async fn delete(app: &TestApp, path: &str) -> Response {
    app.with_key(Method::DELETE, path, &app.root_key)
        .send()
        .await
        .expect("request")
}

/// A trigger YAML with no conditions whose `name` differs from its identifier.
fn named_trigger_yaml(id: &str, name: &str) -> String {
    trigger_yaml(id).replacen(&format!("name: {id}\n"), &format!("name: {name}\n"), 1)
}

/// A pipeline YAML whose single step is given verbatim (indented as a list item under
/// `steps:`), for invalid-pipeline cases.
fn pipeline_with_steps(id: &str, steps: &str) -> String {
    format!(
        "pipeline:\n  name: {id}\n  identifier: {id}\n  stages:\n    - stage:\n        name: Build\n        identifier: build\n        steps:\n{steps}"
    )
}

/// Fires the v3 intake of `t` with a JSON body; returns the eventCorrelationId.
async fn fire(app: &TestApp, t: &TestTrigger, body: &str) -> String {
    let data = success_data(app.post_webhook(&t.v3_path(), None, body).await).await;
    data["eventCorrelationId"]
        .as_str()
        .expect("eventCorrelationId")
        .to_owned()
}

/// A copy of `t` (`TestTrigger` is not `Clone`).
fn copy_of(t: &TestTrigger) -> TestTrigger {
    TestTrigger {
        account: t.account.clone(),
        org: t.org.clone(),
        project: t.project.clone(),
        pipeline: t.pipeline.clone(),
        trigger: t.trigger.clone(),
        token: t.token.clone(),
        admin_key: t.admin_key.clone(),
    }
}

/// Creates trigger `trigger` on the same pipeline as `t` and returns it with its token.
async fn create_sibling(app: &TestApp, t: &TestTrigger, trigger: &str) -> TestTrigger {
    let mut s = TestTrigger {
        trigger: trigger.into(),
        ..copy_of(t)
    };
    let res = app.put_trigger_yaml(&s, &trigger_yaml(trigger)).await;
    assert_eq!(res.status(), 201, "sibling trigger created");
    s.token = success_data(res).await["customWebhookToken"]
        .as_str()
        .expect("token")
        .to_owned();
    s
}

fn is_base64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

// ---------------------------------------------------------------------------------------------
// Accounts, orgs, projects

#[tokio::test]
async fn creating_an_account_answers_201_then_200_on_update() {
    let app = spawn_app().await;

    let created = put_json(&app, "/api/v1/accounts/acme-1", &json!({"name": "Acme"})).await;
    assert_eq!(created.status(), 201);
    let data = success_data(created).await;
    assert_eq!(data["identifier"], "acme-1");
    assert_eq!(data["name"], "Acme");

    let updated = put_json(
        &app,
        "/api/v1/accounts/acme-1",
        &json!({"name": "Acme Corp"}),
    )
    .await;
    assert_eq!(updated.status(), 200);
    assert_eq!(success_data(updated).await["name"], "Acme Corp");

    let read = success_data(get(&app, "/api/v1/accounts/acme-1").await).await;
    assert_eq!(read["name"], "Acme Corp");
}

#[tokio::test]
async fn a_new_account_has_an_org_named_default() {
    let app = spawn_app().await;

    app.create_account("acc").await;

    let org = success_data(get(&app, "/api/v1/accounts/acc/orgs/default").await).await;
    assert_eq!(org["accountIdentifier"], "acc", "{org}");
    assert_eq!(org["orgIdentifier"], "default", "{org}");
}

#[tokio::test]
async fn an_admin_key_of_the_account_cannot_put_accounts() {
    let app = spawn_app().await;
    app.create_account("acc").await;
    let admin = app.create_key("acc", "admin", None).await;

    let res = app
        .with_key(Method::PUT, "/api/v1/accounts/acc", &admin)
        .json(&json!({"name": "Taken over"}))
        .send()
        .await
        .expect("request");

    assert_error(res, 403, "NG_ACCESS_DENIED", "only the root key").await;
    let account = success_data(get(&app, "/api/v1/accounts/acc").await).await;
    assert_eq!(account["name"], "acc", "the name is unchanged");
}

#[tokio::test]
async fn putting_an_account_without_a_key_is_401() {
    let app = spawn_app().await;

    let res = app
        .request(Method::PUT, "/api/v1/accounts/acc")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .expect("request");

    assert_error(res, 401, "INVALID_TOKEN", "X-Api-Key").await;
}

#[tokio::test]
async fn the_root_account_identifier_is_reserved() {
    let app = spawn_app().await;

    let res = put_json(&app, "/api/v1/accounts/_root", &json!({"name": "mine"})).await;

    assert_error(res, 400, "INVALID_REQUEST", "reserved").await;
}

#[tokio::test]
async fn orgs_and_projects_are_created_updated_read_and_deleted() {
    let app = spawn_app().await;
    app.create_account("acc").await;
    let org = "/api/v1/accounts/acc/orgs/platform";
    let project = "/api/v1/accounts/acc/orgs/platform/projects/api";

    assert_eq!(
        put_json(&app, org, &json!({"name": "Platform"}))
            .await
            .status(),
        201
    );
    assert_eq!(
        put_json(&app, org, &json!({"name": "Platform team"}))
            .await
            .status(),
        200
    );
    assert_eq!(
        success_data(get(&app, org).await).await["name"],
        "Platform team"
    );
    assert_eq!(
        put_json(&app, project, &json!({"name": "API"}))
            .await
            .status(),
        201
    );
    assert_eq!(
        put_json(&app, project, &json!({"name": "API v2"}))
            .await
            .status(),
        200
    );
    assert_eq!(
        success_data(get(&app, project).await).await["name"],
        "API v2"
    );

    success_data(delete(&app, project).await).await;
    assert_error(
        get(&app, project).await,
        404,
        "RESOURCE_NOT_FOUND",
        "does not exist",
    )
    .await;
    success_data(delete(&app, org).await).await;
    assert_error(
        get(&app, org).await,
        404,
        "RESOURCE_NOT_FOUND",
        "does not exist",
    )
    .await;
}

#[tokio::test]
async fn deleting_a_missing_project_is_404() {
    let app = spawn_app().await;
    app.create_account("acc").await;

    let res = delete(&app, "/api/v1/accounts/acc/orgs/default/projects/nothing").await;

    assert_error(res, 404, "RESOURCE_NOT_FOUND", "nothing").await;
}

#[tokio::test]
async fn a_project_under_a_missing_org_is_404() {
    let app = spawn_app().await;
    app.create_account("acc").await;

    let res = put_json(
        &app,
        "/api/v1/accounts/acc/orgs/nowhere/projects/proj",
        &json!({"name": "orphan"}),
    )
    .await;

    assert_error(
        res,
        404,
        "RESOURCE_NOT_FOUND",
        "Org acc/nowhere does not exist",
    )
    .await;
    assert_error(
        get(&app, "/api/v1/accounts/acc/orgs/nowhere/projects/proj").await,
        404,
        "RESOURCE_NOT_FOUND",
        "does not exist",
    )
    .await;
}

#[tokio::test]
async fn deleting_an_org_removes_its_triggers() {
    let app = spawn_app().await;
    let t = app.create_trigger_in("acc", "platform", "proj").await;

    success_data(delete(&app, "/api/v1/accounts/acc/orgs/platform").await).await;

    let res = app.post_webhook(&t.v3_path(), None, "{}").await;
    assert_error(
        res,
        400,
        "INVALID_REQUEST",
        &format!(
            "No custom trigger found for the used custom webhook token: {}",
            t.token
        ),
    )
    .await;
}

#[tokio::test]
async fn deleting_a_project_removes_its_pipelines_and_triggers() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    success_data(delete(&app, &t.project_path()).await).await;

    let res = app.post_webhook(&t.v3_path(), None, "{}").await;
    assert_error(res, 400, "INVALID_REQUEST", "No custom trigger found").await;
    app.create_project("acc", "default", "proj").await;
    let pipeline = get(&app, &format!("{}/pipelines/deploy", t.project_path())).await;
    assert_error(pipeline, 404, "RESOURCE_NOT_FOUND", "deploy").await;
}

#[tokio::test]
async fn events_stay_readable_after_their_pipeline_is_deleted() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let id = fire(&app, &t, r#"{"kept":true}"#).await;

    success_data(delete(&app, &format!("{P}/pipelines/deploy")).await).await;

    let status = success_data(app.get_status(&id, "acc", None).await).await;
    assert_eq!(
        status["webhookProcessingDetails"]["payload"],
        r#"{"kept":true}"#
    );
    let listed = success_data(list_events(&app, "").await).await;
    assert_eq!(event_ids(&listed), [id]);
}

// ---------------------------------------------------------------------------------------------
// Pipelines

#[tokio::test]
async fn a_pipeline_put_as_yaml_is_created_then_updated_and_read_back() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;
    let path = format!("{P}/pipelines/build_it");

    let created = put_yaml(&app, &path, &pipeline_yaml("build_it")).await;
    assert_eq!(created.status(), 201);
    let data = success_data(created).await;
    assert_eq!(data["identifier"], "build_it");
    assert_eq!(
        data["spec"]["pipeline"]["stages"][0]["stage"]["identifier"],
        "build"
    );

    let renamed = pipeline_yaml("build_it").replacen("name: build_it", "name: Build it", 1);
    let updated = put_yaml(&app, &path, &renamed).await;
    assert_eq!(updated.status(), 200);

    let read = success_data(get(&app, &path).await).await;
    assert_eq!(read["name"], "Build it");
    assert_eq!(read["identifier"], "build_it");
    assert_eq!(read["projectIdentifier"], "proj");
}

#[tokio::test]
async fn a_pipeline_put_as_json_is_stored() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;
    let path = format!("{P}/pipelines/from_json");
    let body = json!({"pipeline": {
        "name": "From JSON",
        "identifier": "from_json",
        "stages": [{"stage": {
            "name": "Only",
            "identifier": "only",
            "steps": [{"step": {"identifier": "pause", "type": "Wait", "spec": {"duration": "1s"}}}]
        }}]
    }});

    let created = put_json(&app, &path, &body).await;

    assert_eq!(created.status(), 201);
    let read = success_data(get(&app, &path).await).await;
    assert_eq!(read["name"], "From JSON");
    let step = &read["spec"]["pipeline"]["stages"][0]["stage"]["steps"][0]["step"];
    assert_eq!(step["identifier"], "pause", "{read}");
    assert_eq!(step["type"], "Wait", "{read}");
}

#[tokio::test]
async fn pipelines_are_listed_in_pages_with_a_cursor() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;
    let ids = ["p_a", "p_b", "p_c", "p_d", "p_e"];
    for id in ids {
        app.create_pipeline("acc", "default", "proj", id).await;
    }

    let mut seen = Vec::new();
    let mut page_sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut req = app
            .with_key(Method::GET, &format!("{P}/pipelines"), &app.root_key)
            .query(&[("limit", "2")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c.as_str())]);
        }
        let data = success_data(req.send().await.expect("request")).await;
        let content = data["content"].as_array().expect("content");
        page_sizes.push(content.len());
        seen.extend(
            content
                .iter()
                .map(|p| p["identifier"].as_str().expect("identifier").to_owned()),
        );
        match &data["nextCursor"] {
            Value::Null => break,
            Value::String(next) => cursor = Some(next.clone()),
            other => panic!("nextCursor should be a string or null, got {other}"),
        }
        assert!(page_sizes.len() < 10, "paging does not end: {page_sizes:?}");
    }

    assert_eq!(page_sizes, [2, 2, 1]);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates: {seen:?}");
    let expected: HashSet<String> = ids.iter().map(|s| s.to_string()).collect();
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), expected);
}

#[tokio::test]
async fn deleting_a_pipeline_deletes_its_triggers_and_their_tokens() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let pipeline = format!("{}/pipelines/{}", t.project_path(), t.pipeline);

    success_data(delete(&app, &pipeline).await).await;

    assert_error(
        get(&app, &pipeline).await,
        404,
        "RESOURCE_NOT_FOUND",
        "deploy",
    )
    .await;
    assert_error(
        get(&app, &t.trigger_path()).await,
        404,
        "RESOURCE_NOT_FOUND",
        "on_push",
    )
    .await;
    let res = app.post_webhook(&t.v3_path(), None, "{}").await;
    assert_error(
        res,
        400,
        "INVALID_REQUEST",
        &format!(
            "No custom trigger found for the used custom webhook token: {}",
            t.token
        ),
    )
    .await;
}

#[tokio::test]
async fn an_invalid_pipeline_is_rejected_with_the_problem_and_never_stored() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;
    let cases = [
        (
            "unknown step type",
            "          - step:\n              identifier: s1\n              type: Teleport\n              spec: {}\n",
            "unknown step type 'Teleport'",
        ),
        (
            "duplicate step identifiers",
            "          - step:\n              identifier: twice\n              type: Wait\n              spec: {duration: 1s}\n          - step:\n              identifier: twice\n              type: Wait\n              spec: {duration: 2s}\n",
            "duplicate step identifier 'twice'",
        ),
        (
            "an expression inside a Run command",
            "          - step:\n              identifier: run_it\n              type: Run\n              spec:\n                shell: sh\n                command: echo <+trigger.payload.name>\n",
            "must not contain expressions",
        ),
        (
            "a bad duration",
            "          - step:\n              identifier: pause\n              type: Wait\n              spec: {duration: soonish}\n",
            "invalid duration 'soonish'",
        ),
        (
            "a duration that would overflow a deadline",
            "          - step:\n              identifier: pause\n              type: Wait\n              spec: {duration: 9223372036854775807ms}\n",
            "longer than 365d, the longest supported",
        ),
        (
            "a duration of more than a year in days",
            "          - step:\n              identifier: pause\n              type: Wait\n              spec: {duration: 106751991167d}\n",
            "longer than 365d",
        ),
    ];

    for (what, steps, expected) in cases {
        let path = format!("{P}/pipelines/broken");
        let res = put_yaml(&app, &path, &pipeline_with_steps("broken", steps)).await;

        let body = assert_error(res, 400, "INVALID_REQUEST", expected).await;
        assert!(
            body["message"].as_str().unwrap_or("").contains("stages[0]"),
            "{what}: the message locates the problem: {body}"
        );
        assert_error(get(&app, &path).await, 404, "RESOURCE_NOT_FOUND", "broken").await;
    }
}

#[tokio::test]
async fn a_pipeline_whose_identifier_differs_from_the_url_is_rejected() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;

    let res = put_yaml(
        &app,
        &format!("{P}/pipelines/in_url"),
        &pipeline_yaml("in_body"),
    )
    .await;

    assert_error(res, 400, "INVALID_REQUEST", "does not match").await;
    assert_error(
        get(&app, &format!("{P}/pipelines/in_url")).await,
        404,
        "RESOURCE_NOT_FOUND",
        "",
    )
    .await;
}

#[tokio::test]
async fn a_yaml_content_type_with_parameters_is_accepted() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;

    let res = app
        .with_key(
            Method::PUT,
            &format!("{P}/pipelines/charset"),
            &app.root_key,
        )
        .header("content-type", "application/x-yaml; charset=utf-8")
        .body(pipeline_yaml("charset"))
        .send()
        .await
        .expect("request");

    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn a_put_with_an_unsupported_content_type_is_415() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;

    let res = app
        .with_key(Method::PUT, &format!("{P}/pipelines/xml"), &app.root_key)
        .header("content-type", "application/xml")
        .body(pipeline_yaml("xml"))
        .send()
        .await
        .expect("request");

    assert_error(
        res,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        "Unsupported Content-Type 'application/xml': use application/json or application/yaml",
    )
    .await;
}

/// A PUT of `body` with `content_type` (none when `None`) and the root key.
async fn put_typed(app: &TestApp, path: &str, content_type: Option<&str>, body: &str) -> Response {
    let mut req = app
        .with_key(Method::PUT, path, &app.root_key)
        .body(body.to_owned());
    if let Some(content_type) = content_type {
        req = req.header("content-type", content_type);
    }
    req.send().await.expect("request")
}

#[tokio::test]
async fn yaml_sent_without_a_useful_content_type_is_read_as_yaml() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;
    let receiver = TestReceiver::start(200, "", &[]).await;

    // No Content-Type (curl -T, most HTTP libraries), what curl -d and --data-binary send, and
    // text/plain: each is read as YAML when it does not open like JSON.
    let pipeline = put_typed(
        &app,
        &format!("{P}/pipelines/deploy"),
        None,
        &pipeline_yaml("deploy"),
    )
    .await;
    let trigger = put_typed(
        &app,
        &format!("{P}/pipelines/deploy/triggers/on_push"),
        Some("application/x-www-form-urlencoded"),
        &format!(
            "# from git
{}",
            trigger_yaml("on_push")
        ),
    )
    .await;
    let rule = put_typed(
        &app,
        &format!("{P}/eventrules/ops"),
        Some("text/plain"),
        &format!(
            "---
sendEverything: true
url: {}
",
            receiver.url
        ),
    )
    .await;
    let json = put_typed(
        &app,
        &format!("{P}/pipelines/from_json"),
        None,
        &json!({"pipeline": {"name": "j", "identifier": "from_json", "stages": [{"stage": {
            "identifier": "build", "steps": [{"step": {"identifier": "w", "type": "Wait",
            "spec": {"duration": "0s"}}}]}}]}})
        .to_string(),
    )
    .await;

    assert_eq!(success_data(pipeline).await["identifier"], "deploy");
    assert_eq!(success_data(trigger).await["identifier"], "on_push");
    assert_eq!(success_data(rule).await["identifier"], "ops");
    assert_eq!(success_data(json).await["identifier"], "from_json");
}

#[tokio::test]
async fn yaml_declared_as_json_is_400_with_a_hint_to_send_yaml() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;

    let pipeline = put_typed(
        &app,
        &format!("{P}/pipelines/deploy"),
        Some("application/json"),
        &pipeline_yaml("deploy"),
    )
    .await;
    let org = put_typed(
        &app,
        "/api/v1/accounts/acc/orgs/platform",
        Some("application/json"),
        "name: Platform\n",
    )
    .await;

    let hint = "the body reads as YAML: to send YAML, use Content-Type: application/yaml";
    let body = assert_error(pipeline, 400, "INVALID_REQUEST", "Invalid JSON body: ").await;
    assert!(body["message"].as_str().unwrap().ends_with(hint), "{body}");
    assert_error(org, 400, "INVALID_REQUEST", hint).await;
    let missing = get(&app, &format!("{P}/pipelines/deploy")).await;
    assert_error(missing, 404, "RESOURCE_NOT_FOUND", "deploy").await;
}

#[tokio::test]
async fn broken_json_gets_the_json_error_without_a_yaml_hint() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;

    for content_type in [None, Some("application/json")] {
        let res = put_typed(
            &app,
            &format!("{P}/pipelines/deploy"),
            content_type,
            r#"{"pipeline": {"name": "deploy","#,
        )
        .await;

        let body = assert_error(res, 400, "INVALID_REQUEST", "Invalid JSON body: EOF").await;
        assert!(
            !body["message"].as_str().unwrap().contains("YAML"),
            "{body}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Triggers

#[tokio::test]
async fn creating_a_trigger_returns_its_token_url_and_curl() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;
    app.create_pipeline("acc", "default", "proj", "deploy")
        .await;

    let res = put_yaml(
        &app,
        &format!("{P}/pipelines/deploy/triggers/on_push"),
        &trigger_yaml("on_push"),
    )
    .await;

    assert_eq!(res.status(), 201);
    let data = success_data(res).await;
    let token = data["customWebhookToken"].as_str().expect("token");
    assert_eq!(token.len(), 22, "{token}");
    assert!(is_base64url(token), "{token}");
    let url = format!(
        "{}/webhook/custom/{token}/v3?accountIdentifier=acc&orgIdentifier=default&projectIdentifier=proj&pipelineIdentifier=deploy&triggerIdentifier=on_push",
        app.address
    );
    assert_eq!(data["webhookUrl"], url.as_str());
    let curl = data["curl"].as_str().expect("curl");
    assert!(curl.starts_with("curl -X POST"), "{curl}");
    assert!(curl.contains(&format!("'{url}'")), "{curl}");
    assert!(!curl.contains("X-Api-Key"), "no mandate, no key: {curl}");
}

#[tokio::test]
async fn updating_a_trigger_answers_200_and_keeps_its_token() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    let res = app
        .put_trigger_yaml(&t, &named_trigger_yaml("on_push", "Renamed"))
        .await;

    assert_eq!(res.status(), 200);
    let data = success_data(res).await;
    assert_eq!(data["name"], "Renamed");
    assert_eq!(data["customWebhookToken"], t.token.as_str());
    let read = success_data(get(&app, &t.trigger_path()).await).await;
    assert_eq!(read["name"], "Renamed");
    assert_eq!(read["customWebhookToken"], t.token.as_str());
    fire(&app, &t, "{}").await;
}

#[tokio::test]
async fn a_trigger_put_as_json_is_stored() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;
    app.create_pipeline("acc", "default", "proj", "deploy")
        .await;
    let body = json!({"trigger": {
        "name": "From JSON",
        "identifier": "from_json",
        "source": {"type": "Webhook", "spec": {"type": "Custom", "spec": {
            "payloadConditions": [{"key": "<+trigger.payload.ref>", "operator": "Equals", "value": "main"}]
        }}}
    }});
    let path = format!("{P}/pipelines/deploy/triggers/from_json");

    let res = put_json(&app, &path, &body).await;

    assert_eq!(res.status(), 201);
    let read = success_data(get(&app, &path).await).await;
    assert_eq!(read["name"], "From JSON");
    let condition = &read["spec"]["trigger"]["source"]["spec"]["spec"]["payloadConditions"][0];
    assert_eq!(condition["operator"], "Equals", "{read}");
    assert_eq!(condition["value"], "main", "{read}");
}

#[tokio::test]
async fn a_trigger_whose_identifiers_differ_from_the_url_is_rejected() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;
    app.create_pipeline("acc", "default", "proj", "deploy")
        .await;
    let path = format!("{P}/pipelines/deploy/triggers/on_push");
    let other_pipeline = trigger_yaml("on_push").replacen(
        "  enabled: true\n",
        "  enabled: true\n  pipelineIdentifier: elsewhere\n",
        1,
    );

    let wrong_id = put_yaml(&app, &path, &trigger_yaml("on_tag")).await;
    let wrong_pipeline = put_yaml(&app, &path, &other_pipeline).await;

    assert_error(wrong_id, 400, "INVALID_REQUEST", "does not match").await;
    assert_error(wrong_pipeline, 400, "INVALID_REQUEST", "pipelineIdentifier").await;
    assert_error(get(&app, &path).await, 404, "RESOURCE_NOT_FOUND", "on_push").await;
}

#[tokio::test]
async fn a_trigger_created_again_after_deletion_gets_a_new_token() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    success_data(delete(&app, &t.trigger_path()).await).await;

    let res = app.put_trigger_yaml(&t, &trigger_yaml("on_push")).await;

    assert_eq!(res.status(), 201);
    let token = success_data(res).await["customWebhookToken"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_ne!(token, t.token, "a deleted token is never revived");
    let old = app.post_webhook(&t.v3_path(), None, "{}").await;
    assert_error(old, 400, "INVALID_REQUEST", "No custom trigger found").await;
    let renewed = TestTrigger {
        token,
        ..copy_of(&t)
    };
    fire(&app, &renewed, "{}").await;
}

#[tokio::test]
async fn a_trigger_with_an_unknown_operator_is_rejected_and_not_stored() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;
    app.create_pipeline("acc", "default", "proj", "deploy")
        .await;
    let yaml = trigger_yaml("bad_op").replace(
        "payloadConditions: []",
        "payloadConditions:\n          - key: <+trigger.payload.ref>\n            operator: LooksLike\n            value: main",
    );
    let path = format!("{P}/pipelines/deploy/triggers/bad_op");

    let res = put_yaml(&app, &path, &yaml).await;

    assert_error(res, 400, "INVALID_REQUEST", "unknown operator 'LooksLike'").await;
    assert_error(get(&app, &path).await, 404, "RESOURCE_NOT_FOUND", "bad_op").await;
}

#[tokio::test]
async fn a_misspelt_key_fails_closed_instead_of_dropping_a_guard() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;
    app.create_pipeline("acc", "default", "proj", "deploy")
        .await;
    // A typo that, ignored, would make a guarded trigger fire on every payload.
    let yaml = trigger_yaml("guarded").replace(
        "payloadConditions: []",
        "payloadConditons:\n          - key: <+trigger.payload.ref>\n            operator: Equals\n            value: refs/heads/main",
    );
    let path = format!("{P}/pipelines/deploy/triggers/guarded");

    let res = put_yaml(&app, &path, &yaml).await;

    assert_error(
        res,
        400,
        "INVALID_REQUEST",
        "trigger.source.spec.spec: unknown key 'payloadConditons'; did you mean 'payloadConditions'?",
    )
    .await;
    assert_error(get(&app, &path).await, 404, "RESOURCE_NOT_FOUND", "guarded").await;

    // The same in a step: a misspelt timeout would let the step run for the default hour.
    let steps = "          - step:\n              identifier: slow\n              type: Run\n              timout: 1m\n              spec: {command: 'true'}\n";
    let res = put_yaml(
        &app,
        &format!("{P}/pipelines/typo"),
        &pipeline_with_steps("typo", steps),
    )
    .await;
    assert_error(res, 400, "INVALID_REQUEST", "did you mean 'timeout'?").await;
}

#[tokio::test]
async fn a_trigger_with_thousands_of_conditions_is_rejected_and_not_stored() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;
    app.create_pipeline("acc", "default", "proj", "deploy")
        .await;
    let conditions =
        "\n          - {key: <+trigger.payload.ref>, operator: Equals, value: main}".repeat(10_000);
    let yaml = trigger_yaml("many").replace(
        "payloadConditions: []",
        &format!("payloadConditions:{conditions}"),
    );
    let path = format!("{P}/pipelines/deploy/triggers/many");

    let res = put_yaml(&app, &path, &yaml).await;

    assert_error(
        res,
        400,
        "INVALID_REQUEST",
        "payloadConditions has 10000 conditions; at most 64 are allowed",
    )
    .await;
    assert_error(get(&app, &path).await, 404, "RESOURCE_NOT_FOUND", "many").await;
}

#[tokio::test]
async fn a_trigger_for_a_missing_pipeline_is_404() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;

    let res = put_yaml(
        &app,
        &format!("{P}/pipelines/ghost/triggers/on_push"),
        &trigger_yaml("on_push"),
    )
    .await;

    assert_error(res, 404, "RESOURCE_NOT_FOUND", "ghost").await;
}

#[tokio::test]
async fn patch_disables_and_reenables_a_trigger() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let patch = |enabled: bool| {
        app.with_key(Method::PATCH, &t.trigger_path(), &app.root_key)
            .json(&json!({ "enabled": enabled }))
            .send()
    };

    let disabled = success_data(patch(false).await.expect("request")).await;
    assert_eq!(disabled["enabled"], false);
    assert_eq!(disabled["customWebhookToken"], t.token.as_str());
    let res = app.post_webhook(&t.v3_path(), None, "{}").await;
    assert_error(
        res,
        400,
        "INVALID_REQUEST",
        &format!(
            "No enabled custom trigger found for the used custom webhook token: {}",
            t.token
        ),
    )
    .await;

    let enabled = success_data(patch(true).await.expect("request")).await;
    assert_eq!(enabled["enabled"], true);
    fire(&app, &t, "{}").await;
}

#[tokio::test]
async fn the_curl_endpoint_answers_plain_text_with_the_webhook_url() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let url = format!("{}{}", app.address, t.v3_path());

    let res = get(&app, &format!("{}/curl", t.trigger_path())).await;

    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = res.text().await.expect("text");
    assert!(text.starts_with("curl -X POST"), "{text}");
    assert!(text.contains(&format!("--url '{url}'")), "{text}");
}

#[tokio::test]
async fn triggers_of_a_pipeline_are_listed() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    create_sibling(&app, &t, "on_tag").await;

    let data = success_data(get(&app, &format!("{P}/pipelines/deploy/triggers")).await).await;

    let listed: Vec<&str> = data["content"]
        .as_array()
        .expect("content")
        .iter()
        .map(|t| t["identifier"].as_str().expect("identifier"))
        .collect();
    assert_eq!(listed, ["on_push", "on_tag"]);
    assert!(data["nextCursor"].is_null());
    for item in data["content"].as_array().unwrap() {
        assert_eq!(item["customWebhookToken"].as_str().map(str::len), Some(22));
    }
}

#[tokio::test]
async fn deleting_a_trigger_stops_its_token_at_once() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    fire(&app, &t, "{}").await;

    success_data(delete(&app, &t.trigger_path()).await).await;

    let res = app.post_webhook(&t.v3_path(), None, "{}").await;
    assert_error(
        res,
        400,
        "INVALID_REQUEST",
        &format!(
            "No custom trigger found for the used custom webhook token: {}",
            t.token
        ),
    )
    .await;
    assert_error(
        get(&app, &t.trigger_path()).await,
        404,
        "RESOURCE_NOT_FOUND",
        "on_push",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Webhook events

async fn list_events(app: &TestApp, query: &str) -> Response {
    get(app, &format!("{P}/webhookevents{query}")).await
}

fn event_ids(data: &Value) -> Vec<String> {
    data["content"]
        .as_array()
        .expect("content")
        .iter()
        .map(|e| e["eventId"].as_str().expect("eventId").to_owned())
        .collect()
}

#[tokio::test]
async fn webhook_events_are_listed_newest_first() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let mut fired = Vec::new();
    for i in 0..5 {
        fired.push(fire(&app, &t, &format!("{{\"n\":{i}}}")).await);
    }

    let data = success_data(list_events(&app, "").await).await;

    let listed = event_ids(&data);
    assert_eq!(
        listed.iter().collect::<HashSet<_>>(),
        fired.iter().collect::<HashSet<_>>()
    );
    assert_eq!(listed.len(), 5);
    let created: Vec<i64> = data["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventCreatedAt"].as_i64().expect("eventCreatedAt"))
        .collect();
    let fired_at = |id: &String| fired.iter().position(|f| f == id).unwrap();
    for i in 0..listed.len() {
        for j in i + 1..listed.len() {
            assert!(created[i] >= created[j], "newest first: {created:?}");
            // An older event may precede a newer one only when both share a millisecond.
            if fired_at(&listed[i]) < fired_at(&listed[j]) {
                assert_eq!(created[i], created[j], "{listed:?} vs fired {fired:?}");
            }
        }
    }
    let first = &data["content"][0];
    assert_eq!(first["triggerIdentifier"], "on_push");
    assert_eq!(first["pipelineIdentifier"], "deploy");
    assert_eq!(first["status"], "TARGET_EXECUTION_REQUESTED");
}

#[tokio::test]
async fn webhook_events_are_filtered_by_trigger_and_status() {
    let app = spawn_app().await;
    let push = app.create_trigger().await;
    let tag = create_sibling(&app, &push, "on_tag").await;
    let mut push_ids = HashSet::new();
    for _ in 0..3 {
        push_ids.insert(fire(&app, &push, "{}").await);
    }
    let mut tag_ids = HashSet::new();
    for _ in 0..2 {
        tag_ids.insert(fire(&app, &tag, "{}").await);
    }

    let by_tag = success_data(list_events(&app, "?triggerIdentifier=on_tag").await).await;
    let by_push = success_data(list_events(&app, "?triggerIdentifier=on_push").await).await;
    let by_status =
        success_data(list_events(&app, "?status=TARGET_EXECUTION_REQUESTED").await).await;
    let by_other_status =
        success_data(list_events(&app, "?status=NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS").await)
            .await;
    let by_both = success_data(
        list_events(
            &app,
            "?triggerIdentifier=on_tag&status=TARGET_EXECUTION_REQUESTED",
        )
        .await,
    )
    .await;

    assert_eq!(
        event_ids(&by_tag).into_iter().collect::<HashSet<_>>(),
        tag_ids
    );
    assert_eq!(
        event_ids(&by_push).into_iter().collect::<HashSet<_>>(),
        push_ids
    );
    assert_eq!(event_ids(&by_status).len(), 5);
    assert_eq!(event_ids(&by_other_status), Vec::<String>::new());
    assert_eq!(
        event_ids(&by_both).into_iter().collect::<HashSet<_>>(),
        tag_ids
    );
}

#[tokio::test]
async fn webhook_event_limits_outside_1_to_500_are_rejected() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;

    for limit in ["0", "501", "-1", "ten"] {
        let res = list_events(&app, &format!("?limit={limit}")).await;
        assert_error(res, 400, "INVALID_REQUEST", "limit").await;
    }
    success_data(list_events(&app, "?limit=500").await).await;
}

// ---------------------------------------------------------------------------------------------
// Operational endpoints

#[tokio::test]
async fn health_and_readiness_answer_200() {
    let app = spawn_app().await;

    for path in ["/healthz", "/readyz", "/gateway/pipeline/api/healthz"] {
        let res = app
            .request(Method::GET, path)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200, "{path}");
        success_data(res).await;
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text_counting_requests() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.request(Method::GET, "/healthz")
            .send()
            .await
            .expect("request");
    }

    let res = app
        .request(Method::GET, "/metrics")
        .send()
        .await
        .expect("request");

    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = res.text().await.expect("text");
    assert!(
        text.lines()
            .any(|l| l.starts_with("triggerd_http_requests_total{")
                && l.contains("route=\"/healthz\"")
                && l.contains("status=\"200\"")),
        "{text}"
    );
    assert!(
        text.contains("# TYPE triggerd_http_requests_total counter"),
        "{text}"
    );
    // Durations are histograms of fixed buckets, which add up across nodes; not summaries.
    assert!(
        text.contains("# TYPE triggerd_http_request_duration_seconds histogram"),
        "{text}"
    );
    let healthz_bucket = |le: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("triggerd_http_request_duration_seconds_bucket{")
                    && l.contains("route=\"/healthz\"")
                    && l.contains(&format!("le=\"{le}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    // At least this test's three (the recorder is the process's, shared with other tests), in
    // every bucket from 60 s down.
    for le in ["+Inf", "60", "10"] {
        assert!(healthz_bucket(le).is_some_and(|n| n >= 3), "{le}: {text}");
    }
    assert!(
        !text.contains("triggerd_http_request_duration_seconds{"),
        "no quantile series: {text}"
    );
    // A webhook to this idle node queues its execution leased to an idle worker, counted as
    // taken up at intake. (The recorder is the process's, so this shows the series is
    // exported; tests/api/store.rs shows the hand-off itself.)
    let t = app.create_trigger().await;
    success_data(app.post_webhook(&t.v3_path(), None, "{}").await).await;
    let taken = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("triggerd_executions_taken_total{by=\"intake\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = app.metrics().await;
        if taken(&metrics).is_some_and(|n| n >= 1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(taken(&metrics).is_some_and(|n| n >= 1), "{metrics}");
    if !on_postgres() {
        // The SQLite writer's batch sizes (the root key was written through it).
        assert!(
            text.contains("# TYPE triggerd_writer_batch_size histogram"),
            "{text}"
        );
        // Powers of two up to the most a coalesced group holds.
        for le in ["1", "512", "8192"] {
            assert!(
                text.contains(&format!("triggerd_writer_batch_size_bucket{{le=\"{le}\"}}")),
                "{le}: {text}"
            );
        }
    }
}

#[tokio::test]
async fn a_cursor_this_server_did_not_hand_out_is_400() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    for path in [
        format!("{P}/webhookevents?cursor=not-a-cursor"),
        format!("{P}/webhookevents?cursor=YWJj"),
        format!("{P}/pipelines?cursor=%%%"),
        format!("{P}/pipelines/deploy/triggers?cursor=YQpi"),
    ] {
        let res = app
            .with_key(Method::GET, &path, &t.admin_key)
            .send()
            .await
            .expect("request");
        assert_error(res, 400, "INVALID_REQUEST", "cursor").await;
    }
}

// ---------------------------------------------------------------------------------------------
// Response bodies

#[tokio::test]
async fn every_json_response_ends_with_one_newline() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let event = fire(&app, &t, "{}").await;

    let responses = [
        app.request(Method::GET, "/healthz"),
        app.with_key(Method::GET, &format!("{P}/pipelines"), &t.admin_key),
        app.with_key(Method::GET, &t.trigger_path(), &t.admin_key),
        app.request(Method::POST, &t.v3_path())
            .header("content-type", "application/json")
            .body("{}"),
        app.request(
            Method::GET,
            &format!("/webhook/triggerExecutionDetails/{event}?accountIdentifier=acc"),
        ),
        app.request(Method::GET, "/no/such/route"),
        app.request(Method::DELETE, "/healthz"),
        app.request(Method::GET, "/api/v1/accounts/acc"),
        app.with_key(
            Method::GET,
            &format!("{P}/executions?status=bogus"),
            &t.admin_key,
        ),
    ];
    for request in responses {
        let res = request.send().await.expect("request");
        let (status, url) = (res.status(), res.url().path().to_owned());
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        let text = res.text().await.expect("a body");

        assert_eq!(content_type, "application/json", "{status} {url}");
        assert!(text.ends_with("}\n"), "{status} {url}: {text:?}");
        serde_json::from_str::<Value>(&text).expect("still one JSON document");
    }
}
