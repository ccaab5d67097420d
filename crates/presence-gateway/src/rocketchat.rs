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
//!   unknown parameters; `users.presence` has no `utcOffset` (the service
//!   does not know time zones).

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};
use axum::{Json, Router};
use presence_backend::{BackendError, Profile, UserListing};
use presence_core::{
    CustomStatus, CustomStatusId, CustomStatusName, DisplayedStatus, PresenceError, StatusRequest,
    Timestamp, UserId,
};
use presence_protocol::parse_rfc3339;
use presence_protocol::rocketchat::{
    CustomUserStatus, CustomUserStatusCreate, CustomUserStatusList, CustomUserStatusResponse,
    CustomUserStatusUpdate, GetConnections, GetStatusOther, GetStatusOwn, PresenceResponse,
    PresenceUser, RcFailure, RcForbidden, SetStatusBody, Success, parse_body, parse_status,
    parse_status_type,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::app::App;
use crate::auth::{AuthError, Identity};
use crate::error::{ApiError, RocketChat};

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

// ---------------------------------------------------------------------------
// users.*
// ---------------------------------------------------------------------------

/// `POST users.setStatus {status?, message?, userId?|username?|user?}`.
async fn set_status(
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
async fn get_status(
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

/// `GET users.presence?ids=a,b` (also `ids[]=a&ids[]=b`, repeated `ids=`)
/// or `?from=<ISO 8601>`.
async fn users_presence(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<PresenceResponse>, RocketChat> {
    let caller = authenticate(&app, &headers).await?;
    // Ordered by id, so that answers are stable.
    let answer = |listings: Vec<UserListing>, full: bool| {
        let mut users: Vec<PresenceUser> = listings.iter().map(presence_user).collect();
        users.sort_by(|a, b| a.id.cmp(&b.id));
        Json(PresenceResponse {
            users,
            full,
            success: true,
        })
    };
    // X2: while the cap has stopped the broadcast, Rocket.Chat clients are
    // told nobody is online, and stop asking for deltas.
    if !app.backend.cap_state().await?.enabled {
        return Ok(answer(Vec::new(), true));
    }
    let query = QueryParams::parse(query.as_deref());
    let ids = presence_ids(&query, app.config.max_query_users)?;
    if !ids.is_empty() {
        let listings = app.backend.list_not_offline(Some(&ids)).await?;
        return Ok(answer(listings, false));
    }
    if let Some(from) = query.first("from").and_then(parse_rfc3339) {
        let window_start = now() - PRESENCE_DELTA_WINDOW;
        if from > window_start {
            let listings = app
                .backend
                .list_changed_since(from, &caller.user_id)
                .await?;
            return Ok(answer(listings, false));
        }
    }
    Ok(answer(app.backend.list_not_offline(None).await?, true))
}

/// The ids of a `users.presence` query: every value of `ids`, `ids[]` and
/// `ids[N]`, each split on commas, without empty or duplicate entries.
/// Values that cannot be user ids are dropped: no such user is online.
fn presence_ids(query: &QueryParams, max: usize) -> Result<Vec<Arc<str>>, ApiError> {
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    let values = query
        .pairs
        .iter()
        .filter(|(key, _)| is_ids_key(key))
        .flat_map(|(_, value)| value.split(','));
    for id in values {
        let Ok(id) = UserId::try_from(id) else {
            continue;
        };
        if !seen.insert(id.clone()) {
            continue;
        }
        if ids.len() == max {
            return Err(ApiError::rc_invalid_params(format!(
                "must NOT have more than {max} items"
            )));
        }
        ids.push(Arc::from(id));
    }
    Ok(ids)
}

fn is_ids_key(key: &str) -> bool {
    key == "ids"
        || key
            .strip_prefix("ids[")
            .and_then(|rest| rest.strip_suffix(']'))
            .is_some_and(|index| index.chars().all(|c| c.is_ascii_digit()))
}

fn presence_user(listing: &UserListing) -> PresenceUser {
    PresenceUser {
        id: listing.presence.user.to_string(),
        username: listing.profile.username.clone(),
        name: listing.profile.name.clone(),
        status: listing.presence.view.status,
        utc_offset: None,
        status_text: listing
            .presence
            .view
            .text
            .as_ref()
            .map(|t| t.as_str().to_owned()),
    }
}

// ---------------------------------------------------------------------------
// custom-user-status.*
// ---------------------------------------------------------------------------

/// `GET custom-user-status.list?offset=&count=&name=&_id=&sort=`. Readable
/// by every user, as in Rocket.Chat: clients need the list to offer the
/// statuses in their menus.
async fn list_custom(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<CustomUserStatusList>, RocketChat> {
    authenticate(&app, &headers).await?;
    let query = QueryParams::parse(query.as_deref());
    let offset = page_number(query.first("offset"))?.unwrap_or(0);
    let count = match page_number(query.first("count"))? {
        None => DEFAULT_PAGE_SIZE,
        Some(0) => usize::MAX,
        Some(n) => n.min(MAX_PAGE_SIZE),
    };
    let sort = parse_sort(query.first("sort"))?;
    let name = query
        .first("name")
        .filter(|n| !n.is_empty())
        .map(str::to_lowercase);
    let id = query.first("_id").filter(|id| !id.is_empty());

    let mut matching: Vec<CustomStatus> = app
        .backend
        .custom_statuses()
        .await?
        .into_iter()
        .filter(|s| id.is_none_or(|id| s.id.as_str() == id))
        .filter(|s| {
            name.as_deref()
                .is_none_or(|n| s.name.as_str().to_lowercase().contains(n))
        })
        .collect();
    sort.apply(&mut matching);
    let total = matching.len();
    let statuses: Vec<CustomUserStatus> = matching
        .iter()
        .skip(offset)
        .take(count)
        .map(CustomUserStatus::from)
        .collect();
    Ok(Json(CustomUserStatusList {
        count: statuses.len() as u64,
        offset: offset as u64,
        total: total as u64,
        statuses,
        success: true,
    }))
}

/// `POST custom-user-status.create {name, statusType?}` (admin).
async fn create_custom(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CustomUserStatusResponse>, RocketChat> {
    authenticate_admin(&app, &headers).await?;
    let body: CustomUserStatusCreate = read_body(&app, &headers, body).await?;
    let name = custom_status_name(&body.name)?;
    let status_type = custom_status_type(body.status_type.as_deref())?;
    let created = app
        .backend
        .create_custom_status(name, status_type.unwrap_or(DisplayedStatus::Online))
        .await?;
    Ok(Json(CustomUserStatusResponse::new(&created)))
}

/// `POST custom-user-status.update {_id, name, statusType?}` (admin).
async fn update_custom(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CustomUserStatusResponse>, RocketChat> {
    authenticate_admin(&app, &headers).await?;
    let body: CustomUserStatusUpdate = read_body(&app, &headers, body).await?;
    let not_found =
        || ApiError::rc_failure(RcFailure::custom_status_not_found_for_update(&body.id));
    // An id that cannot be valid names no custom status.
    let Ok(id) = CustomStatusId::try_from(body.id.as_str()) else {
        return Err(not_found().into());
    };
    // Rocket.Chat looks the status up before validating the new values.
    let exists = app
        .backend
        .custom_statuses()
        .await?
        .iter()
        .any(|s| s.id == id);
    if !exists {
        return Err(not_found().into());
    }
    let name = custom_status_name(&body.name)?;
    let status_type = custom_status_type(body.status_type.as_deref())?;
    match app
        .backend
        .update_custom_status(&id, Some(name), status_type)
        .await
    {
        Ok(updated) => Ok(Json(CustomUserStatusResponse::new(&updated))),
        Err(BackendError::Rule(PresenceError::CustomStatusNotFound { .. })) => {
            Err(not_found().into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The body of `custom-user-status.delete`. Rocket.Chat checks only that
/// the id is there, so this does too (its own error, not a schema error).
#[derive(Deserialize)]
struct DeleteBody {
    #[serde(rename = "customUserStatusId", default)]
    id: Option<String>,
}

/// `POST custom-user-status.delete {customUserStatusId}` (admin).
async fn delete_custom(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Success>, RocketChat> {
    authenticate_admin(&app, &headers).await?;
    let body: DeleteBody = read_body(&app, &headers, body).await?;
    let Some(id) = body.id.filter(|id| !id.is_empty()) else {
        return Err(ApiError::rc_failure(RcFailure::custom_status_id_required()).into());
    };
    // An id that cannot be valid names no custom status.
    let id = CustomStatusId::try_from(id.as_str())
        .map_err(|_| ApiError::rc_failure(RcFailure::custom_status_not_found_for_delete()))?;
    app.backend.delete_custom_status(&id).await?;
    Ok(Json(Success::default()))
}

/// C1 in Rocket.Chat's words: a blank name is "required", a name with
/// markup characters "is not a valid name".
fn custom_status_name(raw: &str) -> Result<CustomStatusName, ApiError> {
    if !raw.trim().is_empty() && raw.contains(['<', '>', '&', '"', '\'']) {
        return Err(ApiError::rc_failure(RcFailure::typed(
            format!("{} is not a valid name", echo(raw)),
            "error-input-is-not-a-valid-field",
        )));
    }
    Ok(CustomStatusName::parse(raw)?)
}

/// A custom status's `statusType`; missing or empty is `None`.
fn custom_status_type(raw: Option<&str>) -> Result<Option<DisplayedStatus>, ApiError> {
    match raw {
        None | Some("") => Ok(None),
        Some(raw) => parse_status_type(raw)
            .map(Some)
            .ok_or_else(|| ApiError::rc_failure(RcFailure::invalid_status_type(raw))),
    }
}

/// `offset` and `count`: whole numbers, as Rocket.Chat's schema demands.
fn page_number(raw: Option<&str>) -> Result<Option<usize>, ApiError> {
    match raw {
        None | Some("") => Ok(None),
        Some(raw) => raw
            .parse::<u64>()
            .map(|n| Some(usize::try_from(n).unwrap_or(usize::MAX)))
            .map_err(|_| ApiError::rc_invalid_params("must be number")),
    }
}

/// The `sort` parameter of a list: a JSON object of fields and `1`/`-1`.
#[derive(Debug, Default)]
struct Sort(Vec<(SortField, bool)>);

#[derive(Clone, Copy, Debug)]
enum SortField {
    Name,
    StatusType,
    UpdatedAt,
    Id,
}

impl Sort {
    /// Orders `statuses` in place; without a sort they keep the registry's
    /// order (by name, ignoring case).
    fn apply(&self, statuses: &mut [CustomStatus]) {
        use std::cmp::Ordering;
        if self.0.is_empty() {
            return;
        }
        statuses.sort_by(|a, b| {
            self.0
                .iter()
                .map(|&(field, ascending)| {
                    let order = match field {
                        SortField::Name => a.name.as_str().cmp(b.name.as_str()),
                        SortField::StatusType => a.status_type.as_str().cmp(b.status_type.as_str()),
                        SortField::UpdatedAt => a.updated_at.cmp(&b.updated_at),
                        SortField::Id => a.id.cmp(&b.id),
                    };
                    if ascending { order } else { order.reverse() }
                })
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        });
    }
}

fn parse_sort(raw: Option<&str>) -> Result<Sort, ApiError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(Sort::default());
    };
    let invalid = || {
        ApiError::rc_failure(RcFailure::typed(
            format!("Invalid sort parameter provided: \"{}\"", echo(raw)),
            "error-invalid-sort",
        ))
    };
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(raw).map_err(|_| invalid())?;
    let fields = object
        .iter()
        .map(|(key, direction)| {
            let field = match key.as_str() {
                "name" => SortField::Name,
                "statusType" => SortField::StatusType,
                "_updatedAt" => SortField::UpdatedAt,
                "_id" => SortField::Id,
                _ => return Err(invalid()),
            };
            match direction.as_i64() {
                Some(1) => Ok((field, true)),
                Some(-1) => Ok((field, false)),
                _ => Err(invalid()),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Sort(fields))
}

// ---------------------------------------------------------------------------
// presence.*
// ---------------------------------------------------------------------------

/// `GET presence.getConnections` (admin, X5): connections now and the cap
/// (`0` = unlimited).
async fn get_connections(
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
struct NoParams {}

/// `POST presence.enableBroadcast` (admin, X4).
async fn enable_broadcast(
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

// ---------------------------------------------------------------------------
// Authentication and users
// ---------------------------------------------------------------------------

/// The caller of a request: `X-User-Id` and `X-Auth-Token` must both be
/// there, the token must verify and name that user. Anything else is
/// Rocket.Chat's 401. The profile a token carries is recorded so that
/// `username` lookups find the caller.
async fn authenticate(app: &App, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    // Every refusal here is Rocket.Chat's one 401 body.
    let (Some(user_id), Some(token)) = (header("x-user-id"), header("x-auth-token")) else {
        return Err(AuthError::TokenMissing.into());
    };
    let identity = app.auth.verify(token).inspect_err(|e| {
        tracing::debug!(code = e.code(), "Rocket.Chat API token refused");
    })?;
    if identity.user_id != user_id {
        tracing::debug!("Rocket.Chat API token does not belong to X-User-Id");
        return Err(AuthError::TokenInvalidClaims("the token is not X-User-Id's".into()).into());
    }
    if identity.username.is_some() || identity.name.is_some() {
        let profile = profile_of(&identity);
        if let Err(e) = app.backend.touch_profile(&identity.user_id, &profile).await {
            tracing::debug!(error = %e, "could not record the caller's profile");
        }
    }
    Ok(identity)
}

/// Like [`authenticate`], for the endpoints Rocket.Chat guards with the
/// `manage-user-status` permission: here the `admin` role.
async fn authenticate_admin(app: &App, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let caller = authenticate(app, headers).await?;
    if !caller.admin {
        return Err(ApiError::rc_forbidden(RcForbidden::missing_permission()));
    }
    Ok(caller)
}

fn profile_of(identity: &Identity) -> Profile {
    Profile {
        username: identity.username.clone(),
        name: identity.name.clone(),
    }
}

/// The `userId` / `username` / `user` parameters that name a user in
/// Rocket.Chat; blank values count as absent.
struct UserParams<'a> {
    user_id: Option<&'a str>,
    username: Option<&'a str>,
    user: Option<&'a str>,
}

impl<'a> UserParams<'a> {
    fn new(user_id: Option<&'a str>, username: Option<&'a str>, user: Option<&'a str>) -> Self {
        let present = |v: Option<&'a str>| v.map(str::trim).filter(|v| !v.is_empty());
        Self {
            user_id: present(user_id),
            username: present(username),
            user: present(user),
        }
    }

    /// Rocket.Chat's `isUserFromParams`: no user named, or one that is the
    /// caller by id or username.
    fn names(&self, caller: &Identity) -> bool {
        let own_name = caller.username.as_deref();
        (self.user_id.is_none() && self.username.is_none() && self.user.is_none())
            || self.user_id == Some(caller.user_id.as_str())
            || (own_name.is_some() && (self.username == own_name || self.user == own_name))
    }
}

/// Rocket.Chat's `getUserFromParams`: `userId` first, then `username`,
/// then `user`.
async fn resolve_user(app: &App, params: &UserParams<'_>) -> Result<Arc<str>, ApiError> {
    let invalid_user = || {
        ApiError::rc_failure(RcFailure::typed(
            "The required \"userId\" or \"username\" param provided does not match any users",
            "error-invalid-user",
        ))
    };
    if let Some(id) = params.user_id {
        return UserId::try_from(id)
            .map(Arc::from)
            .map_err(|_| invalid_user());
    }
    let Some(username) = params.username.or(params.user) else {
        return Err(ApiError::rc_failure(RcFailure::typed(
            "The required \"userId\" or \"username\" param was not provided",
            "error-user-param-not-provided",
        )));
    };
    app.backend
        .user_by_username(username)
        .await?
        .ok_or_else(invalid_user)
}

fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_millis(millis)
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// Reads a JSON body of at most `max_body_bytes` and decodes it with
/// Rocket.Chat's error wording. An empty body is `{}`: that is what
/// Rocket.Chat's client sends for a call without parameters.
async fn read_body<T: DeserializeOwned>(
    app: &App,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let limit = app.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large(limit));
    }
    // A stream error here is either the limit or a client that went away;
    // the answer only matters in the first case.
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit))?;
    // JSON is UTF-8; serde would skip the bytes of an ignored value
    // without looking, and accept what it cannot have parsed (F9).
    if std::str::from_utf8(&bytes).is_err() {
        return Err(ApiError::rc_failure(RcFailure::new(
            "The request body is not valid JSON: it is not UTF-8",
        )));
    }
    let json: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    parse_body(json).map_err(ApiError::rc_failure)
}

/// The parameters of a raw query string, decoded, in order. Read as
/// pairs rather than with a serde query format because Rocket.Chat's
/// client sends arrays as `ids[]=a&ids[]=b`, which none of them reads.
///
/// Decoding is `application/x-www-form-urlencoded` as browsers write it,
/// and as lenient as Rocket.Chat's own server (Node's `querystring`),
/// deliberately: `+` is a space, `%2B` a plus, a malformed escape (`%zz`)
/// stays as it is, and bytes that are not UTF-8 become U+FFFD.
struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    fn parse(raw: Option<&str>) -> QueryParams {
        let pairs = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
        QueryParams { pairs }
    }

    /// The first value of `key`.
    fn first(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `s` cut to [`MAX_ECHO_CHARS`] characters, for quoting client input.
fn echo(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(MAX_ECHO_CHARS) {
        None => Cow::Borrowed(s),
        Some((end, _)) => Cow::Owned(format!("{}…", &s[..end])),
    }
}

/// HTTP 413 in Rocket.Chat's words.
fn too_large(limit: usize) -> ApiError {
    ApiError::rocketchat_only(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        RcFailure::typed(
            format!("The request body is larger than {limit} bytes"),
            "error-payload-too-large",
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode_like_browsers_encode() {
        let q = QueryParams::parse(Some(
            "ids%5B%5D=a&ids[]=b%2Cc&name=Out+to+lunch&bad=%zz%4&empty&x=%F0%9F%8C%B4\
             &&plus=a%2Bb&latin1=caf%E9&trail=%",
        ));
        let pairs: Vec<(&str, &str)> = q
            .pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("ids[]", "a"),
                ("ids[]", "b,c"),
                ("name", "Out to lunch"),
                ("bad", "%zz%4"),
                ("empty", ""),
                ("x", "🌴"),
                ("plus", "a+b"),
                ("latin1", "caf\u{FFFD}"),
                ("trail", "%"),
            ]
        );
        assert_eq!(q.first("name"), Some("Out to lunch"));
        assert_eq!(q.first("nope"), None);
        assert!(QueryParams::parse(None).pairs.is_empty());
    }

    #[test]
    fn presence_ids_come_in_every_array_form() {
        let ids = |raw: &str| -> Vec<String> {
            presence_ids(&QueryParams::parse(Some(raw)), 10)
                .unwrap()
                .iter()
                .map(|id| id.to_string())
                .collect()
        };
        assert_eq!(ids("ids=a,b"), ["a", "b"]);
        assert_eq!(ids("ids[]=a&ids[]=b"), ["a", "b"]);
        assert_eq!(ids("ids[0]=a&ids[1]=b"), ["a", "b"]);
        assert_eq!(ids("ids=a&ids=b,a&ids="), ["a", "b"]);
        assert_eq!(ids("idsx=a&ids[x]=b&from=c"), Vec::<String>::new());
        assert!(presence_ids(&QueryParams::parse(Some("ids=a,b,c")), 2).is_err());
    }

    #[test]
    fn sort_accepts_known_fields_and_directions_only() {
        assert!(parse_sort(None).unwrap().0.is_empty());
        assert_eq!(parse_sort(Some(r#"{"name":-1}"#)).unwrap().0.len(), 1);
        for bad in [r#"{"name":2}"#, r#"{"emoji":1}"#, "name", "[1]"] {
            let (status, body) = parse_sort(Some(bad)).unwrap_err().rocketchat();
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert_eq!(body["errorType"], "error-invalid-sort", "{bad}");
        }
    }

    #[test]
    fn a_blank_user_parameter_names_the_caller() {
        let caller = Identity {
            user_id: UserId::try_from("u1").unwrap(),
            admin: false,
            username: Some("alice".into()),
            name: None,
        };
        let check = |id, username, user, expected| {
            let params = UserParams::new(id, username, user);
            assert_eq!(
                params.names(&caller),
                expected,
                "{id:?} {username:?} {user:?}"
            );
        };
        check(None, None, None, true);
        check(Some(" "), Some(""), None, true);
        check(Some("u1"), None, None, true);
        check(None, Some("alice"), None, true);
        check(None, None, Some("alice"), true);
        check(Some("u2"), Some("alice"), None, true);
        check(Some("u2"), None, None, false);
        check(None, Some("bob"), None, false);
    }

    #[tokio::test]
    async fn rate_limit_refusals_carry_their_wait_in_seconds() {
        use crate::auth::{AuthConfig, Authenticator};
        use crate::config::GatewayConfig;
        use crate::metrics::Metrics;
        use crate::ratelimit::{Rate, RateLimits};
        use presence_embedded::{MemoryBackend, MemoryConfig, MemoryStore, SystemClock};

        let backend = MemoryBackend::start(
            MemoryConfig::default(),
            Arc::new(MemoryStore::new()),
            Arc::new(SystemClock),
        )
        .unwrap();
        let auth = Authenticator::new(AuthConfig::Hs256 {
            secret: vec![7; 32],
        })
        .unwrap();
        let config = GatewayConfig {
            rate_limits: RateLimits {
                status: Rate::per(1, Duration::from_secs(42)).unwrap(),
                ..RateLimits::default()
            },
            ..GatewayConfig::default()
        };
        let app = App::new(Arc::new(backend), auth, Metrics::new(), config);
        let user: Arc<str> = Arc::from("u1");
        let request = StatusRequest::default();
        crate::status_change_limits::check_status_change(&app, &user, &request)
            .await
            .unwrap();
        let error = crate::status_change_limits::check_status_change(&app, &user, &request)
            .await
            .unwrap_err();
        assert_eq!(error.retry_after_secs, Some(42));
        let (status, body) = error.rocketchat();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            body["error"],
            "Error, too many requests. Please slow down. You must wait 42 seconds before trying this endpoint again. [error-too-many-requests]"
        );
    }
}
