//! `custom-user-status.*`: listing (paged, filtered, sorted) and the
//! admin's create, update and delete (C1–C3).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use presence_backend::BackendError;
use presence_core::{
    CustomStatus, CustomStatusId, CustomStatusName, DisplayedStatus, PresenceError,
};
use presence_protocol::rocketchat::{
    CustomUserStatus, CustomUserStatusCreate, CustomUserStatusList, CustomUserStatusResponse,
    CustomUserStatusUpdate, RcFailure, Success, parse_status_type,
};
use serde::Deserialize;

use super::caller::{authenticate, authenticate_admin};
use super::request::{QueryParams, echo, read_body};
use super::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::app::App;
use crate::error::{ApiError, RocketChat};

/// `GET custom-user-status.list?offset=&count=&name=&_id=&sort=`. Readable
/// by every user, as in Rocket.Chat: clients need the list to offer the
/// statuses in their menus.
pub(super) async fn list_custom(
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
pub(super) async fn create_custom(
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
pub(super) async fn update_custom(
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
pub(super) struct DeleteBody {
    #[serde(rename = "customUserStatusId", default)]
    id: Option<String>,
}

/// `POST custom-user-status.delete {customUserStatusId}` (admin).
pub(super) async fn delete_custom(
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
pub(super) fn custom_status_name(raw: &str) -> Result<CustomStatusName, ApiError> {
    if !raw.trim().is_empty() && raw.contains(['<', '>', '&', '"', '\'']) {
        return Err(ApiError::rc_failure(RcFailure::typed(
            format!("{} is not a valid name", echo(raw)),
            "error-input-is-not-a-valid-field",
        )));
    }
    Ok(CustomStatusName::parse(raw)?)
}

/// A custom status's `statusType`; missing or empty is `None`.
pub(super) fn custom_status_type(raw: Option<&str>) -> Result<Option<DisplayedStatus>, ApiError> {
    match raw {
        None | Some("") => Ok(None),
        Some(raw) => parse_status_type(raw)
            .map(Some)
            .ok_or_else(|| ApiError::rc_failure(RcFailure::invalid_status_type(raw))),
    }
}

/// `offset` and `count`: whole numbers, as Rocket.Chat's schema demands.
pub(super) fn page_number(raw: Option<&str>) -> Result<Option<usize>, ApiError> {
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
pub(super) struct Sort(pub(super) Vec<(SortField, bool)>);

#[derive(Clone, Copy, Debug)]
pub(super) enum SortField {
    Name,
    StatusType,
    UpdatedAt,
    Id,
}

impl Sort {
    /// Orders `statuses` in place; without a sort they keep the registry's
    /// order (by name, ignoring case).
    pub(super) fn apply(&self, statuses: &mut [CustomStatus]) {
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

pub(super) fn parse_sort(raw: Option<&str>) -> Result<Sort, ApiError> {
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
