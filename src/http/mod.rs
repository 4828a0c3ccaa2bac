//! The HTTP surface. Each resource module registers its own routes with `configure`; handlers
//! are thin: extract, parse into domain types, call the service, render the envelope.
//!
//! Every route is served at the root and under `/gateway/pipeline/api`, so a Harness URL works
//! after only the host is changed. The prefix is taken off before routing
//! ([`middleware::RequestContext`]) rather than registering every route twice: each route with
//! a path parameter is a compiled regex in each HTTP worker, and the second copy of the routes
//! held 1.6 MiB per worker.

pub mod body;
pub mod envelope;
pub mod middleware;

mod accounts;
mod apikeys;
mod event_rules;
mod events;
mod executions;
mod health;
mod intake;
pub mod openapi;
mod pipelines;
mod settings;
mod status;
mod triggers;
mod whoami;

use std::collections::HashMap;

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};

use crate::domain::ids::{AccountId, Identifier, ProjectRef};
use crate::error::Error;

/// The Harness-compatible alias prefix.
pub const HARNESS_PREFIX: &str = "/gateway/pipeline/api";

/// Registers every route, plus JSON 404s. Under the Harness prefix they are reached through
/// [`strip_harness_prefix`].
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(routes).default_service(web::to(not_found));
}

fn routes(cfg: &mut web::ServiceConfig) {
    intake::configure(cfg);
    status::configure(cfg);
    health::configure(cfg);
    accounts::configure(cfg);
    apikeys::configure(cfg);
    settings::configure(cfg);
    pipelines::configure(cfg);
    triggers::configure(cfg);
    events::configure(cfg);
    event_rules::configure(cfg);
    executions::configure(cfg);
    whoami::configure(cfg);
    openapi::configure(cfg);
}

/// A resource whose unlisted methods answer 405 with the envelope.
pub(crate) fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// Marks a request whose path came with the Harness prefix, taken off before routing.
#[derive(Clone, Copy)]
struct HarnessAlias;

/// Takes the Harness prefix off the request's path, so that the routes registered at the root
/// serve it. The console (`/ui`, however encoded) is not aliased, and neither is the prefix
/// alone.
pub(crate) fn strip_harness_prefix(req: &mut actix_web::dev::ServiceRequest) {
    use actix_web::dev::Url;
    use actix_web::http::uri::{PathAndQuery, Uri};
    let Some(rest) = req.path().strip_prefix(HARNESS_PREFIX) else {
        return;
    };
    if rest.len() < 2 || !rest.starts_with('/') {
        return;
    }
    let mut parts = req.head().uri.clone().into_parts();
    let path_and_query = match parts.path_and_query.as_ref().and_then(|pq| pq.query()) {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_owned(),
    };
    let Ok(path_and_query) = PathAndQuery::try_from(path_and_query) else {
        return;
    };
    parts.path_and_query = Some(path_and_query);
    let Ok(uri) = Uri::from_parts(parts) else {
        return;
    };
    // What the router will match: the path decoded.
    let url = Url::new(uri.clone());
    if url.path() == "/ui" || url.path().starts_with("/ui/") {
        return;
    }
    *req.match_info_mut().get_mut() = url;
    req.head_mut().uri = uri;
    req.extensions_mut().insert(HarnessAlias);
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, Error> {
    Err(no_route(&req))
}

fn no_route(req: &HttpRequest) -> Error {
    let prefix = match req.extensions().get::<HarnessAlias>() {
        Some(_) => HARNESS_PREFIX,
        None => "",
    };
    Error::NotFound(format!(
        "No route for {} {prefix}{}",
        req.method(),
        crate::domain::ids::truncate_for_message(req.path())
    ))
}

/// The route a request took when its handler matched the path itself ([`by_hand`]), for logs
/// and metrics, which otherwise take the router's pattern.
#[derive(Clone, Copy)]
pub(crate) struct RoutePattern(pub &'static str);

/// Matches `/{segment}{suffix}` in what a scope left of the path, for the scope's default
/// service, and answers what the router would for anything else: 404 for another path, 405
/// (with `Allow`) for another method. The two busiest routes, intake v3 and status, are matched
/// this way: the router matches a path parameter with a regex-lite automaton, whose Pike VM
/// took 6 % of an HTTP worker's samples on intake (issue 13). `pattern` is the route as the API
/// document spells it.
pub(crate) fn by_hand<'r>(
    req: &'r HttpRequest,
    suffix: &str,
    method: actix_web::http::Method,
    pattern: &'static str,
) -> Result<&'r str, Box<HttpResponse>> {
    use actix_web::ResponseError;
    let segment = req
        .match_info()
        .unprocessed()
        .strip_prefix('/')
        .and_then(|rest| rest.strip_suffix(suffix))
        .filter(|segment| !segment.is_empty() && !segment.contains('/'));
    let Some(segment) = segment else {
        return Err(Box::new(no_route(req).error_response()));
    };
    req.extensions_mut().insert(RoutePattern(pattern));
    if *req.method() != method {
        return Err(Box::new(method_not_allowed_on(req, pattern)));
    }
    Ok(segment)
}

/// 405 with the envelope and the `Allow` header (RFC 9110 §15.5.6), whose methods come from
/// the API document.
async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let pattern = req.match_pattern().unwrap_or_default();
    method_not_allowed_on(&req, &pattern)
}

fn method_not_allowed_on(req: &HttpRequest, pattern: &str) -> HttpResponse {
    use actix_web::ResponseError;
    let mut response = Error::MethodNotAllowed(format!(
        "Method {} is not allowed on this resource",
        req.method()
    ))
    .error_response();
    if let Some(allow) = openapi::allowed_methods(pattern) {
        if let Ok(value) = actix_web::http::header::HeaderValue::from_str(allow) {
            response
                .headers_mut()
                .insert(actix_web::http::header::ALLOW, value);
        }
    }
    response
}

/// The first value of a header, when it is valid visible ASCII. A header that is present but
/// not ASCII yields `Some("")`, which no check accepts.
pub(crate) fn header<'r>(req: &'r HttpRequest, name: &str) -> Option<&'r str> {
    req.headers().get(name).map(|v| v.to_str().unwrap_or(""))
}

/// `X-Api-Key`.
pub(crate) fn api_key(req: &HttpRequest) -> Option<&str> {
    header(req, "x-api-key")
}

/// The query string as a map (first value wins).
pub(crate) fn query(req: &HttpRequest) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    map
}

/// A path segment that must be an account id.
pub(crate) fn path_account(req: &HttpRequest) -> Result<AccountId, Error> {
    Ok(AccountId::parse(req.match_info().get("acc").unwrap_or(""))?)
}

/// A path segment that must be an identifier.
pub(crate) fn path_identifier(
    req: &HttpRequest,
    name: &str,
    what: &str,
) -> Result<Identifier, Error> {
    Ok(Identifier::parse(
        req.match_info().get(name).unwrap_or(""),
        what,
    )?)
}

/// The `{acc}/{org}/{proj}` of a project-scoped path.
pub(crate) fn path_project(req: &HttpRequest) -> Result<ProjectRef, Error> {
    Ok(ProjectRef {
        account: path_account(req)?,
        org: path_identifier(req, "org", "orgIdentifier")?,
        project: path_identifier(req, "proj", "projectIdentifier")?,
    })
}

/// `limit` (default 50, at most 500) and `cursor` of a list request.
pub(crate) fn list_params(q: &HashMap<String, String>) -> Result<(u32, Option<&str>), Error> {
    list_params_or(q, 50)
}

/// `limit` (default `default`, at most 500) and `cursor` (absent or empty for the first page) of a
/// list request.
pub(crate) fn list_params_or(
    q: &HashMap<String, String>,
    default: u32,
) -> Result<(u32, Option<&str>), Error> {
    let limit = match q.get("limit") {
        None => default,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| {
                Error::InvalidRequest("Invalid request: limit must be between 1 and 500".into())
            })?,
    };
    // An empty cursor is the first page, as a script's `cursor=$NEXT` gives it.
    let cursor = q
        .get("cursor")
        .map(String::as_str)
        .filter(|c| !c.is_empty());
    Ok((limit, cursor))
}

/// A `true`/`false` query parameter; absent or empty is false, anything else a 400.
pub(crate) fn bool_param(q: &HashMap<String, String>, name: &str) -> Result<bool, Error> {
    match q.get(name).map(String::as_str) {
        None | Some("" | "false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(Error::InvalidRequest(format!(
            "Invalid request: {name} must be true or false"
        ))),
    }
}

/// `after` of a log read: the seq of the last line already read; absent or empty is -1 (from the
/// start).
pub(crate) fn after_param(q: &HashMap<String, String>) -> Result<i64, Error> {
    match q.get("after").map(String::as_str) {
        None | Some("") => Ok(-1),
        Some(v) => v.parse::<i64>().map_err(|_| {
            Error::InvalidRequest("Invalid request: after must be a line seq (an integer)".into())
        }),
    }
}

/// `dryRun=true` on a PUT: validate and answer what would be stored, store nothing.
pub(crate) fn dry_run(req: &HttpRequest) -> Result<bool, Error> {
    bool_param(&query(req), "dryRun")
}

/// The answer to a PUT: 201 on create, 200 on update, 200 for a dry run.
pub(crate) fn put_answer<T: serde::Serialize>(
    dry_run: bool,
    created: bool,
    view: T,
) -> HttpResponse {
    envelope::put_result(created && !dry_run, view)
}

/// A filter that takes one of a fixed set of values, such as `status`. Absent or empty means no
/// filter. A value matches ignoring case and underscores, so `success` finds `Success` and
/// `APPROVAL_WAITING` (the spelling of outbound events) finds `ApprovalWaiting`; it is given
/// back in its canonical spelling. Anything else is a 400 that names the accepted values: a
/// filter that can never match is a mistake, not an empty list.
pub(crate) fn enum_filter(
    q: &HashMap<String, String>,
    name: &str,
    accepted: &[&'static str],
) -> Result<Option<&'static str>, Error> {
    let Some(given) = q.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let folded = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_')
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let wanted = folded(given);
    accepted
        .iter()
        .find(|a| folded(a) == wanted)
        .map(|a| Some(*a))
        .ok_or_else(|| {
            Error::InvalidRequest(format!(
                "Invalid request: {name} '{}' is not one of {} (matched ignoring case)",
                crate::domain::ids::truncate_for_message(given),
                accepted.join(", ")
            ))
        })
}

/// A filter that names a resource by identifier, such as `pipelineIdentifier`. Absent or empty
/// means no filter; a value that cannot be an identifier is a 400.
pub(crate) fn identifier_filter(
    q: &HashMap<String, String>,
    name: &str,
) -> Result<Option<Identifier>, Error> {
    match q.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => Ok(Some(Identifier::parse(v, name)?)),
    }
}

/// 200 with an empty success envelope, for deletes.
pub(crate) fn deleted(found: bool, what: impl FnOnce() -> String) -> Result<HttpResponse, Error> {
    if found {
        Ok(envelope::ok(serde_json::Value::Null))
    } else {
        Err(Error::NotFound(what()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const ACCEPTED: &[&str] = &["ApprovalWaiting", "Success", "TARGET_EXECUTION_REQUESTED"];

    #[test]
    fn enum_filters_match_ignoring_case_and_underscores() {
        for (given, canonical) in [
            ("success", "Success"),
            ("SUCCESS", "Success"),
            (" Success ", "Success"),
            ("APPROVAL_WAITING", "ApprovalWaiting"),
            ("approvalwaiting", "ApprovalWaiting"),
            ("target_execution_requested", "TARGET_EXECUTION_REQUESTED"),
        ] {
            let found = enum_filter(&q(&[("status", given)]), "status", ACCEPTED).unwrap();
            assert_eq!(found, Some(canonical), "{given}");
        }
    }

    #[test]
    fn absent_and_empty_enum_filters_are_no_filter() {
        assert_eq!(enum_filter(&q(&[]), "status", ACCEPTED).unwrap(), None);
        assert_eq!(
            enum_filter(&q(&[("status", "")]), "status", ACCEPTED).unwrap(),
            None
        );
        assert_eq!(
            enum_filter(&q(&[("status", "  ")]), "status", ACCEPTED).unwrap(),
            None
        );
    }

    #[test]
    fn an_unknown_enum_value_names_the_accepted_ones() {
        let err = enum_filter(&q(&[("status", "bogus")]), "status", ACCEPTED).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid request: status 'bogus' is not one of ApprovalWaiting, Success, TARGET_EXECUTION_REQUESTED (matched ignoring case)"
        );
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn identifier_filters_are_parsed_and_empty_is_none() {
        let parse =
            |v: &str| identifier_filter(&q(&[("pipelineIdentifier", v)]), "pipelineIdentifier");
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("deploy").unwrap().unwrap().as_str(), "deploy");
        assert!(parse("not an id")
            .unwrap_err()
            .to_string()
            .contains("pipelineIdentifier"));
    }
}
