//! What the store keeps of uploads (attachments, docs/protocol.md "POST
//! /v1/uploads"): their metadata. Their bytes live in a `Blobs` backend
//! (crate confab-blobs), under keys the gateway derives from the id.
//!
//! An upload's life: the gateway stores it (`put_upload`), unattached; a
//! room's dispatcher attaches it to a message (`Write::Attach`), in the
//! room's order, or drops it with its message (`Write::DropUploads`); the
//! gateway drops a deleted account's uploads (`drop_user_uploads`). The
//! sweeper finds uploads never attached past their time, and dropped ones
//! (`due_uploads`), deletes their bytes and then their metadata
//! (`delete_upload`).

use confab_protocol::Attachment;
use serde::{Deserialize, Serialize};

/// One upload's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub id: String,
    /// The room it was uploaded to (and may be attached in).
    pub room: String,
    pub uploader: String,
    pub name: String,
    pub content_type: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub has_thumbnail: bool,
    /// Unix milliseconds.
    pub created_ms: u64,
    /// The seq of the message (in `room`) it is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<u64>,
    /// Dropped with its message or its uploader's account: it is served
    /// no more and the sweeper deletes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dropped: bool,
}

impl UploadRecord {
    /// As a message carries it and clients see it.
    pub fn attachment(&self) -> Attachment {
        use confab_protocol::attachments::{thumbnail_url, url};
        Attachment {
            id: self.id.clone(),
            url: url(&self.id),
            name: self.name.clone(),
            content_type: self.content_type.clone(),
            size: self.size,
            width: self.width,
            height: self.height,
            thumbnail_url: self.has_thumbnail.then(|| thumbnail_url(&self.id)),
        }
    }

    /// Whether the sweeper should delete it: dropped, or never attached and
    /// created before `before_ms`.
    pub fn is_due(&self, before_ms: u64) -> bool {
        self.dropped || (self.message.is_none() && self.created_ms < before_ms)
    }
}
