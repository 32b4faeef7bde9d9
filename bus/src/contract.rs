//! The contract every [`Bus`] passes. A backend's tests call
//! `bus_contract_tests!(open)` with an `async fn() -> (Guard, impl Bus)` that
//! yields a fresh bus (fresh topics, fresh consumer group).

use std::time::Duration;

use confab_protocol::record::Announcement;
use confab_protocol::{Command, IngressRecord};

use crate::{Bus, partition_for};

/// How long a contract test waits for something that must happen.
pub const PATIENCE: Duration = Duration::from_secs(30);

#[macro_export]
macro_rules! bus_contract_tests {
    ($open:path) => {
        $crate::bus_contract_tests!(@each $open,
            a_rooms_records_arrive_in_order_in_its_partition,
            a_consumer_waits_for_the_next_record,
            a_new_consumer_resumes_after_the_last_commit,
            announcements_reach_every_subscriber
        );
    };
    (@each $open:path, $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_guard, bus) = $open().await;
                $crate::contract::$name(&bus).await;
            }
        )*
    };
}

pub fn record(room: &str) -> IngressRecord {
    IngressRecord {
        room: room.into(),
        ts: 1,
        origin: None,
        cmd: Command::Send {
            from: "alice".into(),
            text: "hi".into(),
            cid: "c".into(),
            reply_to: None,
            attachments: vec![],
        },
    }
}

fn numbered(room: &str, n: usize) -> IngressRecord {
    IngressRecord { cmd: Command::Read { user: "alice".into(), seq: n as u64 }, ..record(room) }
}

async fn poll_until(consumer: &mut Box<dyn crate::Consumer>, want: usize) -> Vec<crate::Record> {
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while got.len() < want {
            got.extend(consumer.poll(want - got.len()).await.expect("poll"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {want} records arrived", got.len()));
    got
}

pub async fn a_rooms_records_arrive_in_order_in_its_partition(bus: &impl Bus) {
    let mut consumer = bus.consumer().await.unwrap();
    for i in 0..20 {
        bus.produce(&numbered("room-a", i)).await.unwrap();
        bus.produce(&numbered("room-b", i)).await.unwrap();
    }
    let got = poll_until(&mut consumer, 40).await;
    for room in ["room-a", "room-b"] {
        let mine: Vec<_> = got.iter().filter(|r| r.record.room == room).collect();
        let order: Vec<u64> = mine
            .iter()
            .map(|r| match r.record.cmd {
                Command::Read { seq, .. } => seq,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(order, (0..20).collect::<Vec<_>>(), "records of {room} keep their order");
        assert!(mine.iter().all(|r| r.partition == partition_for(room, bus.partitions())));
        assert!(mine.windows(2).all(|w| w[0].offset < w[1].offset), "offsets increase");
    }
}

pub async fn a_consumer_waits_for_the_next_record(bus: &impl Bus) {
    let mut consumer = bus.consumer().await.unwrap();
    let waiting = tokio::spawn(async move { poll_until(&mut consumer, 1).await });
    tokio::task::yield_now().await;
    bus.produce(&record("late")).await.unwrap();
    let got = waiting.await.unwrap();
    assert_eq!(got[0].record.room, "late");
}

pub async fn a_new_consumer_resumes_after_the_last_commit(bus: &impl Bus) {
    let mut first = bus.consumer().await.unwrap();
    for i in 0..6 {
        bus.produce(&numbered("resume", i)).await.unwrap();
    }
    let got = poll_until(&mut first, 6).await;
    let third = &got[2];
    first.commit(&[(third.partition, third.offset + 1)]).await.unwrap();
    drop(first);
    let mut second = bus.consumer().await.unwrap();
    let again = poll_until(&mut second, 3).await;
    assert_eq!(again[0].offset, got[3].offset, "the first uncommitted record comes first");
    assert_eq!(again[0].record, got[3].record);
}

pub async fn announcements_reach_every_subscriber(bus: &impl Bus) {
    let mut a = bus.announcements().await.unwrap();
    let mut b = bus.announcements().await.unwrap();
    let hello = Announcement::Heartbeat { gateway: "gw-test".into(), addr: Some("127.0.0.1:1".into()) };
    bus.announce(&hello).await.unwrap();
    for rx in [&mut a, &mut b] {
        let got = tokio::time::timeout(PATIENCE, async {
            loop {
                let a = rx.recv().await.expect("announcements open");
                if a.gateway() == "gw-test" {
                    return a;
                }
            }
        })
        .await
        .expect("announcement arrives");
        assert_eq!(got, hello);
    }
}
