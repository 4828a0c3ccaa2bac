//! API keys of an account (create, shown once; list; revoke) and a project's settings (the
//! authorization mandate, its effective value and where it comes from).

use actix_web::{web, HttpRequest, HttpResponse};
use maud::html;
use serde_json::json;

use super::projects::readable_project;
use super::{project_path, view, ConsoleError, InPage as _, Post, Signed};
use crate::domain::ids::AccountId;
use crate::domain::settings::{ScopedValue, MANDATE_CUSTOM_WEBHOOK_AUTHORIZATION};
use crate::error::Error;
use crate::service::manage::{CreatedKey, KeyInfo, NewKey};
use crate::service::{require_manage, Gateway};
use crate::store::SettingScope;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource("/accounts/{acc}/keys")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(super::resource("/accounts/{acc}/keys/{keyId}/revoke").route(web::post().to(revoke)))
    .service(
        super::resource("/accounts/{acc}/orgs/{org}/projects/{proj}/settings")
            .route(web::get().to(settings))
            .route(web::post().to(save_setting)),
    );
}

/// The account of the path, for a key that may manage it (the API's rule for keys).
fn managed_account(req: &HttpRequest, signed: &Signed) -> Result<AccountId, ConsoleError> {
    let acc = crate::http::path_account(req)?;
    require_manage(&signed.principal, &acc)?;
    Ok(acc)
}

async fn list(
    req: HttpRequest,
    signed: Signed,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let acc = managed_account(&req, &signed).in_page(&signed)?;
    keys_page(&signed, &gw, &acc, None, None)
        .await
        .in_page(&signed)
}

async fn keys_page(
    signed: &Signed,
    gw: &Gateway,
    acc: &AccountId,
    created: Option<&CreatedKey>,
    error: Option<&str>,
) -> Result<HttpResponse, ConsoleError> {
    gw.get_account(acc).await?;
    let keys: Vec<KeyInfo> = gw
        .store
        .list_api_keys(acc)
        .await?
        .iter()
        .map(KeyInfo::from)
        .collect();
    let body = html! {
        @if let Some(k) = created { (view::secret_once(&format!("API key {}", k.identifier), &k.key)) }
        @if keys.is_empty() {
            div.empty { "No API keys in this account yet: create one below." }
        } @else {
            table #keys {
                thead { tr { th { "Key id" } th { "Name" } th { "Role" } th { "Projects" } th { "Created" } th { "Expires" } th { "State" } th {} } }
                tbody {
                    @for k in &keys {
                        tr {
                            td { code { (k.identifier) } }
                            td { (k.name) }
                            td { (k.role.as_str()) }
                            td { @match &k.projects { Some(p) => (p.join(", ")), None => span.muted { "all" } } }
                            td { (view::when(k.created_at)) }
                            td { (view::when_opt(k.expires_at)) }
                            td {
                                @if k.revoked_at.is_some() { (view::badge("Revoked")) }
                                @else if k.identifier == signed.principal.key_id.as_str() { span.muted { "this session's key" } }
                            }
                            td {
                                @if k.revoked_at.is_none() {
                                    form method="post" action=(format!("/ui/accounts/{acc}/keys/{}/revoke", k.identifier))
                                        data-confirm=(format!("Revoke key {}? Everything using it stops working at once.", k.identifier)) {
                                        (view::csrf(signed))
                                        button.danger type="submit" aria-label=(format!("Revoke key {}", k.identifier)) { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 #new { "New API key" }
        @if let Some(e) = error { (view::error_box(e)) }
        form method="post" action=(format!("/ui/accounts/{acc}/keys")) {
            (view::csrf(signed))
            (view::once())
            label for="name" { "Name" }
            input #name type="text" name="name" required;
            label for="role" { "Role" }
            select #role name="role" { option value="executor" { "executor: fire triggers, read status" } option value="admin" { "admin: manage the account" } }
            label for="projects" { "Limit to projects " span.muted { "(executor keys; comma-separated org/project, empty for all)" } }
            input #projects type="text" name="projects" placeholder="default/payments";
            label for="expiresAt" { "Expires " span.muted { "(RFC 3339, empty for never)" } }
            input #expiresAt type="text" name="expiresAt" placeholder="2027-01-01T00:00:00Z";
            div { button type="submit" { "Create key" } }
        }
    };
    let status = view::status_for(error.is_some());
    Ok(view::render(
        status,
        &format!("API keys of {acc}"),
        Some(signed),
        None,
        body,
    ))
}

async fn create(
    req: HttpRequest,
    post: Post,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let signed = &post.signed;
    let acc = managed_account(&req, signed).in_page(signed)?;
    post.once(&gw).await?;
    let projects: Vec<&str> = post
        .field("projects")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let expires = Some(post.field("expiresAt")).filter(|e| !e.is_empty());
    // The API's own body type parses and checks the form, so both refuse the same things.
    let new_key = serde_json::from_value::<NewKey>(json!({
        "name": post.field("name"),
        "role": post.field("role"),
        "projects": (!projects.is_empty()).then_some(projects),
        "expiresAt": expires,
    }))
    .map_err(|e| Error::InvalidRequest(format!("Invalid request: {e}")));
    match async { gw.create_api_key(&acc, new_key?).await }.await {
        Ok(created) => keys_page(signed, &gw, &acc, Some(&created), None)
            .await
            .in_page(signed),
        Err(e) if e.status() < 500 => keys_page(signed, &gw, &acc, None, Some(&e.public_message()))
            .await
            .in_page(signed),
        Err(e) => Err(e).in_page(signed),
    }
}

async fn revoke(
    req: HttpRequest,
    post: Post,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let signed = &post.signed;
    let acc = managed_account(&req, signed).in_page(signed)?;
    let key_id = req.match_info().get("keyId").unwrap_or("");
    gw.revoke_api_key(&acc, key_id).await.in_page(signed)?;
    Ok(view::see_other(&format!("/ui/accounts/{acc}/keys")))
}

async fn settings(
    req: HttpRequest,
    signed: Signed,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    settings_page(&req, &signed, &gw, None)
        .await
        .in_page(&signed)
}

async fn settings_page(
    req: &HttpRequest,
    signed: &Signed,
    gw: &Gateway,
    error: Option<&str>,
) -> Result<HttpResponse, ConsoleError> {
    let project = readable_project(req, signed, gw).await?;
    require_manage(&signed.principal, &project.account)?;
    let scope = SettingScope {
        account: project.account.clone(),
        org: Some(project.org.clone()),
        project: Some(project.project.clone()),
    };
    let mandate = gw
        .get_setting(&scope, MANDATE_CUSTOM_WEBHOOK_AUTHORIZATION)
        .await?;
    let source = serde_json::to_value(mandate.source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let body = html! {
        h2 { "Authorization mandate" }
        p.hint { "When on, every webhook of this project must carry a valid " code { "X-Api-Key" } "; the cURL the console gives includes it." }
        dl.grid {
            dt { "Effective value" } dd { @if mandate.value { (view::badge("On")) } @else { (view::badge("Off")) } }
            dt { "Comes from" } dd { (source.to_lowercase()) }
            dt { "Set on this project" } dd { @match &mandate.set_here { Some(h) => { (if h.value { "on" } else { "off" }) }, None => span.muted { "not set" } } }
        }
        @if let Some(e) = error { (view::error_box(e)) }
        form method="post" action=(format!("{}/settings", project_path(&project))) {
            (view::csrf(signed))
            label for="value" { "Set on this project" }
            select #value name="value" {
                option value="" { "not set (inherit)" }
                option value="true" selected[mandate.set_here.as_ref().is_some_and(|h| h.value)] { "on" }
                option value="false" selected[mandate.set_here.as_ref().is_some_and(|h| !h.value)] { "off" }
            }
            div { button type="submit" { "Save" } }
        }
    };
    let status = view::status_for(error.is_some());
    Ok(view::render(
        status,
        "Settings",
        Some(signed),
        Some(&project),
        body,
    ))
}

async fn save_setting(
    req: HttpRequest,
    post: Post,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let signed = &post.signed;
    let project = readable_project(&req, signed, &gw).await.in_page(signed)?;
    require_manage(&signed.principal, &project.account).in_page(signed)?;
    let scope = SettingScope {
        account: project.account.clone(),
        org: Some(project.org.clone()),
        project: Some(project.project.clone()),
    };
    let name = MANDATE_CUSTOM_WEBHOOK_AUTHORIZATION;
    let done = match post.field("value") {
        "" => gw.delete_setting(&scope, name).await,
        v => match crate::http::bool_param(&post.fields, "value") {
            Ok(value) => {
                gw.put_setting(
                    &scope,
                    name,
                    ScopedValue {
                        value,
                        allow_overrides: true,
                    },
                )
                .await
            }
            Err(e) => Err(Error::InvalidRequest(format!(
                "{e} (got {})",
                crate::domain::ids::truncate_for_message(v)
            ))),
        },
    };
    match done {
        Ok(_) => Ok(view::see_other(&format!(
            "{}/settings",
            project_path(&project)
        ))),
        Err(e) if e.status() < 500 => settings_page(&req, signed, &gw, Some(&e.public_message()))
            .await
            .in_page(signed),
        Err(e) => Err(e).in_page(signed),
    }
}
