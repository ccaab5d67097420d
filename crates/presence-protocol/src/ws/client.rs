//! Client → server frames and their parser.
//!
//! The parser reads the frame into a JSON object, takes `ref` and `type`
//! out of it, and then reads the fields of that message type one by one.
//! Reading fields by hand (instead of a serde derive) is what lets every
//! rejection name the exact field and say what was expected, without ever
//! quoting much of the frame.

use presence_core::{
    ChosenStatus, CustomStatusId, DeviceEvent, IdError, PresenceError, Timestamp, UserId,
};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Limits, MessageType, ProtocolError};
use crate::StatusChange;
use crate::echo::echo;
use crate::rfc3339::parse_rfc3339;

/// The longest `ref` a client may attach to a frame, in characters.
pub const MAX_REF_CHARS: usize = 64;

/// A parsed client frame: the message and the `ref` to echo in its reply.
///
/// Serializing one gives the frame a client sends (`ref` omitted when
/// `None`); test and benchmark clients use [`ClientFrame::to_json`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClientFrame {
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub ref_: Option<String>,
    #[serde(flatten)]
    pub message: ClientMessage,
}

impl ClientFrame {
    pub fn new(message: ClientMessage) -> Self {
        Self {
            ref_: None,
            message,
        }
    }

    pub fn with_ref(mut self, ref_: impl Into<String>) -> Self {
        self.ref_ = Some(ref_.into());
        self
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client frames always serialize")
    }
}

impl From<ClientMessage> for ClientFrame {
    fn from(message: ClientMessage) -> Self {
        Self::new(message)
    }
}

/// Everything a client can send. See the table in [`crate::ws`]; the
/// `type` names are [`MessageType`]'s (a test checks the serde names
/// against it). Ids are validated by the parser: a message holds only
/// valid ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Activity,
    Idle,
    Active,
    Lock,
    Unlock,
    Sleep,
    Wake,
    Background,
    Foreground,
    SetStatus(StatusChange),
    UseCustomStatus {
        id: CustomStatusId,
    },
    Calendar {
        event_id: String,
        busy: bool,
    },
    Subscribe {
        users: Vec<UserId>,
    },
    Unsubscribe {
        users: Vec<UserId>,
    },
    Query {
        users: Vec<UserId>,
    },
    /// R2: a fresh token for the same user; the socket's authority then
    /// lasts until the new token's expiry.
    Reauth {
        token: String,
    },
    Bye,
}

impl ClientMessage {
    /// Every client message `type`.
    pub const TYPES: [&'static str; 17] = MessageType::NAMES;

    /// This message's type.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::Activity => MessageType::Activity,
            Self::Idle => MessageType::Idle,
            Self::Active => MessageType::Active,
            Self::Lock => MessageType::Lock,
            Self::Unlock => MessageType::Unlock,
            Self::Sleep => MessageType::Sleep,
            Self::Wake => MessageType::Wake,
            Self::Background => MessageType::Background,
            Self::Foreground => MessageType::Foreground,
            Self::SetStatus(_) => MessageType::SetStatus,
            Self::UseCustomStatus { .. } => MessageType::UseCustomStatus,
            Self::Calendar { .. } => MessageType::Calendar,
            Self::Subscribe { .. } => MessageType::Subscribe,
            Self::Unsubscribe { .. } => MessageType::Unsubscribe,
            Self::Query { .. } => MessageType::Query,
            Self::Reauth { .. } => MessageType::Reauth,
            Self::Bye => MessageType::Bye,
        }
    }

    /// The `type` this message has on the wire.
    pub fn type_name(&self) -> &'static str {
        self.message_type().as_str()
    }

    /// The device event this message reports, for the nine field-less
    /// device messages; `None` for everything else.
    pub fn device_event(&self) -> Option<DeviceEvent> {
        Some(match self {
            Self::Activity => DeviceEvent::Activity,
            Self::Idle => DeviceEvent::Idle,
            Self::Active => DeviceEvent::Active,
            Self::Lock => DeviceEvent::Lock,
            Self::Unlock => DeviceEvent::Unlock,
            Self::Sleep => DeviceEvent::Sleep,
            Self::Wake => DeviceEvent::Wake,
            Self::Background => DeviceEvent::Background,
            Self::Foreground => DeviceEvent::Foreground,
            _ => return None,
        })
    }

    /// The message that reports `event`.
    pub fn from_device_event(event: DeviceEvent) -> Self {
        match event {
            DeviceEvent::Activity => Self::Activity,
            DeviceEvent::Idle => Self::Idle,
            DeviceEvent::Active => Self::Active,
            DeviceEvent::Lock => Self::Lock,
            DeviceEvent::Unlock => Self::Unlock,
            DeviceEvent::Sleep => Self::Sleep,
            DeviceEvent::Wake => Self::Wake,
            DeviceEvent::Background => Self::Background,
            DeviceEvent::Foreground => Self::Foreground,
        }
    }

    /// The message as a JSON frame without a `ref`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client messages always serialize")
    }
}

/// Parses one text frame from a client.
///
/// Checks run in this order, and the first failure is returned: JSON
/// syntax and object shape (`invalid_json`), `ref` (`invalid_ref`), `type`
/// (`missing_type`, `unknown_type`), then the fields of that type, unknown
/// fields before missing or mistyped ones (`invalid_message`). Every error
/// after the `ref` check carries the frame's `ref`. User ids are checked
/// (`invalid_user_id`), and a custom status id that cannot exist is
/// refused (`custom_status_not_found`).
pub fn parse_client_message(text: &str) -> Result<ClientFrame, ProtocolError> {
    parse_frame(text, None)
}

/// Like [`parse_client_message`], and also refuses a `users` list longer
/// than the socket's `limits` allow (`too_many_users`: `max_query_users`
/// for `subscribe` and `query`, `max_subscriptions` for `unsubscribe`)
/// before looking at its ids.
pub fn parse_client_message_within(
    text: &str,
    limits: &Limits,
) -> Result<ClientFrame, ProtocolError> {
    parse_frame(text, Some(limits))
}

fn parse_frame(text: &str, limits: Option<&Limits>) -> Result<ClientFrame, ProtocolError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        ProtocolError::new(
            ProtocolError::INVALID_JSON,
            format!("the frame is not valid JSON: {e}"),
            None,
        )
    })?;
    let mut object = match value {
        Value::Object(object) => object,
        other => {
            return Err(ProtocolError::new(
                ProtocolError::INVALID_JSON,
                format!("a frame must be a JSON object, not {}", kind_of(&other)),
                None,
            ));
        }
    };
    let ref_ = take_ref(&mut object)?;
    let type_name = match object.remove("type") {
        None => {
            return Err(ProtocolError::new(
                ProtocolError::MISSING_TYPE,
                "the frame has no `type`",
                ref_,
            ));
        }
        Some(Value::String(type_name)) => type_name,
        Some(other) => {
            return Err(ProtocolError::new(
                ProtocolError::UNKNOWN_TYPE,
                format!(
                    "`type` must be a string naming a client message, not {}",
                    kind_of(&other)
                ),
                ref_,
            ));
        }
    };
    let Some(kind) = MessageType::parse(&type_name) else {
        return Err(ProtocolError::new(
            ProtocolError::UNKNOWN_TYPE,
            format!("unknown message type `{}`", echo(&type_name)),
            ref_,
        ));
    };
    match parse_message(kind, object, limits) {
        Ok(message) => Ok(ClientFrame { ref_, message }),
        Err(Rejection::Invalid(message)) => {
            Err(ProtocolError::new(ProtocolError::INVALID_MESSAGE, message, ref_).of_type(kind))
        }
        Err(Rejection::Coded { code, message }) => {
            Err(ProtocolError::new(code, message, ref_).of_type(kind))
        }
    }
}

/// Why the body of a message (everything but `ref` and `type`) was refused.
enum Rejection {
    Invalid(String),
    /// A well-formed field whose value is refused with a code of its own:
    /// an id that cannot be valid (`invalid_user_id`,
    /// `custom_status_not_found`), or too many users (`too_many_users`).
    Coded {
        code: &'static str,
        message: String,
    },
}

impl From<IdError> for Rejection {
    fn from(e: IdError) -> Self {
        Rejection::Coded {
            code: e.code(),
            message: e.message().to_owned(),
        }
    }
}

fn take_ref(object: &mut Map<String, Value>) -> Result<Option<String>, ProtocolError> {
    let invalid = |got: String| {
        Err(ProtocolError::new(
            ProtocolError::INVALID_REF,
            format!(
                "`ref` must be a string of at most {MAX_REF_CHARS} characters \
                 or a non-negative integer, not {got}"
            ),
            None,
        ))
    };
    match object.remove("ref") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= MAX_REF_CHARS => Ok(Some(s)),
        Some(Value::String(s)) => invalid(format!("a string of {} characters", s.chars().count())),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(n) => Ok(Some(n.to_string())),
            None => invalid(format!("the number {}", echo(&n.to_string()))),
        },
        Some(other) => invalid(kind_of(&other).to_owned()),
    }
}

fn parse_message(
    kind: MessageType,
    object: Map<String, Value>,
    limits: Option<&Limits>,
) -> Result<ClientMessage, Rejection> {
    use ClientMessage as M;
    let query_max = limits.map(|l| l.max_query_users);
    let mut f = Fields::new(kind, object)?;
    Ok(match kind {
        MessageType::Activity => M::Activity,
        MessageType::Idle => M::Idle,
        MessageType::Active => M::Active,
        MessageType::Lock => M::Lock,
        MessageType::Unlock => M::Unlock,
        MessageType::Sleep => M::Sleep,
        MessageType::Wake => M::Wake,
        MessageType::Background => M::Background,
        MessageType::Foreground => M::Foreground,
        MessageType::Bye => M::Bye,
        MessageType::SetStatus => M::SetStatus(StatusChange {
            status: f.optional_chosen_status("status")?,
            text: f.optional_text("text")?,
            expires_at: f.optional_timestamp("expires_at")?,
        }),
        MessageType::UseCustomStatus => M::UseCustomStatus {
            id: f.custom_status_id("id")?,
        },
        MessageType::Calendar => M::Calendar {
            event_id: f.string("event_id")?,
            busy: f.bool("busy")?,
        },
        MessageType::Subscribe => M::Subscribe {
            users: f.user_ids("users", query_max)?,
        },
        MessageType::Unsubscribe => M::Unsubscribe {
            users: f.user_ids("users", limits.map(|l| l.max_subscriptions))?,
        },
        MessageType::Query => M::Query {
            users: f.user_ids("users", query_max)?,
        },
        MessageType::Reauth => M::Reauth {
            token: f.string("token")?,
        },
    })
}

/// The fields of one message, read one at a time with a precise complaint
/// for each way a field can be wrong.
struct Fields {
    type_name: &'static str,
    object: Map<String, Value>,
}

impl Fields {
    /// Refuses any field the message type does not take.
    fn new(kind: MessageType, object: Map<String, Value>) -> Result<Self, Rejection> {
        reject_unknown_fields(kind.as_str(), &object, kind.fields())?;
        Ok(Self {
            type_name: kind.as_str(),
            object,
        })
    }

    fn missing(&self, name: &str, expected: &str) -> Rejection {
        Rejection::Invalid(format!(
            "`{}` needs field `{name}` ({expected})",
            self.type_name
        ))
    }

    fn wrong(&self, name: &str, expected: &str, got: &str) -> Rejection {
        Rejection::Invalid(format!(
            "field `{name}` of `{}` must be {expected}, not {got}",
            self.type_name
        ))
    }

    fn string(&mut self, name: &str) -> Result<String, Rejection> {
        const EXPECTED: &str = "a string";
        match self.object.remove(name) {
            None => Err(self.missing(name, EXPECTED)),
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(self.wrong(name, EXPECTED, kind_of(&other))),
        }
    }

    fn bool(&mut self, name: &str) -> Result<bool, Rejection> {
        const EXPECTED: &str = "true or false";
        match self.object.remove(name) {
            None => Err(self.missing(name, EXPECTED)),
            Some(Value::Bool(b)) => Ok(b),
            Some(other) => Err(self.wrong(name, EXPECTED, kind_of(&other))),
        }
    }

    fn string_list(&mut self, name: &str) -> Result<Vec<String>, Rejection> {
        const EXPECTED: &str = "an array of strings";
        let items = match self.object.remove(name) {
            None => return Err(self.missing(name, EXPECTED)),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(self.wrong(name, EXPECTED, kind_of(&other))),
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s),
                other => Err(self.wrong(
                    name,
                    EXPECTED,
                    &format!("an array whose item {i} is {}", kind_of(&other)),
                )),
            })
            .collect()
    }

    /// A list of user ids: the list's shape first, then its length (at
    /// most `max`, when given), then each id.
    fn user_ids(&mut self, name: &str, max: Option<usize>) -> Result<Vec<UserId>, Rejection> {
        let ids = self.string_list(name)?;
        if let Some(max) = max.filter(|max| ids.len() > *max) {
            return Err(Rejection::Coded {
                code: ProtocolError::TOO_MANY_USERS,
                message: format!("at most {max} users per request"),
            });
        }
        Ok(ids
            .into_iter()
            .map(UserId::try_from)
            .collect::<Result<_, _>>()?)
    }

    /// A custom status id; one that cannot be valid names no custom status,
    /// and is refused as the backend refuses an unknown one.
    fn custom_status_id(&mut self, name: &str) -> Result<CustomStatusId, Rejection> {
        let id = self.string(name)?;
        CustomStatusId::try_from(id.as_str()).map_err(|e| Rejection::Coded {
            code: e.code(),
            message: PresenceError::CustomStatusNotFound {
                id: echo(&id).into_owned(),
            }
            .to_string(),
        })
    }

    /// `null` and absent are both `None`.
    fn optional_chosen_status(&mut self, name: &str) -> Result<Option<ChosenStatus>, Rejection> {
        const EXPECTED: &str = "one of \"online\", \"away\", \"busy\", \"invisible\"";
        match self.object.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => ChosenStatus::ALL
                .into_iter()
                .find(|c| c.as_str() == s)
                .map(Some)
                .ok_or_else(|| self.wrong(name, EXPECTED, &format!("\"{}\"", echo(&s)))),
            Some(other) => Err(self.wrong(name, EXPECTED, kind_of(&other))),
        }
    }

    /// Absent is `None` (keep); `null` is `Some("")` (clear).
    fn optional_text(&mut self, name: &str) -> Result<Option<String>, Rejection> {
        match self.object.remove(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(String::new())),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong(name, "a string or null", kind_of(&other))),
        }
    }

    /// `null` and absent are both `None`.
    fn optional_timestamp(&mut self, name: &str) -> Result<Option<Timestamp>, Rejection> {
        const EXPECTED: &str = "an RFC 3339 timestamp such as \"2026-11-28T12:00:00Z\", or null";
        match self.object.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => parse_rfc3339(&s)
                .map(Some)
                .ok_or_else(|| self.wrong(name, EXPECTED, &format!("\"{}\"", echo(&s)))),
            Some(other) => Err(self.wrong(name, EXPECTED, kind_of(&other))),
        }
    }
}

fn reject_unknown_fields(
    type_name: &str,
    object: &Map<String, Value>,
    allowed: &[&str],
) -> Result<(), Rejection> {
    let Some(unknown) = object.keys().find(|k| !allowed.contains(&k.as_str())) else {
        return Ok(());
    };
    let message = if allowed.is_empty() {
        format!(
            "unknown field `{}`: `{type_name}` takes no fields",
            echo(unknown)
        )
    } else {
        format!(
            "unknown field `{}` in `{type_name}`; its fields are `{}`",
            echo(unknown),
            allowed.join("`, `")
        )
    };
    Err(Rejection::Invalid(message))
}

/// How a JSON value is called in error messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
