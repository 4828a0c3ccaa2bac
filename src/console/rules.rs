//! Event rules (DESIGN §8): the list, create and edit, the enable toggle, "Test", secret
//! rotation (the new secret shown once), and the deliveries log with each attempt's request,
//! response and error, redeliver and recover.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use maud::html;

use super::pipelines::yaml_identifier;
use super::projects::managed_project;
use super::{project_path, view, ConsoleError, InPage as _, Post, Signed};
use crate::domain::ids::{Identifier, ProjectRef};
use crate::domain::BodyFormat;
use crate::error::Error;
use crate::service::Gateway;
use crate::store::outbound::delivery_status;

const P: &str = "/accounts/{acc}/orgs/{org}/projects/{proj}";
const R: &str = "/accounts/{acc}/orgs/{org}/projects/{proj}/eventrules/{rule}";
/// Rules and deliveries per page; attempts shown per delivery.
const PAGE: u32 = 25;
const ATTEMPTS: u32 = 20;
/// The event types "Test" offers.
const TEST_TYPES: &[&str] = &[
    "pipeline_start",
    "pipeline_end",
    "stage_start",
    "stage_end",
    "ping",
];

const NEW_RULE: &str = "identifier: ops
name: Ops dashboard
enabled: true
pipelines: [\"*\"]
events: [pipeline_start, pipeline_end, stage_end]
url: https://hooks.example.com/triggerd
auth:
  mode: signature
";

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource(format!("{P}/eventrules"))
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        super::resource(R)
            .route(web::get().to(show))
            .route(web::post().to(save)),
    )
    .service(super::resource(format!("{R}/enabled")).route(web::post().to(set_enabled)))
    .service(super::resource(format!("{R}/test")).route(web::post().to(test)))
    .service(super::resource(format!("{R}/rotate")).route(web::post().to(rotate)))
    .service(super::resource(format!("{R}/recover")).route(web::post().to(recover)))
    .service(super::resource(format!("{R}/deliveries/{{id}}")).route(web::get().to(delivery)))
    .service(
        super::resource(format!("{R}/deliveries/{{id}}/redeliver"))
            .route(web::post().to(redeliver)),
    );
}

async fn target(
    req: &HttpRequest,
    signed: &Signed,
    gw: &Gateway,
) -> Result<(ProjectRef, Identifier), ConsoleError> {
    let project = managed_project(req, signed, gw).await?;
    let rule = crate::http::path_identifier(req, "rule", "rule identifier")?;
    Ok((project, rule))
}

fn rule_path(project: &ProjectRef, rule: &str) -> String {
    format!("{}/eventrules/{rule}", project_path(project))
}

async fn list(
    req: HttpRequest,
    signed: Signed,
    q: web::Query<HashMap<String, String>>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let project = managed_project(&req, &signed, &gw).await.in_page(&signed)?;
    list_page(
        &signed,
        &gw,
        &project,
        q.get("cursor").map(String::as_str),
        None,
    )
    .await
    .in_page(&signed)
}

async fn list_page(
    signed: &Signed,
    gw: &Gateway,
    project: &ProjectRef,
    cursor: Option<&str>,
    draft: Option<(&str, &str)>,
) -> Result<HttpResponse, ConsoleError> {
    let page = gw.list_event_rules(project, cursor, PAGE).await?;
    let base = project_path(project);
    let (error, text) = draft.map_or((None, NEW_RULE), |(e, t)| (Some(e), t));
    let body = html! {
        @if page.items.is_empty() && cursor.is_none() {
            div.empty { "No event rules yet: create one below to have pipeline and stage events sent, signed, to your endpoint." }
        } @else {
            table {
                thead { tr { th { "Rule" } th { "Enabled" } th { "Events" } th { "URL" } th { "Failing since" } } }
                tbody {
                    @for r in &page.items {
                        @let id = r.spec.identifier.clone().unwrap_or_default();
                        tr {
                            td { a href=(rule_path(project, &id)) { (id) } }
                            td { @if r.spec.enabled { "yes" } @else { span.muted { "no" } @if let Some(why) = &r.disabled_reason { br; span.muted { (why) } } } }
                            td { (r.spec.events.join(", ")) }
                            td { code { (r.spec.url) } }
                            td { (view::when_opt(r.failing_since)) }
                        }
                    }
                }
            }
            (view::pager(&format!("{base}/eventrules"), &[], page.next_cursor.as_deref()))
        }
        h2 #new { "New event rule" }
        (view::YamlForm { action: &format!("{base}/eventrules"), label: "Event rule YAML", text, error, button: "Create event rule", extra: view::once() }.render(signed))
    };
    let status = view::status_for(error.is_some());
    Ok(view::render(
        status,
        "Event rules",
        Some(signed),
        Some(project),
        body,
    ))
}

async fn create(
    req: HttpRequest,
    post: Post,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let signed = &post.signed;
    let project = managed_project(&req, signed, &gw).await.in_page(signed)?;
    post.once(&gw).await?;
    let text = post.raw("yaml");
    let stored = async {
        let id = yaml_identifier(text, "/identifier")?;
        if gw.store.get_event_rule(&project, &id).await?.is_some() {
            return Err(Error::Duplicate(format!(
                "Event rule {id} already exists in {project}; edit it on its own page"
            )));
        }
        let (view, _) = gw
            .put_event_rule(&project, &id, text, BodyFormat::Yaml, false)
            .await?;
        Ok((id, view))
    };
    match stored.await {
        Ok((id, created)) => rule_page(
            signed,
            &gw,
            &project,
            &id,
            None,
            Shown::Secret(created.signing_secret),
        )
        .await
        .in_page(signed),
        Err(e) if e.status() < 500 => list_page(
            signed,
            &gw,
            &project,
            None,
            Some((&e.public_message(), text)),
        )
        .await
        .in_page(signed),
        Err(e) => Err(e).in_page(signed),
    }
}

async fn show(
    req: HttpRequest,
    signed: Signed,
    q: web::Query<HashMap<String, String>>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let (project, rule) = target(&req, &signed, &gw).await.in_page(&signed)?;
    let status = crate::http::enum_filter(&q, "status", delivery_status::ALL).in_page(&signed)?;
    let cursor = q.get("cursor").map(String::as_str);
    rule_page(
        &signed,
        &gw,
        &project,
        &rule,
        Some((status.unwrap_or(""), cursor)),
        Shown::Plain,
    )
    .await
    .in_page(&signed)
}

/// What a rule's page shows besides the rule.
enum Shown<'a> {
    Plain,
    /// A secret just made (on create or rotation), shown this once.
    Secret(Option<String>),
    /// A refused edit, with the text as submitted.
    SaveRefused {
        error: String,
        text: &'a str,
    },
    /// A notice, such as what recover queued.
    Notice(String),
}

async fn rule_page(
    signed: &Signed,
    gw: &Gateway,
    project: &ProjectRef,
    id: &Identifier,
    deliveries: Option<(&str, Option<&str>)>,
    shown: Shown<'_>,
) -> Result<HttpResponse, ConsoleError> {
    let rule = gw.get_event_rule(project, id).await?;
    let (status_filter, cursor) = deliveries.unwrap_or(("", None));
    let status = (!status_filter.is_empty())
        .then_some(status_filter)
        .and_then(|s| delivery_status::ALL.iter().copied().find(|a| *a == s));
    let page = gw
        .list_deliveries(project, id, status, cursor, PAGE)
        .await?;
    let path = rule_path(project, id.as_str());
    let (save_error, yaml) = match &shown {
        Shown::SaveRefused { error, text } => (Some(error.as_str()), (*text).to_owned()),
        _ => (
            None,
            serde_yaml_ng::to_string(&rule.spec).unwrap_or_default(),
        ),
    };
    let body = html! {
        @match &shown {
            Shown::Secret(Some(secret)) => { (view::secret_once("Signing secret", secret)) },
            Shown::Notice(n) => p.notice role="status" { (n) },
            _ => {},
        }
        dl.grid {
            dt { "Status" } dd { @if rule.spec.enabled { (view::badge("Enabled")) } @else { (view::badge("Disabled")) @if let Some(why) = &rule.disabled_reason { " " (why) } } }
            dt { "URL" } dd { code { (rule.spec.url) } }
            dt { "Events" } dd { (rule.spec.events.join(", ")) }
            dt { "Pipelines" } dd { (rule.spec.pipelines.join(", ")) }
            @if let Some(f) = &rule.spec.filter { dt { "Filter" } dd { code { (f) } } }
            @if let Some(t) = rule.previous_secret_valid_until { dt { "Previous secret" } dd { "still signs until " (view::when(t)) } }
            @if let Some(t) = rule.failing_since { dt { "Failing since" } dd { (view::when(t)) } }
        }
        div.actions {
            form method="post" action=(format!("{path}/enabled")) {
                (view::csrf(signed))
                input type="hidden" name="enabled" value=(if rule.spec.enabled { "false" } else { "true" });
                button.secondary type="submit" { @if rule.spec.enabled { "Disable rule" } @else { "Enable rule" } }
            }
            form method="post" action=(format!("{path}/test")) {
                (view::csrf(signed))
                label for="eventType" { "Test event" }
                select #eventType name="eventType" { @for t in TEST_TYPES { option value=(t) { (t) } } }
                " " button.secondary type="submit" { "Send test" }
            }
            form method="post" action=(format!("{path}/rotate")) data-confirm="Make a new signing secret? The old one keeps signing for 24 hours." {
                (view::csrf(signed))
                (view::once())
                button.secondary type="submit" { "Rotate secret" }
            }
            form method="post" action=(format!("{path}/recover")) {
                (view::csrf(signed))
                label for="since" { "Redeliver failures since" }
                input #since type="text" name="since" placeholder="2026-11-25T10:00:00Z";
                " " button.secondary type="submit" { "Recover" }
            }
        }
        h2 { "Deliveries" }
        form.filters method="get" {
            div {
                label for="status" { "Status" }
                select #status name="status" {
                    option value="" { "any" }
                    @for s in delivery_status::ALL { option value=(s) selected[status == Some(*s)] { (s) } }
                }
            }
            button.secondary type="submit" { "Filter" }
        }
        div #deliveries data-refresh="5" {
            @if page.items.is_empty() {
                div.empty { "No deliveries yet: they appear when the rule's events happen, or send a test above." }
            } @else {
                table {
                    thead { tr { th { "Created" } th { "Event" } th { "Status" } th { "Attempts" } th { "Response" } th { "Last error" } } }
                    tbody {
                        @for d in &page.items {
                            tr {
                                td { a href=(format!("{path}/deliveries/{}", d.id)) { (view::when(d.created_at)) } }
                                td { (d.event_type) }
                                td { (view::badge(&d.status)) }
                                td { (d.attempt_count) }
                                td { @if let Some(s) = d.response_status { (s) } }
                                td { @if let Some(e) = &d.last_error { span.muted { (e) } } }
                            }
                        }
                    }
                }
            }
        }
        (view::pager(&path, &[("status", status_filter)], page.next_cursor.as_deref()))
        h2 #edit { "YAML" }
        (view::YamlForm { action: &path, label: "Event rule YAML", text: &yaml, error: save_error, button: "Save", extra: html! {} }.render(signed))
    };
    let code = view::status_for(matches!(shown, Shown::SaveRefused { .. }));
    Ok(view::render(
        code,
        &format!("Event rule {id}"),
        Some(signed),
        Some(project),
        body,
    ))
}

async fn save(
    req: HttpRequest,
    post: Post,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let signed = &post.signed;
    let (project, rule) = target(&req, signed, &gw).await.in_page(signed)?;
    let text = post.raw("yaml");
    match gw
        .put_event_rule(&project, &rule, text, BodyFormat::Yaml, false)
        .await
    {
        Ok(_) => Ok(view::see_other(&rule_path(&project, rule.as_str()))),
        Err(e) if e.status() < 500 => {
            let shown = Shown::SaveRefused {
                error: e.public_message(),
                text,
            };
            rule_page(signed, &gw, &project, &rule, None, shown)
                .await
                .in_page(signed)
        }
        Err(e) => Err(e).in_page(signed),
    }
}

/// Enabling or disabling is a PUT of the same rule with `enabled` changed, as `triggerd apply`
/// would do it.
async fn set_enabled(
    req: HttpRequest,
    post: Post,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let signed = &post.signed;
    let (project, rule) = target(&req, signed, &gw).await.in_page(signed)?;
    let enabled = crate::http::bool_param(&post.fields, "enabled").in_page(signed)?;
    let mut spec = gw
        .get_event_rule(&project, &rule)
        .await
        .in_page(signed)?
        .spec;
    spec.enabled = enabled;
    let text = serde_json::to_string(&spec)
        .map_err(|e| {
            Error::InvalidRequest(format!(
                "Invalid request: the rule could not be written: {e}"
            ))
        })
        .in_page(signed)?;
    gw.put_event_rule(&project, &rule, &text, BodyFormat::Json, false)
        .await
        .in_page(signed)?;
    Ok(view::see_other(&rule_path(&project, rule.as_str())))
}

async fn test(
    req: HttpRequest,
    post: Post,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let signed = &post.signed;
    let (project, rule) = target(&req, signed, &gw).await.in_page(signed)?;
    let event_type = Some(post.field("eventType")).filter(|t| !t.is_empty());
    let d = gw
        .test_event_rule(&project, &rule, event_type)
        .await
        .in_page(signed)?;
    Ok(view::see_other(&format!(
        "{}/deliveries/{}",
        rule_path(&project, rule.as_str()),
        d.id
    )))
}

async fn rotate(
    req: HttpRequest,
    post: Post,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let signed = &post.signed;
    let (project, rule) = target(&req, signed, &gw).await.in_page(signed)?;
    post.once(&gw).await?;
    let rotated = gw
        .rotate_event_rule_secret(&project, &rule)
        .await
        .in_page(signed)?;
    rule_page(
        signed,
        &gw,
        &project,
        &rule,
        None,
        Shown::Secret(rotated.signing_secret),
    )
    .await
    .in_page(signed)
}

async fn recover(
    req: HttpRequest,
    post: Post,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let signed = &post.signed;
    let (project, rule) = target(&req, signed, &gw).await.in_page(signed)?;
    let since = chrono::DateTime::parse_from_rfc3339(post.field("since"))
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            Error::InvalidRequest(
                "Invalid request: since must be an RFC 3339 time, such as 2026-11-25T10:00:00Z"
                    .into(),
            )
        })
        .in_page(signed)?;
    let queued = gw
        .recover_deliveries(&project, &rule, since)
        .await
        .in_page(signed)?;
    let notice = format!("{queued} failed deliveries queued again.");
    rule_page(signed, &gw, &project, &rule, None, Shown::Notice(notice))
        .await
        .in_page(signed)
}

async fn delivery(
    req: HttpRequest,
    signed: Signed,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let (project, rule) = target(&req, &signed, &gw).await.in_page(&signed)?;
    let id = req.match_info().get("id").unwrap_or("");
    let d = gw
        .delivery(&project, &rule, id, ATTEMPTS)
        .await
        .in_page(&signed)?;
    let path = rule_path(&project, rule.as_str());
    let body = html! {
        p { a href=(path) { "← Event rule " (rule) } }
        dl.grid {
            dt { "Status" } dd { (view::badge(&d.status)) }
            dt { "Event" } dd { (d.event_type) " · " code { (d.webhook_id) } }
            dt { "Created" } dd { (view::when(d.created_at)) }
            dt { "Attempts" } dd { (d.attempt_count) }
            @if let Some(t) = d.next_attempt_at { dt { "Next attempt" } dd { (view::when(t)) } }
            @if let Some(e) = &d.last_error { dt { "Last error" } dd { (e) } }
        }
        div.actions {
            form method="post" action=(format!("{path}/deliveries/{}/redeliver", d.id)) {
                (view::csrf(&signed))
                button type="submit" { "Redeliver" }
            }
        }
        h2 { "Attempts" }
        @match &d.attempts {
            Some(attempts) if !attempts.is_empty() => {
                @for a in attempts {
                    section.stage aria-label=(format!("Attempt {}", a.attempt)) {
                        h3 { "Attempt " (a.attempt) " "
                            @match a.response_status { Some(s) => (view::badge(&s.to_string())), None => (view::badge("no response")) }
                            " " (view::when(a.started_at)) " · " (a.duration_ms) "ms" }
                        p { code { "POST " (a.url) } }
                        @if let Some(e) = &a.error { (view::error_box(e)) }
                        details { summary { "Request headers" } pre { (view::pretty(&a.request_headers)) } }
                        @if let Some(h) = &a.response_headers { details { summary { "Response headers" } pre { (view::pretty(h)) } } }
                        @if let Some(b) = &a.response_body { details open { summary { "Response body" } pre { (b) } } }
                    }
                }
            },
            _ => p.muted { "No attempt yet." },
        }
        @if let Some(p) = &d.payload { h2 { "Body sent" } pre { (view::pretty(p)) } }
    };
    Ok(view::ok("Delivery", &signed, Some(&project), body))
}

async fn redeliver(
    req: HttpRequest,
    post: Post,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let signed = &post.signed;
    let (project, rule) = target(&req, signed, &gw).await.in_page(signed)?;
    let id = req.match_info().get("id").unwrap_or("");
    let d = gw.redeliver(&project, &rule, id).await.in_page(signed)?;
    Ok(view::see_other(&format!(
        "{}/deliveries/{}",
        rule_path(&project, rule.as_str()),
        d.id
    )))
}
