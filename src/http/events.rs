//! `GET P/webhookevents?pipelineIdentifier=&triggerIdentifier=&status=`: received events, newest first.

use super::envelope::{PageBody, Success};
use super::openapi::params::{ListQuery, ProjectPath};
use super::openapi::shapes::WebhookEventView;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{
    api_key, enum_filter, envelope, identifier_filter, list_params, path_project, query, resource,
};
use crate::error::Error;
use crate::service::intake::EVENT_STATUSES;
use crate::service::Gateway;
use crate::store::EventFilter;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/webhookevents")
            .route(web::get().to(list)),
    );
}

/// Received webhook events, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/webhookevents",
    tag = "Events",
    operation_id = "listWebhookEvents",
    params(ProjectPath, ListQuery, ("pipelineIdentifier" = Option<String>, Query, description = "Only this pipeline's (empty: every pipeline)", pattern = r"^([A-Za-z_][A-Za-z0-9_]{0,127})?$"), ("triggerIdentifier" = Option<String>, Query, description = "Only this trigger's (empty: every trigger)", pattern = r"^([A-Za-z_][A-Za-z0-9_]{0,127})?$"), ("status" = Option<String>, Query, description = "Only events with this status")),
    responses((status = 200, description = "A page", body = Success<PageBody<WebhookEventView>>)),
    security(("apiKey" = []))
)]
pub(super) async fn list(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    gw.authorize_read(api_key(&req), &project).await?;
    let q = query(&req);
    let (limit, cursor) = list_params(&q)?;
    let filter = EventFilter {
        pipeline: identifier_filter(&q, "pipelineIdentifier")?.map(|p| p.to_string()),
        trigger: identifier_filter(&q, "triggerIdentifier")?.map(|t| t.to_string()),
        status: enum_filter(&q, "status", EVENT_STATUSES)?,
    };
    gw.existing_project(&project).await?;
    let page = gw
        .store
        .list_events(&project, &filter, cursor, limit)
        .await?;
    let items: Vec<_> = page
        .items
        .iter()
        .map(|e| {
            json!({
                "eventId": e.event_id,
                "triggerIdentifier": e.trigger,
                "pipelineIdentifier": e.pipeline,
                "status": e.status,
                "message": e.message,
                "exceptionOccured": e.exception_occured,
                "pipelineExecutionId": e.plan_execution_id,
                "eventCreatedAt": e.created_at,
                "headers": e.headers,
                "payload": e.payload,
            })
        })
        .collect();
    Ok(envelope::page(items, page.next_cursor))
}
