//! The WebSocket protocol of `GET /v1/ws`.
//!
//! Every frame is a JSON text frame holding one object with a `"type"`.
//!
//! # Client → server ([`ClientMessage`])
//!
//! | `type` | fields | meaning |
//! |---|---|---|
//! | `activity` | — | the user did something (restarts the server-side idle timer) |
//! | `idle`, `active` | — | the client's own idle detector fired / saw the user return |
//! | `lock`, `unlock` | — | screen locked / unlocked (desktop) |
//! | `sleep`, `wake` | — | computer sleeps / wakes (desktop) |
//! | `background`, `foreground` | — | app moved to background / foreground (mobile) |
//! | `set_status` | `status?`, `text?`, `expires_at?` | see [`crate::StatusChange`] |
//! | `use_custom_status` | `id` | select an admin-defined custom status |
//! | `calendar` | `event_id`, `busy` | a busy calendar event starts (`true`) or ends |
//! | `subscribe` | `users` | receive `presence` updates for these user ids |
//! | `unsubscribe` | `users` | stop receiving them |
//! | `query` | `users` | one-off read of these users' presence |
//! | `reauth` | `token` | R2: a fresh token for the same user extends the socket's authority |
//! | `bye` | — | clean goodbye: the device is removed at once (D7) |
//!
//! Any client frame may carry a `"ref"`: a string of at most
//! [`MAX_REF_CHARS`] characters, or a non-negative integer (normalised to
//! its decimal string). `null` counts as no ref. Unknown fields are
//! rejected. [`parse_client_message`] turns a frame into a
//! [`ClientFrame`] or a [`ProtocolError`] with a stable code (see
//! [`ProtocolError`]); it extracts the `ref` first, so the error can echo
//! it even when the rest of the frame is bad.
//!
//! # Server → client ([`ServerMessage`])
//!
//! | `type` | fields |
//! |---|---|
//! | `ready` | `me`, `settings`, `presence_active`, `session {user, device, platform}`, `limits {max_frame_bytes, max_subscriptions, max_subscriptions_per_user, max_query_users}` |
//! | `presence` | `user`, `status`, `text`, `version`, `me?` |
//! | `snapshot` | `ref?`, `users: [PresenceEntry]` |
//! | `notice` | `kind`: `presence_inactive`, `presence_active`, `shutting_down`, `replaced`, `token_expiring` (with `expires_at`) |
//! | `error` | `code`, `message`, `ref?` |
//! | `ack` | `ref` |
//!
//! # Token expiry (R2)
//!
//! A socket's authority ends when its token does: at the token's `exp`
//! plus the server's 30 s leeway (the moment REST starts refusing the same
//! token). [`TOKEN_EXPIRY_NOTICE_SECS`] (60 s) before that moment, or at
//! once if less is left when the socket opens, the server sends
//! `notice {kind: "token_expiring", expires_at}`. A `reauth {token}` with
//! a valid token for the same user moves the moment to the new token's
//! expiry (answered with `ack` when it carries a `ref`). Without one, the
//! socket is closed with [`CLOSE_TOKEN_EXPIRED`] (4002, `token_expired`)
//! at `expires_at`. A `reauth` whose token is invalid, expired or for
//! another user is answered with an `error` (the token's error code, or
//! `reauth_user_mismatch`) and the socket is closed with
//! [`CLOSE_REAUTH_REFUSED`] (4003, `reauth_refused`).
//!
//! # Close codes
//!
//! | code | reason | meaning |
//! |---|---|---|
//! | 1000 | `bye` | the client said goodbye |
//! | 1001 | `shutting_down` / `lost` | the node drains / the socket went silent |
//! | 1008 | `rate_limited` / `slow_consumer` | flooding / not reading fast enough |
//! | 1009 | `frame_too_large` | a frame above `limits.max_frame_bytes` |
//! | 4001 | `replaced` | the same device connected again elsewhere |
//! | 4002 | `token_expired` | the token expired without a `reauth` (R2) |
//! | 4003 | `reauth_refused` | a `reauth` carried a bad token or another user's (R2) |
//!
//! # Replies and refs
//!
//! Every client frame that carries a `ref` gets exactly one reply that
//! echoes it: `snapshot` for `query` and `subscribe` (the subscribed users'
//! current presence), `error` if the frame was rejected, `ack` otherwise.
//! A frame without a `ref` gets no `ack` (device events are frequent; they
//! should not double the traffic) but still gets an `error` if rejected.
//! `presence` updates are never replies; they carry a `version`, and a
//! client drops any update whose version is not above the last one it
//! holds for that user (W3), which makes the order between a `snapshot`
//! and racing `presence` updates irrelevant.

mod client;
mod error;
mod message_type;
mod server;

/// R2: how long before a socket's authority ends the server sends
/// `notice {kind: "token_expiring"}`.
pub const TOKEN_EXPIRY_NOTICE_SECS: u64 = 60;
/// R2: the close code of a socket whose token expired.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4002;
/// R2: the close code of a socket whose `reauth` was refused.
pub const CLOSE_REAUTH_REFUSED: u16 = 4003;

pub use client::{
    ClientFrame, ClientMessage, MAX_REF_CHARS, parse_client_message, parse_client_message_within,
};
pub use error::ProtocolError;
pub use message_type::MessageType;
pub use server::{Limits, NoticeKind, PresenceUpdate, Ready, ServerMessage, Session, Snapshot};
