//! Tests of token verification, key checks, minting and token sources.

use axum::http::HeaderValue;
use serde_json::{Value, json};

use std::time::{Duration, UNIX_EPOCH};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

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
