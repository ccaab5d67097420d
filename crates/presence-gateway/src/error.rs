//! The gateway's one error type: every refusal a client can receive, on
//! every surface.
//!
//! An [`ApiError`] is a stable `code`, a human `message`, the HTTP status
//! of the native API, and, for rate limits, the seconds until a retry can
//! succeed. It renders three ways:
//! - native REST (`IntoResponse`): `{"error": {"code", "message"}}` with
//!   [`ApiError::status`] and a `Retry-After` header when it has one;
//! - WebSocket ([`ApiError::ws_frame`]): `{"type": "error", "code",
//!   "message", "ref"?}`;
//! - Rocket.Chat ([`RocketChat`]): Rocket.Chat's shapes — 400
//!   `{success: false, error, errorType?}` (a rule refusal in Rocket.Chat's
//!   words where it has its own), 401 with both `{success, error}` and the
//!   older `{status, message}`, 403, 429 with `Retry-After`, and JSON 404,
//!   405, 413 and 503.
//!
//! Domain errors (`PresenceError`, `BackendError`, `AuthError`,
//! `ReauthError`, `IdError`, `ProtocolError`) convert into it with `?`;
//! the code decides the native status ([`status_for_code`]). Codes are
//! those of `docs/errors.md`.

use axum::Json;
use axum::extract::ws::Utf8Bytes;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use presence_backend::BackendError;
use presence_core::{IdError, PresenceError};
use presence_protocol::rocketchat::{INVALID_PARAMS, RcFailure, RcForbidden, RcUnauthorized};
use presence_protocol::ws::ProtocolError;
use serde_json::json;

use crate::auth::{AuthError, ReauthError};
use crate::frames;

/// A refused request. See the module documentation for its renderings.
#[derive(Debug)]
pub struct ApiError {
    /// The native API's HTTP status.
    pub status: StatusCode,
    /// The stable code (docs/errors.md).
    pub code: &'static str,
    /// For people; quotes little of what the client sent.
    pub message: String,
    /// For rate limits: whole seconds until a retry can succeed (≥ 1).
    pub retry_after_secs: Option<u64>,
    /// How the Rocket.Chat API words it.
    rocketchat: RcForm,
}

/// The Rocket.Chat rendering of an [`ApiError`].
#[derive(Debug)]
enum RcForm {
    /// Derived from the status, code and message (see [`ApiError::rocketchat`]).
    Derived,
    /// A presence rule refused: HTTP 400 in Rocket.Chat's words for it.
    Rule(PresenceError),
    /// A refusal only the Rocket.Chat API makes, or words its own way.
    Own {
        status: StatusCode,
        body: serde_json::Value,
    },
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            rocketchat: RcForm::Derived,
        }
    }

    /// A refusal whose HTTP status follows from its code.
    pub fn refused(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(status_for_code(code), code, message)
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

    /// 429 `rate_limited`, retry after `retry_after_secs` (at least 1).
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    /// A refusal of the Rocket.Chat API only, with Rocket.Chat's status and
    /// body; natively it is `code` with the body's `error` as message.
    pub fn rocketchat_only(
        status: StatusCode,
        code: &'static str,
        body: impl serde::Serialize,
    ) -> Self {
        let body = value(&body);
        let message = body["error"].as_str().unwrap_or_default().to_owned();
        Self {
            rocketchat: RcForm::Own { status, body },
            ..Self::new(status, code, message)
        }
    }

    /// HTTP 400, Rocket.Chat's `API.v1.failure`.
    pub fn rc_failure(failure: RcFailure) -> Self {
        Self::rocketchat_only(StatusCode::BAD_REQUEST, "invalid_request", failure)
    }

    /// HTTP 400 `invalid-params`, Rocket.Chat's schema validator.
    pub fn rc_invalid_params(message: impl AsRef<str>) -> Self {
        Self::rc_failure(RcFailure::typed(message, INVALID_PARAMS))
    }

    /// HTTP 403 in one of Rocket.Chat's wordings.
    pub fn rc_forbidden(body: RcForbidden) -> Self {
        Self::rocketchat_only(StatusCode::FORBIDDEN, "forbidden", body)
    }

    /// The `error` frame of the WebSocket, echoing the frame's `ref`.
    pub fn ws_frame(&self, ref_: Option<&str>) -> Utf8Bytes {
        frames::error(self.code, &self.message, ref_)
    }

    /// The Rocket.Chat status and body.
    pub fn rocketchat(&self) -> (StatusCode, serde_json::Value) {
        match &self.rocketchat {
            RcForm::Own { status, body } => (*status, body.clone()),
            RcForm::Rule(rule) => (StatusCode::BAD_REQUEST, value(&RcFailure::from(rule))),
            RcForm::Derived => match self.status {
                // Rocket.Chat 7 sends both the new keys (`success`,
                // `error`) and the old ones (`status`, `message`); clients
                // of either generation find theirs.
                StatusCode::UNAUTHORIZED => {
                    let old = RcUnauthorized::default();
                    let body = json!({
                        "success": false,
                        "error": old.message,
                        "status": old.status,
                        "message": old.message,
                    });
                    (StatusCode::UNAUTHORIZED, body)
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    let secs = self.retry_after_secs.unwrap_or(1);
                    let failure = RcFailure::typed(
                        format!(
                            "Error, too many requests. Please slow down. You must wait {secs} seconds before trying this endpoint again."
                        ),
                        "error-too-many-requests",
                    );
                    (StatusCode::TOO_MANY_REQUESTS, value(&failure))
                }
                StatusCode::SERVICE_UNAVAILABLE => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"success": false, "error": self.message}),
                ),
                StatusCode::FORBIDDEN => (
                    StatusCode::FORBIDDEN,
                    value(&RcForbidden::missing_permission()),
                ),
                _ => {
                    let failure = RcFailure::typed(
                        &self.message,
                        format!("error-{}", self.code.replace('_', "-")),
                    );
                    (StatusCode::BAD_REQUEST, value(&failure))
                }
            },
        }
    }
}

/// A protocol body as JSON; they always serialize.
fn value(body: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(body).unwrap_or_else(|_| json!({"success": false}))
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
        match e {
            BackendError::Rule(rule) => rule.into(),
            other => Self::refused(other.code(), other.to_string()),
        }
    }
}

impl From<PresenceError> for ApiError {
    fn from(e: PresenceError) -> Self {
        let code = e.code();
        Self {
            rocketchat: RcForm::Rule(e.clone()),
            ..Self::refused(code, e.to_string())
        }
    }
}

impl From<IdError> for ApiError {
    fn from(e: IdError) -> Self {
        Self::refused(e.code(), e.message())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    }
}

impl From<ReauthError> for ApiError {
    fn from(e: ReauthError) -> Self {
        Self::refused(e.code(), e.to_string())
    }
}

impl From<ProtocolError> for ApiError {
    fn from(e: ProtocolError) -> Self {
        Self::refused(e.code, e.message)
    }
}

impl IntoResponse for ApiError {
    /// The native rendering.
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// An [`ApiError`] answered on the Rocket.Chat API: the handlers there
/// return `Result<_, RocketChat>`, and `?` converts whatever converts into
/// an [`ApiError`].
#[derive(Debug)]
pub struct RocketChat(pub ApiError);

impl<E: Into<ApiError>> From<E> for RocketChat {
    fn from(e: E) -> Self {
        RocketChat(e.into())
    }
}

impl IntoResponse for RocketChat {
    fn into_response(self) -> Response {
        let (status, body) = self.0.rocketchat();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(error = %self.0.message, "Rocket.Chat API request failed");
        }
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = self.0.retry_after_secs {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_errors_keep_their_native_status_and_rocketchat_wording() {
        let error = ApiError::from(PresenceError::StatusTextDisabled);
        assert_eq!(error.status, StatusCode::FORBIDDEN);
        assert_eq!(error.code, "status_text_disabled");
        let (status, body) = error.rocketchat();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["errorType"], "error-not-allowed");
        assert_eq!(body["success"], false);
    }

    #[test]
    fn unauthorized_carries_both_generations_of_keys_on_rocketchat() {
        let (status, body) = ApiError::from(AuthError::TokenExpired).rocketchat();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["success"], false);
        assert_eq!(body["status"], "error");
        assert_eq!(body["error"], body["message"]);
        let missing = ApiError::from(AuthError::TokenMissing).rocketchat();
        assert_eq!(missing, (status, body));
    }

    #[test]
    fn rate_limits_render_their_wait_everywhere() {
        let error = ApiError::rate_limited("too many status changes; retry in 42 s", 42);
        let native = error.rocketchat();
        assert_eq!(native.0, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(native.1["errorType"], "error-too-many-requests");
        let response = RocketChat(error).into_response();
        assert_eq!(response.headers()[RETRY_AFTER], "42");
        let response = ApiError::rate_limited("x", 0).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
    }

    #[test]
    fn backend_outages_are_503_with_the_message_everywhere() {
        let error = ApiError::from(BackendError::ShuttingDown);
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, body) = error.rocketchat();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, json!({"success": false, "error": error.message}));
    }

    #[test]
    fn the_websocket_frame_carries_code_message_and_ref() {
        let error = ApiError::from(IdError {
            kind: presence_core::IdKind::User,
            problem: presence_core::IdProblem::Empty,
        });
        let frame: serde_json::Value = serde_json::from_str(&error.ws_frame(Some("r1"))).unwrap();
        assert_eq!(frame["type"], "error");
        assert_eq!(frame["code"], "invalid_user_id");
        assert_eq!(frame["ref"], "r1");
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
    }
}
