//! Per-request plumbing: the Harness prefix taken off the path, a correlation id (UUID v4,
//! returned as `X-Correlation-Id` and in every envelope), the header-size guard, one log line
//! and the metrics of each request.
//!
//! The id lives in a task-local for the duration of the request, so error envelopes built deep
//! inside actix (extractor failures, `ResponseError`) carry it without threading it through
//! every call.

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpMessage, ResponseError};

use crate::error::Error;
use crate::http::RoutePattern;

tokio::task_local! {
    static CORRELATION_ID: String;
}

/// Largest accepted value of a single request header (DESIGN §2.4).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The correlation id of the request being served (a fresh one outside a request).
pub fn correlation_id() -> String {
    CORRELATION_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| crate::domain::ids::uuid_v4().to_string())
}

/// The middleware factory; wrap the whole app with it.
pub struct RequestContext;

impl<S, B> Transform<S, ServiceRequest> for RequestContext
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Transform = RequestContextService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestContextService {
            service: Rc::new(service),
        }))
    }
}

/// The middleware service.
pub struct RequestContextService<S> {
    service: Rc<S>,
}

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

impl<S, B> Service<ServiceRequest> for RequestContextService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        crate::http::strip_harness_prefix(&mut req);
        let service = Rc::clone(&self.service);
        let id = crate::domain::ids::uuid_v4().to_string();
        let started = Instant::now();
        let source = req.peer_addr().map(|a| a.ip());
        Box::pin(CORRELATION_ID.scope(id.clone(), crate::auth::keys::with_source(source, async move {
            let oversized = req
                .headers()
                .iter()
                .find(|(_, v)| v.len() > MAX_HEADER_BYTES)
                .map(|(name, _)| name.to_string());
            let mut res = match oversized {
                Some(name) => {
                    let err = Error::InvalidRequest(format!(
                        "Invalid request: header {name} is larger than {MAX_HEADER_BYTES} bytes"
                    ));
                    let (http_req, _) = req.into_parts();
                    ServiceResponse::new(http_req, err.error_response())
                }
                // Handlers' errors arrive here already rendered as envelopes; an `Err` only
                // comes from actix itself and is passed on.
                None => service.call(req).await?.map_into_boxed_body(),
            };
            let status = res.status().as_u16();
            res.headers_mut().insert(
                HeaderName::from_static("x-correlation-id"),
                HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-")),
            );
            let by_hand = res.request().extensions().get::<RoutePattern>().copied();
            let route: std::borrow::Cow<'static, str> = match by_hand {
                Some(RoutePattern(pattern)) => pattern.into(),
                None => res
                    .request()
                    .match_pattern()
                    .map_or("unmatched".into(), Into::into),
            };
            let latency = started.elapsed();
            tracing::info!(
                correlation_id = %id,
                method = %res.request().method(),
                %route,
                status,
                latency_ms = latency.as_secs_f64() * 1000.0,
                "request"
            );
            metrics::counter!("triggerd_http_requests_total", "route" => route.clone(), "status" => status.to_string())
                .increment(1);
            metrics::histogram!("triggerd_http_request_duration_seconds", "route" => route)
                .record(latency.as_secs_f64());
            Ok(res)
        })))
    }
}
