//! Client → server frames and their parser.
//!
//! The parser reads the frame into a JSON object, takes `ref` and `type`
//! out of it, and then reads the fields of that message type one by one.
//! Reading fields by hand (instead of a serde derive) is what lets every
//! rejection name the exact field and say what was expected, without ever
//! quoting much of the frame.

use presence_core::{ChosenStatus, DeviceEvent, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value};

use super::ProtocolError;
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

/// Everything a client can send. See the table in [`crate::ws`].
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
        id: String,
    },
    Calendar {
        event_id: String,
        busy: bool,
    },
    Subscribe {
        users: Vec<String>,
    },
    Unsubscribe {
        users: Vec<String>,
    },
    Query {
        users: Vec<String>,
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
    pub const TYPES: [&'static str; 17] = [
        "activity",
        "idle",
        "active",
        "lock",
        "unlock",
        "sleep",
        "wake",
        "background",
        "foreground",
        "set_status",
        "use_custom_status",
        "calendar",
        "subscribe",
        "unsubscribe",
        "query",
        "reauth",
        "bye",
    ];

    /// The `type` this message has on the wire.
    pub fn type_name(&self) -> &'static str {
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
            Self::SetStatus(_) => "set_status",
            Self::UseCustomStatus { .. } => "use_custom_status",
            Self::Calendar { .. } => "calendar",
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::Query { .. } => "query",
            Self::Reauth { .. } => "reauth",
            Self::Bye => "bye",
        }
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
/// after the `ref` check carries the frame's `ref`.
pub fn parse_client_message(text: &str) -> Result<ClientFrame, ProtocolError> {
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
    match parse_message(&type_name, object) {
        Ok(message) => Ok(ClientFrame { ref_, message }),
        Err(Rejection::UnknownType) => Err(ProtocolError::new(
            ProtocolError::UNKNOWN_TYPE,
            format!("unknown message type `{}`", echo(&type_name)),
            ref_,
        )),
        Err(Rejection::Invalid(message)) => Err(ProtocolError::new(
            ProtocolError::INVALID_MESSAGE,
            message,
            ref_,
        )),
    }
}

/// Why the body of a message (everything but `ref` and `type`) was refused.
enum Rejection {
    UnknownType,
    Invalid(String),
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

fn parse_message(type_name: &str, object: Map<String, Value>) -> Result<ClientMessage, Rejection> {
    use ClientMessage as M;
    let fieldless = |type_name: &str, message: ClientMessage| {
        reject_unknown_fields(type_name, &object, &[])?;
        Ok(message)
    };
    match type_name {
        "activity" => fieldless("activity", M::Activity),
        "idle" => fieldless("idle", M::Idle),
        "active" => fieldless("active", M::Active),
        "lock" => fieldless("lock", M::Lock),
        "unlock" => fieldless("unlock", M::Unlock),
        "sleep" => fieldless("sleep", M::Sleep),
        "wake" => fieldless("wake", M::Wake),
        "background" => fieldless("background", M::Background),
        "foreground" => fieldless("foreground", M::Foreground),
        "bye" => fieldless("bye", M::Bye),
        "set_status" => {
            let mut f = Fields::new("set_status", object, &["status", "text", "expires_at"])?;
            Ok(M::SetStatus(StatusChange {
                status: f.optional_chosen_status("status")?,
                text: f.optional_text("text")?,
                expires_at: f.optional_timestamp("expires_at")?,
            }))
        }
        "use_custom_status" => {
            let mut f = Fields::new("use_custom_status", object, &["id"])?;
            Ok(M::UseCustomStatus {
                id: f.string("id")?,
            })
        }
        "calendar" => {
            let mut f = Fields::new("calendar", object, &["event_id", "busy"])?;
            Ok(M::Calendar {
                event_id: f.string("event_id")?,
                busy: f.bool("busy")?,
            })
        }
        "subscribe" => {
            let mut f = Fields::new("subscribe", object, &["users"])?;
            Ok(M::Subscribe {
                users: f.string_list("users")?,
            })
        }
        "unsubscribe" => {
            let mut f = Fields::new("unsubscribe", object, &["users"])?;
            Ok(M::Unsubscribe {
                users: f.string_list("users")?,
            })
        }
        "query" => {
            let mut f = Fields::new("query", object, &["users"])?;
            Ok(M::Query {
                users: f.string_list("users")?,
            })
        }
        "reauth" => {
            let mut f = Fields::new("reauth", object, &["token"])?;
            Ok(M::Reauth {
                token: f.string("token")?,
            })
        }
        _ => Err(Rejection::UnknownType),
    }
}

/// The fields of one message, read one at a time with a precise complaint
/// for each way a field can be wrong.
struct Fields {
    type_name: &'static str,
    object: Map<String, Value>,
}

impl Fields {
    /// Refuses any field not in `allowed`.
    fn new(
        type_name: &'static str,
        object: Map<String, Value>,
        allowed: &[&str],
    ) -> Result<Self, Rejection> {
        reject_unknown_fields(type_name, &object, allowed)?;
        Ok(Self { type_name, object })
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
