//! `GET P/webhookevents?pipelineIdentifier=&triggerIdentifier=&status=`: received events, newest first.

use actix_web::{web, HttpRequest, HttpResponse};

use super::envelope::{PageBody, Success};
use super::openapi::params::{ListQuery, ProjectPath};
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
        .map(|e| WebhookEventView {
            event_id: e.event_id.as_str(),
            trigger_identifier: &e.trigger,
            pipeline_identifier: &e.pipeline,
            status: &e.status,
            message: &e.message,
            exception_occured: e.exception_occured,
            pipeline_execution_id: e.plan_execution_id.as_ref().map(|p| p.as_str()),
            event_created_at: e.created_at,
            headers: &e.headers,
            payload: &e.payload,
        })
        .collect();
    Ok(envelope::page(items, page.next_cursor))
}

/// A received webhook event, as the list shows it.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct WebhookEventView<'a> {
    /// The event id.
    #[schema(value_type = String)]
    event_id: &'a str,
    /// The trigger.
    #[schema(value_type = String)]
    trigger_identifier: &'a str,
    /// The pipeline.
    #[schema(value_type = String)]
    pipeline_identifier: &'a str,
    /// Its status.
    #[schema(value_type = String)]
    status: &'a str,
    /// Why, in words.
    #[schema(value_type = String)]
    message: &'a str,
    /// Harness's spelling.
    exception_occured: bool,
    /// The execution, when one was requested.
    #[schema(value_type = Option<String>)]
    pipeline_execution_id: Option<&'a str>,
    /// Epoch milliseconds.
    event_created_at: i64,
    /// The request headers, secrets masked.
    #[schema(value_type = Object)]
    headers: &'a serde_json::value::RawValue,
    /// The body as received.
    #[schema(value_type = String)]
    payload: &'a str,
}
