//! The application's one error type. Every failure a caller can see is one of these variants;
//! `http::error` maps each, in one place, to the envelope and status of DESIGN §2.4.

use crate::domain::DomainError;
use crate::store::StoreError;

/// An error with a user-facing message and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400 `INVALID_REQUEST`: bad input, unknown token, disabled trigger, missing mandated key.
    #[error("{0}")]
    InvalidRequest(String),
    /// 401 `INVALID_TOKEN`.
    #[error("{0}")]
    InvalidToken(String),
    /// 403 `NG_ACCESS_DENIED`.
    #[error("{0}")]
    AccessDenied(String),
    /// 404 `RESOURCE_NOT_FOUND`.
    #[error("{0}")]
    NotFound(String),
    /// 405 `METHOD_NOT_ALLOWED`.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 408 `REQUEST_TIMEOUT`: the body did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// 409 `DUPLICATE_ENTITY`.
    #[error("{0}")]
    Duplicate(String),
    /// 413 `PAYLOAD_TOO_LARGE`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415 `UNSUPPORTED_MEDIA_TYPE`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429 `TOO_MANY_REQUESTS`, with `Retry-After`.
    #[error("{message}")]
    TooManyRequests {
        /// What was limited.
        message: String,
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// 503 `SERVICE_UNAVAILABLE`, with `Retry-After`.
    #[error("{message}")]
    Unavailable {
        /// Why.
        message: String,
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// 500 `UNEXPECTED`: the message shown is generic; the cause is logged.
    #[error("Unexpected error: {0}")]
    Unexpected(#[source] StoreError),
}

impl Error {
    /// The envelope `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "INVALID_REQUEST",
            Error::InvalidToken(_) => "INVALID_TOKEN",
            Error::AccessDenied(_) => "NG_ACCESS_DENIED",
            Error::NotFound(_) => "RESOURCE_NOT_FOUND",
            Error::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            Error::RequestTimeout(_) => "REQUEST_TIMEOUT",
            Error::Duplicate(_) => "DUPLICATE_ENTITY",
            Error::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            Error::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            Error::TooManyRequests { .. } => "TOO_MANY_REQUESTS",
            Error::Unavailable { .. } => "SERVICE_UNAVAILABLE",
            Error::Unexpected(_) => "UNEXPECTED",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Error::InvalidRequest(_) => 400,
            Error::InvalidToken(_) => 401,
            Error::AccessDenied(_) => 403,
            Error::NotFound(_) => 404,
            Error::MethodNotAllowed(_) => 405,
            Error::RequestTimeout(_) => 408,
            Error::Duplicate(_) => 409,
            Error::PayloadTooLarge(_) => 413,
            Error::UnsupportedMediaType(_) => 415,
            Error::TooManyRequests { .. } => 429,
            Error::Unavailable { .. } => 503,
            Error::Unexpected(_) => 500,
        }
    }

    /// Seconds for `Retry-After`, when the error carries one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Error::TooManyRequests {
                retry_after_secs, ..
            }
            | Error::Unavailable {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// The message safe to show the caller.
    pub fn public_message(&self) -> String {
        match self {
            Error::Unexpected(_) => {
                "An unexpected error occurred; see the server log for this correlationId".into()
            }
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ParentMissing(m) => Error::NotFound(m),
            e @ StoreError::InvalidCursor => Error::InvalidRequest(e.to_string()),
            StoreError::Overloaded => Error::Unavailable {
                message: "The server is overloaded; retry shortly".into(),
                retry_after_secs: 1,
            },
            StoreError::Unavailable => Error::Unavailable {
                message: "The database is unreachable; retry shortly".into(),
                retry_after_secs: 2,
            },
            StoreError::ShuttingDown => Error::Unavailable {
                message: "The server is shutting down; retry shortly".into(),
                retry_after_secs: 5,
            },
            // Only engine workers write under a lease; reaching a caller is a bug.
            e @ (StoreError::LeaseLost | StoreError::Database { .. }) => Error::Unexpected(e),
        }
    }
}

impl From<DomainError> for Error {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(m) => Error::InvalidRequest(m),
        }
    }
}

/// Displays an error and every `source()` below it.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
