//! The native REST API under `/v1` (DESIGN §3): presence reads, the
//! caller's own status and preferences, calendar events, and the admin
//! surface (workspace settings, custom statuses, the presence cap, setting
//! another user's status).
//!
//! Every request flows the same way: [`Caller`] (or [`Admin`]) verifies
//! the bearer token, [`JsonBody`] reads the body within
//! `max_body_bytes` and decodes it with
//! [`presence_protocol::rest::parse_body`], status changes are charged to
//! the caller's rate limits ([`crate::status_change_limits`]), and the
//! [`Backend`] answers. The rules themselves (text length, expiry, invisible allowed…)
//! are enforced by `presence-core` behind the backend, so the REST layer
//! only translates.
//!
//! Every response is JSON, errors included: an [`ApiError`] in its native
//! shape, `{"error": {"code", "message"}}` with the status
//! [`crate::error::status_for_code`] picks (and `Retry-After` on 429).
//! No axum rejection reaches the client as plain text: bodies, paths and
//! tokens are extracted by this module's own extractors, unknown paths
//! under `/v1` get a JSON 404, and a wrong method a JSON 405 (with
//! `Allow`). The `Content-Type` of a request is not checked; the body must
//! simply be a JSON object.
//!
//! | method | path | body | response |
//! |---|---|---|---|
//! | GET | `/v1/users/{id}/presence` | | `PresenceEntry` |
//! | POST | `/v1/presence/query` | `BulkQueryRequest` | `BulkQueryResponse` |
//! | GET | `/v1/presence/online-count` | | `OnlineCount` |
//! | GET | `/v1/me` | | `SelfState` |
//! | PUT | `/v1/me/status` | `SetStatusRequest` | `SelfState` |
//! | POST | `/v1/me/custom-status` | `UseCustomStatusRequest` | `SelfState` |
//! | GET | `/v1/me/preferences` | | `PreferencesView` |
//! | PATCH | `/v1/me/preferences` | `PreferencesPatch` | `PreferencesView` |
//! | POST | `/v1/me/calendar` | `CalendarRequest` | `SelfState` |
//! | GET | `/v1/admin/settings` | | `SettingsView` |
//! | PATCH | `/v1/admin/settings` | `SettingsPatch` | `SettingsView` |
//! | GET | `/v1/admin/custom-statuses` | | `CustomStatusList` |
//! | POST | `/v1/admin/custom-statuses` | `CustomStatusCreate` | 201 `CustomStatusView` |
//! | PATCH | `/v1/admin/custom-statuses/{id}` | `CustomStatusPatch` | `CustomStatusView` |
//! | DELETE | `/v1/admin/custom-statuses/{id}` | | `CustomStatusView` (the deleted one) |
//! | GET | `/v1/admin/cap` | | `CapView` |
//! | POST | `/v1/admin/cap/enable` | none, or `{}` | `CapView` |
//! | PUT | `/v1/admin/users/{id}/status` | `AdminSetStatusRequest` | `SelfState` |
//! | PUT | `/v1/admin/users/{id}/profile` | `UserProfile` | `UserProfile` (as stored) |
//! | PUT | `/v1/admin/users/profiles` | `BulkProfilesRequest` | `BulkProfilesResponse` |
//!
//! Everything under `/v1/admin` needs the admin role; users change their
//! own status through `/v1/me/status`. Status changes (own status, custom
//! status, calendar, an admin's change of another user) are charged to the
//! caller's per-user budget, shared with the WebSocket.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_LENGTH;
use axum::http::request::Parts;
use axum::routing::{MethodRouter, any, get, patch, post, put};
use futures_util::StreamExt;
use presence_backend::{Profile, SelfSnapshot};
use presence_core::{
    CalendarSource, CustomStatusId, CustomStatusName, StatusRequest, UserId, UtcOffset,
};
use presence_protocol::rest::{
    self as wire, AdminSetStatusRequest, BulkProfilesRequest, BulkProfilesResponse,
    BulkQueryRequest, BulkQueryResponse, CalendarRequest, CapView, CustomStatusCreate,
    CustomStatusList, CustomStatusPatch, CustomStatusView, OnlineCount, PreferencesPatch,
    PreferencesView, SetStatusRequest, SettingsView, UseCustomStatusRequest, UserProfile,
};
use presence_protocol::{PresenceEntry, SelfState};
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::auth::{self, AuthError, Identity};
use crate::error::ApiError;
use crate::ws::check_user_count;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/users/{id}/presence", json_only(get(user_presence)))
        .route("/v1/presence/query", json_only(post(query_presence)))
        .route("/v1/presence/online-count", json_only(get(online_count)))
        .route("/v1/me", json_only(get(me)))
        .route("/v1/me/status", json_only(put(set_status)))
        .route("/v1/me/custom-status", json_only(post(use_custom_status)))
        .route(
            "/v1/me/preferences",
            json_only(get(preferences).patch(set_preferences)),
        )
        .route("/v1/me/calendar", json_only(post(calendar)))
        .route(
            "/v1/admin/settings",
            json_only(get(settings).patch(update_settings)),
        )
        .route(
            "/v1/admin/custom-statuses",
            json_only(get(list_custom_statuses).post(create_custom_status)),
        )
        .route(
            "/v1/admin/custom-statuses/{id}",
            json_only(patch(update_custom_status).delete(delete_custom_status)),
        )
        .route("/v1/admin/cap", json_only(get(cap_state)))
        .route("/v1/admin/cap/enable", json_only(post(enable_broadcast)))
        .route(
            "/v1/admin/users/{id}/status",
            json_only(put(admin_set_status)),
        )
        .route(
            "/v1/admin/users/{id}/profile",
            json_only(put(admin_put_profile)),
        )
        .route(
            "/v1/admin/users/profiles",
            json_only(put(admin_put_profiles)),
        )
        .route("/v1/{*rest}", any(no_such_route))
}

/// The authenticated caller of a request: `Authorization: Bearer <jwt>`.
pub struct Caller(pub Identity);

/// A caller holding the admin role; anyone else gets 403 `forbidden`.
pub struct Admin(pub Identity);

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        // REST reads the header only (`?token=` is for WebSockets, whose
        // browser API cannot set headers), and says so (F12).
        let token = auth::bearer_token(&parts.headers).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                AuthError::TokenMissing.code(),
                "no token was provided; send `Authorization: Bearer <token>`",
            )
        })?;
        Ok(Caller(app.auth.verify(token)?))
    }
}

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let Caller(identity) = Caller::from_request_parts(parts, app).await?;
        if !identity.admin {
            return Err(ApiError::forbidden());
        }
        Ok(Admin(identity))
    }
}

impl Caller {
    fn user(&self) -> Arc<str> {
        self.0.user_id.as_arc().clone()
    }

    /// The profile the token carries, recorded with every change.
    fn profile(&self) -> Profile {
        Profile {
            username: self.0.username.clone(),
            name: self.0.name.clone(),
            utc_offset: None,
        }
    }
}

/// A request body: read up to `max_body_bytes` (413 `payload_too_large`
/// beyond) and decoded as a JSON object of `T` (400 `invalid_json` or
/// `invalid_request`).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<App>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &Arc<App>) -> Result<Self, ApiError> {
        let body = read_body(request, app.config.max_body_bytes).await?;
        wire::parse_body(&body).map(JsonBody).map_err(body_error)
    }
}

/// The body of a call that takes no parameters: nothing, whitespace, or
/// the empty object `{}`. Anything else is refused like any other bad
/// body (`payload_too_large`, `invalid_json`, `invalid_request`), so a
/// client that meant to send parameters learns they were not read (F8).
pub struct NoBody;

/// What [`NoBody`] accepts when the body is not empty.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

impl FromRequest<Arc<App>> for NoBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &Arc<App>) -> Result<Self, ApiError> {
        let body = read_body(request, app.config.max_body_bytes).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(NoBody);
        }
        // JSON is UTF-8; serde would skip the bytes of an ignored value
        // without looking.
        if std::str::from_utf8(&body).is_err() {
            return Err(ApiError::bad_request(
                wire::INVALID_JSON,
                "the body is not valid JSON: it is not UTF-8",
            ));
        }
        let NoParams {} = wire::parse_body(&body).map_err(body_error)?;
        Ok(NoBody)
    }
}

/// A user id from the path, validated like every user id a client sends.
struct UserPath(UserId);

impl FromRequestParts<Arc<App>> for UserPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let PathId(id) = PathId::from_request_parts(parts, app).await?;
        Ok(UserPath(UserId::try_from(id)?))
    }
}

/// The `{id}` segment of the path, percent-decoded.
struct PathId(String);

impl FromRequestParts<Arc<App>> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, app).await {
            Ok(Path(id)) => Ok(PathId(id)),
            Err(_) => Err(ApiError::bad_request(
                "invalid_path",
                "the path could not be decoded",
            )),
        }
    }
}

type Reply<T> = Result<Json<T>, ApiError>;

// Presence reads.

async fn user_presence(
    State(app): State<Arc<App>>,
    _caller: Caller,
    UserPath(user): UserPath,
) -> Reply<PresenceEntry> {
    let snapshots = app.backend.presence(&[Arc::from(user)]).await?;
    let entry = snapshots
        .first()
        .map(|s| PresenceEntry::new(&*s.user, &s.view, s.version))
        .ok_or_else(|| {
            ApiError::unavailable("backend_unavailable", "the backend returned no presence")
        })?;
    Ok(Json(entry))
}

async fn query_presence(
    State(app): State<Arc<App>>,
    _caller: Caller,
    JsonBody(body): JsonBody<BulkQueryRequest>,
) -> Reply<BulkQueryResponse> {
    let users = user_ids(&body.users, app.config.max_query_users)?;
    let snapshots = app.backend.presence(&users).await?;
    let users = snapshots
        .iter()
        .map(|s| PresenceEntry::new(&*s.user, &s.view, s.version))
        .collect();
    Ok(Json(BulkQueryResponse { users }))
}

async fn online_count(State(app): State<Arc<App>>, _caller: Caller) -> Reply<OnlineCount> {
    let counts = app.backend.status_counts().await?;
    Ok(Json(OnlineCount {
        count: counts.online_total(),
    }))
}

// The caller's own presence.

async fn me(State(app): State<Arc<App>>, caller: Caller) -> Reply<SelfState> {
    let me = app.backend.self_state(&caller.0.user_id).await?;
    Ok(Json(self_state(&me)))
}

async fn set_status(
    State(app): State<Arc<App>>,
    caller: Caller,
    JsonBody(body): JsonBody<SetStatusRequest>,
) -> Reply<SelfState> {
    let user = caller.user();
    let request = body.into_request();
    crate::status_change_limits::check_status_change(&app, &user, &request).await?;
    let me = app
        .backend
        .set_status(&user, Some(&caller.profile()), request)
        .await?;
    Ok(Json(self_state(&me)))
}

async fn use_custom_status(
    State(app): State<Arc<App>>,
    caller: Caller,
    JsonBody(body): JsonBody<UseCustomStatusRequest>,
) -> Reply<SelfState> {
    let id = CustomStatusId::try_from(body.id)?;
    let user = caller.user();
    crate::status_change_limits::check_status_change(&app, &user, &StatusRequest::default())
        .await?;
    let me = app
        .backend
        .use_custom_status(&user, Some(&caller.profile()), &id)
        .await?;
    Ok(Json(self_state(&me)))
}

async fn preferences(State(app): State<Arc<App>>, caller: Caller) -> Reply<PreferencesView> {
    let me = app.backend.self_state(&caller.0.user_id).await?;
    Ok(Json(me.view.preferences.into()))
}

async fn set_preferences(
    State(app): State<Arc<App>>,
    caller: Caller,
    JsonBody(body): JsonBody<PreferencesPatch>,
) -> Reply<PreferencesView> {
    let update = body.to_update(app.config.idle_floor_secs)?;
    let me = app
        .backend
        .set_preferences(&caller.0.user_id, update)
        .await?;
    Ok(Json(me.view.preferences.into()))
}

async fn calendar(
    State(app): State<Arc<App>>,
    caller: Caller,
    JsonBody(body): JsonBody<CalendarRequest>,
) -> Reply<SelfState> {
    let user = caller.user();
    crate::status_change_limits::check_status_change(&app, &user, &StatusRequest::default())
        .await?;
    let me = app
        .backend
        .calendar(&user, body.event_id, body.busy, CalendarSource::Integration)
        .await?;
    Ok(Json(self_state(&me)))
}

// Admin: workspace settings.

async fn settings(State(app): State<Arc<App>>, _admin: Admin) -> Reply<SettingsView> {
    let settings = app.backend.settings().await?;
    Ok(Json(SettingsView::from(&*settings)))
}

async fn update_settings(
    State(app): State<Arc<App>>,
    _admin: Admin,
    JsonBody(body): JsonBody<wire::SettingsPatch>,
) -> Reply<SettingsView> {
    let patch = body.validated(app.config.idle_floor_secs)?;
    let settings = app.backend.update_settings(patch).await?;
    Ok(Json(SettingsView::from(&*settings)))
}

// Admin: custom statuses (C1–C3).

async fn list_custom_statuses(
    State(app): State<Arc<App>>,
    _admin: Admin,
) -> Reply<CustomStatusList> {
    let statuses = app.backend.custom_statuses().await?;
    Ok(Json(statuses.iter().collect()))
}

async fn create_custom_status(
    State(app): State<Arc<App>>,
    _admin: Admin,
    JsonBody(body): JsonBody<CustomStatusCreate>,
) -> Result<(StatusCode, Json<CustomStatusView>), ApiError> {
    let name = CustomStatusName::parse(&body.name)?;
    let status = app
        .backend
        .create_custom_status(name, body.status_type)
        .await?;
    Ok((StatusCode::CREATED, Json(CustomStatusView::from(&status))))
}

async fn update_custom_status(
    State(app): State<Arc<App>>,
    _admin: Admin,
    PathId(id): PathId,
    JsonBody(body): JsonBody<CustomStatusPatch>,
) -> Reply<CustomStatusView> {
    let id = CustomStatusId::try_from(id)?;
    let name = body
        .name
        .as_deref()
        .map(CustomStatusName::parse)
        .transpose()?;
    let status = app
        .backend
        .update_custom_status(&id, name, body.status_type)
        .await?;
    Ok(Json(CustomStatusView::from(&status)))
}

async fn delete_custom_status(
    State(app): State<Arc<App>>,
    _admin: Admin,
    PathId(id): PathId,
) -> Reply<CustomStatusView> {
    let id = CustomStatusId::try_from(id)?;
    let status = app.backend.delete_custom_status(&id).await?;
    Ok(Json(CustomStatusView::from(&status)))
}

// Admin: the presence cap (X4, X5).

async fn cap_state(State(app): State<Arc<App>>, _admin: Admin) -> Reply<CapView> {
    let cap = app.backend.cap_state().await?;
    Ok(Json(cap.into()))
}

async fn enable_broadcast(
    State(app): State<Arc<App>>,
    _admin: Admin,
    _body: NoBody,
) -> Reply<CapView> {
    let cap = app.backend.enable_broadcast().await?;
    Ok(Json(cap.into()))
}

// Admin: another user's status.

async fn admin_set_status(
    State(app): State<Arc<App>>,
    Admin(admin): Admin,
    UserPath(user): UserPath,
    JsonBody(body): JsonBody<AdminSetStatusRequest>,
) -> Reply<SelfState> {
    let request = body.into_request();
    // The admin's budget pays: limits protect the service from a caller.
    let caller: Arc<str> = admin.user_id.as_arc().clone();
    crate::status_change_limits::check_status_change(&app, &caller, &request).await?;
    // The admin's profile is not the target's, so none is recorded.
    let me = app.backend.set_status(&user, None, request).await?;
    Ok(Json(self_state(&me)))
}

// Admin: stored profiles (R3).

/// The most characters of a stored username or display name.
pub const MAX_PROFILE_CHARS: usize = 120;

/// How many profiles of a bulk upsert are stored at once.
const PROFILE_WRITES_IN_FLIGHT: usize = 32;

/// R3: stores `user`'s profile for `users.presence`, replacing the stored
/// one whole. Tokens that carry `username`/`name` claims still override
/// those fields when their user calls.
async fn admin_put_profile(
    State(app): State<Arc<App>>,
    _admin: Admin,
    UserPath(user): UserPath,
    JsonBody(body): JsonBody<UserProfile>,
) -> Reply<UserProfile> {
    let profile = stored_profile(&body)?;
    app.backend.put_profile(&user, &profile).await?;
    Ok(Json(profile_view(&profile)))
}

/// R3: a directory sync: every entry is checked first (one bad entry
/// stores nothing), then each profile is stored as by
/// [`admin_put_profile`]. At most `max_query_users` entries per request.
async fn admin_put_profiles(
    State(app): State<Arc<App>>,
    _admin: Admin,
    JsonBody(body): JsonBody<BulkProfilesRequest>,
) -> Reply<BulkProfilesResponse> {
    check_user_count(body.profiles.len(), app.config.max_query_users)?;
    let mut profiles = Vec::with_capacity(body.profiles.len());
    for entry in &body.profiles {
        let id = UserId::try_from(entry.id.as_str())?;
        profiles.push((id, stored_profile(&entry.profile())?));
    }
    let stored = profiles.len();
    let mut writes = futures_util::stream::iter(profiles)
        .map(|(id, profile)| {
            let app = app.clone();
            async move { app.backend.put_profile(&id, &profile).await }
        })
        .buffer_unordered(PROFILE_WRITES_IN_FLIGHT);
    while let Some(written) = writes.next().await {
        written?;
    }
    Ok(Json(BulkProfilesResponse { stored }))
}

/// A profile as the admin API takes it: names trimmed, 1 to
/// [`MAX_PROFILE_CHARS`] characters without control characters; the UTC
/// offset from -12 to 14 hours.
fn stored_profile(body: &UserProfile) -> Result<Profile, ApiError> {
    let text = |field: &str, value: &Option<String>| -> Result<Option<String>, ApiError> {
        let Some(value) = value else {
            return Ok(None);
        };
        let value = value.trim();
        let chars = value.chars().count();
        if chars == 0 || chars > MAX_PROFILE_CHARS || value.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!(
                    "{field} must be 1 to {MAX_PROFILE_CHARS} characters without control characters"
                ),
            ));
        }
        Ok(Some(value.to_owned()))
    };
    let utc_offset = body
        .utc_offset
        .map(UtcOffset::from_hours)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_body", format!("utc_offset: {e}")))?;
    Ok(Profile {
        username: text("username", &body.username)?,
        name: text("name", &body.name)?,
        utc_offset,
    })
}

fn profile_view(profile: &Profile) -> UserProfile {
    UserProfile {
        username: profile.username.clone(),
        name: profile.name.clone(),
        utc_offset: profile.utc_offset.map(UtcOffset::hours),
    }
}

// Fallbacks: JSON even where axum would answer with an empty body.

/// The JSON 404 of every path no route serves (also the router's
/// fallback, so `/V1/...` or `/foo` answer like unknown `/v1` paths).
pub async fn no_such_route() -> ApiError {
    ApiError::not_found(
        "not_found",
        "no such endpoint; paths are case-sensitive (see /v1 and /api/v1)",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not support this method; see the Allow header",
    )
}

/// A route whose unsupported methods answer with a JSON 405 (axum still
/// adds the `Allow` header).
fn json_only(route: MethodRouter<Arc<App>>) -> MethodRouter<Arc<App>> {
    route.fallback(method_not_allowed)
}

// Helpers.

fn self_state(me: &SelfSnapshot) -> SelfState {
    SelfState::new(&*me.user, &me.view, me.version)
}

/// The users a body names: at most `max` (`too_many_users`), each a valid
/// id (`invalid_user_id`), in that order.
fn user_ids(users: &[String], max: usize) -> Result<Vec<Arc<str>>, ApiError> {
    check_user_count(users.len(), max)?;
    users
        .iter()
        .map(|u| Ok(Arc::from(UserId::try_from(u.as_str())?)))
        .collect()
}

/// Reads the whole body, refusing more than `limit` bytes: at once when
/// `Content-Length` says so, else as soon as the bytes read pass it.
async fn read_body(request: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(payload_too_large(limit));
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut chunks = request.into_body().into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::bad_request("invalid_body", "the request body could not be read")
        })?;
        if body.len() + chunk.len() > limit {
            return Err(payload_too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn payload_too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is larger than {limit} bytes"),
    )
}

/// The gateway's error for a body `parse_body` refused; its codes are the
/// two constants of [`presence_protocol::rest`].
fn body_error(e: wire::ApiError) -> ApiError {
    let code = if e.code() == wire::INVALID_JSON {
        wire::INVALID_JSON
    } else {
        wire::INVALID_REQUEST
    };
    ApiError::bad_request(code, e.error.message)
}

#[cfg(test)]
mod tests {
    use presence_core::IdleTimeLimit;

    use super::*;

    #[test]
    fn settings_patch_applies_the_idle_floor() {
        let patch: wire::SettingsPatch =
            serde_json::from_str(r#"{"default_idle_time_limit": 59}"#).expect("a patch");
        let code = patch.validated(60).map_err(|e| e.code());
        assert_eq!(code, Err("idle_time_limit_too_low"));
        let lowered = patch.validated(1).expect("above a lowered floor");
        assert_eq!(
            lowered.default_idle_time_limit.map(IdleTimeLimit::seconds),
            Some(59)
        );
    }

    #[test]
    fn custom_status_ids_that_cannot_exist_are_not_found() {
        for id in [String::new(), "x".repeat(65), "a\u{0}b".into()] {
            let error = ApiError::from(CustomStatusId::try_from(id).unwrap_err());
            assert_eq!(error.code, "custom_status_not_found");
            assert_eq!(error.status, StatusCode::NOT_FOUND);
            assert_eq!(error.message, "no custom status has this id");
        }
        assert!(CustomStatusId::try_from("cs18f0a1").is_ok());
    }

    #[test]
    fn too_many_users_is_checked_before_the_ids() {
        let code = |users: &[&str], max| {
            let users: Vec<String> = users.iter().map(|u| u.to_string()).collect();
            user_ids(&users, max)
                .map(|ids| ids.len())
                .map_err(|e| e.code)
        };
        assert_eq!(code(&["a", "b"], 2), Ok(2));
        assert_eq!(code(&["a", ""], 2), Err("invalid_user_id"));
        assert_eq!(code(&["a", "", "c"], 2), Err("too_many_users"));
    }
}
