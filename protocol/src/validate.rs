//! The validation rules of PROTOCOL.md, as plain functions so the gateway's
//! HTTP and WebSocket paths and the fuzz targets share them.

use crate::error::{ErrorCode, ProtocolError};

/// `^[a-z0-9][a-z0-9_.-]{0,31}$`
pub fn is_username(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..].iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-'))
}

/// `^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`: a public room name (never a DM id).
pub fn is_room_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b[1..].iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `cid`: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn is_cid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// The DM room of two users: `dm:<a>:<b>` with the names in sorted order.
pub fn dm_room(a: &str, b: &str) -> String {
    if a <= b { format!("dm:{a}:{b}") } else { format!("dm:{b}:{a}") }
}

/// The two members of a DM room id, if `room` is a well-formed one.
pub fn dm_members(room: &str) -> Option<(&str, &str)> {
    let rest = room.strip_prefix("dm:")?;
    let (a, b) = rest.split_once(':')?;
    (is_username(a) && is_username(b) && a < b).then_some((a, b))
}

/// A room reference in a request: a room name or a well-formed DM id.
pub fn room_ref(room: &str) -> Result<(), ProtocolError> {
    if is_room_name(room) || dm_members(room).is_some() {
        Ok(())
    } else {
        Err(ProtocolError::bad_request(format!("'{}' is not a valid room name", clip(room))))
    }
}

/// A room that `join`/`leave` may name: never a DM id.
pub fn joinable_room(room: &str) -> Result<(), ProtocolError> {
    if is_room_name(room) {
        Ok(())
    } else if room.starts_with("dm:") {
        Err(ProtocolError::bad_request("direct-message rooms cannot be joined or left"))
    } else {
        Err(ProtocolError::bad_request(format!("'{}' is not a valid room name", clip(room))))
    }
}

/// Message text: 1 to `max` bytes.
pub fn text(text: &str, max: usize) -> Result<(), ProtocolError> {
    if text.is_empty() {
        Err(ProtocolError::bad_request("text is empty"))
    } else if text.len() > max {
        Err(ProtocolError::new(ErrorCode::TooLarge, format!("text is {} bytes; the limit is {max}", text.len())))
    } else {
        Ok(())
    }
}

pub fn cid(cid: &str) -> Result<(), ProtocolError> {
    if is_cid(cid) { Ok(()) } else { Err(ProtocolError::bad_request("cid must be 1 to 64 of [A-Za-z0-9_-]")) }
}

pub fn username(name: &str) -> Result<(), ProtocolError> {
    if is_username(name) {
        Ok(())
    } else {
        Err(ProtocolError::bad_request("username must match ^[a-z0-9][a-z0-9_.-]{0,31}$"))
    }
}

/// The longest password, in bytes: longer ones are refused before hashing.
pub const MAX_PASSWORD_BYTES: usize = 256;

pub fn password(password: &str) -> Result<(), ProtocolError> {
    match password.len() {
        8..=MAX_PASSWORD_BYTES => Ok(()),
        _ => Err(ProtocolError::bad_request("password must be 8 to 256 bytes")),
    }
}

/// `limit` of `history`: 1 to 100 when given.
pub fn history_limit(limit: Option<u32>) -> Result<(), ProtocolError> {
    match limit {
        Some(l) if !(1..=crate::request::MAX_HISTORY_LIMIT).contains(&l) => {
            Err(ProtocolError::bad_request(format!("limit must be 1 to {}", crate::request::MAX_HISTORY_LIMIT)))
        }
        _ => Ok(()),
    }
}

/// Shortens client input quoted back in an error message.
pub fn clip(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_owned();
    }
    let mut end = 80;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_protocol_pattern() {
        assert!(is_username("alice"));
        assert!(is_username("a"));
        assert!(is_username("0.b_c-d"));
        assert!(!is_username(""));
        assert!(!is_username("Alice"));
        assert!(!is_username("_alice"));
        assert!(!is_username(&"a".repeat(33)));
        assert!(is_username(&"a".repeat(32)));
        assert!(!is_username("al ice"));
    }

    #[test]
    fn room_names_and_dm_ids_are_told_apart() {
        assert!(is_room_name("General.chat-1_x"));
        assert!(!is_room_name("dm:a:b"));
        assert!(!is_room_name(&"r".repeat(65)));
        assert_eq!(dm_room("bob", "alice"), "dm:alice:bob");
        assert_eq!(dm_members("dm:alice:bob"), Some(("alice", "bob")));
        assert_eq!(dm_members("dm:bob:alice"), None);
        assert!(room_ref("dm:alice:bob").is_ok());
        assert!(joinable_room("dm:alice:bob").is_err());
    }

    #[test]
    fn text_limits_map_to_their_codes() {
        assert_eq!(text("", 10).unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(text("0123456789x", 10).unwrap_err().code, ErrorCode::TooLarge);
        assert!(text("0123456789", 10).is_ok());
    }

    #[test]
    fn clip_never_splits_a_character() {
        let s = "é".repeat(100);
        assert!(clip(&s).ends_with("..."));
    }
}
