//! Accounts and tokens: argon2id password hashes, HS256 tokens signed with
//! the cluster's secret, and optional RS256/ES256 public keys for tokens an
//! application mints for its own users.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use confab_protocol::validate::is_username;
use confab_protocol::{ErrorCode, ProtocolError};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the JWT secret must be at least 32 bytes, got {0}")]
    ShortSecret(usize),
    #[error("public key {name}: neither an RSA nor an EC public key in PEM: {reason}")]
    BadPublicKey { name: String, reason: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

pub struct Auth {
    encoding: EncodingKey,
    hs256: DecodingKey,
    public: Vec<(Algorithm, DecodingKey)>,
    ttl: Duration,
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Auth {
    /// `public_keys` are `(name, PEM)` pairs; the name appears in errors.
    pub fn new(secret: &[u8], public_keys: &[(String, Vec<u8>)], ttl: Duration) -> Result<Auth, AuthError> {
        if secret.len() < 32 {
            return Err(AuthError::ShortSecret(secret.len()));
        }
        let mut public = Vec::new();
        for (name, pem) in public_keys {
            let key = DecodingKey::from_rsa_pem(pem)
                .map(|k| (Algorithm::RS256, k))
                .or_else(|_| DecodingKey::from_ec_pem(pem).map(|k| (Algorithm::ES256, k)))
                .map_err(|e| AuthError::BadPublicKey { name: name.clone(), reason: e.to_string() })?;
            public.push(key);
        }
        Ok(Auth { encoding: EncodingKey::from_secret(secret), hs256: DecodingKey::from_secret(secret), public, ttl })
    }

    /// A token for `user`, and its expiry in unix seconds.
    pub fn issue(&self, user: &str) -> (String, u64) {
        let now = unix_now();
        let claims = Claims { sub: user.to_owned(), exp: now + self.ttl.as_secs(), iat: Some(now) };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail");
        (token, claims.exp)
    }

    /// The claims of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Result<Claims, ProtocolError> {
        let unauthorized = |m: &str| ProtocolError::new(ErrorCode::Unauthorized, m);
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthorized("malformed token"))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = 0;
        // An application may mint a token ahead of its use: not before `nbf`.
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = match header.alg {
            Algorithm::HS256 => jsonwebtoken::decode::<Claims>(token, &self.hs256, &validation).map(|d| d.claims),
            alg @ (Algorithm::RS256 | Algorithm::ES256) => {
                let mut last = Err(unauthorized("no public key is configured for this token's algorithm"));
                for (_, key) in self.public.iter().filter(|(a, _)| *a == alg) {
                    match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                        Ok(d) => {
                            last = Ok(d.claims);
                            break;
                        }
                        Err(e) => last = Err(token_error(e)),
                    }
                }
                return last.and_then(check_subject);
            }
            _ => return Err(unauthorized("unsupported token algorithm")),
        };
        claims.map_err(token_error).and_then(check_subject)
    }
}

fn token_error(e: jsonwebtoken::errors::Error) -> ProtocolError {
    use jsonwebtoken::errors::ErrorKind;
    let message = match e.kind() {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not valid yet",
        ErrorKind::InvalidSignature => "bad token signature",
        ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
        _ => "invalid token",
    };
    ProtocolError::new(ErrorCode::Unauthorized, message)
}

fn check_subject(claims: Claims) -> Result<Claims, ProtocolError> {
    if is_username(&claims.sub) {
        Ok(claims)
    } else {
        Err(ProtocolError::new(ErrorCode::Unauthorized, "token subject is not a valid user name"))
    }
}

/// An argon2id PHC string for `password`. CPU-heavy: call off the executor.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes is a valid salt");
    Argon2::default().hash_password(password.as_bytes(), &salt).expect("argon2 with default parameters").to_string()
}

/// Whether `password` matches the PHC string. CPU-heavy: call off the executor.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(&[7u8; 32], &[], Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn an_issued_token_verifies_as_its_user() {
        let a = auth();
        let (token, exp) = a.issue("alice");
        let claims = a.verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.exp, exp);
    }

    #[test]
    fn tampered_foreign_and_expired_tokens_are_refused() {
        let a = auth();
        let (token, _) = a.issue("alice");
        let mut tampered = token.clone().into_bytes();
        let n = tampered.len();
        tampered[n - 2] = if tampered[n - 2] == b'A' { b'B' } else { b'A' };
        assert!(a.verify(std::str::from_utf8(&tampered).unwrap()).is_err());
        let other = Auth::new(&[8u8; 32], &[], Duration::from_secs(60)).unwrap();
        assert!(a.verify(&other.issue("alice").0).is_err());
        let expired = Claims { sub: "alice".into(), exp: unix_now() - 1, iat: None };
        let token = jsonwebtoken::encode(&Header::default(), &expired, &EncodingKey::from_secret(&[7u8; 32])).unwrap();
        assert_eq!(a.verify(&token).unwrap_err().message, "token expired");
        assert!(a.verify("not.a.jwt").is_err());
    }

    #[test]
    fn a_token_is_refused_before_its_nbf() {
        let a = auth();
        let sign = |nbf: u64| {
            let claims = serde_json::json!({ "sub": "alice", "exp": unix_now() + 600, "nbf": nbf });
            jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(&[7u8; 32])).unwrap()
        };
        assert_eq!(a.verify(&sign(unix_now() + 60)).unwrap_err().message, "token not valid yet");
        assert_eq!(a.verify(&sign(unix_now() - 1)).unwrap().sub, "alice", "valid from nbf on");
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(Auth::new(b"short", &[], Duration::from_secs(1)), Err(AuthError::ShortSecret(5))));
    }

    #[test]
    fn passwords_verify_against_their_hash_only() {
        let h = hash_password("correct horse");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a phc string"));
    }
}
