//! `GET /webhook/triggerExecutionDetails/{eventCorrelationId}` (DESIGN §2.3).

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::{api_key, envelope, query, resource};
use crate::domain::pipeline::PipelineSpec;
use crate::error::Error;
use crate::service::intake::{self, EventStatus};
use crate::service::Gateway;
use crate::store::executions::{status, RunState};

/// Longest long poll, in seconds.
const MAX_WAIT_SECS: u64 = 60;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/webhook/triggerExecutionDetails/{id}")
            .route(web::get().to(trigger_execution_details)),
    );
}

async fn trigger_execution_details(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let q = query(&req);
    let id = req.match_info().get("id").unwrap_or("");
    let wait = match q.get("wait") {
        None => 0,
        Some(w) => w
            .parse::<u64>()
            .ok()
            .filter(|w| *w <= MAX_WAIT_SECS)
            .ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "Invalid request: wait must be 0 to {MAX_WAIT_SECS} seconds"
                ))
            })?,
    };
    let status = intake::event_status(
        &gw,
        id,
        q.get("accountIdentifier").map(String::as_str),
        api_key(&req),
        std::time::Duration::from_secs(wait),
    )
    .await?;
    Ok(envelope::ok(render(&status)))
}

fn render(s: &EventStatus) -> Value {
    let e = &s.event;
    json!({
        "webhookProcessingDetails": {
            "eventFound": true,
            "eventId": e.event_id,
            "accountIdentifier": e.scope.account,
            "orgIdentifier": e.scope.org,
            "projectIdentifier": e.scope.project,
            "triggerIdentifier": e.trigger,
            "pipelineIdentifier": e.pipeline,
            "pipelineExecutionId": e.plan_execution_id,
            "exceptionOccured": e.exception_occured,
            "status": e.status,
            "message": e.message,
            "payload": e.payload,
            "eventCreatedAt": e.created_at,
            "runtimeInput": e.runtime_input,
            "conditionResults": e.condition_results,
        },
        "executionDetails": s.run.as_ref().map(|r| json!({
            "pipelineExecutionSummary": summary(r),
        })),
    })
}

/// The Harness `pipelineExecutionSummary` (DESIGN §6.4), with one `layoutNodeMap` node per
/// stage whose status is rolled up from its steps.
pub(super) fn summary(r: &RunState) -> Value {
    let x = &r.execution;
    let p = &x.scope;
    let stages = stage_nodes(r);
    let node_id = |stage: &str| format!("{}-{stage}", x.plan_execution_id);
    let mut layout = serde_json::Map::new();
    for (i, stage) in stages.iter().enumerate() {
        let next: Vec<String> = stages
            .get(i + 1)
            .map(|n| node_id(&n.id))
            .into_iter()
            .collect();
        layout.insert(
            node_id(&stage.id),
            json!({
                "nodeType": "Stage",
                "nodeGroup": "STAGE",
                "nodeIdentifier": stage.id,
                "name": stage.name,
                "nodeUuid": node_id(&stage.id),
                "status": stage.status,
                "startTs": stage.start,
                "endTs": stage.end,
                "edgeLayoutList": {"currentNodeChildren": [], "nextIds": next},
                "failureInfo": {"message": stage.failure.clone().unwrap_or_default()},
            }),
        );
    }
    let count = |wanted: &[&str]| stages.iter().filter(|n| wanted.contains(&n.status)).count();
    json!({
        "pipelineIdentifier": x.pipeline,
        "planExecutionId": x.plan_execution_id,
        "name": x.pipeline_name,
        "status": x.status,
        "tags": [],
        "executionTriggerInfo": {
            "triggerType": x.trigger_type,
            "triggeredBy": {
                "uuid": "systemUser",
                "identifier": x.trigger,
                "extraInfo": {
                    "execution_trigger_tag_needed_for_abort": format!("{}:{}:{}:{}", p.account, p.org, p.project, x.pipeline),
                    "triggerRef": x.trigger.as_ref().map(|t| format!("{}/{}/{}/{t}", p.account, p.org, p.project)),
                    "eventCorrelationId": x.event_id,
                },
            },
            "isRerun": false,
        },
        "layoutNodeMap": layout,
        "startingNodeId": stages.first().map(|n| node_id(&n.id)),
        "startTs": x.started_at,
        "endTs": x.ended_at,
        "createdAt": x.created_at,
        "runSequence": x.run_sequence,
        "successfulStagesCount": count(&[status::SUCCESS]),
        "runningStagesCount": count(&[status::RUNNING]),
        "failedStagesCount": count(&[
            status::FAILED,
            status::ABORTED,
            status::EXPIRED,
            status::APPROVAL_REJECTED,
        ]),
        "totalStagesCount": stages.len(),
        "failureInfo": {"message": r.failure_message.clone().unwrap_or_default()},
    })
}

/// The `'static` form of an execution status, for stage nodes.
fn static_status(s: &str) -> &'static str {
    match s {
        status::ABORTED => status::ABORTED,
        status::EXPIRED => status::EXPIRED,
        status::APPROVAL_REJECTED => status::APPROVAL_REJECTED,
        _ => status::FAILED,
    }
}

/// A stage as the summary shows it.
struct StageNode {
    id: String,
    name: String,
    status: &'static str,
    start: Option<i64>,
    end: Option<i64>,
    failure: Option<String>,
}

/// Groups the steps by stage and rolls their statuses up: a step that failed without
/// `continueOnFailure` (or was aborted, expired or rejected) gives its stage that status; a
/// waiting approval makes it `ApprovalWaiting`; a stage with a running step, or with some steps
/// done and others not, is running; one whose steps all ended is a success; one never begun is
/// `NotStarted` (or `Skipped` when its steps were skipped).
fn stage_nodes(r: &RunState) -> Vec<StageNode> {
    let pipeline = r
        .pipeline_spec
        .as_ref()
        .and_then(|spec| PipelineSpec::from_value(spec).ok());
    let continues = |stage: u32, step: u32| {
        pipeline
            .as_ref()
            .and_then(|p| p.stages.get(stage as usize))
            .and_then(|s| s.steps.get(step as usize))
            .is_some_and(|s| s.continue_on_failure)
    };
    let mut nodes: Vec<StageNode> = Vec::new();
    let mut start = 0;
    while start < r.steps.len() {
        let stage_index = r.steps[start].stage_index;
        let end = r.steps[start..]
            .iter()
            .position(|s| s.stage_index != stage_index)
            .map_or(r.steps.len(), |n| start + n);
        let steps = &r.steps[start..end];
        let failed = steps.iter().find(|s| match s.status.as_str() {
            status::FAILED => !continues(s.stage_index, s.step_index),
            status::ABORTED | status::EXPIRED | status::APPROVAL_REJECTED => true,
            _ => false,
        });
        let status = if let Some(step) = failed {
            match step.status.as_str() {
                status::ABORTED => status::ABORTED,
                status::EXPIRED => status::EXPIRED,
                status::APPROVAL_REJECTED => status::APPROVAL_REJECTED,
                _ => status::FAILED,
            }
        } else if steps.iter().any(|s| s.status == status::APPROVAL_WAITING) {
            status::APPROVAL_WAITING
        } else if steps.iter().all(|s| s.status == status::NOT_STARTED) {
            status::NOT_STARTED
        } else if steps.iter().all(|s| s.status == status::SKIPPED) {
            status::SKIPPED
        } else if steps
            .iter()
            .any(|s| s.status == status::RUNNING || s.status == status::NOT_STARTED)
        {
            status::RUNNING
        } else {
            status::SUCCESS
        };
        let execution_status = r.execution.status.as_str();
        let mixed = steps.iter().any(|s| s.status == status::SKIPPED)
            && steps.iter().any(|s| s.status != status::SKIPPED);
        let status = match (status, execution_status) {
            // Stopped between two of its steps: the stage shares the execution's fate.
            (status::SUCCESS, x) if mixed && status::is_terminal(x) && x != status::SUCCESS => {
                static_status(x)
            }
            (status::RUNNING, status::PAUSED) => status::PAUSED,
            (s, _) => s,
        };
        let done = !matches!(
            status,
            status::RUNNING | status::NOT_STARTED | status::APPROVAL_WAITING | status::PAUSED
        );
        nodes.push(StageNode {
            id: steps[0].stage.clone(),
            name: steps[0].stage_name.clone(),
            status,
            start: steps.iter().filter_map(|s| s.started_at).min(),
            end: if done {
                steps.iter().filter_map(|s| s.ended_at).max()
            } else {
                None
            },
            failure: failed.map(|s| {
                format!(
                    "Step {} failed: {}",
                    s.step,
                    s.message.as_deref().unwrap_or("failed")
                )
            }),
        });
        start = end;
    }
    nodes
}
