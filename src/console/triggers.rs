//! Triggers: the project's list with enable toggles and each one's last event; a trigger's page
//! with its webhook URL, "Copy as cURL", its recent events and why each did or did not fire,
//! "Send test payload" (through the real intake, optionally as a dry run), and its YAML.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::html;

use super::pipelines::yaml_identifier;
use super::projects::managed_project;
use super::{project_path, view, ConsoleError, InPage as _, Post, Signed};
use crate::domain::ids::{Identifier, ProjectRef};
use crate::domain::BodyFormat;
use crate::error::Error;
use crate::service::intake::{Accepted, IntakeQuery, IntakeRequest};
use crate::service::Gateway;
use crate::store::{json_tree, EventFilter, WebhookEvent};

const P: &str = "/accounts/{acc}/orgs/{org}/projects/{proj}";
const T: &str = "/accounts/{acc}/orgs/{org}/projects/{proj}/pipelines/{pipe}/triggers/{trig}";
/// Pipelines whose triggers one page of the list shows, and triggers per pipeline.
const PIPELINES_PER_PAGE: u32 = 10;
const TRIGGERS_PER_PIPELINE: u32 = 50;
/// Events shown on a trigger's page.
const EVENTS_PER_PAGE: u32 = 20;
const SAMPLE_PAYLOAD: &str = "{\"sample_key\": \"sample_value\"}";

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource(format!("{P}/triggers"))
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        super::resource(T)
            .route(web::get().to(show))
            .route(web::post().to(save)),
    )
    .service(super::resource(format!("{T}/enabled")).route(web::post().to(set_enabled)))
    .service(super::resource(format!("{T}/test")).route(web::post().to(test)));
}

fn new_trigger(pipeline: &str) -> String {
    format!(
        "trigger:
  name: On push
  identifier: on_push
  enabled: true
  pipelineIdentifier: {pipeline}
  source:
    type: Webhook
    spec:
      type: Custom
      spec:
        payloadConditions: []
        headerConditions: []
"
    )
}

/// The trigger of a `T` path.
async fn target(
    req: &HttpRequest,
    signed: &Signed,
    gw: &Gateway,
) -> Result<(ProjectRef, Identifier, Identifier), ConsoleError> {
    let project = managed_project(req, signed, gw).await?;
    let pipeline = crate::http::path_identifier(req, "pipe", "pipelineIdentifier")?;
    let trigger = crate::http::path_identifier(req, "trig", "triggerIdentifier")?;
    Ok((project, pipeline, trigger))
}

fn trigger_path(project: &ProjectRef, pipeline: &str, trigger: &str) -> String {
    format!(
        "{}/pipelines/{pipeline}/triggers/{trigger}",
        project_path(project)
    )
}

async fn list(
    req: HttpRequest,
    signed: Signed,
    q: web::Query<std::collections::HashMap<String, String>>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let project = managed_project(&req, &signed, &gw).await.in_page(&signed)?;
    let cursor = q.get("cursor").map(String::as_str);
    let wanted = q.get("pipelineIdentifier").cloned().unwrap_or_default();
    list_page(&signed, &gw, &project, cursor, &wanted, None)
        .await
        .in_page(&signed)
}

async fn list_page(
    signed: &Signed,
    gw: &Gateway,
    project: &ProjectRef,
    cursor: Option<&str>,
    pipeline_hint: &str,
    draft: Option<(&str, &str)>,
) -> Result<HttpResponse, ConsoleError> {
    let pipelines = gw
        .store
        .list_pipelines(project, cursor, PIPELINES_PER_PAGE)
        .await?;
    let mut rows = Vec::new();
    for p in &pipelines.items {
        let triggers = gw
            .list_triggers(project, &p.identifier, None, TRIGGERS_PER_PIPELINE)
            .await?;
        for t in triggers.items {
            let last = last_event(gw, project, &t.pipeline_identifier, &t.identifier).await?;
            rows.push((t, last));
        }
    }
    let base = project_path(project);
    let first_pipeline = pipelines.items.first().map(|p| p.identifier.to_string());
    let template = new_trigger(if pipeline_hint.is_empty() {
        first_pipeline.as_deref().unwrap_or("my_pipeline")
    } else {
        pipeline_hint
    });
    let (error, text) = draft.map_or((None, template.as_str()), |(e, t)| (Some(e), t));
    let body = html! {
        @if rows.is_empty() && cursor.is_none() {
            div.empty {
                @if pipelines.items.is_empty() {
                    "No triggers yet, and no pipeline for one to start: "
                    a href=(format!("{base}/pipelines#new")) { "create a pipeline" } " first."
                } @else {
                    "No triggers yet: create one below. It gives you a URL to fire with one curl, such as "
                    code { "curl -X POST -H 'content-type: application/json' --url '" (gw.public_url) "/webhook/custom/<token>/v3?accountIdentifier=…' -d '{}'" }
                }
            }
        } @else {
            table #triggers {
                thead { tr { th { "Trigger" } th { "Pipeline" } th { "Enabled" } th { "Last event" } th { "Webhook URL" } } }
                tbody {
                    @for (t, last) in &rows {
                        @let path = trigger_path(project, &t.pipeline_identifier, &t.identifier);
                        tr {
                            td { a href=(path) { (t.identifier) } }
                            td { a href=(format!("{base}/pipelines/{}", t.pipeline_identifier)) { (t.pipeline_identifier) } }
                            td {
                                form.inline method="post" action=(format!("{path}/enabled")) {
                                    (view::csrf(signed))
                                    input type="hidden" name="enabled" value=(if t.enabled { "false" } else { "true" });
                                    input type="hidden" name="back" value="list";
                                    button.secondary type="submit" aria-label=(format!("{} trigger {}", if t.enabled { "Disable" } else { "Enable" }, t.identifier)) {
                                        @if t.enabled { "Enabled · disable" } @else { "Disabled · enable" }
                                    }
                                }
                            }
                            td {
                                @match last {
                                    Some(e) => { (view::badge(&e.status)) " " (view::when(e.created_at)) },
                                    None => span.muted { "none yet" },
                                }
                            }
                            td { code { (t.webhook_url) } }
                        }
                    }
                }
            }
            (view::pager(&format!("{base}/triggers"), &[], pipelines.next_cursor.as_deref()))
        }
        @if !pipelines.items.is_empty() {
            h2 #new { "New trigger" }
            p.hint { "Set " code { "pipelineIdentifier" } " to the pipeline it starts. Conditions and inputYaml follow DESIGN §4." }
            (view::YamlForm { action: &format!("{base}/triggers"), label: "Trigger YAML", text, error, button: "Create trigger", extra: html! {} }.render(signed))
        }
    };
    let status = view::status_for(error.is_some());
    Ok(view::render(
        status,
        "Triggers",
        Some(signed),
        Some(project),
        body,
    ))
}

/// The newest event of a trigger.
async fn last_event(
    gw: &Gateway,
    project: &ProjectRef,
    pipeline: &str,
    trigger: &str,
) -> Result<Option<WebhookEvent>, Error> {
    let filter = EventFilter {
        pipeline: Some(pipeline.to_owned()),
        trigger: Some(trigger.to_owned()),
        status: None,
    };
    let page = gw.store.list_events(project, &filter, None, 1).await?;
    Ok(page.items.into_iter().next())
}

async fn create(
    req: HttpRequest,
    post: Post,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let signed = &post.signed;
    let project = managed_project(&req, signed, &gw).await.in_page(signed)?;
    let text = post.raw("yaml");
    let stored = async {
        let id = yaml_identifier(text, "/trigger/identifier")?;
        let pipeline = yaml_identifier(text, "/trigger/pipelineIdentifier")?;
        if gw
            .store
            .get_trigger(&project, &pipeline, &id)
            .await?
            .is_some()
        {
            return Err(Error::Duplicate(format!(
                "Trigger {id} already exists on pipeline {pipeline}; edit it on its own page"
            )));
        }
        gw.put_trigger(&project, &pipeline, &id, text, BodyFormat::Yaml, false)
            .await?;
        Ok((pipeline, id))
    };
    match stored.await {
        Ok((pipeline, id)) => Ok(view::see_other(&trigger_path(
            &project,
            pipeline.as_str(),
            id.as_str(),
        ))),
        Err(e) if e.status() < 500 => list_page(
            signed,
            &gw,
            &project,
            None,
            "",
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
    q: web::Query<std::collections::HashMap<String, String>>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let (project, pipeline, trigger) = target(&req, &signed, &gw).await.in_page(&signed)?;
    let cursor = q.get("cursor").map(String::as_str);
    trigger_page(
        &signed,
        &gw,
        &project,
        &pipeline,
        &trigger,
        cursor,
        Shown::Plain,
    )
    .await
    .in_page(&signed)
}

/// What a trigger's page shows besides the trigger.
enum Shown<'a> {
    Plain,
    /// A refused edit, with the text as submitted.
    SaveRefused {
        error: String,
        text: &'a str,
    },
    /// The outcome of "Send test payload", with the form as submitted.
    Tested {
        outcome: Box<Result<Accepted, Error>>,
        payload: &'a str,
        headers: &'a str,
        dry_run: bool,
    },
}

async fn trigger_page(
    signed: &Signed,
    gw: &Gateway,
    project: &ProjectRef,
    pipeline: &Identifier,
    trigger: &Identifier,
    cursor: Option<&str>,
    shown: Shown<'_>,
) -> Result<HttpResponse, ConsoleError> {
    let t = gw
        .get_trigger(project, pipeline, trigger)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "Trigger {trigger} does not exist on pipeline {pipeline} in {project}"
            ))
        })?;
    let filter = EventFilter {
        pipeline: Some(pipeline.to_string()),
        trigger: Some(trigger.to_string()),
        status: None,
    };
    let events = gw
        .store
        .list_events(project, &filter, cursor, EVENTS_PER_PAGE)
        .await?;
    let path = trigger_path(project, pipeline.as_str(), trigger.as_str());
    let base = project_path(project);
    let (save_error, yaml) = match &shown {
        Shown::SaveRefused { error, text } => (Some(error.as_str()), (*text).to_owned()),
        _ => (None, t.yaml.clone()),
    };
    let (payload, headers, dry_run) = match &shown {
        Shown::Tested {
            payload,
            headers,
            dry_run,
            ..
        } => (*payload, *headers, *dry_run),
        _ => (SAMPLE_PAYLOAD, "", false),
    };
    let tested = match &shown {
        Shown::Tested { outcome, .. } => Some(outcome.as_ref()),
        _ => None,
    };
    let body = html! {
        p.hint {
            "Starts pipeline " a href=(format!("{base}/pipelines/{pipeline}")) { (pipeline) }
            " · updated " (view::when(t.updated_at)) " · "
            @if t.enabled { (view::badge("Enabled")) } @else { (view::badge("Disabled")) }
        }
        div.actions {
            form method="post" action=(format!("{path}/enabled")) {
                (view::csrf(signed))
                input type="hidden" name="enabled" value=(if t.enabled { "false" } else { "true" });
                button.secondary type="submit" { @if t.enabled { "Disable trigger" } @else { "Enable trigger" } }
            }
        }
        h2 { "Webhook" }
        (view::copyable("webhook-url", "Webhook URL", &t.webhook_url))
        (view::copyable("curl", "cURL", &t.curl))
        h2 #test { "Send test payload" }
        p.hint { "Sent through the real intake as you, with the same checks as a webhook. A dry run evaluates the conditions and stores nothing." }
        @if let Some(outcome) = tested {
            @match outcome {
                Ok(a) => {
                    div.notice role="status" #test-result {
                        p { (view::badge(&a.event.status)) " " (a.event.message) }
                        @if a.dry_run {
                            p.muted { "Dry run: nothing was stored or started." }
                        } @else {
                            p { a href=(format!("{base}/events/{}", a.event.event_id)) { "Event " (a.event.event_id) }
                                @if let Some(x) = &a.event.plan_execution_id {
                                    " · " a href=(format!("{base}/executions/{x}")) { "its execution" }
                                }
                            }
                        }
                        (view::conditions(&json_tree(&a.event.condition_results)))
                    }
                }
                Err(e) => { div #test-result { (view::error_box(&e.public_message())) } }
            }
        }
        form method="post" action=(format!("{path}/test")) {
            (view::csrf(signed))
            label for="payload" { "JSON payload" }
            textarea #payload name="payload" rows="8" spellcheck="false" { (payload) }
            label for="headers" { "Extra headers " span.muted { "(one " code { "Name: value" } " per line)" } }
            textarea #headers name="headers" rows="2" spellcheck="false" { (headers) }
            label.check { input type="checkbox" name="dryRun" value="true" checked[dry_run]; "Dry run" }
            div { button type="submit" { "Send" } }
        }
        h2 { "Recent events" }
        div #events data-refresh="5" {
            @if events.items.is_empty() && cursor.is_none() {
                div.empty { "No events yet: fire the cURL above, or send a test payload." }
            } @else {
                table {
                    thead { tr { th { "Received" } th { "Status" } th { "Why" } th { "Execution" } } }
                    tbody {
                        @for e in &events.items {
                            tr {
                                td { a href=(format!("{base}/events/{}", e.event_id)) { (view::when(e.created_at)) } }
                                td { (view::badge(&e.status)) }
                                td {
                                    details {
                                        summary { (e.message) }
                                        (view::conditions(&json_tree(&e.condition_results)))
                                    }
                                }
                                td {
                                    @match &e.plan_execution_id {
                                        Some(x) => a href=(format!("{base}/executions/{x}")) { "open" },
                                        None => span.muted { "—" },
                                    }
                                }
                            }
                        }
                    }
                }
                (view::pager(&path, &[], events.next_cursor.as_deref()))
            }
        }
        h2 #edit { "YAML" }
        (view::YamlForm { action: &path, label: "Trigger YAML", text: &yaml, error: save_error, button: "Save", extra: html! {} }.render(signed))
    };
    let status = match &shown {
        Shown::SaveRefused { .. } => StatusCode::BAD_REQUEST,
        Shown::Tested { outcome, .. } => match outcome.as_ref() {
            Ok(_) => StatusCode::OK,
            Err(e) => StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
        },
        _ => StatusCode::OK,
    };
    Ok(view::render(
        status,
        &format!("Trigger {trigger}"),
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
    let (project, pipeline, trigger) = target(&req, signed, &gw).await.in_page(signed)?;
    let text = post.raw("yaml");
    match gw
        .put_trigger(&project, &pipeline, &trigger, text, BodyFormat::Yaml, false)
        .await
    {
        Ok(_) => Ok(view::see_other(&trigger_path(
            &project,
            pipeline.as_str(),
            trigger.as_str(),
        ))),
        Err(e) if e.status() < 500 => {
            let shown = Shown::SaveRefused {
                error: e.public_message(),
                text,
            };
            trigger_page(signed, &gw, &project, &pipeline, &trigger, None, shown)
                .await
                .in_page(signed)
        }
        Err(e) => Err(e).in_page(signed),
    }
}

async fn set_enabled(
    req: HttpRequest,
    post: Post,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let signed = &post.signed;
    let (project, pipeline, trigger) = target(&req, signed, &gw).await.in_page(signed)?;
    let enabled = crate::http::bool_param(&post.fields, "enabled").in_page(signed)?;
    gw.set_trigger_enabled(&project, &pipeline, &trigger, enabled)
        .await
        .in_page(signed)?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "Trigger {trigger} does not exist on pipeline {pipeline} in {project}"
            ))
        })
        .in_page(signed)?;
    Ok(view::see_other(&if post.field("back") == "list" {
        format!("{}/triggers", project_path(&project))
    } else {
        trigger_path(&project, pipeline.as_str(), trigger.as_str())
    }))
}

/// "Send test payload": the real intake (v3, by the trigger's token), authorized as the signed-in
/// key, with `X-Trigger-Dry-Run` when asked.
async fn test(
    req: HttpRequest,
    post: Post,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let signed = &post.signed;
    let (project, pipeline, trigger) = target(&req, signed, &gw).await.in_page(signed)?;
    let record = gw
        .store
        .get_trigger(&project, &pipeline, &trigger)
        .await
        .in_page(signed)?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "Trigger {trigger} does not exist on pipeline {pipeline} in {project}"
            ))
        })
        .in_page(signed)?;
    let payload = post.raw("payload");
    let header_text = post.raw("headers");
    let dry_run = post.field("dryRun") == "true";
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    let mut bad_header = None;
    for line in header_text.lines().filter(|l| !l.trim().is_empty()) {
        match line.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => {
                let name = name.trim().to_ascii_lowercase();
                headers.retain(|(n, _)| *n != name);
                headers.push((name, value.trim().to_owned()));
            }
            _ => bad_header = Some(line),
        }
    }
    let outcome = match bad_header {
        Some(line) => Err(Error::InvalidRequest(format!(
            "Invalid request: header line '{}' is not of the form Name: value",
            crate::domain::ids::truncate_for_message(line)
        ))),
        None => {
            let request = IntakeRequest {
                query: IntakeQuery {
                    account: Some(project.account.to_string()),
                    org: Some(project.org.to_string()),
                    project: Some(project.project.to_string()),
                    pipeline: Some(pipeline.to_string()),
                    trigger: Some(trigger.to_string()),
                },
                api_key: None,
                signed_in: Some(&signed.principal),
                idempotency_key: None,
                headers,
                body: bytes::Bytes::copy_from_slice(payload.as_bytes()),
                source_ip: req.peer_addr().map(|a| a.ip()),
                dry_run,
            };
            crate::service::intake::custom_v3(&gw, &record.token, request).await
        }
    };
    if let Err(Error::Unexpected(cause)) = &outcome {
        tracing::error!(error = %cause, "a console test payload failed");
    }
    let shown = Shown::Tested {
        outcome: Box::new(outcome),
        payload,
        headers: header_text,
        dry_run,
    };
    trigger_page(signed, &gw, &project, &pipeline, &trigger, None, shown)
        .await
        .in_page(signed)
}
