//! The contract of uploads' metadata (see `crate::uploads`): stored by the
//! gateway, attached with a message, dropped with it or with the account,
//! and found by the sweeper when due.

use super::{join, message};
use crate::{Store, UploadRecord, Write};

fn upload(id: &str, room: &str, uploader: &str, created_ms: u64) -> UploadRecord {
    UploadRecord {
        id: id.into(),
        room: room.into(),
        uploader: uploader.into(),
        name: format!("{id}.png"),
        content_type: "image/png".into(),
        size: 1234,
        width: Some(640),
        height: Some(480),
        has_thumbnail: true,
        created_ms,
        ..UploadRecord::default()
    }
}

fn ids(uploads: &[UploadRecord]) -> Vec<&str> {
    let mut ids: Vec<&str> = uploads.iter().map(|u| u.id.as_str()).collect();
    ids.sort_unstable();
    ids
}

pub async fn uploads_are_attached_with_their_message_and_swept_when_never_sent(store: &impl Store) {
    let a = upload("ua", "r", "alice", 1_000);
    let b = upload("ub", "r", "alice", 2_000);
    let plain = UploadRecord { width: None, height: None, has_thumbnail: false, ..upload("uc", "r", "bob", 3_000) };
    for u in [&a, &b, &plain] {
        store.put_upload(u).await.unwrap();
    }
    assert_eq!(store.upload("ua").await.unwrap().as_ref(), Some(&a));
    assert_eq!(store.upload("uc").await.unwrap().as_ref(), Some(&plain));
    assert_eq!(store.upload("nope").await.unwrap(), None);

    // Nothing is due before its time.
    assert!(store.due_uploads(1_000, 10).await.unwrap().is_empty());
    assert_eq!(ids(&store.due_uploads(2_500, 10).await.unwrap()), ["ua", "ub"]);

    let mut m = message("r", 5, "alice", "a5");
    m.attachments = vec![a.attachment()];
    store
        .apply(vec![
            join("r", "alice"),
            Write::Message(m.clone()),
            Write::Attach { room: "r".into(), seq: 5, uploads: vec![("ua".into(), 1_000)], at: 5 },
        ])
        .await
        .unwrap();
    assert_eq!(store.upload("ua").await.unwrap().unwrap().message, Some(5));
    assert_eq!(ids(&store.due_uploads(10_000, 10).await.unwrap()), ["ub", "uc"], "an attached upload is not due");
    let page = store.history("r", None, 10).await.unwrap();
    assert_eq!(page[0].attachments, m.attachments, "the message carries its attachments");
    assert_eq!(page[0].attachments[0].thumbnail_url.as_deref(), Some("/v1/uploads/ua/thumbnail"));
    assert_eq!(store.message("r", 5).await.unwrap().unwrap().message.attachments, m.attachments);

    // The sweeper deletes what is due.
    store.delete_upload(&b).await.unwrap();
    assert_eq!(store.upload("ub").await.unwrap(), None);
    assert_eq!(ids(&store.due_uploads(10_000, 10).await.unwrap()), ["uc"]);
    assert_eq!(store.due_uploads(10_000, 0).await.unwrap().len(), 0, "the limit holds");
}

pub async fn a_deleted_message_drops_its_uploads_and_loses_its_attachments(store: &impl Store) {
    let a = upload("ua", "r", "alice", 1_000);
    store.put_upload(&a).await.unwrap();
    let mut m = message("r", 5, "alice", "a5");
    m.attachments = vec![a.attachment()];
    store
        .apply(vec![
            join("r", "alice"),
            Write::Message(m),
            Write::Attach { room: "r".into(), seq: 5, uploads: vec![("ua".into(), 1_000)], at: 5 },
        ])
        .await
        .unwrap();
    store
        .apply(vec![
            Write::Delete { room: "r".into(), seq: 5, at: 9 },
            Write::DropUploads { room: "r".into(), ids: vec!["ua".into()], at: 9 },
        ])
        .await
        .unwrap();
    assert!(store.history("r", None, 10).await.unwrap()[0].attachments.is_empty());
    let dropped = store.upload("ua").await.unwrap().unwrap();
    assert!(dropped.dropped);
    // Due at once, whatever its age.
    assert_eq!(ids(&store.due_uploads(1, 10).await.unwrap()), ["ua"]);
    store.delete_upload(&dropped).await.unwrap();
    assert_eq!(store.upload("ua").await.unwrap(), None);
    assert!(store.due_uploads(u64::MAX / 2, 10).await.unwrap().is_empty());
}

pub async fn a_deleted_account_drops_its_uploads_only(store: &impl Store) {
    let a = upload("ua", "r", "alice", 1_000);
    let b = upload("ub", "r", "bob", 1_000);
    store.put_upload(&a).await.unwrap();
    store.put_upload(&b).await.unwrap();
    let mut m = message("r", 5, "alice", "a5");
    m.attachments = vec![a.attachment()];
    store
        .apply(vec![
            join("r", "alice"),
            Write::Message(m),
            Write::Attach { room: "r".into(), seq: 5, uploads: vec![("ua".into(), 1_000)], at: 5 },
        ])
        .await
        .unwrap();
    store.drop_user_uploads("alice").await.unwrap();
    store.apply(vec![Write::Erase { room: "r".into(), user: "alice".into(), at: 9 }]).await.unwrap();
    assert!(store.upload("ua").await.unwrap().unwrap().dropped);
    assert!(!store.upload("ub").await.unwrap().unwrap().dropped);
    assert_eq!(ids(&store.due_uploads(2, 10).await.unwrap()), ["ua"]);
    assert!(store.history("r", None, 10).await.unwrap()[0].attachments.is_empty(), "an erased message has none");
}
