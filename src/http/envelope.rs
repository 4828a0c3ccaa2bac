//! The response envelopes of DESIGN §2.4, and the one place that maps [`Error`] to HTTP. Every
//! JSON body the server answers is written by [`json_body`] here.

use actix_web::http::header::{ContentType, HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use super::middleware::correlation_id;
use crate::error::{Error, ErrorChain};
use crate::store::StoreError;

/// `{"status":"SUCCESS","data":...,"metaData":null,"correlationId":...}` with `status`.
pub fn success<T: Serialize>(status: StatusCode, data: T) -> HttpResponse {
    let envelope = Success {
        status: "SUCCESS",
        data,
        meta_data: None,
        correlation_id: correlation_id(),
    };
    match json_body(&envelope) {
        Ok(body) => HttpResponse::build(status)
            .insert_header(ContentType::json())
            .body(body),
        Err(e) => Error::Unexpected(StoreError::db("serialising a response", e)).error_response(),
    }
}

/// `value` as JSON followed by a newline, so that a body printed by `curl` ends its line and
/// line-oriented tools see one record. Written into one buffer: no copy after serialising.
fn json_body<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(256);
    serde_json::to_writer(&mut body, value)?;
    body.push(b'\n');
    Ok(body)
}

/// The success envelope, serialised straight from `data` (a `json!` envelope first copied the
/// whole of `data` into a new `Value` tree: 13 % of a status read's CPU).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Success<T> {
    /// Always `SUCCESS`.
    #[schema(value_type = String, pattern = "^SUCCESS$")]
    status: &'static str,
    /// The answer.
    data: T,
    /// Always null.
    #[schema(value_type = Option<String>, required = true)]
    meta_data: Option<()>,
    /// The request's correlation id (also in the `X-Correlation-Id` header).
    correlation_id: String,
}

/// A 200 success envelope.
pub fn ok<T: Serialize>(data: T) -> HttpResponse {
    success(StatusCode::OK, data)
}

/// 201 on create, 200 on update.
pub fn put_result<T: Serialize>(created: bool, data: T) -> HttpResponse {
    success(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        data,
    )
}

/// A page of a list, with the cursor for the next page.
pub fn page<T: Serialize>(items: Vec<T>, next_cursor: Option<String>) -> HttpResponse {
    ok(PageBody {
        content: items,
        next_cursor,
    })
}

/// `{"content":[...],"nextCursor":...}`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageBody<T> {
    /// The items.
    content: Vec<T>,
    /// The cursor of the next page; null on the last.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let correlation_id = correlation_id();
        if let Error::Unexpected(cause) = self {
            // Logged once, here at the edge, with its whole source chain.
            tracing::error!(correlation_id, error = %ErrorChain(cause), "request failed");
        }
        let (code, message) = (self.code(), self.public_message());
        let mut response = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after() {
            response.insert_header((RETRY_AFTER, HeaderValue::from(secs)));
        }
        let envelope = ErrorEnvelope {
            status: "ERROR",
            code,
            message: &message,
            correlation_id,
            detailed_message: None,
            response_messages: vec![ResponseMessage {
                code,
                level: "ERROR",
                message: &message,
                exception: None,
                failure_types: Vec::new(),
            }],
            metadata: None,
        };
        match json_body(&envelope) {
            Ok(body) => response.insert_header(ContentType::json()).body(body),
            // Strings always serialise; this is only the type system's due.
            Err(_) => response.finish(),
        }
    }
}

/// The error envelope of DESIGN §2.4.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorEnvelope<'a> {
    /// Always `ERROR`.
    #[schema(value_type = String, pattern = "^ERROR$")]
    status: &'static str,
    /// The error code, such as `INVALID_REQUEST`.
    #[schema(value_type = String)]
    code: &'a str,
    /// What went wrong, in words.
    #[schema(value_type = String)]
    message: &'a str,
    /// The request's correlation id (also in the `X-Correlation-Id` header).
    correlation_id: String,
    /// Always null.
    #[schema(value_type = Option<String>, required = true)]
    detailed_message: Option<()>,
    /// The code and message again, in Harness's list.
    response_messages: Vec<ResponseMessage<'a>>,
    /// Always null.
    #[schema(value_type = Option<String>, required = true)]
    metadata: Option<()>,
}

/// One entry of `responseMessages`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResponseMessage<'a> {
    /// The error code.
    #[schema(value_type = String)]
    code: &'a str,
    /// Always `ERROR`.
    #[schema(value_type = String)]
    level: &'static str,
    /// The message.
    #[schema(value_type = String)]
    message: &'a str,
    /// Always null.
    #[schema(value_type = Option<String>, required = true)]
    exception: Option<()>,
    /// Always empty.
    failure_types: Vec<String>,
}
