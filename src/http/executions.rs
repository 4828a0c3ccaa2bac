//! Executions (DESIGN §3): `POST P/pipelines/{pipe}/execute`, `GET P/executions`,
//! `GET P/executions/{id}` and `GET P/executions/{id}/logs/{stage}/{step}`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::status::summary;
use super::{api_key, body, envelope, list_params, path_identifier, path_project, query, resource};
use crate::error::Error;
use crate::service::Gateway;
use crate::store::executions::{Control, ExecutionFilter};
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

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExecuteBody {
    input_yaml: Option<String>,
}

async fn execute(
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

async fn list(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    gw.authorize_read(api_key(&req), &project).await?;
    let q = query(&req);
    let (limit, cursor) = list_params(&q)?;
    let filter = ExecutionFilter {
        pipeline: q.get("pipelineIdentifier").cloned(),
        status: q.get("status").cloned(),
    };
    let page = gw
        .store
        .list_executions(&project, &filter, cursor, limit)
        .await?;
    Ok(envelope::page(
        page.items.iter().map(brief).collect(),
        page.next_cursor,
    ))
}

async fn detail(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    gw.authorize_read(api_key(&req), &project).await?;
    let id = req.match_info().get("id").unwrap_or("");
    let run = gw.execution(&project, id).await?;
    let base = format!(
        "/api/v1/accounts/{}/orgs/{}/projects/{}/executions/{}",
        project.account, project.org, project.project, run.execution.plan_execution_id
    );
    let steps: Vec<Value> = run
        .steps
        .iter()
        .map(|s| {
            json!({
                "stageIdentifier": s.stage,
                "stageName": s.stage_name,
                "stepIdentifier": s.step,
                "name": s.step_name,
                "type": s.step_type,
                "status": s.status,
                "attempt": s.attempt,
                "startTs": s.started_at,
                "endTs": s.ended_at,
                "outputs": s.outputs,
                "message": s.message,
                "logUrl": (matches!(s.step_type.as_str(), "Run" | "Http") && s.started_at.is_some())
                    .then(|| format!("{}{base}/logs/{}/{}", gw.public_url, s.stage, s.step)),
            })
        })
        .collect();
    Ok(envelope::ok(json!({
        "pipelineExecutionSummary": summary(&run),
        "runtimeInput": run.execution.runtime_input,
        "steps": steps,
    })))
}

async fn logs(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    gw.authorize_read(api_key(&req), &project).await?;
    let id = req.match_info().get("id").unwrap_or("");
    let stage = req.match_info().get("stage").unwrap_or("");
    let step = req.match_info().get("step").unwrap_or("");
    let run = gw.execution(&project, id).await?;
    let steps = gw
        .store
        .list_steps(&run.execution.plan_execution_id)
        .await?;
    let record = steps
        .iter()
        .find(|s| s.stage == stage && s.step == step)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "Execution {} has no step {} in stage {}",
                run.execution.plan_execution_id,
                crate::domain::ids::truncate_for_message(step),
                crate::domain::ids::truncate_for_message(stage)
            ))
        })?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(record.log.clone().unwrap_or_default()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ControlBody {
    comment: Option<String>,
}

/// `POST P/executions/{id}/abort|pause|resume|approve|reject` `{"comment"?}` (admin).
async fn control(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let project = path_project(&req)?;
    gw.authorize_manage(api_key(&req), &project.account).await?;
    let control = match req.match_info().get("action").unwrap_or("") {
        "abort" => Control::Abort,
        "pause" => Control::Pause,
        "resume" => Control::Resume,
        "approve" => Control::Approve,
        "reject" => Control::Reject,
        other => {
            return Err(Error::NotFound(format!(
                "No route for POST .../executions/{{id}}/{}; the actions are abort, pause, resume, approve and reject",
                crate::domain::ids::truncate_for_message(other)
            )))
        }
    };
    let body: ControlBody = body::read_optional_json(&req, payload, gw.body_limits).await?;
    let id = req.match_info().get("id").unwrap_or("");
    let run = gw
        .control_execution(&project, id, control, body.comment)
        .await?;
    Ok(envelope::ok(json!({
        "pipelineExecutionSummary": summary(&run),
    })))
}

/// An execution in a list: identity, status and times.
fn brief(x: &Execution) -> Value {
    json!({
        "planExecutionId": x.plan_execution_id,
        "pipelineIdentifier": x.pipeline,
        "name": x.pipeline_name,
        "status": x.status,
        "runSequence": x.run_sequence,
        "triggerType": x.trigger_type,
        "triggerIdentifier": x.trigger,
        "eventCorrelationId": x.event_id,
        "createdAt": x.created_at,
        "startTs": x.started_at,
        "endTs": x.ended_at,
    })
}
