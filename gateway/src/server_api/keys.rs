//! The server API's keys: a file of `name:key` lines (`--api-key-file`).
//! A presented key is compared with every configured one in constant time
//! (as SHA-256 digests, so neither its bytes nor its length leak through
//! timing); the key's name, never the key, is what logs and errors show.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The shortest key accepted: 16 bytes (a random key of 128 bits in hex is 32).
pub const MIN_KEY_BYTES: usize = 16;
/// The longest key accepted, and presented.
pub const MAX_KEY_BYTES: usize = 512;
/// The longest key name.
pub const MAX_NAME_BYTES: usize = 64;

/// The configured keys; empty when the server API is off. With a rate
/// ([`ApiKeys::with_rate`]), each key's calls are a token bucket of its own.
#[derive(Clone, Default)]
pub struct ApiKeys(Arc<Vec<Key>>, Option<Arc<DefaultKeyedRateLimiter<String>>>);

struct Key {
    name: String,
    digest: [u8; 32],
}

/// A line of the key file that is not a key; it names the line, never the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct KeyFileError {
    pub line: usize,
    pub reason: String,
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl ApiKeys {
    /// Reads a key file: one `name:key` a line; blank lines and lines
    /// starting with `#` are skipped. Names are 1 to 64 of
    /// `[A-Za-z0-9_.-]`; keys 16 to 512 bytes without whitespace; neither
    /// may repeat.
    pub fn parse(text: &str) -> Result<ApiKeys, KeyFileError> {
        let mut keys: Vec<Key> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let bad = |reason: &str| KeyFileError { line: line_no, reason: reason.to_owned() };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, key)) = line.split_once(':') else {
                return Err(bad("expected `name:key`"));
            };
            let (name, key) = (name.trim(), key.trim());
            let name_ok = !name.is_empty()
                && name.len() <= MAX_NAME_BYTES
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !name_ok {
                return Err(bad("the name must be 1 to 64 of [A-Za-z0-9_.-]"));
            }
            if key.len() < MIN_KEY_BYTES || key.len() > MAX_KEY_BYTES {
                return Err(bad(&format!("the key of '{name}' must be 16 to 512 bytes")));
            }
            if key.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
                return Err(bad(&format!("the key of '{name}' holds whitespace or a control character")));
            }
            let digest = digest(key.as_bytes());
            if keys.iter().any(|k| k.name == name) {
                return Err(bad(&format!("the name '{name}' is given twice")));
            }
            if keys.iter().any(|k| k.digest == digest) {
                return Err(bad(&format!("the key of '{name}' is another name's key too")));
            }
            keys.push(Key { name: name.to_owned(), digest });
        }
        Ok(ApiKeys(Arc::new(keys), None))
    }

    /// The same keys, each allowed `per_second` calls a second on average
    /// and `burst` at once, on this gateway.
    pub fn with_rate(self, per_second: u32, burst: u32) -> ApiKeys {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let limiter = governor::RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst));
        ApiKeys(self.0, Some(Arc::new(limiter)))
    }

    /// One call with the key named `name`; `Err` is how long until the
    /// next is allowed. (The keys are few: the limiter forgets none.)
    pub fn admit(&self, name: &str) -> Result<(), std::time::Duration> {
        let Some(limiter) = &self.1 else { return Ok(()) };
        limiter.check_key(&name.to_owned()).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The name of the key `presented` is, if any. Every key is compared,
    /// in constant time, whichever matches.
    pub fn check(&self, presented: &[u8]) -> Option<&str> {
        if presented.len() > MAX_KEY_BYTES {
            return None;
        }
        let presented = digest(presented);
        let mut found = None;
        for k in self.0.iter() {
            if bool::from(k.digest.ct_eq(&presented)) {
                found = Some(k.name.as_str());
            }
        }
        found
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: a key never reaches a log.
        f.debug_list().entries(self.0.iter().map(|k| &k.name)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_names_its_keys_and_finds_them() {
        let keys = ApiKeys::parse("# the app\napp:0123456789abcdef0123\n\n  ops : fedcba9876543210fedc  \n").unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.check(b"0123456789abcdef0123"), Some("app"));
        assert_eq!(keys.check(b"fedcba9876543210fedc"), Some("ops"));
        assert_eq!(keys.check(b"0123456789abcdef012"), None);
        assert_eq!(keys.check(b""), None);
        assert_eq!(format!("{keys:?}"), r#"["app", "ops"]"#, "names only");
    }

    #[test]
    fn a_bad_line_is_named_by_its_number_and_never_shows_the_key() {
        let secret = "0123456789abcdef0123";
        for (text, line) in [
            (format!("app:{secret}\nnocolon{secret}"), 2),
            (format!("\n\n:{secret}"), 3),
            ("app:short".to_owned(), 1),
            (format!("a b:{secret}"), 1),
            (format!("app:{secret}\napp:{secret}x"), 2),
            (format!("app:{secret}\nother:{secret}"), 2),
            (format!("app:{secret} {secret}"), 1),
        ] {
            let e = ApiKeys::parse(&text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(!e.to_string().contains(secret), "{e}");
        }
        assert!(ApiKeys::parse("").unwrap().is_empty());
    }
}
