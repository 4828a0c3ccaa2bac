//! Outbound event rules under `P = /api/v1/accounts/{acc}/orgs/{org}/projects/{proj}`
//! (DESIGN §3, §8): the rules, their secret rotation and test, and their deliveries.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    api_key, body, deleted, enum_filter, envelope, list_params, list_params_or, path_identifier,
    path_project, query, resource,
};
use crate::domain::ids::{Identifier, ProjectRef};
use crate::error::Error;
use crate::service::event_rules::ATTEMPTS_SHOWN;
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

async fn put(
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

async fn get(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let (project, rule) = target(&req, &gw).await?;
    Ok(envelope::ok(gw.get_event_rule(&project, &rule).await?))
}

async fn list(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    gw.authorize_manage(api_key(&req), &project.account).await?;
    let q = query(&req);
    let (limit, cursor) = list_params(&q)?;
    let page = gw.list_event_rules(&project, cursor, limit).await?;
    Ok(envelope::page(page.items, page.next_cursor))
}

async fn delete(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let (project, rule) = target(&req, &gw).await?;
    deleted(gw.delete_event_rule(&project, &rule).await?, || {
        format!("Event rule {rule} does not exist in {project}")
    })
}

async fn rotate(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let (project, rule) = target(&req, &gw).await?;
    Ok(envelope::ok(
        gw.rotate_event_rule_secret(&project, &rule).await?,
    ))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TestBody {
    event_type: Option<String>,
}

async fn test(
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RecoverBody {
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

async fn recover(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let (project, rule) = target(&req, &gw).await?;
    let body: RecoverBody = body::read_optional_json(&req, payload, gw.body_limits).await?;
    let since = parse_since(body.since)?;
    let queued = gw.recover_deliveries(&project, &rule, since).await?;
    Ok(envelope::ok(json!({ "queued": queued })))
}

async fn deliveries(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let (project, rule) = target(&req, &gw).await?;
    let q = query(&req);
    let (limit, cursor) = list_params_or(&q, DEFAULT_DELIVERIES)?;
    let status = enum_filter(&q, "status", delivery_status::ALL)?;
    let page = gw
        .list_deliveries(&project, &rule, status, cursor, limit)
        .await?;
    Ok(envelope::page(page.items, page.next_cursor))
}

async fn delivery(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let (project, rule) = target(&req, &gw).await?;
    let id = req.match_info().get("id").unwrap_or("");
    // `limit` bounds the attempts shown (newest first), 20 by default.
    let q = query(&req);
    let (attempts, _) = list_params_or(&q, ATTEMPTS_SHOWN)?;
    Ok(envelope::ok(
        gw.delivery(&project, &rule, id, attempts).await?,
    ))
}

async fn redeliver(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let (project, rule) = target(&req, &gw).await?;
    let id = req.match_info().get("id").unwrap_or("");
    Ok(envelope::ok(gw.redeliver(&project, &rule, id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

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
