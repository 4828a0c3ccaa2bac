//! `mandate_custom_webhook_authorization` (DESIGN §7, §2.1 step 5, §3.1): how account, org and
//! project values resolve, and what the resolution changes — intake without a key, the settings
//! API's `value`/`source`, and the `X-Api-Key` line of the generated cURL.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{assert_error, spawn_app, success_data, trigger_yaml, TestApp, TestTrigger};

const SAMPLE_BODY: &str = r#"{"sample_key": "sample_value"}"#;
const CURL_KEY_HEADER: &str = "-H 'X-Api-Key: sample_api_key'";

/// A value set at one scope: `(value, allowOverrides)`.
type Set = Option<(bool, bool)>;

const LOCKED: bool = false;
const OPEN: bool = true;

/// One row of the resolution table.
struct Case {
    name: &'static str,
    account: Set,
    org: Set,
    project: Set,
    /// The resolved value and the `source` the settings API reports.
    expect: (bool, &'static str),
}

/// DESIGN §7: a locked account value wins; else a locked org value; else the most specific
/// value set; else false. The first sixteen rows walk account value × allowOverrides × org
/// set/unset × project set/unset, each narrower value opposite to the one above it so that
/// every layer that counts changes the outcome.
#[rustfmt::skip]
const CASES: &[Case] = &[
    // Account true, locked: nothing below matters.
    Case { name: "account true locked", account: Some((true, LOCKED)), org: None, project: None, expect: (true, "ACCOUNT") },
    Case { name: "account true locked, project false", account: Some((true, LOCKED)), org: None, project: Some((false, OPEN)), expect: (true, "ACCOUNT") },
    Case { name: "account true locked, org false", account: Some((true, LOCKED)), org: Some((false, OPEN)), project: None, expect: (true, "ACCOUNT") },
    Case { name: "account true locked, org false, project true", account: Some((true, LOCKED)), org: Some((false, OPEN)), project: Some((true, OPEN)), expect: (true, "ACCOUNT") },
    // Account false, locked.
    Case { name: "account false locked", account: Some((false, LOCKED)), org: None, project: None, expect: (false, "ACCOUNT") },
    Case { name: "account false locked, project true", account: Some((false, LOCKED)), org: None, project: Some((true, OPEN)), expect: (false, "ACCOUNT") },
    Case { name: "account false locked, org true", account: Some((false, LOCKED)), org: Some((true, OPEN)), project: None, expect: (false, "ACCOUNT") },
    Case { name: "account false locked, org true, project false", account: Some((false, LOCKED)), org: Some((true, OPEN)), project: Some((false, OPEN)), expect: (false, "ACCOUNT") },
    // Account true, overridable: the most specific value wins.
    Case { name: "account true open", account: Some((true, OPEN)), org: None, project: None, expect: (true, "ACCOUNT") },
    Case { name: "account true open yields to project false", account: Some((true, OPEN)), org: None, project: Some((false, OPEN)), expect: (false, "PROJECT") },
    Case { name: "account true open yields to org false", account: Some((true, OPEN)), org: Some((false, OPEN)), project: None, expect: (false, "ORG") },
    Case { name: "account true open, org false, project true", account: Some((true, OPEN)), org: Some((false, OPEN)), project: Some((true, OPEN)), expect: (true, "PROJECT") },
    // Account false, overridable.
    Case { name: "account false open", account: Some((false, OPEN)), org: None, project: None, expect: (false, "ACCOUNT") },
    Case { name: "account false open yields to project true", account: Some((false, OPEN)), org: None, project: Some((true, OPEN)), expect: (true, "PROJECT") },
    Case { name: "account false open yields to org true", account: Some((false, OPEN)), org: Some((true, OPEN)), project: None, expect: (true, "ORG") },
    Case { name: "account false open, org true, project false", account: Some((false, OPEN)), org: Some((true, OPEN)), project: Some((false, OPEN)), expect: (false, "PROJECT") },
    // Locked orgs.
    Case { name: "locked org true beats project false", account: Some((false, OPEN)), org: Some((true, LOCKED)), project: Some((false, OPEN)), expect: (true, "ORG") },
    Case { name: "locked org false beats project true", account: None, org: Some((false, LOCKED)), project: Some((true, OPEN)), expect: (false, "ORG") },
    Case { name: "locked account beats locked org", account: Some((false, LOCKED)), org: Some((true, LOCKED)), project: Some((true, OPEN)), expect: (false, "ACCOUNT") },
    // No account value.
    Case { name: "nothing set", account: None, org: None, project: None, expect: (false, "DEFAULT") },
    Case { name: "project true only", account: None, org: None, project: Some((true, OPEN)), expect: (true, "PROJECT") },
    Case { name: "org true only", account: None, org: Some((true, OPEN)), project: None, expect: (true, "ORG") },
    Case { name: "open org true, project false", account: None, org: Some((true, OPEN)), project: Some((false, OPEN)), expect: (false, "PROJECT") },
];

fn mandate_message(account: &str) -> String {
    format!(
        "Invalid request: Authorization is mandatory for custom triggers in {account}:default:proj. Please add X-Api-Key header in the request"
    )
}

/// Account `account` with org `default`, project `proj`, pipeline `deploy` and trigger
/// `on_push`, made with the root key (no account key, to keep each case cheap).
async fn trigger_in(app: &TestApp, account: &str) -> TestTrigger {
    app.create_project(account, "default", "proj").await;
    app.create_pipeline(account, "default", "proj", "deploy")
        .await;
    let mut t = TestTrigger {
        account: account.into(),
        org: "default".into(),
        project: "proj".into(),
        pipeline: "deploy".into(),
        trigger: "on_push".into(),
        token: String::new(),
        admin_key: String::new(),
    };
    let res = app.put_trigger_yaml(&t, &trigger_yaml("on_push")).await;
    assert_eq!(res.status(), 201, "trigger created");
    let data = success_data(res).await;
    t.token = data["customWebhookToken"].as_str().expect("token").into();
    t
}

/// The resolved setting for the project of `t`, as the settings API reports it.
async fn resolved_setting(app: &TestApp, t: &TestTrigger) -> Value {
    let res = app
        .with_key(
            Method::GET,
            &format!(
                "/api/v1/settings/mandate_custom_webhook_authorization?accountIdentifier={}&orgIdentifier={}&projectIdentifier={}",
                t.account, t.org, t.project
            ),
            &app.root_key,
        )
        .send()
        .await
        .expect("request");
    success_data(res).await
}

/// The trigger's cURL snippet, from `GET trigger` (`data.curl`) and from `GET .../curl`;
/// asserts both agree and returns it.
async fn curl_snippet(app: &TestApp, t: &TestTrigger) -> String {
    let res = app
        .with_key(Method::GET, &t.trigger_path(), &app.root_key)
        .send()
        .await
        .expect("request");
    let from_trigger = success_data(res).await["curl"]
        .as_str()
        .expect("curl")
        .to_owned();
    let res = app
        .with_key(
            Method::GET,
            &format!("{}/curl", t.trigger_path()),
            &app.root_key,
        )
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let plain = res.text().await.expect("text");
    assert_eq!(plain.trim_end(), from_trigger, "both forms agree");
    from_trigger
}

/// Asserts what a project whose mandate resolves to `mandated` does.
async fn assert_mandate(app: &TestApp, t: &TestTrigger, mandated: bool, case: &str) {
    let res = app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await;
    if mandated {
        let body = assert_error(res, 400, "INVALID_REQUEST", "").await;
        assert_eq!(body["message"], mandate_message(&t.account), "{case}");
    } else {
        assert_eq!(res.status(), 200, "{case}: {}", res.text().await.unwrap());
    }
    let curl = curl_snippet(app, t).await;
    assert_eq!(
        curl.contains(CURL_KEY_HEADER),
        mandated,
        "{case}: curl {curl}"
    );
}

#[tokio::test]
async fn mandate_resolves_as_documented_for_every_combination_of_scopes() {
    let app = spawn_app().await;

    for (i, case) in CASES.iter().enumerate() {
        // Arrange: a fresh account per case.
        let account = format!("mandate{i}");
        let t = trigger_in(&app, &account).await;
        if let Some((value, overrides)) = case.account {
            app.set_mandate(&account, "", "", value, overrides).await;
        }
        if let Some((value, overrides)) = case.org {
            app.set_mandate(&account, "default", "", value, overrides)
                .await;
        }
        if let Some((value, overrides)) = case.project {
            app.set_mandate(&account, "default", "proj", value, overrides)
                .await;
        }
        let (value, source) = case.expect;

        // Act and assert: the settings API.
        let setting = resolved_setting(&app, &t).await;
        assert_eq!(setting["value"], value, "{}: {setting}", case.name);
        assert_eq!(setting["source"], source, "{}: {setting}", case.name);

        // Act and assert: intake without a key, and the cURL snippet.
        assert_mandate(&app, &t, value, case.name).await;

        // A valid key is always accepted.
        let res = app
            .post_webhook(&t.v3_path(), Some(&app.root_key), SAMPLE_BODY)
            .await;
        assert_eq!(res.status(), 200, "{}: with a key", case.name);
    }
}

#[tokio::test]
async fn changing_a_setting_takes_effect_on_the_next_request() {
    let app = spawn_app().await;
    let t = trigger_in(&app, "acc").await;
    // Each step changes one setting and is checked right away, after the previous step filled
    // the caches with the old resolution.
    let steps: &[(&str, &str, bool, bool, bool)] = &[
        // (org, project, value, allowOverrides, resolved)
        ("", "", true, OPEN, true),
        ("default", "proj", false, OPEN, false),
        ("default", "", true, LOCKED, true),
        ("", "", false, LOCKED, false),
        ("", "", true, OPEN, true),
        ("default", "", false, OPEN, false),
    ];
    assert_mandate(&app, &t, false, "nothing set").await;

    for &(org, project, value, overrides, resolved) in steps {
        app.set_mandate("acc", org, project, value, overrides).await;

        let case = format!("after setting {value} at '{org}/{project}'");
        assert_mandate(&app, &t, resolved, &case).await;
        assert_eq!(
            resolved_setting(&app, &t).await["value"],
            resolved,
            "{case}"
        );
    }
}

#[tokio::test]
async fn with_the_mandate_on_a_valid_executor_key_is_accepted() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let executor = app.create_key("acc", "executor", None).await;
    let scoped = app
        .create_key("acc", "executor", Some(vec!["default/proj"]))
        .await;
    app.set_mandate("acc", "", "", true, LOCKED).await;

    for key in [&executor, &scoped, &t.admin_key] {
        let res = app.post_webhook(&t.v3_path(), Some(key), SAMPLE_BODY).await;

        let data = success_data(res).await;
        assert!(data["eventCorrelationId"].is_string());
    }
}

#[tokio::test]
async fn with_the_mandate_on_a_bad_key_is_rejected_with_401_not_the_mandate_message() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    app.set_mandate("acc", "", "", true, LOCKED).await;

    let res = app
        .post_webhook(&t.v3_path(), Some("garbage"), SAMPLE_BODY)
        .await;

    assert_error(
        res,
        401,
        "INVALID_TOKEN",
        "Invalid call: Invalid token or token expired. Account id for API called: acc",
    )
    .await;
}

#[tokio::test]
async fn mandate_in_one_project_leaves_a_sibling_project_open() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let sibling = app.create_trigger_in("acc", "default", "sibling").await;
    app.set_mandate("acc", "default", "proj", true, OPEN).await;

    let mandated = app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await;
    let open = app
        .post_webhook(&sibling.v3_path(), None, SAMPLE_BODY)
        .await;

    assert_error(mandated, 400, "INVALID_REQUEST", &mandate_message("acc")).await;
    success_data(open).await;
}

#[tokio::test]
async fn curl_snippet_matches_the_documented_form() {
    let app = spawn_app().await;
    let t = trigger_in(&app, "acc").await;
    let url = format!(
        "{}/webhook/custom/{}/v3?accountIdentifier=acc&orgIdentifier=default&projectIdentifier=proj&pipelineIdentifier=deploy&triggerIdentifier=on_push",
        app.address, t.token
    );

    let open = curl_snippet(&app, &t).await;
    app.set_mandate("acc", "", "", true, LOCKED).await;
    let mandated = curl_snippet(&app, &t).await;

    assert_eq!(
        open,
        format!("curl -X POST -H 'content-type: application/json' --url '{url}' -d '{{\"sample_key\": \"sample_value\"}}'")
    );
    assert_eq!(
        mandated,
        format!("curl -X POST -H 'content-type: application/json' -H 'X-Api-Key: sample_api_key' --url '{url}' -d '{{\"sample_key\": \"sample_value\"}}'")
    );
}
