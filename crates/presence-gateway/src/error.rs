//! Errors of the native API: `{"error": {"code", "message"}}` with an HTTP
//! status chosen by the code. Codes are stable; messages are for humans.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use presence_core::PresenceError;
use presence_store::BackendError;
use serde_json::json;

use crate::auth::AuthError;
use crate::ws::Refusal;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this action needs the admin role",
        )
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
    }
}

/// The HTTP status of each client-triggerable code.
pub fn status_for_code(code: &str) -> StatusCode {
    match code {
        "custom_status_not_found" | "not_found" | "unknown_device" => StatusCode::NOT_FOUND,
        "custom_status_name_taken" | "broadcast_enable_refused" => StatusCode::CONFLICT,
        "status_text_disabled" | "invisible_disabled" | "calendar_disabled" | "forbidden" => {
            StatusCode::FORBIDDEN
        }
        "rate_limited" => StatusCode::TOO_MANY_REQUESTS,
        "payload_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "store_unavailable" | "backend_unavailable" | "shutting_down" => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        let code = e.code();
        Self::new(status_for_code(code), code, e.to_string())
    }
}

impl From<PresenceError> for ApiError {
    fn from(e: PresenceError) -> Self {
        let code = e.code();
        Self::new(status_for_code(code), code, e.to_string())
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        Self::new(status_for_code(r.code), r.code, r.message)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}
