//! Arbitrary bytes into `IngressRecord::decode`, the dispatcher's entry point
//! for records read off the ingress log.
//!
//! Checks, besides "never panics": for every record that decodes,
//! `decode(encode(r)) == r`, the encoding is a fixed point
//! (`encode(decode(encode(r))) == encode(r)`), and it is a JSON object with
//! the record's fields.

use confab_protocol::{Command, IngressRecord};
use serde_json::Value;

/// One input.
pub fn run(data: &[u8]) {
    let Ok(record) = IngressRecord::decode(data) else {
        return;
    };
    let bytes = record.encode();
    let back = IngressRecord::decode(&bytes).unwrap_or_else(|e| {
        panic!(
            "re-encoded record does not decode: {e}\nrecord: {record:?}\nbytes: {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(back, record, "round trip changed the record");
    assert_eq!(back.encode(), bytes, "encoding is not a fixed point");

    let v: Value = serde_json::from_slice(&bytes).expect("encoding is not JSON");
    let obj = v.as_object().expect("encoding is not an object");
    assert_eq!(obj.get("room").and_then(Value::as_str), Some(record.room.as_str()));
    assert_eq!(obj.get("ts").and_then(Value::as_u64), Some(record.ts));
    assert_eq!(obj.contains_key("origin"), record.origin.is_some());
    let tag = obj.get("cmd").and_then(|c| c.get("t")).and_then(Value::as_str);
    let want = match record.cmd {
        Command::Send { .. } => "send",
        Command::Join { .. } => "join",
        Command::Leave { .. } => "leave",
        Command::Read { .. } => "read",
        Command::Typing { .. } => "typing",
        Command::Create { .. } => "create",
        Command::Moderate { .. } => "moderate",
        Command::UpdateRoom { .. } => "update_room",
        Command::Erase { .. } => "erase",
        Command::BlockChanged { .. } => "block_changed",
        Command::Notify { .. } => "notify",
        Command::Edit { .. } => "edit",
        Command::Delete { .. } => "delete",
        Command::React { .. } => "react",
        Command::Add { .. } => "add",
        Command::Remove { .. } => "remove",
    };
    assert_eq!(tag, Some(want), "cmd tag");
}
