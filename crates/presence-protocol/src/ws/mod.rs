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
//! | `ready` | `me`, `settings`, `presence_active`, `session {user, device, platform}`, `limits {max_frame_bytes, max_subscriptions, max_query_users}` |
//! | `presence` | `user`, `status`, `text`, `version`, `me?` |
//! | `snapshot` | `ref?`, `users: [PresenceEntry]` |
//! | `notice` | `kind`: `presence_inactive`, `presence_active`, `shutting_down`, `replaced` |
//! | `error` | `code`, `message`, `ref?` |
//! | `ack` | `ref` |
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
mod server;

pub use client::{ClientFrame, ClientMessage, MAX_REF_CHARS, parse_client_message};
pub use error::ProtocolError;
pub use server::{Limits, NoticeKind, PresenceUpdate, Ready, ServerMessage, Session, Snapshot};
