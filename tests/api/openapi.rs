//! The OpenAPI document at `/api/openapi.json` and its reference page at `/api/docs`. CI's
//! `.ci/openapi` runs schemathesis against the same document; these tests hold what it
//! assumes: the document is OpenAPI 3.1, every operation it lists is served, and a 405 names
//! the methods it lists.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{assert_error, spawn_app, TestApp};

async fn document(app: &TestApp, prefix: &str) -> Value {
    let res = app
        .request(Method::GET, &format!("{prefix}/api/openapi.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    res.json().await.expect("a JSON document")
}

/// `path` with each `{param}` replaced by a value its handler accepts.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("a closed parameter") + open;
        out.push_str(match &rest[open + 1..close] {
            "acc" => "acc",
            "org" => "default",
            "proj" => "proj",
            "token" => "AAAAAAAAAAAAAAAAAAAAAA",
            "name" => "mandate_custom_webhook_authorization",
            "action" => "abort",
            "id" => "0123456789abcdef01234567",
            _ => "x",
        });
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_every_operation_in_it_is_served() {
    let app = spawn_app().await;
    let doc = document(&app, "").await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "triggerd");
    assert_eq!(
        document(&app, "/gateway/pipeline/api").await,
        doc,
        "the Harness prefix serves the same document"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["apiKey"]["name"],
        "X-Api-Key"
    );

    let mut operation_ids = HashSet::new();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            operations += 1;
            let id = op["operationId"].as_str().expect("an operationId");
            assert!(operation_ids.insert(id.to_owned()), "{id} is used twice");
            for status in ["400", "401", "404", "500", "503"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {path} lists {status}"
                );
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let url = concrete(path);
            let res = app
                .with_key(method.clone(), &url, &app.root_key)
                .send()
                .await
                .expect("request");
            let status = res.status().as_u16();
            let body = res.text().await.unwrap_or_default();
            assert!(
                status != 405 && !body.contains("No route for"),
                "{method} {url} ({path}) is documented but not served: {status} {body}"
            );
            assert!(status < 500, "{method} {url}: {status} {body}");
        }
    }
    assert!(operations >= 50, "{operations} operations");
}

#[tokio::test]
async fn a_405_names_the_documented_methods_in_allow() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        (Method::DELETE, "/healthz", "GET"),
        (Method::GET, "/api/v1/accounts/acc/apikeys/key", "DELETE"),
        (
            Method::POST,
            "/api/v1/accounts/acc/orgs/default/projects/proj/pipelines/p/triggers/t",
            "GET, PUT, PATCH, DELETE",
        ),
        (
            Method::GET,
            "/gateway/pipeline/api/webhook/custom/AAAAAAAAAAAAAAAAAAAAAA/v3",
            "POST",
        ),
    ] {
        let res = app
            .request(method.clone(), path)
            .send()
            .await
            .expect("request");
        assert_eq!(
            res.headers().get("allow").map(|v| v.to_str().unwrap()),
            Some(allow),
            "{method} {path}"
        );
        assert_error(res, 405, "METHOD_NOT_ALLOWED", method.as_str()).await;
    }
}

#[tokio::test]
async fn the_reference_page_lists_every_operation() {
    let app = spawn_app().await;
    let doc = document(&app, "").await;
    let res = app
        .request(Method::GET, "/api/docs")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = res.text().await.unwrap();
    assert!(page.contains("href=\"openapi.json\""));
    assert!(
        page.contains("<code>X-Api-Key</code>") && !page.contains('`'),
        "the descriptions' code spans are set as code"
    );
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let id = op["operationId"].as_str().unwrap();
            assert!(
                page.contains(&format!("id=\"{id}\"")),
                "{id} is on the page"
            );
        }
    }
}

#[tokio::test]
async fn an_empty_cursor_is_the_first_page_and_a_null_optional_body_is_no_body() {
    let app = spawn_app().await;
    let put = app
        .with_key(Method::PUT, "/api/v1/accounts/nullbody", &app.root_key)
        .header("content-type", "application/json")
        .body("null")
        .send()
        .await
        .expect("request");
    assert_eq!(put.status().as_u16(), 201);
    let account: Value = put.json().await.unwrap();
    assert_eq!(account["data"]["name"], "nullbody");

    let list = app
        .with_key(Method::GET, "/api/v1/accounts?cursor=", &app.root_key)
        .send()
        .await
        .expect("request");
    assert_eq!(list.status().as_u16(), 200);
    let page: Value = list.json().await.unwrap();
    assert!(page["data"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["identifier"] == "nullbody"));
}

/// Found by schemathesis: a list under a project (or pipeline) that does not exist answered an
/// empty page, so a typo in a script's project looked like "nothing there yet".
#[tokio::test]
async fn a_list_under_a_project_or_pipeline_that_does_not_exist_is_a_404() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let project = t.project_path();
    let missing = format!(
        "/api/v1/accounts/{}/orgs/{}/projects/nosuchproject",
        t.account, t.org
    );
    for base in [&project, &missing] {
        for list in [
            "pipelines",
            "executions",
            "webhookevents",
            "eventrules",
            "pipelines/nosuchpipeline/triggers",
        ] {
            let res = app
                .with_key(Method::GET, &format!("{base}/{list}"), &app.root_key)
                .send()
                .await
                .expect("request");
            let expect_found = base == &project && !list.contains("nosuch");
            if expect_found {
                assert_eq!(res.status().as_u16(), 200, "{base}/{list}");
            } else {
                let what = if list.contains("triggers") {
                    "Pipeline nosuchpipeline does not exist"
                } else {
                    "Project acc:default:nosuchproject does not exist"
                };
                assert_error(res, 404, "RESOURCE_NOT_FOUND", what).await;
            }
        }
    }
    let triggers = app
        .with_key(
            Method::GET,
            &format!("{project}/pipelines/{}/triggers", t.pipeline),
            &app.root_key,
        )
        .send()
        .await
        .expect("request");
    assert_eq!(triggers.status().as_u16(), 200);
}

/// Found by schemathesis: serde fills a struct from an array of its fields, so `[null]` passed
/// for `{}` and renamed an org to its identifier.
#[tokio::test]
async fn a_management_body_that_is_not_an_object_is_a_400() {
    let app = spawn_app().await;
    app.create_account("acc").await;
    for (content_type, body) in [
        ("application/json", "[null]"),
        ("application/json", "[\"renamed\"]"),
        ("application/json", "\"renamed\""),
        ("application/yaml", "- renamed\n"),
    ] {
        let res = app
            .with_key(Method::PUT, "/api/v1/accounts/acc/orgs/arr", &app.root_key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        assert_error(res, 400, "INVALID_REQUEST", "").await;
    }
    let res = app
        .with_key(Method::GET, "/api/v1/accounts/acc/orgs/arr", &app.root_key)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 404, "nothing was created");
    let res = app
        .with_key(Method::PUT, "/api/v1/accounts/acc/orgs/arr", &app.root_key)
        .header("content-type", "application/yaml")
        .body("name: Array\n")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 201, "a YAML object is still taken");
}
