//! `presence-protocol`: every byte layout that crosses the network, as
//! plain serde types shared by the gateway, the end-to-end tests and the
//! benchmark client.
//!
//! The crate does no I/O and holds no rules: it turns JSON into typed
//! requests (rejecting anything malformed with a stable error code) and
//! typed views from `presence-core` into JSON. The rules themselves live in
//! `presence-core`; the gateway glues the two together.
//!
//! # Conventions that hold everywhere
//!
//! - JSON, UTF-8. Field names are `snake_case` on the native surfaces
//!   ([`ws`], [`rest`]) and exactly Rocket.Chat's (`camelCase`, `_id`,
//!   `_updatedAt`) on the compatible one ([`rocketchat`]).
//! - Timestamps are RFC 3339 strings, always written in UTC with
//!   millisecond precision (`"2026-11-28T12:00:00.000Z"`); any offset and
//!   any number of fractional digits is accepted when reading. See
//!   [`rfc3339`].
//! - Durations are whole seconds (`idle_time_limit`,
//!   `default_idle_time_limit`).
//! - Statuses are lower-case strings: a *displayed* status is one of
//!   `online | away | busy | offline`; a *chosen* status one of
//!   `online | away | busy | invisible` (`online` means automatic); a user's
//!   view of themselves may also say `invisible`.
//! - Optional fields that have no value are written as `null` when they are
//!   part of a view (so a view always has the same keys), and omitted when
//!   they only make sense sometimes (`ref`, `me`).
//! - Requests reject unknown fields, so a typo is an error instead of a
//!   silently ignored field.
//! - Error messages quote only short excerpts of what the client sent: at
//!   most [`MAX_ECHO_CHARS`] characters of any one value or field name, and
//!   at most 120 characters of a JSON parser's explanation.
//!
//! # Modules
//!
//! - [`ws`]: WebSocket frames, client → server ([`ws::ClientMessage`],
//!   parsed by [`ws::parse_client_message`]) and server → client
//!   ([`ws::ServerMessage`]).
//! - [`rest`]: bodies of the native REST API under `/v1`.
//! - [`rocketchat`]: bodies of the Rocket.Chat-compatible API under
//!   `/api/v1`.
//! - [`rfc3339`]: the timestamp format and its serde helpers.
//! - [`cluster`]: what gateways and shard leaders exchange through Redis
//!   in cluster mode (stream entries, replies, updates, control
//!   messages). Internal to the cluster: timestamps there are integer
//!   milliseconds, not RFC 3339.
//! - The payloads that appear on more than one surface are at the crate
//!   root: [`PresenceEntry`], [`SelfState`], [`PublicSettings`],
//!   [`StatusChange`].
#![forbid(unsafe_code)]

mod body;
pub mod cluster;
mod echo;
mod payload;
pub mod rest;
pub mod rfc3339;
pub mod rocketchat;
pub mod ws;

pub use echo::MAX_ECHO_CHARS;
pub use payload::{PresenceEntry, PublicSettings, SelfState, StatusChange};
pub use rfc3339::{format_rfc3339, parse_rfc3339};
