//! The OpenAPI 3.1 document of the REST API, built from the handlers' `#[utoipa::path]`
//! annotations and the `ToSchema` types they answer with, served at `GET /api/openapi.json`,
//! and a reference page rendered from the same document at `GET /api/docs`.
//!
//! Every JSON answer is serialised from the very type the document describes
//! (`Success<TriggerView>`, `Success<WebhookAnswer>`, `ErrorEnvelope`, ...), so the document
//! cannot drift from the answers. CI's schemathesis run checks every answer of a live server
//! against it.

use std::sync::OnceLock;

use actix_web::http::header::ContentType;
use actix_web::{web, HttpResponse};
use serde_json::Value;
use utoipa::openapi::path::{Operation, ParameterBuilder, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ArrayItems, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use super::resource;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/openapi.json").route(web::get().to(openapi_json)))
        .service(resource("/api/docs").route(web::get().to(reference_page)));
}

/// The OpenAPI document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "Meta", operation_id = "getOpenApi",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json")))]
pub(super) async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(ContentType::json())
        .body(document_json().as_str())
}

/// A readable reference of every operation, rendered from the document.
#[utoipa::path(get, path = "/api/docs", tag = "Meta", operation_id = "getApiReference",
    responses((status = 200, description = "The API reference as HTML", content_type = "text/html")))]
pub(super) async fn reference_page() -> HttpResponse {
    static PAGE: OnceLock<String> = OnceLock::new();
    let page = PAGE.get_or_init(|| reference::render(document()).into_string());
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page.as_str())
}

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

/// The operations of a path item that the API uses, with their method names.
pub(super) fn methods(item: &PathItem) -> impl Iterator<Item = (&'static str, &Operation)> {
    [
        ("GET", &item.get),
        ("PUT", &item.put),
        ("POST", &item.post),
        ("PATCH", &item.patch),
        ("DELETE", &item.delete),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_ref().map(|op| (method, op)))
}

/// The methods of a documented path (`/api/v1/accounts/{acc}`), as an `Allow` header value.
pub(super) fn allowed_methods(path: &str) -> Option<&'static str> {
    static ALLOW: OnceLock<std::collections::HashMap<String, String>> = OnceLock::new();
    ALLOW
        .get_or_init(|| {
            document()
                .paths
                .paths
                .iter()
                .map(|(path, item)| {
                    let allow: Vec<&str> = methods(item).map(|(method, _)| method).collect();
                    (path.clone(), allow.join(", "))
                })
                .collect()
        })
        .get(path)
        .map(String::as_str)
}

fn document_json() -> &'static String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut text = document()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        text.push('\n');
        text
    })
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "triggerd",
        description = "Starts pipelines from webhooks. Every route is also served under \
            `/gateway/pipeline/api`, so a Harness URL works after only the host is changed. \
            Every answer is an envelope: `{\"status\":\"SUCCESS\",\"data\":...}`, or the error \
            envelope with a `code` (DESIGN §2.4). The management API takes `X-Api-Key`.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        super::intake::custom_v3,
        super::intake::custom_v2,
        super::status::trigger_execution_details,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
        super::whoami::whoami,
        super::accounts::list_accounts,
        super::accounts::put_account,
        super::accounts::get_account,
        super::accounts::list_orgs,
        super::accounts::put_org,
        super::accounts::get_org,
        super::accounts::delete_org,
        super::accounts::list_projects,
        super::accounts::put_project,
        super::accounts::get_project,
        super::accounts::delete_project,
        super::apikeys::create,
        super::apikeys::list,
        super::apikeys::revoke,
        super::settings::put,
        super::settings::get,
        super::settings::delete,
        super::pipelines::list,
        super::pipelines::put,
        super::pipelines::get,
        super::pipelines::delete,
        super::triggers::list,
        super::triggers::put,
        super::triggers::get,
        super::triggers::patch,
        super::triggers::delete,
        super::triggers::curl,
        super::executions::execute,
        super::executions::list,
        super::executions::detail,
        super::executions::logs,
        super::executions::control,
        super::events::list,
        super::event_rules::list,
        super::event_rules::put,
        super::event_rules::get,
        super::event_rules::delete,
        super::event_rules::rotate,
        super::event_rules::test,
        super::event_rules::recover,
        super::event_rules::deliveries,
        super::event_rules::delivery,
        super::event_rules::redeliver,
        openapi_json,
        reference_page,
    ),
    components(schemas(super::envelope::ErrorEnvelope, super::envelope::ResponseMessage)),
    modifiers(&Conventions),
    tags(
        (name = "Webhooks", description = "Firing triggers and reading what became of the event (DESIGN §2)"),
        (name = "Tenancy", description = "Accounts, orgs and projects"),
        (name = "API keys"),
        (name = "Settings", description = "Account, org and project settings (DESIGN §7)"),
        (name = "Pipelines", description = "Pipelines in the Harness YAML shape (DESIGN §6)"),
        (name = "Triggers", description = "Custom webhook triggers (DESIGN §4)"),
        (name = "Executions"),
        (name = "Events", description = "Webhook events as received"),
        (name = "Event rules", description = "Outbound events to subscribers (DESIGN §8)"),
        (name = "Operations", description = "Health, readiness and metrics"),
        (name = "Meta", description = "This document and its reference page"),
    )
)]
struct ApiDoc;

/// What every operation shares: the `X-Api-Key` scheme and the error envelope of DESIGN §2.4
/// for the statuses that any operation can answer.
struct Conventions;

/// Statuses every operation can answer with the error envelope: bad input, a bad key, a key
/// without the right, nothing there, too many requests (intake), a failure, overload.
const EVERY_OPERATION: &[(&str, &str)] = &[
    ("400", "Bad input (INVALID_REQUEST)"),
    ("401", "No key, or a wrong or revoked one (INVALID_TOKEN)"),
    ("403", "The key lacks the right (NG_ACCESS_DENIED)"),
    ("404", "Not found (RESOURCE_NOT_FOUND)"),
    (
        "408",
        "The request was not received in time (REQUEST_TIMEOUT)",
    ),
    (
        "429",
        "Too many requests; see Retry-After (TOO_MANY_REQUESTS)",
    ),
    ("500", "An internal failure (UNEXPECTED)"),
    (
        "503",
        "Overloaded, shutting down or not ready; see Retry-After (SERVICE_UNAVAILABLE)",
    ),
];

/// Statuses of operations that take a body.
const WITH_BODY: &[(&str, &str)] = &[
    ("409", "A conflicting resource exists (DUPLICATE_ENTITY)"),
    ("413", "The body is over the limit (PAYLOAD_TOO_LARGE)"),
    (
        "415",
        "The body's Content-Type is not accepted (UNSUPPORTED_MEDIA_TYPE)",
    ),
];

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "An API key (`pat.<account>.<keyId>.<secret>`) or the root key",
            ))),
        );
        components.schemas.values_mut().for_each(open_all_of_parts);
        for (status, description) in EVERY_OPERATION.iter().chain(WITH_BODY) {
            components
                .responses
                .insert(error_name(status), RefOr::T(error_response(description)));
        }
        let demo = crate::bootstrap::demo_bodies().ok();
        for item in doc.paths.paths.values_mut() {
            for operation in operations(item) {
                enum_filters(operation);
                identifier_patterns(operation);
                demo_examples(operation, demo.as_ref());
                let takes_body = operation.request_body.is_some();
                let listed = EVERY_OPERATION
                    .iter()
                    .chain(WITH_BODY.iter().filter(|_| takes_body));
                for (status, _) in listed {
                    operation
                        .responses
                        .responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(error_name(status))));
                }
            }
        }
    }
}

/// Lets each part of every `allOf` hold properties of the other parts. A view that flattens a
/// body which refuses unknown keys (`EventRuleView` holds `EventRuleSpec`) gets the body's
/// `additionalProperties: false` in its first part, which no answer could then satisfy. The
/// generic envelopes (`Success_EventRuleView`) hold such views inline, so this walks down.
fn open_all_of_parts(schema: &mut RefOr<Schema>) {
    let RefOr::T(schema) = schema else { return };
    match schema {
        Schema::AllOf(all_of) => all_of.items.iter_mut().for_each(|part| {
            open_objects(part);
            open_all_of_parts(part);
        }),
        Schema::OneOf(one_of) => one_of.items.iter_mut().for_each(open_all_of_parts),
        Schema::AnyOf(any_of) => any_of.items.iter_mut().for_each(open_all_of_parts),
        Schema::Object(object) => object.properties.values_mut().for_each(open_all_of_parts),
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items {
                open_all_of_parts(items);
            }
        }
        _ => {}
    }
}

/// Drops `additionalProperties` from an object, or from the objects of a `oneOf`/`allOf`.
fn open_objects(part: &mut RefOr<Schema>) {
    match part {
        RefOr::T(Schema::Object(object)) => object.additional_properties = None,
        RefOr::T(Schema::OneOf(one_of)) => one_of.items.iter_mut().for_each(open_objects),
        RefOr::T(Schema::AllOf(all_of)) => all_of.items.iter_mut().for_each(open_objects),
        _ => {}
    }
}

/// Filters that take one of a fixed set of values list them, from the constants the handlers
/// check against; empty is no filter.
fn enum_filters(operation: &mut Operation) {
    use crate::store::executions::status;
    use crate::store::outbound::delivery_status;
    let values: &[&str] = match operation.operation_id.as_deref() {
        Some("listExecutions") => status::EXECUTION,
        Some("listWebhookEvents") => crate::service::intake::EVENT_STATUSES,
        Some("listDeliveries") => delivery_status::ALL,
        _ => return,
    };
    for parameter in operation.parameters.iter_mut().flatten() {
        if parameter.name == "status" {
            parameter.schema = Some(RefOr::T(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(std::iter::once("").chain(values.iter().copied())))
                    .into(),
            ));
        }
    }
}

/// The patterns of identifier parameters, from the constants their parsers state.
fn identifier_patterns(operation: &mut Operation) {
    use crate::domain::ids::{ACCOUNT_PATTERN, IDENTIFIER_PATTERN};
    for parameter in operation.parameters.iter_mut().flatten() {
        let pattern = match parameter.name.as_str() {
            "acc" | "accountIdentifier" => ACCOUNT_PATTERN,
            "org" | "proj" | "pipe" | "trig" | "rule" | "stage" | "step" | "orgIdentifier"
            | "projectIdentifier" | "pipelineIdentifier" | "triggerIdentifier" => {
                IDENTIFIER_PATTERN
            }
            _ => continue,
        };
        if let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut() {
            // A filter that also takes empty (no filter) states its own pattern.
            schema.pattern.get_or_insert_with(|| pattern.to_owned());
        }
    }
}

/// The demo's identifiers as path examples, and its pipeline and trigger as body examples, so
/// that an example request (and schemathesis's examples phase) works on `serve --demo`.
fn demo_examples(operation: &mut Operation, demo: Option<&(Value, Value)>) {
    for parameter in operation.parameters.iter_mut().flatten() {
        let example = match parameter.name.as_str() {
            "acc" => "demo",
            "org" => "default",
            "proj" => "demo",
            "pipe" => "hello",
            "trig" => "hello_trigger",
            _ => continue,
        };
        *parameter = ParameterBuilder::from(parameter.clone())
            .example(Some(example.into()))
            .build();
    }
    let Some((pipeline, trigger)) = demo else {
        return;
    };
    let body = match operation.operation_id.as_deref() {
        Some("putPipeline") => pipeline.clone(),
        Some("putTrigger") => trigger.clone(),
        _ => return,
    };
    let json = operation
        .request_body
        .as_mut()
        .and_then(|b| b.content.get_mut("application/json"));
    if let Some(content) = json {
        content.example = Some(body);
    }
}

fn error_name(status: &str) -> String {
    format!("Error{status}")
}

fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                .build(),
        )
        .build()
}

/// Every operation of a path item.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
        item.head.as_mut(),
        item.options.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// Path parameters shared by many operations.
pub(super) mod params {
    use utoipa::IntoParams;

    /// `{acc}`.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    #[allow(dead_code)]
    pub struct AccountPath {
        /// The account identifier.
        acc: String,
    }

    /// `{acc}/orgs/{org}/projects/{proj}`.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    #[allow(dead_code)]
    pub struct ProjectPath {
        /// The account identifier.
        acc: String,
        /// The org identifier.
        org: String,
        /// The project identifier.
        proj: String,
    }

    /// `limit` and `cursor` of a list.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    #[allow(dead_code)]
    pub struct ListQuery {
        /// Items per page, 1 to 500 (50 when absent).
        #[param(minimum = 1, maximum = 500)]
        limit: Option<u32>,
        /// The `nextCursor` of the previous page.
        cursor: Option<String>,
    }
}

/// The HTML reference page.
mod reference {
    use maud::{html, Markup, DOCTYPE};
    use utoipa::openapi::path::Operation;
    use utoipa::openapi::{OpenApi, Required};

    pub(super) fn render(doc: &OpenApi) -> Markup {
        let mut operations: Vec<(String, &str, &str, &Operation)> = Vec::new();
        for (path, item) in &doc.paths.paths {
            for (method, op) in super::methods(item) {
                let tag = op
                    .tags
                    .as_ref()
                    .and_then(|t| t.first())
                    .map(String::as_str)
                    .unwrap_or("Other");
                operations.push((tag.to_owned(), method, path.as_str(), op));
            }
        }
        let tags: Vec<&str> = doc.tags.iter().flatten().map(|t| t.name.as_str()).collect();
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { "triggerd API reference" }
                    style { (STYLE) }
                }
                body {
                    h1 { "triggerd API reference" }
                    p { "Version " (doc.info.version) ". The machine-readable document is at "
                        a href="openapi.json" { code { "/api/openapi.json" } } "." }
                    @if let Some(d) = &doc.info.description { p { (prose(d)) } }
                    nav { ul { @for tag in &tags { li { a href={ "#" (anchor(tag)) } { (tag) } } } } }
                    @for tag in &tags {
                        section id=(anchor(tag)) {
                            h2 { (tag) }
                            @for (_, method, path, op) in operations.iter().filter(|o| o.0 == *tag) {
                                (operation(method, path, op))
                            }
                        }
                    }
                }
            }
        }
    }

    fn operation(method: &str, path: &str, op: &Operation) -> Markup {
        let id = op.operation_id.clone().unwrap_or_default();
        html! {
            article id=(id) {
                h3 { span class={ "m " (method.to_ascii_lowercase()) } { (method) } " " code { (path) } }
                @if let Some(s) = &op.summary { p { (prose(s)) } }
                @if let Some(d) = &op.description { p class="d" { (prose(d)) } }
                @if let Some(params) = op.parameters.as_ref().filter(|p| !p.is_empty()) {
                    table {
                        tr { th { "parameter" } th { "in" } th { "required" } th { "description" } }
                        @for p in params {
                            tr {
                                td { code { (p.name) } }
                                td { (serde_json::to_value(&p.parameter_in).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()) }
                                td { @if matches!(p.required, Required::True) { "yes" } }
                                td { (prose(p.description.as_deref().unwrap_or_default())) }
                            }
                        }
                    }
                }
                @if let Some(body) = &op.request_body {
                    p { "Body: " @for (i, ct) in body.content.keys().enumerate() {
                        @if i > 0 { ", " } code { (ct) } } }
                }
                p class="r" { "Answers: " @for (i, (status, _)) in op.responses.responses.iter().enumerate() {
                    @if i > 0 { " · " } (status) } }
                p class="id" { "operationId " code { (id) } }
            }
        }
    }

    /// Text with its `code` spans set as code (the document's descriptions are Markdown).
    fn prose(text: &str) -> Markup {
        html! {
            @for (i, part) in text.split('`').enumerate() {
                @if i % 2 == 1 { code { (part) } } @else { (part) }
            }
        }
    }

    fn anchor(tag: &str) -> String {
        tag.to_ascii_lowercase().replace(' ', "-")
    }

    const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1b1f24}\
        code{font:13px ui-monospace,monospace;background:#f3f4f6;padding:0 .25rem;border-radius:3px}\
        article{border-top:1px solid #e5e7eb;padding:.5rem 0}h3{font-size:1rem;margin:.5rem 0}\
        .m{display:inline-block;min-width:4rem;font:bold 12px ui-monospace,monospace;text-align:center;border-radius:3px;padding:.1rem .3rem;color:#fff}\
        .get{background:#2563eb}.put{background:#a16207}.post{background:#15803d}.patch{background:#7c3aed}.delete{background:#b91c1c}\
        table{border-collapse:collapse;margin:.25rem 0}td,th{border:1px solid #e5e7eb;padding:.15rem .5rem;text-align:left;font-size:14px}\
        .d,.r,.id{color:#4b5563;font-size:14px;margin:.25rem 0}nav ul{display:flex;flex-wrap:wrap;gap:.25rem 1rem;list-style:none;padding:0}";
}
