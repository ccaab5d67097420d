//! The per-user rate limits on status changes, shared by the WebSocket,
//! the native REST API and the Rocket.Chat API so a client cannot dodge a
//! limit by switching interfaces. The buckets themselves are
//! [`crate::ratelimit`]'s; this module decides which ones a status change
//! is charged to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use presence_backend::BucketRate;
use presence_core::StatusRequest;

use crate::app::App;
use crate::error::ApiError;
use crate::ratelimit::{Limit, Rate, RetryAfter};

/// Charges `user`'s status-change budget (any change) and, when the request
/// sets a text, the status-text budget (5/min by default). In a cluster the
/// budgets are shared by every gateway the user reaches
/// ([`presence_backend::SharedRateLimits`]); on one node this gateway's own
/// limiter keeps them, exactly.
pub async fn check_status_change(
    app: &App,
    user: &Arc<str>,
    request: &StatusRequest,
) -> Result<(), ApiError> {
    let limits = &app.config.rate_limits;
    if let Err(retry) = take(app, "status", user, limits.status, |now| {
        app.limiters.take_status(user, now)
    })
    .await
    {
        app.metrics.rate_limited(Limit::Status).inc();
        return Err(limited(retry));
    }
    if request.sets_text()
        && let Err(retry) = take(app, "text", user, limits.status_text, |now| {
            app.limiters.take_status_text(user, now)
        })
        .await
    {
        app.metrics.rate_limited(Limit::StatusText).inc();
        return Err(limited(retry));
    }
    Ok(())
}

/// One token of `bucket`: from the cluster's shared bucket if there is
/// one, else from this gateway's.
async fn take(
    app: &App,
    bucket: &'static str,
    user: &str,
    rate: Rate,
    local: impl FnOnce(Instant) -> Result<(), RetryAfter>,
) -> Result<(), Duration> {
    match &app.shared_limits {
        Some(shared) => {
            let rate = BucketRate {
                capacity: rate.capacity(),
                interval: rate.refill_interval(),
            };
            shared.take(bucket, user, rate).await
        }
        None => local(Instant::now()).map_err(|retry| retry.0),
    }
}

fn limited(retry_after: Duration) -> ApiError {
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    ApiError::rate_limited(format!("too many status changes; retry in {secs} s"), secs)
}
