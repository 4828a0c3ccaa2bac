//! Pipelines under `P = /api/v1/accounts/{acc}/orgs/{org}/projects/{proj}`: `PUT`, `GET`,
//! `DELETE` and list. Bodies are JSON or YAML in the Harness shape (DESIGN §6.1).

use actix_web::{web, HttpRequest, HttpResponse};

use super::envelope::{PageBody, Success};
use super::openapi::params::{ListQuery, ProjectPath};
use super::{
    api_key, body, deleted, envelope, list_params, path_identifier, path_project, query, resource,
};
use crate::error::Error;
use crate::service::manage::PipelineView;
use crate::service::Gateway;

const P: &str = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}";

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(&format!("{P}/pipelines")).route(web::get().to(list)))
        .service(
            resource(&format!("{P}/pipelines/{{pipe}}"))
                .route(web::put().to(put))
                .route(web::get().to(get))
                .route(web::delete().to(delete)),
        );
}

/// Creates or replaces a pipeline.
#[utoipa::path(
    put,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/pipelines/{pipe}",
    tag = "Pipelines",
    operation_id = "putPipeline",
    params(ProjectPath, ("pipe" = String, Path, description = "The pipeline identifier"), ("dryRun" = Option<bool>, Query, description = "`true`: check and answer what would be stored; store nothing")),
    request_body(description = "The pipeline (DESIGN §6.1), as JSON or YAML", content((Object = "application/json"), (String = "application/yaml"))),
    responses((status = 200, description = "Updated (or, with dryRun, checked)", body = Success<PipelineView>), (status = 201, description = "Created", body = Success<PipelineView>)),
    security(("apiKey" = []))
)]
pub(super) async fn put(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    let id = path_identifier(&req, "pipe", "pipelineIdentifier")?;
    gw.authorize_manage(api_key(&req), &project.account).await?;
    let dry_run = super::dry_run(&req)?;
    let (text, format) = body::read_text(&req, payload, gw.body_limits).await?;
    let (view, created) = gw
        .put_pipeline(&project, &id, &text, format, dry_run)
        .await?;
    Ok(super::put_answer(dry_run, created, view))
}

/// A pipeline.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/pipelines/{pipe}",
    tag = "Pipelines",
    operation_id = "getPipeline",
    params(ProjectPath, ("pipe" = String, Path, description = "The pipeline identifier")),
    responses((status = 200, description = "OK", body = Success<PipelineView>)),
    security(("apiKey" = []))
)]
pub(super) async fn get(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    let id = path_identifier(&req, "pipe", "pipelineIdentifier")?;
    gw.authorize_manage(api_key(&req), &project.account).await?;
    gw.store
        .get_pipeline(&project, &id)
        .await?
        .map(|p| envelope::ok(PipelineView::from(&p)))
        .ok_or_else(|| Error::NotFound(format!("Pipeline {id} does not exist in {project}")))
}

/// The project's pipelines.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/pipelines",
    tag = "Pipelines",
    operation_id = "listPipelines",
    params(ProjectPath, ListQuery),
    responses((status = 200, description = "A page", body = Success<PageBody<PipelineView>>)),
    security(("apiKey" = []))
)]
pub(super) async fn list(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    gw.authorize_manage(api_key(&req), &project.account).await?;
    let q = query(&req);
    let (limit, cursor) = list_params(&q)?;
    gw.existing_project(&project).await?;
    let page = gw.store.list_pipelines(&project, cursor, limit).await?;
    let items: Vec<PipelineView> = page.items.iter().map(PipelineView::from).collect();
    Ok(envelope::page(items, page.next_cursor))
}

/// Deletes a pipeline and its triggers.
#[utoipa::path(
    delete,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/pipelines/{pipe}",
    tag = "Pipelines",
    operation_id = "deletePipeline",
    params(ProjectPath, ("pipe" = String, Path, description = "The pipeline identifier")),
    responses((status = 200, description = "Done; data is null", body = Success<Option<String>>)),
    security(("apiKey" = []))
)]
pub(super) async fn delete(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    let id = path_identifier(&req, "pipe", "pipelineIdentifier")?;
    gw.authorize_manage(api_key(&req), &project.account).await?;
    deleted(gw.delete_pipeline(&project, &id).await?, || {
        format!("Pipeline {id} does not exist in {project}")
    })
}
