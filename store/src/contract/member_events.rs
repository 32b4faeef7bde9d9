//! The contract of membership records' outcomes (see `crate::member_events`):
//! stored with their batch, read by the record's position, kept for a
//! bounded time.

use std::time::{Duration, Instant};

use super::join;
use crate::{MEMBER_EVENT_TTL_SECS, MemberChange, MemberEvent, Store, Write};

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn event(user: &str, change: MemberChange, by: Option<&str>, ts: u64) -> MemberEvent {
    MemberEvent { user: user.into(), change, by: by.map(String::from), ts }
}

fn put(room: &str, at: u64, event: &MemberEvent) -> Write {
    Write::MemberEvent { room: room.into(), at, event: event.clone() }
}

pub async fn member_events_are_read_by_position_and_kept_for_a_bounded_time(store: &impl Store) {
    let now = now_ms();
    let joined = event("bob", MemberChange::Join, None, now);
    let left = event("bob", MemberChange::Leave, None, now + 1);
    let kicked = event("bob", MemberChange::Kick, Some("alice"), now + 3);
    store.apply(vec![join("r", "alice"), put("r", 10, &joined), put("r", 11, &left)]).await.unwrap();
    store.apply(vec![put("r", 13, &kicked), put("s", 10, &left)]).await.unwrap();
    assert_eq!(store.member_event("r", 10).await.unwrap(), Some(joined.clone()));
    assert_eq!(store.member_event("r", 11).await.unwrap(), Some(left.clone()));
    assert_eq!(store.member_event("r", 12).await.unwrap(), None, "a position without a change");
    assert_eq!(store.member_event("r", 13).await.unwrap(), Some(kicked.clone()), "with who kicked");
    assert_eq!(store.member_event("s", 10).await.unwrap(), Some(left), "per room");
    assert_eq!(store.member_event("t", 10).await.unwrap(), None);

    // A batch applied again stores the same once.
    store.apply(vec![put("r", 10, &joined)]).await.unwrap();
    assert_eq!(store.member_event("r", 10).await.unwrap(), Some(joined.clone()));

    // An outcome older than the bound goes (CQL: by its TTL; embedded: as
    // later outcomes are written), the others stay.
    let old = event("carol", MemberChange::Ban, Some("alice"), now - MEMBER_EVENT_TTL_SECS * 1000 - 60_000);
    store.apply(vec![put("r", 5, &old)]).await.unwrap();
    let later = event("dave", MemberChange::Add, None, now + 5);
    store.apply(vec![put("r", 20, &later)]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.member_event("r", 5).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "an outcome past the bound is still kept");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(store.member_event("r", 10).await.unwrap(), Some(joined));
    assert_eq!(store.member_event("r", 20).await.unwrap(), Some(later));
}
