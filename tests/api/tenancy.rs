//! Listing accounts, orgs and projects, and who sees which: the root key sees every account;
//! any key of an account reads it, and a key limited to some projects sees only those projects
//! and their orgs.

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, success_data, TestApp};

async fn get_with(app: &TestApp, path: &str, key: &str) -> Response {
    app.with_key(Method::GET, path, key)
        .send()
        .await
        .expect("request")
}

/// The identifiers of a page, and its `nextCursor`.
async fn page(res: Response) -> (Vec<String>, Option<String>) {
    let data = success_data(res).await;
    let ids = data["content"]
        .as_array()
        .expect("content")
        .iter()
        .map(|item| item["identifier"].as_str().expect("identifier").to_owned())
        .collect();
    (ids, data["nextCursor"].as_str().map(str::to_owned))
}

/// Every identifier of a list, read page by page `limit` at a time; also how many pages it took.
async fn all_pages(app: &TestApp, path: &str, key: &str, limit: u32) -> (Vec<String>, usize) {
    let (mut ids, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit={limit}&cursor={c}"),
            None => format!("{path}?limit={limit}"),
        };
        let (more, next) = page(get_with(app, &url, key).await).await;
        ids.extend(more);
        pages += 1;
        match next {
            Some(next) => cursor = Some(next),
            None => return (ids, pages),
        }
        assert!(pages < 50, "the list ends");
    }
}

async fn put(app: &TestApp, path: &str, name: &str) {
    let res = app
        .with_key(Method::PUT, path, &app.root_key)
        .json(&json!({ "name": name }))
        .send()
        .await
        .expect("request");
    assert!(res.status().is_success(), "{path}: {}", res.status());
}

#[tokio::test]
async fn the_root_key_lists_every_account_by_identifier_in_pages() {
    let app = spawn_app().await;
    for account in ["zeta", "acme-1", "Beta_co", "acme-2", "mid"] {
        app.create_account(account).await;
    }

    let (ids, pages) = all_pages(&app, "/api/v1/accounts", &app.root_key, 2).await;

    assert_eq!(ids, ["Beta_co", "acme-1", "acme-2", "mid", "zeta"]);
    assert_eq!(pages, 3);
    let first = success_data(get_with(&app, "/api/v1/accounts?limit=1", &app.root_key).await).await;
    let account = &first["content"][0];
    assert_eq!(account["identifier"], "Beta_co", "{first}");
    assert_eq!(account["name"], "Beta_co");
    assert!(account["createdAt"].is_i64() && account["updatedAt"].is_i64());
    assert!(first["nextCursor"].is_string());
}

#[tokio::test]
async fn listing_accounts_takes_the_root_key() {
    let app = spawn_app().await;
    app.create_account("acc").await;
    let admin = app.create_key("acc", "admin", None).await;
    let executor = app.create_key("acc", "executor", None).await;

    let none = app
        .request(Method::GET, "/api/v1/accounts")
        .send()
        .await
        .expect("request");
    assert_error(none, 401, "INVALID_TOKEN", "X-Api-Key header").await;
    for key in [&admin, &executor] {
        let res = get_with(&app, "/api/v1/accounts", key).await;
        assert_error(
            res,
            403,
            "NG_ACCESS_DENIED",
            "only the root key may list accounts",
        )
        .await;
    }
    let res = get_with(&app, "/api/v1/accounts", "pat.nope").await;
    assert_error(res, 401, "INVALID_TOKEN", "X-Api-Key header").await;
    let (id, _secret) = admin.rsplit_once('.').unwrap();
    let wrong_secret = format!("{id}.{}", "A".repeat(32));
    let res = get_with(&app, "/api/v1/accounts", &wrong_secret).await;
    assert_error(res, 401, "INVALID_TOKEN", "Invalid token").await;
    let res = app
        .with_key(Method::POST, "/api/v1/accounts", &app.root_key)
        .send()
        .await
        .expect("request");
    assert_error(res, 405, "METHOD_NOT_ALLOWED", "POST").await;
}

#[tokio::test]
async fn orgs_and_projects_are_listed_by_identifier_in_pages() {
    let app = spawn_app().await;
    app.create_account("acc").await;
    for org in ["platform", "apps"] {
        put(&app, &format!("/api/v1/accounts/acc/orgs/{org}"), org).await;
    }
    for project in ["web", "api", "batch", "_tools"] {
        put(
            &app,
            &format!("/api/v1/accounts/acc/orgs/platform/projects/{project}"),
            &format!("The {project}"),
        )
        .await;
    }
    let admin = app.create_key("acc", "admin", None).await;

    let (orgs, _) = all_pages(&app, "/api/v1/accounts/acc/orgs", &admin, 50).await;
    let (projects, pages) = all_pages(
        &app,
        "/api/v1/accounts/acc/orgs/platform/projects",
        &admin,
        3,
    )
    .await;
    let (empty, _) = all_pages(&app, "/api/v1/accounts/acc/orgs/apps/projects", &admin, 50).await;

    assert_eq!(orgs, ["apps", "default", "platform"]);
    assert_eq!(projects, ["_tools", "api", "batch", "web"]);
    assert_eq!(pages, 2);
    assert_eq!(empty, Vec::<String>::new());
    let listed = success_data(
        get_with(
            &app,
            "/api/v1/accounts/acc/orgs/platform/projects?limit=1",
            &admin,
        )
        .await,
    )
    .await;
    let single = success_data(
        get_with(
            &app,
            "/api/v1/accounts/acc/orgs/platform/projects/_tools",
            &admin,
        )
        .await,
    )
    .await;
    assert_eq!(
        listed["content"][0], single,
        "a listed project reads as its GET"
    );
    assert_eq!(single["name"], "The _tools");
    assert_eq!(single["orgIdentifier"], "platform");
    assert_eq!(single["projectIdentifier"], "_tools");
}

#[tokio::test]
async fn a_key_limited_to_some_projects_sees_only_those_and_their_orgs() {
    let app = spawn_app().await;
    app.create_account("acc").await;
    for org in ["platform", "secret"] {
        put(&app, &format!("/api/v1/accounts/acc/orgs/{org}"), org).await;
    }
    for (org, project) in [
        ("default", "web"),
        ("default", "api"),
        ("platform", "ci"),
        ("platform", "infra"),
        ("secret", "vault"),
    ] {
        put(
            &app,
            &format!("/api/v1/accounts/acc/orgs/{org}/projects/{project}"),
            project,
        )
        .await;
    }
    let limited = app
        .create_key("acc", "executor", Some(vec!["default/api", "platform/ci"]))
        .await;
    let executor = app.create_key("acc", "executor", None).await;

    let (orgs, _) = all_pages(&app, "/api/v1/accounts/acc/orgs", &limited, 1).await;
    let (in_default, _) = all_pages(
        &app,
        "/api/v1/accounts/acc/orgs/default/projects",
        &limited,
        50,
    )
    .await;
    let (in_platform, _) = all_pages(
        &app,
        "/api/v1/accounts/acc/orgs/platform/projects",
        &limited,
        50,
    )
    .await;
    let (every_org, _) = all_pages(&app, "/api/v1/accounts/acc/orgs", &executor, 50).await;

    assert_eq!(orgs, ["default", "platform"]);
    assert_eq!(in_default, ["api"]);
    assert_eq!(in_platform, ["ci"]);
    assert_eq!(every_org, ["default", "platform", "secret"]);
    success_data(get_with(&app, "/api/v1/accounts/acc", &limited).await).await;
    success_data(get_with(&app, "/api/v1/accounts/acc/orgs/platform", &limited).await).await;
    success_data(
        get_with(
            &app,
            "/api/v1/accounts/acc/orgs/platform/projects/ci",
            &limited,
        )
        .await,
    )
    .await;
    for path in [
        "/api/v1/accounts/acc/orgs/secret",
        "/api/v1/accounts/acc/orgs/secret/projects",
        "/api/v1/accounts/acc/orgs/platform/projects/infra",
    ] {
        let res = get_with(&app, path, &limited).await;
        assert_error(res, 403, "NG_ACCESS_DENIED", "Missing permission to read").await;
    }
}

#[tokio::test]
async fn tenancy_reads_refuse_other_accounts_keys_and_missing_keys() {
    let app = spawn_app().await;
    app.create_account("acc").await;
    app.create_account("other").await;
    let foreign = app.create_key("other", "admin", None).await;

    for path in [
        "/api/v1/accounts/acc",
        "/api/v1/accounts/acc/orgs",
        "/api/v1/accounts/acc/orgs/default",
        "/api/v1/accounts/acc/orgs/default/projects",
    ] {
        let res = get_with(&app, path, &foreign).await;
        assert_error(res, 401, "INVALID_TOKEN", "Account id for API called: acc").await;
        let res = app
            .request(Method::GET, path)
            .send()
            .await
            .expect("request");
        assert_error(res, 401, "INVALID_TOKEN", "X-Api-Key header is required").await;
    }
}

#[tokio::test]
async fn listing_under_a_missing_account_or_org_is_404() {
    let app = spawn_app().await;
    app.create_account("acc").await;

    let orgs = get_with(&app, "/api/v1/accounts/ghost/orgs", &app.root_key).await;
    let projects = get_with(
        &app,
        "/api/v1/accounts/acc/orgs/nowhere/projects",
        &app.root_key,
    )
    .await;

    assert_error(
        orgs,
        404,
        "RESOURCE_NOT_FOUND",
        "Account ghost does not exist",
    )
    .await;
    assert_error(
        projects,
        404,
        "RESOURCE_NOT_FOUND",
        "Org acc/nowhere does not exist",
    )
    .await;
}

#[tokio::test]
async fn tenancy_lists_refuse_bad_limits_and_foreign_cursors() {
    let app = spawn_app().await;
    app.create_account("acc").await;

    for path in [
        "/api/v1/accounts?limit=0",
        "/api/v1/accounts?limit=501",
        "/api/v1/accounts/acc/orgs?limit=x",
        "/api/v1/accounts/acc/orgs/default/projects?limit=-1",
    ] {
        let res = get_with(&app, path, &app.root_key).await;
        assert_error(
            res,
            400,
            "INVALID_REQUEST",
            "limit must be between 1 and 500",
        )
        .await;
    }
    for path in [
        "/api/v1/accounts?cursor=YQpiCmM",
        "/api/v1/accounts/acc/orgs?cursor=YQpi",
        "/api/v1/accounts/acc/orgs/default/projects?cursor=%%%",
    ] {
        let res = get_with(&app, path, &app.root_key).await;
        assert_error(res, 400, "INVALID_REQUEST", "cursor").await;
    }
    let page: Value =
        success_data(get_with(&app, "/api/v1/accounts?limit=500", &app.root_key).await).await;
    assert_eq!(page["content"].as_array().map(Vec::len), Some(1));
    assert!(page["nextCursor"].is_null());
}

#[tokio::test]
async fn an_org_put_without_a_body_takes_defaults_but_whitespace_declared_as_json_is_400() {
    let app = spawn_app().await;
    app.create_account("acc").await;
    let path = "/api/v1/accounts/acc/orgs/ops";

    // What `curl -X PUT` sends: nothing, so every field takes its default.
    let res = app
        .with_key(Method::PUT, path, &app.root_key)
        .send()
        .await
        .expect("request");
    assert_eq!(success_data(res).await["name"], "ops");

    // Found by schemathesis: a newline declared as JSON is not JSON, and changes nothing.
    for body in ["\n", "  \r\n\t"] {
        let res = app
            .with_key(Method::PUT, path, &app.root_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        assert_error(res, 400, "INVALID_REQUEST", "Invalid JSON body: EOF").await;
    }

    // An empty YAML document is an empty mapping, as JSON `null` is.
    for (content_type, body) in [("application/yaml", "\n"), ("application/json", " null ")] {
        let res = app
            .with_key(Method::PUT, path, &app.root_key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(
            success_data(res).await["identifier"],
            "ops",
            "{content_type}"
        );
    }
}
