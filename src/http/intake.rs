//! `POST /webhook/custom/{token}/v3` and `POST /webhook/custom/v2` (DESIGN §2.1, §2.2).

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use super::envelope::Success;
use super::{api_key, body, by_hand, envelope, header, resource};
use crate::error::Error;
use crate::service::intake::{self, Accepted, IntakeQuery, IntakeRequest};
use crate::service::{links, Gateway};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    // `/{token}/v3` is what the scope's default service matches, by hand (see `by_hand`).
    cfg.service(
        web::scope("/webhook/custom")
            .service(resource("/v2").route(web::post().to(custom_v2)))
            .default_service(web::to(custom_v3)),
    );
}

/// Fires a trigger by its URL token (DESIGN §2.1).
///
/// The answer means the event is committed. Poll `apiUrl` for what became of it.
#[utoipa::path(post, path = "/webhook/custom/{token}/v3", tag = "Webhooks", operation_id = "fireTriggerV3",
    params(
        ("token" = String, Path, description = "The trigger's webhook token", pattern = r"^[A-Za-z0-9_-]{22}$"),
        IntakeParams,
        ("Idempotency-Key" = Option<String>, Header, description = "A repeated key answers the first request's result again, for 24 hours"),
        ("X-Trigger-Dry-Run" = Option<bool>, Header, description = "`true`: evaluate, store nothing, run nothing"),
    ),
    request_body(content = Object, description = "The payload: any JSON (or text) up to the body limit", content_type = "application/json"),
    responses(
        (status = 200, description = "Committed (or, for a dry run, evaluated)", body = Success<WebhookAnswer>,
            headers(("X-Trigger-Status" = String, description = "The event status, such as TARGET_EXECUTION_REQUESTED"))),
    ),
    security((), ("apiKey" = []))
)]
pub(super) async fn custom_v3(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let token = match by_hand(&req, "/v3", Method::POST, "/webhook/custom/{token}/v3") {
        Ok(token) => token,
        Err(answer) => return Ok(*answer),
    };
    // 1. The body limit, enforced while streaming.
    let body = body::read_limited(&req, payload, gw.body_limits).await?;
    let accepted = intake::custom_v3(&gw, token, intake_request(&req, body)).await?;
    Ok(respond(&gw, accepted))
}

/// Fires a trigger by its identifiers; always needs `X-Api-Key` (DESIGN §2.2).
#[utoipa::path(post, path = "/webhook/custom/v2", tag = "Webhooks", operation_id = "fireTriggerV2",
    params(
        IntakeV2Params,
        ("Idempotency-Key" = Option<String>, Header, description = "A repeated key answers the first request's result again, for 24 hours"),
        ("X-Trigger-Dry-Run" = Option<bool>, Header, description = "`true`: evaluate, store nothing, run nothing"),
    ),
    request_body(content = Object, description = "The payload: any JSON (or text) up to the body limit", content_type = "application/json"),
    responses(
        (status = 200, description = "Committed (or, for a dry run, evaluated)", body = Success<WebhookAnswer>,
            headers(("X-Trigger-Status" = String, description = "The event status"))),
    ),
    security(("apiKey" = []))
)]
pub(super) async fn custom_v2(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let body = body::read_limited(&req, payload, gw.body_limits).await?;
    let accepted = intake::custom_v2(&gw, intake_request(&req, body)).await?;
    Ok(respond(&gw, accepted))
}

/// The query of a v3 webhook: the project must match the trigger's; the pipeline and trigger
/// are checked when given.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub(super) struct IntakeParams {
    /// The account.
    accountIdentifier: String,
    /// The org.
    orgIdentifier: String,
    /// The project.
    projectIdentifier: String,
    /// The pipeline.
    pipelineIdentifier: Option<String>,
    /// The trigger.
    triggerIdentifier: Option<String>,
}

/// The query of a v2 webhook, which names the trigger by its identifiers.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub(super) struct IntakeV2Params {
    /// The account.
    accountIdentifier: String,
    /// The org.
    orgIdentifier: String,
    /// The project.
    projectIdentifier: String,
    /// The pipeline.
    pipelineIdentifier: String,
    /// The trigger.
    triggerIdentifier: String,
}

fn intake_request(req: &HttpRequest, body: bytes::Bytes) -> IntakeRequest<'_> {
    let mut headers: Vec<(String, String)> = Vec::with_capacity(req.headers().len());
    for (name, value) in req.headers() {
        let name = name.as_str();
        if !headers.iter().any(|(n, _)| n == name) {
            headers.push((
                name.to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
    }
    IntakeRequest {
        signed_in: None,
        query: IntakeQuery::from_pairs(url::form_urlencoded::parse(req.query_string().as_bytes())),
        api_key: api_key(req),
        idempotency_key: header(req, "idempotency-key"),
        headers,
        body,
        source_ip: req.peer_addr().map(|a| a.ip()),
        dry_run: header(req, "x-trigger-dry-run").is_some_and(|v| v.eq_ignore_ascii_case("true")),
    }
}

fn respond(gw: &Gateway, accepted: Accepted) -> HttpResponse {
    let e = &accepted.event;
    let data = if accepted.dry_run {
        // Nothing was stored, so there is no event id or status URL to hand out.
        WebhookAnswer::DryRun(WebhookDryRun {
            dry_run: DryRun {
                status: &e.status,
                message: &e.message,
                condition_results: &e.condition_results,
                runtime_input: &e.runtime_input,
            },
        })
    } else {
        WebhookAnswer::Accepted(WebhookAccepted {
            event_correlation_id: e.event_id.as_str(),
            api_url: links::api_url(
                &gw.public_url,
                e.event_id.as_str(),
                e.scope.account.as_str(),
            ),
            ui_url: links::ui_url(&gw.public_url, &e.scope, e.event_id.as_str()),
            ui_setup_url: links::ui_setup_url(&gw.public_url, &e.scope, &e.pipeline, &e.trigger),
        })
    };
    let mut response = envelope::ok(data);
    let headers = response.headers_mut();
    if let Ok(status) = HeaderValue::from_str(&e.status) {
        headers.insert(HeaderName::from_static("x-trigger-status"), status);
    }
    if accepted.replayed {
        headers.insert(
            HeaderName::from_static("idempotent-replayed"),
            HeaderValue::from_static("true"),
        );
    }
    response
}

/// `data` of a webhook's answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(super) enum WebhookAnswer<'a> {
    /// The event is committed.
    Accepted(WebhookAccepted<'a>),
    /// `X-Trigger-Dry-Run: true`: nothing was stored.
    DryRun(WebhookDryRun<'a>),
}

/// The event is committed.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct WebhookAccepted<'a> {
    /// The event's id: poll `apiUrl` with it.
    #[schema(value_type = String, pattern = "^[0-9a-f]{24}$")]
    event_correlation_id: &'a str,
    /// The status URL (`GET /webhook/triggerExecutionDetails/{id}`).
    api_url: String,
    /// The event in the console.
    ui_url: String,
    /// The trigger in the console.
    ui_setup_url: String,
}

/// A dry run: nothing was stored.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct WebhookDryRun<'a> {
    /// What would have happened.
    dry_run: DryRun<'a>,
}

/// What a dry run found.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DryRun<'a> {
    /// The event status it would have had.
    #[schema(value_type = String)]
    status: &'a str,
    /// Why.
    #[schema(value_type = String)]
    message: &'a str,
    /// Every condition's result.
    #[schema(value_type = Vec<crate::domain::matching::ConditionResult>)]
    condition_results: &'a serde_json::value::RawValue,
    /// The runtime input YAML.
    #[schema(value_type = String)]
    runtime_input: &'a str,
}
