//! What a [`StatusRequest`] asks for, before any state is touched: whether
//! it sets a text (T4, T5), which the gateway's text rate limit also asks.

use presence_core::{ChosenStatus, StatusRequest};

#[test]
fn t5_only_a_text_that_is_not_blank_is_set() {
    let check = |text: Option<&str>, expected: bool| {
        let request = StatusRequest {
            status: Some(ChosenStatus::Busy),
            text: text.map(str::to_owned),
            expires_at: None,
        };
        assert_eq!(request.sets_text(), expected, "{text:?}");
    };
    check(None, false);
    check(Some(""), false);
    check(Some(" \t "), false);
    check(Some("Out for lunch"), true);
    check(Some("  x  "), true);
    check(Some("🌴"), true);
}
