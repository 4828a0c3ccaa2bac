//! `GET /api/v1/whoami`: the presented key's identity, for `triggerd login` and `whoami`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::envelope::Success;
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
    Ok(envelope::ok(Whoami {
        key_identifier: principal.key_id.to_string(),
        name: record.as_ref().map(|r| r.name.clone()),
        account_identifier: principal.account.to_string(),
        role: principal.role.as_str(),
        root: principal.is_root(),
        expires_at: record.and_then(|r| r.expires_at),
        projects: principal.projects,
    }))
}

/// `data` of `GET /api/v1/whoami`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Whoami {
    /// The key id.
    key_identifier: String,
    /// The key's label.
    name: Option<String>,
    /// The key's account (`_root` for the root key).
    account_identifier: String,
    /// `admin` or `executor`.
    #[schema(value_type = String)]
    role: &'static str,
    /// Whether this is the root key.
    root: bool,
    /// `org/project` pairs an executor key is limited to.
    projects: Option<Vec<String>>,
    /// Epoch milliseconds.
    expires_at: Option<i64>,
}
