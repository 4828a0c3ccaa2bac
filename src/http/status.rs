//! `GET /webhook/triggerExecutionDetails/{eventCorrelationId}` (DESIGN §2.3).

use super::envelope::Success;
use super::openapi::shapes::TriggerExecutionDetails;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::{api_key, envelope, query, resource};
use crate::error::Error;
use crate::service::intake::{self, EventStatus};
use crate::service::Gateway;
use crate::store::executions::{stage_rollups, status, RunState};

/// Longest long poll, in seconds.
const MAX_WAIT_SECS: u64 = 60;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/webhook/triggerExecutionDetails/{id}")
            .route(web::get().to(trigger_execution_details)),
    );
}

/// What became of a webhook event, and its execution (DESIGN §2.3).
#[utoipa::path(
    get,
    path = "/webhook/triggerExecutionDetails/{id}",
    tag = "Webhooks",
    operation_id = "getTriggerExecutionDetails",
    params(("id" = String, Path, description = "The eventCorrelationId of the webhook's answer", pattern = r"^[0-9a-f]{24}$"), ("accountIdentifier" = String, Query, description = "The event's account", pattern = r"^[A-Za-z0-9_-]{1,64}$"), ("wait" = Option<u64>, Query, description = "Long poll: up to this many seconds (at most 60) for the execution to settle", maximum = 60)),
    responses((status = 200, description = "OK", body = Success<TriggerExecutionDetails>)),
    security((), ("apiKey" = []))
)]
pub(super) async fn trigger_execution_details(
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
    let stages = stage_rollups(r);
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
