//! The per-user rate limits on status changes, shared by the WebSocket,
//! the native REST API and the Rocket.Chat API so a client cannot dodge a
//! limit by switching interfaces.

use std::sync::Arc;
use std::time::Instant;

use presence_core::StatusRequest;

use crate::app::App;
use crate::ratelimit::Limit;
use crate::ws::Refusal;

/// Charges `user`'s status-change budget (any change) and, when the request
/// sets a text, the status-text budget (5/min by default).
pub fn check_status_change(
    app: &App,
    user: &Arc<str>,
    request: &StatusRequest,
) -> Result<(), Refusal> {
    let now = Instant::now();
    if let Err(retry) = app.limiters.take_status(user, now) {
        app.metrics.rate_limited(Limit::Status).inc();
        return Err(limited(retry.0));
    }
    let sets_text = request
        .text
        .as_deref()
        .is_some_and(|t| !t.trim().is_empty());
    if sets_text && let Err(retry) = app.limiters.take_status_text(user, now) {
        app.metrics.rate_limited(Limit::StatusText).inc();
        return Err(limited(retry.0));
    }
    Ok(())
}

fn limited(retry_after: std::time::Duration) -> Refusal {
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    Refusal {
        retry_after_secs: Some(secs),
        ..Refusal::new(
            "rate_limited",
            format!("too many status changes; retry in {secs} s"),
        )
    }
}
