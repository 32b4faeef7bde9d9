//! Accounts and tokens: argon2id password hashes, HS256 tokens signed with
//! the cluster's secret, and optional RS256/ES256 public keys for tokens an
//! application mints for its own users. An application key may require an
//! `iss` and an `aud`, and its tokens may live at most `max_lifetime`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use confab_protocol::validate::is_username;
use confab_protocol::{ErrorCode, ProtocolError};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the JWT secret must be at least 32 bytes, got {0}")]
    ShortSecret(usize),
    #[error("public key {name}: neither an RSA nor an EC public key in PEM: {reason}")]
    BadPublicKey { name: String, reason: String },
    #[error("public key {name}: {what} must not be empty")]
    EmptyClaim { name: String, what: &'static str },
}

/// A public key an application signs its users' tokens with, and what
/// those tokens must carry besides a valid signature.
#[derive(Debug, Clone)]
pub struct AppKey {
    /// Shown in errors (the file's path).
    pub name: String,
    pub pem: Vec<u8>,
    /// The `iss` its tokens must carry; `None`: any or none.
    pub issuer: Option<String>,
    /// The `aud` its tokens must carry (one of theirs if a list); `None`:
    /// tokens must carry none.
    pub audience: Option<String>,
}

/// Who vouches for a verified token's user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuer {
    /// This server (HS256 with the cluster secret): a password account.
    Server,
    /// An application's key: a user the application manages, who has no
    /// password here.
    Application,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// The token's id (this server's tokens have one): what `logout` revokes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// When this server issued the token, in unix milliseconds (finer than
    /// `iat`, so a token issued just after a `logout-all` is not caught by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_ms: Option<u64>,
}

impl Claims {
    /// When the token was issued, in unix milliseconds (0 when it does not say).
    pub fn issued_ms(&self) -> u64 {
        self.iat_ms.or(self.iat.map(|s| s.saturating_mul(1000))).unwrap_or(0)
    }
}

pub struct Auth {
    encoding: EncodingKey,
    hs256: DecodingKey,
    public: Vec<PublicKey>,
    ttl: Duration,
    max_lifetime: Duration,
}

/// An application key, ready to verify with: what it requires is in its
/// `validation`.
struct PublicKey {
    key: DecodingKey,
    validation: Validation,
}

/// What every token must carry, and how strictly times are read.
fn validation(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = 0;
    // An application may mint a token ahead of its use: not before `nbf`.
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Auth {
    /// `ttl` is the lifetime of the tokens this server issues;
    /// `max_lifetime` the longest an application's token may live.
    pub fn new(
        secret: &[u8],
        public_keys: &[AppKey],
        ttl: Duration,
        max_lifetime: Duration,
    ) -> Result<Auth, AuthError> {
        if secret.len() < 32 {
            return Err(AuthError::ShortSecret(secret.len()));
        }
        let mut public = Vec::new();
        for k in public_keys {
            let (alg, key) = DecodingKey::from_rsa_pem(&k.pem)
                .map(|key| (Algorithm::RS256, key))
                .or_else(|_| DecodingKey::from_ec_pem(&k.pem).map(|key| (Algorithm::ES256, key)))
                .map_err(|e| AuthError::BadPublicKey { name: k.name.clone(), reason: e.to_string() })?;
            let mut validation = validation(alg);
            let mut required = vec!["exp", "sub"];
            if let Some(issuer) = &k.issuer {
                if issuer.is_empty() {
                    return Err(AuthError::EmptyClaim { name: k.name.clone(), what: "issuer" });
                }
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            if let Some(audience) = &k.audience {
                if audience.is_empty() {
                    return Err(AuthError::EmptyClaim { name: k.name.clone(), what: "audience" });
                }
                validation.set_audience(&[audience]);
                // jsonwebtoken refuses a wrong `aud`, but not a missing one, unless required.
                required.push("aud");
            }
            validation.set_required_spec_claims(&required);
            public.push(PublicKey { key, validation });
        }
        Ok(Auth {
            encoding: EncodingKey::from_secret(secret),
            hs256: DecodingKey::from_secret(secret),
            public,
            ttl,
            max_lifetime,
        })
    }

    /// A token for `user`, and its expiry in unix seconds.
    pub fn issue(&self, user: &str) -> (String, u64) {
        self.issue_for(user, self.ttl)
    }

    /// Longest lifetime of a token (the application keys' bound).
    pub fn max_lifetime(&self) -> Duration {
        self.max_lifetime
    }

    /// A token of this server for `user`, valid for `ttl`; its expiry.
    pub fn issue_for(&self, user: &str, ttl: Duration) -> (String, u64) {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let now = now_ms / 1000;
        let jti = format!("{:032x}", rand::random::<u128>());
        let claims = Claims {
            sub: user.to_owned(),
            exp: now + ttl.as_secs(),
            iat: Some(now),
            jti: Some(jti),
            iat_ms: Some(now_ms),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail");
        (token, claims.exp)
    }

    /// The claims of a valid, unexpired token, and who issued it.
    pub fn verify(&self, token: &str) -> Result<(Claims, Issuer), ProtocolError> {
        let unauthorized = |m: &str| ProtocolError::new(ErrorCode::Unauthorized, m);
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthorized("malformed token"))?;
        match header.alg {
            Algorithm::HS256 => jsonwebtoken::decode::<Claims>(token, &self.hs256, &validation(header.alg))
                .map_err(token_error)
                .and_then(|d| check_subject(d.claims))
                .map(|claims| (claims, Issuer::Server)),
            alg @ (Algorithm::RS256 | Algorithm::ES256) => {
                // The key that signed it says best what is wrong; another
                // key says only that the signature is not its.
                let mut refusal = None;
                for k in self.public.iter().filter(|k| k.validation.algorithms == [alg]) {
                    match jsonwebtoken::decode::<Claims>(token, &k.key, &k.validation) {
                        Ok(d) => {
                            let claims = check_subject(d.claims).and_then(|c| self.check_lifetime(c))?;
                            return Ok((claims, Issuer::Application));
                        }
                        Err(e) if *e.kind() == ErrorKind::InvalidSignature => {
                            refusal.get_or_insert_with(|| token_error(e));
                        }
                        Err(e) => refusal = Some(token_error(e)),
                    }
                }
                Err(refusal.unwrap_or_else(|| unauthorized("no public key is configured for this token's algorithm")))
            }
            _ => Err(unauthorized("unsupported token algorithm")),
        }
    }

    /// Refuses an application's token that lives longer than the maximum,
    /// counted from its `iat` (or from now, if it has none or one in the future).
    fn check_lifetime(&self, claims: Claims) -> Result<Claims, ProtocolError> {
        let now = unix_now();
        let start = claims.iat.unwrap_or(now).min(now);
        let max = self.max_lifetime.as_secs();
        if claims.exp.saturating_sub(start) > max {
            return Err(ProtocolError::new(
                ErrorCode::Unauthorized,
                format!("token lifetime exceeds this server's maximum of {max} seconds"),
            ));
        }
        Ok(claims)
    }
}

fn token_error(e: jsonwebtoken::errors::Error) -> ProtocolError {
    let message = match e.kind() {
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token not valid yet".into(),
        ErrorKind::InvalidSignature => "bad token signature".into(),
        ErrorKind::InvalidIssuer => "token issuer is not the one its key requires".into(),
        ErrorKind::InvalidAudience => "token audience is not the one its key requires".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("token lacks the required claim `{claim}`"),
        _ => "invalid token".into(),
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
    use serde_json::json;

    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn auth() -> Auth {
        Auth::new(&[7u8; 32], &[], Duration::from_secs(60), DAY).unwrap()
    }

    /// An application's ES256 signing key, and its public key for the server.
    fn app_key(issuer: Option<&str>, audience: Option<&str>) -> (EncodingKey, AppKey) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let signing = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let key = AppKey {
            name: "app.pem".into(),
            pem: pair.public_key_pem().into_bytes(),
            issuer: issuer.map(Into::into),
            audience: audience.map(Into::into),
        };
        (signing, key)
    }

    fn app_token(signing: &EncodingKey, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, signing).unwrap()
    }

    #[test]
    fn an_issued_token_verifies_as_its_user() {
        let a = auth();
        let (token, exp) = a.issue("alice");
        let (claims, issuer) = a.verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.exp, exp);
        assert_eq!(issuer, Issuer::Server);
    }

    #[test]
    fn a_key_with_an_issuer_and_audience_accepts_only_tokens_that_carry_both() {
        let (signing, key) = app_key(Some("https://app.example"), Some("confab"));
        let a = Auth::new(&[7u8; 32], &[key], Duration::from_secs(60), DAY).unwrap();
        let exp = unix_now() + 600;
        let verify = |claims| a.verify(&app_token(&signing, claims)).map_err(|e| e.message);
        let good = json!({"sub": "ceo", "exp": exp, "iss": "https://app.example", "aud": "confab"});
        assert_eq!(
            verify(good).unwrap(),
            (Claims { sub: "ceo".into(), exp, iat: None, jti: None, iat_ms: None }, Issuer::Application)
        );
        let listed = json!({"sub": "ceo", "exp": exp, "iss": "https://app.example", "aud": ["confab"]});
        assert!(verify(listed).is_ok(), "an audience list that holds ours");
        for (claims, refusal) in [
            (json!({"sub": "ceo", "exp": exp, "iss": "https://evil.example", "aud": "confab"}), "issuer"),
            (json!({"sub": "ceo", "exp": exp, "aud": "confab"}), "`iss`"),
            (json!({"sub": "ceo", "exp": exp, "iss": "https://app.example", "aud": "other"}), "audience"),
            (json!({"sub": "ceo", "exp": exp, "iss": "https://app.example"}), "`aud`"),
        ] {
            let message = verify(claims.clone()).unwrap_err();
            assert!(message.contains(refusal), "{claims}: {message}");
        }
    }

    #[test]
    fn a_key_without_requirements_refuses_a_token_with_an_audience() {
        let (signing, key) = app_key(None, None);
        let a = Auth::new(&[7u8; 32], &[key], Duration::from_secs(60), DAY).unwrap();
        let exp = unix_now() + 600;
        assert!(a.verify(&app_token(&signing, json!({"sub": "ceo", "exp": exp, "iss": "anyone"}))).is_ok());
        let meant_elsewhere = app_token(&signing, json!({"sub": "ceo", "exp": exp, "aud": "another-service"}));
        assert!(a.verify(&meant_elsewhere).unwrap_err().message.contains("audience"));
    }

    #[test]
    fn the_right_key_among_several_names_what_is_wrong() {
        let (_, other) = app_key(None, None);
        let (signing, key) = app_key(Some("app"), None);
        let a = Auth::new(&[7u8; 32], &[other, key], Duration::from_secs(60), DAY).unwrap();
        let token = app_token(&signing, json!({"sub": "ceo", "exp": unix_now() + 600, "iss": "elsewhere"}));
        assert!(a.verify(&token).unwrap_err().message.contains("issuer"));
        let (stranger, _) = app_key(None, None);
        let token = app_token(&stranger, json!({"sub": "ceo", "exp": unix_now() + 600}));
        assert_eq!(a.verify(&token).unwrap_err().message, "bad token signature");
    }

    #[test]
    fn an_application_token_may_live_at_most_the_maximum() {
        let (signing, key) = app_key(None, None);
        let a = Auth::new(&[7u8; 32], &[key], Duration::from_secs(60), Duration::from_secs(3600)).unwrap();
        let now = unix_now();
        let verify = |claims| a.verify(&app_token(&signing, claims)).map_err(|e| e.message);
        assert!(verify(json!({"sub": "ceo", "iat": now, "exp": now + 3600})).is_ok());
        assert!(verify(json!({"sub": "ceo", "exp": now + 3000})).is_ok(), "no iat: counted from now");
        for claims in [
            json!({"sub": "ceo", "iat": now, "exp": now + 3601}),
            json!({"sub": "ceo", "iat": now - 7200, "exp": now + 60}),
            // Counted from the clock when verified, which may be a second on.
            json!({"sub": "ceo", "exp": now + 3700}),
            // An `iat` in the future does not shorten what is left.
            json!({"sub": "ceo", "iat": now + 86_400, "exp": now + 86_401}),
        ] {
            let message = verify(claims.clone()).unwrap_err();
            assert!(message.contains("maximum of 3600 seconds"), "{claims}: {message}");
        }
    }

    #[test]
    fn empty_requirements_are_a_configuration_error() {
        let (_, mut key) = app_key(Some(""), None);
        assert!(matches!(Auth::new(&[7u8; 32], &[key.clone()], DAY, DAY), Err(AuthError::EmptyClaim { .. })));
        key.issuer = None;
        key.audience = Some(String::new());
        assert!(matches!(Auth::new(&[7u8; 32], &[key], DAY, DAY), Err(AuthError::EmptyClaim { .. })));
    }

    #[test]
    fn tampered_foreign_and_expired_tokens_are_refused() {
        let a = auth();
        let (token, _) = a.issue("alice");
        let mut tampered = token.clone().into_bytes();
        let n = tampered.len();
        tampered[n - 2] = if tampered[n - 2] == b'A' { b'B' } else { b'A' };
        assert!(a.verify(std::str::from_utf8(&tampered).unwrap()).is_err());
        let other = Auth::new(&[8u8; 32], &[], Duration::from_secs(60), DAY).unwrap();
        assert!(a.verify(&other.issue("alice").0).is_err());
        let expired = Claims { sub: "alice".into(), exp: unix_now() - 1, iat: None, jti: None, iat_ms: None };
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
        assert_eq!(a.verify(&sign(unix_now() - 1)).unwrap().0.sub, "alice", "valid from nbf on");
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(Auth::new(b"short", &[], Duration::from_secs(1), DAY), Err(AuthError::ShortSecret(5))));
    }

    #[test]
    fn passwords_verify_against_their_hash_only() {
        let h = hash_password("correct horse");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a phc string"));
    }
}
