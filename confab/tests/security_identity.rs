//! Identity mistakes that cross users (issue #13, docs/security.md): each
//! test tries an attack over real WebSocket connections, asserts the
//! refusal, and that the other users' sessions go on as before. Every test
//! runs on a standalone server and on two gateways and two dispatchers.
//! The tests of `app_keys` run on servers that also take an application's
//! tokens (`--jwt-public-key`).

#[macro_use]
mod common;

use common::{TestServer, refused_status};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

async fn a_dm_to_a_name_nobody_holds_is_refused_and_not_inherited(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    let to_ghost = json!({"op":"send","room":"dm:alice:ghost","text":"for the ceo","cid":"g1"});
    assert_eq!(alice.error(to_ghost).await, "not_found", "a DM id names an account, as `to` does");
    assert_eq!(alice.error(json!({"op":"send","to":"ghost","text":"x","cid":"g2"})).await, "not_found");
    for req in [
        json!({"op":"history","room":"dm:alice:ghost"}),
        json!({"op":"sync","rooms":{"dm:alice:ghost":0}}),
        json!({"op":"presence","room":"dm:alice:ghost"}),
        json!({"op":"typing","room":"dm:alice:ghost"}),
        json!({"op":"read","room":"dm:alice:ghost","seq":1}),
    ] {
        assert_eq!(alice.error(req.clone()).await, "not_found", "{req}");
    }
    let (status, body) = s.get("/v1/rooms/dm:alice:ghost/messages", Some(&s.login("alice").await)).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")), "{body}");

    // Whoever registers the name later finds nothing addressed to it.
    let mut ghost = s.connected("ghost").await;
    assert_eq!(ghost.ok(json!({"op":"rooms"})).await["rooms"], json!([]));
    let h = ghost.ok(json!({"op":"history","room":"dm:alice:ghost"})).await;
    assert_eq!(h["messages"], json!([]), "the refused DM was never stored");

    // The others' DMs go on as before.
    let sent = alice.ok(json!({"op":"send","room":"dm:alice:bob","text":"still here","cid":"b1"})).await;
    let ev = bob.event(|e| e["ev"] == "msg" && e["room"] == "dm:alice:bob").await;
    assert_eq!((&ev["seq"], &ev["text"]), (&sent["seq"], &json!("still here")));
}

async fn presence_on_a_dm_needs_its_first_message(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    let mut carol = s.connected("carol").await;
    // Naming a DM id with someone does not tell whether they are online.
    let ask = json!({"op":"presence","room":"dm:alice:bob"});
    assert_eq!(alice.error(ask.clone()).await, "not_member");
    assert_eq!(carol.error(json!({"op":"presence","room":"dm:bob:carol"})).await, "not_member");
    // Reading the not-yet-written DM stays an empty page.
    assert_eq!(alice.ok(json!({"op":"history","room":"dm:alice:bob"})).await["messages"], json!([]));

    alice.ok(json!({"op":"send","to":"bob","text":"hi","cid":"p1"})).await;
    bob.event(|e| e["ev"] == "msg" && e["room"] == "dm:alice:bob").await;
    // The DM exists from its first message. (Each asks the gateway it is
    // on; whether the other party shows up yet depends on announcements,
    // which the presence tests in messaging.rs cover.)
    for (c, me) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        let online = c.ok(ask.clone()).await;
        assert!(online["online"].as_array().unwrap().contains(&json!(me)), "{online}");
    }
    assert_eq!(carol.error(ask).await, "not_member", "a third user learns nothing");
}

on_every_mode!(a_dm_to_a_name_nobody_holds_is_refused_and_not_inherited, presence_on_a_dm_needs_its_first_message);

const ISSUER: &str = "https://app.example";
const AUDIENCE: &str = "confab";

/// An application with its own users: an ES256 key pair, the public half
/// in a file for the server.
struct App {
    signing: EncodingKey,
    public_key: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

impl App {
    fn new() -> App {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let public_key = dir.path().join("app.pem");
        std::fs::write(&public_key, pair.public_key_pem()).unwrap();
        let signing = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        App { signing, public_key, _dir: dir }
    }

    /// `--jwt-public-key` requiring the application's issuer and audience.
    fn key_flag(&self) -> String {
        format!("{}#iss={ISSUER};aud={AUDIENCE}", self.public_key.display())
    }

    fn sign(&self, claims: Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.signing).unwrap()
    }

    /// A token as the application mints it for Confab: ten minutes.
    fn token(&self, user: &str) -> String {
        let now = unix_now();
        self.sign(json!({"sub": user, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600}))
    }
}

async fn register(s: &TestServer, name: &str) -> (u16, Value) {
    s.post("/v1/auth/register", json!({"username": name, "password": "password-123"})).await
}

async fn login_status(s: &TestServer, name: &str) -> u16 {
    s.post("/v1/auth/login", json!({"username": name, "password": "password-123"})).await.0
}

async fn with_an_application_key_registration_is_closed_and_its_users_exist_from_their_first_connection(
    s: TestServer,
    app: App,
) {
    // Nobody registers a name the application's users will need.
    let (status, body) = register(&s, "ceo").await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("registration is closed"), "{body}");

    let mut alice = s.connect(&app.token("alice")).await;
    let dm = json!({"op":"send","to":"ceo","text":"board meeting at 10","cid":"d1"});
    assert_eq!(alice.error(dm.clone()).await, "not_found", "the ceo has never connected");

    // One connection makes the ceo a user; a DM reaches them when they are back.
    let ceo = s.connect(&app.token("ceo")).await;
    assert_eq!(ceo.hello["user"], "ceo", "{}", ceo.hello);
    drop(ceo);
    let sent = alice.ok(dm).await;
    let mut ceo = s.connect(&app.token("ceo")).await;
    let rooms = ceo.ok(json!({"op":"rooms"})).await;
    assert_eq!(rooms["rooms"][0]["room"], "dm:alice:ceo", "{rooms}");
    let page = ceo.ok(json!({"op":"history","room":"dm:alice:ceo"})).await;
    assert_eq!(
        (&page["messages"][0]["text"], &page["messages"][0]["seq"]),
        (&json!("board meeting at 10"), &sent["seq"])
    );
    alice.ok(json!({"op":"send","to":"ceo","text":"and lunch","cid":"d2"})).await;
    let ev = ceo.event(|e| e["ev"] == "msg" && e["room"] == "dm:alice:ceo").await;
    assert_eq!(ev["text"], "and lunch");

    // An application's user has no password here, and the name stays theirs.
    assert_eq!(login_status(&s, "ceo").await, 401);
    assert_eq!(register(&s, "ceo").await.0, 403);
    let h = alice.ok(json!({"op":"history","room":"dm:alice:ceo"})).await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 2);
}

async fn a_token_the_application_did_not_mint_for_confab_is_refused(s: TestServer, app: App) {
    let mut alice = s.connect(&app.token("alice")).await;
    alice.join("general").await;
    let now = unix_now();
    let stranger = App::new();
    let refused = [
        (
            "a wrong issuer",
            app.sign(json!({"sub":"mallory","iss":"https://evil.example","aud":AUDIENCE,"exp":now + 600})),
        ),
        ("no issuer", app.sign(json!({"sub":"mallory","aud":AUDIENCE,"exp":now + 600}))),
        ("a wrong audience", app.sign(json!({"sub":"mallory","iss":ISSUER,"aud":"billing","exp":now + 600}))),
        ("no audience", app.sign(json!({"sub":"mallory","iss":ISSUER,"exp":now + 600}))),
        (
            "a lifetime over the maximum",
            app.sign(json!({"sub":"mallory","iss":ISSUER,"aud":AUDIENCE,"iat":now,"exp":now + 7201})),
        ),
        // Counted from the server's clock, which may be a second ahead.
        (
            "no iat and over the maximum",
            app.sign(json!({"sub":"mallory","iss":ISSUER,"aud":AUDIENCE,"exp":now + 7260})),
        ),
        ("another key", stranger.token("mallory")),
    ];
    for (what, token) in &refused {
        for ws in &s.gateways {
            assert_eq!(refused_status(&format!("{ws}?token={token}")).await, 401, "{what}");
        }
        let (status, body) = s.get("/v1/rooms/general/messages", Some(token)).await;
        assert_eq!((status, &body["error"]["code"]), (401, &json!("unauthorized")), "{what}: {body}");
    }
    // Within the maximum is fine.
    let mut bob =
        s.connect(&app.sign(json!({"sub":"bob","iss":ISSUER,"aud":AUDIENCE,"iat":now,"exp":now + 7200}))).await;
    bob.join("general").await;

    // A refused token made nobody a user, and the others go on.
    assert_eq!(alice.error(json!({"op":"send","to":"mallory","text":"x","cid":"m1"})).await, "not_found");
    let sent = alice.send("general", "still here", "g1").await;
    let ev = bob.event(|e| e["ev"] == "msg" && e["room"] == "general").await;
    assert_eq!((&ev["seq"], &ev["text"]), (&sent["seq"], &json!("still here")));
}

/// The attack of issue #13 with registration opened on purpose: whoever
/// holds a name first keeps it, and the two kinds of users are never merged.
async fn with_open_registration_a_name_is_a_password_account_or_an_application_user_never_both(
    s: TestServer,
    app: App,
) {
    // The application's ceo came first: the name cannot be registered.
    let mut ceo = s.connect(&app.token("ceo")).await;
    let (status, body) = register(&s, "ceo").await;
    assert_eq!((status, &body["error"]["code"]), (409, &json!("taken")), "{body}");
    assert_eq!(login_status(&s, "ceo").await, 401);

    // A registered cfo came first: the application's token for it is refused.
    let mut mallory = s.connected("cfo").await;
    let token = app.token("cfo");
    for ws in &s.gateways {
        assert_eq!(refused_status(&format!("{ws}?token={token}")).await, 403);
    }
    let (status, body) = s.get("/v1/rooms/dm:alice:cfo/messages", Some(&token)).await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")), "{body}");

    // DMs to the application's ceo reach them and nobody else.
    let mut alice = s.connect(&app.token("alice")).await;
    alice.ok(json!({"op":"send","to":"ceo","text":"for the ceo","cid":"c1"})).await;
    assert_eq!(ceo.event(|e| e["ev"] == "msg" && e["room"] == "dm:alice:ceo").await["text"], "for the ceo");
    assert_eq!(mallory.error(json!({"op":"history","room":"dm:alice:ceo"})).await, "not_member");
    assert_eq!(mallory.ok(json!({"op":"rooms"})).await["rooms"], json!([]), "the password account is untouched");
}

const API_KEY: &str = "identity-api-key-0123456789abcdef";

/// A server API key file for the test below (`--api-key-file`).
fn api_key_flag() -> &'static str {
    let path = std::env::temp_dir().join(format!("confab-identity-api-keys-{}", std::process::id()));
    std::fs::write(&path, format!("app:{API_KEY}\n")).unwrap();
    Box::leak(format!("--api-key-file={}", path.display()).into_boxed_str())
}

/// The name of a deleted account stays reserved against an application's
/// tokens too: one for it is refused (`403 forbidden`, saying why), and
/// never becomes a fresh account that reads the old one's DMs. Both kinds:
/// a password account deleted with its password, an application's user
/// deleted through the server API.
async fn an_application_token_for_a_deleted_accounts_name_is_refused(s: TestServer, app: App) {
    let mut bob = s.connected("bob").await;
    let mut cfo = s.connected("cfo").await;
    cfo.ok(json!({"op":"send","to":"bob","text":"the numbers, privately","cid":"c1"})).await;
    let cfo_token = s.login("cfo").await;
    let url = format!("{}/v1/account", s.https[0]);
    let r = s.client.delete(url).bearer_auth(&cfo_token).json(&json!({"password":"password-123"})).send().await;
    assert_eq!(r.unwrap().status().as_u16(), 200);

    let mut ceo = s.connect(&app.token("ceo")).await;
    ceo.ok(json!({"op":"send","to":"bob","text":"board only","cid":"e1"})).await;
    let url = format!("{}/v1/server/users/ceo", s.https[0]);
    let r = s.client.delete(url).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    ceo.closed().await;

    for name in ["cfo", "ceo"] {
        let token = app.token(name);
        for ws in &s.gateways {
            assert_eq!(refused_status(&format!("{ws}?token={token}")).await, 403, "{name}");
        }
        let (status, body) = s.get(&format!("/v1/rooms/dm:bob:{name}/messages"), Some(&token)).await;
        assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")), "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("deleted") && message.contains(name), "{message}");
        let (status, _) = register(&s, name).await;
        assert_eq!(status, 409, "nor registered again");
        assert_eq!(bob.error(json!({"op":"send","to":name,"text":"still there?","cid":name})).await, "not_found");
    }
    // Bob still reads both DMs, erased; other application users sign in as before.
    for name in ["cfo", "ceo"] {
        let h = bob.ok(json!({"op":"history","room":format!("dm:bob:{name}")})).await;
        assert_eq!((&h["messages"][0]["text"], &h["messages"][0]["from"]), (&json!(""), &json!("")), "{h}");
    }
    let mut alice = s.connect(&app.token("alice")).await;
    alice.ok(json!({"op":"send","to":"bob","text":"hi","cid":"a1"})).await;
    assert_eq!(bob.event(|e| e["ev"] == "msg" && e["room"] == "dm:alice:bob").await["text"], "hi");
}

/// Closing registration (here by configuring an application's key, which
/// closes it by default) keeps the accounts that exist: they log in and
/// chat as before. Standalone only: it restarts the server on its data; a
/// cluster's gateways run the very same login.
#[tokio::test]
async fn accounts_registered_before_registration_closed_still_sign_in() {
    let mut s = TestServer::start().await;
    s.user("alice").await;
    s.running.take().unwrap().stop().await.expect("clean stop");

    let app = App::new();
    let key = app.key_flag();
    let config = common::config_with(s.dir.path(), &["--jwt-public-key", &key]);
    let running = confab::standalone::start(config).await.expect("server restarts");
    let base = format!("http://{}", running.public());
    let post = |path: &str, name: &str| {
        let body = json!({"username": name, "password": "password-123"});
        s.client.post(format!("{base}{path}")).json(&body).send()
    };
    assert_eq!(post("/v1/auth/register", "bob").await.unwrap().status(), 403);
    let login: Value = post("/v1/auth/login", "alice").await.unwrap().json().await.unwrap();
    let token = login["token"].as_str().unwrap_or_else(|| panic!("{login}"));
    let mut alice = common::Client::connect(&format!("ws://{}/v1/ws?token={token}", running.public())).await;
    alice.join("general").await;
    let mut ceo = common::Client::connect(&format!("ws://{}/v1/ws?token={}", running.public(), app.token("ceo"))).await;
    ceo.join("general").await;
    let sent = alice.send("general", "hello from before", "a1").await;
    assert_eq!(ceo.event(|e| e["ev"] == "msg").await["seq"], sent["seq"], "both kinds of users meet");
    running.stop().await.expect("clean stop");
}

/// Runs each named test on a standalone server and on the cluster, with
/// the application's key (requiring its issuer and audience) and `flags`.
macro_rules! with_an_application_key {
    ($($name:ident: [$($flag:expr),*]),* $(,)?) => {
        mod app_keys {
            mod standalone {
                $(
                    #[tokio::test]
                    async fn $name() {
                        let app = super::super::App::new();
                        let key = app.key_flag();
                        let flags = ["--jwt-public-key", key.as_str(), $($flag),*];
                        super::super::$name(super::super::TestServer::start_with_flags(&flags).await, app).await
                    }
                )*
            }
            mod distributed {
                $(
                    #[tokio::test]
                    async fn $name() {
                        let app = super::super::App::new();
                        let key = app.key_flag();
                        let flags = ["--jwt-public-key", key.as_str(), $($flag),*];
                        let test = async {
                            let s = super::super::TestServer::start_cluster_with(&flags).await;
                            super::super::$name(s, app).await
                        };
                        tokio::time::timeout(crate::common::CLUSTER_TEST, test).await.expect("the test ends in time")
                    }
                )*
            }
        }
    };
}

with_an_application_key!(
    with_an_application_key_registration_is_closed_and_its_users_exist_from_their_first_connection: [],
    a_token_the_application_did_not_mint_for_confab_is_refused: ["--max-token-lifetime-secs", "7200"],
    with_open_registration_a_name_is_a_password_account_or_an_application_user_never_both: ["--registration", "open"],
    an_application_token_for_a_deleted_accounts_name_is_refused: ["--registration", "open", super::super::api_key_flag()],
);
