//! A [`Store`] wrapper that times every operation into
//! `confab_store_operation_duration_seconds{op}` and counts failures in
//! `confab_store_errors_total{op}`.

use std::time::Instant;

use async_trait::async_trait;
use confab_protocol::{Message, Profile, RoomInfo};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::{
    CidHit, MemberRecord, MessageState, PublicRoom, Result, RoomMeta, RoomSettings, Store, UserRecord, WriteBatch,
};
use confab_protocol::lifecycle::Version;
use confab_protocol::rooms::MemberEntry;

/// The values of the `op` label: the [`Store`] methods.
const OPS: [&str; 55] = [
    "ping",
    "create_user",
    "user",
    "room",
    "is_member",
    "members",
    "count_members",
    "user_rooms",
    "user_room_count",
    "user_room_names",
    "read_marker",
    "notify_level",
    "ordinal_at",
    "tally",
    "history",
    "since",
    "cid",
    "recent_cids",
    "apply",
    "stage",
    "checkpoints",
    "bind_partitions",
    "room_settings",
    "member",
    "members_page",
    "is_invited",
    "is_banned",
    "invitations",
    "public_rooms",
    "message",
    "reacted",
    "edits",
    "changes",
    "set_profile",
    "profiles",
    "set_password",
    "tokens_valid_after",
    "revoke_tokens_before",
    "revoke_token",
    "is_token_revoked",
    "contact_ask",
    "contact_end",
    "contacts",
    "block",
    "unblock",
    "blocks",
    "is_blocked",
    "delete_user",
    "successor",
    "put_upload",
    "upload",
    "drop_user_uploads",
    "due_uploads",
    "delete_upload",
    "member_event",
];

pub struct Metered<S> {
    inner: S,
    latency: HistogramVec,
    errors: IntCounterVec,
}

impl<S: Store> Metered<S> {
    pub fn new(inner: S, registry: &Registry) -> prometheus::Result<Self> {
        let latency = HistogramVec::new(
            HistogramOpts::new("confab_store_operation_duration_seconds", "Time of one store operation, by operation.")
                .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
            &["op"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new("confab_store_errors_total", "Store operations that failed, by operation."),
            &["op"],
        )?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        // Zero from the start, so an error rate is 0 rather than no data.
        for op in OPS {
            errors.with_label_values(&[op]);
        }
        Ok(Metered { inner, latency, errors })
    }

    async fn timed<T>(&self, op: &str, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let start = Instant::now();
        let out = f.await;
        self.latency.with_label_values(&[op]).observe(start.elapsed().as_secs_f64());
        if out.is_err() {
            self.errors.with_label_values(&[op]).inc();
        }
        out
    }
}

#[async_trait]
impl<S: Store> Store for Metered<S> {
    async fn ping(&self) -> Result<()> {
        self.timed("ping", self.inner.ping()).await
    }
    async fn create_user(&self, user: &UserRecord) -> Result<bool> {
        self.timed("create_user", self.inner.create_user(user)).await
    }
    async fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        self.timed("user", self.inner.user(name)).await
    }
    async fn set_profile(&self, profile: &Profile) -> Result<bool> {
        self.timed("set_profile", self.inner.set_profile(profile)).await
    }
    async fn profiles(&self, users: &[String]) -> Result<Vec<Profile>> {
        self.timed("profiles", self.inner.profiles(users)).await
    }
    async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool> {
        self.timed("set_password", self.inner.set_password(name, password_hash)).await
    }
    async fn tokens_valid_after(&self, user: &str) -> Result<u64> {
        self.timed("tokens_valid_after", self.inner.tokens_valid_after(user)).await
    }
    async fn revoke_tokens_before(&self, user: &str, before_ms: u64) -> Result<()> {
        self.timed("revoke_tokens_before", self.inner.revoke_tokens_before(user, before_ms)).await
    }
    async fn revoke_token(&self, jti: &str, exp: u64) -> Result<()> {
        self.timed("revoke_token", self.inner.revoke_token(jti, exp)).await
    }
    async fn is_token_revoked(&self, jti: &str) -> Result<bool> {
        self.timed("is_token_revoked", self.inner.is_token_revoked(jti)).await
    }
    async fn room(&self, room: &str) -> Result<Option<RoomMeta>> {
        self.timed("room", self.inner.room(room)).await
    }
    async fn is_member(&self, room: &str, user: &str) -> Result<bool> {
        self.timed("is_member", self.inner.is_member(room, user)).await
    }
    async fn members(&self, room: &str) -> Result<Vec<String>> {
        self.timed("members", self.inner.members(room)).await
    }
    async fn count_members(&self, room: &str) -> Result<u64> {
        self.timed("count_members", self.inner.count_members(room)).await
    }
    async fn user_rooms(&self, user: &str) -> Result<Vec<RoomInfo>> {
        self.timed("user_rooms", self.inner.user_rooms(user)).await
    }
    async fn user_room_count(&self, user: &str) -> Result<usize> {
        self.timed("user_room_count", self.inner.user_room_count(user)).await
    }
    async fn user_room_names(&self, user: &str) -> Result<Vec<String>> {
        self.timed("user_room_names", self.inner.user_room_names(user)).await
    }
    async fn read_marker(&self, room: &str, user: &str) -> Result<u64> {
        self.timed("read_marker", self.inner.read_marker(room, user)).await
    }
    async fn notify_level(&self, room: &str, user: &str) -> Result<confab_protocol::NotifyLevel> {
        self.timed("notify_level", self.inner.notify_level(room, user)).await
    }
    async fn ordinal_at(&self, room: &str, seq: u64) -> Result<Option<(u64, u64)>> {
        self.timed("ordinal_at", self.inner.ordinal_at(room, seq)).await
    }
    async fn tally(&self, room: &str, user: &str, seq: u64) -> Result<crate::Tally> {
        self.timed("tally", self.inner.tally(room, user, seq)).await
    }
    async fn history(&self, room: &str, before: Option<u64>, limit: u32) -> Result<Vec<Message>> {
        self.timed("history", self.inner.history(room, before, limit)).await
    }
    async fn since(&self, room: &str, after: u64, limit: u32) -> Result<(Vec<Message>, bool)> {
        self.timed("since", self.inner.since(room, after, limit)).await
    }
    async fn cid(&self, room: &str, cid: &str) -> Result<Option<CidHit>> {
        self.timed("cid", self.inner.cid(room, cid)).await
    }
    fn cid_window(&self) -> Option<std::time::Duration> {
        self.inner.cid_window()
    }
    fn indexes_cids(&self) -> bool {
        self.inner.indexes_cids()
    }
    async fn recent_cids(&self, room: &str, limit: u32) -> Result<(Vec<(String, CidHit)>, Option<u64>)> {
        self.timed("recent_cids", self.inner.recent_cids(room, limit)).await
    }
    async fn room_settings(&self, room: &str) -> Result<Option<RoomSettings>> {
        self.timed("room_settings", self.inner.room_settings(room)).await
    }
    async fn member(&self, room: &str, user: &str) -> Result<Option<MemberRecord>> {
        self.timed("member", self.inner.member(room, user)).await
    }
    async fn members_page(&self, room: &str, after: Option<&str>, limit: u32) -> Result<Vec<MemberEntry>> {
        self.timed("members_page", self.inner.members_page(room, after, limit)).await
    }
    async fn is_invited(&self, room: &str, user: &str) -> Result<bool> {
        self.timed("is_invited", self.inner.is_invited(room, user)).await
    }
    async fn is_banned(&self, room: &str, user: &str) -> Result<bool> {
        self.timed("is_banned", self.inner.is_banned(room, user)).await
    }
    async fn invitations(&self, user: &str) -> Result<Vec<String>> {
        self.timed("invitations", self.inner.invitations(user)).await
    }
    async fn public_rooms(&self, after: Option<&str>, limit: u32) -> Result<Vec<PublicRoom>> {
        self.timed("public_rooms", self.inner.public_rooms(after, limit)).await
    }
    async fn apply(&self, batch: WriteBatch) -> Result<()> {
        self.timed("apply", self.inner.apply(batch)).await
    }
    /// Timed as `stage` up to readable; as `apply` (the group commit, as
    /// dashboards and alerts know it) from the call to durable, and a
    /// failure to become durable counts as an `apply` error.
    async fn stage(&self, batch: WriteBatch) -> Result<crate::Durable> {
        let start = Instant::now();
        let durable = match self.timed("stage", self.inner.stage(batch)).await {
            Ok(durable) => durable,
            Err(e) => {
                self.errors.with_label_values(&["apply"]).inc();
                return Err(e);
            }
        };
        let (latency, errors) = (self.latency.clone(), self.errors.clone());
        Ok(Box::pin(async move {
            let out = durable.await;
            latency.with_label_values(&["apply"]).observe(start.elapsed().as_secs_f64());
            if out.is_err() {
                errors.with_label_values(&["apply"]).inc();
            }
            out
        }))
    }
    async fn checkpoints(&self) -> Result<Vec<(u32, u64)>> {
        self.timed("checkpoints", self.inner.checkpoints()).await
    }
    async fn bind_partitions(&self, partitions: u32) -> Result<()> {
        self.timed("bind_partitions", self.inner.bind_partitions(partitions)).await
    }
    async fn contact_ask(&self, user: &str, other: &str, max: usize) -> Result<bool> {
        self.timed("contact_ask", self.inner.contact_ask(user, other, max)).await
    }
    async fn contact_end(&self, a: &str, b: &str) -> Result<()> {
        self.timed("contact_end", self.inner.contact_end(a, b)).await
    }
    async fn contacts(&self, user: &str) -> Result<Vec<crate::ContactRecord>> {
        self.timed("contacts", self.inner.contacts(user)).await
    }
    async fn block(&self, user: &str, other: &str, max: usize) -> Result<bool> {
        self.timed("block", self.inner.block(user, other, max)).await
    }
    async fn unblock(&self, user: &str, other: &str) -> Result<()> {
        self.timed("unblock", self.inner.unblock(user, other)).await
    }
    async fn blocks(&self, user: &str) -> Result<Vec<String>> {
        self.timed("blocks", self.inner.blocks(user)).await
    }
    async fn is_blocked(&self, user: &str, other: &str) -> Result<bool> {
        self.timed("is_blocked", self.inner.is_blocked(user, other)).await
    }
    async fn delete_user(&self, name: &str) -> Result<bool> {
        self.timed("delete_user", self.inner.delete_user(name)).await
    }
    async fn successor(&self, room: &str, leaving: &str) -> Result<Option<String>> {
        self.timed("successor", self.inner.successor(room, leaving)).await
    }
    async fn message(&self, room: &str, seq: u64) -> Result<Option<MessageState>> {
        self.timed("message", self.inner.message(room, seq)).await
    }
    async fn reacted(&self, room: &str, seq: u64, emoji: &str, user: &str) -> Result<bool> {
        self.timed("reacted", self.inner.reacted(room, seq, emoji, user)).await
    }
    async fn edits(&self, room: &str, seq: u64) -> Result<Vec<Version>> {
        self.timed("edits", self.inner.edits(room, seq)).await
    }
    async fn changes(&self, room: &str, after: u64, limit: u32) -> Result<(Vec<(u64, u64)>, bool)> {
        self.timed("changes", self.inner.changes(room, after, limit)).await
    }
    async fn member_event(&self, room: &str, at: u64) -> Result<Option<crate::MemberEvent>> {
        self.timed("member_event", self.inner.member_event(room, at)).await
    }
    async fn put_upload(&self, upload: &crate::UploadRecord) -> Result<()> {
        self.timed("put_upload", self.inner.put_upload(upload)).await
    }
    async fn upload(&self, id: &str) -> Result<Option<crate::UploadRecord>> {
        self.timed("upload", self.inner.upload(id)).await
    }
    async fn drop_user_uploads(&self, user: &str) -> Result<()> {
        self.timed("drop_user_uploads", self.inner.drop_user_uploads(user)).await
    }
    async fn due_uploads(&self, before_ms: u64, limit: u32) -> Result<Vec<crate::UploadRecord>> {
        self.timed("due_uploads", self.inner.due_uploads(before_ms, limit)).await
    }
    async fn delete_upload(&self, upload: &crate::UploadRecord) -> Result<()> {
        self.timed("delete_upload", self.inner.delete_upload(upload)).await
    }
}

#[cfg(test)]
mod tests {
    /// The names of the `fn`s in `block`, in order.
    fn fns(block: &str) -> Vec<&str> {
        block
            .split("fn ")
            .skip(1)
            .map(|rest| rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or(""))
            .collect()
    }

    /// A trait method with a default body that the wrapper does not forward
    /// runs the default on the wrapper: a backend's own version is skipped
    /// (a CQL store's one-statement `user_room_count` became two reads per
    /// room of the user; its `cid_window` became "forever"). Every method of
    /// `Store` is forwarded, and every async one is timed under its name.
    #[test]
    fn every_store_method_is_forwarded_and_named() {
        let lib = include_str!("lib.rs");
        let start = lib.find("pub trait Store").expect("the trait");
        let end = start + lib[start..].find("\n}\n").expect("the trait's end");
        let methods = fns(&lib[start..end]);
        assert!(methods.len() > 50, "parsed {methods:?}");
        let this = include_str!("metered.rs");
        let start = this.find("impl<S: Store> Store for Metered<S>").expect("the impl");
        let end = start + this[start..].find("\n}\n").expect("the impl's end");
        let forwarded = fns(&this[start..end]);
        let ops = &this[this.find("const OPS").unwrap()..];
        let ops = &ops[..ops.find("];").unwrap()];
        for method in methods {
            assert!(forwarded.contains(&method), "Metered does not forward Store::{method}");
            // The two plain (not async) methods answer from configuration.
            if !["cid_window", "indexes_cids"].contains(&method) {
                assert!(ops.contains(&format!("\"{method}\"")), "OPS does not name {method}");
            }
        }
    }
}
