//! A message's life after it was sent (docs/protocol.md, "Message
//! lifecycle"): `edit`, `delete` and `react`, decided in the room's order
//! like every other record, so every device sees the same history.
//!
//! Each change is at its record's position (`seq_of(offset)`), which it
//! hands to its event as `pos` with the room's previous change as
//! `prev_pos`. A retried change is idempotent by content: an edit to the
//! text the message has, a deletion of a deleted message, a reaction a user
//! already has (or a removal of one they have not) store and tell nothing
//! and are answered `ok`.

use confab_bus::Record;
use confab_protocol::event::ReplyBody;
use confab_protocol::lifecycle::{MAX_EMOJIS_PER_MESSAGE, MAX_VERSIONS, Reaction, Version};
use confab_protocol::message::seq_of;
use confab_protocol::{Audience, Command, ErrorCode, Event, ProtocolError, Reply};
use confab_store::{MessageState, Write};

use super::rooms::forbidden;
use super::{Batch, Needs};

/// What a change reads besides its room's state: the actor's standing, the
/// message, and for a reaction whether the user has it already.
pub fn needs(cmd: &Command) -> Needs<'_> {
    match cmd {
        Command::Edit { by, seq, .. } | Command::Delete { by, seq } => {
            Needs { member: Some(by), message: Some(*seq), ..Needs::default() }
        }
        Command::React { user, seq, emoji, .. } => {
            Needs { member: Some(user), message: Some(*seq), reaction: Some((*seq, emoji, user)), ..Needs::default() }
        }
        _ => Needs::default(),
    }
}

fn changed(room: &str, seq: u64) -> Reply {
    Reply::ok(None, ReplyBody::Changed { room: room.into(), seq })
}

impl Batch {
    /// Message `seq` of `room`, stored or sent earlier in the batch.
    pub(super) fn target(&self, room: &str, seq: u64) -> Result<&MessageState, ProtocolError> {
        self.view
            .messages
            .get(&(room.to_owned(), seq))
            .ok_or_else(|| ProtocolError::new(ErrorCode::NotFound, format!("no message {seq} in '{room}'")))
    }

    /// A message that is not deleted, for an edit or a reaction.
    fn live_target(&self, room: &str, seq: u64) -> Result<&MessageState, ProtocolError> {
        let state = self.target(room, seq)?;
        if state.message.deleted {
            return Err(ProtocolError::new(ErrorCode::NotFound, format!("message {seq} in '{room}' was deleted")));
        }
        Ok(state)
    }

    fn check_not_muted(&self, r: &Record, room: &str, user: &str) -> Result<(), ProtocolError> {
        // By the record's acceptance time, so every replay decides alike.
        if self.standing(room, user).is_muted(r.record.ts / 1000) {
            return Err(forbidden(format!("you are muted in '{room}'")));
        }
        Ok(())
    }

    /// Moves the room's last change to `pos` and gives the one before it.
    fn next_change(&mut self, room: &str, pos: u64) -> u64 {
        let state = self.room_mut(room);
        std::mem::replace(&mut state.last_change, pos)
    }

    fn state_mut(&mut self, room: &str, seq: u64) -> &mut MessageState {
        self.view.messages.entry((room.to_owned(), seq)).or_default()
    }

    pub(super) fn edit(&mut self, r: &Record, by: &str, seq: u64, text: &str) -> Result<Reply, ProtocolError> {
        let room = r.record.room.as_str();
        self.require_member(room, by)?;
        self.check_not_muted(r, room, by)?;
        self.check_not_blocked(room, by)?;
        let state = self.live_target(room, seq)?;
        if state.message.from != by {
            return Err(forbidden("only its author edits a message"));
        }
        if state.message.text == text {
            return Ok(changed(room, seq));
        }
        if state.versions as usize >= MAX_VERSIONS {
            return Err(forbidden(format!("a message keeps at most {MAX_VERSIONS} earlier versions")));
        }
        let previous =
            Version { text: state.message.text.clone(), ts: state.message.edited_ts.unwrap_or(state.message.ts) };
        let pos = seq_of(r.offset);
        let edited_ts = r.record.ts;
        self.out.writes.push(Write::Edit { room: room.into(), seq, text: text.into(), edited_ts, previous, at: pos });
        let state = self.state_mut(room, seq);
        state.message.text = text.into();
        state.message.edited_ts = Some(edited_ts);
        state.versions += 1;
        state.change_pos = pos;
        let prev_pos = self.next_change(room, pos);
        let frame = Event::Edit { room: room.into(), seq, text: text.into(), edited_ts, by: by.into(), pos, prev_pos };
        self.event(room, Audience::Members, None, frame.encode());
        Ok(changed(room, seq))
    }

    pub(super) fn delete(&mut self, r: &Record, by: &str, seq: u64) -> Result<Reply, ProtocolError> {
        let room = r.record.room.as_str();
        self.require_member(room, by)?;
        let state = self.target(room, seq)?;
        if state.message.from != by && !self.standing(room, by).role.moderates() {
            return Err(forbidden(format!("only its author or an admin or owner of '{room}' deletes a message")));
        }
        if state.message.deleted {
            return Ok(changed(room, seq));
        }
        let pos = seq_of(r.offset);
        let uploads: Vec<String> = state.message.attachments.iter().map(|a| a.id.clone()).collect();
        self.out.writes.push(Write::Delete { room: room.into(), seq, at: pos });
        if !uploads.is_empty() {
            self.out.writes.push(Write::DropUploads { room: room.into(), ids: uploads, at: pos });
        }
        let state = self.state_mut(room, seq);
        state.message.attachments.clear();
        state.message.text.clear();
        state.message.edited_ts = None;
        state.message.deleted = true;
        state.message.reactions.clear();
        state.versions = 0;
        state.change_pos = pos;
        self.view.reacted.retain(|(r, s, _, _)| !(r == room && *s == seq));
        let prev_pos = self.next_change(room, pos);
        let frame = Event::Delete { room: room.into(), seq, by: by.into(), pos, prev_pos };
        self.event(room, Audience::Members, None, frame.encode());
        Ok(changed(room, seq))
    }

    pub(super) fn react(
        &mut self,
        r: &Record,
        user: &str,
        seq: u64,
        emoji: &str,
        remove: bool,
    ) -> Result<Reply, ProtocolError> {
        let room = r.record.room.as_str();
        self.require_member(room, user)?;
        self.check_not_muted(r, room, user)?;
        self.check_not_blocked(room, user)?;
        let state = self.live_target(room, seq)?;
        let key = (room.to_owned(), seq, emoji.to_owned(), user.to_owned());
        if self.view.reacted.contains(&key) != remove {
            return Ok(changed(room, seq)); // already as asked
        }
        let known = state.message.reactions.iter().any(|x| x.emoji == emoji);
        if !remove && !known && state.message.reactions.len() >= MAX_EMOJIS_PER_MESSAGE {
            return Err(forbidden(format!("a message carries at most {MAX_EMOJIS_PER_MESSAGE} distinct emojis")));
        }
        let pos = seq_of(r.offset);
        self.out.writes.push(Write::React {
            room: room.into(),
            seq,
            emoji: emoji.into(),
            user: user.into(),
            remove,
            at: pos,
        });
        let state = self.state_mut(room, seq);
        state.change_pos = pos;
        // Counts stay exact (the emoji cap reads them); the names are not
        // needed here.
        let reactions = &mut state.message.reactions;
        match reactions.iter().position(|x| x.emoji == emoji) {
            Some(i) if remove => {
                reactions[i].count = reactions[i].count.saturating_sub(1);
                if reactions[i].count == 0 {
                    reactions.remove(i);
                }
            }
            Some(i) => reactions[i].count += 1,
            None if remove => {}
            None => reactions.push(Reaction { emoji: emoji.into(), count: 1, users: vec![user.into()] }),
        }
        if remove {
            self.view.reacted.remove(&key);
        } else {
            self.view.reacted.insert(key);
        }
        let prev_pos = self.next_change(room, pos);
        let frame =
            Event::React { room: room.into(), seq, emoji: emoji.into(), user: user.into(), remove, pos, prev_pos };
        self.event(room, Audience::Members, None, frame.encode());
        Ok(changed(room, seq))
    }
}

#[cfg(test)]
mod tests {
    use confab_protocol::lifecycle::Reaction;
    use confab_protocol::{Message, Role};
    use confab_store::{MemberRecord, MessageState, Write};
    use serde_json::{Value, json};

    use super::super::View;
    use super::super::tests::{events, message, record, replies, room_r, run};
    use super::*;

    /// Room `r` with alice, bob and the admin carol, and alice's message 3.
    fn room() -> View {
        let mut view = room_r(&["alice", "bob", "carol"], 3);
        view.standing.insert(("r".into(), "carol".into()), MemberRecord { role: Role::Admin, muted_until: 0 });
        view.messages
            .insert(("r".into(), 3), MessageState { message: message(2, "r", "alice", "c1"), ..Default::default() });
        view.rooms.get_mut("r").unwrap().last_change = 2;
        view
    }

    fn edit(offset: u64, by: &str, seq: u64, text: &str) -> Record {
        record(offset, "r", Command::Edit { by: by.into(), seq, text: text.into() })
    }

    fn delete(offset: u64, by: &str, seq: u64) -> Record {
        record(offset, "r", Command::Delete { by: by.into(), seq })
    }

    fn react(offset: u64, user: &str, seq: u64, emoji: &str, remove: bool) -> Record {
        record(offset, "r", Command::React { user: user.into(), seq, emoji: emoji.into(), remove })
    }

    fn codes(d: &Decided) -> Vec<Value> {
        replies(d).iter().map(|r| r["error"]["code"].clone()).collect()
    }

    use super::super::Decided;

    #[test]
    fn changes_read_the_message_and_a_reaction_its_users_row() {
        let e = Command::Edit { by: "bob".into(), seq: 3, text: "x".into() };
        assert_eq!(needs(&e), Needs { member: Some("bob"), message: Some(3), ..Needs::default() });
        let r = Command::React { user: "bob".into(), seq: 3, emoji: "👍".into(), remove: false };
        assert_eq!(needs(&r).reaction, Some((3, "👍", "bob")));
    }

    #[test]
    fn an_edit_by_the_author_keeps_the_old_text_and_tells_the_room_with_its_position() {
        let d = run(room(), &[edit(9, "alice", 3, "fixed"), edit(10, "alice", 3, "fixed again")]);
        assert_eq!(
            d.writes[0],
            Write::Edit {
                room: "r".into(),
                seq: 3,
                text: "fixed".into(),
                edited_ts: 1_009,
                previous: Version { text: "text 2".into(), ts: 1_002 },
                at: 10,
            }
        );
        let Write::Edit { previous, .. } = &d.writes[1] else { panic!("{:?}", d.writes) };
        assert_eq!(*previous, Version { text: "fixed".into(), ts: 1_009 }, "the version the first edit wrote");
        assert_eq!(
            events(&d),
            [
                json!({"ev":"edit","room":"r","seq":3,"text":"fixed","edited_ts":1009,"by":"alice","pos":10,"prev_pos":2}),
                json!({"ev":"edit","room":"r","seq":3,"text":"fixed again","edited_ts":1010,"by":"alice","pos":11,"prev_pos":10}),
            ]
        );
        assert_eq!(replies(&d)[0], json!({"re":9,"ok":true,"room":"r","seq":3}));
        assert_eq!(d.rooms["r"].last_change, 11);
    }

    #[test]
    fn only_the_author_edits_and_only_messages_that_exist() {
        let d = run(
            room(),
            &[edit(9, "bob", 3, "mine now"), edit(10, "carol", 3, "admins neither"), edit(11, "alice", 7, "x")],
        );
        assert!(d.writes.is_empty() && events(&d).is_empty());
        assert_eq!(codes(&d), [json!("forbidden"), json!("forbidden"), json!("not_found")]);
        let d = run(room(), &[edit(9, "mallory", 3, "x")]);
        assert_eq!(codes(&d), [json!("not_member")]);
    }

    #[test]
    fn a_retried_change_does_nothing_twice() {
        let d = run(
            room(),
            &[
                edit(9, "alice", 3, "fixed"),
                edit(10, "alice", 3, "fixed"),
                react(11, "bob", 3, "👍", false),
                react(12, "bob", 3, "👍", false),
                react(13, "bob", 3, "🎉", true),
                delete(14, "alice", 3),
                delete(15, "alice", 3),
            ],
        );
        assert_eq!(d.writes.len(), 3, "{:?}", d.writes);
        assert_eq!(events(&d).len(), 3);
        assert!(replies(&d).iter().all(|r| r["ok"] == true && r["seq"] == 3), "{:?}", replies(&d));
    }

    #[test]
    fn the_author_or_a_moderator_deletes_and_the_message_is_gone_for_later_changes() {
        let d = run(room(), &[delete(9, "bob", 3), delete(10, "carol", 3), edit(11, "alice", 3, "x")]);
        assert_eq!(codes(&d), [json!("forbidden"), Value::Null, json!("not_found")]);
        assert_eq!(d.writes, [Write::Delete { room: "r".into(), seq: 3, at: 11 }]);
        assert_eq!(events(&d), [json!({"ev":"delete","room":"r","seq":3,"by":"carol","pos":11,"prev_pos":2})]);
        let d = run(room(), &[delete(9, "alice", 3), react(10, "bob", 3, "👍", false)]);
        assert_eq!(codes(&d), [Value::Null, json!("not_found")]);
    }

    #[test]
    fn a_reaction_is_one_per_user_and_emoji_and_new_emojis_are_capped() {
        let mut view = room();
        let reactions = (0..20).map(|i| Reaction { emoji: format!("e{i}"), count: 1, users: vec!["x".into()] });
        view.messages.get_mut(&("r".into(), 3)).unwrap().message.reactions = reactions.collect();
        view.reacted.insert(("r".into(), 3, "e0".into(), "bob".into()));
        let d = run(
            view,
            &[
                react(9, "bob", 3, "👍", false),
                react(10, "bob", 3, "e1", false),
                react(11, "bob", 3, "e0", true),
                react(12, "alice", 3, "👍", false),
            ],
        );
        assert_eq!(codes(&d), [json!("forbidden"), Value::Null, Value::Null, Value::Null], "{:?}", replies(&d));
        assert_eq!(
            events(&d)[1],
            json!({"ev":"react","room":"r","seq":3,"emoji":"e0","user":"bob","remove":true,"pos":12,"prev_pos":11})
        );
        assert_eq!(d.outcomes[0], ("react", "forbidden"));
    }

    #[test]
    fn a_reply_names_a_message_of_the_room_even_one_sent_in_the_same_batch() {
        let reply = |offset: u64, to: u64| {
            let cmd = Command::Send {
                from: "bob".into(),
                text: "re".into(),
                cid: format!("c{offset}"),
                reply_to: Some(to),
                attachments: vec![],
            };
            record(offset, "r", cmd)
        };
        let d = run(room(), &[reply(9, 3), reply(10, 10), reply(11, 99)]);
        assert_eq!(codes(&d), [Value::Null, Value::Null, json!("not_found")]);
        let Write::Message(Message { reply_to, .. }) = &d.writes[1] else { panic!("{:?}", d.writes) };
        assert_eq!(*reply_to, Some(10));
        assert_eq!(events(&d)[0]["reply_to"], 3);
    }

    #[test]
    fn muted_members_neither_edit_nor_react() {
        let mut view = room();
        view.standing.insert(("r".into(), "alice".into()), MemberRecord { role: Role::Member, muted_until: u64::MAX });
        let d = run(view, &[edit(9, "alice", 3, "x"), react(10, "alice", 3, "👍", false), delete(11, "alice", 3)]);
        assert_eq!(codes(&d), [json!("forbidden"), json!("forbidden"), Value::Null]);
    }

    #[test]
    fn an_erased_message_reads_as_deleted_and_takes_no_more_changes() {
        let mut view = room();
        view.messages
            .insert(("r".into(), 5), MessageState { message: message(4, "r", "bob", "c2"), ..Default::default() });
        view.reacted.insert(("r".into(), 5, "👍".into(), "alice".into()));
        view.messages.get_mut(&("r".into(), 5)).unwrap().message.reactions =
            vec![Reaction { emoji: "👍".into(), count: 1, users: vec!["alice".into()] }];
        let erase = record(9, "r", Command::Erase { user: "alice".into() });
        // Alice is gone (she left the room): her message takes no edit nor
        // reaction; a moderator's deletion of it is a no-op.
        // Her reaction to bob's message went with her, so bob's
        // message takes a new one of the same emoji.
        let d = run(
            view,
            &[
                erase,
                edit(10, "alice", 3, "back"),
                react(11, "bob", 3, "👍", false),
                delete(12, "carol", 3),
                react(13, "bob", 5, "👍", false),
            ],
        );
        assert_eq!(codes(&d), [Value::Null, json!("not_member"), json!("not_found"), Value::Null, Value::Null]);
        let kinds: Vec<Value> = events(&d).iter().map(|e| e["ev"].clone()).collect();
        assert_eq!(kinds, [json!("member"), json!("react")]);
        assert!(d.writes.iter().any(|w| matches!(w, Write::Erase { user, .. } if user == "alice")));
    }
}
