//! Uploads in the embedded store (crate::uploads): one row per upload, an
//! index of the uploads due for the sweeper (never attached, by creation
//! time; dropped ones at 0) and one of each user's uploads.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::EmbeddedStore;
use crate::{Error, Result, UploadRecord};

pub(super) const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
/// `(due_ms, id)`: the upload's `created_ms` while unattached, 0 once dropped.
pub(super) const UPLOADS_DUE: TableDefinition<(u64, &str), ()> = TableDefinition::new("uploads_due");
pub(super) const USER_UPLOADS: TableDefinition<(&str, &str), ()> = TableDefinition::new("user_uploads");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(UPLOADS)?;
    txn.open_table(UPLOADS_DUE)?;
    txn.open_table(USER_UPLOADS)?;
    Ok(())
}

fn encode(u: &UploadRecord) -> Result<Vec<u8>> {
    serde_json::to_vec(u).map_err(|source| Error::Json { what: format!("encoding upload {}", u.id), source })
}

fn decode(id: &str, bytes: &[u8]) -> Result<UploadRecord> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json { what: format!("decoding upload {id}"), source })
}

fn get(table: &impl ReadableTable<&'static str, &'static [u8]>, id: &str) -> Result<Option<UploadRecord>> {
    table.get(id)?.map(|g| decode(id, g.value())).transpose()
}

/// `Write::Attach` inside a batch's transaction.
pub(super) fn attach(txn: &WriteTransaction, room: &str, seq: u64, ids: &[(String, u64)]) -> Result<()> {
    let mut uploads = txn.open_table(UPLOADS)?;
    let mut due = txn.open_table(UPLOADS_DUE)?;
    for (id, _) in ids {
        let Some(mut u) = get(&uploads, id)? else { continue };
        if u.room != room || u.dropped {
            continue;
        }
        due.remove((u.created_ms, id.as_str()))?;
        u.message = Some(seq);
        uploads.insert(id.as_str(), encode(&u)?.as_slice())?;
    }
    Ok(())
}

/// Marks uploads dropped: `Write::DropUploads`, and a deleted account's.
pub(super) fn drop_uploads<'a>(txn: &WriteTransaction, ids: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let mut uploads = txn.open_table(UPLOADS)?;
    let mut due = txn.open_table(UPLOADS_DUE)?;
    for id in ids {
        let Some(mut u) = get(&uploads, id)? else { continue };
        due.remove((u.created_ms, id))?;
        due.insert((0, id), ())?;
        u.dropped = true;
        uploads.insert(id, encode(&u)?.as_slice())?;
    }
    Ok(())
}

impl EmbeddedStore {
    pub(super) async fn put_upload_(&self, upload: &UploadRecord) -> Result<()> {
        let u = upload.clone();
        self.write(move |db| {
            let txn = db.begin_write()?;
            {
                txn.open_table(UPLOADS)?.insert(u.id.as_str(), encode(&u)?.as_slice())?;
                if u.message.is_none() || u.dropped {
                    let due_ms = if u.dropped { 0 } else { u.created_ms };
                    txn.open_table(UPLOADS_DUE)?.insert((due_ms, u.id.as_str()), ())?;
                }
                txn.open_table(USER_UPLOADS)?.insert((u.uploader.as_str(), u.id.as_str()), ())?;
            }
            Ok(txn.commit()?)
        })
        .await
    }

    pub(super) async fn upload_(&self, id: &str) -> Result<Option<UploadRecord>> {
        let id = id.to_owned();
        self.blocking(move |db| get(&db.begin_read()?.open_table(UPLOADS)?, &id)).await
    }

    pub(super) async fn drop_user_uploads_(&self, user: &str) -> Result<()> {
        let user = user.to_owned();
        self.write(move |db| {
            let txn = db.begin_write()?;
            {
                let ids: Vec<String> = txn
                    .open_table(USER_UPLOADS)?
                    .range((user.as_str(), "")..=(user.as_str(), super::END))?
                    .map(|e| e.map(|(k, _)| k.value().1.to_owned()))
                    .collect::<Result<_, _>>()?;
                drop_uploads(&txn, ids.iter().map(String::as_str))?;
            }
            Ok(txn.commit()?)
        })
        .await
    }

    pub(super) async fn due_uploads_(&self, before_ms: u64, limit: u32) -> Result<Vec<UploadRecord>> {
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let uploads = txn.open_table(UPLOADS)?;
            let mut out = Vec::new();
            for entry in txn.open_table(UPLOADS_DUE)?.range((0, "")..(before_ms, ""))? {
                if out.len() >= limit as usize {
                    break;
                }
                let (k, _) = entry?;
                if let Some(u) = get(&uploads, k.value().1)?.filter(|u| u.is_due(before_ms)) {
                    out.push(u);
                }
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn delete_upload_(&self, upload: &UploadRecord) -> Result<()> {
        let u = upload.clone();
        self.write(move |db| {
            let txn = db.begin_write()?;
            {
                txn.open_table(UPLOADS)?.remove(u.id.as_str())?;
                let mut due = txn.open_table(UPLOADS_DUE)?;
                due.remove((u.created_ms, u.id.as_str()))?;
                due.remove((0, u.id.as_str()))?;
                txn.open_table(USER_UPLOADS)?.remove((u.uploader.as_str(), u.id.as_str()))?;
            }
            Ok(txn.commit()?)
        })
        .await
    }
}
