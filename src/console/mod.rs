//! The web console under `/ui/` (DESIGN §12): server-rendered HTML (maud) with a small script
//! for copying, live logs and refreshing lists. Reading works without JavaScript; every action
//! is a plain form post.
//!
//! The console is another client of the same services as `/api/v1`. A browser signs in with an
//! API key, which is exchanged for a server-side session ([`session`]); each request re-reads
//! that key and applies the API's own authorization rules (`service::require_*`) to it, so the
//! console can do nothing the key could not do through the API.
//!
//! Layout: [`session`] (sign-in, cookies, CSRF), [`view`] (the page frame and small widgets),
//! then one module per area: [`projects`], [`pipelines`], [`triggers`], [`executions`],
//! [`rules`] and [`keys`].

mod assets;
mod executions;
mod keys;
mod pipelines;
mod projects;
mod rules;
mod session;
mod triggers;
mod view;

use actix_web::http::header;
use actix_web::{middleware::DefaultHeaders, web, HttpResponse};

pub(crate) use session::{ConsoleError, InPage, Post, Signed};

/// The Content-Security-Policy of every console response: no inline script or style, nothing
/// from elsewhere, never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Registers `/ui` and everything under it.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/ui").to(|| async {
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/ui/"))
            .finish()
    }))
    .service(
        web::scope("/ui")
            .wrap(
                DefaultHeaders::new()
                    .add((header::CONTENT_SECURITY_POLICY, CSP))
                    .add((header::X_FRAME_OPTIONS, "DENY"))
                    .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                    // Pages show webhook URLs, which hold tokens: never send them to another site
                    // as a referrer. (`same-origin`, not `no-referrer`: with the latter, browsers
                    // send `Origin: null` on the console's own form posts.)
                    .add((header::REFERRER_POLICY, "same-origin")),
            )
            .configure(assets::configure)
            .configure(session::configure)
            .configure(projects::configure)
            .configure(pipelines::configure)
            .configure(triggers::configure)
            .configure(executions::configure)
            .configure(rules::configure)
            .configure(keys::configure)
            .default_service(web::to(not_found)),
    );
}

async fn not_found(signed: Option<Signed>) -> Result<HttpResponse, ConsoleError> {
    Err(ConsoleError::Page(
        crate::error::Error::NotFound("There is no such page in the console".into()),
        signed.map(Box::new),
    ))
}

/// A console resource whose unlisted methods answer 405 with a page.
pub(crate) fn resource(path: impl AsRef<str>) -> actix_web::Resource {
    web::resource(path.as_ref()).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed(
    req: actix_web::HttpRequest,
    signed: Option<Signed>,
) -> Result<HttpResponse, ConsoleError> {
    Err(ConsoleError::Page(
        crate::error::Error::MethodNotAllowed(format!(
            "This page does not take {} requests",
            req.method()
        )),
        signed.map(Box::new),
    ))
}

/// The `/ui` path of a project.
pub(crate) fn project_path(p: &crate::domain::ids::ProjectRef) -> String {
    format!(
        "/ui/accounts/{}/orgs/{}/projects/{}",
        p.account, p.org, p.project
    )
}
