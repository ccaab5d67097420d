//! Development tokens: what `presenced token` signs.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::authenticator::validate_subject;
use super::keys::check_hs256_secret;
use super::{ADMIN_ROLE, AuthError};

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
