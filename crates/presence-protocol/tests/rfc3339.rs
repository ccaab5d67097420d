//! The timestamp wire format: UTC with milliseconds out, any offset and
//! precision in.

use presence_core::Timestamp;
use presence_protocol::rfc3339::{DisplayRfc3339, MAX_MILLIS, MIN_MILLIS};
use presence_protocol::{format_rfc3339, parse_rfc3339};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// 2026-11-28T12:00:00Z
const NOV_28: i64 = 1_795_867_200_000;

/// `text` parses to `expected` (`None`: is rejected).
fn check(text: &str, expected: Option<i64>) {
    assert_eq!(
        parse_rfc3339(text),
        expected.map(Timestamp::from_millis),
        "parsing {text:?}"
    );
}

#[test]
fn formats_utc_with_milliseconds() {
    for (ms, text) in [
        (0, "1970-01-01T00:00:00.000Z"),
        (NOV_28, "2026-11-28T12:00:00.000Z"),
        (NOV_28 + 7, "2026-11-28T12:00:00.007Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
        (951_868_800_000, "2000-03-01T00:00:00.000Z"),
        (MIN_MILLIS, "0000-01-01T00:00:00.000Z"),
        (MAX_MILLIS, "9999-12-31T23:59:59.999Z"),
        // Out of RFC 3339's range: clamped.
        (i64::MIN, "0000-01-01T00:00:00.000Z"),
        (i64::MAX, "9999-12-31T23:59:59.999Z"),
    ] {
        assert_eq!(format_rfc3339(Timestamp::from_millis(ms)), text, "{ms}");
        assert_eq!(
            DisplayRfc3339(Timestamp::from_millis(ms)).to_string(),
            text,
            "{ms}"
        );
    }
}

#[test]
fn parses_offsets_and_any_precision() {
    check("2026-11-28T12:00:00Z", Some(NOV_28));
    check("2026-11-28T12:00:00.000Z", Some(NOV_28));
    check("2026-11-28t12:00:00z", Some(NOV_28));
    check("2026-11-28T14:00:00+02:00", Some(NOV_28));
    check("2026-11-28T06:30:00-05:30", Some(NOV_28));
    check("2026-11-28T12:00:00-00:00", Some(NOV_28));
    check("2026-11-28T12:00:00.5Z", Some(NOV_28 + 500));
    check("2026-11-28T12:00:00.12Z", Some(NOV_28 + 120));
    check("2026-11-28T12:00:00.123456789Z", Some(NOV_28 + 123));
    check("2026-11-28T12:00:00.9999999999999Z", Some(NOV_28 + 999));
    // Sub-millisecond digits round toward the past, before the epoch too.
    check("1969-12-31T23:59:59.9995Z", Some(-1));
    check("0000-01-01T00:00:00Z", Some(MIN_MILLIS));
    check("9999-12-31T23:59:59.999Z", Some(MAX_MILLIS));
}

#[test]
fn rejects_what_is_not_rfc3339() {
    check("", None);
    check("2026-11-28", None);
    check("2026-11-28T12:00:00", None);
    check("2026-11-28T12:00Z", None);
    check("1795867200000", None);
    check("2026-13-01T00:00:00Z", None);
    check("2026-02-30T00:00:00Z", None);
    check("2026-11-28T25:00:00Z", None);
    check(" 2026-11-28T12:00:00Z", None);
    check("2026-11-28T12:00:00Z ", None);
    check("2026-11-28T12:00:00+2:00", None);
    // Before year 0 in UTC: outside what can be written back.
    check("0000-01-01T00:00:00+01:00", None);
}

#[test]
fn round_trips_and_agrees_with_the_time_crate() {
    let mut ms = MIN_MILLIS;
    let step = 3_214_567_890_123; // about 100 years, not a multiple of a day
    while ms <= MAX_MILLIS {
        for probe in [ms, ms + 86_399_999, -ms, ms / 7] {
            if !(MIN_MILLIS..=MAX_MILLIS).contains(&probe) {
                continue;
            }
            let ts = Timestamp::from_millis(probe);
            let ours = format_rfc3339(ts);
            assert_eq!(parse_rfc3339(&ours), Some(ts), "{ours}");
            let theirs = OffsetDateTime::from_unix_timestamp_nanos(i128::from(probe) * 1_000_000)
                .unwrap()
                .format(&Rfc3339)
                .unwrap();
            assert_eq!(
                parse_rfc3339(&theirs),
                Some(ts),
                "{theirs} (time) vs {ours} (ours)"
            );
        }
        ms += step;
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Holder {
    #[serde(with = "presence_protocol::rfc3339")]
    at: Timestamp,
    #[serde(with = "presence_protocol::rfc3339::option")]
    until: Option<Timestamp>,
}

#[test]
fn serde_helpers_write_strings_and_null() {
    let holder = Holder {
        at: Timestamp::from_millis(NOV_28),
        until: None,
    };
    let json = serde_json::to_value(&holder).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"at": "2026-11-28T12:00:00.000Z", "until": null})
    );
    assert_eq!(serde_json::from_value::<Holder>(json).unwrap(), holder);

    let parsed: Holder = serde_json::from_str(
        r#"{"at": "2026-11-28T14:00:00+02:00", "until": "2026-11-28T12:00:01Z"}"#,
    )
    .unwrap();
    assert_eq!(parsed.at, Timestamp::from_millis(NOV_28));
    assert_eq!(parsed.until, Some(Timestamp::from_millis(NOV_28 + 1000)));
}

#[test]
fn serde_helpers_reject_bad_input_without_echoing_it_all() {
    let long = "x".repeat(10_000);
    let err = serde_json::from_str::<Holder>(&format!(r#"{{"at": "{long}", "until": null}}"#))
        .unwrap_err()
        .to_string();
    assert!(err.contains("RFC 3339"), "{err}");
    assert!(err.len() < 200, "{err}");

    let err = serde_json::from_str::<Holder>(r#"{"at": 1795867200000, "until": null}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("RFC 3339"), "{err}");
}
