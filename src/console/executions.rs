//! Events and executions: the lists (filtered, paged, kept up to date while open), an event's
//! page (where `uiUrl` leads: why it fired or did not), an execution's stage and step graph with
//! live step logs, and approve, reject, abort, pause and resume.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};

use super::projects::readable_project;
use super::{project_path, view, ConsoleError, InPage as _, Post, Signed};
use crate::domain::ids::{EventId, ProjectRef};
use crate::error::Error;
use crate::service::executions::step_ended;
use crate::service::intake::EVENT_STATUSES;
use crate::service::{require_manage, Gateway};
use crate::store::executions::{status, Control, ExecutionFilter, RunState, StepRecord};
use crate::store::{json_tree, EventFilter};

const P: &str = "/accounts/{acc}/orgs/{org}/projects/{proj}";
const X: &str = "/accounts/{acc}/orgs/{org}/projects/{proj}/executions/{id}";
/// Rows per page of the lists.
const PAGE: u32 = 25;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource(format!("{P}/events")).route(web::get().to(events)))
        .service(super::resource(format!("{P}/events/{{event}}")).route(web::get().to(event)))
        .service(super::resource(format!("{P}/executions")).route(web::get().to(executions)))
        .service(super::resource(X).route(web::get().to(execution)))
        .service(
            super::resource(format!("{X}/logs/{{stage}}/{{step}}")).route(web::get().to(step_log)),
        )
        .service(
            super::resource(format!("{X}/logs/{{stage}}/{{step}}/lines"))
                .route(web::get().to(log_lines)),
        )
        .service(super::resource(format!("{X}/{{action}}")).route(web::post().to(control)));
}

/// A filter's value from the query, empty when absent.
fn param<'q>(q: &'q HashMap<String, String>, name: &str) -> &'q str {
    q.get(name).map_or("", |v| v.trim())
}

/// A `<select>` of a filter: "any", then each accepted value.
fn select(name: &str, label: &str, values: &[&str], chosen: &str) -> Markup {
    html! {
        div {
            label for=(name) { (label) }
            select id=(name) name=(name) {
                option value="" { "any" }
                @for v in values { option value=(v) selected[v.eq_ignore_ascii_case(chosen)] { (v) } }
            }
        }
    }
}

async fn events(
    req: HttpRequest,
    signed: Signed,
    q: web::Query<HashMap<String, String>>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let project = readable_project(&req, &signed, &gw)
        .await
        .in_page(&signed)?;
    let filter = EventFilter {
        pipeline: crate::http::identifier_filter(&q, "pipelineIdentifier")
            .in_page(&signed)?
            .map(|p| p.to_string()),
        trigger: crate::http::identifier_filter(&q, "triggerIdentifier")
            .in_page(&signed)?
            .map(|t| t.to_string()),
        status: crate::http::enum_filter(&q, "status", EVENT_STATUSES).in_page(&signed)?,
    };
    let cursor = q.get("cursor").map(String::as_str);
    let page = gw
        .store
        .list_events(&project, &filter, cursor, PAGE)
        .await
        .in_page(&signed)?;
    let base = project_path(&project);
    let (pipeline, trigger, state) = (
        param(&q, "pipelineIdentifier"),
        param(&q, "triggerIdentifier"),
        param(&q, "status"),
    );
    let body = html! {
        form.filters method="get" {
            div { label for="pipelineIdentifier" { "Pipeline" } input type="text" id="pipelineIdentifier" name="pipelineIdentifier" value=(pipeline); }
            div { label for="triggerIdentifier" { "Trigger" } input type="text" id="triggerIdentifier" name="triggerIdentifier" value=(trigger); }
            (select("status", "Status", EVENT_STATUSES, state))
            button.secondary type="submit" { "Filter" }
        }
        div #events data-refresh="5" {
            @if page.items.is_empty() {
                div.empty { @if filter.pipeline.is_some() || filter.trigger.is_some() || filter.status.is_some() { "No events match these filters." } @else {
                    "No events yet: fire a trigger's cURL (see " a href=(format!("{base}/triggers")) { "Triggers" } ")." } }
            } @else {
                table {
                    thead { tr { th { "Received" } th { "Trigger" } th { "Status" } th { "Message" } th { "Execution" } } }
                    tbody {
                        @for e in &page.items {
                            tr {
                                td { a href=(format!("{base}/events/{}", e.event_id)) { (view::when(e.created_at)) } }
                                td { a href=(format!("{base}/pipelines/{}/triggers/{}", e.pipeline, e.trigger)) { (e.pipeline) "/" (e.trigger) } }
                                td { (view::badge(&e.status)) }
                                td { (e.message) }
                                td { @match &e.plan_execution_id { Some(x) => a href=(format!("{base}/executions/{x}")) { "open" }, None => span.muted { "—" } } }
                            }
                        }
                    }
                }
            }
        }
        (view::pager(&format!("{base}/events"), &[("pipelineIdentifier", pipeline), ("triggerIdentifier", trigger), ("status", state)], page.next_cursor.as_deref()))
    };
    Ok(view::ok("Events", &signed, Some(&project), body))
}

/// An event of the project; another project's event is not found here.
async fn event(
    req: HttpRequest,
    signed: Signed,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let project = readable_project(&req, &signed, &gw)
        .await
        .in_page(&signed)?;
    let given = req.match_info().get("event").unwrap_or("");
    let missing = || {
        Error::NotFound(format!(
            "Event {} does not exist in {project}",
            crate::domain::ids::truncate_for_message(given)
        ))
    };
    let e = match EventId::parse(given) {
        Some(id) => gw.store.get_event(&id).await.in_page(&signed)?,
        None => None,
    }
    .filter(|e| e.scope == project)
    .ok_or_else(missing)
    .in_page(&signed)?;
    let base = project_path(&project);
    // Retention purges executions before their events: a missing one is said so, not a 404.
    let run = match &e.plan_execution_id {
        Some(x) => match gw.execution(&project, x.as_str()).await {
            Ok(run) => Some(run),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e).in_page(&signed),
        },
        None => None,
    };
    let body = html! {
        dl.grid {
            dt { "Status" } dd { (view::badge(&e.status)) }
            dt { "Why" } dd { (e.message) }
            dt { "Trigger" } dd { a href=(format!("{base}/pipelines/{}/triggers/{}", e.pipeline, e.trigger)) { (e.pipeline) "/" (e.trigger) } }
            dt { "Received" } dd { (view::when(e.created_at)) }
            @if let Some(k) = &e.idempotency_key { dt { "Idempotency-Key" } dd { code { (k) } } }
            dt { "Status URL" } dd { code { (crate::service::links::api_url(&gw.public_url, e.event_id.as_str(), e.scope.account.as_str())) } }
        }
        h2 { "Conditions" }
        (view::conditions(&json_tree(&e.condition_results)))
        h2 { "Execution" }
        @match &run {
            Some(run) => {
                p { (view::badge(&run.execution.status)) " "
                    a href=(format!("{base}/executions/{}", run.execution.plan_execution_id)) { "Execution " (run.execution.plan_execution_id) }
                    " · run #" (run.execution.run_sequence) }
                (graph(&base, run))
            },
            None => p.muted {
                @if e.plan_execution_id.is_some() { "Its execution is no longer kept (retention)." }
                @else { "This event started no execution." }
            },
        }
        h2 { "Payload" }
        pre { (view::pretty_text(&e.payload)) }
        h2 { "Headers" }
        pre { (view::pretty(&json_tree(&e.headers))) }
        @if !e.runtime_input.is_empty() {
            h2 { "Runtime input" }
            pre { (e.runtime_input) }
        }
    };
    Ok(view::ok(
        &format!("Event {}", e.event_id),
        &signed,
        Some(&project),
        body,
    ))
}

async fn executions(
    req: HttpRequest,
    signed: Signed,
    q: web::Query<HashMap<String, String>>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let project = readable_project(&req, &signed, &gw)
        .await
        .in_page(&signed)?;
    let filter = ExecutionFilter {
        pipeline: crate::http::identifier_filter(&q, "pipelineIdentifier")
            .in_page(&signed)?
            .map(|p| p.to_string()),
        status: crate::http::enum_filter(&q, "status", status::EXECUTION).in_page(&signed)?,
    };
    let cursor = q.get("cursor").map(String::as_str);
    let page = gw
        .store
        .list_executions(&project, &filter, cursor, PAGE)
        .await
        .in_page(&signed)?;
    let base = project_path(&project);
    let (pipeline, state) = (param(&q, "pipelineIdentifier"), param(&q, "status"));
    let body = html! {
        form.filters method="get" {
            div { label for="pipelineIdentifier" { "Pipeline" } input type="text" id="pipelineIdentifier" name="pipelineIdentifier" value=(pipeline); }
            (select("status", "Status", status::EXECUTION, state))
            button.secondary type="submit" { "Filter" }
        }
        div #executions data-refresh="3" {
            @if page.items.is_empty() {
                div.empty { @if filter.pipeline.is_some() || filter.status.is_some() { "No executions match these filters." } @else {
                    "No executions yet: fire a trigger (see " a href=(format!("{base}/triggers")) { "Triggers" } ") or run a pipeline (see "
                    a href=(format!("{base}/pipelines")) { "Pipelines" } ")." } }
            } @else {
                table {
                    thead { tr { th { "Execution" } th { "Pipeline" } th { "Status" } th { "Started by" } th { "Queued" } th { "Duration" } } }
                    tbody {
                        @for x in &page.items {
                            tr {
                                td { a href=(format!("{base}/executions/{}", x.plan_execution_id)) { "#" (x.run_sequence) " " code { (x.plan_execution_id.as_str().get(..8).unwrap_or("")) } } }
                                td { (x.pipeline) }
                                td { (view::badge(&x.status)) }
                                td { @match &x.trigger { Some(t) => { "trigger " (t) }, None => { (x.trigger_type.to_lowercase()) } } }
                                td { (view::when(x.created_at)) }
                                td { (view::duration(x.started_at, x.ended_at)) }
                            }
                        }
                    }
                }
            }
        }
        (view::pager(&format!("{base}/executions"), &[("pipelineIdentifier", pipeline), ("status", state)], page.next_cursor.as_deref()))
    };
    Ok(view::ok("Executions", &signed, Some(&project), body))
}

/// The stage and step graph of a run: each stage's steps with status, duration, outputs and log.
fn graph(base: &str, run: &RunState) -> Markup {
    let x = &run.execution.plan_execution_id;
    let mut stages: Vec<(&str, &str, Vec<&StepRecord>)> = Vec::new();
    for s in &run.steps {
        match stages.last_mut() {
            Some((id, _, steps)) if *id == s.stage => steps.push(s),
            _ => stages.push((&s.stage, &s.stage_name, vec![s])),
        }
    }
    html! {
        div.stages {
            @for (id, name, steps) in &stages {
                @let state = stage_status(steps);
                section.stage aria-label=(format!("Stage {name}")) {
                    h3 { (name) " " (view::badge(state)) }
                    table {
                        thead { tr { th { "Step" } th { "Type" } th { "Status" } th { "Attempt" } th { "Duration" } th { "Outputs" } th { "Log" } } }
                        tbody {
                            @for s in steps {
                                tr data-step=(format!("{id}/{}", s.step)) {
                                    td { (s.step_name) @if let Some(m) = &s.message { br; span.muted { (m) } } }
                                    td { (s.step_type) }
                                    td { (view::badge(&s.status)) }
                                    td { (s.attempt) }
                                    td { (view::duration(s.started_at, s.ended_at)) }
                                    td { @for (k, v) in &s.outputs { code { (k) "=" (v) } br; } }
                                    td { @if has_log(s) { a href=(format!("{base}/executions/{x}/logs/{id}/{}", s.step)) { "log" } } }
                                }
                            }
                        }
                    }
                }
            }
            @if stages.is_empty() { p.muted { "No steps yet." } }
        }
    }
}

fn has_log(s: &StepRecord) -> bool {
    matches!(s.step_type.as_str(), "Run" | "Http") && s.started_at.is_some()
}

/// A stage's status from its steps: the first that is not a success, else success.
fn stage_status<'a>(steps: &[&'a StepRecord]) -> &'a str {
    steps
        .iter()
        .map(|s| s.status.as_str())
        .find(|s| *s != status::SUCCESS)
        .unwrap_or(status::SUCCESS)
}

async fn execution(
    req: HttpRequest,
    signed: Signed,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let project = readable_project(&req, &signed, &gw)
        .await
        .in_page(&signed)?;
    let id = req.match_info().get("id").unwrap_or("");
    let run = gw.execution(&project, id).await.in_page(&signed)?;
    execution_page(&signed, &project, &run)
}

fn execution_page(
    signed: &Signed,
    project: &ProjectRef,
    run: &RunState,
) -> Result<HttpResponse, ConsoleError> {
    let base = project_path(project);
    let x = &run.execution;
    let path = format!("{base}/executions/{}", x.plan_execution_id);
    let manages = require_manage(&signed.principal, &project.account).is_ok();
    let running: Vec<&StepRecord> = run
        .steps
        .iter()
        .filter(|s| s.status == status::RUNNING && has_log(s))
        .collect();
    let action = |name: &str, label: &str, class: &str| {
        html! {
            form method="post" action=(format!("{path}/{name}")) {
                (view::csrf(signed))
                button class=(class) type="submit" { (label) }
            }
        }
    };
    let body = html! {
        div #summary data-refresh=[(!status::is_terminal(&x.status)).then_some("3")] {
            dl.grid {
                dt { "Status" } dd { (view::badge(&x.status)) }
                dt { "Pipeline" } dd { a href=(format!("{base}/pipelines/{}", x.pipeline)) { (x.pipeline_name) } " · run #" (x.run_sequence) }
                dt { "Started by" } dd {
                    @match (&x.trigger, &x.event_id) {
                        (Some(t), Some(e)) => { "trigger " a href=(format!("{base}/pipelines/{}/triggers/{t}", x.pipeline)) { (t) } ", " a href=(format!("{base}/events/{e}")) { "event " (e) } },
                        _ => { (x.trigger_type.to_lowercase()) },
                    }
                }
                dt { "Queued" } dd { (view::when(x.created_at)) }
                dt { "Started" } dd { (view::when_opt(x.started_at)) }
                dt { "Duration" } dd { (view::duration(x.started_at, x.ended_at)) }
            }
            @if let Some(m) = &run.failure_message { (view::error_box(m)) }
            @if manages && !status::is_terminal(&x.status) {
                div.actions {
                    @if x.status == status::APPROVAL_WAITING {
                        form method="post" action=(format!("{path}/approve")) {
                            (view::csrf(signed))
                            label for="comment" { "Comment" }
                            input #comment type="text" name="comment";
                            button type="submit" { "Approve" }
                            " "
                            button.danger type="submit" formaction=(format!("{path}/reject")) { "Reject" }
                        }
                    }
                    @if x.status == status::PAUSED { (action("resume", "Resume", "secondary")) }
                    @else { (action("pause", "Pause", "secondary")) }
                    (action("abort", "Abort", "danger"))
                }
            }
            h2 { "Stages" }
            (graph(&base, run))
        }
        @for s in &running {
            h2 { "Live log: " (s.step_name) }
            (live_log(&path, s))
        }
        @if !x.runtime_input.is_empty() {
            h2 { "Runtime input" }
            pre { (x.runtime_input) }
        }
    };
    Ok(view::ok(
        &format!("Execution #{} of {}", x.run_sequence, x.pipeline),
        signed,
        Some(project),
        body,
    ))
}

/// A step's log that fills itself while the step runs (the script polls `.../lines`).
fn live_log(execution_path: &str, s: &StepRecord) -> Markup {
    let id = format!("log-{}-{}", s.stage, s.step);
    let url = format!("{execution_path}/logs/{}/{}/lines", s.stage, s.step);
    html! {
        p.muted id=(format!("{id}-state")) role="status" { "Step " (s.status) "." }
        pre.log id=(id) data-log=(url) tabindex="0" aria-label=(format!("Log of {}", s.step_name)) {
            (s.log.as_deref().unwrap_or(""))
        }
    }
}

/// A step's log page: the stored log once it ended, the live one while it runs.
async fn step_log(
    req: HttpRequest,
    signed: Signed,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let project = readable_project(&req, &signed, &gw)
        .await
        .in_page(&signed)?;
    let run = gw
        .execution(&project, req.match_info().get("id").unwrap_or(""))
        .await
        .in_page(&signed)?;
    let (stage, step) = (
        req.match_info().get("stage").unwrap_or(""),
        req.match_info().get("step").unwrap_or(""),
    );
    let plan = &run.execution.plan_execution_id;
    let mut record = gw.find_step(plan, stage, step).await.in_page(&signed)?;
    if !step_ended(&record.status) || record.log.is_none() {
        // The lines so far, for reading without the script.
        let page = gw.log_page(plan, &record, -1).await.in_page(&signed)?;
        let mut text = String::new();
        for l in &page.lines {
            text.push_str(&l.text);
            text.push('\n');
        }
        if !page.lines.is_empty() || record.log.is_none() {
            record.log = Some(text);
        }
    }
    let base = project_path(&project);
    let path = format!("{base}/executions/{plan}");
    let body = html! {
        p { a href=(path) { "← Execution #" (run.execution.run_sequence) } " · " (view::badge(&record.status)) " · attempt " (record.attempt) " · " (view::duration(record.started_at, record.ended_at)) }
        (live_log(&path, &record))
    };
    Ok(view::ok(
        &format!("Log of {}", record.step_name),
        &signed,
        Some(&project),
        body,
    ))
}

/// `.../lines?after=SEQ`: the next live lines, as the API's `?format=json` gives them.
async fn log_lines(
    req: HttpRequest,
    signed: Signed,
    q: web::Query<HashMap<String, String>>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let project = readable_project(&req, &signed, &gw).await?;
    let after = crate::http::after_param(&q)?;
    let run = gw
        .execution(&project, req.match_info().get("id").unwrap_or(""))
        .await?;
    let plan = &run.execution.plan_execution_id;
    let record = gw
        .find_step(
            plan,
            req.match_info().get("stage").unwrap_or(""),
            req.match_info().get("step").unwrap_or(""),
        )
        .await?;
    let page = gw.log_page(plan, &record, after).await?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(page))
}

/// Approve, reject, abort, pause or resume, as `POST .../executions/{id}/{action}` does.
async fn control(
    req: HttpRequest,
    post: Post,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let signed = &post.signed;
    let project = readable_project(&req, signed, &gw).await.in_page(signed)?;
    require_manage(&signed.principal, &project.account).in_page(signed)?;
    let control = Control::from_action(req.match_info().get("action").unwrap_or(""))
        .ok_or_else(|| {
            Error::NotFound(
                "There is no such action; the actions are abort, pause, resume, approve and reject"
                    .into(),
            )
        })
        .in_page(signed)?;
    let comment = Some(post.field("comment").to_owned()).filter(|c| !c.is_empty());
    let id = req.match_info().get("id").unwrap_or("");
    let run = gw
        .control_execution(&project, id, control, comment)
        .await
        .in_page(signed)?;
    Ok(view::see_other(&format!(
        "{}/executions/{}",
        project_path(&project),
        run.execution.plan_execution_id
    )))
}
