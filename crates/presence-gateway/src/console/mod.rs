//! The web console at `/console`: a static page and its ES modules,
//! embedded in the binary ([`assets`]), built on the JavaScript client
//! (`clients/js`). It signs in with a pasted token and talks to the same
//! WebSocket and REST API as any client; the server holds no console
//! state and never mints tokens for it.
//!
//! Every response carries a strict Content-Security-Policy: scripts,
//! styles and connections only from this origin, no inline code, no
//! frames, no plugins. The page loads nothing from anywhere else.

pub mod assets;
pub mod cluster;

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::App;
use crate::error::ApiError;
use assets::Asset;

/// The policy of every console response. `connect-src 'self'` covers the
/// page's own WebSocket (`ws:`/`wss:` to the same host, CSP Level 3);
/// `img-src data:` only for the empty favicon.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `/console`, `/console/` and the files under it.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/{*path}", get(file))
        .merge(cluster::routes())
}

async fn index() -> Response {
    serve(&assets::INDEX)
}

async fn file(Path(path): Path<String>) -> Response {
    match assets::find(&path) {
        Some(asset) => serve(asset),
        None => ApiError::not_found("not_found", "no such console file").into_response(),
    }
}

fn serve(asset: &'static Asset) -> Response {
    (
        [
            (CONTENT_TYPE, asset.content_type),
            (CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (X_FRAME_OPTIONS, "DENY"),
            (REFERRER_POLICY, "no-referrer"),
            // The files change with the binary; revalidate rather than
            // run an old console against a new server.
            (CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
        .into_response()
}
