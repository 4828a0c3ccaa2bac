//! The account, org and project picker. A root key sees every account; any other key its own
//! account, and a key limited to some projects only those.

use actix_web::{web, HttpRequest, HttpResponse};
use maud::html;

use super::{view, ConsoleError, InPage as _, Signed};
use crate::domain::ids::ProjectRef;
use crate::error::Error;
use crate::service::{require_account, Gateway};

/// Orgs shown on an account's page, and projects per org.
const PICKER_LIMIT: u32 = 100;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/projects").route(web::get().to(picker)))
        .service(super::resource("/accounts/{acc}").route(web::get().to(account)))
        .service(
            super::resource("/accounts/{acc}/orgs/{org}/projects/{proj}")
                .route(web::get().to(project_home)),
        );
}

/// The project of a `/ui/accounts/{acc}/orgs/{org}/projects/{proj}/...` path, once the signed-in
/// key may read it (the API's rule) and it exists. Remembered as the session's project.
pub(crate) async fn readable_project(
    req: &HttpRequest,
    signed: &Signed,
    gw: &Gateway,
) -> Result<ProjectRef, ConsoleError> {
    let project = crate::http::path_project(req)?;
    crate::service::require_read(&signed.principal, &project)?;
    if gw.store.get_project(&project).await?.is_none() {
        return Err(Error::NotFound(format!("Project {project} does not exist")).into());
    }
    signed
        .remember_project(
            gw,
            &format!("{}/{}/{}", project.account, project.org, project.project),
        )
        .await;
    Ok(project)
}

/// The project of the path, for a key that may manage its account: the API's rule for
/// pipelines, triggers, event rules and settings.
pub(crate) async fn managed_project(
    req: &HttpRequest,
    signed: &Signed,
    gw: &Gateway,
) -> Result<ProjectRef, ConsoleError> {
    let project = readable_project(req, signed, gw).await?;
    crate::service::require_manage(&signed.principal, &project.account)?;
    Ok(project)
}

async fn picker(
    signed: Signed,
    q: web::Query<std::collections::HashMap<String, String>>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    if !signed.principal.is_root() {
        return Ok(view::see_other(&format!(
            "/ui/accounts/{}",
            signed.principal.account
        )));
    }
    let cursor = q.get("cursor").map(String::as_str);
    let page = gw
        .list_accounts(cursor, PICKER_LIMIT)
        .await
        .in_page(&signed)?;
    let body = html! {
        p.hint { "You signed in with the root key: every account is visible. Pick one." }
        @if page.items.is_empty() {
            div.empty { "No accounts yet: create one with " code { "triggerd apply -f account.yaml" } " or " code { "PUT /api/v1/accounts/{acc}" } "." }
        } @else {
            table {
                thead { tr { th { "Account" } th { "Name" } th { "Created" } } }
                tbody {
                    @for a in &page.items {
                        tr {
                            td { a href=(format!("/ui/accounts/{}", a.identifier)) { (a.identifier) } }
                            td { (a.name) }
                            td { (view::when(a.created_at)) }
                        }
                    }
                }
            }
            (view::pager("/ui/projects", &[], page.next_cursor.as_deref()))
        }
    };
    Ok(view::ok("Accounts", &signed, None, body))
}

async fn account(
    req: HttpRequest,
    signed: Signed,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let acc = crate::http::path_account(&req).in_page(&signed)?;
    let listing = async {
        require_account(&signed.principal, &acc)?;
        let orgs = gw
            .list_orgs(&signed.principal, &acc, None, PICKER_LIMIT)
            .await?;
        let mut rows = Vec::new();
        for org in &orgs.items {
            let id = crate::domain::ids::Identifier::parse(&org.identifier, "org")?;
            let projects = gw
                .list_projects(&signed.principal, &acc, &id, None, PICKER_LIMIT)
                .await?;
            rows.push((org.clone(), projects));
        }
        Ok::<_, Error>((orgs.next_cursor.is_some(), rows))
    };
    let (more, rows) = listing.await.in_page(&signed)?;
    let body = html! {
        p {
            @if signed.principal.is_root() { a href="/ui/projects" { "← All accounts" } " · " }
            a href=(format!("/ui/accounts/{acc}/keys")) { "API keys of this account" }
        }
        p.hint { "Pick a project. The console remembers it for this session." }
        @if rows.is_empty() {
            div.empty { "No orgs or projects you can see yet: create one with " code { "triggerd apply -f project.yaml" } "." }
        }
        @for (org, projects) in &rows {
            h2 { "Org " (org.identifier) @if org.name != org.identifier { " · " (org.name) } }
            @if projects.items.is_empty() {
                p.muted { "No projects in this org." }
            } @else {
                ul {
                    @for p in &projects.items {
                        @let id = p.project_identifier.as_deref().unwrap_or(&p.identifier);
                        li { a href=(format!("/ui/accounts/{acc}/orgs/{}/projects/{id}", org.identifier)) { (id) } @if p.name != id { " · " (p.name) } }
                    }
                }
                @if projects.next_cursor.is_some() { p.muted { "Only the first " (PICKER_LIMIT) " projects are shown." } }
            }
        }
        @if more { p.muted { "Only the first " (PICKER_LIMIT) " orgs are shown." } }
    };
    Ok(view::ok(&format!("Account {acc}"), &signed, None, body))
}

async fn project_home(
    req: HttpRequest,
    signed: Signed,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let p = readable_project(&req, &signed, &gw)
        .await
        .in_page(&signed)?;
    Ok(view::see_other(&format!(
        "{}/executions",
        super::project_path(&p)
    )))
}
