//! Bad input never panics, hangs, or answers without the error envelope of DESIGN §2.4.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{assert_error, pipeline_yaml, spawn_app, spawn_app_with, TestApp};

/// `P` for account `acc`, org `default`, project `proj`.
const P: &str = "/api/v1/accounts/acc/orgs/default/projects/proj";

/// A raw HTTP exchange: what the server answered on a socket we wrote bytes to ourselves.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("an envelope body ({e}): {:?}", self.body))
    }
}

/// Writes `request` to the app's port and reads the answer until the server closes the
/// connection (send `Connection: close`), within a deadline.
async fn raw_exchange(app: &TestApp, request: &[u8]) -> RawResponse {
    let addr = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before reading everything; that is its right.
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .expect("the server answers and closes within 10 s")
        .ok();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("an HTTP response, got {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line, got {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    RawResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

async fn healthz_is_up(app: &TestApp) {
    let res = app
        .request(Method::GET, "/healthz")
        .send()
        .await
        .expect("the server still answers");
    assert_eq!(res.status(), 200);
}

async fn put_pipeline_body(app: &TestApp, content_type: &str, body: Vec<u8>) -> Response {
    app.with_key(Method::PUT, &format!("{P}/pipelines/deploy"), &app.root_key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request")
}

// ---------------------------------------------------------------------------------------------
// Routing

#[tokio::test]
async fn an_unknown_route_is_a_404_envelope() {
    let app = spawn_app().await;

    for path in [
        "/no/such/route",
        "/gateway/pipeline/api/no/such/route",
        "/api/v1/accounts/acc/unknown",
        // Neither the prefix alone nor the console is aliased.
        "/gateway/pipeline/api",
        "/gateway/pipeline/api/",
        "/gateway/pipeline/api/ui",
        "/gateway/pipeline/api/ui/",
        "/gateway/pipeline/api/%75i/",
        "/gateway/pipeline/apiv1/accounts",
        // The hot routes sit under scopes with a fixed prefix: what the scope does not hold
        // falls through to the same 404.
        "/webhook/custom",
        "/webhook/custom/",
        "/webhook/custom/a/b",
        "/webhook/customx/v2",
        "/webhook/triggerExecutionDetails",
        "/webhook/triggerExecutionDetails/",
        "/webhook/triggerExecutionDetails/a/b",
        "/gateway/pipeline/api/webhook/triggerExecutionDetails/a/b",
    ] {
        let res = app
            .request(Method::GET, path)
            .send()
            .await
            .expect("request");
        // The path as sent, prefix and all.
        assert_error(
            res,
            404,
            "RESOURCE_NOT_FOUND",
            &format!("No route for GET {path}"),
        )
        .await;
    }
}

#[tokio::test]
async fn the_harness_prefix_serves_the_same_answer_as_the_root() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let triggers = format!(
        "/api/v1/accounts/{}/orgs/{}/projects/{}/pipelines/{}/triggers/{}",
        t.account, t.org, t.project, t.pipeline, t.trigger
    );
    let mut answers = Vec::new();
    for prefix in ["", "/gateway/pipeline/api"] {
        let res = app
            .request(Method::GET, &format!("{prefix}{triggers}"))
            .header("x-api-key", &t.admin_key)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200, "{prefix}{triggers}");
        let mut body: Value = res.json().await.expect("an envelope");
        body["correlationId"] = Value::Null;
        answers.push(body);
    }
    assert_eq!(
        answers[0], answers[1],
        "the same answer at the root and under the prefix"
    );
    assert_eq!(answers[0]["data"]["identifier"], t.trigger.as_str());
}

#[tokio::test]
async fn a_wrong_method_is_a_405_envelope() {
    let app = spawn_app().await;
    let token = "AAAAAAAAAAAAAAAAAAAAAA";

    let get_intake = app
        .request(
            Method::GET,
            &format!("/webhook/custom/{token}/v3?accountIdentifier=acc"),
        )
        .send()
        .await
        .expect("request");
    let delete_healthz = app
        .request(Method::DELETE, "/healthz")
        .send()
        .await
        .expect("request");
    let put_alias_intake = app
        .request(
            Method::PUT,
            &format!("/gateway/pipeline/api/webhook/custom/{token}/v3"),
        )
        .send()
        .await
        .expect("request");

    let post_status = app
        .request(Method::POST, "/webhook/triggerExecutionDetails/abc")
        .send()
        .await
        .expect("request");
    let get_v2 = app
        .request(Method::GET, "/webhook/custom/v2")
        .send()
        .await
        .expect("request");

    let allow = |res: &Response| {
        res.headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(allow(&get_intake).as_deref(), Some("POST"));
    assert_eq!(allow(&put_alias_intake).as_deref(), Some("POST"));
    assert_eq!(allow(&post_status).as_deref(), Some("GET"));
    assert_error(get_intake, 405, "METHOD_NOT_ALLOWED", "GET").await;
    assert_error(delete_healthz, 405, "METHOD_NOT_ALLOWED", "DELETE").await;
    assert_error(put_alias_intake, 405, "METHOD_NOT_ALLOWED", "PUT").await;
    assert_error(post_status, 405, "METHOD_NOT_ALLOWED", "POST").await;
    assert_error(get_v2, 405, "METHOD_NOT_ALLOWED", "GET").await;
}

/// Intake v3 and status are matched by their handlers, not the router (`by_hand`): whatever is
/// near them but not them is the router's 404, and what is them is counted under its route.
#[tokio::test]
async fn paths_near_the_hand_matched_routes_are_404_envelopes() {
    let app = spawn_app().await;
    let token = "AAAAAAAAAAAAAAAAAAAAAA";
    for path in [
        "/webhook/custom".to_owned(),
        "/webhook/custom/".to_owned(),
        "/webhook/custom//v3".to_owned(),
        format!("/webhook/custom/{token}"),
        format!("/webhook/custom/{token}/v3/"),
        format!("/webhook/custom/{token}/v4"),
        format!("/webhook/custom/a/{token}/v3"),
        "/webhook/triggerExecutionDetails".to_owned(),
        "/webhook/triggerExecutionDetails/".to_owned(),
        "/webhook/triggerExecutionDetails/abc/def".to_owned(),
        "/gateway/pipeline/api/webhook/custom/v3".to_owned(),
    ] {
        for method in [Method::POST, Method::GET] {
            let res = app
                .request(method.clone(), &path)
                .send()
                .await
                .expect("request");
            let message = format!("No route for {method} {path}");
            assert_error(res, 404, "RESOURCE_NOT_FOUND", &message).await;
        }
    }

    // Routed: an unknown token and an unknown event are the handlers' own answers.
    let res = app
        .request(
            Method::POST,
            &format!("/webhook/custom/{token}/v3?accountIdentifier=acc&orgIdentifier=default&projectIdentifier=proj"),
        )
        .send()
        .await
        .expect("request");
    assert_error(res, 400, "INVALID_REQUEST", "No custom trigger found").await;
    let res = app
        .request(
            Method::GET,
            "/webhook/triggerExecutionDetails/0123456789abcdef01234567?accountIdentifier=acc",
        )
        .send()
        .await
        .expect("request");
    assert_error(res, 404, "RESOURCE_NOT_FOUND", "").await;
    let metrics = app.metrics().await;
    for (route, status) in [
        ("/webhook/custom/{token}/v3", 400),
        ("/webhook/triggerExecutionDetails/{id}", 404),
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("triggerd_http_requests_total{")
                    && l.contains(&format!("route=\"{route}\""))
                    && l.contains(&format!("status=\"{status}\""))),
            "{route}: {metrics}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Headers

#[tokio::test]
async fn a_header_value_over_16_kib_is_a_400_envelope() {
    let app = spawn_app().await;

    let res = app
        .request(Method::GET, "/healthz")
        .header("X-Padding", "a".repeat(16 * 1024 + 1))
        .send()
        .await
        .expect("request");

    assert_error(res, 400, "INVALID_REQUEST", "x-padding").await;
}

#[tokio::test]
async fn a_header_value_of_exactly_16_kib_is_accepted() {
    let app = spawn_app().await;

    let res = app
        .request(Method::GET, "/healthz")
        .header("X-Padding", "a".repeat(16 * 1024))
        .send()
        .await
        .expect("request");

    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn an_oversized_header_on_intake_is_rejected_before_the_token_is_looked_up() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    let res = app
        .request(Method::POST, &t.v3_path())
        .header("X-Api-Key", "k".repeat(20 * 1024))
        .body("{}")
        .send()
        .await
        .expect("request");

    assert_error(res, 400, "INVALID_REQUEST", "larger than 16384 bytes").await;
    let events = app
        .with_key(
            Method::GET,
            &format!("{}/webhookevents", t.project_path()),
            &app.root_key,
        )
        .send()
        .await
        .expect("request");
    let body: Value = events.json().await.expect("json");
    assert_eq!(body["data"]["content"], json!([]), "nothing was recorded");
}

#[tokio::test]
async fn a_100_kib_header_value_gets_the_400_envelope() {
    let app = spawn_app().await;

    let res = app
        .request(Method::GET, "/healthz")
        .header("X-Padding", "a".repeat(100 * 1024))
        .send()
        .await
        .expect("request");

    assert_error(res, 400, "INVALID_REQUEST", "x-padding").await;
}

#[tokio::test]
// Known limit, stated in the README: a header block over 128 KiB or more than 96 headers is
// refused by actix-http's parser with a bare 431 before any application code (and so before
// the envelope) runs. The server answers and keeps serving.
async fn a_header_block_over_128_kib_is_refused_with_431_by_the_http_parser() {
    let app = spawn_app().await;
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(140 * 1024)
    );

    let res = raw_exchange(&app, request.as_bytes()).await;

    assert_eq!(res.status, 431, "{:?}", res.body);
    healthz_is_up(&app).await;
}

#[tokio::test]
async fn a_request_with_a_hundred_headers_is_refused_with_431_by_the_http_parser() {
    let app = spawn_app().await;
    let mut request = String::from("GET /healthz HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..100 {
        request.push_str(&format!("X-Header-{i}: v\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");

    let res = raw_exchange(&app, request.as_bytes()).await;

    assert_eq!(res.status, 431, "{:?}", res.body);
    healthz_is_up(&app).await;
}

// ---------------------------------------------------------------------------------------------
// Path segments

#[tokio::test]
async fn a_path_segment_that_is_not_an_identifier_is_400() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;
    let long = "o".repeat(200);
    let cases = [
        (
            "/api/v1/accounts/acc/orgs/bad-org!/projects/proj/pipelines".to_owned(),
            "orgIdentifier 'bad-org!'",
        ),
        (
            format!("/api/v1/accounts/acc/orgs/{long}/projects/proj/pipelines"),
            "orgIdentifier",
        ),
        (
            "/api/v1/accounts/acc/orgs/default/projects/9lives/pipelines".to_owned(),
            "projectIdentifier '9lives'",
        ),
        (
            format!("{P}/pipelines/has%20space"),
            "pipelineIdentifier 'has space'",
        ),
        (
            format!("/api/v1/accounts/{}/orgs/default", "a".repeat(65)),
            "accountIdentifier",
        ),
        ("/api/v1/accounts/a.b".to_owned(), "accountIdentifier 'a.b'"),
    ];

    for (path, message) in cases {
        let res = app
            .with_key(Method::GET, &path, &app.root_key)
            .send()
            .await
            .expect("request");
        assert_error(res, 400, "INVALID_REQUEST", message).await;
    }
}

#[tokio::test]
async fn a_path_segment_with_invalid_percent_encoding_is_a_4xx_envelope() {
    let app = spawn_app().await;

    for path in [
        "/api/v1/accounts/%ff%fe/orgs/default",
        "/api/v1/accounts/acc/orgs/%c3%28",
        "/webhook/triggerExecutionDetails/%ff?accountIdentifier=acc",
    ] {
        let res = app
            .with_key(Method::GET, path, &app.root_key)
            .send()
            .await
            .expect("request");
        let status = res.status().as_u16();
        assert!(
            status == 400 || status == 404,
            "{path}: a 400 or 404, got {status}"
        );
        let code = if status == 400 {
            "INVALID_REQUEST"
        } else {
            "RESOURCE_NOT_FOUND"
        };
        assert_error(res, status, code, "").await;
    }
}

// ---------------------------------------------------------------------------------------------
// Bodies

#[tokio::test]
async fn malformed_json_on_a_management_put_is_400() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;

    let pipeline = put_pipeline_body(
        &app,
        "application/json",
        br#"{"pipeline": {"name": "x""#.to_vec(),
    )
    .await;
    let org = app
        .with_key(
            Method::PUT,
            "/api/v1/accounts/acc/orgs/other",
            &app.root_key,
        )
        .header("content-type", "application/json")
        .body("{name: unquoted}")
        .send()
        .await
        .expect("request");

    assert_error(pipeline, 400, "INVALID_REQUEST", "Invalid JSON body").await;
    assert_error(org, 400, "INVALID_REQUEST", "Invalid JSON body").await;
}

#[tokio::test]
async fn malformed_yaml_on_a_management_put_is_400() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;

    let res = put_pipeline_body(
        &app,
        "application/yaml",
        b"pipeline:\n  name: [unclosed\n".to_vec(),
    )
    .await;

    assert_error(res, 400, "INVALID_REQUEST", "Invalid YAML body").await;
}

#[tokio::test]
async fn a_yaml_alias_bomb_is_refused_quickly() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (name, prev) in ["b", "c", "d", "e", "f", "g", "h", "i"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
    {
        bomb.push_str(&format!(
            "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    bomb.push_str("pipeline: *i\n");

    let res = tokio::time::timeout(
        Duration::from_secs(10),
        put_pipeline_body(&app, "application/yaml", bomb.into_bytes()),
    )
    .await
    .expect("answered within 10 s");

    assert_error(res, 400, "INVALID_REQUEST", "Invalid YAML body").await;
    healthz_is_up(&app).await;
}

#[tokio::test]
async fn deeply_nested_json_is_400_on_intake_and_management() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));

    let intake = app.post_webhook(&t.v3_path(), None, &deep).await;
    let management = put_pipeline_body(&app, "application/json", deep.clone().into_bytes()).await;

    assert_error(intake, 400, "INVALID_REQUEST", "deeper than 128").await;
    assert_error(management, 400, "INVALID_REQUEST", "Invalid JSON body").await;
    healthz_is_up(&app).await;
}

#[tokio::test]
async fn a_management_body_that_is_not_utf8_is_400() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;

    let res = put_pipeline_body(
        &app,
        "application/yaml",
        b"pipeline:\n  name: \xff\xfe\n".to_vec(),
    )
    .await;

    assert_error(res, 400, "INVALID_REQUEST", "UTF-8").await;
}

#[tokio::test]
async fn unknown_fields_in_a_settings_body_are_400() {
    let app = spawn_app().await;
    app.create_account("acc").await;

    let res = app
        .with_key(
            Method::PUT,
            "/api/v1/settings/mandate_custom_webhook_authorization?accountIdentifier=acc",
            &app.root_key,
        )
        .json(&json!({"value": true, "allowOverrides": false, "alsoDoThis": 1}))
        .send()
        .await
        .expect("request");

    assert_error(res, 400, "INVALID_REQUEST", "alsoDoThis").await;
    let resolved = app
        .with_key(
            Method::GET,
            "/api/v1/settings/mandate_custom_webhook_authorization?accountIdentifier=acc",
            &app.root_key,
        )
        .send()
        .await
        .expect("request");
    let body: Value = resolved.json().await.expect("json");
    assert_eq!(body["data"]["value"], false, "nothing was stored: {body}");
}

#[tokio::test]
async fn a_management_body_over_max_body_bytes_is_413() {
    let app = spawn_app_with(|s| s.max_body_bytes = 1024).await;
    app.create_project("acc", "default", "proj").await;
    let mut yaml = pipeline_yaml("deploy");
    yaml.push_str(&format!("# {}\n", "x".repeat(2048)));

    let res = put_pipeline_body(&app, "application/yaml", yaml.into_bytes()).await;

    assert_error(res, 413, "PAYLOAD_TOO_LARGE", "1024").await;
}

#[tokio::test]
async fn a_chunked_management_body_over_max_body_bytes_is_413() {
    let app = spawn_app_with(|s| s.max_body_bytes = 1024).await;
    app.create_project("acc", "default", "proj").await;
    let chunk = "x".repeat(512);
    let mut request = format!(
        "PUT {P}/pipelines/deploy HTTP/1.1\r\nHost: localhost\r\nX-Api-Key: {}\r\nContent-Type: application/yaml\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.root_key
    );
    for _ in 0..4 {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");

    let res = raw_exchange(&app, request.as_bytes()).await;

    assert_eq!(res.status, 413, "{}", res.body);
    let body = res.json();
    assert_eq!(body["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(
        res.header("x-correlation-id"),
        body["correlationId"].as_str()
    );
    healthz_is_up(&app).await;
}

#[tokio::test]
async fn deeply_nested_flow_yaml_is_refused_before_it_is_parsed() {
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;
    // 100,000 levels in 200 KB: parsing it took 40 s on an HTTP worker.
    let yaml = format!(
        "{}  tags: {}{}\n",
        pipeline_yaml("deep"),
        "[".repeat(100_000),
        "]".repeat(100_000)
    );

    let res = app
        .with_key(Method::PUT, &format!("{P}/pipelines/deep"), &app.root_key)
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .expect("request");

    assert_error(res, 400, "INVALID_REQUEST", "nests deeper than 128 levels").await;
    healthz_is_up(&app).await;
}

#[tokio::test]
async fn a_body_that_trickles_in_past_body_timeout_is_408_and_stores_nothing() {
    let app = spawn_app_with(|s| s.body_timeout = "1s".into()).await;
    let t = app.create_trigger().await;
    // 10 of the 1,000 declared bytes, then nothing: the connection stays open.
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"a\": \"xx\"",
        t.v3_path()
    );

    let started = std::time::Instant::now();
    let res = raw_exchange(&app, request.as_bytes()).await;

    assert_eq!(res.status, 408, "{}", res.body);
    assert_eq!(res.json()["code"], "REQUEST_TIMEOUT");
    assert!(
        res.json()["message"]
            .as_str()
            .unwrap_or("")
            .contains("within 1s"),
        "{}",
        res.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "answered when the deadline passed, not when the client gave up"
    );
    assert!(app.events(&t).await.is_empty(), "nothing stored");
    healthz_is_up(&app).await;
}

// ---------------------------------------------------------------------------------------------
// Correlation ids and survival

#[tokio::test]
async fn every_error_response_carries_its_correlation_id_in_the_header() {
    let app = spawn_app().await;
    let requests = [
        app.request(Method::GET, "/nope"),
        app.request(Method::DELETE, "/healthz"),
        app.request(Method::PUT, "/api/v1/accounts/acc"),
        app.with_key(Method::PUT, "/api/v1/accounts/_root", &app.root_key),
        app.request(Method::POST, "/webhook/custom/unknown/v3"),
        app.request(
            Method::GET,
            "/webhook/triggerExecutionDetails/0123?accountIdentifier=a",
        ),
    ];

    let mut ids = Vec::new();
    for req in requests {
        let res = req.send().await.expect("request");
        assert!(res.status().is_client_error(), "{}", res.status());
        let header = res
            .headers()
            .get("x-correlation-id")
            .expect("X-Correlation-Id header")
            .to_str()
            .expect("ascii")
            .to_owned();
        let body: Value = res.json().await.expect("envelope");
        assert_eq!(body["status"], "ERROR");
        assert_eq!(body["correlationId"], header.as_str());
        let uuid = uuid::Uuid::parse_str(&header).expect("a UUID");
        assert_eq!(uuid.get_version_num(), 4, "{header}");
        ids.push(header);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "one id per request");
}

#[tokio::test]
async fn success_responses_carry_the_same_correlation_id_in_header_and_body() {
    let app = spawn_app().await;

    let res = app
        .request(Method::GET, "/healthz")
        .send()
        .await
        .expect("request");

    let header = res.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["correlationId"], header.as_str());
}

#[tokio::test]
async fn the_server_still_answers_after_a_barrage_of_bad_input() {
    let app = spawn_app_with(|s| s.max_body_bytes = 4096).await;
    let t = app.create_trigger().await;
    let bad_bodies: [&[u8]; 5] = [
        b"\xff\xfe\xfd",
        b"{\"unterminated\": ",
        b"\0\0\0\0",
        &[b'{'; 300],
        &[b'x'; 8192],
    ];
    for body in bad_bodies {
        let res = app
            .request(Method::POST, &t.v3_path())
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .expect("request");
        let status = res.status().as_u16();
        assert!(status < 500, "no 5xx for a bad body, got {status}");
        let _: Value = res.json().await.expect("an envelope");
    }
    for garbage in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /webhook/custom/x/v3 HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    ] {
        let addr = app.address.trim_start_matches("http://");
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.write_all(garbage).await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut sink)).await;
    }

    healthz_is_up(&app).await;
    let ok = app.post_webhook(&t.v3_path(), None, "{}").await;
    assert_eq!(ok.status(), 200, "intake still works");
}
