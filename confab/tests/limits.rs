//! The limits of PROTOCOL.md and bad input: each closes or refuses exactly
//! what it should, and nothing else.

mod common;

use std::time::Duration;

use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn junk_frames_get_bad_request_and_the_connection_stays_open() {
    let s = TestServer::start().await;
    let mut c = s.connected("alice").await;
    for junk in ["not json", "[1,2,3]", "42", "\"ping\"", "{}", r#"{"op":7}"#, r#"{"id":[],"op":"ping"}"#] {
        c.send_text(junk).await;
        let r = c.next_json().await;
        assert_eq!(r["ok"], false, "{junk}");
        assert_eq!(r["error"]["code"], "bad_request", "{junk}");
        assert!(r.get("re").is_none(), "no id could be read from {junk}: {r}");
    }
    for (frame, id) in [
        (r#"{"id":1,"op":"teleport"}"#, json!(1)),
        (r#"{"id":"x","room":"r"}"#, json!("x")),
        (r#"{"id":2,"op":"join","room":42}"#, json!(2)),
        (r#"{"id":3,"op":"history","room":"r","limit":"ten"}"#, json!(3)),
        (r#"{"id":4,"op":"read","room":"r","seq":-1}"#, json!(4)),
        (r#"{"id":5,"op":"sync","rooms":[]}"#, json!(5)),
    ] {
        c.send_text(frame).await;
        let r = c.reply_to(id.clone()).await;
        assert_eq!(r["error"]["code"], "bad_request", "{frame}");
    }
    c.ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(c.next_json().await["error"]["code"], "bad_request");
    c.ok(json!({"op":"ping"})).await;
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_the_connection_with_1009() {
    let s = TestServer::start().await;
    let mut c = s.connected("alice").await;
    let big = format!(r#"{{"op":"ping","pad":"{}"}}"#, "x".repeat(70 * 1024));
    c.send_text(&big).await;
    let (code, _) = c.closed().await;
    assert_eq!(code, 1009);
    s.await_metric("confab_sessions_closed_total{reason=\"frame_too_large\"}", 1.0).await;
}

#[tokio::test]
async fn requests_over_the_rate_get_rate_limited_and_the_connection_stays() {
    let s = TestServer::start_with(|c| {
        c.server.rate_per_second = 2;
        c.server.rate_burst = 5;
    })
    .await;
    let mut c = s.connected("alice").await;
    for i in 0..12 {
        c.send_text(&json!({"id": i, "op": "ping"}).to_string()).await;
    }
    let mut limited = 0;
    for i in 0..12 {
        let r = c.reply_to(json!(i)).await;
        if r["ok"] == false {
            assert_eq!(r["error"]["code"], "rate_limited");
            limited += 1;
        }
    }
    assert!(limited >= 5, "a burst of 5 at 2/s cannot take 12 at once; {limited} limited");
    // Once the bucket refills, requests pass again on the same connection.
    tokio::time::timeout(common::PATIENCE, async {
        loop {
            if c.request(json!({"op":"ping"})).await["ok"] == true {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the rate limit lets requests through again");
}

#[tokio::test]
async fn a_silent_client_is_closed_as_idle_and_a_live_one_is_not() {
    let s = TestServer::start_with(|c| c.server.heartbeat_ms = 200).await;
    let mut live = s.connected("alice").await;
    assert_eq!(live.hello["heartbeat_ms"], 200);
    let mut silent = s.connected("bob").await;
    // The live client reads, and so answers the server's pings; the silent
    // one reads nothing until the server has given up on it.
    let mut pings = 0;
    while pings < 4 || s.metric("confab_sessions_closed_total{reason=\"idle\"}").await < 1.0 {
        match tokio::time::timeout(common::PATIENCE, live.ws.next()).await.expect("a ping in time") {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Text(_))) => {}
            other => panic!("the live client lost its connection: {other:?}"),
        }
    }
    assert_eq!(silent.raw_close_code().await, Some(1001));
    live.ok(json!({"op":"ping"})).await;
}

#[tokio::test]
async fn a_slow_consumer_is_closed_and_the_room_keeps_its_pace() {
    let s = TestServer::start_with(|c| {
        c.server.outbound_queue = 8;
        c.server.rate_per_second = 100_000;
        c.server.rate_burst = 100_000;
    })
    .await;
    let mut fast = s.connected("alice").await;
    let mut slow = s.connected("bob").await;
    fast.join("r").await;
    slow.join("r").await;
    // Bob stops reading. Alice keeps sending large messages until the server
    // gives up on bob; she keeps being served meanwhile. As soon as a frame
    // for bob is dropped, bob reads what is left on his socket (within the
    // 1 s the server gives its last words): it must end with bye and 1013.
    let drops = s.metric("confab_outbound_queue_drops_total").await;
    let (url, http) = (format!("{}/metrics", s.admin), s.client.clone());
    let bob = tokio::spawn(async move {
        tokio::time::timeout(common::PATIENCE * 4, async {
            loop {
                let text = http.get(&url).send().await.unwrap().text().await.unwrap();
                let series = "confab_outbound_queue_drops_total ";
                let now: f64 = text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0);
                if now > drops {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("a frame for bob is dropped in time");
        slow.raw_frames().await
    });
    let text = "x".repeat(4000);
    let mut sent = 0;
    while !bob.is_finished() {
        sent += 1;
        fast.send("r", &text, &format!("c{sent}")).await;
        fast.take_events();
        assert!(sent < 20_000, "bob was never closed as a slow consumer");
    }
    let (texts, code) = bob.await.unwrap();
    assert_eq!(code, Some(1013), "bob's session is closed with 1013");
    assert_eq!(texts.last().map(String::as_str), Some(r#"{"ev":"bye","reason":"slow_consumer"}"#));
    s.await_metric("confab_sessions_closed_total{reason=\"slow_consumer\"}", 1.0).await;
    // Alice was served all along, and still is.
    fast.ok(json!({"op":"ping"})).await;
    let h = fast.ok(json!({"op":"history","room":"r","limit":1})).await;
    assert_eq!(h["messages"][0]["cid"], format!("c{sent}"));
}

#[tokio::test]
async fn requests_with_string_and_integer_ids_are_answered_with_them() {
    let s = TestServer::start().await;
    let mut c = s.connected("alice").await;
    c.send_text(r#"{"id":"abc","op":"ping"}"#).await;
    assert_eq!(c.reply_to(json!("abc")).await, json!({"re":"abc","ok":true}));
    c.send_text(r#"{"id":-7,"op":"ping"}"#).await;
    assert_eq!(c.reply_to(json!(-7)).await, json!({"re":-7,"ok":true}));
}
