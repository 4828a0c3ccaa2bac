//! `GET /webhook/triggerExecutionDetails/{eventCorrelationId}` (DESIGN §2.3).

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::envelope::Success;
use super::{api_key, by_hand, envelope, query};
use crate::error::Error;
use crate::service::intake::{self, EventStatus};
use crate::service::Gateway;
use crate::store::executions::{stage_rollups, status, RunState};
use crate::store::StoreError;

/// Longest long poll, in seconds.
const MAX_WAIT_SECS: u64 = 60;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    // `/{id}` is what the scope's default service matches, by hand (see `by_hand`).
    cfg.service(
        web::scope("/webhook/triggerExecutionDetails")
            .default_service(web::to(trigger_execution_details)),
    );
}

/// What became of a webhook event, and its execution (DESIGN §2.3).
#[utoipa::path(
    get,
    path = "/webhook/triggerExecutionDetails/{id}",
    tag = "Webhooks",
    operation_id = "getTriggerExecutionDetails",
    params(("id" = String, Path, description = "The eventCorrelationId of the webhook's answer", pattern = r"^[0-9a-f]{24}$"), ("accountIdentifier" = String, Query, description = "The event's account"), ("wait" = Option<u64>, Query, description = "Long poll: up to this many seconds (at most 60) for the execution to settle", maximum = 60)),
    responses((status = 200, description = "OK", body = Success<TriggerExecutionDetails>)),
    security((), ("apiKey" = []))
)]
pub(super) async fn trigger_execution_details(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let id = match by_hand(
        &req,
        "",
        Method::GET,
        "/webhook/triggerExecutionDetails/{id}",
    ) {
        Ok(id) => id,
        Err(answer) => return Ok(*answer),
    };
    let q = query(&req);
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
    let found = intake::event_status(
        &gw,
        id,
        q.get("accountIdentifier").map(String::as_str),
        api_key(&req),
        std::time::Duration::from_secs(wait),
    )
    .await?;
    // What was read never changes (a change replaces it in the cache): rendered once, kept while
    // it is cached.
    if let Some(data) = found.rendered.get() {
        return Ok(envelope::ok(data));
    }
    let data = serde_json::value::to_raw_value(&render(&found))
        .map_err(|e| Error::Unexpected(StoreError::db("serialising a response", e)))?;
    let response = envelope::ok(&data);
    let _ = found.rendered.set(data);
    Ok(response)
}

fn render(s: &EventStatus) -> TriggerExecutionDetails<'_> {
    let e = &s.event;
    TriggerExecutionDetails {
        webhook_processing_details: WebhookProcessingDetails {
            event_found: true,
            event_id: e.event_id.as_str(),
            account_identifier: e.scope.account.as_str(),
            org_identifier: e.scope.org.as_str(),
            project_identifier: e.scope.project.as_str(),
            trigger_identifier: &e.trigger,
            pipeline_identifier: &e.pipeline,
            pipeline_execution_id: e.plan_execution_id.as_ref().map(|p| p.as_str()),
            exception_occured: e.exception_occured,
            status: &e.status,
            message: &e.message,
            payload: &e.payload,
            event_created_at: e.created_at,
            runtime_input: &e.runtime_input,
            condition_results: &e.condition_results,
        },
        execution_details: s.run.as_ref().map(|r| ExecutionDetails {
            pipeline_execution_summary: summary(r),
        }),
    }
}

/// The Harness `pipelineExecutionSummary` (DESIGN §6.4), with one `layoutNodeMap` node per
/// stage whose status is rolled up from its steps.
pub(super) fn summary(r: &RunState) -> PipelineExecutionSummary<'_> {
    let x = &r.execution;
    let p = &x.scope;
    let stages = stage_rollups(r);
    let node_id = |stage: &str| format!("{}-{stage}", x.plan_execution_id);
    let count = |wanted: &[&str]| stages.iter().filter(|n| wanted.contains(&n.status)).count();
    let successful_stages_count = count(&[status::SUCCESS]);
    let running_stages_count = count(&[status::RUNNING]);
    let failed_stages_count = count(&[
        status::FAILED,
        status::ABORTED,
        status::EXPIRED,
        status::APPROVAL_REJECTED,
    ]);
    let total_stages_count = stages.len();
    let ids: Vec<String> = stages.iter().map(|n| node_id(&n.id)).collect();
    let starting_node_id = ids.first().cloned();
    let layout = stages
        .into_iter()
        .zip(&ids)
        .enumerate()
        .map(|(i, (stage, id))| {
            let next_ids = ids.get(i + 1).cloned().into_iter().collect();
            let node = LayoutNode {
                node_type: "Stage",
                node_group: "STAGE",
                node_uuid: id.clone(),
                node_identifier: stage.id,
                name: stage.name,
                status: stage.status,
                start_ts: stage.start,
                end_ts: stage.end,
                edge_layout_list: EdgeLayoutList {
                    current_node_children: Vec::new(),
                    next_ids,
                },
                failure_info: FailureInfo {
                    message: stage.failure.unwrap_or_default(),
                },
            };
            (id.clone(), node)
        })
        .collect();
    PipelineExecutionSummary {
        pipeline_identifier: &x.pipeline,
        plan_execution_id: x.plan_execution_id.as_str(),
        name: &x.pipeline_name,
        status: &x.status,
        tags: Vec::new(),
        execution_trigger_info: ExecutionTriggerInfo {
            trigger_type: &x.trigger_type,
            triggered_by: TriggeredBy {
                uuid: "systemUser",
                identifier: x.trigger.as_deref(),
                extra_info: ExtraInfo {
                    execution_trigger_tag_needed_for_abort: format!(
                        "{}:{}:{}:{}",
                        p.account, p.org, p.project, x.pipeline
                    ),
                    trigger_ref: x
                        .trigger
                        .as_ref()
                        .map(|t| format!("{}/{}/{}/{t}", p.account, p.org, p.project)),
                    event_correlation_id: x.event_id.as_deref(),
                },
            },
            is_rerun: false,
        },
        layout_node_map: LayoutNodeMap(layout),
        starting_node_id,
        start_ts: x.started_at,
        end_ts: x.ended_at,
        created_at: x.created_at,
        run_sequence: x.run_sequence,
        successful_stages_count,
        running_stages_count,
        failed_stages_count,
        total_stages_count,
        failure_info: FailureInfo {
            message: r.failure_message.clone().unwrap_or_default(),
        },
    }
}

/// `data` of the status endpoint.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct TriggerExecutionDetails<'a> {
    /// What became of the webhook.
    webhook_processing_details: WebhookProcessingDetails<'a>,
    /// The execution, when one was requested.
    execution_details: Option<ExecutionDetails<'a>>,
}

/// `webhookProcessingDetails`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct WebhookProcessingDetails<'a> {
    /// Always true (an unknown event is a 404).
    event_found: bool,
    /// The event id.
    #[schema(value_type = String)]
    event_id: &'a str,
    /// Account.
    #[schema(value_type = String)]
    account_identifier: &'a str,
    /// Org.
    #[schema(value_type = String)]
    org_identifier: &'a str,
    /// Project.
    #[schema(value_type = String)]
    project_identifier: &'a str,
    /// The trigger.
    #[schema(value_type = String)]
    trigger_identifier: &'a str,
    /// The pipeline.
    #[schema(value_type = String)]
    pipeline_identifier: &'a str,
    /// The execution, when one was requested.
    #[schema(value_type = Option<String>)]
    pipeline_execution_id: Option<&'a str>,
    /// Harness's spelling.
    exception_occured: bool,
    /// `TARGET_EXECUTION_REQUESTED`, `NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS`, ...
    #[schema(value_type = String)]
    status: &'a str,
    /// Why, in words.
    #[schema(value_type = String)]
    message: &'a str,
    /// The body as received.
    #[schema(value_type = String)]
    payload: &'a str,
    /// Epoch milliseconds.
    event_created_at: i64,
    /// The runtime input YAML.
    #[schema(value_type = String)]
    runtime_input: &'a str,
    /// Every condition's result.
    #[schema(value_type = Vec<crate::domain::matching::ConditionResult>)]
    condition_results: &'a serde_json::value::RawValue,
}

/// `executionDetails`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ExecutionDetails<'a> {
    /// The execution.
    pipeline_execution_summary: PipelineExecutionSummary<'a>,
}

/// Harness's `pipelineExecutionSummary` (DESIGN §6.4).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct PipelineExecutionSummary<'a> {
    /// The pipeline.
    #[schema(value_type = String)]
    pipeline_identifier: &'a str,
    /// The execution id.
    #[schema(value_type = String)]
    plan_execution_id: &'a str,
    /// The pipeline's name.
    #[schema(value_type = String)]
    name: &'a str,
    /// `Queued`, `Running`, `Paused`, `ApprovalWaiting`, `Success`, `Failed`, `Aborted`,
    /// `Expired`, `ApprovalRejected`.
    #[schema(value_type = String)]
    status: &'a str,
    /// Always empty.
    tags: Vec<String>,
    /// How it was started.
    execution_trigger_info: ExecutionTriggerInfo<'a>,
    /// One node per stage, by node id, in pipeline order.
    #[schema(value_type = std::collections::BTreeMap<String, LayoutNode>)]
    layout_node_map: LayoutNodeMap,
    /// The first stage's node id.
    starting_node_id: Option<String>,
    /// Epoch milliseconds.
    start_ts: Option<i64>,
    /// Epoch milliseconds.
    end_ts: Option<i64>,
    /// Epoch milliseconds.
    created_at: i64,
    /// The pipeline's run number.
    run_sequence: i64,
    /// Stages that succeeded.
    successful_stages_count: usize,
    /// Stages running.
    running_stages_count: usize,
    /// Stages that failed, were aborted, expired or rejected.
    failed_stages_count: usize,
    /// Stages.
    total_stages_count: usize,
    /// Why it failed.
    failure_info: FailureInfo,
}

/// `executionTriggerInfo`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ExecutionTriggerInfo<'a> {
    /// `WEBHOOK_CUSTOM` or `MANUAL`.
    #[schema(value_type = String)]
    trigger_type: &'a str,
    /// Who started it.
    triggered_by: TriggeredBy<'a>,
    /// Always false.
    is_rerun: bool,
}

/// `triggeredBy`.
#[derive(Serialize, ToSchema)]
struct TriggeredBy<'a> {
    /// Always `systemUser`.
    #[schema(value_type = String)]
    uuid: &'static str,
    /// The trigger, for a webhook run.
    #[schema(value_type = Option<String>)]
    identifier: Option<&'a str>,
    /// Harness's extra fields.
    #[serde(rename = "extraInfo")]
    extra_info: ExtraInfo<'a>,
}

/// `extraInfo` (Harness's mixed spelling).
#[derive(Serialize, ToSchema)]
struct ExtraInfo<'a> {
    /// `account:org:project:pipeline`.
    execution_trigger_tag_needed_for_abort: String,
    /// `account/org/project/trigger`, for a webhook run.
    #[serde(rename = "triggerRef")]
    trigger_ref: Option<String>,
    /// The event, for a webhook run.
    #[serde(rename = "eventCorrelationId")]
    #[schema(value_type = Option<String>)]
    event_correlation_id: Option<&'a str>,
}

/// `layoutNodeMap`: an object whose keys keep the stages' order.
struct LayoutNodeMap(Vec<(String, LayoutNode)>);

impl Serialize for LayoutNodeMap {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(id, node)| (id, node)))
    }
}

/// A stage node of `layoutNodeMap`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct LayoutNode {
    /// Always `Stage`.
    #[schema(value_type = String)]
    node_type: &'static str,
    /// Always `STAGE`.
    #[schema(value_type = String)]
    node_group: &'static str,
    /// The stage identifier.
    node_identifier: String,
    /// The stage name.
    name: String,
    /// The node id.
    node_uuid: String,
    /// The stage's status, rolled up from its steps.
    #[schema(value_type = String)]
    status: &'static str,
    /// Epoch milliseconds.
    start_ts: Option<i64>,
    /// Epoch milliseconds.
    end_ts: Option<i64>,
    /// The next stage.
    edge_layout_list: EdgeLayoutList,
    /// Why it failed.
    failure_info: FailureInfo,
}

/// `edgeLayoutList`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct EdgeLayoutList {
    /// Always empty.
    current_node_children: Vec<String>,
    /// The next stage's node id, if any.
    next_ids: Vec<String>,
}

/// `failureInfo`.
#[derive(Serialize, ToSchema)]
pub(super) struct FailureInfo {
    /// Empty unless something failed.
    message: String,
}
