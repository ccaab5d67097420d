//! Who is calling: JWT verification for every WebSocket and REST request.
//!
//! Tokens are issued by the operator's identity system (or by
//! `presenced token` during development) and verified here with one key
//! fixed at startup (DESIGN §3): an HS256 shared secret, or an RS256 or
//! EdDSA (Ed25519) public key in PEM form. Exactly one algorithm is
//! accepted per process, so a token signed with anything else — another
//! algorithm family, or `alg: none` — is rejected before its signature is
//! looked at.
//!
//! The flow is: the HTTP layer pulls the token out of the request
//! ([`bearer_token`], [`query_token`], [`request_token`]), hands it to
//! [`Authenticator::verify`], and gets an [`Identity`] or an [`AuthError`]
//! whose [`code`](AuthError::code) is the stable string sent to the client.
//!
//! Claims: `sub` (required; the user id), `exp` (required; 30 s leeway),
//! `nbf` (optional; honoured with the same leeway), `roles` (optional array
//! of strings; `"admin"` grants admin), `username` and `name` (optional).
//! Unknown claims are ignored. `aud` and `iss` are not checked: one
//! deployment trusts one key.

mod authenticator;
mod keys;
mod mint;
mod socket_authority;
mod token_source;

#[cfg(test)]
mod tests;

use std::fmt;

pub use authenticator::Authenticator;
pub use mint::{MintClaims, mint_hs256};
use presence_core::UserId;
pub use socket_authority::{
    AuthorityEvent, ReauthError, SocketAuthority, TOKEN_EXPIRY_NOTICE, ValidUntil, sleep_until,
};
pub use token_source::{bearer_token, query_token, request_token};

/// Tokens longer than this are rejected with `token_malformed` before any
/// parsing, so an attacker cannot make the server base64-decode and parse
/// megabytes per request.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Clock skew tolerated when checking `exp` and `nbf`.
pub const EXP_LEEWAY_SECS: u64 = 30;

/// The longest accepted `sub` claim, in Unicode scalar values: the
/// longest user id.
pub const MAX_SUBJECT_CHARS: usize = presence_core::MAX_USER_ID_CHARS;

/// The shortest accepted HS256 secret. RFC 7518 §3.2 requires a key at least
/// as long as the hash output (256 bits).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// The smallest accepted RSA modulus (RFC 7518 §3.3).
pub const MIN_RSA_BITS: usize = 2048;

/// The role that grants admin rights.
pub const ADMIN_ROLE: &str = "admin";

/// The verification key, chosen once at startup.
#[derive(Clone)]
pub enum AuthConfig {
    /// HMAC-SHA256 with a shared secret of at least
    /// [`MIN_HS256_SECRET_BYTES`] bytes.
    Hs256 { secret: Vec<u8> },
    /// RSASSA-PKCS1-v1_5 with SHA-256; a PEM public key (`PUBLIC KEY` or
    /// `RSA PUBLIC KEY`) of at least [`MIN_RSA_BITS`] bits.
    Rs256 { public_key_pem: String },
    /// Ed25519; a PEM `PUBLIC KEY`.
    EdDsa { public_key_pem: String },
}

impl fmt::Debug for AuthConfig {
    // The secret must never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hs256 { secret } => f
                .debug_struct("Hs256")
                .field("secret", &format_args!("<{} bytes redacted>", secret.len()))
                .finish(),
            Self::Rs256 { .. } => f.write_str("Rs256 { .. }"),
            Self::EdDsa { .. } => f.write_str("EdDsa { .. }"),
        }
    }
}

/// The authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim, validated as a [`UserId`] (non-empty, at most
    /// [`MAX_SUBJECT_CHARS`], no control characters).
    pub user_id: UserId,
    /// `true` when the `roles` claim contains [`ADMIN_ROLE`].
    pub admin: bool,
    pub username: Option<String>,
    pub name: Option<String>,
}

/// Why a token was refused (or, for [`AuthError::InvalidKey`], why the
/// configured key was).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token was provided; send `Authorization: Bearer <token>` or `?token=`")]
    TokenMissing,
    #[error("the token is not a well-formed JWT: {0}")]
    TokenMalformed(&'static str),
    #[error("the token signature does not verify")]
    TokenInvalidSignature,
    #[error("the token is signed with {found}, but this server accepts only {expected}")]
    AlgorithmMismatch {
        expected: &'static str,
        found: &'static str,
    },
    #[error("the token has expired")]
    TokenExpired,
    #[error("the token claims are invalid: {0}")]
    TokenInvalidClaims(String),
    /// A startup error: the configured secret or public key is unusable.
    /// [`Authenticator::verify`] never returns it.
    #[error("the configured auth key is invalid: {0}")]
    InvalidKey(String),
}

impl AuthError {
    /// The stable, machine-readable code sent to clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TokenMissing => "token_missing",
            Self::TokenMalformed(_) => "token_malformed",
            Self::TokenInvalidSignature | Self::AlgorithmMismatch { .. } => {
                "token_invalid_signature"
            }
            Self::TokenExpired => "token_expired",
            Self::TokenInvalidClaims(_) => "token_invalid_claims",
            Self::InvalidKey(_) => "auth_key_invalid",
        }
    }
}
