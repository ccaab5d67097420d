//! The Rocket.Chat-compatible REST API under `/api/v1` (DESIGN §3), so
//! Rocket.Chat clients and SDKs (`@rocket.chat/api-client`) use the service
//! unchanged.
//!
//! | endpoint | who | answer |
//! |---|---|---|
//! | `POST users.setStatus` | self; admin for others | `{success}` |
//! | `GET users.getStatus` | any user | own: `{_id, status, connectionStatus, message, success}`; other: `{_id, status, success}` |
//! | `GET users.presence` | any user | `{users, full, success}` |
//! | `GET custom-user-status.list` | any user | `{statuses, count, offset, total, success}` |
//! | `POST custom-user-status.create\|update` | admin | `{customUserStatus, success}` |
//! | `POST custom-user-status.delete` | admin | `{success}` |
//! | `GET presence.getConnections` | admin | `{current, max, success}` |
//! | `POST presence.enableBroadcast` | admin | `{success}` |
//! | `POST method.call/userSetUtcOffset` | any user, for themselves | `{message, success}` |
//!
//! How a request flows: `authenticate` reads `X-User-Id` and
//! `X-Auth-Token` (the token is one of our JWTs; its subject must be the
//! user id), the handler reads the raw query (`QueryParams`) or body
//! (`read_body`) itself, and every refusal is an [`ApiError`] that the
//! handlers answer as [`RocketChat`], in Rocket.Chat's shapes. Nothing axum
//! could reject is extracted, so a client never sees a plain-text error:
//! Rocket.Chat's client parses every 2xx and 400 answer as JSON. Unknown
//! paths under `/api` and wrong methods answer JSON too.
//!
//! Where this API deliberately differs from Rocket.Chat, and why:
//! - T4: choosing a status clears the status text unless the same request
//!   sets one; Rocket.Chat keeps the old text.
//! - T1: a text over 120 characters is refused
//!   (`error-status-text-too-long`); Rocket.Chat silently truncates.
//! - T5: with free status text disabled only requests that set a text are
//!   refused (`error-not-allowed`); Rocket.Chat refuses the whole endpoint.
//! - Users are whoever tokens name: any `userId` is a user (offline until
//!   seen), so only unknown *usernames* are `error-invalid-user`. Username
//!   lookups are exact, not case-insensitive.
//! - Rate limits are the service's per-user status-change limits
//!   ([`crate::status_change_limits`], charged to the caller and shared
//!   with the native API and the WebSocket), answered with Rocket.Chat's 429 body plus
//!   `errorType` and a `Retry-After` header.
//! - Custom status create/update/delete and the presence endpoints need the
//!   admin role and answer 403 with Rocket.Chat's missing-permission body
//!   (Rocket.Chat answers 400 `not_authorized` for the custom statuses). A
//!   custom status created without `statusType` maps to `online`; an update
//!   without one keeps the current type.
//! - `presence.enableBroadcast` needs no second factor, and is refused
//!   while the connection count is not *below* the cap (X4); Rocket.Chat
//!   refuses only above it.
//! - `custom-user-status.list` ignores `query` (a raw MongoDB filter) and
//!   unknown parameters.
//! - `users.presence` (R3) always carries `_id, username, name, status,
//!   utcOffset`. Profiles come from token claims (`username`, `name`), an
//!   admin's stored profile (`PUT /v1/admin/users/{id}/profile`), and the
//!   client's own UTC offset (`method.call/userSetUtcOffset`, or
//!   `utc_offset` on the WebSocket upgrade). When nothing is known the
//!   username is the user id, the name is the username, and `utcOffset`
//!   is 0. UTC offsets outside -12…14 hours are refused.
//! - `method.call` serves only `userSetUtcOffset`, with no rate limit of
//!   its own (a repeated offset writes nothing).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{MethodRouter, any, get, post};
use serde_json::json;

use crate::app::App;
use crate::error::{ApiError, RocketChat};

mod caller;
mod cap;
mod custom_statuses;
mod request;
mod users;
mod users_presence;
mod utc_offset;

#[cfg(test)]
mod tests;

use cap::{enable_broadcast, get_connections};
use custom_statuses::{create_custom, delete_custom, list_custom, update_custom};
use users::{get_status, set_status};
use users_presence::users_presence;
use utc_offset::set_utc_offset;

/// `users.presence?from=` within this window lists only the users changed
/// since; an older (or unparseable) `from` gets the full list, as in
/// Rocket.Chat.
pub const PRESENCE_DELTA_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Page size of `custom-user-status.list` without `count` (Rocket.Chat's
/// `API_Default_Count`).
pub const DEFAULT_PAGE_SIZE: usize = 50;

/// The largest page (Rocket.Chat's `API_Upper_Count_Limit`); `count=0`
/// means "all", as with Rocket.Chat's default `API_Allow_Infinite_Count`.
pub const MAX_PAGE_SIZE: usize = 100;

/// The most characters of client input quoted back in an error message.
const MAX_ECHO_CHARS: usize = 64;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/users.setStatus", only(post(set_status)))
        .route("/api/v1/users.getStatus", only(get(get_status)))
        .route("/api/v1/users.presence", only(get(users_presence)))
        .route("/api/v1/custom-user-status.list", only(get(list_custom)))
        .route(
            "/api/v1/custom-user-status.create",
            only(post(create_custom)),
        )
        .route(
            "/api/v1/custom-user-status.update",
            only(post(update_custom)),
        )
        .route(
            "/api/v1/custom-user-status.delete",
            only(post(delete_custom)),
        )
        .route(
            "/api/v1/presence.getConnections",
            only(get(get_connections)),
        )
        .route(
            "/api/v1/presence.enableBroadcast",
            only(post(enable_broadcast)),
        )
        .route(
            "/api/v1/method.call/userSetUtcOffset",
            only(post(set_utc_offset)),
        )
        .route("/api", any(not_found))
        .route("/api/", any(not_found))
        .route("/api/{*rest}", any(not_found))
}

/// A route whose other methods answer a JSON 405 instead of axum's empty
/// one.
fn only(route: MethodRouter<Arc<App>>) -> MethodRouter<Arc<App>> {
    route.fallback(|| async {
        RocketChat(ApiError::rocketchat_only(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            json!({"success": false, "error": "Method not allowed"}),
        ))
    })
}

async fn not_found() -> RocketChat {
    RocketChat(ApiError::rocketchat_only(
        StatusCode::NOT_FOUND,
        "not_found",
        json!({"success": false, "error": "Resource not found"}),
    ))
}
