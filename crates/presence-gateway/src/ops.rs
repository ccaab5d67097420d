//! Operational endpoints: `/healthz` (the process answers; never depends
//! on the backend), `/readyz` (backend reachable and not draining) and
//! `/metrics` (Prometheus text format).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::App;
use crate::metrics::UsersByStatus;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Response {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ok"})),
    )
        .into_response()
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let (status, state) = if app.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if !app.backend.ready().await {
        (StatusCode::SERVICE_UNAVAILABLE, "backend_unavailable")
    } else {
        (StatusCode::OK, "ready")
    };
    (status, axum::Json(serde_json::json!({"status": state}))).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    if let Ok(counts) = app.backend.status_counts().await {
        app.metrics.set_users(&UsersByStatus {
            online: counts.online as i64,
            away: counts.away as i64,
            busy: counts.busy as i64,
            invisible: counts.invisible as i64,
        });
    }
    if let Ok(cap) = app.backend.cap_state().await {
        app.metrics.set_cap(&cap);
    }
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        app.metrics.render(),
    )
        .into_response()
}
