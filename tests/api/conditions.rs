//! Trigger conditions and runtime input through the real intake (DESIGN §4, §5, §6.2): each
//! Harness status, what the status endpoint explains, dry runs, and save-time validation.

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::{assert_error, example_body, spawn_app, success_data, TestApp, TestTrigger};

/// A pipeline with a String and a Number runtime input (the Number has a default).
const PIPELINE_WITH_INPUTS: &str = "pipeline:\n  name: deploy\n  identifier: deploy\n  variables:\n    - name: image_tag\n      type: String\n      value: <+input>\n    - name: replicas\n      type: Number\n      value: <+input>\n      default: 2\n  stages:\n    - stage:\n        identifier: build\n        steps:\n          - step: {identifier: wait, type: Wait, spec: {duration: 0s}}\n";

/// The conditions of DESIGN §4's example, and an inputYaml reading the payload.
const CONDITIONS: &str = "        payloadConditions:\n          - key: <+trigger.payload.ref>\n            operator: Equals\n            value: refs/heads/main\n        headerConditions:\n          - key: <+trigger.header['X-Event']>\n            operator: In\n            value: push, release\n        jexlCondition: <+trigger.payload.repository.name>.startsWith(\"api\") && <+trigger.payload.size> > 3\n";

const INPUT_YAML: &str = "  inputYaml: |\n    pipeline:\n      identifier: deploy\n      variables:\n        - name: image_tag\n          type: String\n          value: <+trigger.payload.tag>\n";

fn trigger_with(conditions: &str, extra: &str) -> String {
    format!(
        "trigger:\n  name: on_push\n  identifier: on_push\n  source:\n    type: Webhook\n    spec:\n      type: Custom\n      spec:\n{conditions}{extra}"
    )
}

/// A trigger in a pipeline with runtime inputs, with the §4 conditions and the inputYaml.
async fn conditional_trigger(app: &TestApp) -> TestTrigger {
    let t = app.create_trigger().await;
    app.put_pipeline_yaml(&t, PIPELINE_WITH_INPUTS).await;
    let res = app
        .put_trigger_yaml(&t, &trigger_with(CONDITIONS, INPUT_YAML))
        .await;
    assert_eq!(res.status(), 200, "trigger: {}", res.text().await.unwrap());
    t
}

async fn post(app: &TestApp, t: &TestTrigger, event: &str, body: &Value) -> Response {
    app.request(Method::POST, &t.v3_path())
        .header("content-type", "application/json")
        .header("X-Event", event)
        .body(body.to_string())
        .send()
        .await
        .expect("request")
}

fn matching_body() -> Value {
    json!({"ref": "refs/heads/main", "repository": {"name": "api-gateway"}, "size": 4, "tag": "v1.4.2"})
}

/// Posts, checks the `X-Trigger-Status` header, and returns the status endpoint's
/// `webhookProcessingDetails` and `executionDetails`.
async fn outcome(app: &TestApp, t: &TestTrigger, res: Response, status: &str) -> (Value, Value) {
    let header = res
        .headers()
        .get("x-trigger-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let data = success_data(res).await;
    assert_eq!(header.as_deref(), Some(status), "X-Trigger-Status");
    let id = data["eventCorrelationId"].as_str().expect("event id");
    let details = success_data(app.get_status(id, &t.account, None).await).await;
    let processing = details["webhookProcessingDetails"].clone();
    assert_eq!(processing["status"], status, "{processing}");
    (processing, details["executionDetails"].clone())
}

#[tokio::test]
async fn a_webhook_meeting_every_condition_queues_the_pipeline_with_its_resolved_input() {
    let app = spawn_app().await;
    let t = conditional_trigger(&app).await;

    let res = post(&app, &t, "push", &matching_body()).await;

    let (processing, execution) = outcome(&app, &t, res, "TARGET_EXECUTION_REQUESTED").await;
    assert_eq!(
        processing["message"],
        "Pipeline execution was requested successfully"
    );
    assert_eq!(
        processing["runtimeInput"],
        "pipeline:\n  identifier: deploy\n  variables:\n  - name: image_tag\n    type: String\n    value: v1.4.2\n  - name: replicas\n    type: Number\n    value: 2\n"
    );
    let results = processing["conditionResults"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r["matched"] == true), "{processing}");
    assert_eq!(results[1]["actual"], "push");
    assert!(processing["pipelineExecutionId"].is_string());
    assert!(
        matches!(
            execution["pipelineExecutionSummary"]["status"].as_str(),
            Some("Queued" | "Running" | "Success")
        ),
        "{execution}"
    );
}

#[tokio::test]
async fn a_payload_mismatch_is_200_but_queues_nothing_and_says_which_condition() {
    let app = spawn_app().await;
    let t = conditional_trigger(&app).await;
    let mut body = matching_body();
    body["ref"] = json!("refs/heads/dev");

    let res = post(&app, &t, "push", &body).await;

    let (processing, execution) =
        outcome(&app, &t, res, "NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS").await;
    assert_eq!(
        processing["message"],
        "Payload condition 1 of 1 did not match: <+trigger.payload.ref> Equals \"refs/heads/main\", actual \"refs/heads/dev\""
    );
    assert_eq!(
        processing["conditionResults"][0],
        json!({"type": "payload", "key": "<+trigger.payload.ref>", "operator": "Equals",
               "expected": "refs/heads/main", "actual": "refs/heads/dev", "matched": false})
    );
    assert!(execution.is_null(), "no execution: {execution}");
    assert!(processing["pipelineExecutionId"].is_null());
    assert_eq!(processing["exceptionOccured"], false);
}

#[tokio::test]
async fn a_header_mismatch_sets_the_header_status() {
    let app = spawn_app().await;
    let t = conditional_trigger(&app).await;

    let res = post(&app, &t, "pull_request", &matching_body()).await;

    let (processing, execution) =
        outcome(&app, &t, res, "NO_MATCHING_TRIGGER_FOR_HEADER_CONDITIONS").await;
    assert!(
        processing["message"]
            .as_str()
            .unwrap()
            .starts_with("Header condition 1 of 1 did not match: <+trigger.header['X-Event']> In \"push, release\", actual \"pull_request\""),
        "{processing}"
    );
    assert!(execution.is_null());
}

#[tokio::test]
async fn a_jexl_mismatch_sets_the_jexl_status_and_records_the_value() {
    let app = spawn_app().await;
    let t = conditional_trigger(&app).await;
    let mut body = matching_body();
    body["size"] = json!(3);

    let res = post(&app, &t, "release", &body).await;

    let (processing, execution) =
        outcome(&app, &t, res, "NO_MATCHING_TRIGGER_FOR_JEXL_CONDITIONS").await;
    assert!(processing["message"]
        .as_str()
        .unwrap()
        .starts_with("JEXL condition evaluated to false: "));
    let jexl = &processing["conditionResults"][2];
    assert_eq!(jexl["type"], "jexl");
    assert_eq!(jexl["actual"], "false");
    assert!(execution.is_null());
}

#[tokio::test]
async fn a_jexl_condition_that_fails_on_a_missing_field_explains_itself() {
    let app = spawn_app().await;
    let t = conditional_trigger(&app).await;
    let mut body = matching_body();
    body.as_object_mut().unwrap().remove("repository");

    let res = post(&app, &t, "push", &body).await;

    let (processing, _) = outcome(&app, &t, res, "NO_MATCHING_TRIGGER_FOR_JEXL_CONDITIONS").await;
    let message = processing["message"].as_str().unwrap();
    assert!(
        message.contains("cannot call .startsWith() on null (<+trigger.payload.repository.name> is missing) at column 1"),
        "{message}"
    );
}

#[tokio::test]
async fn a_jexl_condition_that_would_work_too_hard_is_a_non_match_that_says_so() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    // Each term splits the whole payload string into single characters: on a 900 KB string a
    // 4 KiB chain of them took 12.5 s per webhook.
    let term = "<+trigger.payload.s>.split(\"\").size() < 0";
    let chain = vec![term; 4000 / (term.len() + 4)].join(" || ");
    let res = app
        .put_trigger_yaml(
            &t,
            &trigger_with(&format!("        jexlCondition: '{chain}'\n"), ""),
        )
        .await;
    assert_eq!(res.status(), 200, "trigger: {}", res.text().await.unwrap());
    let body = json!({"s": "x".repeat(900_000)});

    let res = post(&app, &t, "push", &body).await;

    let (processing, execution) =
        outcome(&app, &t, res, "NO_MATCHING_TRIGGER_FOR_JEXL_CONDITIONS").await;
    let message = processing["message"].as_str().unwrap();
    assert!(
        message.contains("needs more work than one evaluation may do"),
        "{message}"
    );
    assert!(execution.is_null(), "nothing queued");
}

#[tokio::test]
async fn a_missing_runtime_input_gives_invalid_runtime_input_yaml_naming_the_variable() {
    let app = spawn_app().await;
    let t = conditional_trigger(&app).await;
    let mut body = matching_body();
    body.as_object_mut().unwrap().remove("tag");

    let res = post(&app, &t, "push", &body).await;

    let (processing, execution) = outcome(&app, &t, res, "INVALID_RUNTIME_INPUT_YAML").await;
    assert_eq!(
        processing["message"],
        "Runtime input 'image_tag' could not be resolved: <+trigger.payload.tag> is not in the webhook"
    );
    assert_eq!(processing["runtimeInput"], "pipeline: {}\n");
    assert!(execution.is_null());
}

#[tokio::test]
async fn a_mistyped_runtime_input_names_the_variable_and_type() {
    let app = spawn_app().await;
    let t = conditional_trigger(&app).await;
    let input = "  inputYaml: |\n    pipeline:\n      variables:\n        - {name: image_tag, value: x}\n        - {name: replicas, value: <+trigger.payload.replicas>}\n";
    let res = app
        .put_trigger_yaml(&t, &trigger_with(CONDITIONS, input))
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let mut body = matching_body();
    body["replicas"] = json!("three");

    let res = post(&app, &t, "push", &body).await;

    let (processing, _) = outcome(&app, &t, res, "INVALID_RUNTIME_INPUT_YAML").await;
    assert_eq!(
        processing["message"],
        "Runtime input 'replicas' must be a Number, got string \"three\""
    );
}

#[tokio::test]
async fn a_pipeline_changed_after_the_trigger_was_saved_is_caught_at_intake() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let res = post(&app, &t, "push", &json!({})).await;
    success_data(res).await;

    app.put_pipeline_yaml(&t, PIPELINE_WITH_INPUTS).await;
    let res = post(&app, &t, "push", &json!({})).await;

    let (processing, _) = outcome(&app, &t, res, "INVALID_RUNTIME_INPUT_YAML").await;
    assert_eq!(
        processing["message"],
        "inputYaml does not give runtime input 'image_tag' of pipeline 'deploy' (it has no default)"
    );
}

#[tokio::test]
async fn a_dry_run_shows_results_and_input_but_stores_and_queues_nothing() {
    let app = spawn_app().await;
    let t = conditional_trigger(&app).await;

    let matched = app
        .request(Method::POST, &t.v3_path())
        .header("X-Event", "push")
        .header("X-Trigger-Dry-Run", "true")
        .body(matching_body().to_string())
        .send()
        .await
        .expect("request");
    let mut body = matching_body();
    body["ref"] = json!("refs/tags/v1");
    let mismatched = app
        .request(Method::POST, &t.v3_path())
        .header("X-Event", "push")
        .header("X-Trigger-Dry-Run", "true")
        .body(body.to_string())
        .send()
        .await
        .expect("request");

    let matched = success_data(matched).await["dryRun"].clone();
    assert_eq!(matched["status"], "TARGET_EXECUTION_REQUESTED");
    assert_eq!(matched["conditionResults"].as_array().unwrap().len(), 3);
    assert!(matched["runtimeInput"]
        .as_str()
        .unwrap()
        .contains("value: v1.4.2"));
    assert_eq!(
        mismatched.headers()["x-trigger-status"],
        "NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS"
    );
    let mismatched = success_data(mismatched).await["dryRun"].clone();
    assert_eq!(mismatched["conditionResults"][0]["actual"], "refs/tags/v1");
    assert!(mismatched["message"]
        .as_str()
        .unwrap()
        .contains("refs/tags/v1"));
    assert!(app.events(&t).await.is_empty(), "a dry run stores nothing");
}

#[tokio::test]
async fn a_bad_signature_is_refused_before_any_condition_is_evaluated() {
    let app = spawn_app().await;
    let t = conditional_trigger(&app).await;
    let signature = "  signature:\n    header: X-Hub-Signature-256\n    secret: a-shared-secret-of-some-length\n    prefix: \"sha256=\"\n";
    let res = app
        .put_trigger_yaml(
            &t,
            &trigger_with(CONDITIONS, &format!("{INPUT_YAML}{signature}")),
        )
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    let mut body = matching_body();
    body["ref"] = json!("refs/heads/dev");

    // A body that also fails the conditions: the answer is still the signature's 401, so the
    // signature was checked first.
    let res = app
        .request(Method::POST, &t.v3_path())
        .header("X-Event", "push")
        .header("X-Hub-Signature-256", format!("sha256={}", "0".repeat(64)))
        .body(body.to_string())
        .send()
        .await
        .expect("request");

    assert_error(res, 401, "INVALID_TOKEN", "X-Hub-Signature-256").await;
    assert!(app.events(&t).await.is_empty());
}

#[tokio::test]
async fn the_harness_documentation_examples_work_verbatim() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let conditions = "        headerConditions:\n          - {key: \"<+trigger.header['X-GitHub-Event']>\", operator: Equals, value: push}\n        jexlCondition: <+trigger.payload.pull_request.diff_url>.contains(\"triggerNgDemo\") && <+eventPayload.repository.name> == \"x\"\n";
    let res = app
        .put_trigger_yaml(&t, &trigger_with(conditions, ""))
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let body = json!({"pull_request": {"diff_url": "https://github.com/acme/triggerNgDemo/pull/1.diff"},
                      "repository": {"name": "x"}});

    let res = app
        .request(Method::POST, &t.v3_path())
        .header("x-github-event", "push")
        .body(body.to_string())
        .send()
        .await
        .expect("request");

    outcome(&app, &t, res, "TARGET_EXECUTION_REQUESTED").await;
}

#[tokio::test]
async fn a_raw_text_body_is_the_payload_string() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let conditions = "        payloadConditions:\n          - {key: <+trigger.payload>, operator: Regex, value: 'deploy .+'}\n";
    let res = app
        .put_trigger_yaml(&t, &trigger_with(conditions, ""))
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    let hit = app
        .post_webhook(&t.v3_path(), None, "deploy api\nnow")
        .await;
    let miss = app.post_webhook(&t.v3_path(), None, "rollback api").await;

    outcome(&app, &t, hit, "TARGET_EXECUTION_REQUESTED").await;
    outcome(&app, &t, miss, "NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS").await;
}

#[tokio::test]
async fn a_condition_on_a_secret_header_compares_the_real_value_but_shows_only_the_mask() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let token = "gl-expected-token-value";
    let conditions = format!(
        "        headerConditions:\n          - {{key: \"<+trigger.header['X-Gitlab-Token']>\", operator: Equals, value: {token}}}\n        jexlCondition: <+trigger.header['Authorization']> == \"Bearer jexl-secret-value\"\n"
    );
    let res = app
        .put_trigger_yaml(&t, &trigger_with(&conditions, ""))
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let send = |gitlab: &'static str, bearer: &'static str| {
        app.request(Method::POST, &t.v3_path())
            .header("X-Gitlab-Token", gitlab)
            .header("Authorization", bearer)
            .body("{}")
            .send()
    };

    let right = send(token, "Bearer jexl-secret-value")
        .await
        .expect("request");
    let wrong_token = send("gl-wrong-token-sent", "Bearer jexl-secret-value")
        .await
        .expect("request");
    let wrong_bearer = send(token, "Bearer wrong-bearer-sent")
        .await
        .expect("request");

    let (processing, _) = outcome(&app, &t, right, "TARGET_EXECUTION_REQUESTED").await;
    assert_eq!(processing["conditionResults"][0]["expected"], "********");
    assert_eq!(processing["conditionResults"][0]["actual"], "********");
    assert_eq!(
        processing["conditionResults"][1]["key"],
        "jexlCondition (not shown: it reads a secret header)"
    );
    let (header_miss, _) = outcome(
        &app,
        &t,
        wrong_token,
        "NO_MATCHING_TRIGGER_FOR_HEADER_CONDITIONS",
    )
    .await;
    let (jexl_miss, _) = outcome(
        &app,
        &t,
        wrong_bearer,
        "NO_MATCHING_TRIGGER_FOR_JEXL_CONDITIONS",
    )
    .await;
    for shown in [processing, header_miss, jexl_miss] {
        let text = shown.to_string();
        for secret in [
            token,
            "gl-wrong-token-sent",
            "jexl-secret-value",
            "wrong-bearer-sent",
        ] {
            assert!(!text.contains(secret), "{secret} shown in {text}");
        }
    }
}

#[tokio::test]
async fn invalid_conditions_are_refused_at_save_time_with_the_position_and_never_stored() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    app.put_pipeline_yaml(&t, PIPELINE_WITH_INPUTS).await;
    let before = app
        .with_key(Method::GET, &t.trigger_path(), &app.root_key)
        .send()
        .await
        .expect("request");
    let before = success_data(before).await;
    let cases = [
        (
            "        payloadConditions:\n          - {key: <+trigger.payload.ref>, operator: Matches, value: x}\n".to_owned(),
            "payloadConditions[0]: unknown operator 'Matches'",
        ),
        (
            "        jexlCondition: <+trigger.payload.size> >> 3\n".to_owned(),
            "jexlCondition: expected a value, a reference or '(', found '>' at column 26",
        ),
        (
            "        jexlCondition: <+trigger.payload.name>.startWith(\"a\")\n".to_owned(),
            "jexlCondition: unknown method 'startWith'",
        ),
        (
            "        headerConditions:\n          - {key: \"<+trigger.headr['X']>\", operator: Equals, value: x}\n".to_owned(),
            "headerConditions[0]: key: unknown reference '<+trigger.headr.X>'",
        ),
        (
            "        payloadConditions: []\n  inputYaml: |\n    pipeline:\n      variables:\n        - {name: imagetag, value: x}\n".to_owned(),
            "inputYaml: variable 'imagetag' is not declared by pipeline 'deploy'",
        ),
        (
            "        payloadConditions: []\n  inputYaml: |\n    pipeline:\n      variables:\n        - {name: image_tag, value: '<+trigger.payload.a'}\n".to_owned(),
            "inputYaml: pipeline.variables[0].value: unterminated reference: '<+' without a closing '>' at column 1",
        ),
    ];
    for (conditions, message) in cases {
        let res = app
            .put_trigger_yaml(&t, &trigger_with(&conditions, ""))
            .await;
        assert_error(res, 400, "INVALID_REQUEST", message).await;
    }

    let after = app
        .with_key(Method::GET, &t.trigger_path(), &app.root_key)
        .send()
        .await
        .expect("request");
    assert_eq!(
        success_data(after).await,
        before,
        "the stored trigger is unchanged"
    );
}

#[tokio::test]
async fn a_trigger_read_back_and_saved_again_keeps_its_signature_secret() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let secret = "a-shared-secret-of-some-length";
    let signature = format!("  signature:\n    header: X-Signature\n    secret: {secret}\n");
    let res = app
        .put_trigger_yaml(
            &t,
            &trigger_with("        payloadConditions: []\n", &signature),
        )
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let shown = app
        .with_key(Method::GET, &t.trigger_path(), &app.root_key)
        .header("accept", "application/yaml")
        .send()
        .await
        .expect("request");
    let shown = success_data(shown).await;
    let yaml = shown["yaml"].as_str().expect("yaml").to_owned();
    assert!(
        yaml.contains("********") && !yaml.contains(secret),
        "{yaml}"
    );

    let res = app.put_trigger_yaml(&t, &yaml).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    let body = "{}";
    let mac = {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    };
    let res = app
        .request(Method::POST, &t.v3_path())
        .header("X-Signature", mac)
        .body(body)
        .send()
        .await
        .expect("request");
    success_data(res).await;
}

#[tokio::test]
async fn the_example_pipeline_and_trigger_work_as_their_comments_say() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let pipeline = example_body(
        include_str!("../../examples/pipelines/deploy.yaml"),
        "pipeline",
    );
    app.put_pipeline_yaml(&t, &pipeline).await;
    let path = format!(
        "{}/pipelines/deploy/triggers/deploy_on_push",
        t.project_path()
    );
    let res = app
        .with_key(Method::PUT, &path, &app.root_key)
        .header("content-type", "application/yaml")
        .body(example_body(
            include_str!("../../examples/triggers/deploy_on_push.yaml"),
            "trigger",
        ))
        .send()
        .await
        .expect("request");
    let created = success_data(res).await;
    let example = TestTrigger {
        pipeline: "deploy".into(),
        trigger: "deploy_on_push".into(),
        token: created["customWebhookToken"].as_str().unwrap().to_owned(),
        ..t
    };
    let payload = json!({"ref": "refs/heads/main", "repository": {"name": "api-gateway"},
                         "commits": [{"id": "1"}], "image": {"tag": "v1.4.2"}});

    let res = app
        .request(Method::POST, &example.v3_path())
        .header("X-GitHub-Event", "push")
        .body(payload.to_string())
        .send()
        .await
        .expect("request");

    let (processing, _) = outcome(&app, &example, res, "TARGET_EXECUTION_REQUESTED").await;
    let input = processing["runtimeInput"].as_str().unwrap();
    assert!(
        input.contains("value: v1.4.2") && input.contains("value: 2"),
        "{input}"
    );
}

#[tokio::test]
async fn a_stored_trigger_whose_expression_no_longer_compiles_records_an_exception_not_a_500() {
    let mut app = spawn_app().await;
    let t = app.create_trigger().await;
    app.stop().await;
    // What a release that did not check expressions could have stored.
    let changed = app
        .execute_sql(if crate::helpers::on_postgres() {
            "UPDATE triggers SET spec = jsonb_set(spec::jsonb, \
             '{trigger,source,spec,spec,jexlCondition}', '\"a = 1\"')::text"
        } else {
            "UPDATE triggers SET spec = json_set(spec, '$.trigger.source.spec.spec.jexlCondition', 'a = 1')"
        })
        .await;
    assert_eq!(changed, 1);
    let app = app.restart().await;

    let res = app.post_webhook(&t.v3_path(), None, "{}").await;

    let (processing, execution) = outcome(&app, &t, res, "EXCEPTION_WHILE_PROCESSING").await;
    assert_eq!(processing["exceptionOccured"], true);
    let message = processing["message"].as_str().unwrap();
    assert!(
        message.starts_with("Trigger on_push cannot be evaluated (jexlCondition: ")
            && message.ends_with("save it again to fix it"),
        "{message}"
    );
    assert!(execution.is_null());
    let shown = app
        .with_key(Method::GET, &t.trigger_path(), &app.root_key)
        .send()
        .await
        .expect("request");
    assert_eq!(
        shown.status(),
        200,
        "the trigger can still be read and fixed"
    );
}

#[tokio::test]
async fn a_costly_jexl_condition_does_not_hold_the_http_workers() {
    let _heavy = crate::helpers::heavy_test().await;
    // One HTTP worker: evaluated on it, a condition would keep every other request waiting.
    let app = crate::helpers::spawn_app_with(|s| s.http_workers = 1).await;
    let t = app.create_trigger().await;
    let term = "<+trigger.payload.s>.split(\"\").size() < 0";
    let chain = vec![term; 4000 / (term.len() + 4)].join(" || ");
    let res = app
        .put_trigger_yaml(
            &t,
            &trigger_with(&format!("        jexlCondition: '{chain}'\n"), ""),
        )
        .await;
    assert_eq!(res.status(), 200, "trigger: {}", res.text().await.unwrap());
    let body = json!({"s": "x".repeat(900_000)});

    // How long one evaluation takes here, alone.
    let started = std::time::Instant::now();
    let res = post(&app, &t, "push", &body).await;
    assert_eq!(res.status(), 200);
    let one = started.elapsed();

    // Three at once, then a health check while they are being evaluated.
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let (app, t, body) = (app.address.clone(), t.clone(), body.clone());
        flood.spawn(async move {
            reqwest::Client::new()
                .post(format!("{app}{}", t.v3_path()))
                .header("X-Event", "push")
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
    }
    tokio::time::sleep(one / 4).await;
    let asked = std::time::Instant::now();
    let health = app
        .request(reqwest::Method::GET, "/healthz")
        .send()
        .await
        .expect("healthz");
    let waited = asked.elapsed();
    assert_eq!(health.status(), 200);
    while let Some(done) = flood.join_next().await {
        assert_eq!(done.unwrap().unwrap(), 200);
    }
    assert!(
        waited < one / 2,
        "/healthz waited {waited:?} behind conditions that take {one:?} each"
    );
}
