//! A shard leader's refusal (`{"code", "message"}`) turned back into the
//! [`BackendError`] the embedded backend would have returned, so clients
//! see the same code and message in both modes.

use presence_core::{Platform, PresenceError};

use presence_backend::BackendError;

/// The first unsigned number in `text` after `after`, for rebuilding a
/// rule error's fields from the leader's message.
fn number_after(text: &str, after: &str) -> u64 {
    text.split_once(after)
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A leader's refusal as the [`BackendError`] the embedded backend would
/// have returned: the same code, and the same message wherever the
/// message's fields can be read back. Codes that are not rule errors
/// (`wrong_shard`, `invalid_command`) mean the cluster is misconfigured or
/// mid-failover: `backend_unavailable`.
pub fn error_from_reply(code: &str, message: &str) -> BackendError {
    let quoted = || message.split('\'').nth(1).unwrap_or_default().to_owned();
    let rule = match code {
        "status_text_too_long" => PresenceError::StatusTextTooLong {
            len: number_after(message, "is") as usize,
            max: number_after(message, "limit is") as usize,
        },
        "status_text_invalid" => PresenceError::StatusTextInvalid,
        "status_text_disabled" => PresenceError::StatusTextDisabled,
        "idle_time_limit_too_low" => PresenceError::IdleTimeLimitTooLow {
            seconds: number_after(message, "limit of"),
            min: number_after(message, "minimum of"),
        },
        "idle_time_limit_too_high" => PresenceError::IdleTimeLimitTooHigh {
            seconds: number_after(message, "limit of"),
            max: number_after(message, "maximum of"),
        },
        "invisible_disabled" => PresenceError::InvisibleDisabled,
        "unsupported_event" => {
            let platform = message
                .strip_prefix("a ")
                .and_then(|m| m.split(' ').next())
                .and_then(|p| serde_json::from_value(serde_json::Value::String(p.into())).ok());
            let event = serde_json::from_value(serde_json::Value::String(quoted())).ok();
            match (platform, event) {
                (Some(platform), Some(event)) => {
                    PresenceError::UnsupportedEvent { platform, event }
                }
                (Some(platform), None) => PresenceError::UnsupportedCalendarSource { platform },
                _ => PresenceError::UnsupportedCalendarSource {
                    platform: Platform::Web,
                },
            }
        }
        "expiry_not_in_future" => PresenceError::ExpiryNotInFuture,
        "expiry_too_far" => PresenceError::ExpiryTooFar {
            max_days: number_after(message, "at most"),
        },
        "expiry_without_change" => PresenceError::ExpiryWithoutChange,
        "empty_status_change" => PresenceError::EmptyStatusChange,
        "custom_status_name_taken" => PresenceError::CustomStatusNameTaken { name: quoted() },
        "custom_status_name_invalid" => PresenceError::CustomStatusNameInvalid {
            reason: "rejected by the shard leader",
        },
        "custom_status_not_found" => PresenceError::CustomStatusNotFound { id: quoted() },
        "broadcast_enable_refused" => PresenceError::BroadcastEnableRefused {
            count: number_after(message, "enabled:"),
            cap: number_after(message, "cap is"),
        },
        "calendar_disabled" => PresenceError::CalendarDisabled,
        "unknown_device" => PresenceError::UnknownDevice { device: quoted() },
        "calendar_event_id_invalid" => PresenceError::CalendarEventIdInvalid {
            max: number_after(message, "1-") as usize,
        },
        "too_many_calendar_events" => PresenceError::TooManyCalendarEvents {
            max: number_after(message, "limit") as usize,
        },
        _ => {
            return BackendError::Unavailable(format!(
                "the shard leader refused: {code}: {message}"
            ));
        }
    };
    BackendError::Rule(rule)
}

#[cfg(test)]
mod tests {
    use presence_core::{DeviceEvent, Platform, PresenceError};

    use super::error_from_reply;

    /// A leader's refusal comes back as the same rule error: same code,
    /// same message.
    #[test]
    fn rule_errors_survive_the_reply_round_trip() {
        let cases = [
            PresenceError::StatusTextTooLong { len: 130, max: 120 },
            PresenceError::StatusTextInvalid,
            PresenceError::StatusTextDisabled,
            PresenceError::IdleTimeLimitTooLow {
                seconds: 30,
                min: 60,
            },
            PresenceError::InvisibleDisabled,
            PresenceError::UnsupportedEvent {
                platform: Platform::Web,
                event: DeviceEvent::Lock,
            },
            PresenceError::UnsupportedCalendarSource {
                platform: Platform::Mobile,
            },
            PresenceError::ExpiryNotInFuture,
            PresenceError::ExpiryTooFar { max_days: 366 },
            PresenceError::IdleTimeLimitTooHigh {
                seconds: 90_000,
                max: 86_400,
            },
            PresenceError::ExpiryWithoutChange,
            PresenceError::EmptyStatusChange,
            PresenceError::CustomStatusNameTaken {
                name: "Lunch".into(),
            },
            PresenceError::CustomStatusNotFound { id: "cs1".into() },
            PresenceError::BroadcastEnableRefused { count: 7, cap: 5 },
            PresenceError::CalendarDisabled,
            PresenceError::UnknownDevice {
                device: "d1".into(),
            },
            PresenceError::CalendarEventIdInvalid { max: 200 },
            PresenceError::TooManyCalendarEvents { max: 32 },
        ];
        for error in cases {
            let back = error_from_reply(error.code(), &error.to_string());
            assert_eq!(back.code(), error.code(), "{error:?}");
            assert_eq!(back.to_string(), error.to_string(), "{error:?}");
        }
    }

    /// Codes that are not rule errors mean the cluster cannot answer.
    #[test]
    fn wrong_shard_and_invalid_command_are_backend_unavailable() {
        for code in ["wrong_shard", "invalid_command", "something_new"] {
            assert_eq!(error_from_reply(code, "x").code(), "backend_unavailable");
        }
    }
}
