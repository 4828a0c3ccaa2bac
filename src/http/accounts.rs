//! Accounts, orgs and projects: `PUT`/`GET` (and `DELETE` for orgs and projects), and their
//! lists.
//!
//! Writes take an admin key of the account (accounts: the root key). Reads take any key of the
//! account, which sees what it may execute in: a key limited to some projects sees only those
//! projects and their orgs. The list of accounts is the root key's.

use actix_web::{web, HttpRequest, HttpResponse};

use super::envelope::{PageBody, Success};
use super::openapi::params::{AccountPath, ListQuery, ProjectPath};
use super::{
    api_key, body, deleted, envelope, list_params, path_account, path_identifier, path_project,
    query, resource,
};
use crate::error::Error;
use crate::service::Gateway;
use crate::store::{Account, Scope};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/v1/accounts").route(web::get().to(list_accounts)))
        .service(
            resource("/api/v1/accounts/{acc}")
                .route(web::put().to(put_account))
                .route(web::get().to(get_account)),
        )
        .service(resource("/api/v1/accounts/{acc}/orgs").route(web::get().to(list_orgs)))
        .service(
            resource("/api/v1/accounts/{acc}/orgs/{org}")
                .route(web::put().to(put_org))
                .route(web::get().to(get_org))
                .route(web::delete().to(delete_org)),
        )
        .service(
            resource("/api/v1/accounts/{acc}/orgs/{org}/projects")
                .route(web::get().to(list_projects)),
        )
        .service(
            resource("/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}")
                .route(web::put().to(put_project))
                .route(web::get().to(get_project))
                .route(web::delete().to(delete_project)),
        );
}

/// `GET /api/v1/accounts` (root key).
#[utoipa::path(
    get,
    path = "/api/v1/accounts",
    tag = "Tenancy",
    operation_id = "listAccounts",
    params(ListQuery),
    responses((status = 200, description = "A page", body = Success<PageBody<Account>>)),
    security(("apiKey" = []))
)]
pub(super) async fn list_accounts(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    gw.authorize_root_only(api_key(&req)).await?;
    let q = query(&req);
    let (limit, cursor) = list_params(&q)?;
    let page = gw.list_accounts(cursor, limit).await?;
    Ok(envelope::page(page.items, page.next_cursor))
}

/// `GET /api/v1/accounts/{acc}/orgs`.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}/orgs",
    tag = "Tenancy",
    operation_id = "listOrgs",
    params(AccountPath, ListQuery),
    responses((status = 200, description = "A page", body = Success<PageBody<Scope>>)),
    security(("apiKey" = []))
)]
pub(super) async fn list_orgs(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let acc = path_account(&req)?;
    let principal = gw.authorize_account_read(api_key(&req), &acc).await?;
    let q = query(&req);
    let (limit, cursor) = list_params(&q)?;
    let page = gw.list_orgs(&principal, &acc, cursor, limit).await?;
    Ok(envelope::page(page.items, page.next_cursor))
}

/// `GET /api/v1/accounts/{acc}/orgs/{org}/projects`.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects",
    tag = "Tenancy",
    operation_id = "listProjects",
    params(AccountPath, ("org" = String, Path, description = "The org identifier"), ListQuery),
    responses((status = 200, description = "A page", body = Success<PageBody<Scope>>)),
    security(("apiKey" = []))
)]
pub(super) async fn list_projects(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let acc = path_account(&req)?;
    let org = path_identifier(&req, "org", "orgIdentifier")?;
    let principal = gw.authorize_account_read(api_key(&req), &acc).await?;
    let q = query(&req);
    let (limit, cursor) = list_params(&q)?;
    let page = gw
        .list_projects(&principal, &acc, &org, cursor, limit)
        .await?;
    Ok(envelope::page(page.items, page.next_cursor))
}

/// The body of a tenancy `PUT`.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NameBody {
    /// 1 to 256 characters; the identifier when absent.
    #[schema(min_length = 1, max_length = 256, pattern = r"\S")]
    name: Option<String>,
}

async fn read_name(
    req: &HttpRequest,
    payload: web::Payload,
    gw: &Gateway,
    default: &str,
) -> Result<String, Error> {
    let body: NameBody = body::read_optional_json(req, payload, gw.body_limits).await?;
    let name = body.name.unwrap_or_else(|| default.to_owned());
    if name.trim().is_empty() || name.len() > 256 {
        return Err(Error::InvalidRequest(
            "Invalid request: name must be 1 to 256 characters".into(),
        ));
    }
    Ok(name)
}

/// Creates or renames an account (root key).
#[utoipa::path(
    put,
    path = "/api/v1/accounts/{acc}",
    tag = "Tenancy",
    operation_id = "putAccount",
    params(AccountPath),
    request_body(content = Option<NameBody>, description = "Optional", content_type = "application/json"),
    responses((status = 200, description = "Updated (or, with dryRun, checked)", body = Success<Account>), (status = 201, description = "Created", body = Success<Account>)),
    security(("apiKey" = []))
)]
pub(super) async fn put_account(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let acc = crate::domain::ids::AccountId::parse_user(req.match_info().get("acc").unwrap_or(""))?;
    gw.authorize_root(api_key(&req), &acc).await?;
    let name = read_name(&req, payload, &gw, acc.as_str()).await?;
    let (account, created) = gw.store.put_account(&acc, &name).await?;
    Ok(envelope::put_result(created, account))
}

/// An account.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}",
    tag = "Tenancy",
    operation_id = "getAccount",
    params(AccountPath),
    responses((status = 200, description = "OK", body = Success<Account>)),
    security(("apiKey" = []))
)]
pub(super) async fn get_account(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let acc = path_account(&req)?;
    gw.authorize_account_read(api_key(&req), &acc).await?;
    Ok(envelope::ok(gw.get_account(&acc).await?))
}

/// Creates or renames an org.
#[utoipa::path(
    put,
    path = "/api/v1/accounts/{acc}/orgs/{org}",
    tag = "Tenancy",
    operation_id = "putOrg",
    params(AccountPath, ("org" = String, Path, description = "The org identifier")),
    request_body(content = Option<NameBody>, description = "Optional", content_type = "application/json"),
    responses((status = 200, description = "Updated (or, with dryRun, checked)", body = Success<Scope>), (status = 201, description = "Created", body = Success<Scope>)),
    security(("apiKey" = []))
)]
pub(super) async fn put_org(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let acc = path_account(&req)?;
    let org = path_identifier(&req, "org", "orgIdentifier")?;
    gw.authorize_manage(api_key(&req), &acc).await?;
    let name = read_name(&req, payload, &gw, org.as_str()).await?;
    let (scope, created) = gw.store.put_org(&acc, &org, &name).await?;
    Ok(envelope::put_result(created, scope))
}

/// An org.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}/orgs/{org}",
    tag = "Tenancy",
    operation_id = "getOrg",
    params(AccountPath, ("org" = String, Path, description = "The org identifier")),
    responses((status = 200, description = "OK", body = Success<Scope>)),
    security(("apiKey" = []))
)]
pub(super) async fn get_org(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let acc = path_account(&req)?;
    let org = path_identifier(&req, "org", "orgIdentifier")?;
    let principal = gw.authorize_account_read(api_key(&req), &acc).await?;
    Ok(envelope::ok(gw.get_org(&principal, &acc, &org).await?))
}

/// Deletes an org and everything in it.
#[utoipa::path(
    delete,
    path = "/api/v1/accounts/{acc}/orgs/{org}",
    tag = "Tenancy",
    operation_id = "deleteOrg",
    params(AccountPath, ("org" = String, Path, description = "The org identifier")),
    responses((status = 200, description = "Done; data is null", body = Success<Option<String>>)),
    security(("apiKey" = []))
)]
pub(super) async fn delete_org(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let acc = path_account(&req)?;
    let org = path_identifier(&req, "org", "orgIdentifier")?;
    gw.authorize_manage(api_key(&req), &acc).await?;
    deleted(gw.delete_org(&acc, &org).await?, || {
        format!("Org {acc}/{org} does not exist")
    })
}

/// Creates or renames a project.
#[utoipa::path(
    put,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}",
    tag = "Tenancy",
    operation_id = "putProject",
    params(ProjectPath),
    request_body(content = Option<NameBody>, description = "Optional", content_type = "application/json"),
    responses((status = 200, description = "Updated (or, with dryRun, checked)", body = Success<Scope>), (status = 201, description = "Created", body = Success<Scope>)),
    security(("apiKey" = []))
)]
pub(super) async fn put_project(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    gw.authorize_manage(api_key(&req), &project.account).await?;
    let name = read_name(&req, payload, &gw, project.project.as_str()).await?;
    let (scope, created) = gw.store.put_project(&project, &name).await?;
    Ok(envelope::put_result(created, scope))
}

/// A project.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}",
    tag = "Tenancy",
    operation_id = "getProject",
    params(ProjectPath),
    responses((status = 200, description = "OK", body = Success<Scope>)),
    security(("apiKey" = []))
)]
pub(super) async fn get_project(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    gw.authorize_read(api_key(&req), &project).await?;
    gw.store
        .get_project(&project)
        .await?
        .map(envelope::ok)
        .ok_or_else(|| Error::NotFound(format!("Project {project} does not exist")))
}

/// Deletes a project and everything in it.
#[utoipa::path(
    delete,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}",
    tag = "Tenancy",
    operation_id = "deleteProject",
    params(ProjectPath),
    responses((status = 200, description = "Done; data is null", body = Success<Option<String>>)),
    security(("apiKey" = []))
)]
pub(super) async fn delete_project(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    gw.authorize_manage(api_key(&req), &project.account).await?;
    deleted(gw.delete_project(&project).await?, || {
        format!("Project {project} does not exist")
    })
}
