//! The validation rules of PROTOCOL.md (`confab_protocol::validate`) on
//! arbitrary strings, against regular-expression oracles written straight from
//! the protocol text.
//!
//! Checks, besides "never panics":
//! * `is_username`, `is_room_name`, `is_cid` agree with PROTOCOL.md's patterns;
//! * `dm_room(a, b)` round-trips through `dm_members` (sorted) when both are
//!   user names and `a != b`, and `dm_members` accepts exactly such ids;
//! * `room_ref` accepts exactly room names and well-formed DM ids, and
//!   `joinable_room` exactly room names; their errors are `bad_request`;
//! * `clip` never panics, returns its input up to 80 bytes, else an 80-byte
//!   (or shorter, at a char boundary) prefix followed by `...`;
//! * `text`, `cid`, `username`, `password`, `history_limit` map to the right
//!   codes.

use std::sync::LazyLock;

use arbitrary::{Arbitrary, Unstructured};
use confab_protocol::ErrorCode;
use confab_protocol::validate::*;
use regex_lite::Regex;

static USER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\A[a-z0-9][a-z0-9_.-]{0,31}\z").unwrap());
static ROOM: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\z").unwrap());
static CID: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\A[A-Za-z0-9_-]{1,64}\z").unwrap());

/// What the target takes, built from the fuzzer's bytes by `arbitrary`.
pub type Input<'a> = (&'a str, &'a str, u32, u16);

/// One input.
pub fn check(input: Input<'_>) {
    let (a, b, n, max) = input;
    for s in [a, b] {
        check_one(s);
    }
    check_pair(a, b);
    check_limits(a, n, max as usize);
}

/// One input as raw bytes (a seed file), turned into an [`Input`] the way
/// libfuzzer-sys's `fuzz_target!` does; bytes it would skip are skipped.
pub fn run(data: &[u8]) {
    if data.len() < Input::size_hint(0).0 {
        return;
    }
    if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        check(input);
    }
}

fn check_one(s: &str) {
    assert_eq!(is_username(s), USER.is_match(s), "is_username({s:?})");
    assert_eq!(is_room_name(s), ROOM.is_match(s), "is_room_name({s:?})");
    assert_eq!(is_cid(s), CID.is_match(s), "is_cid({s:?})");

    // dm_members accepts exactly `dm:<a>:<b>` with user names a < b.
    let expected = s.strip_prefix("dm:").and_then(|rest| {
        let (x, y) = rest.split_once(':')?;
        (USER.is_match(x) && USER.is_match(y) && x < y).then_some((x, y))
    });
    assert_eq!(dm_members(s), expected, "dm_members({s:?})");
    if let Some((x, y)) = dm_members(s) {
        assert_eq!(dm_room(x, y), s);
        assert_eq!(dm_room(y, x), s);
        assert!(!is_room_name(s), "a DM id is also a room name: {s:?}");
    }

    let is_ref = is_room_name(s) || expected.is_some();
    match room_ref(s) {
        Ok(()) => assert!(is_ref, "room_ref accepted {s:?}"),
        Err(e) => {
            assert!(!is_ref, "room_ref rejected {s:?}");
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.len() <= 83 + 40, "unclipped message for {s:?}");
        }
    }
    match joinable_room(s) {
        Ok(()) => assert!(is_room_name(s), "joinable_room accepted {s:?}"),
        Err(e) => {
            assert!(!is_room_name(s), "joinable_room rejected {s:?}");
            assert_eq!(e.code, ErrorCode::BadRequest);
        }
    }
    assert_eq!(username(s).is_ok(), is_username(s));
    assert_eq!(cid(s).is_ok(), is_cid(s));
    match password(s) {
        Ok(()) => assert!((8..=256).contains(&s.len())),
        Err(e) => {
            assert!(!(8..=256).contains(&s.len()));
            assert_eq!(e.code, ErrorCode::BadRequest);
        }
    }

    let c = clip(s);
    if s.len() <= 80 {
        assert_eq!(c, s, "clip changed a short string");
    } else {
        let head = c.strip_suffix("...").expect("a clipped string ends with ...");
        assert!(s.starts_with(head), "clip is not a prefix");
        assert!(head.len() <= 80 && head.len() > 80 - 4, "clip kept {} bytes", head.len());
        assert!(s.is_char_boundary(head.len()));
    }
}

fn check_pair(a: &str, b: &str) {
    let room = dm_room(a, b);
    assert_eq!(room, dm_room(b, a), "dm_room is not symmetric");
    if is_username(a) && is_username(b) && a != b {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        assert_eq!(dm_members(&room), Some((lo, hi)), "dm_room({a:?}, {b:?}) = {room:?}");
        assert!(room_ref(&room).is_ok());
        assert!(joinable_room(&room).is_err());
        assert!(!is_room_name(&room));
    } else if is_username(a) && is_username(b) {
        assert_eq!(dm_members(&room), None, "a DM with oneself: {room:?}");
    }
}

fn check_limits(s: &str, n: u32, max: usize) {
    match text(s, max) {
        Ok(()) => assert!(!s.is_empty() && s.len() <= max),
        Err(e) if s.is_empty() => assert_eq!(e.code, ErrorCode::BadRequest),
        Err(e) => {
            assert!(s.len() > max);
            assert_eq!(e.code, ErrorCode::TooLarge);
        }
    }
    assert!(history_limit(None).is_ok());
    assert_eq!(history_limit(Some(n)).is_ok(), (1..=100).contains(&n), "history_limit({n})");
}
