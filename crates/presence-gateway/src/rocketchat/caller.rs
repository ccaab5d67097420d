//! Who is calling (`X-User-Id` and `X-Auth-Token`) and which user a
//! request names (`userId`, `username`, `user`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use presence_backend::Profile;
use presence_core::{Timestamp, UserId};
use presence_protocol::rocketchat::{RcFailure, RcForbidden};

use crate::app::App;
use crate::auth::{AuthError, Identity};
use crate::error::ApiError;

/// The caller of a request: `X-User-Id` and `X-Auth-Token` must both be
/// there, the token must verify and name that user. Anything else is
/// Rocket.Chat's 401. The profile a token carries is recorded so that
/// `username` lookups find the caller.
pub(super) async fn authenticate(app: &App, headers: &HeaderMap) -> Result<Identity, ApiError> {
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
pub(super) async fn authenticate_admin(
    app: &App,
    headers: &HeaderMap,
) -> Result<Identity, ApiError> {
    let caller = authenticate(app, headers).await?;
    if !caller.admin {
        return Err(ApiError::rc_forbidden(RcForbidden::missing_permission()));
    }
    Ok(caller)
}

pub(super) fn profile_of(identity: &Identity) -> Profile {
    Profile {
        username: identity.username.clone(),
        name: identity.name.clone(),
        utc_offset: None,
    }
}

/// The `userId` / `username` / `user` parameters that name a user in
/// Rocket.Chat; blank values count as absent.
pub(super) struct UserParams<'a> {
    user_id: Option<&'a str>,
    username: Option<&'a str>,
    user: Option<&'a str>,
}

impl<'a> UserParams<'a> {
    pub(super) fn new(
        user_id: Option<&'a str>,
        username: Option<&'a str>,
        user: Option<&'a str>,
    ) -> Self {
        let present = |v: Option<&'a str>| v.map(str::trim).filter(|v| !v.is_empty());
        Self {
            user_id: present(user_id),
            username: present(username),
            user: present(user),
        }
    }

    /// Rocket.Chat's `isUserFromParams`: no user named, or one that is the
    /// caller by id or username.
    pub(super) fn names(&self, caller: &Identity) -> bool {
        let own_name = caller.username.as_deref();
        (self.user_id.is_none() && self.username.is_none() && self.user.is_none())
            || self.user_id == Some(caller.user_id.as_str())
            || (own_name.is_some() && (self.username == own_name || self.user == own_name))
    }
}

/// Rocket.Chat's `getUserFromParams`: `userId` first, then `username`,
/// then `user`.
pub(super) async fn resolve_user(app: &App, params: &UserParams<'_>) -> Result<Arc<str>, ApiError> {
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

pub(super) fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_millis(millis)
}
