//! Accounts: profiles (docs/protocol.md, "Accounts: profiles"). The store
//! and the gateway use these same types.

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;

/// Longest `display_name`, in bytes.
pub const MAX_DISPLAY_NAME_BYTES: usize = 64;
/// Longest `avatar` URL, in bytes.
pub const MAX_AVATAR_BYTES: usize = 512;
/// Most user names one `users` request names.
pub const MAX_USERS_LOOKUP: usize = 100;

/// A user's profile: one entry of the `users` reply, the `profile` reply
/// and the body of `GET /v1/users/{user}`. Empty strings: not set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Profile {
    pub user: String,
    pub display_name: String,
    pub avatar: String,
    /// A bot account (created by the server API with `bot: true`); absent
    /// when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[cfg_attr(test, ts(as = "Option<bool>", optional))]
    pub bot: bool,
}

/// Up to 64 bytes without control characters.
pub fn display_name(name: &str) -> Result<(), ProtocolError> {
    crate::rooms::bounded("display_name", name, MAX_DISPLAY_NAME_BYTES)?;
    if name.chars().any(char::is_control) {
        return Err(ProtocolError::bad_request("`display_name` must not hold control characters"));
    }
    Ok(())
}

/// `""` or an `https://` URL of up to 512 bytes without whitespace or
/// control characters (clients put it in an `<img src>` as it is).
pub fn avatar(url: &str) -> Result<(), ProtocolError> {
    if url.is_empty() {
        return Ok(());
    }
    crate::rooms::bounded("avatar", url, MAX_AVATAR_BYTES)?;
    let host = url.strip_prefix("https://").unwrap_or("");
    if host.is_empty() || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ProtocolError::bad_request(
            "`avatar` must be \"\" or an https:// URL without spaces or control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_fields_are_bounded() {
        assert!(display_name("Alice Liddell ✨").is_ok());
        assert!(display_name("").is_ok());
        assert!(display_name(&"x".repeat(65)).is_err());
        assert!(display_name("a\nb").is_err());
        assert!(avatar("").is_ok());
        assert!(avatar("https://example.com/a.png").is_ok());
        for bad in ["http://example.com/a.png", "javascript:alert(1)", "https://", "https://a b", "https://a\u{7}"] {
            assert!(avatar(bad).is_err(), "{bad}");
        }
        assert!(avatar(&format!("https://{}", "x".repeat(505))).is_err());
    }
}
