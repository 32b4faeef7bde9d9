//! The TypeScript SDK's wire types are generated from this crate's types
//! (ts-rs reads their serde attributes), so the SDK cannot drift from the
//! server. Two files are committed in `web/sdk/`:
//!
//! * `src/protocol.gen.ts`: one declaration per type; the SDK's
//!   `protocol.ts` builds on it, so `tsc` rejects SDK code that uses a field
//!   the server does not send.
//! * `test/frames.gen.ts`: real frames, encoded by the server's own code (or,
//!   for requests, accepted by its decoder), each checked by `tsc` with
//!   `satisfies` against the generated types: a serde attribute that ts-rs
//!   misread fails the web type check.
//!
//! The tests below fail when a committed file differs from what the types
//! give now; `UPDATE_EXPECT=1 cargo test -p confab-protocol typescript`
//! rewrites them.

use std::collections::BTreeMap;

use expect_test::expect_file;
use ts_rs::{Config, TS};

use crate::error::HttpErrorBody;
use crate::event::{ReplyBody, SyncRoom};
use crate::rooms::{DirectoryEntry, MemberEntry, Role, Visibility};
use crate::{
    ByeReason, ErrorCode, Event, MemberAction, Message, Profile, ProtocolError, Reply, Request, RequestId, RoomInfo,
};

const HEADER: &str = "// Generated from the Rust types of confab-protocol (protocol/src) by its
// `typescript` tests; do not edit. Regenerate with
// UPDATE_EXPECT=1 cargo test -p confab-protocol typescript
";

/// JSON numbers: seqs and timestamps stay far below 2^53.
fn config() -> Config {
    Config::new().with_large_int("number")
}

fn declare<T: TS>(out: &mut String) {
    let cfg = config();
    out.push('\n');
    if let Some(docs) = T::docs() {
        out.push_str(&docs);
    }
    out.push_str("export ");
    out.push_str(&T::decl(&cfg));
    out.push('\n');
}

#[test]
fn typescript_declarations_match_the_sdk() {
    let mut out = String::from(HEADER);
    declare::<RequestId>(&mut out);
    declare::<crate::Op>(&mut out);
    declare::<ErrorCode>(&mut out);
    declare::<ProtocolError>(&mut out);
    declare::<HttpErrorBody>(&mut out);
    declare::<crate::lifecycle::Reaction>(&mut out);
    declare::<crate::Attachment>(&mut out);
    declare::<crate::lifecycle::Version>(&mut out);
    declare::<Message>(&mut out);
    declare::<RoomInfo>(&mut out);
    declare::<SyncRoom>(&mut out);
    declare::<ReplyBody>(&mut out);
    declare::<Reply>(&mut out);
    declare::<MemberAction>(&mut out);
    declare::<Visibility>(&mut out);
    declare::<Role>(&mut out);
    declare::<MemberEntry>(&mut out);
    declare::<DirectoryEntry>(&mut out);
    declare::<Profile>(&mut out);
    declare::<crate::ContactStatus>(&mut out);
    declare::<crate::ContactEntry>(&mut out);
    declare::<ByeReason>(&mut out);
    declare::<crate::NotifyLevel>(&mut out);
    declare::<Event>(&mut out);
    expect_file!["../../web/sdk/src/protocol.gen.ts"].assert_eq(&out);
}

fn message(seq: u64, from: &str, text: &str) -> Message {
    Message {
        room: "general".into(),
        seq,
        msg_id: crate::message::msg_id(3, seq - 1),
        from: from.into(),
        text: text.into(),
        ts: 1_767_225_600_000 + seq,
        cid: format!("c-{seq}"),
        ..Message::default()
    }
}

fn reply(id: RequestId, body: ReplyBody) -> String {
    Reply::ok(Some(id), body).encode()
}

/// `export const NAME = { key: frame, ... } satisfies Record<string, TYPE>;`
fn constant(out: &mut String, doc: &str, name: &str, ty: &str, frames: &[(&str, String)]) {
    out.push_str(&format!("\n/** {doc} */\nexport const {name} = {{\n"));
    for (key, frame) in frames {
        out.push_str(&format!("  {key}: {frame},\n"));
    }
    out.push_str(&format!("}} satisfies Record<string, {ty}>;\n"));
}

#[test]
fn real_frames_match_the_sdk_fixture() {
    let requests = [
        ("ping", r#"{"op":"ping","id":1}"#),
        ("join", r#"{"op":"join","id":2,"room":"general"}"#),
        ("leave", r#"{"op":"leave","id":3,"room":"general"}"#),
        ("rooms", r#"{"op":"rooms","id":4}"#),
        ("send", r#"{"op":"send","id":5,"room":"general","text":"hello","cid":"c-5"}"#),
        ("send_dm", r#"{"op":"send","id":"dm-6","to":"bob","text":"psst","cid":"c-6"}"#),
        ("history", r#"{"op":"history","id":7,"room":"general","before":42,"limit":20}"#),
        ("history_newest", r#"{"op":"history","id":8,"room":"general"}"#),
        ("sync", r#"{"op":"sync","id":9,"rooms":{"general":40,"dm:alice:bob":0},"limit":100}"#),
        ("typing", r#"{"op":"typing","id":10,"room":"general"}"#),
        ("read", r#"{"op":"read","id":11,"room":"general","seq":42}"#),
        ("presence", r#"{"op":"presence","id":12,"room":"dm:alice:bob"}"#),
        ("create", r#"{"op":"create","id":20,"room":"team","visibility":"private","name":"The team"}"#),
        ("invite", r#"{"op":"invite","id":21,"room":"team","user":"bob"}"#),
        ("kick", r#"{"op":"kick","id":22,"room":"team","user":"dave","reason":"spam"}"#),
        ("ban", r#"{"op":"ban","id":23,"room":"team","user":"dave"}"#),
        ("unban", r#"{"op":"unban","id":24,"room":"team","user":"dave"}"#),
        ("mute", r#"{"op":"mute","id":25,"room":"team","user":"dave","until":1767229200}"#),
        ("unmute", r#"{"op":"unmute","id":26,"room":"team","user":"dave"}"#),
        ("set_role", r#"{"op":"set_role","id":27,"room":"team","user":"bob","role":"owner"}"#),
        ("update_room", r#"{"op":"update_room","id":28,"room":"team","topic":"Ship it"}"#),
        ("room_info", r#"{"op":"room_info","id":29,"room":"team"}"#),
        ("members", r#"{"op":"members","id":30,"room":"team","after":"alice","limit":2}"#),
        ("directory", r#"{"op":"directory","id":31,"query":"rust","limit":10}"#),
        ("profile", r#"{"op":"profile","id":33,"display_name":"Alice Liddell","avatar":"https://example.com/a.png"}"#),
        ("users", r#"{"op":"users","id":34,"users":["alice","nobody"]}"#),
        ("contact_add", r#"{"op":"contact_add","id":42,"user":"bob"}"#),
        ("contact_remove", r#"{"op":"contact_remove","id":43,"user":"bob"}"#),
        ("contacts", r#"{"op":"contacts","id":44}"#),
        ("block", r#"{"op":"block","id":45,"user":"mallory"}"#),
        ("unblock", r#"{"op":"unblock","id":46,"user":"mallory"}"#),
        ("blocks", r#"{"op":"blocks","id":47}"#),
        ("send_reply", r#"{"op":"send","id":35,"room":"general","text":"yes","cid":"c-35","reply_to":41}"#),
        ("sync_changes", r#"{"op":"sync","id":36,"rooms":{"general":40},"changes":{"general":38}}"#),
        ("edit", r#"{"op":"edit","id":37,"room":"general","seq":41,"text":"hey!"}"#),
        ("edits", r#"{"op":"edits","id":38,"room":"general","seq":41}"#),
        ("delete", r#"{"op":"delete","id":39,"room":"general","seq":41}"#),
        ("react", r#"{"op":"react","id":40,"room":"general","seq":41,"emoji":"👍"}"#),
        ("react_remove", r#"{"op":"react","id":41,"room":"general","seq":41,"emoji":"👍","remove":true}"#),
        ("notify", r#"{"op":"notify","id":48,"room":"general","level":"mentions"}"#),
        ("update_room_retention", r#"{"op":"update_room","id":49,"room":"team","retention_days":30}"#),
        ("without_id", r#"{"op":"ping"}"#),
    ]
    .map(|(name, frame)| {
        Request::decode(frame, 4096).unwrap_or_else(|e| panic!("the server refuses {name}: {e:?}"));
        (name, frame.to_owned())
    });

    let int = RequestId::Int;
    let general = |last_seq, read_seq| RoomInfo {
        room: "general".into(),
        last_seq,
        read_seq,
        unread: 2,
        mentions: 1,
        notify: crate::NotifyLevel::Mentions,
        ..RoomInfo::default()
    };
    let dm = RoomInfo { room: "dm:alice:bob".into(), last_seq: 8, read_seq: 7, unread: 1, ..RoomInfo::default() };
    let invitation = RoomInfo { room: "team".into(), last_seq: 3, read_seq: 0, invited: true, ..RoomInfo::default() };
    let replies = [
        ("ping", reply(int(1), ReplyBody::Empty {})),
        ("join", reply(int(2), ReplyBody::Join { room: "general".into(), last_seq: 41 })),
        ("leave", reply(int(3), ReplyBody::Empty {})),
        ("rooms", reply(int(4), ReplyBody::Rooms { rooms: vec![general(42, 40), dm, invitation] })),
        (
            "send",
            reply(
                int(5),
                ReplyBody::Send { room: "general".into(), seq: 42, msg_id: "3-29".into(), ts: 1_767_225_600_042 },
            ),
        ),
        (
            "send_dm",
            reply(
                RequestId::Str("dm-6".into()),
                ReplyBody::Send { room: "dm:alice:bob".into(), seq: 8, msg_id: "1-7".into(), ts: 1_767_225_600_008 },
            ),
        ),
        (
            "history",
            reply(
                int(7),
                ReplyBody::Messages {
                    messages: vec![message(40, "bob", "hi"), message(41, "alice", "hey")],
                    more: None,
                },
            ),
        ),
        (
            "sync",
            reply(
                int(9),
                ReplyBody::Sync {
                    rooms: BTreeMap::from([
                        (
                            "general".into(),
                            SyncRoom {
                                messages: vec![message(41, "alice", "hey")],
                                more: true,
                                changed: None,
                                change_pos: None,
                                changes_more: None,
                            },
                        ),
                        (
                            "dm:alice:bob".into(),
                            SyncRoom {
                                messages: vec![],
                                more: false,
                                changed: None,
                                change_pos: None,
                                changes_more: None,
                            },
                        ),
                    ]),
                },
            ),
        ),
        ("typing", reply(int(10), ReplyBody::Empty {})),
        ("read", reply(int(11), ReplyBody::Empty {})),
        ("presence", reply(int(12), ReplyBody::Presence { online: vec!["alice".into(), "bob".into()] })),
        ("create", reply(int(20), ReplyBody::Join { room: "team".into(), last_seq: 0 })),
        ("invite", reply(int(21), ReplyBody::Empty {})),
        ("kick", reply(int(22), ReplyBody::Empty {})),
        ("ban", reply(int(23), ReplyBody::Empty {})),
        ("unban", reply(int(24), ReplyBody::Empty {})),
        ("mute", reply(int(25), ReplyBody::Empty {})),
        ("unmute", reply(int(26), ReplyBody::Empty {})),
        ("set_role", reply(int(27), ReplyBody::Empty {})),
        ("update_room", reply(int(28), ReplyBody::Empty {})),
        (
            "room_info",
            reply(
                int(29),
                ReplyBody::RoomInfo {
                    room: "team".into(),
                    name: "The team".into(),
                    topic: "".into(),
                    visibility: Visibility::Private,
                    members: 2,
                    role: Some(Role::Admin),
                    retention_days: Some(30),
                },
            ),
        ),
        (
            "room_info_outsider",
            reply(
                int(29),
                ReplyBody::RoomInfo {
                    room: "rust".into(),
                    name: "Rustaceans".into(),
                    topic: "".into(),
                    visibility: Visibility::Public,
                    members: 42,
                    role: None,
                    retention_days: None,
                },
            ),
        ),
        (
            "members",
            reply(
                int(30),
                ReplyBody::Members {
                    members: vec![
                        MemberEntry { user: "bob".into(), role: Role::Owner },
                        MemberEntry { user: "carol".into(), role: Role::Member },
                    ],
                    next: Some("carol".into()),
                },
            ),
        ),
        (
            "directory",
            reply(
                int(31),
                ReplyBody::Directory {
                    rooms: vec![DirectoryEntry {
                        room: "rust".into(),
                        name: "Rustaceans".into(),
                        topic: "".into(),
                        members: 42,
                    }],
                    next: None,
                },
            ),
        ),
        (
            "profile",
            reply(
                int(33),
                ReplyBody::Profile {
                    user: "alice".into(),
                    display_name: "Alice Liddell".into(),
                    avatar: "https://example.com/a.png".into(),
                    bot: false,
                },
            ),
        ),
        (
            "users",
            reply(
                int(34),
                ReplyBody::Users {
                    users: vec![
                        Profile {
                            user: "alice".into(),
                            display_name: "Alice Liddell".into(),
                            avatar: "".into(),
                            bot: false,
                        },
                        Profile { user: "helper".into(), display_name: "Helper".into(), avatar: "".into(), bot: true },
                    ],
                },
            ),
        ),
        (
            "contact_add",
            reply(int(42), ReplyBody::Contact { user: "bob".into(), status: crate::ContactStatus::PendingOut }),
        ),
        (
            "contacts",
            reply(
                int(44),
                ReplyBody::Contacts {
                    contacts: vec![
                        crate::ContactEntry { user: "bob".into(), status: crate::ContactStatus::Mutual, online: true },
                        crate::ContactEntry {
                            user: "carol".into(),
                            status: crate::ContactStatus::PendingIn,
                            online: false,
                        },
                    ],
                },
            ),
        ),
        ("contact_remove", reply(int(43), ReplyBody::Empty {})),
        ("block", reply(int(45), ReplyBody::Empty {})),
        ("unblock", reply(int(46), ReplyBody::Empty {})),
        ("blocks", reply(int(47), ReplyBody::Blocked { blocked: vec!["mallory".into()] })),
        (
            "sync_changes",
            reply(
                int(36),
                ReplyBody::Sync {
                    rooms: BTreeMap::from([(
                        "general".into(),
                        SyncRoom {
                            messages: vec![],
                            more: false,
                            changed: Some(vec![Message {
                                text: "hey!".into(),
                                edited_ts: Some(1_767_225_600_050),
                                reply_to: Some(40),
                                reactions: vec![crate::lifecycle::Reaction {
                                    emoji: "👍".into(),
                                    count: 2,
                                    users: vec!["alice".into(), "bob".into()],
                                }],
                                ..message(39, "alice", "hey")
                            }]),
                            change_pos: Some(45),
                            changes_more: None,
                        },
                    )]),
                },
            ),
        ),
        ("edit", reply(int(37), ReplyBody::Changed { room: "general".into(), seq: 41 })),
        (
            "edits",
            reply(
                int(38),
                ReplyBody::Edits {
                    versions: vec![crate::lifecycle::Version { text: "hey".into(), ts: 1_767_225_600_041 }],
                },
            ),
        ),
        ("delete", reply(int(39), ReplyBody::Changed { room: "general".into(), seq: 41 })),
        ("react", reply(int(40), ReplyBody::Changed { room: "general".into(), seq: 41 })),
        ("notify", reply(int(42), ReplyBody::Empty {})),
        ("forbidden", Reply::error(Some(int(32)), ProtocolError::new(ErrorCode::Forbidden, "admins only")).encode()),
        ("error", Reply::error(Some(int(13)), ProtocolError::not_member("staff")).encode()),
        (
            "error_without_id",
            Reply::error(None, ProtocolError::bad_request("a request must be a JSON object")).encode(),
        ),
    ];

    let events = [
        (
            "hello",
            Event::Hello {
                user: "alice".into(),
                session: "s-1f".into(),
                server: "confab-1".into(),
                heartbeat_ms: 25_000,
            },
        ),
        ("contact", Event::Contact { user: "bob".into(), status: crate::ContactStatus::Mutual }),
        ("msg", Event::Msg { message: message(42, "bob", "see you"), prev_seq: 41 }),
        (
            "msg_mention",
            Event::Msg {
                message: Message { mentions: vec!["alice".into()], ..message(43, "bob", "@alice look") },
                prev_seq: 42,
            },
        ),
        ("member", Event::member("general", "carol", MemberAction::Join)),
        (
            "member_kick",
            Event::Member {
                room: "general".into(),
                user: "dave".into(),
                action: MemberAction::Kick,
                by: Some("carol".into()),
                reason: Some("spam".into()),
                role: None,
                until: None,
            },
        ),
        (
            "member_role",
            Event::Member {
                room: "team".into(),
                user: "bob".into(),
                action: MemberAction::Role,
                by: Some("alice".into()),
                reason: None,
                role: Some(Role::Owner),
                until: None,
            },
        ),
        (
            "member_mute",
            Event::Member {
                room: "team".into(),
                user: "dave".into(),
                action: MemberAction::Mute,
                by: Some("alice".into()),
                reason: None,
                role: None,
                until: Some(1_767_229_200),
            },
        ),
        (
            "room",
            Event::Room {
                room: "team".into(),
                name: "The team".into(),
                topic: "Ship it".into(),
                visibility: Visibility::Private,
                by: "alice".into(),
                retention_days: Some(30),
            },
        ),
        ("typing", Event::Typing { room: "general".into(), user: "bob".into() }),
        ("read", Event::Read { room: "general".into(), user: "bob".into(), seq: 42 }),
        ("presence", Event::Presence { user: "bob".into(), online: false }),
        ("bye", Event::Bye { reason: ByeReason::ServerRestart }),
        (
            "edit",
            Event::Edit {
                room: "general".into(),
                seq: 41,
                text: "hey!".into(),
                edited_ts: 1_767_225_600_050,
                by: "alice".into(),
                pos: 44,
                prev_pos: 43,
            },
        ),
        ("delete", Event::Delete { room: "general".into(), seq: 41, by: "alice".into(), pos: 45, prev_pos: 44 }),
        (
            "react",
            Event::React {
                room: "general".into(),
                seq: 41,
                emoji: "👍".into(),
                user: "bob".into(),
                remove: false,
                pos: 43,
                prev_pos: 0,
            },
        ),
        (
            "msg_reply",
            Event::Msg { message: Message { reply_to: Some(41), ..message(46, "bob", "yes") }, prev_seq: 42 },
        ),
    ]
    .map(|(name, ev)| (name, ev.encode()));

    let taken = HttpErrorBody { error: ProtocolError::new(ErrorCode::Taken, "the user name 'alice' is taken") };
    let http_errors = [("taken", serde_json::to_string(&taken).expect("serializes"))];

    let mut out = String::from(HEADER);
    out.push_str(
        "\nimport type { HttpErrorBody, Op, Reply, RequestId, ServerEvent } from \"../src/protocol.gen.ts\";\n",
    );
    constant(
        &mut out,
        "Requests the server's decoder accepts, by op.",
        "requests",
        "Op & { id?: RequestId }",
        &requests,
    );
    constant(&mut out, "Replies as the server encodes them, by the op they answer.", "replies", "Reply", &replies);
    constant(&mut out, "Events as the server encodes them, by `ev`.", "events", "ServerEvent", &events);
    constant(&mut out, "HTTP error bodies.", "httpErrors", "HttpErrorBody", &http_errors);
    expect_file!["../../web/sdk/test/frames.gen.ts"].assert_eq(&out);
}
