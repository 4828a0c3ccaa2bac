//! Executions (DESIGN §3): `POST P/pipelines/{pipe}/execute`, `GET P/executions`,
//! `GET P/executions/{id}` and `GET P/executions/{id}/logs/{stage}/{step}`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::envelope::{PageBody, Success};
use super::openapi::params::{ListQuery, ProjectPath};
use super::status::{summary, PipelineExecutionSummary};
use super::{
    api_key, body, enum_filter, envelope, identifier_filter, list_params, path_identifier,
    path_project, query, resource,
};
use crate::domain::ids::PlanExecutionId;
use crate::error::Error;
use crate::service::executions::LogPage;
use crate::service::executions::{step_ended, LOG_PAGE_LINES};
use crate::service::Gateway;
use crate::store::executions::{status, Control, ExecutionFilter};
use crate::store::Execution;

const P: &str = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}";

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource(&format!("{P}/pipelines/{{pipe}}/execute")).route(web::post().to(execute)),
    )
    .service(resource(&format!("{P}/executions")).route(web::get().to(list)))
    .service(resource(&format!("{P}/executions/{{id}}")).route(web::get().to(detail)))
    .service(
        resource(&format!("{P}/executions/{{id}}/logs/{{stage}}/{{step}}"))
            .route(web::get().to(logs)),
    )
    .service(resource(&format!("{P}/executions/{{id}}/{{action}}")).route(web::post().to(control)));
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ExecuteBody {
    input_yaml: Option<String>,
}

/// Runs a pipeline now (`triggerType` MANUAL).
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/pipelines/{pipe}/execute",
    tag = "Executions",
    operation_id = "executePipeline",
    params(ProjectPath, ("pipe" = String, Path, description = "The pipeline identifier")),
    request_body(content = Option<ExecuteBody>, description = "Optional", content_type = "application/json"),
    responses((status = 200, description = "Queued", body = Success<ExecutionBrief>)),
    security(("apiKey" = []))
)]
pub(super) async fn execute(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    let pipeline = path_identifier(&req, "pipe", "pipelineIdentifier")?;
    gw.authorize_read(api_key(&req), &project).await?;
    let body: ExecuteBody = body::read_optional_json(&req, payload, gw.body_limits).await?;
    let execution = gw
        .execute_pipeline(&project, &pipeline, body.input_yaml.as_deref())
        .await?;
    Ok(envelope::ok(brief(&execution)))
}

/// Executions, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/executions",
    tag = "Executions",
    operation_id = "listExecutions",
    params(ProjectPath, ListQuery, ("pipelineIdentifier" = Option<String>, Query, description = "Only this pipeline's (empty: every pipeline)", pattern = r"^([A-Za-z_][A-Za-z0-9_]{0,127})?$"), ("status" = Option<String>, Query, description = "Only executions with this status (matched ignoring case)")),
    responses((status = 200, description = "A page", body = Success<PageBody<ExecutionBrief>>)),
    security(("apiKey" = []))
)]
pub(super) async fn list(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    gw.authorize_read(api_key(&req), &project).await?;
    let q = query(&req);
    let (limit, cursor) = list_params(&q)?;
    let filter = ExecutionFilter {
        pipeline: identifier_filter(&q, "pipelineIdentifier")?.map(|p| p.to_string()),
        status: enum_filter(&q, "status", status::EXECUTION)?,
    };
    gw.existing_project(&project).await?;
    let page = gw
        .store
        .list_executions(&project, &filter, cursor, limit)
        .await?;
    Ok(envelope::page(
        page.items.iter().map(brief).collect(),
        page.next_cursor,
    ))
}

/// An execution with its steps.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/executions/{id}",
    tag = "Executions",
    operation_id = "getExecution",
    params(ProjectPath, ("id" = String, Path, description = "The planExecutionId", pattern = r"^[A-Za-z0-9_-]{22}$")),
    responses((status = 200, description = "OK", body = Success<ExecutionDetail>)),
    security(("apiKey" = []))
)]
pub(super) async fn detail(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    gw.authorize_read(api_key(&req), &project).await?;
    let id = req.match_info().get("id").unwrap_or("");
    let run = gw.execution(&project, id).await?;
    let base = format!(
        "/api/v1/accounts/{}/orgs/{}/projects/{}/executions/{}",
        project.account, project.org, project.project, run.execution.plan_execution_id
    );
    let steps = run
        .steps
        .iter()
        .map(|s| StepDetail {
            stage_identifier: &s.stage,
            stage_name: &s.stage_name,
            step_identifier: &s.step,
            name: &s.step_name,
            kind: &s.step_type,
            status: &s.status,
            attempt: s.attempt,
            start_ts: s.started_at,
            end_ts: s.ended_at,
            outputs: &s.outputs,
            message: s.message.as_deref(),
            log_url: (matches!(s.step_type.as_str(), "Run" | "Http") && s.started_at.is_some())
                .then(|| format!("{}{base}/logs/{}/{}", gw.public_url, s.stage, s.step)),
        })
        .collect();
    Ok(envelope::ok(ExecutionDetail {
        pipeline_execution_summary: summary(&run),
        runtime_input: &run.execution.runtime_input,
        steps,
    }))
}

/// `GET P/executions/{id}/logs/{stage}/{step}`: the step's log as text (its stored log once
/// it ended, its live lines while it runs); `?format=json&after=SEQ` for the live lines with
/// their stream and time; `?follow=true` for text that streams until the step ends.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/executions/{id}/logs/{stage}/{step}",
    tag = "Executions",
    operation_id = "getStepLog",
    params(ProjectPath, ("id" = String, Path, description = "The planExecutionId", pattern = r"^[A-Za-z0-9_-]{22}$"), ("stage" = String, Path, description = "The stage identifier"), ("step" = String, Path, description = "The step identifier"), ("format" = Option<String>, Query, description = "`text` (the default) or `json`", pattern = "^(text|json)$"), ("after" = Option<i64>, Query, description = "Only lines after this seq"), ("follow" = Option<bool>, Query, description = "`true`: text that streams until the step ends")),
    responses((status = 200, description = "The step's output", content((String = "text/plain"), (Success<LogPage> = "application/json")))),
    security(("apiKey" = []))
)]
pub(super) async fn logs(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    gw.authorize_read(api_key(&req), &project).await?;
    let q = query(&req);
    let after = super::after_param(&q)?;
    let follow = super::bool_param(&q, "follow")?;
    let json = match q.get("format").map(String::as_str) {
        None | Some("" | "text") => false,
        Some("json") => true,
        Some(_) => {
            return Err(Error::InvalidRequest(
                "Invalid request: format must be text or json".into(),
            ))
        }
    };
    let id = req.match_info().get("id").unwrap_or("");
    let stage = req.match_info().get("stage").unwrap_or("").to_owned();
    let step = req.match_info().get("step").unwrap_or("").to_owned();
    let run = gw.execution(&project, id).await?;
    let plan = run.execution.plan_execution_id.clone();
    // The run's steps come without their logs (SQLite); this read has them.
    let record = gw.find_step(&plan, &stage, &step).await?;
    if json {
        return Ok(envelope::ok(gw.log_page(&plan, &record, after).await?));
    }
    let text = |body: String| {
        HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(body)
    };
    if !follow {
        if let Some(log) = record.log.filter(|_| step_ended(&record.status)) {
            return Ok(text(log));
        }
        let lines = gw
            .store
            .step_log(&plan, &stage, &step, after, LOG_PAGE_LINES)
            .await?;
        return Ok(text(join_lines(&lines)));
    }
    if step_ended(&record.status)
        && gw
            .store
            .step_log(&plan, &stage, &step, -1, 1)
            .await?
            .is_empty()
    {
        // Ended before live logs existed: its stored log is all there is.
        return Ok(text(record.log.unwrap_or_default()));
    }
    let state = Follow {
        gw,
        plan,
        stage,
        step,
        after,
        deadline: tokio::time::Instant::now() + FOLLOW_FOR_AT_MOST,
        done: false,
        streamed: after >= 0,
    };
    let stream = futures_util::stream::unfold(state, |mut f| async move {
        if f.done {
            return None;
        }
        loop {
            // The status first: lines written before the step ended are then all visible.
            let (ended, stored) = match f.gw.find_step(&f.plan, &f.stage, &f.step).await {
                Ok(record) => (step_ended(&record.status), record.log),
                Err(_) => (true, None),
            };
            let lines = match f
                .gw
                .store
                .step_log(&f.plan, &f.stage, &f.step, f.after, LOG_PAGE_LINES)
                .await
            {
                Ok(lines) => lines,
                Err(e) => {
                    f.done = true;
                    let note = format!("[triggerd] the log could not be read: {e}\n");
                    return Some((Ok::<_, actix_web::Error>(bytes::Bytes::from(note)), f));
                }
            };
            if let Some(last) = lines.last() {
                f.streamed = true;
                f.after = last.seq;
                f.done = ended && lines.len() < LOG_PAGE_LINES as usize;
                return Some((Ok(bytes::Bytes::from(join_lines(&lines))), f));
            }
            if ended && !f.streamed {
                // No live lines (an Http step, or the live log could not be written): the
                // stored log is what there is.
                f.done = true;
                return Some((Ok(bytes::Bytes::from(stored.unwrap_or_default())), f));
            }
            if ended || tokio::time::Instant::now() >= f.deadline {
                return None;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream))
}

/// How often a follower looks for new lines.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(250);
/// A follow ends after this long even if the step has not (the client may follow again).
const FOLLOW_FOR_AT_MOST: std::time::Duration = std::time::Duration::from_secs(3600);

struct Follow {
    gw: web::Data<Gateway>,
    plan: PlanExecutionId,
    stage: String,
    step: String,
    after: i64,
    deadline: tokio::time::Instant,
    done: bool,
    /// Whether any live line was (or, with `after`, had been) sent.
    streamed: bool,
}

fn join_lines(lines: &[crate::store::executions::LogLine]) -> String {
    let mut text = String::new();
    for l in lines {
        text.push_str(&l.text);
        text.push('\n');
    }
    text
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ControlBody {
    comment: Option<String>,
}

/// `POST P/executions/{id}/abort|pause|resume|approve|reject` `{"comment"?}` (admin).
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{acc}/orgs/{org}/projects/{proj}/executions/{id}/{action}",
    tag = "Executions",
    operation_id = "controlExecution",
    params(ProjectPath, ("id" = String, Path, description = "The planExecutionId", pattern = r"^[A-Za-z0-9_-]{22}$"), ("action" = String, Path, description = "abort, pause, resume, approve or reject", pattern = "^(abort|pause|resume|approve|reject)$")),
    request_body(content = Option<ControlBody>, description = "Optional", content_type = "application/json"),
    responses((status = 200, description = "OK", body = Success<ControlResult>)),
    security(("apiKey" = []))
)]
pub(super) async fn control(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    gw.authorize_manage(api_key(&req), &project.account).await?;
    let action = req.match_info().get("action").unwrap_or("");
    let control = Control::from_action(action).ok_or_else(|| {
        Error::NotFound(format!(
            "No route for POST .../executions/{{id}}/{}; the actions are abort, pause, resume, approve and reject",
            crate::domain::ids::truncate_for_message(action)
        ))
    })?;
    let body: ControlBody = body::read_optional_json(&req, payload, gw.body_limits).await?;
    let id = req.match_info().get("id").unwrap_or("");
    let run = gw
        .control_execution(&project, id, control, body.comment)
        .await?;
    Ok(envelope::ok(ControlResult {
        pipeline_execution_summary: summary(&run),
    }))
}

/// `data` of `GET P/executions/{id}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ExecutionDetail<'a> {
    /// The execution.
    pipeline_execution_summary: PipelineExecutionSummary<'a>,
    /// The runtime input YAML.
    #[schema(value_type = String)]
    runtime_input: &'a str,
    /// Every step, in order.
    steps: Vec<StepDetail<'a>>,
}

/// A step of an execution.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct StepDetail<'a> {
    /// The stage.
    #[schema(value_type = String)]
    stage_identifier: &'a str,
    /// The stage's name.
    #[schema(value_type = String)]
    stage_name: &'a str,
    /// The step.
    #[schema(value_type = String)]
    step_identifier: &'a str,
    /// The step's name.
    #[schema(value_type = String)]
    name: &'a str,
    /// `Run`, `Http`, `Wait`, `Approval`, ...
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    kind: &'a str,
    /// The step's status.
    #[schema(value_type = String)]
    status: &'a str,
    /// The attempt (retries count up).
    attempt: u32,
    /// Epoch milliseconds.
    start_ts: Option<i64>,
    /// Epoch milliseconds.
    end_ts: Option<i64>,
    /// Its outputs.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    outputs: &'a std::collections::BTreeMap<String, String>,
    /// Why it failed, or a note.
    #[schema(value_type = Option<String>)]
    message: Option<&'a str>,
    /// Its log, for Run and Http steps that started.
    log_url: Option<String>,
}

/// `data` of a control action.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ControlResult<'a> {
    /// The execution after the action.
    pipeline_execution_summary: PipelineExecutionSummary<'a>,
}

/// An execution in a list: identity, status and times.
fn brief(x: &Execution) -> ExecutionBrief<'_> {
    ExecutionBrief {
        plan_execution_id: x.plan_execution_id.as_str(),
        pipeline_identifier: &x.pipeline,
        name: &x.pipeline_name,
        status: &x.status,
        run_sequence: x.run_sequence,
        trigger_type: &x.trigger_type,
        trigger_identifier: x.trigger.as_deref(),
        event_correlation_id: x.event_id.as_deref(),
        created_at: x.created_at,
        start_ts: x.started_at,
        end_ts: x.ended_at,
    }
}

/// An execution in a list; also `data` of a manual run.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ExecutionBrief<'a> {
    /// The execution id.
    #[schema(value_type = String)]
    plan_execution_id: &'a str,
    /// The pipeline.
    #[schema(value_type = String)]
    pipeline_identifier: &'a str,
    /// The pipeline's name.
    #[schema(value_type = String)]
    name: &'a str,
    /// Its status.
    #[schema(value_type = String)]
    status: &'a str,
    /// The pipeline's run number.
    run_sequence: i64,
    /// `WEBHOOK_CUSTOM` or `MANUAL`.
    #[schema(value_type = String)]
    trigger_type: &'a str,
    /// The trigger, for a webhook run.
    #[schema(value_type = Option<String>)]
    trigger_identifier: Option<&'a str>,
    /// The event, for a webhook run.
    #[schema(value_type = Option<String>)]
    event_correlation_id: Option<&'a str>,
    /// Epoch milliseconds.
    created_at: i64,
    /// Epoch milliseconds.
    start_ts: Option<i64>,
    /// Epoch milliseconds.
    end_ts: Option<i64>,
}
