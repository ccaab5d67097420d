//! `users.setStatus` and `users.getStatus`: a user's own status, or
//! (admin) someone else's.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use presence_core::StatusRequest;
use presence_protocol::rocketchat::{
    GetStatusOther, GetStatusOwn, RcFailure, RcForbidden, SetStatusBody, Success, parse_status,
};

use super::caller::{UserParams, authenticate, profile_of, resolve_user};
use super::request::{QueryParams, read_body};
use crate::app::App;
use crate::error::{ApiError, RocketChat};

/// `POST users.setStatus {status?, message?, userId?|username?|user?}`.
pub(super) async fn set_status(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Success>, RocketChat> {
    let caller = authenticate(&app, &headers).await?;
    let body: SetStatusBody = read_body(&app, &headers, body).await?;
    if body.is_empty() {
        // Rocket.Chat's schema: `anyOf: [{required: [message]}, {required: [status]}]`.
        return Err(ApiError::rc_invalid_params(
            "must have required property 'message'\n must have required property 'status'\n must match a schema in anyOf",
        )
        .into());
    }
    let params = UserParams::new(
        body.user_id.as_deref(),
        body.username.as_deref(),
        body.user.as_deref(),
    );
    let caller_id: Arc<str> = caller.user_id.as_arc().clone();
    let target = if params.names(&caller) {
        caller_id.clone()
    } else if caller.admin {
        resolve_user(&app, &params).await?
    } else {
        return Err(ApiError::rc_forbidden(RcForbidden::unauthorized()).into());
    };
    let status = match body.status.as_deref() {
        None => None,
        Some(raw) => Some(
            parse_status(raw).ok_or_else(|| ApiError::rc_failure(RcFailure::invalid_status()))?,
        ),
    };
    let request = StatusRequest {
        status,
        text: body.message,
        expires_at: None,
    };
    // Charged to the caller, as on the native API and the WebSocket.
    crate::status_change_limits::check_status_change(&app, &caller_id, &request).await?;
    let profile = (target == caller_id).then(|| profile_of(&caller));
    app.backend
        .set_status(&target, profile.as_ref(), request)
        .await?;
    Ok(Json(Success::default()))
}

/// `GET users.getStatus?userId=|username=|user=`; the caller by default.
pub(super) async fn get_status(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, RocketChat> {
    let caller = authenticate(&app, &headers).await?;
    let query = QueryParams::parse(query.as_deref());
    let params = UserParams::new(
        query.first("userId"),
        query.first("username"),
        query.first("user"),
    );
    if params.names(&caller) {
        let me = app.backend.self_state(&caller.user_id).await?;
        let own = GetStatusOwn {
            id: caller.user_id.to_string(),
            // Rocket.Chat shows an invisible user their own status as
            // `offline`, what everybody else sees.
            status: me.view.status.shown_to_others(),
            connection_status: me.view.connection,
            message: me
                .view
                .text
                .map(|t| t.as_str().to_owned())
                .unwrap_or_default(),
            success: true,
        };
        return Ok(Json(own).into_response());
    }
    let user = resolve_user(&app, &params).await?;
    let snapshot = app
        .backend
        .presence(std::slice::from_ref(&user))
        .await?
        .pop()
        .ok_or_else(|| {
            ApiError::unavailable(
                "backend_unavailable",
                "the presence backend returned nothing",
            )
        })?;
    let other = GetStatusOther {
        id: user.to_string(),
        status: snapshot.view.status,
        success: true,
    };
    Ok(Json(other).into_response())
}
