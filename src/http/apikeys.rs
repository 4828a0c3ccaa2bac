//! API keys: create (the secret is shown once), list (never secrets), revoke.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::envelope::{PageBody, Success};
use super::openapi::params::AccountPath;
use super::{api_key, body, envelope, path_account, resource};
use crate::error::Error;
use crate::service::manage::CreatedKey;
use crate::service::manage::{KeyInfo, NewKey};
use crate::service::Gateway;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/api/v1/accounts/{acc}/apikeys")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .service(resource("/api/v1/accounts/{acc}/apikeys/{keyId}").route(web::delete().to(revoke)));
}

/// Creates an API key; its secret is in this answer only.
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{acc}/apikeys",
    tag = "API keys",
    operation_id = "createApiKey",
    params(AccountPath),
    request_body = NewKey,
    responses((status = 201, description = "Created; `key` is shown only here", body = Success<CreatedKey>)),
    security(("apiKey" = []))
)]
pub(super) async fn create(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let acc = path_account(&req)?;
    gw.authorize_manage(api_key(&req), &acc).await?;
    let new_key: NewKey = body::read_json(&req, payload, gw.body_limits).await?;
    let created = gw.create_api_key(&acc, new_key).await?;
    Ok(envelope::success(StatusCode::CREATED, created))
}

/// The account's keys, without secrets.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}/apikeys",
    tag = "API keys",
    operation_id = "listApiKeys",
    params(AccountPath),
    responses((status = 200, description = "A page", body = Success<PageBody<KeyInfo>>)),
    security(("apiKey" = []))
)]
pub(super) async fn list(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let acc = path_account(&req)?;
    gw.authorize_manage(api_key(&req), &acc).await?;
    let keys = gw.store.list_api_keys(&acc).await?;
    let items: Vec<KeyInfo> = keys.iter().map(KeyInfo::from).collect();
    Ok(envelope::page(items, None))
}

/// Revokes a key; it stops working at once.
#[utoipa::path(
    delete,
    path = "/api/v1/accounts/{acc}/apikeys/{keyId}",
    tag = "API keys",
    operation_id = "revokeApiKey",
    params(AccountPath, ("keyId" = String, Path, description = "The key id")),
    responses((status = 200, description = "Done; data is null", body = Success<Option<String>>)),
    security(("apiKey" = []))
)]
pub(super) async fn revoke(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let acc = path_account(&req)?;
    gw.authorize_manage(api_key(&req), &acc).await?;
    gw.revoke_api_key(&acc, req.match_info().get("keyId").unwrap_or(""))
        .await?;
    Ok(envelope::ok(serde_json::Value::Null))
}
