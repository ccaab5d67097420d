//! R2: how long a socket's authority lasts, when it is told its token
//! expires, and how `reauth` extends it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{AuthError, Authenticator};

/// moment [`Authenticator::verify`] starts refusing it. Sockets are closed
/// then unless the client sends a fresh token (R2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ValidUntil {
    At(SystemTime),
    /// `exp` lies beyond what the clock can represent.
    Never,
}

impl ValidUntil {
    /// How long from `now` until the authority ends (zero if it has).
    pub fn remaining(self, now: SystemTime) -> Option<Duration> {
        match self {
            Self::At(at) => Some(at.duration_since(now).unwrap_or_default()),
            Self::Never => None,
        }
    }

    /// Milliseconds since the Unix epoch, for the wire.
    pub fn unix_millis(self) -> Option<i64> {
        match self {
            Self::At(at) => at
                .duration_since(UNIX_EPOCH)
                .ok()
                .and_then(|d| i64::try_from(d.as_millis()).ok()),
            Self::Never => None,
        }
    }
}

/// R2: the authority of one long-lived socket. It ends when its token
/// does ([`ValidUntil`]); [`TOKEN_EXPIRY_NOTICE`] before that the socket is
/// told (`notice {kind: "token_expiring"}`), and a `reauth` with a fresh
/// token for the same user moves the end to the new token's.
#[derive(Debug)]
pub struct SocketAuthority {
    valid_until: ValidUntil,
    /// The end on the monotonic clock; `None` if it lies too far ahead.
    deadline: Option<tokio::time::Instant>,
    noticed: bool,
}

/// R2: how long before a socket's token expires it is told so.
pub const TOKEN_EXPIRY_NOTICE: Duration =
    Duration::from_secs(presence_protocol::ws::TOKEN_EXPIRY_NOTICE_SECS);

/// What a socket's authority timer says when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthorityEvent {
    /// Tell the client its token expires at these Unix milliseconds.
    Expiring { expires_at_millis: i64 },
    /// The token expired: close the socket.
    Expired,
}

/// Why a `reauth` was refused. Either way the socket is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReauthError {
    #[error("the reauth token was refused: {0}")]
    Invalid(AuthError),
    #[error("the reauth token is for another user than this socket's")]
    OtherUser,
}

impl ReauthError {
    /// The stable code of the `error` frame sent before the close.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(e) => e.code(),
            Self::OtherUser => "reauth_user_mismatch",
        }
    }
}

impl SocketAuthority {
    pub fn new(valid_until: ValidUntil) -> Self {
        Self {
            valid_until,
            deadline: monotonic_deadline(valid_until),
            noticed: false,
        }
    }

    /// When the socket's timer must fire next: the notice, then the end.
    pub fn next_wake(&self) -> Option<tokio::time::Instant> {
        let deadline = self.deadline?;
        if self.noticed {
            Some(deadline)
        } else {
            Some(
                deadline
                    .checked_sub(TOKEN_EXPIRY_NOTICE)
                    .unwrap_or(deadline),
            )
        }
    }

    /// Whether the authority ended by `now` (a message arriving after it
    /// is refused even if the timer has not fired yet).
    pub fn has_expired(&self, now: tokio::time::Instant) -> bool {
        self.deadline.is_some_and(|deadline| now >= deadline)
    }

    /// The timer fired at `now`: what to do.
    pub fn on_wake(&mut self, now: tokio::time::Instant) -> Option<AuthorityEvent> {
        let deadline = self.deadline?;
        if now >= deadline {
            return Some(AuthorityEvent::Expired);
        }
        if self.noticed {
            return None;
        }
        self.noticed = true;
        Some(AuthorityEvent::Expiring {
            expires_at_millis: self.valid_until.unix_millis().unwrap_or(i64::MAX),
        })
    }

    /// `reauth {token}`: accepts a valid token for `user` and moves the end
    /// of the socket's authority to that token's.
    pub fn reauth(
        &mut self,
        auth: &Authenticator,
        user: &str,
        token: &str,
    ) -> Result<(), ReauthError> {
        let (identity, valid_until) = auth.verify_session(token).map_err(ReauthError::Invalid)?;
        if *identity.user_id != *user {
            return Err(ReauthError::OtherUser);
        }
        *self = Self::new(valid_until);
        Ok(())
    }
}

/// Waits until `at`, or forever for `None`.
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn monotonic_deadline(valid_until: ValidUntil) -> Option<tokio::time::Instant> {
    let remaining = valid_until.remaining(SystemTime::now())?;
    tokio::time::Instant::now().checked_add(remaining)
}
