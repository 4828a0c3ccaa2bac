//! The console (DESIGN §12) over plain HTTP: sessions, CSRF, CSP, authorization and the links
//! in webhook answers. The browser walk-through is in `browser.rs`.

use reqwest::{Method, Response};
use serde_json::Value;

use crate::helpers::{spawn_app, TestApp, TestTrigger};

const SAMPLE_BODY: &str = r#"{"sample_key": "sample_value"}"#;

/// A browser without JavaScript: a session cookie and the CSRF token of the last page read.
struct Visitor<'a> {
    app: &'a TestApp,
    cookie: String,
    csrf: String,
}

/// The `triggerd_session` cookie a response sets, with its attributes.
fn session_cookie(res: &Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("triggerd_session="))
        .map(str::to_owned)
}

fn location(res: &Response) -> String {
    res.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The value of the first hidden `csrf` field of a page.
fn csrf_of(html: &str) -> Option<String> {
    let start = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_owned())
}

async fn post_sign_in(app: &TestApp, key: &str, next: &str) -> Response {
    app.request(Method::POST, "/ui/signin")
        .form(&[("key", key), ("next", next)])
        .send()
        .await
        .expect("request")
}

impl<'a> Visitor<'a> {
    /// Signs in with `key` and reads the picker, for a CSRF token.
    async fn sign_in(app: &'a TestApp, key: &str) -> Visitor<'a> {
        let res = post_sign_in(app, key, "/ui/projects").await;
        assert_eq!(res.status(), 303, "signed in");
        let cookie = session_cookie(&res).expect("a session cookie");
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let mut v = Visitor {
            app,
            cookie,
            csrf: String::new(),
        };
        // Follow the picker's redirects (a key of one account goes to its account's page).
        let mut page = "/ui/projects".to_owned();
        for _ in 0..3 {
            let (status, body) = v.get(&page).await;
            match status {
                303 => page = body,
                200 => return v,
                other => panic!("{page}: {other}"),
            }
        }
        panic!("the picker redirects in a loop")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Response {
        req.header("cookie", &self.cookie)
            .send()
            .await
            .expect("request")
    }

    /// GETs a console page; returns the status and the body (remembering its CSRF token).
    async fn get(&mut self, path: &str) -> (u16, String) {
        let res = self.send(self.app.request(Method::GET, path)).await;
        let status = res.status().as_u16();
        let body = if status == 303 {
            location(&res)
        } else {
            res.text().await.expect("body")
        };
        if let Some(t) = csrf_of(&body) {
            self.csrf = t;
        }
        (status, body)
    }

    /// Posts a form with the CSRF token; returns the status and the body (or the redirect).
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        let csrf = self.csrf.clone();
        form.push(("csrf", &csrf));
        let res = self
            .send(self.app.request(Method::POST, path).form(&form))
            .await;
        let status = res.status().as_u16();
        let body = if status == 303 {
            location(&res)
        } else {
            res.text().await.expect("body")
        };
        (status, body)
    }
}

fn ui_project(t: &TestTrigger) -> String {
    format!(
        "/ui/accounts/{}/orgs/{}/projects/{}",
        t.account, t.org, t.project
    )
}

async fn trigger_enabled(app: &TestApp, t: &TestTrigger) -> bool {
    let res = app
        .with_key(Method::GET, &t.trigger_path(), &app.root_key)
        .send()
        .await
        .expect("request");
    let body: Value = res.json().await.expect("json");
    body["data"]["enabled"].as_bool().expect("enabled")
}

#[tokio::test]
async fn pages_need_a_session_and_send_the_browser_to_sign_in_then_back() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let page = format!("{}/executions?status=Success", ui_project(&t));

    let res = app.request(Method::GET, &page).send().await.unwrap();
    assert_eq!(res.status(), 303);
    let to = location(&res);
    assert!(to.starts_with("/ui/signin?next="), "{to}");
    assert!(to.contains("%2Fexecutions%3Fstatus%3DSuccess"), "{to}");

    let res = post_sign_in(&app, &t.admin_key, &page).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), page, "back where the link pointed");
}

#[tokio::test]
async fn a_bad_key_shows_the_error_on_the_sign_in_page_and_sets_no_cookie() {
    let app = spawn_app().await;
    app.create_account("acc").await;
    for bad in ["nonsense", "pat.acc.000000000000000000000000.wrong", ""] {
        let res = post_sign_in(&app, bad, "/ui/").await;
        assert_eq!(res.status(), 401, "{bad}");
        assert!(session_cookie(&res).is_none(), "no cookie for {bad}");
        let body = res.text().await.unwrap();
        assert!(body.contains("That API key is not valid"), "{body}");
    }
}

#[tokio::test]
async fn the_session_cookie_is_http_only_strict_and_is_not_the_key() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let res = post_sign_in(&app, &t.admin_key, "/ui/").await;
    let cookie = session_cookie(&res).expect("cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Path=/ui"), "{cookie}");
    let secret = t.admin_key.rsplit('.').next().unwrap();
    assert!(
        !cookie.contains(secret),
        "the key never reaches the browser"
    );
    // Served over plain http here; `Secure` is set when the public URL is https.
    assert!(!cookie.contains("Secure"), "{cookie}");
}

#[tokio::test]
async fn every_console_response_forbids_inline_script_and_framing() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let mut v = Visitor::sign_in(&app, &t.admin_key).await;
    let _ = v.get("/ui/projects").await;
    for path in [
        "/ui/signin".to_owned(),
        format!("{}/triggers", ui_project(&t)),
        "/ui/no/such/page".to_owned(),
    ] {
        let res = v.send(app.request(Method::GET, &path)).await;
        let csp = res
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(res.headers()["x-frame-options"], "DENY", "{path}");
        let body = res.text().await.unwrap();
        assert!(!body.contains("<script>"), "no inline script on {path}");
    }
}

#[tokio::test]
async fn a_post_without_the_csrf_token_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let mut v = Visitor::sign_in(&app, &t.admin_key).await;
    let toggle = format!(
        "{}/pipelines/{}/triggers/{}/enabled",
        ui_project(&t),
        t.pipeline,
        t.trigger
    );

    let res = v
        .send(
            app.request(Method::POST, &toggle)
                .form(&[("enabled", "false")]),
        )
        .await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("CSRF token"));
    let res = v
        .send(
            app.request(Method::POST, &toggle)
                .form(&[("enabled", "false"), ("csrf", "forged")]),
        )
        .await;
    assert_eq!(res.status(), 403);
    assert!(trigger_enabled(&app, &t).await, "still enabled");

    let (status, _) = v.post(&toggle, &[("enabled", "false")]).await;
    assert_eq!(status, 303);
    assert!(!trigger_enabled(&app, &t).await, "disabled with the token");
}

#[tokio::test]
async fn a_key_cannot_open_another_accounts_pages() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let other = app.create_trigger_in("other", "default", "proj").await;
    let mut v = Visitor::sign_in(&app, &t.admin_key).await;

    for path in [
        format!("{}/executions", ui_project(&other)),
        format!("{}/pipelines/deploy", ui_project(&other)),
        format!(
            "{}/pipelines/deploy/triggers/{}",
            ui_project(&other),
            other.trigger
        ),
        "/ui/accounts/other/keys".to_owned(),
        "/ui/accounts/other".to_owned(),
    ] {
        let (status, body) = v.get(&path).await;
        assert!(status == 401 || status == 403, "{path}: {status}");
        assert!(!body.contains(&other.token), "{path} shows no token");
    }
    let toggle = format!(
        "{}/pipelines/deploy/triggers/{}/enabled",
        ui_project(&other),
        other.trigger
    );
    let (status, _) = v.post(&toggle, &[("enabled", "false")]).await;
    assert_eq!(status, 403);
    assert!(trigger_enabled(&app, &other).await);
}

#[tokio::test]
async fn an_executor_key_reads_executions_but_cannot_manage_pipelines() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let executor = app.create_key("acc", "executor", None).await;
    let mut v = Visitor::sign_in(&app, &executor).await;

    let (status, _) = v.get(&format!("{}/executions", ui_project(&t))).await;
    assert_eq!(status, 200);
    let (status, body) = v.get(&format!("{}/pipelines", ui_project(&t))).await;
    assert_eq!(status, 403);
    assert!(
        body.contains("Missing permission to manage account acc"),
        "{body}"
    );
}

#[tokio::test]
async fn revoking_the_key_ends_its_console_sessions() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let mut v = Visitor::sign_in(&app, &t.admin_key).await;
    let page = format!("{}/executions", ui_project(&t));
    assert_eq!(v.get(&page).await.0, 200);

    let key_id = t.admin_key.split('.').nth(2).unwrap();
    let res = app
        .with_key(
            Method::DELETE,
            &format!("/api/v1/accounts/acc/apikeys/{key_id}"),
            &app.root_key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let (status, to) = v.get(&page).await;
    assert_eq!(status, 303);
    assert!(to.contains("notice=revoked"), "{to}");
    let (status, _) = v.get(&page).await;
    assert_eq!(status, 303, "the session is gone for good");
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let mut v = Visitor::sign_in(&app, &t.admin_key).await;
    let (status, to) = v.post("/ui/signout", &[]).await;
    assert_eq!(status, 303);
    assert!(to.contains("notice=signedout"), "{to}");
    let (status, _) = v.get(&format!("{}/executions", ui_project(&t))).await;
    assert_eq!(status, 303);
}

#[tokio::test]
async fn a_sign_in_posted_from_another_site_is_refused() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let res = app
        .request(Method::POST, "/ui/signin")
        .header("origin", "https://evil.example")
        .form(&[("key", t.admin_key.as_str()), ("next", "/ui/")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(session_cookie(&res).is_none());
}

#[tokio::test]
async fn the_links_in_a_webhook_answer_open_the_event_and_the_trigger() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let res = app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await;
    let body: Value = res.json().await.unwrap();
    let event = body["data"]["eventCorrelationId"].as_str().unwrap();
    let strip = |u: &str| u.strip_prefix(&app.address).unwrap().to_owned();
    let ui_url = strip(body["data"]["uiUrl"].as_str().unwrap());
    let setup_url = strip(body["data"]["uiSetupUrl"].as_str().unwrap());
    let mut v = Visitor::sign_in(&app, &t.admin_key).await;

    let (status, page) = v.get(&ui_url).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(event), "the event's page");
    assert!(page.contains("TARGET_EXECUTION_REQUESTED"));

    let (status, page) = v.get(&setup_url).await;
    assert_eq!(status, 200);
    assert!(page.contains(&format!("/webhook/custom/{}/v3", t.token)));
    assert!(page.contains("curl -X POST"), "Copy as cURL");
    assert!(page.contains(event), "its recent events");
}

#[tokio::test]
async fn an_invalid_pipeline_is_refused_in_the_page_and_the_stored_one_kept() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let mut v = Visitor::sign_in(&app, &t.admin_key).await;
    let page = format!("{}/pipelines/{}", ui_project(&t), t.pipeline);
    let (status, before) = v.get(&page).await;
    assert_eq!(status, 200);

    let broken = "pipeline:\n  identifier: deploy\n  name: Deploy\n  stages:\n    - stage:\n        identifier: s\n        name: s\n        steps:\n          - step:\n              identifier: x\n              type: Run\n              timout: 1m\n              spec: {command: echo}\n";
    let (status, body) = v.post(&page, &[("yaml", broken)]).await;
    assert_eq!(status, 400);
    assert!(body.contains("role=\"alert\""), "shown in the page");
    assert!(body.contains("timout"), "names the mistake: {body}");
    assert!(body.contains("timout: 1m"), "keeps what was typed");
    let (_, after) = v.get(&page).await;
    assert_eq!(
        before.contains("timout"),
        after.contains("timout"),
        "nothing stored"
    );
}

#[tokio::test]
async fn a_test_payload_goes_through_the_real_intake_and_a_dry_run_stores_nothing() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let mut v = Visitor::sign_in(&app, &t.admin_key).await;
    let trigger_page = format!(
        "{}/pipelines/{}/triggers/{}",
        ui_project(&t),
        t.pipeline,
        t.trigger
    );
    let _ = v.get(&trigger_page).await;
    let test = format!("{trigger_page}/test");

    let (status, body) = v
        .post(&test, &[("payload", "{\"a\": 1}"), ("dryRun", "true")])
        .await;
    assert_eq!(status, 200);
    assert!(body.contains("Dry run: nothing was stored"), "{body}");
    assert!(app.events(&t).await.is_empty(), "a dry run stores nothing");

    let (status, body) = v.post(&test, &[("payload", "{\"a\": 1}")]).await;
    assert_eq!(status, 200);
    assert!(body.contains("TARGET_EXECUTION_REQUESTED"));
    assert_eq!(
        app.events(&t).await.len(),
        1,
        "stored as a webhook would be"
    );

    let (status, body) = v
        .post(&test, &[("payload", "{}"), ("headers", "no colon here")])
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("role=\"alert\""), "{body}");
    assert_eq!(app.events(&t).await.len(), 1);
}

#[tokio::test]
async fn a_session_idle_past_its_expiry_is_ended() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let mut v = Visitor::sign_in(&app, &t.admin_key).await;
    let page = format!("{}/executions", ui_project(&t));
    assert_eq!(v.get(&page).await.0, 200);

    // 31 minutes without a request.
    let idle = triggerd::store::now_millis() - 31 * 60 * 1000;
    let changed = app
        .execute_sql(&format!("UPDATE console_sessions SET last_seen = {idle}"))
        .await;
    assert_eq!(changed, 1);

    let (status, to) = v.get(&page).await;
    assert_eq!(status, 303);
    assert!(to.contains("notice=expired"), "{to}");
    let remaining = app
        .execute_sql("DELETE FROM console_sessions WHERE key_id <> ''")
        .await;
    assert_eq!(remaining, 0, "the expired session was deleted");
}

#[tokio::test]
async fn the_session_cookie_is_secure_when_the_console_is_served_over_https() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.public_url = Some("https://triggerd.example.com".into());
    })
    .await;
    let t = app.create_trigger().await;
    let res = post_sign_in(&app, &t.admin_key, "/ui/").await;
    let cookie = session_cookie(&res).expect("cookie");
    assert!(cookie.contains("Secure"), "{cookie}");
}

/// Fires `t` and returns the event id and the execution id.
async fn fire(app: &TestApp, t: &TestTrigger) -> (String, String) {
    let res = app.post_webhook(&t.v3_path(), None, SAMPLE_BODY).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let event = body["data"]["eventCorrelationId"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = app.events(t).await;
    let execution = events
        .iter()
        .find(|e| e["eventId"] == event.as_str())
        .and_then(|e| e["pipelineExecutionId"].as_str())
        .expect("an execution")
        .to_owned();
    (event, execution)
}

#[tokio::test]
async fn a_key_limited_to_one_project_cannot_open_another_projects_event_or_execution() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let elsewhere = app.create_trigger_in("acc", "default", "proj2").await;
    let (event, execution) = fire(&app, &elsewhere).await;
    let limited = app
        .create_key("acc", "executor", Some(vec!["default/proj"]))
        .await;
    let mut v = Visitor::sign_in(&app, &limited).await;

    for path in [
        format!("{}/events/{event}", ui_project(&elsewhere)),
        format!("{}/executions/{execution}", ui_project(&elsewhere)),
    ] {
        assert_eq!(v.get(&path).await.0, 403, "{path}");
    }
    // Its own project's URL with the other project's ids finds nothing.
    for path in [
        format!("{}/events/{event}", ui_project(&t)),
        format!("{}/executions/{execution}", ui_project(&t)),
    ] {
        let (status, body) = v.get(&path).await;
        assert_eq!(status, 404, "{path}");
        assert!(!body.contains(&elsewhere.token));
    }
}

#[tokio::test]
async fn an_executor_key_runs_a_pipeline_without_seeing_its_definition() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let executor = app.create_key("acc", "executor", None).await;
    let mut v = Visitor::sign_in(&app, &executor).await;
    let page = format!("{}/pipelines/{}", ui_project(&t), t.pipeline);

    let (status, body) = v.get(&page).await;
    assert_eq!(status, 200);
    assert!(body.contains("Run pipeline"));
    assert!(
        !body.contains("name=\"yaml\""),
        "no definition for an executor"
    );
    assert!(!body.contains(&t.token), "no trigger URLs for an executor");
    assert!(!body.contains("/eventrules\""), "no manage-only navigation");

    let (status, to) = v.post(&format!("{page}/run"), &[]).await;
    assert_eq!(status, 303);
    assert!(to.contains("/executions/"), "{to}");
    let (status, body) = v.get(&to).await;
    assert_eq!(status, 200);
    assert!(body.contains("manual"), "started by hand: {body}");
}

#[tokio::test]
async fn a_trigger_page_shows_only_the_events_of_its_own_pipeline() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    app.create_pipeline("acc", "default", "proj", "other").await;
    let twin = TestTrigger {
        pipeline: "other".into(),
        ..t.clone()
    };
    let res = app
        .put_trigger_yaml(&twin, &crate::helpers::trigger_yaml(&t.trigger))
        .await;
    assert_eq!(res.status(), 201, "same trigger id on another pipeline");
    let (event, _) = fire(&app, &t).await;
    let mut v = Visitor::sign_in(&app, &t.admin_key).await;

    let (_, own) = v
        .get(&format!(
            "{}/pipelines/deploy/triggers/{}",
            ui_project(&t),
            t.trigger
        ))
        .await;
    assert!(own.contains(&event));
    let (_, other) = v
        .get(&format!(
            "{}/pipelines/other/triggers/{}",
            ui_project(&t),
            t.trigger
        ))
        .await;
    assert!(!other.contains(&event), "another pipeline's event");
    assert!(other.contains("No events yet"));
}

#[tokio::test]
async fn reposting_the_form_that_showed_a_new_key_does_not_make_another() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let mut v = Visitor::sign_in(&app, &t.admin_key).await;
    let (_, page) = v.get("/ui/accounts/acc/keys").await;
    let start = page
        .find("name=\"once\" value=\"")
        .expect("a one-time token")
        + 19;
    let once = page[start..start + 43].to_owned();
    let form = [
        ("name", "ci"),
        ("role", "executor"),
        ("once", once.as_str()),
    ];

    let (status, body) = v.post("/ui/accounts/acc/keys", &form).await;
    assert_eq!(status, 200);
    assert!(body.contains("shown only this once"));
    let (status, body) = v.post("/ui/accounts/acc/keys", &form).await;
    assert_eq!(status, 409, "a reload posts the same form again");
    assert!(body.contains("already sent"), "{body}");

    let res = app
        .with_key(Method::GET, "/api/v1/accounts/acc/apikeys", &app.root_key)
        .send()
        .await
        .unwrap();
    let keys: Value = res.json().await.unwrap();
    let named_ci = keys["data"]["content"]
        .as_array()
        .or(keys["data"].as_array())
        .map(|k| k.iter().filter(|k| k["name"] == "ci").count());
    assert_eq!(named_ci, Some(1), "{keys}");
}

#[tokio::test]
async fn bad_log_offsets_and_unknown_actions_are_refused_in_the_page() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let (_, execution) = fire(&app, &t).await;
    let mut v = Visitor::sign_in(&app, &t.admin_key).await;
    let page = format!("{}/executions/{execution}", ui_project(&t));
    assert_eq!(v.get(&page).await.0, 200);

    let (status, body) = v
        .get(&format!("{page}/logs/build/wait/lines?after=soon"))
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("after must be a line seq"), "{body}");
    let (status, _) = v
        .get(&format!("{page}/logs/build/no_such_step/lines"))
        .await;
    assert_eq!(status, 404);

    let (status, body) = v.post(&format!("{page}/explode"), &[]).await;
    assert_eq!(status, 404);
    assert!(body.contains("the actions are abort, pause"), "{body}");
}
