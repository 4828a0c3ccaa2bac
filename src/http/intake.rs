//! `POST /webhook/custom/{token}/v3` and `POST /webhook/custom/v2` (DESIGN §2.1, §2.2).

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{api_key, body, envelope, header, resource};
use crate::error::Error;
use crate::service::intake::{self, Accepted, IntakeQuery, IntakeRequest};
use crate::service::{links, Gateway};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/webhook/custom/v2").route(web::post().to(custom_v2)))
        .service(resource("/webhook/custom/{token}/v3").route(web::post().to(custom_v3)));
}

async fn custom_v3(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    // 1. The body limit, enforced while streaming.
    let body = body::read_limited(&req, payload, gw.body_limits).await?;
    let token = req.match_info().get("token").unwrap_or("");
    let accepted = intake::custom_v3(&gw, token, intake_request(&req, body)).await?;
    Ok(respond(&gw, accepted))
}

async fn custom_v2(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, Error> {
    let body = body::read_limited(&req, payload, gw.body_limits).await?;
    let accepted = intake::custom_v2(&gw, intake_request(&req, body)).await?;
    Ok(respond(&gw, accepted))
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
        json!({"dryRun": {
            "status": e.status,
            "message": e.message,
            "conditionResults": e.condition_results,
            "runtimeInput": e.runtime_input,
        }})
    } else {
        json!({
            "eventCorrelationId": e.event_id,
            "apiUrl": links::api_url(&gw.public_url, e.event_id.as_str(), e.scope.account.as_str()),
            "uiUrl": links::ui_url(&gw.public_url, &e.scope, e.event_id.as_str()),
            "uiSetupUrl": links::ui_setup_url(&gw.public_url, &e.scope, &e.pipeline, &e.trigger),
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
