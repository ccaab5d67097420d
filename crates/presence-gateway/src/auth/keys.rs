//! The verification keys: HS256 secrets, RS256 and Ed25519 public keys,
//! each checked at startup so that a bad key fails there rather than as
//! "invalid signature" on every request.

use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{Algorithm, DecodingKey};

use super::{AuthError, MIN_HS256_SECRET_BYTES, MIN_RSA_BITS};

pub(super) fn check_hs256_secret(secret: &[u8]) -> Result<(), AuthError> {
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(AuthError::InvalidKey(format!(
            "the HS256 secret has {} bytes; at least {MIN_HS256_SECRET_BYTES} are required",
            secret.len()
        )));
    }
    Ok(())
}

pub(super) fn hs256_decoding_key(secret: &[u8]) -> Result<DecodingKey, AuthError> {
    check_hs256_secret(secret)?;
    DecodingKey::from_secret(secret).map_err(|error| AuthError::InvalidKey(error.to_string()))
}

fn crypto_provider() -> Result<&'static CryptoProvider, AuthError> {
    CryptoProvider::try_get_default()
        .ok_or_else(|| AuthError::InvalidKey("no JWT crypto provider is available".into()))
}

pub(super) fn rs256_decoding_key(pem: &str) -> Result<DecodingKey, AuthError> {
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

pub(super) fn eddsa_decoding_key(pem: &str) -> Result<DecodingKey, AuthError> {
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

pub(super) fn algorithm_name(algorithm: Algorithm) -> &'static str {
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
