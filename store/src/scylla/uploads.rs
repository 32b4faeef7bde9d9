//! Uploads in the CQL store (crate::uploads). The gateway writes them with
//! the server's clock, not a room's log positions: an upload is created
//! outside any room's order, and attaching (the one batch write that
//! changes a row the gateway wrote) touches cells the gateway never
//! writes again. `uploads_due` is one partition: the sweeper's queue of
//! uploads never attached (by creation time) and dropped ones (at 0); it
//! holds only uploads on their way out or not yet sent.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::{ScyllaStore, prepare};
use crate::{Result, UploadRecord};

/// The one partition of `uploads_due`.
const DUE_SHARD: i32 = 0;

pub(super) struct Statements {
    insert: PreparedStatement,
    get: PreparedStatement,
    insert_due: PreparedStatement,
    delete_due: PreparedStatement,
    due: PreparedStatement,
    insert_user: PreparedStatement,
    user: PreparedStatement,
    attach: PreparedStatement,
    drop: PreparedStatement,
    delete: PreparedStatement,
    delete_user: PreparedStatement,
}

/// An `uploads` row. Its columns are `Option` because attaching or
/// dropping an upload the sweeper just deleted leaves a row of that cell
/// alone (no lightweight transaction guards it): such a row is no upload.
type Row = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i32>,
    Option<i32>,
    Option<bool>,
    Option<i64>,
    Option<i64>,
    Option<bool>,
);

const COLUMNS: &str =
    "id, room, uploader, name, content_type, size, width, height, has_thumbnail, created_ms, message_seq, dropped";

impl Statements {
    pub(super) async fn prepare(s: &Session) -> Result<Statements> {
        Ok(Statements {
            insert: prepare(
                s,
                "INSERT INTO uploads (id, room, uploader, name, content_type, size, width, height, has_thumbnail, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .await?,
            get: prepare(s, &format!("SELECT {COLUMNS} FROM uploads WHERE id = ?")).await?,
            insert_due: prepare(s, "INSERT INTO uploads_due (shard, due_ms, id) VALUES (?, ?, ?)").await?,
            delete_due: prepare(s, "DELETE FROM uploads_due WHERE shard = ? AND due_ms = ? AND id = ?").await?,
            due: prepare(s, "SELECT due_ms, id FROM uploads_due WHERE shard = ? AND due_ms < ? LIMIT ?").await?,
            insert_user: prepare(s, "INSERT INTO user_uploads (uploader, id) VALUES (?, ?)").await?,
            user: prepare(s, "SELECT id FROM user_uploads WHERE uploader = ?").await?,
            attach: prepare(s, "UPDATE uploads SET message_seq = ? WHERE id = ?").await?,
            drop: prepare(s, "UPDATE uploads SET dropped = true WHERE id = ?").await?,
            delete: prepare(s, "DELETE FROM uploads WHERE id = ?").await?,
            delete_user: prepare(s, "DELETE FROM user_uploads WHERE uploader = ? AND id = ?").await?,
        })
    }
}

fn record(
    (id, room, uploader, name, content_type, size, width, height, thumb, created, message, dropped): Row,
) -> Option<UploadRecord> {
    Some(UploadRecord {
        id,
        room: room?,
        uploader: uploader?,
        name: name.unwrap_or_default(),
        content_type: content_type?,
        size: size?.max(0) as u64,
        width: width.map(|w| w.max(0) as u32),
        height: height.map(|h| h.max(0) as u32),
        has_thumbnail: thumb.unwrap_or(false),
        created_ms: created?.max(0) as u64,
        message: message.map(|m| m as u64),
        dropped: dropped.unwrap_or(false),
    })
}

impl ScyllaStore {
    fn up(&self) -> &Statements {
        &self.inner.up
    }

    pub(super) async fn put_upload_(&self, u: &UploadRecord) -> Result<()> {
        let q = self.up();
        let values = (
            u.id.as_str(),
            u.room.as_str(),
            u.uploader.as_str(),
            u.name.as_str(),
            u.content_type.as_str(),
            u.size as i64,
            u.width.map(|w| w as i32),
            u.height.map(|h| h as i32),
            u.has_thumbnail,
            u.created_ms as i64,
        );
        // The queue entry first: an upload is never stored without the
        // sweeper's way to it.
        self.write(&q.insert_due, (DUE_SHARD, u.created_ms as i64, u.id.as_str())).await?;
        tokio::try_join!(
            self.write(&q.insert_user, (u.uploader.as_str(), u.id.as_str())),
            self.write(&q.insert, values)
        )?;
        Ok(())
    }

    pub(super) async fn upload_(&self, id: &str) -> Result<Option<UploadRecord>> {
        Ok(self.rows::<Row>(&self.up().get, (id,)).await?.into_iter().next().and_then(record))
    }

    /// `Write::Attach`.
    pub(super) async fn attach_(&self, seq: u64, uploads: &[(String, u64)]) -> Result<()> {
        for (id, created_ms) in uploads {
            self.write(&self.up().attach, (seq as i64, id.as_str())).await?;
            self.write(&self.up().delete_due, (DUE_SHARD, *created_ms as i64, id.as_str())).await?;
        }
        Ok(())
    }

    /// `Write::DropUploads`, and a deleted account's uploads.
    pub(super) async fn drop_uploads_(&self, ids: &[String]) -> Result<()> {
        for id in ids {
            self.write(&self.up().insert_due, (DUE_SHARD, 0i64, id.as_str())).await?;
            self.write(&self.up().drop, (id.as_str(),)).await?;
        }
        Ok(())
    }

    pub(super) async fn drop_user_uploads_(&self, user: &str) -> Result<()> {
        let ids: Vec<String> =
            self.rows::<(String,)>(&self.up().user, (user,)).await?.into_iter().map(|(id,)| id).collect();
        self.drop_uploads_(&ids).await
    }

    pub(super) async fn due_uploads_(&self, before_ms: u64, limit: u32) -> Result<Vec<UploadRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let due: Vec<(i64, String)> = self
            .rows(&self.up().due, (DUE_SHARD, before_ms.min(i64::MAX as u64) as i64, limit.min(i32::MAX as u32) as i32))
            .await?;
        let mut out = Vec::new();
        for (due_ms, id) in due {
            match self.upload_(&id).await? {
                Some(u) if u.is_due(before_ms) => out.push(u),
                // Attached since (its entry outlived the attach), or gone.
                _ => self.write(&self.up().delete_due, (DUE_SHARD, due_ms, id.as_str())).await?,
            }
        }
        Ok(out)
    }

    pub(super) async fn delete_upload_(&self, u: &UploadRecord) -> Result<()> {
        let q = self.up();
        self.write(&q.delete, (u.id.as_str(),)).await?;
        tokio::try_join!(
            self.write(&q.delete_user, (u.uploader.as_str(), u.id.as_str())),
            self.write(&q.delete_due, (DUE_SHARD, u.created_ms as i64, u.id.as_str())),
            self.write(&q.delete_due, (DUE_SHARD, 0i64, u.id.as_str())),
        )?;
        Ok(())
    }
}
