//! `GET /api/v1/whoami`: the presented key's identity, for `triggerd login` and `whoami`.

use super::envelope::Success;
use super::openapi::shapes::Whoami;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{api_key, envelope, resource};
use crate::error::Error;
use crate::service::Gateway;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/v1/whoami").route(web::get().to(whoami)));
}

/// The presented key's identity.
#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    tag = "API keys",
    operation_id = "whoami",
    responses((status = 200, description = "OK", body = Success<Whoami>)),
    security(("apiKey" = []))
)]
pub(super) async fn whoami(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let principal = gw.whoami(api_key(&req)).await?;
    let record = gw.store.get_api_key(&principal.key_id).await?;
    Ok(envelope::ok(json!({
        "keyIdentifier": principal.key_id.to_string(),
        "name": record.as_ref().map(|r| r.name.clone()),
        "accountIdentifier": principal.account.to_string(),
        "role": principal.role.as_str(),
        "root": principal.is_root(),
        "projects": principal.projects,
        "expiresAt": record.and_then(|r| r.expires_at),
    })))
}
