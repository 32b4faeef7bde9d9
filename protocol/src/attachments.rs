//! Attachments: files uploaded over HTTP (`POST /v1/uploads`) and sent
//! with a message by their ids (docs/protocol.md, "The attachment object").

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;

/// Upload ids a message may carry.
pub const MAX_ATTACHMENTS: usize = 10;

/// One file of a message, as `POST /v1/uploads` answers it and a message's
/// `attachments` hold it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Attachment {
    /// The upload's id.
    pub id: String,
    /// Where its bytes are, relative to the server's origin.
    pub url: String,
    /// Its file name as uploaded (cleaned).
    pub name: String,
    /// The type sniffed from its bytes.
    pub content_type: String,
    /// Bytes.
    pub size: u64,
    /// An image's width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub width: Option<u32>,
    /// An image's height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub height: Option<u32>,
    /// An image's thumbnail (at most 320 pixels on the long side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub thumbnail_url: Option<String>,
}

/// The path of an upload's bytes.
pub fn url(id: &str) -> String {
    format!("/v1/uploads/{id}")
}

/// The path of an upload's thumbnail.
pub fn thumbnail_url(id: &str) -> String {
    format!("/v1/uploads/{id}/thumbnail")
}

/// Whether `id` has the shape of an upload id: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn is_upload_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `send`'s `attachments`: at most [`MAX_ATTACHMENTS`] well-formed ids, none
/// twice.
pub fn validate(ids: &[String]) -> Result<(), ProtocolError> {
    if ids.len() > MAX_ATTACHMENTS {
        return Err(ProtocolError::bad_request(format!("at most {MAX_ATTACHMENTS} attachments per message")));
    }
    for (i, id) in ids.iter().enumerate() {
        if !is_upload_id(id) {
            return Err(ProtocolError::bad_request(format!("'{}' is not an upload id", crate::validate::clip(id))));
        }
        if ids[..i].contains(id) {
            return Err(ProtocolError::bad_request(format!("attachment '{id}' is named twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_ids_are_bounded_well_formed_and_distinct() {
        assert!(validate(&[]).is_ok());
        assert!(validate(&["u1".into(), "u2".into()]).is_ok());
        assert!(validate(&vec!["u".to_string(); 1]).is_ok());
        let eleven: Vec<String> = (0..11).map(|i| format!("u{i}")).collect();
        assert!(validate(&eleven).is_err());
        assert!(validate(&["u1".into(), "u1".into()]).is_err());
        for bad in ["", "../x", "a b", "a/b", &"a".repeat(65)] {
            assert!(validate(&[bad.to_string()]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn optional_fields_are_absent_when_unset() {
        let a = Attachment {
            id: "u1".into(),
            url: url("u1"),
            name: "a.txt".into(),
            content_type: "text/plain".into(),
            size: 3,
            ..Attachment::default()
        };
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"id":"u1","url":"/v1/uploads/u1","name":"a.txt","content_type":"text/plain","size":3}"#
        );
    }
}
