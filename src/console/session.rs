//! Sign-in, sessions and CSRF (DESIGN §12).
//!
//! Signing in exchanges an API key, verified exactly as the API verifies it, for a random
//! session token in an HttpOnly, `SameSite=Strict` cookie (`Secure` when the public URL is
//! https). The database holds only the token's SHA-256 and the key's id, never the key. Every
//! request re-reads the key, so a revoked or expired key ends its sessions at once, on every
//! node. Sessions end after [`IDLE`] without a request, or [`LIFETIME`] after sign-in.
//!
//! Every state-changing request is a form post that carries the session's CSRF token; the
//! [`Post`] extractor refuses any that does not, before the handler runs.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use base64::Engine as _;
use maud::html;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::view;
use crate::auth::Principal;
use crate::error::Error;
use crate::service::Gateway;
use crate::store::{now_millis, ConsoleSession, Millis};

/// The session cookie.
const COOKIE: &str = "triggerd_session";
/// A session ends after this long without a request.
pub(crate) const IDLE: Millis = 30 * 60 * 1000;
/// A session ends this long after sign-in, however busy.
const LIFETIME: Millis = 12 * 60 * 60 * 1000;
/// A session's last use is written at most this often.
const TOUCH_EVERY: Millis = 60 * 1000;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource("/signin")
            .route(web::get().to(signin_page))
            .route(web::post().to(signin)),
    )
    .service(super::resource("/signout").route(web::post().to(signout)))
    .service(super::resource("/").route(web::get().to(home)));
}

/// A signed-in request: the session and its key's principal, re-read for this request.
#[derive(Clone)]
pub(crate) struct Signed {
    /// The key's principal, as the API would see it.
    pub principal: Principal,
    /// The session.
    pub session: ConsoleSession,
}

/// A form post from a signed-in browser whose CSRF token matched.
pub(crate) struct Post {
    /// Who posted.
    pub signed: Signed,
    /// The form's fields (first value of each name).
    pub fields: HashMap<String, String>,
}

impl Post {
    /// A field, trimmed; empty when absent.
    pub fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", |v| v.trim())
    }

    /// Refuses a form that makes a secret (a key, a signing secret) when it was posted before:
    /// a reloaded answer page must not make a second one. The form carries a one-time token
    /// ([`super::view::once`]).
    pub async fn once(&self, gw: &Gateway) -> Result<(), ConsoleError> {
        let token = self.field("once");
        let fresh = !token.is_empty()
            && gw
                .store
                .claim_session_once(&self.signed.session.token_hash, token)
                .await?;
        if fresh {
            Ok(())
        } else {
            Err(ConsoleError::Page(
                Error::Duplicate(
                    "This form was already sent (the page was reloaded?), so it was not sent again; what it made was shown once, in the first answer".into(),
                ),
                Some(Box::new(self.signed.clone())),
            ))
        }
    }

    /// A field as given (untrimmed), such as a YAML document.
    pub fn raw(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

/// Why a console request was not served; rendered as a page, never as JSON.
#[derive(Debug)]
pub(crate) enum ConsoleError {
    /// Not signed in (or no longer): to the sign-in page, then back to `next`.
    SignIn {
        /// Where to return after signing in.
        next: String,
        /// Why, shown on the sign-in page.
        notice: &'static str,
    },
    /// A refused request: the API's error and message, in the page frame.
    Page(Error, Option<Box<Signed>>),
}

impl std::fmt::Debug for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("key_id", &self.principal.key_id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsoleError::SignIn { notice, .. } => write!(f, "sign-in needed: {notice}"),
            ConsoleError::Page(e, _) => write!(f, "{e}"),
        }
    }
}

impl From<Error> for ConsoleError {
    fn from(e: Error) -> Self {
        ConsoleError::Page(e, None)
    }
}

impl From<crate::store::StoreError> for ConsoleError {
    fn from(e: crate::store::StoreError) -> Self {
        ConsoleError::Page(e.into(), None)
    }
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            ConsoleError::SignIn { .. } => StatusCode::SEE_OTHER,
            ConsoleError::Page(e, _) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ConsoleError::SignIn { next, notice } => {
                let to = format!(
                    "/ui/signin?next={}&notice={notice}",
                    percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC)
                );
                HttpResponse::SeeOther()
                    .insert_header((header::LOCATION, to))
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .finish()
            }
            ConsoleError::Page(e, signed) => {
                if let Error::Unexpected(cause) = e {
                    tracing::error!(error = %cause, correlation_id = %crate::http::middleware::correlation_id(), "console request failed");
                }
                let body = html! {
                    div.error role="alert" {
                        h2 { (e.status()) " " (title_of(e)) }
                        p { (e.public_message()) }
                    }
                    p { a href="/ui/" { "Back to the console" } }
                };
                view::render(
                    self.status_code(),
                    title_of(e),
                    signed.as_deref(),
                    None,
                    body,
                )
            }
        }
    }
}

fn title_of(e: &Error) -> &'static str {
    match e.status() {
        400 => "Bad request",
        401 => "Not signed in",
        403 => "Not allowed",
        404 => "Not found",
        409 => "Conflict",
        413 => "Too large",
        429 => "Too many requests",
        503 => "Unavailable",
        _ => "Something went wrong",
    }
}

/// Keeps the signed-in frame (navigation, sign-out) on the page of an error.
pub(crate) trait InPage<T> {
    /// The error, shown inside `signed`'s page frame.
    fn in_page(self, signed: &Signed) -> Result<T, ConsoleError>;
}

impl<T, E: Into<ConsoleError>> InPage<T> for Result<T, E> {
    fn in_page(self, signed: &Signed) -> Result<T, ConsoleError> {
        self.map_err(|e| match e.into() {
            ConsoleError::Page(e, None) => ConsoleError::Page(e, Some(Box::new(signed.clone()))),
            other => other,
        })
    }
}

impl FromRequest for Signed {
    type Error = ConsoleError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { load(&req).await })
    }
}

impl FromRequest for Post {
    type Error = ConsoleError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let signed = load(&req).await?;
            let gw = gateway(&req)?;
            // The API's body limit applies to what the form carries (a YAML document, a test
            // payload); the encoded form may be up to three times larger.
            let limits = gw.body_limits;
            let encoded = crate::service::BodyLimits {
                max_bytes: limits.max_bytes.saturating_mul(3).saturating_add(64 * 1024),
                deadline: limits.deadline,
            };
            let body = async {
                let payload = web::Payload::from_request(&req, &mut payload)
                    .await
                    .map_err(|e| Error::InvalidRequest(format!("Invalid request: {e}")))?;
                crate::http::body::read_limited(&req, payload, encoded).await
            };
            let body: bytes::Bytes = body
                .await
                .map_err(|e: Error| ConsoleError::Page(e, Some(Box::new(signed.clone()))))?;
            let mut fields = HashMap::new();
            for (k, v) in url::form_urlencoded::parse(&body) {
                if v.len() > limits.max_bytes {
                    return Err(ConsoleError::Page(
                        Error::PayloadTooLarge(format!(
                            "Payload too large: the field {} exceeds the limit of {} bytes",
                            crate::domain::ids::truncate_for_message(&k),
                            limits.max_bytes
                        )),
                        Some(Box::new(signed)),
                    ));
                }
                fields
                    .entry(k.into_owned())
                    .or_insert_with(|| v.into_owned());
            }
            let given = fields.get("csrf").map_or("", String::as_str);
            if !bool::from(given.as_bytes().ct_eq(signed.session.csrf.as_bytes())) {
                return Err(ConsoleError::Page(
                    Error::AccessDenied(
                        "This form is out of date or did not come from the console (its CSRF token is missing or wrong); reload the page and try again".into(),
                    ),
                    Some(Box::new(signed)),
                ));
            }
            Ok(Post { signed, fields })
        })
    }
}

/// The SHA-256 (hex) under which a session token is stored.
fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// 32 bytes from the OS CSPRNG, base64url.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Where to send the browser back to after signing in: this GET's own page, else home.
fn next_of(req: &HttpRequest) -> String {
    if req.method() == actix_web::http::Method::GET {
        match req.query_string() {
            "" => req.path().to_owned(),
            q => format!("{}?{q}", req.path()),
        }
    } else {
        "/ui/".to_owned()
    }
}

/// Only console paths are followed after sign-in: never another site.
fn safe_next(next: &str) -> &str {
    if next.starts_with("/ui/")
        && !next.contains("//")
        && next.chars().all(|c| c.is_ascii_graphic() && c != '\\')
    {
        next
    } else {
        "/ui/"
    }
}

fn gateway(req: &HttpRequest) -> Result<&web::Data<Gateway>, ConsoleError> {
    req.app_data::<web::Data<Gateway>>().ok_or_else(|| {
        ConsoleError::from(Error::Unexpected(crate::store::StoreError::db(
            "serving the console",
            std::io::Error::other("the gateway is not configured"),
        )))
    })
}

async fn load(req: &HttpRequest) -> Result<Signed, ConsoleError> {
    let sign_in = |notice| ConsoleError::SignIn {
        next: next_of(req),
        notice,
    };
    let gw = gateway(req)?;
    let Some(cookie) = req.cookie(COOKIE) else {
        return Err(sign_in("signin"));
    };
    let hash = token_hash(cookie.value());
    let Some(session) = gw.store.get_session(&hash).await? else {
        return Err(sign_in("expired"));
    };
    let now = now_millis();
    if now - session.last_seen > IDLE || now - session.created_at > LIFETIME {
        gw.store.delete_session(&hash).await?;
        return Err(sign_in("expired"));
    }
    let Some(principal) = gw.session_principal(&session.key_id).await? else {
        gw.store.delete_session(&hash).await?;
        return Err(sign_in("revoked"));
    };
    if now - session.last_seen > TOUCH_EVERY {
        gw.store.touch_session(&hash, now, None).await?;
    }
    Ok(Signed { principal, session })
}

impl Signed {
    /// Remembers the project the user is looking at, for `/ui/` and the picker.
    pub async fn remember_project(&self, gw: &Gateway, project: &str) {
        if self.session.project.as_deref() != Some(project) {
            if let Err(e) = gw
                .store
                .touch_session(&self.session.token_hash, now_millis(), Some(project))
                .await
            {
                tracing::warn!(error = %e, "remembering a console session's project failed");
            }
        }
    }
}

/// `/ui/`: the remembered project, or the picker.
async fn home(signed: Signed) -> HttpResponse {
    let to = match &signed.session.project {
        Some(p) => {
            let mut parts = p.splitn(3, '/');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(o), Some(p)) => {
                    format!("/ui/accounts/{a}/orgs/{o}/projects/{p}/executions")
                }
                _ => "/ui/projects".to_owned(),
            }
        }
        None => "/ui/projects".to_owned(),
    };
    view::see_other(&to)
}

#[derive(serde::Deserialize)]
struct SignInQuery {
    next: Option<String>,
    notice: Option<String>,
}

async fn signin_page(q: web::Query<SignInQuery>) -> HttpResponse {
    let notice = match q.notice.as_deref() {
        Some("expired") => Some("Your session has ended; sign in again."),
        Some("revoked") => {
            Some("The key of your session was revoked or has expired; sign in with a valid key.")
        }
        Some("signedout") => Some("You have signed out."),
        _ => None,
    };
    signin_form(
        StatusCode::OK,
        safe_next(q.next.as_deref().unwrap_or("/ui/")),
        notice,
        None,
    )
}

fn signin_form(
    status: StatusCode,
    next: &str,
    notice: Option<&str>,
    error: Option<&str>,
) -> HttpResponse {
    let body = html! {
        section.signin {
            p.hint { "Paste an API key (" code { "pat.<account>.<keyId>.<secret>" } "). It is exchanged for a session; the key itself is not kept in your browser." }
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            @if let Some(e) = error { div.error role="alert" id="signin-error" { (e) } }
            form method="post" action="/ui/signin" {
                input type="hidden" name="next" value=(next);
                label for="key" { "API key" }
                input #key type="password" name="key" autocomplete="off" required autofocus;
                button type="submit" { "Sign in" }
            }
        }
    };
    view::render(status, "Sign in", None, None, body)
}

/// A sign-in post must come from the console itself, so that no other page can sign a visitor
/// in. Browsers say where a request comes from: `Sec-Fetch-Site` must be `same-origin` (or
/// `none`, typed by the user); without it, an `Origin` must name this server, as `public_url`
/// gives it (behind a proxy the `Host` the server sees may differ) or as `Host` gives it.
fn same_origin(req: &HttpRequest, public_url: &str) -> bool {
    if let Some(site) = crate::http::header(req, "sec-fetch-site") {
        return matches!(site, "same-origin" | "none");
    }
    let Some(origin) = crate::http::header(req, "origin") else {
        return true;
    };
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    let public_host = public_url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(rest));
    // HTTP/2 requests carry the host in the URI's authority, not in a Host header.
    let authority = req.uri().authority().map(|a| a.as_str());
    let host = crate::http::header(req, "host").or(authority);
    origin_host.is_some_and(|o| {
        public_host.is_some_and(|p| o.eq_ignore_ascii_case(p))
            || host.is_some_and(|h| o.eq_ignore_ascii_case(h))
    })
}

async fn signin(
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let next = safe_next(form.get("next").map_or("/ui/", String::as_str)).to_owned();
    if !same_origin(&req, &gw.public_url) {
        return Err(
            Error::AccessDenied("Sign-in must come from the console's own page".into()).into(),
        );
    }
    let key = form.get("key").map_or("", |k| k.trim());
    let principal = match gw.whoami(Some(key)).await {
        Ok(p) => p,
        Err(
            e @ (Error::InvalidToken(_) | Error::AccessDenied(_) | Error::TooManyRequests { .. }),
        ) => {
            let message = match e {
                Error::TooManyRequests { .. } => e.public_message(),
                _ => "That API key is not valid: it is malformed, unknown, revoked or expired."
                    .to_owned(),
            };
            return Ok(signin_form(
                StatusCode::UNAUTHORIZED,
                &next,
                None,
                Some(&message),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let token = random_token();
    let now = now_millis();
    let project = match &principal.projects {
        Some(list) if list.len() == 1 => Some(format!("{}/{}", principal.account, list[0])),
        _ => None,
    };
    gw.store
        .create_session(
            ConsoleSession {
                token_hash: token_hash(&token),
                key_id: principal.key_id.clone(),
                csrf: random_token(),
                project,
                created_at: now,
                last_seen: now,
            },
            now - IDLE,
        )
        .await?;
    tracing::info!(key_id = %principal.key_id, "console sign-in");
    let cookie = Cookie::build(COOKIE, token)
        .path("/ui")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(gw.public_url.starts_with("https://"))
        .finish();
    Ok(HttpResponse::SeeOther()
        .cookie(cookie)
        .insert_header((header::LOCATION, next))
        .finish())
}

async fn signout(post: Post, gw: web::Data<Gateway>) -> Result<HttpResponse, ConsoleError> {
    gw.store
        .delete_session(&post.signed.session.token_hash)
        .await?;
    let mut gone = Cookie::build(COOKIE, "").path("/ui").finish();
    gone.make_removal();
    Ok(HttpResponse::SeeOther()
        .cookie(gone)
        .insert_header((header::LOCATION, "/ui/signin?notice=signedout"))
        .finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next("/ui/projects"), "/ui/projects");
        assert_eq!(safe_next("https://evil.example/"), "/ui/");
        assert_eq!(safe_next("//evil.example/ui/"), "/ui/");
        assert_eq!(safe_next("/ui//evil.example"), "/ui/");
        assert_eq!(safe_next("/ui/\\evil"), "/ui/");
        assert_eq!(safe_next("/api/v1/accounts"), "/ui/");
        assert_eq!(safe_next("/ui/x\r\nSet-Cookie: a=b"), "/ui/");
    }

    #[test]
    fn session_tokens_are_long_random_and_stored_hashed() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
    }
}
