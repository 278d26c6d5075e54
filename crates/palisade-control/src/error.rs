//! The services' error types, shared by every service and by the HTTP surface that
//! maps them to status codes: [`ServiceError`] for operator requests and
//! [`EnrollError`] for what a device asks at enrolment (EST, attestation).

use palisade_store::StoreError;

/// Why a fleet operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is wrong; the message says how.
    #[error("{message}")]
    BadRequest {
        /// A stable code for scripts.
        code: &'static str,
        /// What to fix.
        message: String,
    },
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// Authenticated, but not allowed for this object.
    #[error("{0}")]
    Forbidden(String),
    /// Our fault; details are logged.
    #[error("internal error: {0}")]
    Internal(String),
    /// The database cannot be reached; the request may be retried.
    #[error("{0}")]
    Unavailable(String),
    /// The blob store cannot be reached; the request may be retried.
    #[error("{0}")]
    BlobsUnavailable(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            return ServiceError::Unavailable(e.to_string());
        }
        match e {
            StoreError::NotFound { .. } => ServiceError::NotFound(e.to_string()),
            StoreError::Conflict { .. } => ServiceError::Conflict(e.to_string()),
            StoreError::Unavailable { .. } => ServiceError::Unavailable(e.to_string()),
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

pub(crate) fn bad(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::BadRequest {
        code,
        message: message.into(),
    }
}

/// Why an enrolment was refused, mapped to EST status codes.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or unacceptable credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// Unknown label (404).
    #[error("{0}")]
    NotFound(String),
    /// Accepted, but an operator must approve the device first (202 + Retry-After).
    #[error("{message}")]
    Pending {
        /// Seconds the client should wait before retrying.
        retry_after: u32,
        /// What is awaited.
        message: String,
    },
    /// The database cannot be reached; retry later (503 + Retry-After).
    #[error("{0}")]
    Unavailable(String),
    /// Our fault (500).
    #[error("{0}")]
    Internal(String),
}

impl EnrollError {
    /// A metric label for the kind of refusal.
    pub fn label(&self) -> &'static str {
        match self {
            EnrollError::BadRequest(_) => "bad_request",
            EnrollError::Unauthorized(_) => "unauthorized",
            EnrollError::Forbidden(_) => "forbidden",
            EnrollError::NotFound(_) => "not_found",
            EnrollError::Pending { .. } => "pending",
            EnrollError::Unavailable(_) => "unavailable",
            EnrollError::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for EnrollError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            return EnrollError::Unavailable(e.to_string());
        }
        match e {
            StoreError::Conflict { .. } => EnrollError::Forbidden(e.to_string()),
            other => EnrollError::Internal(other.to_string()),
        }
    }
}
