//! [`Authenticator`]: checks a token's header, signature and claims and
//! turns them into an [`Identity`] (or the [`AuthError`] that says why not).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use presence_core::{IdProblem, UserId};
use serde::Deserialize;

use super::keys::{algorithm_name, eddsa_decoding_key, hs256_decoding_key, rs256_decoding_key};
use super::{
    ADMIN_ROLE, AuthConfig, AuthError, EXP_LEEWAY_SECS, Identity, MAX_SUBJECT_CHARS,
    MAX_TOKEN_BYTES, ValidUntil,
};

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

/// The `sub` claim as a user id; the claim's own wording when it is not one.
pub(super) fn validate_subject<S>(sub: S) -> Result<UserId, AuthError>
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
