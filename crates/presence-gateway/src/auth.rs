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

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use presence_core::{IdProblem, UserId};
use serde::{Deserialize, Serialize};

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

/// Verifies tokens against the one key configured at startup. Cheap to
/// clone; share one per process.
#[derive(Clone)]
pub struct Authenticator {
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithm", &algorithm_name(self.algorithm))
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds the verifier, checking the key thoroughly so that a bad secret
    /// or PEM fails at startup rather than on the first request.
    pub fn new(config: AuthConfig) -> Result<Authenticator, AuthError> {
        let (algorithm, key) = match config {
            AuthConfig::Hs256 { secret } => (Algorithm::HS256, hs256_decoding_key(&secret)?),
            AuthConfig::Rs256 { public_key_pem } => {
                (Algorithm::RS256, rs256_decoding_key(&public_key_pem)?)
            }
            AuthConfig::EdDsa { public_key_pem } => {
                (Algorithm::EdDSA, eddsa_decoding_key(&public_key_pem)?)
            }
        };
        // The library only checks the signature and the algorithm; every
        // claim is checked below so that time is a parameter and the error
        // codes are ours.
        let mut validation = Validation::new(algorithm);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Ok(Authenticator {
            algorithm,
            key,
            validation,
        })
    }

    /// The one algorithm this authenticator accepts, e.g. `"RS256"`.
    pub fn algorithm(&self) -> &'static str {
        algorithm_name(self.algorithm)
    }

    /// Verifies a token against the system clock.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        self.verify_at(token, now)
    }

    /// Verifies a token as of `now_unix_secs` (seconds since the Unix epoch).
    pub fn verify_at(&self, token: &str, now_unix_secs: u64) -> Result<Identity, AuthError> {
        self.verify_session_at(token, now_unix_secs)
            .map(|(identity, _)| identity)
    }

    /// Verifies a token for a long-lived socket against the system clock:
    /// the caller and when the token's authority ends (R2).
    pub fn verify_session(&self, token: &str) -> Result<(Identity, ValidUntil), AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        self.verify_session_at(token, now)
    }

    /// [`verify_session`](Self::verify_session) as of `now_unix_secs`.
    pub fn verify_session_at(
        &self,
        token: &str,
        now_unix_secs: u64,
    ) -> Result<(Identity, ValidUntil), AuthError> {
        if token.is_empty() {
            return Err(AuthError::TokenMissing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TokenMalformed("the token is longer than 8 KiB"));
        }
        // Parsing the header first separates "not a JWT" from "a JWT with
        // bad claims": both surface as JSON errors from `decode`.
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            AuthError::TokenMalformed("the header is not valid or names an unsupported algorithm")
        })?;
        if header.alg != self.algorithm {
            return Err(AuthError::AlgorithmMismatch {
                expected: algorithm_name(self.algorithm),
                found: algorithm_name(header.alg),
            });
        }
        let claims = jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation)
            .map_err(|error| map_decode_error(error.kind()))?
            .claims;
        let valid_until = claims.valid_until();
        let identity = claims.into_identity(now_unix_secs)?;
        Ok((identity, valid_until))
    }
}

/// When a token's authority ends: its `exp` plus [`EXP_LEEWAY_SECS`], the
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

/// What `presenced token` puts into a development token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintClaims {
    pub sub: String,
    pub admin: bool,
    pub username: Option<String>,
    pub name: Option<String>,
    /// Lifetime; `exp` = now + `ttl` (whole seconds).
    pub ttl: Duration,
}

/// Signs an HS256 token for development. The secret and `sub` are checked
/// by the same rules [`Authenticator`] applies, so every minted token
/// verifies against `AuthConfig::Hs256` with the same secret until it
/// expires.
pub fn mint_hs256(
    secret: &[u8],
    claims: &MintClaims,
    now_unix_secs: u64,
) -> Result<String, AuthError> {
    check_hs256_secret(secret)?;
    validate_subject(claims.sub.as_str())?;
    let key = EncodingKey::from_secret(secret)
        .map_err(|error| AuthError::InvalidKey(error.to_string()))?;
    let body = MintedClaims {
        sub: &claims.sub,
        iat: now_unix_secs,
        exp: now_unix_secs.saturating_add(claims.ttl.as_secs()),
        roles: if claims.admin {
            vec![ADMIN_ROLE]
        } else {
            Vec::new()
        },
        username: claims.username.as_deref(),
        name: claims.name.as_deref(),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &body, &key)
        .map_err(|error| AuthError::InvalidKey(error.to_string()))
}

/// The token from an `Authorization: Bearer <token>` header. The scheme is
/// matched case-insensitively; a missing header, another scheme or an empty
/// token gives `None`.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(|c: char| c.is_ascii_whitespace())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// The `token` parameter of a raw query string (`a=1&token=…`),
/// percent-decoded. JWTs are base64url and need no escaping, so this
/// borrows in the common case. The first `token` parameter wins; an empty
/// one gives `None`.
pub fn query_token(query: &str) -> Option<Cow<'_, str>> {
    let raw = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    if raw.is_empty() {
        return None;
    }
    percent_decode(raw)
}

/// The token of a request: the `Authorization` header if present, else the
/// `?token=` query parameter (browsers cannot set headers on WebSockets).
pub fn request_token<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<Cow<'a, str>> {
    bearer_token(headers)
        .map(Cow::Borrowed)
        .or_else(|| query.and_then(query_token))
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    exp: Option<f64>,
    nbf: Option<f64>,
    roles: Option<Vec<String>>,
    username: Option<String>,
    name: Option<String>,
}

impl RawClaims {
    /// `exp` plus the leeway as a point in time. Call only on claims that
    /// `into_identity` accepts (it requires `exp`).
    fn valid_until(&self) -> ValidUntil {
        let Some(exp) = self.exp else {
            return ValidUntil::Never;
        };
        let end = exp + EXP_LEEWAY_SECS as f64;
        match Duration::try_from_secs_f64(end.max(0.0)) {
            Ok(since_epoch) => UNIX_EPOCH
                .checked_add(since_epoch)
                .map_or(ValidUntil::Never, ValidUntil::At),
            Err(_) => ValidUntil::Never,
        }
    }

    fn into_identity(self, now_unix_secs: u64) -> Result<Identity, AuthError> {
        let sub = self
            .sub
            .ok_or_else(|| AuthError::TokenInvalidClaims("`sub` is missing".into()))?;
        let sub = validate_subject(sub)?;
        let exp = self
            .exp
            .ok_or_else(|| AuthError::TokenInvalidClaims("`exp` is missing".into()))?;
        // JWT times are seconds and may be fractional (RFC 7519 §2).
        let now = now_unix_secs as f64;
        let leeway = EXP_LEEWAY_SECS as f64;
        if now >= exp + leeway {
            return Err(AuthError::TokenExpired);
        }
        if let Some(nbf) = self.nbf
            && nbf > now + leeway
        {
            return Err(AuthError::TokenInvalidClaims(
                "the token is not valid yet (`nbf`)".into(),
            ));
        }
        let admin = self
            .roles
            .is_some_and(|roles| roles.iter().any(|role| role == ADMIN_ROLE));
        Ok(Identity {
            user_id: sub,
            admin,
            username: self.username,
            name: self.name,
        })
    }
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    roles: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

/// The `sub` claim as a user id; the claim's own wording when it is not one.
fn validate_subject<S>(sub: S) -> Result<UserId, AuthError>
where
    UserId: TryFrom<S, Error = presence_core::IdError>,
{
    UserId::try_from(sub).map_err(|e| {
        AuthError::TokenInvalidClaims(match e.problem {
            IdProblem::Empty => "`sub` is empty".into(),
            IdProblem::TooLong => format!("`sub` is longer than {MAX_SUBJECT_CHARS} characters"),
            IdProblem::BadCharacter => "`sub` contains control characters".into(),
        })
    })
}

fn map_decode_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => AuthError::TokenInvalidSignature,
        // The header parsed (checked before decoding), so JSON errors come
        // from the payload.
        ErrorKind::Json(error) => AuthError::TokenInvalidClaims(error.to_string()),
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            AuthError::TokenMalformed("a segment is not valid base64url")
        }
        ErrorKind::InvalidToken => AuthError::TokenMalformed("the token structure is invalid"),
        _ => AuthError::TokenMalformed("the token could not be decoded"),
    }
}

fn check_hs256_secret(secret: &[u8]) -> Result<(), AuthError> {
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(AuthError::InvalidKey(format!(
            "the HS256 secret has {} bytes; at least {MIN_HS256_SECRET_BYTES} are required",
            secret.len()
        )));
    }
    Ok(())
}

fn hs256_decoding_key(secret: &[u8]) -> Result<DecodingKey, AuthError> {
    check_hs256_secret(secret)?;
    DecodingKey::from_secret(secret).map_err(|error| AuthError::InvalidKey(error.to_string()))
}

fn crypto_provider() -> Result<&'static CryptoProvider, AuthError> {
    CryptoProvider::try_get_default()
        .ok_or_else(|| AuthError::InvalidKey("no JWT crypto provider is available".into()))
}

fn rs256_decoding_key(pem: &str) -> Result<DecodingKey, AuthError> {
    let not_rsa = || AuthError::InvalidKey("not a PEM-encoded RSA public key".into());
    let key = DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| not_rsa())?;
    let der = key.try_get_as_bytes().map_err(|_| not_rsa())?;
    // `from_rsa_pem` only unwraps the PEM; parse the key itself now, or a
    // bad key would surface as "invalid signature" on every request.
    let (modulus, exponent) = (crypto_provider()?
        .key_utils
        .rsa_pub_components_from_public_key)(der)
    .map_err(|_| not_rsa())?;
    let bits = significant_bits(&modulus);
    if bits < MIN_RSA_BITS {
        return Err(AuthError::InvalidKey(format!(
            "the RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"
        )));
    }
    Ok(DecodingKey::from_rsa_raw_components(&modulus, &exponent))
}

fn eddsa_decoding_key(pem: &str) -> Result<DecodingKey, AuthError> {
    let not_ed25519 = || AuthError::InvalidKey("not a PEM-encoded Ed25519 public key".into());
    let key = DecodingKey::from_ed_pem(pem.as_bytes()).map_err(|_| not_ed25519())?;
    // The verifier slices the first 32 bytes unchecked; check the length
    // before handing the key over, then let it validate the point.
    if key.try_get_as_bytes().map_err(|_| not_ed25519())?.len() != 32 {
        return Err(not_ed25519());
    }
    (crypto_provider()?.verifier_factory)(&Algorithm::EdDSA, &key).map_err(|_| not_ed25519())?;
    Ok(key)
}

fn significant_bits(big_endian: &[u8]) -> usize {
    match big_endian.iter().position(|&byte| byte != 0) {
        Some(first) => (big_endian.len() - first) * 8 - big_endian[first].leading_zeros() as usize,
        None => 0,
    }
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        _ => "an unsupported algorithm",
    }
}

/// Form decoding of a query value (`+` is a space, `%XX` a byte), but
/// strict where browsers are lenient, deliberately: a malformed escape
/// (`%zz`, `%2`) or bytes that are not UTF-8 give `None`, because a token
/// that lost bytes on the way can only fail later with a misleading
/// `token_malformed`; as no token at all the client learns it sent none.
fn percent_decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains(['%', '+']) {
        return Some(Cow::Borrowed(raw));
    }
    if !escapes_are_well_formed(raw) {
        return None;
    }
    // `+` first, so that an escaped plus (`%2B`) stays a plus.
    let spaced = raw.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()?;
    Some(Cow::Owned(decoded.into_owned()))
}

/// Whether every `%` starts an escape of two hex digits.
fn escapes_are_well_formed(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::{Value, json};

    use super::*;

    const NOW: u64 = 1_700_000_000;
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OTHER_SECRET: &[u8] = b"fedcba9876543210fedcba9876543210";

    /// `{"alg":"none","typ":"JWT"}`, base64url.
    const ALG_NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
    /// `{"alg":"HS999","typ":"JWT"}`, base64url.
    const UNKNOWN_ALG_HEADER: &str = "eyJhbGciOiJIUzk5OSIsInR5cCI6IkpXVCJ9";
    /// `{"sub":"mallory","exp":1800000000,"roles":["admin"]}`, base64url.
    const ADMIN_PAYLOAD: &str =
        "eyJzdWIiOiJtYWxsb3J5IiwiZXhwIjoxODAwMDAwMDAwLCJyb2xlcyI6WyJhZG1pbiJdfQ";

    fn hs256() -> Authenticator {
        Authenticator::new(AuthConfig::Hs256 {
            secret: SECRET.to_vec(),
        })
        .unwrap()
    }

    fn rs256() -> Authenticator {
        Authenticator::new(AuthConfig::Rs256 {
            public_key_pem: keys::RSA_PUBLIC.into(),
        })
        .unwrap()
    }

    fn eddsa() -> Authenticator {
        Authenticator::new(AuthConfig::EdDsa {
            public_key_pem: keys::ED25519_PUBLIC.into(),
        })
        .unwrap()
    }

    fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(algorithm), claims, key).unwrap()
    }

    fn sign_hs(claims: Value) -> String {
        sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET).unwrap(),
            &claims,
        )
    }

    fn sign_rs(claims: Value) -> String {
        let key = EncodingKey::from_rsa_pem(keys::RSA_PRIVATE.as_bytes()).unwrap();
        sign(Algorithm::RS256, &key, &claims)
    }

    fn sign_ed(claims: Value) -> String {
        let key = EncodingKey::from_ed_pem(keys::ED25519_PRIVATE.as_bytes()).unwrap();
        sign(Algorithm::EdDSA, &key, &claims)
    }

    fn alice() -> Value {
        json!({"sub": "alice", "exp": NOW + 3600})
    }

    fn user(id: &str) -> Identity {
        Identity {
            user_id: UserId::try_from(id).unwrap(),
            admin: false,
            username: None,
            name: None,
        }
    }

    #[test]
    fn r2_a_session_token_is_valid_until_exp_plus_the_leeway() {
        let at = |secs: f64| ValidUntil::At(UNIX_EPOCH + Duration::from_secs_f64(secs));
        let cases = [
            (
                json!({"sub": "alice", "exp": NOW + 3600}),
                at((NOW + 3600 + EXP_LEEWAY_SECS) as f64),
            ),
            (
                json!({"sub": "alice", "exp": NOW - 10}),
                at((NOW - 10 + EXP_LEEWAY_SECS) as f64),
            ),
            (
                json!({"sub": "alice", "exp": 1.7e9 + 0.5}),
                at(1.7e9 + 0.5 + EXP_LEEWAY_SECS as f64),
            ),
            (json!({"sub": "alice", "exp": 1e300}), ValidUntil::Never),
        ];
        for (claims, expected) in cases {
            let (identity, until) = hs256()
                .verify_session_at(&sign_hs(claims.clone()), NOW)
                .unwrap();
            assert_eq!(identity.user_id, "alice");
            assert_eq!(until, expected, "{claims}");
        }
        let expired = sign_hs(json!({"sub": "alice", "exp": NOW - EXP_LEEWAY_SECS}));
        assert_eq!(
            hs256().verify_session_at(&expired, NOW).unwrap_err().code(),
            "token_expired"
        );
        let now = UNIX_EPOCH + Duration::from_secs(NOW);
        assert_eq!(
            at(NOW as f64 + 5.0).remaining(now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(at(NOW as f64 - 5.0).remaining(now), Some(Duration::ZERO));
        assert_eq!(ValidUntil::Never.remaining(now), None);
    }

    /// Verifies `token` with `auth` at [`NOW`] and compares with the
    /// expected identity or error code.
    fn check(auth: &Authenticator, token: &str, expected: Result<Identity, &str>) {
        let actual = auth.verify_at(token, NOW).map_err(|error| error.code());
        assert_eq!(actual, expected, "token: {token:.80}");
    }

    #[test]
    fn valid_tokens_verify_for_each_algorithm() {
        check(&hs256(), &sign_hs(alice()), Ok(user("alice")));
        check(&rs256(), &sign_rs(alice()), Ok(user("alice")));
        check(&eddsa(), &sign_ed(alice()), Ok(user("alice")));
    }

    #[test]
    fn optional_claims_fill_the_identity() {
        let token = sign_hs(json!({
            "sub": "u1", "exp": NOW + 60, "roles": ["admin", "user"],
            "username": "ada", "name": "Ada Lovelace", "iss": "ignored", "aud": "ignored",
        }));
        let expected = Identity {
            user_id: UserId::try_from("u1").unwrap(),
            admin: true,
            username: Some("ada".into()),
            name: Some("Ada Lovelace".into()),
        };
        check(&hs256(), &token, Ok(expected));
    }

    #[test]
    fn only_the_admin_role_grants_admin() {
        let admin = |roles: Value| {
            let token = sign_hs(json!({"sub": "u1", "exp": NOW + 60, "roles": roles}));
            hs256()
                .verify_at(&token, NOW)
                .map(|identity| identity.admin)
        };
        assert_eq!(admin(json!(["admin"])), Ok(true));
        assert_eq!(admin(json!(["user", "admin"])), Ok(true));
        assert_eq!(admin(json!(["user"])), Ok(false));
        assert_eq!(admin(json!(["Admin"])), Ok(false));
        assert_eq!(admin(json!([])), Ok(false));
        assert_eq!(admin(Value::Null), Ok(false));
        assert_eq!(
            admin(json!("admin")).map_err(|error| error.code()),
            Err("token_invalid_claims")
        );
    }

    #[test]
    fn exp_is_required_and_honours_30_seconds_of_leeway() {
        let with_exp = |exp: Value| sign_hs(json!({"sub": "alice", "exp": exp}));
        let auth = hs256();
        check(&auth, &with_exp(json!(NOW - 29)), Ok(user("alice")));
        check(&auth, &with_exp(json!(NOW - 30)), Err("token_expired"));
        check(&auth, &with_exp(json!(NOW - 3600)), Err("token_expired"));
        check(&auth, &with_exp(json!(0)), Err("token_expired"));
        check(&auth, &with_exp(json!(-5)), Err("token_expired"));
        check(&auth, &with_exp(json!(NOW as f64 + 0.5)), Ok(user("alice")));
        check(
            &auth,
            &with_exp(json!("tomorrow")),
            Err("token_invalid_claims"),
        );
        check(
            &auth,
            &sign_hs(json!({"sub": "alice"})),
            Err("token_invalid_claims"),
        );
    }

    #[test]
    fn nbf_in_the_future_is_rejected_beyond_the_leeway() {
        let with_nbf = |nbf: u64| sign_hs(json!({"sub": "alice", "exp": NOW + 600, "nbf": nbf}));
        check(&hs256(), &with_nbf(NOW + 30), Ok(user("alice")));
        check(&hs256(), &with_nbf(NOW + 31), Err("token_invalid_claims"));
    }

    #[test]
    fn sub_must_be_a_short_printable_string() {
        let with_sub = |sub: Value| sign_hs(json!({"sub": sub, "exp": NOW + 60}));
        let auth = hs256();
        let longest = "é".repeat(MAX_SUBJECT_CHARS);
        check(&auth, &with_sub(json!(longest)), Ok(user(&longest)));
        check(&auth, &with_sub(json!("user 😀")), Ok(user("user 😀")));
        let too_long = "a".repeat(MAX_SUBJECT_CHARS + 1);
        check(
            &auth,
            &with_sub(json!(too_long)),
            Err("token_invalid_claims"),
        );
        check(&auth, &with_sub(json!("")), Err("token_invalid_claims"));
        check(&auth, &with_sub(json!("a\nb")), Err("token_invalid_claims"));
        check(
            &auth,
            &with_sub(json!("a\u{7f}")),
            Err("token_invalid_claims"),
        );
        check(&auth, &with_sub(json!(42)), Err("token_invalid_claims"));
        check(&auth, &with_sub(Value::Null), Err("token_invalid_claims"));
        check(
            &auth,
            &sign_hs(json!({"exp": NOW + 60})),
            Err("token_invalid_claims"),
        );
        check(
            &auth,
            &sign_hs(json!(["not", "an", "object"])),
            Err("token_invalid_claims"),
        );
    }

    #[test]
    fn a_wrong_secret_or_tampered_token_fails_the_signature() {
        let foreign = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(OTHER_SECRET).unwrap(),
            &alice(),
        );
        check(&hs256(), &foreign, Err("token_invalid_signature"));

        // A genuine signature over alice's claims, glued to a payload that
        // promotes mallory to admin.
        let genuine = sign_hs(alice());
        let (header, rest) = genuine.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let tampered = format!("{header}.{ADMIN_PAYLOAD}.{signature}");
        check(&hs256(), &tampered, Err("token_invalid_signature"));

        let mut flipped = genuine.clone().into_bytes();
        let middle_of_signature = flipped.len() - 10;
        flipped[middle_of_signature] = if flipped[middle_of_signature] == b'A' {
            b'B'
        } else {
            b'A'
        };
        let flipped = String::from_utf8(flipped).unwrap();
        check(&hs256(), &flipped, Err("token_invalid_signature"));

        // With a valid header, the signature is checked before anything
        // else is decoded: junk after it is just a bad signature.
        for forged in [
            format!("{header}.{ADMIN_PAYLOAD}."),
            format!("{header}.!!!.c2ln"),
            format!("{header}.."),
        ] {
            check(&hs256(), &forged, Err("token_invalid_signature"));
        }
    }

    #[test]
    fn alg_none_and_unknown_algorithms_never_pass() {
        for auth in [hs256(), rs256(), eddsa()] {
            for token in [
                format!("{ALG_NONE_HEADER}.{ADMIN_PAYLOAD}."),
                format!("{ALG_NONE_HEADER}.{ADMIN_PAYLOAD}.c2lnbmF0dXJl"),
                format!("{UNKNOWN_ALG_HEADER}.{ADMIN_PAYLOAD}.c2lnbmF0dXJl"),
            ] {
                check(&auth, &token, Err("token_malformed"));
            }
        }
    }

    #[test]
    fn each_authenticator_accepts_only_its_own_algorithm() {
        let hs = sign_hs(alice());
        let rs = sign_rs(alice());
        let ed = sign_ed(alice());
        check(&rs256(), &hs, Err("token_invalid_signature"));
        check(&eddsa(), &hs, Err("token_invalid_signature"));
        check(&hs256(), &rs, Err("token_invalid_signature"));
        check(&eddsa(), &rs, Err("token_invalid_signature"));
        check(&hs256(), &ed, Err("token_invalid_signature"));
        check(&rs256(), &ed, Err("token_invalid_signature"));
        assert_eq!(
            rs256().verify_at(&hs, NOW),
            Err(AuthError::AlgorithmMismatch {
                expected: "RS256",
                found: "HS256"
            })
        );
    }

    #[test]
    fn the_public_key_cannot_be_used_as_an_hmac_secret() {
        // The classic key-confusion attack: HMAC-sign with the (public) RSA
        // PEM and hope the server verifies HS256 with it.
        for (auth, pem) in [(rs256(), keys::RSA_PUBLIC), (eddsa(), keys::ED25519_PUBLIC)] {
            let key = EncodingKey::from_secret(pem.as_bytes()).unwrap();
            let forged = sign(Algorithm::HS256, &key, &alice());
            check(&auth, &forged, Err("token_invalid_signature"));
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let auth = hs256();
        check(&auth, "", Err("token_missing"));
        for garbage in [
            "x",
            "a.b",
            "a.b.c",
            "..",
            "...",
            "a.b.c.d",
            "!!!.!!!.!!!",
            "Bearer abc",
            "eyJ.eyJ.sig",
            "ünï.cødé.✓",
            "bnVsbA.e30.c2ln",
        ] {
            check(&auth, garbage, Err("token_malformed"));
        }
    }

    #[test]
    fn tokens_over_8_kib_are_rejected_before_parsing() {
        let auth = hs256();
        let padded =
            |len: usize| sign_hs(json!({"sub": "alice", "exp": NOW + 60, "pad": "x".repeat(len)}));
        // Find the padding that puts the token exactly at the limit.
        let overhead = padded(0).len();
        let pad_for = |target: usize| {
            (0..)
                .map(|extra| padded((target - overhead) * 3 / 4 + extra))
                .find(|token| token.len() >= target)
                .unwrap()
        };
        let at_limit = pad_for(MAX_TOKEN_BYTES - 3);
        assert!(at_limit.len() <= MAX_TOKEN_BYTES, "{}", at_limit.len());
        check(&auth, &at_limit, Ok(user("alice")));

        let over = pad_for(MAX_TOKEN_BYTES + 1);
        assert!(over.len() > MAX_TOKEN_BYTES);
        check(&auth, &over, Err("token_malformed"));
        check(&auth, &"a".repeat(1 << 20), Err("token_malformed"));
    }

    #[test]
    fn bad_keys_fail_at_startup() {
        let rs = |pem: &str| AuthConfig::Rs256 {
            public_key_pem: pem.into(),
        };
        let ed = |pem: &str| AuthConfig::EdDsa {
            public_key_pem: pem.into(),
        };
        let cases = [
            AuthConfig::Hs256 { secret: Vec::new() },
            AuthConfig::Hs256 {
                secret: b"short".to_vec(),
            },
            AuthConfig::Hs256 {
                secret: SECRET[..MIN_HS256_SECRET_BYTES - 1].to_vec(),
            },
            rs(""),
            rs("not a pem"),
            rs(keys::RSA_1024_PUBLIC),
            rs(keys::RSA_PRIVATE),
            rs(keys::ED25519_PUBLIC),
            ed(""),
            ed("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
            ed(keys::ED25519_PRIVATE),
            ed(keys::RSA_PUBLIC),
        ];
        for config in cases {
            let described = format!("{config:?}");
            let error = Authenticator::new(config).unwrap_err();
            assert_eq!(error.code(), "auth_key_invalid", "{described}: {error}");
        }
    }

    #[test]
    fn minted_tokens_verify_until_they_expire() {
        let claims = MintClaims {
            sub: "dev-admin".into(),
            admin: true,
            username: Some("dev".into()),
            name: None,
            ttl: Duration::from_secs(3600),
        };
        let token = mint_hs256(SECRET, &claims, NOW).unwrap();
        let expected = Identity {
            user_id: UserId::try_from("dev-admin").unwrap(),
            admin: true,
            username: Some("dev".into()),
            name: None,
        };
        assert_eq!(hs256().verify_at(&token, NOW + 3600), Ok(expected));
        assert_eq!(
            hs256().verify_at(&token, NOW + 3600 + EXP_LEEWAY_SECS),
            Err(AuthError::TokenExpired)
        );

        let plain = MintClaims {
            admin: false,
            ..claims.clone()
        };
        let token = mint_hs256(SECRET, &plain, NOW).unwrap();
        assert!(!hs256().verify_at(&token, NOW).unwrap().admin);
    }

    #[test]
    fn minting_checks_the_secret_and_subject() {
        let claims = MintClaims {
            sub: String::new(),
            admin: false,
            username: None,
            name: None,
            ttl: Duration::from_secs(60),
        };
        let code = |secret: &[u8], claims: &MintClaims| {
            mint_hs256(secret, claims, NOW).map_err(|error| error.code())
        };
        assert_eq!(code(SECRET, &claims), Err("token_invalid_claims"));
        let claims = MintClaims {
            sub: "bob".into(),
            ..claims
        };
        assert_eq!(code(b"short", &claims), Err("auth_key_invalid"));
        assert!(code(SECRET, &claims).is_ok());
    }

    #[test]
    fn every_error_has_a_stable_code_and_a_message() {
        let cases = [
            (AuthError::TokenMissing, "token_missing"),
            (AuthError::TokenMalformed("x"), "token_malformed"),
            (AuthError::TokenInvalidSignature, "token_invalid_signature"),
            (
                AuthError::AlgorithmMismatch {
                    expected: "RS256",
                    found: "HS256",
                },
                "token_invalid_signature",
            ),
            (AuthError::TokenExpired, "token_expired"),
            (
                AuthError::TokenInvalidClaims("x".into()),
                "token_invalid_claims",
            ),
            (AuthError::InvalidKey("x".into()), "auth_key_invalid"),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code);
            assert!(error.to_string().len() > 10, "{error}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let config = AuthConfig::Hs256 {
            secret: SECRET.to_vec(),
        };
        let shown = format!(
            "{config:?} {:?}",
            Authenticator::new(config.clone()).unwrap()
        );
        assert!(!shown.contains("0123456789"), "{shown}");
        assert!(shown.contains("HS256"), "{shown}");
    }

    #[test]
    fn bearer_token_reads_the_authorization_header() {
        let check = |value: Option<&str>, expected: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(value) = value {
                headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            }
            assert_eq!(bearer_token(&headers), expected, "{value:?}");
        };
        check(None, None);
        check(Some("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        check(Some("bearer abc"), Some("abc"));
        check(Some("BEARER abc"), Some("abc"));
        check(Some("Bearer   abc  "), Some("abc"));
        check(Some("Bearer\tabc"), Some("abc"));
        check(Some("Bearer"), None);
        check(Some("Bearer "), None);
        check(Some("Basic YWxhZGRpbjpvcGVu"), None);
        check(Some("Bearerabc"), None);
        check(Some("abc.def.ghi"), None);
    }

    #[test]
    fn query_token_reads_the_token_parameter() {
        let check = |query: &str, expected: Option<&str>| {
            assert_eq!(query_token(query).as_deref(), expected, "{query:?}");
        };
        check("", None);
        check("token=abc.def.ghi", Some("abc.def.ghi"));
        check("device_id=d1&token=abc&platform=web", Some("abc"));
        check("token=first&token=second", Some("first"));
        check("token=", None);
        check("xtoken=abc", None);
        check("token_type=abc", None);
        check("token=a%2Eb%2ec", Some("a.b.c"));
        check("token=a+b", Some("a b"));
        check("token=a%2B", Some("a+"));
        check("token=a%2Bb+c", Some("a+b c"));
        check("token=a%2", None);
        check("token=%2", None);
        check("token=%", None);
        check("token=a%zz", None);
        check("token=%ff", None);
    }

    #[test]
    fn request_token_prefers_the_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            request_token(&headers, Some("token=q")).as_deref(),
            Some("q")
        );
        assert_eq!(request_token(&headers, None), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer h"));
        assert_eq!(
            request_token(&headers, Some("token=q")).as_deref(),
            Some("h")
        );
    }

    /// Test keys, generated once with `openssl genpkey` for these tests
    /// only. They protect nothing.
    mod keys {
        pub const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCazoyxhd3tF0OR
EPI1Za4CchU8Rz9GftJ+ssdJYn0FokzmJd7Ty08lrl336rvIPYPGUx9gkRZEFZt2
kBdKzGnI+aYfoSlmXzbQXioSv3LU7h6s5r+dsGKWm0tMaKiKw6w6WMeeC4DwF61m
r9gs4rB2YuUOPB73etfzTvt1iRutcqFLdyKbWb6fIX479KBNqL7S5EjAaQMiWV7z
HskTK78VH0m+VKq96X6Das5gcsCgYpi3ShqB07fUvPJnNodLM7szu7oO36wqAOBW
7/jD27QGR0T8QXyL1EXgtThiDdaJOzbwdMDL49IZBtLuvh0eEm0y5FUpfFCZ4OSU
5mYbghcjAgMBAAECggEAEGKJOKbjENuT/rAs+qLa8o5RmhIua88zh05z0lwWwHhn
rDpY5dDQfTwB3SIeoviD0INuwEFK+oTQ8hEZLgUJs0hdIV7k611rh01YJajWxhu3
6nP31wBaxvcD1sADCsDgI0LPSfaMvJy88S/ucP3DUJxyAvoxCt+ZKLr02YFcCRT9
P+Fd3J3888itOkXYaYBRnstZW62qvBvkMkNoq4N6MPkV62DUY59KAIeMKpZ5bIRH
AEqkB2HPHBy5RQZ5frVHVjvXEUAw8A4I4LsQ1zHcYEL0UajUrxJaH8lvwLXKRISA
scAZfE0nHi4BGLXchyF4MYRP6TtGH/guBPAEQfQI4QKBgQDLVHk9fm+Z29TjFeNi
ZYO+vBtv5mh5J8NdUa9S3vOUxCWLy1z3us/bLpZQd5kRrfnNsZiyvQR+49/x/80b
UR7OrFXNB3COb8+Px4wdOosr/TBuiTWCNZybHIPOBQjigaWGcb1NDrfUctbdEk+O
MTjPj+mUAbqah/ISUhUQCORm4QKBgQDC6FXxvEf+WhfilSJJIciVKuGRkPIASj5O
UObytcE6OYemfxwY7i+qm8yDSvqQ/3LBz8SMP+9B4AWQ3TnUmWoL5hMUKiv1Uwpv
vG+qOFW7iJtBFfIAbg67F54Hbko1ZcvcJUzp4SHAmBDy8AMdkWo9Qa0Rz+53HhUO
fNU9tzmygwKBgQCCPaLHZASiXjC4IN4cuf+wnhdJDyJecLzwOpF+GLeX1Chkqifr
uurHb8jy1BjlPTZkrlysKO0HRnm9Lmg4FjcQlU0EXr6XTkF6zIwQcN6Sl8R9GUCA
Hk0pAhPfVFRDml3nh1WFVWclG0ZMJx10bE0CjyFEH/NiZrAFUjSRp9B9oQKBgBnL
J3yLPzfQ8nJA7D2jY+khuKJL/Uq+iIpSuI2MMhsje+kzzyMZemNopOMHLCu+MpCl
j0xENcSRAguOy1VwTBFxDDtR7WlU6P+qf1iWhfoAdRNi9RjLd9WYpYg0N0vjwdvL
b+dPrOjQ9wU/cBocoWOj6mR+EP/gkkbNjGbTdaZDAoGAK1gZ7zzZTN/d7KzptqlU
YAaauEMtK74i5q8qp0DfpJLl9JIN5iEZiOv9ko/f8F4R0Nn2DvD7lOOyjeDPeYIV
ojLYF8a3xtyEO/mmqd3Ez3fP0D155s8Re/6pVyxlTx28x6sMOvPqKRG5ifAQCKt4
1p9jPy0+8wZ54PqUREXWnK0=
-----END PRIVATE KEY-----
";

        pub const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAms6MsYXd7RdDkRDyNWWu
AnIVPEc/Rn7SfrLHSWJ9BaJM5iXe08tPJa5d9+q7yD2DxlMfYJEWRBWbdpAXSsxp
yPmmH6EpZl820F4qEr9y1O4erOa/nbBilptLTGioisOsOljHnguA8BetZq/YLOKw
dmLlDjwe93rX8077dYkbrXKhS3cim1m+nyF+O/SgTai+0uRIwGkDIlle8x7JEyu/
FR9JvlSqvel+g2rOYHLAoGKYt0oagdO31LzyZzaHSzO7M7u6Dt+sKgDgVu/4w9u0
BkdE/EF8i9RF4LU4Yg3WiTs28HTAy+PSGQbS7r4dHhJtMuRVKXxQmeDklOZmG4IX
IwIDAQAB
-----END PUBLIC KEY-----
";

        /// Too small: 1024 bits.
        pub const RSA_1024_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCr1RVEuveBY7KMkzBg5BWnUDTX
UD30iFDMLNqM8MiyoCmYN3UFfT3YRut7Pourp0imA49YYbeTWR9KPzP6WYOoQV7D
bKllQD84NgB41ci1FjdoR7rDzybqCbc8p3/sDOqgMnAWHcdPRrG0pZ345Iz3cq1t
3OYzKZG0odVQYKA74QIDAQAB
-----END PUBLIC KEY-----
";

        pub const ED25519_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIM1uS2mT9wen+KmCl0TLKPBLuzsXdub7+VV9A/Y0ZlrU
-----END PRIVATE KEY-----
";

        pub const ED25519_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA+sh9Mnb/LnnaityTTkQ6ViADT1yA1MVBmrKG/agYA6o=
-----END PUBLIC KEY-----
";
    }
}
