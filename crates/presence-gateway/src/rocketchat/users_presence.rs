//! `users.presence`: the directory of users who are not offline, whole
//! or as the changes since a moment, with their profiles (R3).

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use presence_backend::UserListing;
use presence_core::{UserId, UtcOffset};
use presence_protocol::parse_rfc3339;
use presence_protocol::rocketchat::{PresenceResponse, PresenceUser};

use super::PRESENCE_DELTA_WINDOW;
use super::caller::{authenticate, now};
use super::request::QueryParams;
use crate::app::App;
use crate::error::{ApiError, RocketChat};

/// `GET users.presence?ids=a,b` (also `ids[]=a&ids[]=b`, repeated `ids=`)
/// or `?from=<ISO 8601>`.
pub(super) async fn users_presence(
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
pub(super) fn presence_ids(query: &QueryParams, max: usize) -> Result<Vec<Arc<str>>, ApiError> {
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

pub(super) fn is_ids_key(key: &str) -> bool {
    key == "ids"
        || key
            .strip_prefix("ids[")
            .and_then(|rest| rest.strip_suffix(']'))
            .is_some_and(|index| index.chars().all(|c| c.is_ascii_digit()))
}

/// R3: every field Rocket.Chat has, whatever is known. The fallbacks:
/// the username is the user id, the name is the username, the UTC offset
/// is 0 (UTC).
pub(super) fn presence_user(listing: &UserListing) -> PresenceUser {
    let id = listing.presence.user.to_string();
    let profile = &listing.profile;
    let username = profile.username.clone().unwrap_or_else(|| id.clone());
    PresenceUser {
        name: profile.name.clone().unwrap_or_else(|| username.clone()),
        username,
        id,
        status: listing.presence.view.status,
        utc_offset: profile.utc_offset.map_or(0.0, UtcOffset::hours),
        status_text: listing
            .presence
            .view
            .text
            .as_ref()
            .map(|t| t.as_str().to_owned()),
    }
}
