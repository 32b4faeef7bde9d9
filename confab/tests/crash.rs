//! Standalone survives a crash of the machine, not only of the process:
//! what it acknowledged is on disk.
//!
//! `crash/unsynced.c`, an LD_PRELOAD shim built here with `cc`, journals
//! (outside the process) the bytes every write to the data directory
//! replaces, and marks each fsync/fdatasync. A crash is a SIGKILL of the
//! server with sends in flight, in the middle of a commit (the shim stops
//! the process at its next sync once the test asks), then
//! [`lose_unsynced`]: every write not
//! followed by a sync of its file is undone, newest first, as a power loss
//! that kept none of the page cache would. The server is started again on
//! what is left, and every acked message must be in history once, at the
//! seq its ack gave. A self-check first shows the shim throws away an
//! unsynced write and keeps a synced one.
//!
//! `cargo test` runs 5 crashes of 60 acked sends each; `CONFAB_CRASH_ACKED`
//! sets the total (docs/reliability.md has the long run). Needs `cc` and no
//! server.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::drill::{Proc, REPLY_WAIT, Writer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const ROUNDS: usize = 5;
const DEFAULT_ACKED: usize = 300;
/// Sends in flight when the crash comes.
const WINDOW: usize = 10;
const LIMIT: Duration = Duration::from_secs(600);

/// Builds the shim into `dir`.
fn build_shim(dir: &Path) -> PathBuf {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/crash/unsynced.c");
    let out = dir.join("unsynced.so");
    let cc = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(src)
        .args(["-ldl", "-lpthread"])
        .output()
        .expect("cc runs (the crash drill builds its LD_PRELOAD shim with it)");
    assert!(cc.status.success(), "cc {src}: {}", String::from_utf8_lossy(&cc.stderr));
    out
}

/// What [`lose_unsynced`] undid.
#[derive(Debug, Default)]
struct Lost {
    records: usize,
    bytes: u64,
    files: Vec<String>,
}

/// The next `n` bytes; `None` past the end (a torn last record: the change
/// it announces had not started when the process died).
fn take<'j>(j: &'j [u8], at: &mut usize, n: usize) -> Option<&'j [u8]> {
    let b = j.get(*at..*at + n)?;
    *at += n;
    Some(b)
}

fn u64_at(j: &[u8], at: &mut usize) -> Option<u64> {
    Some(u64::from_ne_bytes(take(j, at, 8)?.try_into().ok()?))
}

enum Record {
    Undo(Undo),
    Synced(PathBuf),
    AllSynced,
}

struct Undo {
    path: PathBuf,
    offset: u64,
    size: u64,
    old: Vec<u8>,
}

fn record(j: &[u8], at: &mut usize) -> Option<Record> {
    let kind = take(j, at, 1)?[0];
    if kind == b'A' {
        return Some(Record::AllSynced);
    }
    let len = u32::from_ne_bytes(take(j, at, 4)?.try_into().ok()?) as usize;
    let path = PathBuf::from(String::from_utf8(take(j, at, len)?.to_vec()).expect("a UTF-8 path"));
    match kind {
        b'S' => Some(Record::Synced(path)),
        b'U' => {
            let offset = u64_at(j, at)?;
            let _len = u64_at(j, at)?;
            let size = u64_at(j, at)?;
            let n = u64_at(j, at)? as usize;
            let old = take(j, at, n)?.to_vec();
            Some(Record::Undo(Undo { path, offset, size, old }))
        }
        other => panic!("journal record kind {other} at {}", *at - 1),
    }
}

/// The crash: undoes, newest first, every journalled write or size change
/// that no sync of its file (or `sync()`) followed.
fn lose_unsynced(journal: &Path) -> Lost {
    let j = std::fs::read(journal).unwrap_or_default();
    let mut at = 0;
    let mut pending: Vec<Undo> = Vec::new();
    while let Some(r) = record(&j, &mut at) {
        match r {
            Record::AllSynced => pending.clear(),
            Record::Synced(path) => pending.retain(|u| u.path != path),
            Record::Undo(u) => pending.push(u),
        }
    }
    let mut lost = Lost { records: pending.len(), ..Lost::default() };
    let mut files = std::collections::BTreeSet::new();
    for u in pending.iter().rev() {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&u.path).expect("a journalled file");
        let now = file.metadata().expect("its size").len();
        lost.bytes += now.abs_diff(u.size).max(u.old.len() as u64);
        file.write_all_at(&u.old, u.offset).expect("old bytes written back");
        file.set_len(u.size).expect("old size");
        files.insert(u.path.file_name().unwrap_or_default().to_string_lossy().into_owned());
    }
    lost.files = files.into_iter().collect();
    std::fs::remove_file(journal).ok();
    lost
}

/// `shim`: the shim, its journal and its trigger file.
fn start(data: &Path, shim: Option<(&Path, &Path, &Path)>) -> Proc {
    let args: Vec<String> = [
        "standalone",
        "--data",
        data.to_str().expect("a UTF-8 path"),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--rate-burst",
        "10000",
        "--rate-per-second",
        "10000",
    ]
    .map(String::from)
    .to_vec();
    let envs: Vec<(&str, &str)> = match shim {
        Some((so, journal, trigger)) => vec![
            ("LD_PRELOAD", so.to_str().expect("UTF-8")),
            ("CRASH_SHIM_DIR", data.to_str().expect("UTF-8")),
            ("CRASH_SHIM_JOURNAL", journal.to_str().expect("UTF-8")),
            ("CRASH_SHIM_TRIGGER", trigger.to_str().expect("UTF-8")),
        ],
        None => Vec::new(),
    };
    Proc::spawn_env(&args, &["listening", "admin listening"], &envs)
}

async fn token(addr: &str, user: &str) -> String {
    let http = reqwest::Client::new();
    let creds = json!({"username": user, "password": "password-123"});
    let r = http.post(format!("http://{addr}/v1/auth/register")).json(&creds).send().await.expect("register");
    assert!(r.status() == 201 || r.status() == 409, "register: {}", r.status());
    let login = http.post(format!("http://{addr}/v1/auth/login")).json(&creds).send().await.expect("login");
    let login: Value = login.json().await.expect("login reply");
    login["token"].as_str().expect("a token").to_owned()
}

/// Sends `from..` with [`WINDOW`] in flight until `want` more are acked,
/// then has the server stop at its next sync (the shim's trigger) and
/// SIGKILLs it there, with the rest in flight. Returns the next number to
/// send and how many were in flight.
async fn send_then_crash(
    w: &mut Writer,
    server: &mut Proc,
    trigger: &Path,
    from: usize,
    want: usize,
) -> (usize, usize) {
    let room = w.room.clone();
    let client = w.connect().await;
    let mut next = from;
    let mut in_flight: HashMap<String, usize> = HashMap::new();
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut new_acks = Vec::new();
    while acked < want {
        assert!(Instant::now() < deadline, "{acked} of {want} sends acked in 120 s");
        while in_flight.len() < WINDOW {
            let id = format!("c{next}");
            let frame = json!({"id": id, "op": "send", "room": room, "text": format!("message {next}"), "cid": format!("m{next}")});
            client.ws.send(Message::Text(frame.to_string().into())).await.expect("the server is up");
            in_flight.insert(id, next);
            next += 1;
        }
        let frame = tokio::time::timeout(REPLY_WAIT, client.ws.next()).await.expect("a reply in time");
        let Some(Ok(Message::Text(t))) = frame else { panic!("the connection ended before the crash: {frame:?}") };
        let v: Value = serde_json::from_str(&t).expect("JSON");
        let Some(i) = v["re"].as_str().and_then(|id| in_flight.remove(id)) else { continue };
        assert_eq!(v["ok"], true, "m{i}: {v}");
        new_acks.push((format!("m{i}"), v["seq"].as_u64().expect("a seq")));
        acked += 1;
    }
    // The crash, in the middle of a commit of the window's sends.
    let in_flight = in_flight.len();
    std::fs::write(trigger, b"").expect("the trigger file");
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::drill::process_state(server.pid()) != Some('T') {
        assert!(Instant::now() < deadline, "the server never came to a sync after the trigger");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.signal("-KILL");
    let status = server.exited_within(Duration::from_secs(10)).await;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.and_then(|s| s.signal()), Some(9), "the server died of SIGKILL: {status:?}");
    std::fs::remove_file(trigger).expect("the trigger file");
    w.client = None;
    let now = Instant::now();
    for ack in new_acks {
        w.acked.push(ack);
        w.acked_at.push(now);
    }
    (next, in_flight)
}

#[tokio::test]
async fn acked_messages_survive_a_machine_crash_that_loses_every_unsynced_write() {
    tokio::time::timeout(LIMIT, crash_drill()).await.expect("the crash drill ends within its limit");
}

async fn crash_drill() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let shim = build_shim(tmp.path());
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).expect("the data directory");

    // Self-check: an unsynced write is thrown away, a synced one kept.
    let journal = tmp.path().join("self-check.journal");
    let sh = |script: &str| {
        let status = Command::new("sh")
            .args(["-c", script])
            .env("LD_PRELOAD", &shim)
            .env("CRASH_SHIM_DIR", &data)
            .env("CRASH_SHIM_JOURNAL", &journal)
            .status()
            .expect("sh runs");
        assert!(status.success(), "{script}");
    };
    let (unsynced, synced) = (data.join("unsynced"), data.join("synced"));
    sh(&format!("printf 'not synced' > '{}'", unsynced.display()));
    sh(&format!("printf 'synced' | dd of='{}' conv=fsync status=none", synced.display()));
    let lost = lose_unsynced(&journal);
    assert_eq!(std::fs::read(&unsynced).unwrap(), b"", "the unsynced write was thrown away ({lost:?})");
    assert_eq!(std::fs::read(&synced).unwrap(), b"synced", "the synced write was kept");
    std::fs::remove_file(&unsynced).unwrap();
    std::fs::remove_file(&synced).unwrap();

    let total: usize = std::env::var("CONFAB_CRASH_ACKED").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_ACKED);
    let per_round = total.div_ceil(ROUNDS);
    let mut next = 0;
    let mut w: Option<Writer> = None;
    let (mut undone, mut undone_bytes, mut in_flight_at_crashes) = (0, 0, 0);
    let started = Instant::now();
    for round in 0..ROUNDS {
        let journal = tmp.path().join(format!("round-{round}.journal"));
        let trigger = tmp.path().join("crash-now");
        let mut server = start(&data, Some((&shim, &journal, &trigger)));
        let addr = server.addrs["listening"].clone();
        if w.is_none() {
            // The token outlives the crashes: the generated JWT secret must too.
            let token = token(&addr, "writer").await;
            let mut first = Writer {
                gateways: vec![addr.clone()],
                current: 0,
                token,
                room: "crash-room".into(),
                client: None,
                acked: Vec::new(),
                acked_at: Vec::new(),
                retries: 0,
                connects: 0,
                cid_prefix: String::new(),
            };
            first.request_until_ok(json!({"op": "join", "room": "crash-room"})).await;
            w = Some(first);
        }
        let writer = w.as_mut().expect("the writer");
        writer.gateways = vec![addr];
        let (n, in_flight) = send_then_crash(writer, &mut server, &trigger, next, per_round).await;
        next = n;
        in_flight_at_crashes += in_flight;
        let lost = lose_unsynced(&journal);
        eprintln!("crash {round}: {in_flight} sends in flight; thrown away: {lost:?}");
        undone += lost.records;
        undone_bytes += lost.bytes;
    }
    // Started again without the shim, on what the crashes left.
    let server = start(&data, None);
    let mut w = w.expect("the writer");
    w.gateways = vec![server.addrs["listening"].clone()];
    let history = w.history().await;
    let mut stored: HashMap<&str, Vec<u64>> = HashMap::new();
    for m in &history {
        stored.entry(m["cid"].as_str().expect("cid")).or_default().push(m["seq"].as_u64().expect("seq"));
    }
    let lost = w.acked.iter().filter(|(cid, seq)| !stored.get(cid.as_str()).is_some_and(|s| s.contains(seq))).count();
    let duplicated = stored.values().filter(|s| s.len() > 1).count();
    let seqs: Vec<u64> = history.iter().map(|m| m["seq"].as_u64().expect("seq")).collect();
    let row = format!(
        "| standalone, machine crash (SIGKILL + unsynced writes thrown away) x{ROUNDS} | {} | {lost} | {duplicated} | {} | {undone} writes, {undone_bytes} bytes | {in_flight_at_crashes} | {:.0} s |",
        w.acked.len(),
        history.len(),
        started.elapsed().as_secs_f64()
    );
    eprintln!("{row}");
    if let Ok(path) = std::env::var("CONFAB_JEPSEN_REPORT") {
        use std::io::Write;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path);
        let _ = file.and_then(|mut f| writeln!(f, "{row}"));
    }
    assert_eq!(w.acked.len(), per_round * ROUNDS, "every round got its acks");
    assert_eq!((lost, duplicated), (0, 0), "nothing acked lost, nothing stored twice");
    assert!(seqs.windows(2).all(|p| p[0] < p[1]), "history in strictly increasing seq order");
    assert!(in_flight_at_crashes > 0, "the crashes came with sends in flight");
    assert!(undone > 0, "the crashes threw away unsynced writes of a commit");
}
