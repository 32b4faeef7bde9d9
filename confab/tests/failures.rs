//! ARCHITECTURE.md's failure table, against real processes on real Kafka and
//! Cassandra. Each drill runs a stream of sends with cids, retries an
//! unacknowledged send with the same cid as a client would (on another
//! gateway when its own is gone), and checks afterwards, from history, that
//! every acknowledged message is there exactly once, with its seq, in order.
//!
//! Every drill also checks that the fault it names happened and was felt:
//! the process is dead, the clients had to retry, the refusal was the one
//! promised. A drill that could pass without its fault is a drill that fails.
//! docs/testing.md says what each one proves.
//!
//! The drills stop servers (`scripts/infra down kafka|cql`), so they run one at
//! a time, and only against servers of your own (see docs/testing.md).

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Client;
use common::drill::{
    Cluster, DRAIN_GRACE, PARTITIONS, PRODUCE_TIMEOUT, REPLY_WAIT, Restore, WAIT, Writer, drill, infra, readyz,
    try_infra,
};
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------- drills

#[tokio::test]
async fn a_dispatcher_killed_mid_batch_loses_and_duplicates_nothing() {
    drill("dispatcher killed mid-batch", async {
        let mut cluster = Cluster::start(2, 2).await;
        let room = "drill-room";
        let mut w = Writer::new(&cluster, "writer", room).await;
        // A dispatcher reports lag only for partitions it has consumed from:
        // a join on a room of each partition gives each one a position.
        w.join_every_partition().await;
        // Kill the dispatcher that owns the room's partition, not either one.
        let partition = confab_bus::partition_for(room, PARTITIONS);
        let owner = cluster.owner_of(partition).await;
        let survivor = 1 - owner;
        let theirs = cluster.dispatchers[survivor].lag_by_partition().await;
        assert!(!theirs.contains_key(&partition), "the other dispatcher does not own partition {partition} yet");
        let pid = cluster.dispatchers[owner].pid();
        let mut in_flight_at_kill = None;
        w.pipelined(0..200, 20, Duration::ZERO, |acked, in_flight| {
            if acked == 60 && in_flight_at_kill.is_none() {
                let killed = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                assert!(killed.is_ok_and(|s| s.success()), "kill -KILL {pid}");
                in_flight_at_kill = Some(in_flight);
            }
        })
        .await;
        let status = cluster.dispatchers[owner].exited_within(Duration::from_secs(10)).await;
        assert_eq!(status.and_then(|s| s.signal()), Some(9), "the owner died of SIGKILL: {status:?}");
        let in_flight = in_flight_at_kill.expect("the dispatcher was killed");
        assert!(in_flight >= 10, "sends were in flight when it died: {in_flight}");
        assert!(w.retries > 0, "the writer had to send again what the dead dispatcher never answered");
        // The room's partition moved to the survivor.
        let deadline = Instant::now() + WAIT;
        while !cluster.dispatchers[survivor].lag_by_partition().await.contains_key(&partition) {
            assert!(Instant::now() < deadline, "the survivor never took partition {partition} over");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!("dispatcher drill: {in_flight} in flight at the kill, {} sent again", w.retries);
        w.verify().await;
        assert_eq!(w.acked.len(), 200);
    })
    .await;
}

#[tokio::test]
async fn a_gateway_drained_by_sigterm_says_bye_refuses_upgrades_and_exits_in_its_grace() {
    drill("gateway drained by SIGTERM", async {
        let mut cluster = Cluster::start(2, 1).await;
        let room = "drill-room";
        let mut w = Writer::new(&cluster, "writer", room).await;
        // A member that reads (it must get bye and 1012), and one that reads
        // nothing (it holds the drain open as long as the gateway allows).
        let listener_token = cluster.register(0, "listener").await;
        let mut listener = Client::connect(&format!("ws://{}/v1/ws?token={listener_token}", cluster.public(0))).await;
        listener.join(room).await;
        let stubborn_token = cluster.register(0, "stubborn").await;
        let stubborn = Client::connect(&format!("ws://{}/v1/ws?token={stubborn_token}", cluster.public(0))).await;
        readyz(&cluster, 0, 200).await;
        for i in 0..15 {
            w.send(i).await;
        }
        let sigterm = Instant::now();
        cluster.gateways[0].signal("-TERM");
        // While it drains: not ready, and no new session.
        readyz(&cluster, 0, 503).await;
        let url = format!("ws://{}/v1/ws?token={}", cluster.public(0), w.token);
        let upgrade = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url)).await;
        assert!(matches!(upgrade, Ok(Err(_))), "a new upgrade is refused while draining: {upgrade:?}");
        let (code, frames) = listener.closed().await;
        assert_eq!(code, 1012, "the drained session is closed with 1012");
        assert_eq!(frames.last(), Some(&json!({"ev": "bye", "reason": "server_restart"})), "{frames:?}");
        let status = cluster.gateways[0].exited_within(DRAIN_GRACE + Duration::from_secs(5)).await;
        let took = sigterm.elapsed();
        assert!(status.is_some_and(|s| s.success()), "the gateway exits, cleanly, after its drain: {status:?}");
        assert!(took <= DRAIN_GRACE + Duration::from_secs(5), "exited {took:?} after SIGTERM");
        drop(stubborn);
        for i in 15..40 {
            w.send(i).await;
        }
        assert_eq!(w.current, 1, "the writer moved to the surviving gateway");
        assert!(w.connects >= 2, "the writer reconnected");
        w.verify().await;
    })
    .await;
}

#[tokio::test]
async fn a_gateway_killed_sends_its_clients_elsewhere_and_they_sync_every_acked_message() {
    drill("gateway killed", async {
        let mut cluster = Cluster::start(2, 1).await;
        let room = "drill-room";
        let mut w = Writer::new(&cluster, "writer", room).await;
        // A receiving member on the gateway that dies.
        let reader_token = cluster.register(0, "reader").await;
        let mut reader = Client::connect(&format!("ws://{}/v1/ws?token={reader_token}", cluster.public(0))).await;
        reader.join(room).await;
        for i in 0..15 {
            w.send(i).await;
        }
        // The reader has what was delivered before the kill: up to the last acked.
        let mut received: BTreeMap<u64, String> = BTreeMap::new();
        let last_before = w.acked.last().expect("acked").1;
        while !received.contains_key(&last_before) {
            let m = reader.next_event("msg").await;
            received.insert(m["seq"].as_u64().expect("seq"), m["cid"].as_str().expect("cid").to_owned());
        }
        cluster.gateways[0].signal("-KILL");
        let status = cluster.gateways[0].exited_within(Duration::from_secs(10)).await;
        assert_eq!(status.and_then(|s| s.signal()), Some(9), "gateway 0 died of SIGKILL: {status:?}");
        for i in 15..40 {
            w.send(i).await;
        }
        assert_eq!(w.current, 1, "the writer moved to the surviving gateway");
        assert!(w.connects >= 2, "the writer reconnected");
        // The reader's connection is gone; it reconnects to the other gateway
        // and syncs from the last seq it has.
        let end = tokio::time::timeout(common::PATIENCE, async {
            loop {
                match reader.ws.next().await {
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                    Some(Ok(_)) => {}
                }
            }
        });
        end.await.expect("the reader's connection to the dead gateway ends");
        let last = *received.keys().last().expect("received before the kill");
        let mut reader = Client::connect(&format!("ws://{}/v1/ws?token={reader_token}", cluster.public(1))).await;
        let mut from = last;
        let mut synced = 0;
        loop {
            let r = reader.ok(json!({"op": "sync", "rooms": {room: from}, "limit": 10})).await;
            let page = &r["rooms"][room];
            for m in page["messages"].as_array().expect("messages") {
                let seq = m["seq"].as_u64().expect("seq");
                assert!(seq > from, "sync returns only what follows {from}: {m}");
                let dup = received.insert(seq, m["cid"].as_str().expect("cid").to_owned());
                assert!(dup.is_none(), "seq {seq} came twice");
                from = seq;
                synced += 1;
            }
            if page["more"] != true {
                break;
            }
        }
        assert!(synced >= 25, "the messages sent after the kill came by sync: {synced}");
        let acked: BTreeMap<u64, String> = w.acked.iter().map(|(c, s)| (*s, c.clone())).collect();
        assert_eq!(received, acked, "the reader has every acked message, once, with its seq");
        w.verify().await;
    })
    .await;
}

#[tokio::test]
async fn a_slow_client_is_closed_with_bye_and_1013_and_the_room_keeps_its_pace() {
    drill("slow client", async {
        let cluster = Cluster::start(2, 1).await;
        let room = "drill-room";
        let mut w = Writer::new(&cluster, "writer", room).await;
        // The slow member and a reading member sit on the other gateway.
        let slow_token = cluster.register(1, "slow").await;
        let mut slow = Client::connect(&format!("ws://{}/v1/ws?token={slow_token}", cluster.public(1))).await;
        slow.join(room).await;
        let fast_token = cluster.register(1, "fast").await;
        let mut fast = Client::connect(&format!("ws://{}/v1/ws?token={fast_token}", cluster.public(1))).await;
        fast.join(room).await;
        let fast = tokio::spawn(async move {
            let mut cids = Vec::new();
            loop {
                let m = fast.next_event("msg").await;
                cids.push(m["cid"].as_str().expect("cid").to_owned());
                if m["text"] == "end" {
                    return cids;
                }
            }
        });
        // The slow member stops reading. As soon as its gateway drops a
        // frame for it, it reads what is left on its socket, without writing.
        let drops = cluster.gateways[1].metric("confab_outbound_queue_drops_total").await;
        let admin = cluster.gateways[1].addrs["admin listening"].clone();
        let slow = tokio::spawn({
            async move {
                let url = format!("http://{admin}/metrics");
                let series = "confab_outbound_queue_drops_total ";
                loop {
                    let text = reqwest::get(&url).await.expect("/metrics").text().await.expect("/metrics");
                    let now: f64 =
                        text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0);
                    if now > drops {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                slow.raw_frames().await
            }
        });
        let text = "x".repeat(4000);
        let mut i = 0;
        while !slow.is_finished() {
            w.send_text(i, &text).await;
            i += 1;
            assert!(i < 20_000, "the slow client was never closed");
        }
        for _ in 0..20 {
            w.send_text(i, &text).await;
            i += 1;
        }
        w.send_text(i, "end").await;
        let (texts, code) = slow.await.expect("the slow client's task");
        assert_eq!(code, Some(1013), "the slow session is closed with 1013");
        assert_eq!(texts.last().map(String::as_str), Some(r#"{"ev":"bye","reason":"slow_consumer"}"#));
        let got = texts.iter().filter(|t| t.starts_with(r#"{"ev":"msg""#)).count();
        assert!(got < w.acked.len(), "the slow client missed messages: it got {got} of {}", w.acked.len());
        // The room kept its pace: the writer was never refused, never
        // reconnected, and the other member got every message, in order.
        assert_eq!((w.retries, w.connects), (0, 1), "the writer was served all along on its one connection");
        let fast = tokio::time::timeout(common::PATIENCE, fast).await.expect("the fast member ends").expect("fast");
        let sent: Vec<String> = w.acked.iter().map(|(c, _)| c.clone()).collect();
        assert_eq!(fast, sent, "the reading member got all {} messages", sent.len());
        assert_eq!(cluster.gateways[1].metric(r#"confab_sessions_closed_total{reason="slow_consumer"}"#).await, 1.0);
        eprintln!(
            "slow client drill: {} messages acked and delivered to the reading member; the slow one got {got}",
            sent.len()
        );
        w.verify().await;
    })
    .await;
}

#[tokio::test]
async fn kafka_stopped_refuses_sends_with_unavailable_in_time_and_loses_no_acked_message() {
    drill("Kafka stopped", async {
        let cluster = Cluster::start(1, 1).await;
        let mut w = Writer::new(&cluster, "writer", "drill-room").await;
        for i in 0..10 {
            w.send(i).await;
        }
        readyz(&cluster, 0, 200).await;
        let _restore = Restore("kafka");
        infra("down", "kafka");
        readyz(&cluster, 0, 503).await;
        // A send now is refused as `unavailable` within the produce timeout.
        let probe = w.send_request(10, "message 10");
        let asked = Instant::now();
        let r = w.once(&probe, &json!("probe")).await.expect("a reply while Kafka is down");
        let took = asked.elapsed();
        assert_eq!(r["error"]["code"], "unavailable", "{r}");
        assert!(took <= PRODUCE_TIMEOUT + Duration::from_secs(1), "unavailable after {took:?}");
        let restart = tokio::task::spawn_blocking(|| {
            std::thread::sleep(Duration::from_secs(5));
            try_infra("up", "kafka")
        });
        let before = w.retries;
        for i in 10..20 {
            w.send(i).await;
        }
        restart.await.expect("the restart task").expect("Kafka restarts");
        assert!(w.retries > before, "sends went unacknowledged while Kafka was down");
        readyz(&cluster, 0, 200).await;
        w.verify().await;
    })
    .await;
}

#[tokio::test]
async fn the_store_stopped_holds_every_ack_until_it_returns_and_the_lag_rises() {
    drill("store stopped", async {
        let cluster = Cluster::start(1, 1).await;
        let mut w = Writer::new(&cluster, "writer", "drill-room").await;
        for i in 0..10 {
            w.send(i).await;
        }
        readyz(&cluster, 0, 200).await;
        let _restore = Restore("cql");
        infra("down", "cql");
        readyz(&cluster, 0, 503).await;
        // The dispatcher's lag, sampled all along.
        let watching = Arc::new(AtomicBool::new(true));
        let admin = cluster.dispatchers[0].addrs["admin listening"].clone();
        let lag = tokio::spawn({
            let watching = watching.clone();
            async move {
                let url = format!("http://{admin}/metrics");
                let mut samples = Vec::new();
                while watching.load(Ordering::SeqCst) {
                    if let Ok(Ok(text)) =
                        tokio::time::timeout(REPLY_WAIT, async { reqwest::get(&url).await?.text().await }).await
                    {
                        let sum: f64 = text
                            .lines()
                            .filter(|l| l.starts_with("confab_consumer_lag_records{"))
                            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                            .sum();
                        samples.push((Instant::now(), sum));
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                samples
            }
        });
        let restart = tokio::task::spawn_blocking(|| {
            std::thread::sleep(Duration::from_secs(8));
            let began = Instant::now();
            try_infra("up", "cql").map(|()| (began, Instant::now()))
        });
        // Sends trickle in while the store is down: the first is stuck in the
        // dispatcher's group commit, the others wait in Kafka.
        let first = w.acked.len();
        w.pipelined(10..30, 20, Duration::from_millis(300), |_, _| {}).await;
        let (began, back) = restart.await.expect("the restart task").expect("Cassandra restarts");
        watching.store(false, Ordering::SeqCst);
        let samples = lag.await.expect("the lag watcher");
        let early = w.acked_at[first..].iter().filter(|at| **at < began).count();
        assert_eq!(early, 0, "no send was acked before the store was started again");
        let lag_while_down = samples.iter().filter(|(at, _)| *at < back).map(|(_, l)| *l).fold(0.0, f64::max);
        assert!(lag_while_down >= 1.0, "the dispatcher's lag rose while the store was down: {samples:?}");
        eprintln!("store drill: lag rose to {lag_while_down} records; {} sends sent again", w.retries);
        readyz(&cluster, 0, 200).await;
        w.verify().await;
    })
    .await;
}
