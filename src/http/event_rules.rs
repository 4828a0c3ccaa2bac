//! Outbound event rules under `P = /api/v1/accounts/{acc}/orgs/{org}/projects/{proj}`
//! (DESIGN §3, §8): the rules, their secret rotation and test, and their deliveries.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;

use super::envelope::{PageBody, Success};
use super::openapi::params::{ListQuery, ProjectPath};
use super::{
    api_key, body, deleted, enum_filter, envelope, list_params, list_params_or, path_identifier,
    path_project, query, resource,
};
use crate::domain::event_rule::EventRuleSpec;
use crate::domain::ids::{Identifier, ProjectRef};
use crate::error::Error;
use crate::service::event_rules::ATTEMPTS_SHOWN;
use crate::service::event_rules::{DeliveryView, EventRuleView};
use crate::service::Gateway;
use crate::store::outbound::delivery_status;

const P: &str = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}";
/// Deliveries listed when no `limit` is given (DESIGN §8: the newest 20).
const DEFAULT_DELIVERIES: u32 = 20;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    let rule = format!("{P}/eventrules/{{rule}}");
    cfg.service(resource(&format!("{P}/eventrules")).route(web::get().to(list)))
        .service(
            resource(&rule)
                .route(web::put().to(put))
                .route(web::get().to(get))
                .route(web::delete().to(delete)),
        )
        .service(resource(&format!("{rule}/rotate-secret")).route(web::post().to(rotate)))
        .service(resource(&format!("{rule}/test")).route(web::post().to(test)))
        .service(resource(&format!("{rule}/recover")).route(web::post().to(recover)))
        .service(resource(&format!("{rule}/deliveries")).route(web::get().to(deliveries)))
        .service(resource(&format!("{rule}/deliveries/{{id}}")).route(web::get().to(delivery)))
        .service(
            resource(&format!("{rule}/deliveries/{{id}}/redeliver"))
                .route(web::post().to(redeliver)),
        );
}

/// The project and rule of the path, after checking the caller may manage them.
async fn target(req: &HttpRequest, gw: &Gateway) -> Result<(ProjectRef, Identifier), Error> {
    let project = path_project(req)?;
    let rule = path_identifier(req, "rule", "rule identifier")?;
    gw.authorize_manage(api_key(req), &project.account).await?;
    Ok((project, rule))
}

/// Creates or replaces an event rule; the answer that creates it holds its signing secret.
#[utoipa::path(
    put,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/eventrules/{rule}",
    tag = "Event rules",
    operation_id = "putEventRule",
    params(ProjectPath, ("rule" = String, Path, description = "The event rule identifier"), ("dryRun" = Option<bool>, Query, description = "`true`: check and answer what would be stored; store nothing")),
    request_body(description = "The rule (DESIGN §8), as JSON or YAML", content((EventRuleSpec = "application/json"), (String = "application/yaml"))),
    responses((status = 200, description = "Updated (or, with dryRun, checked)", body = Success<EventRuleView>), (status = 201, description = "Created", body = Success<EventRuleView>)),
    security(("apiKey" = []))
)]
pub(super) async fn put(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let (project, rule) = target(&req, &gw).await?;
    let dry_run = super::dry_run(&req)?;
    let (text, format) = body::read_text(&req, payload, gw.body_limits).await?;
    let (view, created) = gw
        .put_event_rule(&project, &rule, &text, format, dry_run)
        .await?;
    Ok(super::put_answer(dry_run, created, view))
}

/// An event rule.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/eventrules/{rule}",
    tag = "Event rules",
    operation_id = "getEventRule",
    params(ProjectPath, ("rule" = String, Path, description = "The event rule identifier")),
    responses((status = 200, description = "OK", body = Success<EventRuleView>)),
    security(("apiKey" = []))
)]
pub(super) async fn get(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let (project, rule) = target(&req, &gw).await?;
    Ok(envelope::ok(gw.get_event_rule(&project, &rule).await?))
}

/// The project's event rules.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/eventrules",
    tag = "Event rules",
    operation_id = "listEventRules",
    params(ProjectPath, ListQuery),
    responses((status = 200, description = "A page", body = Success<PageBody<EventRuleView>>)),
    security(("apiKey" = []))
)]
pub(super) async fn list(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    gw.authorize_manage(api_key(&req), &project.account).await?;
    let q = query(&req);
    let (limit, cursor) = list_params(&q)?;
    gw.existing_project(&project).await?;
    let page = gw.list_event_rules(&project, cursor, limit).await?;
    Ok(envelope::page(page.items, page.next_cursor))
}

/// Deletes an event rule.
#[utoipa::path(
    delete,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/eventrules/{rule}",
    tag = "Event rules",
    operation_id = "deleteEventRule",
    params(ProjectPath, ("rule" = String, Path, description = "The event rule identifier")),
    responses((status = 200, description = "Done; data is null", body = Success<Option<String>>)),
    security(("apiKey" = []))
)]
pub(super) async fn delete(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let (project, rule) = target(&req, &gw).await?;
    deleted(gw.delete_event_rule(&project, &rule).await?, || {
        format!("Event rule {rule} does not exist in {project}")
    })
}

/// A new signing secret; the old one also signs for 24 hours.
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/eventrules/{rule}/rotate-secret",
    tag = "Event rules",
    operation_id = "rotateEventRuleSecret",
    params(ProjectPath, ("rule" = String, Path, description = "The event rule identifier")),
    responses((status = 200, description = "OK", body = Success<EventRuleView>)),
    security(("apiKey" = []))
)]
pub(super) async fn rotate(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let (project, rule) = target(&req, &gw).await?;
    Ok(envelope::ok(
        gw.rotate_event_rule_secret(&project, &rule).await?,
    ))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct TestBody {
    /// The event type of the sample (`pipeline_end` when absent).
    #[schema(
        pattern = "^(pipeline_(start|end|pause|continue)|stage_(start|end|pause|continue)|ping)$"
    )]
    event_type: Option<String>,
}

/// Sends a sample event now, even if the rule is disabled.
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/eventrules/{rule}/test",
    tag = "Event rules",
    operation_id = "testEventRule",
    params(ProjectPath, ("rule" = String, Path, description = "The event rule identifier")),
    request_body(content = Option<TestBody>, description = "Optional", content_type = "application/json"),
    responses((status = 200, description = "OK", body = Success<DeliveryView>)),
    security(("apiKey" = []))
)]
pub(super) async fn test(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let (project, rule) = target(&req, &gw).await?;
    let body: TestBody = body::read_optional_json(&req, payload, gw.body_limits).await?;
    let delivery = gw
        .test_event_rule(&project, &rule, body.event_type.as_deref())
        .await?;
    Ok(envelope::ok(delivery))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RecoverBody {
    /// An RFC 3339 time or epoch milliseconds.
    #[schema(value_type = String, format = DateTime, required = true, example = "2026-11-25T10:00:00Z")]
    since: Option<Value>,
}

/// `since` as epoch milliseconds or an RFC 3339 time.
fn parse_since(since: Option<Value>) -> Result<i64, Error> {
    let bad = || {
        Error::InvalidRequest(
            "Invalid request: since must be an RFC 3339 time (2026-11-25T10:00:00Z) or epoch milliseconds".into(),
        )
    };
    match since {
        Some(Value::Number(n)) => n.as_i64().filter(|n| *n >= 0).ok_or_else(bad),
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(&s)
            .map(|t| t.timestamp_millis())
            .map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// Sends again every failed delivery since a time.
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/eventrules/{rule}/recover",
    tag = "Event rules",
    operation_id = "recoverEventRule",
    params(ProjectPath, ("rule" = String, Path, description = "The event rule identifier")),
    request_body(content = RecoverBody, content_type = "application/json"),
    responses((status = 200, description = "OK", body = Success<Recovered>)),
    security(("apiKey" = []))
)]
pub(super) async fn recover(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let (project, rule) = target(&req, &gw).await?;
    let body: RecoverBody = body::read_optional_json(&req, payload, gw.body_limits).await?;
    let since = parse_since(body.since)?;
    let queued = gw.recover_deliveries(&project, &rule, since).await?;
    Ok(envelope::ok(Recovered { queued }))
}

/// `data` of `POST .../recover`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Recovered {
    /// Deliveries queued again.
    queued: u64,
}

/// The rule's deliveries, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/eventrules/{rule}/deliveries",
    tag = "Event rules",
    operation_id = "listDeliveries",
    params(ProjectPath, ("rule" = String, Path, description = "The event rule identifier"), ListQuery, ("status" = Option<String>, Query, description = "Pending, Success or Failed")),
    responses((status = 200, description = "A page", body = Success<PageBody<DeliveryView>>)),
    security(("apiKey" = []))
)]
pub(super) async fn deliveries(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let (project, rule) = target(&req, &gw).await?;
    let q = query(&req);
    let (limit, cursor) = list_params_or(&q, DEFAULT_DELIVERIES)?;
    let status = enum_filter(&q, "status", delivery_status::ALL)?;
    let page = gw
        .list_deliveries(&project, &rule, status, cursor, limit)
        .await?;
    Ok(envelope::page(page.items, page.next_cursor))
}

/// A delivery with its attempts.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/eventrules/{rule}/deliveries/{id}",
    tag = "Event rules",
    operation_id = "getDelivery",
    params(ProjectPath, ("rule" = String, Path, description = "The event rule identifier"), ("id" = String, Path, description = "The delivery id", pattern = r"^[0-9a-f]{24}$"), ("limit" = Option<u32>, Query, description = "Attempts shown, newest first (20 when absent)", minimum = 1, maximum = 500)),
    responses((status = 200, description = "OK", body = Success<DeliveryView>)),
    security(("apiKey" = []))
)]
pub(super) async fn delivery(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let (project, rule) = target(&req, &gw).await?;
    let id = req.match_info().get("id").unwrap_or("");
    // `limit` bounds the attempts shown (newest first), 20 by default.
    let q = query(&req);
    let (attempts, _) = list_params_or(&q, ATTEMPTS_SHOWN)?;
    Ok(envelope::ok(
        gw.delivery(&project, &rule, id, attempts).await?,
    ))
}

/// Sends a delivery again.
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/eventrules/{rule}/deliveries/{id}/redeliver",
    tag = "Event rules",
    operation_id = "redeliver",
    params(ProjectPath, ("rule" = String, Path, description = "The event rule identifier"), ("id" = String, Path, description = "The delivery id", pattern = r"^[0-9a-f]{24}$")),
    responses((status = 200, description = "OK", body = Success<DeliveryView>)),
    security(("apiKey" = []))
)]
pub(super) async fn redeliver(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let (project, rule) = target(&req, &gw).await?;
    let id = req.match_info().get("id").unwrap_or("");
    Ok(envelope::ok(gw.redeliver(&project, &rule, id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn since_takes_millis_or_rfc3339() {
        assert_eq!(parse_since(Some(json!(5))).unwrap(), 5);
        assert_eq!(
            parse_since(Some(json!("1970-01-01T00:00:01Z"))).unwrap(),
            1000
        );
        assert!(parse_since(Some(json!("yesterday"))).is_err());
        assert!(parse_since(Some(json!(-1))).is_err());
        assert!(parse_since(None).is_err());
    }
}
