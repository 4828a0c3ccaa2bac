//! `GET /healthz` (liveness), `GET /readyz` (database reachable, migrations applied) and
//! `GET /metrics` (Prometheus text).

use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;

use super::envelope::Success;
use super::{envelope, resource};
use crate::error::Error;
use crate::service::Gateway;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").route(web::get().to(healthz)))
        .service(resource("/readyz").route(web::get().to(readyz)))
        .service(resource("/metrics").route(web::get().to(metrics)));
}

/// Liveness.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "Operations",
    operation_id = "healthz",
    responses((status = 200, description = "Alive", body = Success<Health>))
)]
pub(super) async fn healthz() -> HttpResponse {
    envelope::ok(Health { status: "UP" })
}

/// Readiness: the database is reachable and migrated.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "Operations",
    operation_id = "readyz",
    responses((status = 200, description = "Ready", body = Success<Ready>))
)]
pub(super) async fn readyz(gw: web::Data<Gateway>) -> Result<HttpResponse, Error> {
    match gw.store.ready().await {
        Ok(true) => Ok(envelope::ok(Ready {
            status: "READY",
            node: &gw.node_id,
        })),
        Ok(false) => Err(Error::Unavailable {
            message: "Not ready: database migrations are not applied".into(),
            retry_after_secs: 5,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(Error::Unavailable {
                message: "Not ready: the database is not reachable".into(),
                retry_after_secs: 5,
            })
        }
    }
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "Operations",
    operation_id = "metrics",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
pub(super) async fn metrics(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}

/// `data` of `GET /healthz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    /// `UP`.
    #[schema(value_type = String)]
    status: &'static str,
}

/// `data` of `GET /readyz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Ready<'a> {
    /// `READY`.
    #[schema(value_type = String)]
    status: &'static str,
    /// This node's id.
    #[schema(value_type = String)]
    node: &'a str,
}
