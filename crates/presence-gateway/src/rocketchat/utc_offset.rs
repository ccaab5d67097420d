//! `POST method.call/userSetUtcOffset`: how Rocket.Chat clients report
//! their UTC offset after login (`moment().utcOffset() / 60`, through the
//! REST bridge to the DDP method), kept with the caller's profile for
//! `users.presence` (R3). Only this method is served under `method.call`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use presence_backend::Profile;
use presence_core::UtcOffset;
use presence_protocol::rocketchat::{DdpMethodCall, MethodCallBody, MethodCallResponse};
use serde_json::json;

use super::caller::authenticate;
use super::request::read_body;
use crate::app::App;
use crate::error::{ApiError, RocketChat};

/// The one DDP method served.
pub(super) const METHOD: &str = "userSetUtcOffset";

/// `POST method.call/userSetUtcOffset {message: "{\"msg\":\"method\",
/// \"id\":\"1\",\"method\":\"userSetUtcOffset\",\"params\":[5.5]}"}`:
/// stores the caller's UTC offset (hours, -12 to 14) and answers the DDP
/// `result` message.
pub(super) async fn set_utc_offset(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<MethodCallResponse>, RocketChat> {
    let caller = authenticate(&app, &headers).await?;
    let body: MethodCallBody = read_body(&app, &headers, body).await?;
    let call: DdpMethodCall = serde_json::from_str(&body.message).map_err(|e| {
        ApiError::rc_invalid_params(format!("message is not a DDP method call: {e}"))
    })?;
    if call.msg != "method" || call.method != METHOD {
        return Err(
            ApiError::rc_invalid_params(format!("message must call the method {METHOD}")).into(),
        );
    }
    // Rocket.Chat's `check(utcOffset, Number)`.
    let hours = match call.params.as_slice() {
        [offset] => offset.as_f64(),
        _ => None,
    }
    .ok_or_else(|| ApiError::rc_invalid_params("params must be [utcOffset], a number of hours"))?;
    let offset = UtcOffset::from_hours(hours)
        .map_err(|e| ApiError::rc_invalid_params(format!("utcOffset: {e}")))?;
    let profile = Profile {
        utc_offset: Some(offset),
        ..Profile::default()
    };
    app.backend.touch_profile(&caller.user_id, &profile).await?;
    Ok(Json(MethodCallResponse {
        message: json!({"msg": "result", "id": call.id}).to_string(),
        success: true,
    }))
}
