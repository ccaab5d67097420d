//! `presence.getConnections` and `presence.enableBroadcast`: the presence
//! cap as admins see and re-enable it (X4, X5).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use presence_backend::BackendError;
use presence_core::PresenceError;
use presence_protocol::rocketchat::{GetConnections, RcFailure, Success};
use serde::Deserialize;

use super::caller::authenticate_admin;
use super::request::read_body;
use crate::app::App;
use crate::error::{ApiError, RocketChat};

/// `GET presence.getConnections` (admin, X5): connections now and the cap
/// (`0` = unlimited).
pub(super) async fn get_connections(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<GetConnections>, RocketChat> {
    authenticate_admin(&app, &headers).await?;
    let cap = app.backend.cap_state().await?;
    Ok(Json(GetConnections {
        current: cap.count,
        max: cap.cap,
        success: true,
    }))
}

/// Bodies of calls without parameters: Rocket.Chat's client sends an empty
/// body (read as `{}`); any JSON object is accepted and ignored.
#[derive(Deserialize)]
pub(super) struct NoParams {}

/// `POST presence.enableBroadcast` (admin, X4).
pub(super) async fn enable_broadcast(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Success>, RocketChat> {
    authenticate_admin(&app, &headers).await?;
    let NoParams {} = read_body(&app, &headers, body).await?;
    match app.backend.enable_broadcast().await {
        Ok(_) => Ok(Json(Success::default())),
        // Rocket.Chat answers this one untyped, with its own wording.
        Err(BackendError::Rule(PresenceError::BroadcastEnableRefused { count, cap })) => {
            Err(ApiError::rc_failure(RcFailure::new(format!(
                "Cannot enable broadcast when there are {count} connections and the limit is {cap}"
            )))
            .into())
        }
        Err(e) => Err(e.into()),
    }
}
