//! Rooms people own (docs/protocol.md, "Rooms: ownership, roles and
//! moderation"): owners and roles, private rooms and invitations, kicks,
//! bans and mutes, settings, `room_info`, `members` and `directory`, over
//! real WebSocket connections, standalone and on the two-gateway,
//! two-dispatcher cluster. Every refusal is tried and shown to change nothing.

#[macro_use]
mod common;

use common::{Client, TestServer};
use serde_json::{Value, json};

/// The next `member` event with this action about this user.
async fn member_event(c: &mut Client, action: &str, user: &str) -> Value {
    c.event(|v| v["ev"] == "member" && v["action"] == action && v["user"] == user).await
}

fn users(members: &Value) -> Vec<(String, String)> {
    members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["user"].as_str().unwrap().to_owned(), m["role"].as_str().unwrap().to_owned()))
        .collect()
}

fn rooms_named(rooms: &Value) -> Vec<String> {
    rooms.as_array().unwrap().iter().map(|r| r["room"].as_str().unwrap().to_owned()).collect()
}

async fn create_makes_the_creator_the_owner_and_a_room_is_created_once(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    let r = alice.ok(json!({"op":"create","room":"team","visibility":"private","name":"The team","topic":"t"})).await;
    assert_eq!((&r["room"], &r["last_seq"]), (&json!("team"), &json!(0)));
    assert_eq!(member_event(&mut alice, "join", "alice").await["room"], "team");
    let info = alice.ok(json!({"op":"room_info","room":"team"})).await;
    assert_eq!(
        (&info["name"], &info["topic"], &info["visibility"], &info["members"], &info["role"]),
        (&json!("The team"), &json!("t"), &json!("private"), &json!(1), &json!("owner"))
    );
    assert_eq!(bob.error(json!({"op":"create","room":"team"})).await, "taken");
    assert_eq!(alice.error(json!({"op":"create","room":"team"})).await, "taken", "even for its owner");
    // A join of a room that does not exist creates a public one, the joiner's.
    bob.join("lobby").await;
    let info = bob.ok(json!({"op":"room_info","room":"lobby"})).await;
    assert_eq!((&info["visibility"], &info["role"], &info["name"]), (&json!("public"), &json!("owner"), &json!("")));
    let info = alice.ok(json!({"op":"room_info","room":"lobby"})).await;
    assert_eq!((&info["members"], &info["role"]), (&json!(1), &Value::Null), "public rooms are readable by anyone");
    assert_eq!(alice.error(json!({"op":"room_info","room":"nowhere"})).await, "not_found");
    assert_eq!(alice.error(json!({"op":"create","room":"dm:alice:bob"})).await, "bad_request");
}

async fn a_private_room_is_joined_by_invitation_only(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    let mut carol = s.connected("carol").await;
    alice.ok(json!({"op":"create","room":"team","visibility":"private"})).await;
    alice.send("team", "secret", "c-1").await;
    // Outsiders can neither join nor look inside.
    assert_eq!(bob.error(json!({"op":"join","room":"team"})).await, "forbidden");
    assert_eq!(bob.error(json!({"op":"room_info","room":"team"})).await, "forbidden");
    assert_eq!(bob.error(json!({"op":"members","room":"team"})).await, "forbidden");
    assert_eq!(bob.error(json!({"op":"history","room":"team"})).await, "not_member");
    assert_eq!(alice.error(json!({"op":"invite","room":"team","user":"nobody"})).await, "not_found");
    // The invitation reaches bob, who is not a member, and his room list.
    alice.ok(json!({"op":"invite","room":"team","user":"bob"})).await;
    let invited = member_event(&mut bob, "invite", "bob").await;
    assert_eq!(invited, json!({"ev":"member","room":"team","user":"bob","action":"invite","by":"alice"}));
    assert_eq!(member_event(&mut alice, "invite", "bob").await["by"], "alice", "members see it too");
    let rooms = bob.ok(json!({"op":"rooms"})).await;
    let entry = rooms["rooms"].as_array().unwrap().iter().find(|r| r["room"] == "team").cloned().unwrap();
    assert_eq!((&entry["invited"], &entry["read_seq"]), (&json!(true), &json!(0)));
    assert!(entry["last_seq"].as_u64().unwrap() > 0);
    // Carol was not invited: still forbidden; bob joins and reads.
    assert_eq!(carol.error(json!({"op":"join","room":"team"})).await, "forbidden");
    bob.join("team").await;
    assert_eq!(member_event(&mut alice, "join", "bob").await["room"], "team");
    let h = bob.ok(json!({"op":"history","room":"team"})).await;
    assert_eq!(h["messages"][0]["text"], "secret");
    let rooms = bob.ok(json!({"op":"rooms"})).await;
    let entry = rooms["rooms"].as_array().unwrap().iter().find(|r| r["room"] == "team").cloned().unwrap();
    assert!(entry.get("invited").is_none(), "a member's entry has no `invited`: {entry}");
    // A plain member may not invite to a private room; in a public one anyone may.
    assert_eq!(bob.error(json!({"op":"invite","room":"team","user":"carol"})).await, "forbidden");
    bob.join("open").await;
    bob.ok(json!({"op":"invite","room":"open","user":"carol"})).await;
    assert_eq!(member_event(&mut carol, "invite", "carol").await["by"], "bob");
    // The invitation was used up: after leaving, bob needs a new one.
    bob.ok(json!({"op":"leave","room":"team"})).await;
    assert_eq!(bob.error(json!({"op":"join","room":"team"})).await, "forbidden");
    let members = alice.ok(json!({"op":"members","room":"team"})).await;
    assert_eq!(users(&members["members"]), [("alice".to_owned(), "owner".to_owned())]);
}

async fn a_kicked_member_loses_the_room_at_once_and_a_banned_one_stays_out(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let bob_token = s.user("bob").await;
    let mut bob = s.connect(&bob_token).await;
    let mut carol = s.connected("carol").await;
    alice.join("r").await;
    bob.join("r").await;
    carol.join("r").await;
    bob.send("r", "hi", "b-1").await;
    // A plain member moderates nobody, and nobody moderates the owner.
    assert_eq!(carol.error(json!({"op":"kick","room":"r","user":"bob"})).await, "forbidden");
    assert_eq!(carol.error(json!({"op":"mute","room":"r","user":"bob"})).await, "forbidden");
    assert_eq!(carol.error(json!({"op":"ban","room":"r","user":"bob"})).await, "forbidden");
    assert_eq!(alice.error(json!({"op":"kick","room":"r","user":"dave"})).await, "not_member");
    alice.ok(json!({"op":"kick","room":"r","user":"bob","reason":"spam"})).await;
    let kicked = json!({"ev":"member","room":"r","user":"bob","action":"kick","by":"alice","reason":"spam"});
    assert_eq!(member_event(&mut bob, "kick", "bob").await, kicked, "the kicked user is told");
    assert_eq!(member_event(&mut carol, "kick", "bob").await, kicked);
    bob.take_events(); // what came before the kick
    for req in [
        json!({"op":"history","room":"r"}),
        json!({"op":"sync","rooms":{"r":0}}),
        json!({"op":"presence","room":"r"}),
        json!({"op":"send","room":"r","text":"still here?","cid":"b-2"}),
    ] {
        assert_eq!(bob.error(req).await, "not_member");
    }
    let (status, body) = s.get("/v1/rooms/r/messages", Some(&bob_token)).await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("not_member")));
    let away = alice.send("r", "while bob is away", "a-1").await;
    // Kicked from a public room, bob may come back; the room's events are in
    // order, so a message sent while he was away would have reached him
    // before his own join.
    let back = bob.join("r").await;
    assert!(back["last_seq"].as_u64() >= away["seq"].as_u64());
    member_event(&mut bob, "join", "bob").await;
    let before_join: Vec<Value> = bob.take_events();
    assert!(!before_join.iter().any(|e| e["ev"] == "msg"), "no message of the room while kicked: {before_join:?}");
    // A ban keeps him out, and out of invitations, until lifted.
    alice.ok(json!({"op":"ban","room":"r","user":"bob"})).await;
    assert_eq!(member_event(&mut bob, "ban", "bob").await["by"], "alice");
    assert_eq!(bob.error(json!({"op":"join","room":"r"})).await, "forbidden");
    assert_eq!(carol.error(json!({"op":"invite","room":"r","user":"bob"})).await, "forbidden");
    assert_eq!(bob.error(json!({"op":"history","room":"r"})).await, "not_member");
    alice.ok(json!({"op":"ban","room":"r","user":"dave"})).await;
    assert_eq!(member_event(&mut carol, "ban", "dave").await["by"], "alice", "a non-member can be banned");
    alice.ok(json!({"op":"unban","room":"r","user":"bob"})).await;
    assert_eq!(member_event(&mut carol, "unban", "bob").await["by"], "alice");
    bob.join("r").await;
    // Carol, untouched throughout, still sends and reads.
    carol.send("r", "all good", "c-1").await;
    let h = carol.ok(json!({"op":"history","room":"r"})).await;
    assert_eq!(h["messages"].as_array().unwrap().last().unwrap()["text"], "all good");
}

async fn roles_keep_exactly_one_owner(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    let mut carol = s.connected("carol").await;
    alice.ok(json!({"op":"create","room":"r"})).await;
    bob.join("r").await;
    carol.join("r").await;
    assert_eq!(bob.error(json!({"op":"set_role","room":"r","user":"carol","role":"admin"})).await, "forbidden");
    alice.ok(json!({"op":"set_role","room":"r","user":"bob","role":"admin"})).await;
    let made = json!({"ev":"member","room":"r","user":"bob","action":"role","role":"admin","by":"alice"});
    assert_eq!(member_event(&mut carol, "role", "bob").await, made);
    // An admin moderates members, not admins nor the owner, and sets no roles.
    assert_eq!(bob.error(json!({"op":"set_role","room":"r","user":"carol","role":"admin"})).await, "forbidden");
    assert_eq!(bob.error(json!({"op":"kick","room":"r","user":"alice"})).await, "forbidden");
    assert_eq!(alice.error(json!({"op":"set_role","room":"r","user":"alice","role":"member"})).await, "bad_request");
    assert_eq!(alice.error(json!({"op":"set_role","room":"r","user":"dave","role":"admin"})).await, "not_member");
    assert_eq!(alice.error(json!({"op":"leave","room":"r"})).await, "forbidden", "the owner hands over first");
    // Handing ownership over makes the old owner an admin.
    alice.ok(json!({"op":"set_role","room":"r","user":"bob","role":"owner"})).await;
    assert_eq!(member_event(&mut carol, "role", "bob").await["role"], "owner");
    assert_eq!(member_event(&mut carol, "role", "alice").await["role"], "admin");
    let members = carol.ok(json!({"op":"members","room":"r"})).await;
    let want = [("alice", "admin"), ("bob", "owner"), ("carol", "member")].map(|(u, r)| (u.to_owned(), r.to_owned()));
    assert_eq!(users(&members["members"]), want);
    assert_eq!(alice.error(json!({"op":"kick","room":"r","user":"bob"})).await, "forbidden");
    assert_eq!(alice.error(json!({"op":"set_role","room":"r","user":"carol","role":"admin"})).await, "forbidden");
    let info = alice.ok(json!({"op":"room_info","room":"r"})).await;
    assert_eq!(info["role"], "admin");
    // The new owner demotes the old; alice, a member again, may leave.
    bob.ok(json!({"op":"set_role","room":"r","user":"alice","role":"member"})).await;
    assert_eq!(member_event(&mut carol, "role", "alice").await["role"], "member");
    alice.ok(json!({"op":"leave","room":"r"})).await;
}

async fn a_muted_member_reads_but_cannot_send(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    alice.join("r").await;
    bob.join("r").await;
    alice.ok(json!({"op":"mute","room":"r","user":"bob"})).await;
    assert_eq!(
        member_event(&mut bob, "mute", "bob").await,
        json!({"ev":"member","room":"r","user":"bob","action":"mute","by":"alice"})
    );
    assert_eq!(bob.error(json!({"op":"send","room":"r","text":"let me speak","cid":"b-1"})).await, "forbidden");
    alice.send("r", "quiet please", "a-1").await;
    let h = bob.ok(json!({"op":"history","room":"r"})).await;
    assert_eq!(
        h["messages"].as_array().unwrap().iter().map(|m| &m["text"]).collect::<Vec<_>>(),
        [&json!("quiet please")]
    );
    alice.ok(json!({"op":"unmute","room":"r","user":"bob"})).await;
    assert_eq!(member_event(&mut bob, "unmute", "bob").await["by"], "alice");
    bob.send("r", "thanks", "b-2").await;
    // A mute that has already ended holds back nothing; one in the future does.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    alice.ok(json!({"op":"mute","room":"r","user":"bob","until": now - 10})).await;
    bob.send("r", "past mute", "b-3").await;
    alice.ok(json!({"op":"mute","room":"r","user":"bob","until": now + 3600})).await;
    assert_eq!(member_event(&mut bob, "mute", "bob").await["until"], json!(now - 10));
    assert_eq!(member_event(&mut bob, "mute", "bob").await["until"], json!(now + 3600));
    assert_eq!(bob.error(json!({"op":"send","room":"r","text":"x","cid":"b-4"})).await, "forbidden");
}

async fn room_settings_members_and_the_directory(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let mut bob = s.connected("bob").await;
    alice.ok(json!({"op":"create","room":"dir-rust","name":"Rustaceans"})).await;
    alice.ok(json!({"op":"create","room":"dir-secret","visibility":"private","name":"Rust insiders"})).await;
    alice.ok(json!({"op":"create","room":"dir-gophers","name":"Go"})).await;
    bob.join("dir-rust").await;
    assert_eq!(bob.error(json!({"op":"update_room","room":"dir-rust","topic":"mine"})).await, "forbidden");
    alice.ok(json!({"op":"update_room","room":"dir-rust","topic":"Ferris"})).await;
    let ev = bob.next_event("room").await;
    assert_eq!(
        ev,
        json!({"ev":"room","room":"dir-rust","name":"Rustaceans","topic":"Ferris","visibility":"public","by":"alice"})
    );
    // Public rooms only, matched on id or name, whatever the case.
    let d = bob.ok(json!({"op":"directory","query":"RUST"})).await;
    assert_eq!(rooms_named(&d["rooms"]), ["dir-rust"]);
    assert_eq!(d["rooms"][0], json!({"room":"dir-rust","name":"Rustaceans","topic":"Ferris","members":2}));
    let d = bob.ok(json!({"op":"directory","query":"GO"})).await;
    assert_eq!(rooms_named(&d["rooms"]), ["dir-gophers"]);
    // Other tests' and the cluster's own public rooms may be listed too: page
    // through this test's.
    let page = bob.ok(json!({"op":"directory","query":"dir-","limit":1})).await;
    assert_eq!(rooms_named(&page["rooms"]), ["dir-gophers"]);
    let rest = bob.ok(json!({"op":"directory","query":"dir-","after":page["next"],"limit":5})).await;
    assert_eq!(rooms_named(&rest["rooms"]), ["dir-rust"]);
    assert!(rest.get("next").is_none());
    // Private again: out of the directory, members only.
    alice.ok(json!({"op":"update_room","room":"dir-rust","visibility":"private"})).await;
    assert_eq!(bob.next_event("room").await["visibility"], "private");
    let d = bob.ok(json!({"op":"directory","query":"rust"})).await;
    assert!(d["rooms"].as_array().unwrap().is_empty(), "{d}");
    assert_eq!(bob.ok(json!({"op":"room_info","room":"dir-rust"})).await["visibility"], "private");
    // Members, a page at a time, by name.
    for name in ["dave", "erin", "frank"] {
        let mut c = s.connected(name).await;
        c.join("dir-gophers").await;
    }
    let first = bob.ok(json!({"op":"members","room":"dir-gophers","limit":2})).await;
    assert_eq!(users(&first["members"]).iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>(), ["alice", "dave"]);
    assert_eq!(first["next"], "dave");
    let second = bob.ok(json!({"op":"members","room":"dir-gophers","after":"dave","limit":2})).await;
    assert_eq!(users(&second["members"]).iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>(), ["erin", "frank"]);
    assert!(second.get("next").is_none(), "{second}");
    assert_eq!(bob.error(json!({"op":"members","room":"dir-gophers","limit":1001})).await, "bad_request");
}

/// `room_info` and the directory show the count the room's dispatcher keeps
/// with every membership change: exact through a leave, a kick, a ban, a
/// refused join and an account's deletion.
async fn the_member_count_stays_exact_through_leaves_kicks_bans_and_deletions(s: TestServer) {
    let mut owner = s.connected("owner").await;
    owner.ok(json!({"op":"create","room":"count-r","name":"Counted"})).await;
    let dan_token = s.user("dan").await;
    let mut others = Vec::new();
    for name in ["amy", "bob", "cat"] {
        let mut c = s.connected(name).await;
        c.join("count-r").await;
        others.push(c);
    }
    let mut dan = s.connect(&dan_token).await;
    dan.join("count-r").await;
    let mut outsider = s.connected("zoe").await;
    let counts = |info: &Value, dir: &Value| {
        let listed = dir["rooms"].as_array().unwrap().iter().find(|r| r["room"] == "count-r").cloned();
        (info["members"].as_u64().unwrap(), listed.map(|r| r["members"].as_u64().unwrap()))
    };
    let mut check = async |want: u64| {
        let info = outsider.ok(json!({"op":"room_info","room":"count-r"})).await;
        let dir = outsider.ok(json!({"op":"directory","query":"count-r"})).await;
        assert_eq!(counts(&info, &dir), (want, Some(want)), "{info} {dir}");
    };
    check(5).await;
    others[0].ok(json!({"op":"leave","room":"count-r"})).await;
    check(4).await;
    owner.ok(json!({"op":"kick","room":"count-r","user":"bob"})).await;
    check(3).await;
    owner.ok(json!({"op":"ban","room":"count-r","user":"cat"})).await;
    check(2).await;
    assert_eq!(others[2].error(json!({"op":"join","room":"count-r"})).await, "forbidden");
    owner.ok(json!({"op":"ban","room":"count-r","user":"nobody-here"})).await;
    check(2).await;
    // Dan deletes his account: he leaves every room.
    let url = format!("{}/v1/account", s.https[0]);
    let r = s.client.delete(url).bearer_auth(&dan_token).json(&json!({"password":"password-123"})).send().await;
    assert_eq!(r.unwrap().status().as_u16(), 200);
    owner.event(|e| e["ev"] == "member" && e["user"] == "dan" && e["action"] == "leave").await;
    check(1).await;
    others[1].join("count-r").await;
    check(2).await;
    let members = owner.ok(json!({"op":"members","room":"count-r"})).await;
    assert_eq!(users(&members["members"]).len(), 2);
}

/// Bob sends while alice kicks him, from two gateways (on the cluster).
/// Whichever the room's log holds first wins, and every device agrees on
/// whether the message exists: the sender's reply, the other members'
/// events, the kicked user's own second device and the room's history.
async fn a_kick_racing_a_send_is_decided_the_same_everywhere(s: TestServer) {
    let mut alice = s.connected("alice").await;
    let bob_token = s.user("bob").await;
    let mut bob = s.connect(&bob_token).await;
    let mut bob_phone = s.connect(&bob_token).await;
    let mut carol = s.connected("carol").await;
    let mut outcomes = Vec::new();
    for round in 0..6 {
        let room = format!("race-{round}");
        alice.join(&room).await;
        bob.join(&room).await;
        carol.join(&room).await;
        member_event(&mut bob_phone, "join", "bob").await;
        for c in [&mut alice, &mut carol] {
            member_event(c, "join", "carol").await;
        }
        let cid = format!("race-{round}");
        let send = json!({"id":"s","op":"send","room":room,"text":"racing","cid":cid});
        let kick = json!({"id":"k","op":"kick","room":room,"user":"bob"});
        // Both go out before either reply is read; which is first differs by round.
        if round % 2 == 0 {
            bob.send_text(&send.to_string()).await;
            alice.send_text(&kick.to_string()).await;
        } else {
            alice.send_text(&kick.to_string()).await;
            bob.send_text(&send.to_string()).await;
        }
        assert_eq!(alice.reply_to(json!("k")).await["ok"], true);
        let reply = bob.reply_to(json!("s")).await;
        let stored = reply["ok"] == true;
        if !stored {
            assert_eq!(reply["error"]["code"], "not_member", "{reply}");
        }
        // Every device sees the kick; a stored message came before it.
        for (who, c) in
            [("alice", &mut alice), ("carol", &mut carol), ("bob", &mut bob), ("bob's phone", &mut bob_phone)]
        {
            member_event(c, "kick", "bob").await;
            let saw = c.take_events().iter().any(|e| e["ev"] == "msg" && e["cid"] == cid.as_str());
            assert_eq!(saw, stored, "{who} in round {round}");
        }
        let h = carol.ok(json!({"op":"history","room":room})).await;
        let in_history = h["messages"].as_array().unwrap().iter().any(|m| m["cid"] == cid.as_str());
        assert_eq!(in_history, stored, "history in round {round}");
        outcomes.push(stored);
    }
    eprintln!("send stored before the kick, by round: {outcomes:?}");
}

on_every_mode!(
    create_makes_the_creator_the_owner_and_a_room_is_created_once,
    a_private_room_is_joined_by_invitation_only,
    a_kicked_member_loses_the_room_at_once_and_a_banned_one_stays_out,
    roles_keep_exactly_one_owner,
    a_muted_member_reads_but_cannot_send,
    room_settings_members_and_the_directory,
    the_member_count_stays_exact_through_leaves_kicks_bans_and_deletions,
    a_kick_racing_a_send_is_decided_the_same_everywhere,
);
