//! Triggers under `P/pipelines/{pipe}/triggers`: `PUT`, `GET`, `PATCH` (enable/disable),
//! `DELETE`, list, and the `curl` snippet. Responses carry `webhookUrl`, `curl` and
//! `customWebhookToken`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::envelope::{PageBody, Success};
use super::openapi::params::{ListQuery, ProjectPath};
use super::{
    api_key, body, deleted, envelope, list_params, path_identifier, path_project, query, resource,
};
use crate::domain::ids::{Identifier, ProjectRef};
use crate::error::Error;
use crate::service::manage::TriggerView;
use crate::service::Gateway;

const T: &str = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/pipelines/{pipe}/triggers";

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(T).route(web::get().to(list)))
        .service(
            resource(&format!("{T}/{{trig}}"))
                .route(web::put().to(put))
                .route(web::get().to(get))
                .route(web::patch().to(patch))
                .route(web::delete().to(delete)),
        )
        .service(resource(&format!("{T}/{{trig}}/curl")).route(web::get().to(curl)));
}

/// Parses the pipeline path and checks the caller manages the account.
async fn target_pipeline(
    req: &HttpRequest,
    gw: &Gateway,
) -> Result<(ProjectRef, Identifier), Error> {
    let project = path_project(req)?;
    let pipeline = path_identifier(req, "pipe", "pipelineIdentifier")?;
    gw.authorize_manage(api_key(req), &project.account).await?;
    Ok((project, pipeline))
}

/// Parses the trigger path and checks the caller manages the account.
async fn target(
    req: &HttpRequest,
    gw: &Gateway,
) -> Result<(ProjectRef, Identifier, Identifier), Error> {
    let trigger = path_identifier(req, "trig", "triggerIdentifier")?;
    let (project, pipeline) = target_pipeline(req, gw).await?;
    Ok((project, pipeline, trigger))
}

fn missing(project: &ProjectRef, pipeline: &Identifier, trigger: &Identifier) -> Error {
    Error::NotFound(format!(
        "Trigger {trigger} does not exist on pipeline {pipeline} in {project}"
    ))
}

/// Creates or replaces a trigger.
#[utoipa::path(
    put,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/pipelines/{pipe}/triggers/{trig}",
    tag = "Triggers",
    operation_id = "putTrigger",
    params(ProjectPath, ("pipe" = String, Path, description = "The pipeline identifier"), ("trig" = String, Path, description = "The trigger identifier"), ("dryRun" = Option<bool>, Query, description = "`true`: check and answer what would be stored; store nothing")),
    request_body(description = "The trigger (DESIGN §4), as JSON or YAML", content((Object = "application/json"), (String = "application/yaml"))),
    responses((status = 200, description = "Updated (or, with dryRun, checked)", body = Success<TriggerView>), (status = 201, description = "Created", body = Success<TriggerView>)),
    security(("apiKey" = []))
)]
pub(super) async fn put(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let (project, pipeline, trigger) = target(&req, &gw).await?;
    let dry_run = super::dry_run(&req)?;
    let (text, format) = body::read_text(&req, payload, gw.body_limits).await?;
    let (view, created) = gw
        .put_trigger(&project, &pipeline, &trigger, &text, format, dry_run)
        .await?;
    Ok(super::put_answer(dry_run, created, view))
}

/// A trigger, with its webhook URL and cURL command.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/pipelines/{pipe}/triggers/{trig}",
    tag = "Triggers",
    operation_id = "getTrigger",
    params(ProjectPath, ("pipe" = String, Path, description = "The pipeline identifier"), ("trig" = String, Path, description = "The trigger identifier")),
    responses((status = 200, description = "OK", body = Success<TriggerView>)),
    security(("apiKey" = []))
)]
pub(super) async fn get(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let (project, pipeline, trigger) = target(&req, &gw).await?;
    gw.get_trigger(&project, &pipeline, &trigger)
        .await?
        .map(envelope::ok)
        .ok_or_else(|| missing(&project, &pipeline, &trigger))
}

/// The body of a `PATCH`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PatchBody {
    enabled: bool,
}

/// Enables or disables a trigger.
#[utoipa::path(
    patch,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/pipelines/{pipe}/triggers/{trig}",
    tag = "Triggers",
    operation_id = "patchTrigger",
    params(ProjectPath, ("pipe" = String, Path, description = "The pipeline identifier"), ("trig" = String, Path, description = "The trigger identifier")),
    request_body = PatchBody,
    responses((status = 200, description = "OK", body = Success<TriggerView>)),
    security(("apiKey" = []))
)]
pub(super) async fn patch(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let (project, pipeline, trigger) = target(&req, &gw).await?;
    let body: PatchBody = body::read_json(&req, payload, gw.body_limits).await?;
    gw.set_trigger_enabled(&project, &pipeline, &trigger, body.enabled)
        .await?
        .map(envelope::ok)
        .ok_or_else(|| missing(&project, &pipeline, &trigger))
}

/// Deletes a trigger.
#[utoipa::path(
    delete,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/pipelines/{pipe}/triggers/{trig}",
    tag = "Triggers",
    operation_id = "deleteTrigger",
    params(ProjectPath, ("pipe" = String, Path, description = "The pipeline identifier"), ("trig" = String, Path, description = "The trigger identifier")),
    responses((status = 200, description = "Done; data is null", body = Success<Option<String>>)),
    security(("apiKey" = []))
)]
pub(super) async fn delete(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let (project, pipeline, trigger) = target(&req, &gw).await?;
    deleted(
        gw.delete_trigger(&project, &pipeline, &trigger).await?,
        || missing(&project, &pipeline, &trigger).to_string(),
    )
}

/// The pipeline's triggers.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/pipelines/{pipe}/triggers",
    tag = "Triggers",
    operation_id = "listTriggers",
    params(ProjectPath, ("pipe" = String, Path, description = "The pipeline identifier"), ListQuery),
    responses((status = 200, description = "A page", body = Success<PageBody<TriggerView>>)),
    security(("apiKey" = []))
)]
pub(super) async fn list(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let (project, pipeline) = target_pipeline(&req, &gw).await?;
    let q = query(&req);
    let (limit, cursor) = list_params(&q)?;
    gw.existing_pipeline(&project, &pipeline).await?;
    let page = gw.list_triggers(&project, &pipeline, cursor, limit).await?;
    Ok(envelope::page(page.items, page.next_cursor))
}

/// The trigger's cURL command.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/pipelines/{pipe}/triggers/{trig}/curl",
    tag = "Triggers",
    operation_id = "getTriggerCurl",
    params(ProjectPath, ("pipe" = String, Path, description = "The pipeline identifier"), ("trig" = String, Path, description = "The trigger identifier")),
    responses((status = 200, description = "A cURL command that fires the trigger (DESIGN §3.1)", body = String, content_type = "text/plain")),
    security(("apiKey" = []))
)]
pub(super) async fn curl(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let (project, pipeline, trigger) = target(&req, &gw).await?;
    let record = gw
        .store
        .get_trigger(&project, &pipeline, &trigger)
        .await?
        .ok_or_else(|| missing(&project, &pipeline, &trigger))?;
    let snippet = gw.trigger_curl(&record).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(format!("{snippet}\n")))
}
