//! `PUT`/`GET`/`DELETE /api/v1/settings/{name}?accountIdentifier=&orgIdentifier=&projectIdentifier=`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::envelope::Success;
use super::{api_key, body, envelope, query, resource};
use crate::domain::ids::{AccountId, Identifier};
use crate::domain::settings::{parse_setting_name, ScopedValue};
use crate::error::Error;
use crate::service::manage::SettingView;
use crate::service::Gateway;
use crate::store::SettingScope;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/api/v1/settings/{name}")
            .route(web::put().to(put))
            .route(web::get().to(get))
            .route(web::delete().to(delete)),
    );
}

/// The scope of a setting.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub(super) struct SettingParams {
    /// The account.
    accountIdentifier: String,
    /// The org, for org or project scope.
    orgIdentifier: Option<String>,
    /// The project, for project scope (requires the org).
    projectIdentifier: Option<String>,
}

/// The body of a setting `PUT`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SettingBody {
    value: bool,
    #[serde(default = "default_allow_overrides")]
    allow_overrides: bool,
}

fn default_allow_overrides() -> bool {
    true
}

/// Parses the name and scope, and checks the caller may manage the account.
async fn scope(req: &HttpRequest, gw: &Gateway) -> Result<(&'static str, SettingScope), Error> {
    let name = parse_setting_name(req.match_info().get("name").unwrap_or(""))?;
    let q = query(req);
    let account = q.get("accountIdentifier").ok_or_else(|| {
        Error::InvalidRequest(
            "Invalid request: query parameter accountIdentifier is required".into(),
        )
    })?;
    let account = AccountId::parse(account)?;
    let org = q
        .get("orgIdentifier")
        .map(|o| Identifier::parse(o, "orgIdentifier"))
        .transpose()?;
    let project = q
        .get("projectIdentifier")
        .map(|p| Identifier::parse(p, "projectIdentifier"))
        .transpose()?;
    if project.is_some() && org.is_none() {
        return Err(Error::InvalidRequest(
            "Invalid request: projectIdentifier requires orgIdentifier".into(),
        ));
    }
    gw.authorize_manage(api_key(req), &account).await?;
    Ok((
        name,
        SettingScope {
            account,
            org,
            project,
        },
    ))
}

/// Sets a setting at the scope of the query.
#[utoipa::path(
    put,
    path = "/api/v1/settings/{name}",
    tag = "Settings",
    operation_id = "putSetting",
    params(("name" = String, Path, description = "The setting", pattern = "^mandate_custom_webhook_authorization$"), SettingParams),
    request_body = SettingBody,
    responses((status = 200, description = "OK", body = Success<SettingView>)),
    security(("apiKey" = []))
)]
pub(super) async fn put(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let (name, scope) = scope(&req, &gw).await?;
    let body: SettingBody = body::read_json(&req, payload, gw.body_limits).await?;
    let value = ScopedValue {
        value: body.value,
        allow_overrides: body.allow_overrides,
    };
    Ok(envelope::ok(gw.put_setting(&scope, name, value).await?))
}

/// A setting's effective value at the scope of the query, and where it comes from.
#[utoipa::path(
    get,
    path = "/api/v1/settings/{name}",
    tag = "Settings",
    operation_id = "getSetting",
    params(("name" = String, Path, description = "The setting", pattern = "^mandate_custom_webhook_authorization$"), SettingParams),
    responses((status = 200, description = "OK", body = Success<SettingView>)),
    security(("apiKey" = []))
)]
pub(super) async fn get(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let (name, scope) = scope(&req, &gw).await?;
    Ok(envelope::ok(gw.get_setting(&scope, name).await?))
}

/// Removes the value set at exactly this scope.
#[utoipa::path(
    delete,
    path = "/api/v1/settings/{name}",
    tag = "Settings",
    operation_id = "deleteSetting",
    params(("name" = String, Path, description = "The setting", pattern = "^mandate_custom_webhook_authorization$"), SettingParams),
    responses((status = 200, description = "OK", body = Success<SettingView>)),
    security(("apiKey" = []))
)]
pub(super) async fn delete(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let (name, scope) = scope(&req, &gw).await?;
    Ok(envelope::ok(gw.delete_setting(&scope, name).await?))
}
