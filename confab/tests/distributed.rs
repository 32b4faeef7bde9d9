//! The distributed mode against real Kafka and a real CQL database (from
//! `scripts/infra up kafka cql`): `confab migrate`, then gateways and
//! dispatchers, with clients spread over the gateways.

mod common;

use common::Client;
use common::cluster::PARTITIONS;
use confab::serving::Running;
use serde_json::json;

struct Cluster {
    gateways: Vec<Running>,
    dispatchers: Vec<Running>,
    http: reqwest::Client,
    _keyspace: common::cluster::Keyspace,
}

impl Cluster {
    async fn start(gateways: usize, dispatchers: usize) -> Cluster {
        let (gateways, dispatchers, keyspace) =
            common::cluster::start(gateways, dispatchers, &["--rate-burst", "1000"]).await;
        Cluster { gateways, dispatchers, http: reqwest::Client::new(), _keyspace: keyspace }
    }

    fn base(&self, g: usize) -> String {
        format!("http://{}", self.gateways[g].public())
    }

    async fn register(&self, g: usize, user: &str) {
        let creds = json!({"username": user, "password": "password-123"});
        let r = self.http.post(format!("{}/v1/auth/register", self.base(g))).json(&creds).send().await.unwrap();
        assert_eq!(r.status(), 201);
    }

    async fn token(&self, g: usize, user: &str) -> String {
        let creds = json!({"username": user, "password": "password-123"});
        let r = self.http.post(format!("{}/v1/auth/login", self.base(g))).json(&creds).send().await.unwrap();
        assert_eq!(r.status(), 200, "login of {user} on gateway {g}");
        r.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
    }

    async fn connect(&self, g: usize, user: &str) -> Client {
        let token = self.token(g, user).await;
        Client::connect(&format!("ws://{}/v1/ws?token={token}", self.gateways[g].public())).await
    }

    async fn metric(&self, g: usize, series: &str) -> f64 {
        let url = format!("http://{}/metrics", self.gateways[g].admin_addr);
        let text = self.http.get(url).send().await.unwrap().text().await.unwrap();
        text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
    }

    async fn stop(mut self) {
        for g in self.gateways.drain(..) {
            g.stop().await.unwrap();
        }
        for d in self.dispatchers.drain(..) {
            d.stop().await.unwrap();
        }
    }
}

#[tokio::test]
async fn users_on_different_gateways_chat_as_on_one() {
    let cluster = Cluster::start(2, 2).await;
    cluster.register(0, "alice").await;
    cluster.register(1, "bob").await;
    // Accounts registered on one gateway log in on any other.
    let mut alice = cluster.connect(1, "alice").await;
    let mut bob = cluster.connect(0, "bob").await;
    assert_eq!((alice.hello["server"].as_str(), bob.hello["server"].as_str()), (Some("gw-1"), Some("gw-0")));
    alice.join("lounge").await;
    bob.join("lounge").await;
    assert_eq!(alice.event(|e| e["ev"] == "member" && e["user"] == "bob").await["room"], "lounge");
    let sent = alice.send("lounge", "hello from gw-1", "a1").await;
    let got = bob.event(|e| e["ev"] == "msg").await;
    assert_eq!((&got["seq"], &got["text"], &got["prev_seq"]), (&sent["seq"], &json!("hello from gw-1"), &json!(0)));
    let reply = bob.send("lounge", "and back from gw-0", "b1").await;
    assert_eq!(alice.event(|e| e["ev"] == "msg" && e["from"] == "bob").await["seq"], reply["seq"]);
    // The same cid again, through the other gateway's dispatcher path: no second message.
    assert_eq!(alice.send("lounge", "hello from gw-1", "a1").await["seq"], sent["seq"]);
    let history = bob.ok(json!({"op":"history","room":"lounge"})).await;
    let texts: Vec<&str> =
        history["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["hello from gw-1", "and back from gw-0"]);
    // A DM across gateways, and presence learnt from the other gateway's announcements.
    alice.ok(json!({"op":"send","to":"bob","text":"psst","cid":"d1"})).await;
    assert_eq!(bob.event(|e| e["ev"] == "msg" && e["room"] == "dm:alice:bob").await["text"], "psst");
    let online = alice.ok(json!({"op":"presence","room":"lounge"})).await;
    let mut names: Vec<String> = serde_json::from_value(online["online"].clone()).unwrap();
    names.sort();
    assert_eq!(names, ["alice", "bob"]);
    bob.ok(json!({"op":"read","room":"lounge","seq":reply["seq"]})).await;
    assert_eq!(alice.event(|e| e["ev"] == "read").await["user"], "bob");
    cluster.stop().await;
}

#[tokio::test]
async fn a_room_event_is_pushed_only_to_gateways_hosting_a_member() {
    let cluster = Cluster::start(2, 1).await;
    for user in ["alice", "bob", "carol"] {
        cluster.register(0, user).await;
    }
    let mut alice = cluster.connect(0, "alice").await;
    let mut bob = cluster.connect(0, "bob").await;
    let mut carol = cluster.connect(1, "carol").await;
    let before = cluster.metric(1, "confab_gateway_room_events_received_total").await;
    alice.join("quiet").await;
    bob.join("quiet").await;
    for i in 0..5 {
        alice.send("quiet", "only gw-0 hosts this room", &format!("q{i}")).await;
    }
    bob.event(|e| e["ev"] == "msg" && e["cid"] == "q4").await;
    // Carol's own join of a room in the same partition comes after those
    // records in the log, and over the same link: when it arrives, anything
    // pushed to gw-1 for "quiet" would have arrived before it.
    let p = confab_bus::partition_for("quiet", PARTITIONS);
    let hers = (0..).map(|i| format!("hers-{i}")).find(|r| confab_bus::partition_for(r, PARTITIONS) == p).unwrap();
    carol.join(&hers).await;
    carol.event(|e| e["ev"] == "member" && e["room"] == hers.as_str()).await;
    let after = cluster.metric(1, "confab_gateway_room_events_received_total").await;
    assert_eq!(after - before, 1.0, "gw-1 got carol's join and nothing of 'quiet'");
    assert!(cluster.metric(0, "confab_gateway_room_events_received_total").await >= 7.0);
    cluster.stop().await;
}

#[tokio::test]
async fn a_users_devices_on_different_gateways_all_get_the_rooms_events() {
    let cluster = Cluster::start(2, 1).await;
    cluster.register(0, "alice").await;
    let mut phone = cluster.connect(0, "alice").await;
    let mut laptop = cluster.connect(1, "alice").await;
    // The phone joins; the laptop, on the other gateway, must be told too.
    phone.join("r").await;
    assert_eq!(laptop.event(|e| e["ev"] == "member").await["room"], "r");
    let sent = phone.send("r", "to all my devices", "c1").await;
    assert_eq!(laptop.event(|e| e["ev"] == "msg").await["seq"], sent["seq"]);
    cluster.stop().await;
}
