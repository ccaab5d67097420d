//! The one list of client → server message types: their `type` names on
//! the wire and the fields each takes. The parser, the serde names of
//! [`ClientMessage`](super::ClientMessage) (checked by a test), the
//! gateway's per-type metrics and the fuzz tests all read it from here.

use std::fmt;

/// The `type` of a client frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageType {
    Activity,
    Idle,
    Active,
    Lock,
    Unlock,
    Sleep,
    Wake,
    Background,
    Foreground,
    SetStatus,
    UseCustomStatus,
    Calendar,
    Subscribe,
    Unsubscribe,
    Query,
    Reauth,
    Bye,
}

impl MessageType {
    /// Every client message type, in the order of the protocol's table.
    pub const ALL: [MessageType; 17] = [
        Self::Activity,
        Self::Idle,
        Self::Active,
        Self::Lock,
        Self::Unlock,
        Self::Sleep,
        Self::Wake,
        Self::Background,
        Self::Foreground,
        Self::SetStatus,
        Self::UseCustomStatus,
        Self::Calendar,
        Self::Subscribe,
        Self::Unsubscribe,
        Self::Query,
        Self::Reauth,
        Self::Bye,
    ];

    /// Every `type` name, in the order of [`MessageType::ALL`].
    pub const NAMES: [&'static str; 17] = {
        let mut names = [""; 17];
        let mut i = 0;
        while i < names.len() {
            names[i] = Self::ALL[i].as_str();
            i += 1;
        }
        names
    };

    /// The `type` on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Activity => "activity",
            Self::Idle => "idle",
            Self::Active => "active",
            Self::Lock => "lock",
            Self::Unlock => "unlock",
            Self::Sleep => "sleep",
            Self::Wake => "wake",
            Self::Background => "background",
            Self::Foreground => "foreground",
            Self::SetStatus => "set_status",
            Self::UseCustomStatus => "use_custom_status",
            Self::Calendar => "calendar",
            Self::Subscribe => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::Query => "query",
            Self::Reauth => "reauth",
            Self::Bye => "bye",
        }
    }

    /// The fields a message of this type takes besides `type` and `ref`;
    /// any other is refused.
    pub const fn fields(self) -> &'static [&'static str] {
        match self {
            Self::SetStatus => &["status", "text", "expires_at"],
            Self::UseCustomStatus => &["id"],
            Self::Calendar => &["event_id", "busy"],
            Self::Subscribe | Self::Unsubscribe | Self::Query => &["users"],
            Self::Reauth => &["token"],
            Self::Activity
            | Self::Idle
            | Self::Active
            | Self::Lock
            | Self::Unlock
            | Self::Sleep
            | Self::Wake
            | Self::Background
            | Self::Foreground
            | Self::Bye => &[],
        }
    }

    /// The type named `name`, if it is one.
    pub fn parse(name: &str) -> Option<MessageType> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use presence_core::{ChosenStatus, CustomStatusId, Timestamp, UserId};

    use super::*;
    use crate::StatusChange;
    use crate::ws::{ClientMessage, parse_client_message};

    /// A message of type `t` with every field it takes set; the match is
    /// exhaustive, so a new type cannot be left out.
    fn sample(t: MessageType) -> ClientMessage {
        use ClientMessage as M;
        let users = || vec![UserId::try_from("alice").unwrap()];
        match t {
            MessageType::Activity => M::Activity,
            MessageType::Idle => M::Idle,
            MessageType::Active => M::Active,
            MessageType::Lock => M::Lock,
            MessageType::Unlock => M::Unlock,
            MessageType::Sleep => M::Sleep,
            MessageType::Wake => M::Wake,
            MessageType::Background => M::Background,
            MessageType::Foreground => M::Foreground,
            MessageType::SetStatus => M::SetStatus(StatusChange {
                status: Some(ChosenStatus::Busy),
                text: Some("Lunch".into()),
                expires_at: Some(Timestamp::from_millis(1_800_000_000_000)),
            }),
            MessageType::UseCustomStatus => M::UseCustomStatus {
                id: CustomStatusId::try_from("cs1").unwrap(),
            },
            MessageType::Calendar => M::Calendar {
                event_id: "e1".into(),
                busy: true,
            },
            MessageType::Subscribe => M::Subscribe { users: users() },
            MessageType::Unsubscribe => M::Unsubscribe { users: users() },
            MessageType::Query => M::Query { users: users() },
            MessageType::Reauth => M::Reauth {
                token: "a.b.c".into(),
            },
            MessageType::Bye => M::Bye,
        }
    }

    #[test]
    fn serde_names_and_fields_are_the_listed_ones() {
        for t in MessageType::ALL {
            let message = sample(t);
            assert_eq!(message.message_type(), t);
            let json = serde_json::to_value(&message).unwrap();
            assert_eq!(json["type"], t.as_str(), "{json}");
            let fields: Vec<&str> = json
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .filter(|k| *k != "type")
                .collect();
            let mut listed = t.fields().to_vec();
            listed.sort_unstable();
            assert_eq!(fields, listed, "{t}");
            let parsed = parse_client_message(&message.to_json()).unwrap();
            assert_eq!(parsed.message, message);
        }
    }

    #[test]
    fn names_are_unique_and_parse_back() {
        let mut names = MessageType::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MessageType::ALL.len());
        for t in MessageType::ALL {
            assert_eq!(MessageType::parse(t.as_str()), Some(t));
        }
        assert_eq!(MessageType::parse("nonsense"), None);
        assert_eq!(ClientMessage::TYPES, MessageType::NAMES);
    }
}
