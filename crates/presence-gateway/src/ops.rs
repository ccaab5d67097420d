//! Operational endpoints: `/healthz` (the process answers; never depends
//! on the backend), `/readyz` (backend reachable and not draining) and
//! `/metrics` (Prometheus text format). With `--metrics-listen` they are
//! served on that listener, and `/metrics` only there (F10): the main port
//! keeps the probes, which load balancers use.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::App;

/// The operational routes; `/metrics` only when `with_metrics` (a node
/// with a separate metrics listener keeps it off the public port).
pub fn routes(with_metrics: bool) -> Router<Arc<App>> {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if with_metrics {
        router.route("/metrics", get(metrics))
    } else {
        router
    }
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
        app.metrics.set_users(&counts);
    }
    if let Ok(cap) = app.backend.cap_state().await {
        app.metrics.set_cap(&cap);
    }
    app.metrics.set_connections(&app.connections);
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        app.metrics.render(),
    )
        .into_response()
}
