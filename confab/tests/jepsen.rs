//! A checker in the style of Jepsen's, run once per fault against a
//! 2-gateway, 2-dispatcher cluster of real processes on the real Kafka and
//! Cassandra.
//!
//! Writers send numbered messages (per-sender sequence numbers: writer k's
//! cids are `wkm0`, `wkm1`, ...) with several sends in flight (pipelined cids) and send
//! an unacknowledged one again with its cid, on the other gateway when theirs
//! is gone. Readers follow the room live, check `prev_seq`, and when their
//! connection ends reconnect to the other gateway and `sync` from the last seq
//! they hold. A fault is injected when 30 % of the sends are acked. Then the
//! clients' views and the room's `history` are counted: acked, lost (acked but
//! neither in history nor delivered to any reader), duplicated, out of order
//! and recovered by `sync`. Every fault must end with 0 lost and 0 duplicated.
//!
//! `cargo test` runs 1,000 acked sends per fault; `CONFAB_JEPSEN_ACKED` raises
//! that for the long run, and `CONFAB_JEPSEN_REPORT=<file>` appends each row of
//! the table to that file (docs/reliability.md has the command and a run).
//!
//! The faults stop Kafka and Cassandra (`scripts/infra down`): run this only
//! against servers of your own (see docs/testing.md).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Client;
use common::cluster::keyspace_exists;
use common::drill::{
    Cluster, DRAIN_GRACE, DRILL, PARTITIONS, PRODUCE_TIMEOUT, Restore, Thaw, WAIT, Writer, cql3, env, kafka3,
    process_state, signal_pid, try_infra,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const ROOM: &str = "jepsen-room";
const WRITERS: usize = 4;
const READERS: usize = 2;
/// Sends in flight per writer.
const WINDOW: usize = 10;
/// Sends per call of [`Writer::pipelined`] (its own deadline is per call).
const CHUNK: usize = 250;
/// Acked sends per fault unless `CONFAB_JEPSEN_ACKED` says otherwise.
const DEFAULT_ACKED: usize = 1000;
/// The same for the faults of the 3-node Kafka and Cassandra and the
/// partition (CI time: each waits out a fence, a restart or a cut).
const DEFAULT_ACKED_REPLICATED: usize = 400;
/// How long a Kafka node stays frozen: longer than the brokers' session
/// timeout (`broker.session.timeout.ms` 6 s in scripts/infra.d/kafka3.sh),
/// the dispatchers' consumer session (10 s) and the produce timeout (2 s).
const FROZEN_FOR: Duration = Duration::from_secs(15);
/// How long a gateway is cut off from Kafka: longer than the produce timeout
/// (2 s) and the sessions' 10 s.
const PARTITIONED_FOR: Duration = Duration::from_secs(15);
/// How long a killed Kafka or Cassandra node stays dead before `scripts/infra up`.
const KILLED_FOR: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
enum Fault {
    DispatcherKilled,
    GatewayKilled,
    GatewayTerminated,
    KafkaRestarted,
    CassandraRestarted,
    /// On the 3-node Kafka (`scripts/infra up kafka3`), topics replicated 3
    /// times with `min.insync.replicas=2`: the node leading the room's
    /// partition SIGKILLed, started again 10 s later.
    Kafka3LeaderKilled,
    /// The same, the leader frozen with SIGSTOP for [`FROZEN_FOR`], then SIGCONT.
    Kafka3LeaderFrozen,
    /// On the 3-node Cassandra (`scripts/infra up cql3`), keyspace replicated
    /// 3 times, LOCAL_QUORUM: node 1 (the first contact point) SIGKILLed,
    /// started again 10 s later.
    Cql3NodeKilled,
    /// Gateway 0 in a network namespace of its own (`common/netns.rs`), its
    /// link to Kafka cut for [`PARTITIONED_FOR`] (no byte passes, nothing is
    /// closed), then healed. Its link to Cassandra and the dispatchers' to it
    /// stay up.
    KafkaPartitionedFromGateway,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::DispatcherKilled => "dispatcher owning the room SIGKILLed",
            Fault::GatewayKilled => "gateway SIGKILLed",
            Fault::GatewayTerminated => "gateway SIGTERMed (drained)",
            Fault::KafkaRestarted => "Kafka stopped, started 5 s later",
            Fault::CassandraRestarted => "Cassandra stopped, started 8 s later",
            Fault::Kafka3LeaderKilled => "3 Kafka nodes: the room's partition leader SIGKILLed, restarted 10 s later",
            Fault::Kafka3LeaderFrozen => "3 Kafka nodes: the room's partition leader frozen (SIGSTOP) 15 s",
            Fault::Cql3NodeKilled => "3 Cassandra nodes: one SIGKILLed, restarted 10 s later",
            Fault::KafkaPartitionedFromGateway => "network partition between a gateway and Kafka, 15 s",
        }
    }

    fn kafka3(self) -> bool {
        matches!(self, Fault::Kafka3LeaderKilled | Fault::Kafka3LeaderFrozen)
    }

    /// The faults added with the replicated servers and the partition: a
    /// short run by default.
    fn short(self) -> bool {
        self.kafka3() || matches!(self, Fault::Cql3NodeKilled | Fault::KafkaPartitionedFromGateway)
    }
}

/// One row of the table.
#[derive(Debug, Default)]
struct Counts {
    acked: usize,
    lost: usize,
    /// Acked messages missing from history (whatever the readers got).
    missing_from_history: usize,
    /// Acked messages some reader never got (whatever history has).
    missing_from_a_reader: usize,
    duplicated: usize,
    out_of_order: usize,
    recovered_by_sync: usize,
    /// Sends sent again by the writers (lost replies, `unavailable`, lost connections).
    resent: usize,
    reader_reconnects: usize,
}

/// What one reader saw.
#[derive(Debug, Default)]
struct View {
    /// seq -> (from, cid), as held in the contiguous chain `prev_seq` proves.
    got: BTreeMap<u64, (String, String)>,
    /// The highest seq held contiguously.
    last: u64,
    by_sync: usize,
    /// Events of one connection whose seq did not grow.
    out_of_order: usize,
    /// A message at a seq held with another message.
    conflicts: usize,
    reconnects: usize,
    /// seq -> how it came (for whoever reads a failure): a live event and
    /// its `prev_seq`, or a sync page and its `since`, with the connection.
    how: BTreeMap<u64, String>,
}

fn acked_per_fault(fault: Fault) -> usize {
    let default = if fault.short() { DEFAULT_ACKED_REPLICATED } else { DEFAULT_ACKED };
    std::env::var("CONFAB_JEPSEN_ACKED").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Follows the room until it holds every seq up to `target` (0 until the
/// writers are done) or `deadline` passes.
async fn read(gateways: Vec<String>, first: usize, token: String, target: Arc<AtomicU64>, deadline: Instant) -> View {
    let mut view = View::default();
    let mut current = first;
    let mut n = 0u64;
    'connections: while Instant::now() < deadline {
        let url = format!("ws://{}/v1/ws?token={token}", gateways[current]);
        let connected = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url)).await;
        let mut client = match connected {
            Ok(Ok((ws, _))) => match Client::try_from_stream(ws).await {
                Some(c) => c,
                None => {
                    current = (current + 1) % gateways.len();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            _ => {
                current = (current + 1) % gateways.len();
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // Every connection starts with a sync from the last seq held.
        let mut pending: Option<String> = None;
        let mut pending_since = 0u64;
        let mut last_event = 0u64;
        let mut quiet_since = Instant::now();
        let mut want_sync = true;
        loop {
            if Instant::now() >= deadline {
                break 'connections;
            }
            let goal = target.load(Ordering::SeqCst);
            if goal > 0 && view.last >= goal {
                break 'connections;
            }
            // Once the writers are done, a quiet connection syncs: the last
            // events may have been lost with no later one to show the gap.
            if goal > 0 && pending.is_none() && quiet_since.elapsed() > Duration::from_secs(2) {
                want_sync = true;
            }
            if want_sync && pending.is_none() {
                n += 1;
                let id = format!("s{n}");
                let req = json!({"id": id, "op": "sync", "rooms": {ROOM: view.last}, "limit": 100});
                if client.ws.send(Message::Text(req.to_string().into())).await.is_err() {
                    break;
                }
                pending = Some(id);
                pending_since = view.last;
                want_sync = false;
                quiet_since = Instant::now();
            }
            let frame = match tokio::time::timeout(Duration::from_millis(500), client.ws.next()).await {
                Err(_) => {
                    // A sync unanswered for long is sent again.
                    if pending.is_some() && quiet_since.elapsed() > Duration::from_secs(5) {
                        pending = None;
                        want_sync = true;
                    }
                    continue;
                }
                Ok(Some(Ok(Message::Text(t)))) => t,
                Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => break,
                Ok(Some(Ok(_))) => continue,
            };
            quiet_since = Instant::now();
            let v: Value = serde_json::from_str(&frame).expect("server frames are JSON");
            if v["ev"] == "msg" && v["room"] == ROOM {
                let seq = v["seq"].as_u64().expect("seq");
                if seq <= last_event {
                    view.out_of_order += 1;
                }
                last_event = last_event.max(seq);
                let prev = v["prev_seq"].as_u64().expect("prev_seq");
                if seq <= view.last {
                    check_same(&mut view, seq, &v);
                } else if prev == view.last {
                    hold(&mut view, seq, &v);
                    view.how.insert(seq, format!("live, prev_seq {prev}, connection {}", view.reconnects));
                } else {
                    // Missed messages: sync, and do not append this one.
                    want_sync = true;
                }
            } else if pending.is_some() && v["re"].as_str() == pending.as_deref() {
                pending = None;
                if v["ok"] != true {
                    // `unavailable` while a server is down: ask again soon.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    want_sync = true;
                    continue;
                }
                let page = &v["rooms"][ROOM];
                let since = pending_since;
                for m in page["messages"].as_array().expect("messages") {
                    let seq = m["seq"].as_u64().expect("seq");
                    if seq <= view.last {
                        check_same(&mut view, seq, m);
                    } else {
                        hold(&mut view, seq, m);
                        view.by_sync += 1;
                        view.how.insert(seq, format!("sync from {since}, connection {}", view.reconnects));
                    }
                }
                // A gap seen while this sync was in flight stays a gap: its
                // reply may have been read before that message was stored
                // (docs/protocol.md, "Ordering, gaps and `sync`", rule 5).
                want_sync |= page["more"] == true;
            }
        }
        view.reconnects += 1;
        current = (current + 1) % gateways.len();
    }
    view
}

fn identity(m: &Value) -> (String, String) {
    (m["from"].as_str().expect("from").to_owned(), m["cid"].as_str().unwrap_or("").to_owned())
}

fn hold(view: &mut View, seq: u64, m: &Value) {
    view.got.insert(seq, identity(m));
    view.last = seq;
}

fn check_same(view: &mut View, seq: u64, m: &Value) {
    if view.got.get(&seq).is_some_and(|held| *held != identity(m)) {
        view.conflicts += 1;
    }
}

/// Runs the checker with one fault and returns its counts.
async fn check(fault: Fault) -> Counts {
    let _one = DRILL.lock().await;
    let started = Instant::now();
    let total = acked_per_fault(fault);
    // The limit grows with the run; a short one has 300 s.
    let limit = Duration::from_secs(300) + Duration::from_millis(40) * total as u32;
    let (counts, (cql, keyspace)) = tokio::time::timeout(limit, run(fault, total))
        .await
        .unwrap_or_else(|_| panic!("the checker with `{}` did not end within {limit:?}", fault.name()));
    // The cluster is gone, its keyspace with it (repeated runs pile none up).
    assert!(!keyspace_exists(&cql, &keyspace).await, "keyspace {keyspace} on {cql} is still there after the run");
    let row = format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} s |",
        fault.name(),
        counts.acked,
        counts.lost,
        counts.duplicated,
        counts.out_of_order,
        counts.recovered_by_sync,
        counts.missing_from_history,
        counts.missing_from_a_reader,
        counts.resent,
        counts.reader_reconnects,
        started.elapsed().as_secs_f64()
    );
    eprintln!("{row}");
    if let Ok(path) = std::env::var("CONFAB_JEPSEN_REPORT") {
        use std::io::Write;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path);
        let _ = file.and_then(|mut f| writeln!(f, "{row}"));
    }
    counts
}

/// The counts, and the CQL nodes and keyspace the cluster used.
async fn run(fault: Fault, total: usize) -> (Counts, (String, String)) {
    // No small outbound queue: readers must keep up, not be closed as slow.
    let flags = ["--outbound-queue", "4096"];
    let mut cluster = if fault.kafka3() {
        let (kafka, cql) = (kafka3::bootstrap(), env("CQL_CONTACT_POINTS"));
        Cluster::start_on(&kafka, &cql, &["--kafka-replication", "3"], 2, 2, &flags).await
    } else if let Fault::Cql3NodeKilled = fault {
        let (kafka, cql) = (env("KAFKA_BOOTSTRAP"), cql3::contact_points());
        Cluster::start_on(&kafka, &cql, &["--cql-replication", "SimpleStrategy:3"], 2, 2, &flags).await
    } else if let Fault::KafkaPartitionedFromGateway = fault {
        Cluster::start_partitionable(2, 2, &flags).await
    } else {
        Cluster::start_with(2, 2, &flags).await
    };
    let gateways: Vec<String> = (0..2).map(|g| cluster.public(g)).collect();
    let mut writers = Vec::new();
    for k in 0..WRITERS {
        let mut w = Writer::on(&cluster, k % 2, &format!("writer{k}"), ROOM).await;
        // Cids are unique per room: each writer numbers its own, `w{k}m{i}`.
        w.cid_prefix = format!("w{k}");
        writers.push(w);
    }
    let partition = confab_bus::partition_for(ROOM, PARTITIONS);
    let owner = match fault {
        Fault::DispatcherKilled => {
            writers[0].join_every_partition().await;
            Some(cluster.owner_of(partition).await)
        }
        _ => None,
    };
    let ingress = format!("{}.ingress", cluster.backend_flag("--topic-prefix"));
    if fault.kafka3() {
        // As production: 3 replicas of every partition, 2 of them in sync to ack.
        let (replicas, min_isr) = kafka3::durability(&ingress).await;
        assert_eq!(replicas, vec![3; PARTITIONS as usize], "replicas of each partition of {ingress}");
        assert_eq!(min_isr, "2", "min.insync.replicas of {ingress}");
    }
    // A client of gateway 0 in a room of its own, to see the partition felt.
    let mut probe = match fault {
        Fault::KafkaPartitionedFromGateway => Some(Writer::on(&cluster, 0, "prober", "jepsen-probe").await),
        _ => None,
    };
    // Readers join (as writers that send nothing) and follow the room.
    let target = Arc::new(AtomicU64::new(0));
    let reading_deadline = Instant::now() + Duration::from_secs(240) + Duration::from_millis(30) * total as u32;
    let mut readers = Vec::new();
    for r in 0..READERS {
        let joined = Writer::on(&cluster, r % 2, &format!("reader{r}"), ROOM).await;
        let task = read(gateways.clone(), r % 2, joined.token.clone(), target.clone(), reading_deadline);
        readers.push(tokio::spawn(task));
    }
    // Writers send their share, CHUNK at a time.
    let acks = Arc::new(AtomicUsize::new(0));
    let share = total.div_ceil(WRITERS);
    let mut sending = Vec::new();
    for mut w in writers {
        let acks = acks.clone();
        sending.push(tokio::spawn(async move {
            for start in (0..share).step_by(CHUNK) {
                let end = (start + CHUNK).min(share);
                w.pipelined(start..end, WINDOW, Duration::ZERO, |_, _| {
                    acks.fetch_add(1, Ordering::SeqCst);
                })
                .await;
            }
            w
        }));
    }
    // The fault, when 30 % of the sends are acked.
    let deadline = Instant::now() + WAIT * 2;
    while acks.load(Ordering::SeqCst) < total * 3 / 10 {
        assert!(Instant::now() < deadline, "30 % of the sends were not acked in {:?}", WAIT * 2);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut restore = None;
    let mut restart = None;
    let mut thaw = None;
    let mut healed = None;
    let mut new_leader = None;
    match fault {
        Fault::DispatcherKilled => {
            let owner = owner.expect("the owner");
            cluster.dispatchers[owner].signal("-KILL");
            let status = cluster.dispatchers[owner].exited_within(Duration::from_secs(10)).await;
            assert_eq!(status.and_then(|s| s.signal()), Some(9), "the owner died of SIGKILL: {status:?}");
        }
        Fault::GatewayKilled => {
            cluster.gateways[0].signal("-KILL");
            let status = cluster.gateways[0].exited_within(Duration::from_secs(10)).await;
            assert_eq!(status.and_then(|s| s.signal()), Some(9), "gateway 0 died of SIGKILL: {status:?}");
        }
        Fault::GatewayTerminated => {
            cluster.gateways[0].signal("-TERM");
            let status = cluster.gateways[0].exited_within(DRAIN_GRACE + Duration::from_secs(5)).await;
            assert!(status.is_some_and(|s| s.success()), "gateway 0 drained and exited: {status:?}");
        }
        Fault::KafkaRestarted | Fault::CassandraRestarted => {
            let (what, down_for) = match fault {
                Fault::KafkaRestarted => ("kafka", 5),
                _ => ("cql", 8),
            };
            restore = Some(Restore(what));
            tokio::task::spawn_blocking(move || try_infra("down", what))
                .await
                .expect("the stop task")
                .unwrap_or_else(|e| panic!("{e}"));
            restart = Some(tokio::task::spawn_blocking(move || {
                std::thread::sleep(Duration::from_secs(down_for));
                try_infra("up", what)
            }));
        }
        Fault::KafkaPartitionedFromGateway => {
            cluster.partition.as_ref().expect("gateway 0 in a namespace").cut();
            healed = Some(tokio::time::sleep(PARTITIONED_FOR));
            // A send on the cut-off gateway is refused in time.
            let probe = probe.as_mut().expect("the prober");
            let asked = Instant::now();
            let r = probe.once(&probe.send_request(0, "probe"), &json!("probe")).await;
            let took = asked.elapsed();
            let r = r.unwrap_or_else(|| panic!("no reply on the cut-off gateway in {took:?}"));
            assert_eq!(r["error"]["code"], "unavailable", "a send on the cut-off gateway: {r}");
            assert!(took <= PRODUCE_TIMEOUT + Duration::from_secs(2), "unavailable after {took:?}");
        }
        Fault::Cql3NodeKilled => {
            let pid = cql3::pid(1);
            restore = Some(Restore("cql3"));
            signal_pid(pid, "-KILL");
            let deadline = Instant::now() + Duration::from_secs(10);
            while process_state(pid).is_some_and(|s| s != 'Z') {
                assert!(Instant::now() < deadline, "Cassandra node 1 (pid {pid}) still alive after SIGKILL");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            restart = Some(tokio::task::spawn_blocking(|| {
                std::thread::sleep(KILLED_FOR);
                try_infra("up", "cql3")
            }));
        }
        Fault::Kafka3LeaderKilled | Fault::Kafka3LeaderFrozen => {
            let leader = kafka3::leader(&ingress, partition).await.expect("the room's partition has a leader");
            let pid = kafka3::pid(leader);
            if let Fault::Kafka3LeaderKilled = fault {
                restore = Some(Restore("kafka3"));
                signal_pid(pid, "-KILL");
                let deadline = Instant::now() + Duration::from_secs(10);
                while process_state(pid).is_some_and(|s| s != 'Z') {
                    assert!(Instant::now() < deadline, "Kafka node {leader} (pid {pid}) still alive after SIGKILL");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                restart = Some(tokio::task::spawn_blocking(|| {
                    std::thread::sleep(KILLED_FOR);
                    try_infra("up", "kafka3")
                }));
            } else {
                let frozen = Thaw(pid);
                signal_pid(pid, "-STOP");
                let deadline = Instant::now() + Duration::from_secs(10);
                while process_state(pid) != Some('T') {
                    assert!(Instant::now() < deadline, "Kafka node {leader} (pid {pid}) not stopped by SIGSTOP");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                thaw = Some(tokio::spawn(async move {
                    tokio::time::sleep(FROZEN_FOR).await;
                    // Still frozen all along: it was never continued early.
                    let state = process_state(frozen.0);
                    drop(frozen);
                    state
                }));
            }
            // The fault is felt: another node takes the partition over.
            let deadline = Instant::now() + WAIT;
            loop {
                match kafka3::leader(&ingress, partition).await {
                    Some(l) if l != leader => break new_leader = Some((leader, l)),
                    _ => assert!(Instant::now() < deadline, "no new leader for partition {partition} in {WAIT:?}"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let at_fault = acks.load(Ordering::SeqCst);
    if let Some(healed) = healed {
        healed.await;
        cluster.partition.as_ref().expect("gateway 0 in a namespace").heal();
    }
    let mut writers = Vec::new();
    for s in sending {
        writers.push(s.await.expect("a writer"));
    }
    if let Some(restart) = restart {
        restart.await.expect("the restart task").unwrap_or_else(|e| panic!("{e}"));
    }
    if let Some(thaw) = thaw {
        let state = thaw.await.expect("the thaw task");
        assert_eq!(state, Some('T'), "the node stayed frozen for {FROZEN_FOR:?}");
    }
    if let Some((old, new)) = new_leader {
        eprintln!("partition {partition}: node {old} lost the lead to node {new}");
    }
    assert!(at_fault < total, "the fault came before the last ack ({at_fault} of {total})");
    let max_seq = writers.iter().flat_map(|w| w.acked.iter().map(|(_, s)| *s)).max().expect("acks");
    target.store(max_seq, Ordering::SeqCst);
    let mut views = Vec::new();
    for r in readers {
        views.push(r.await.expect("a reader"));
    }
    let history = writers[0].history().await;
    drop(restore);
    let keyspace = (cluster._keyspace.contact_points.clone(), cluster._keyspace.name.clone());
    (count(&writers, &views, &history), keyspace)
}

fn count(writers: &[Writer], views: &[View], history: &[Value]) -> Counts {
    let mut c = Counts::default();
    // (from, cid) -> the seq its ack gave.
    let mut acked: HashMap<(String, String), u64> = HashMap::new();
    for (k, w) in writers.iter().enumerate() {
        for (cid, seq) in &w.acked {
            acked.insert((format!("writer{k}"), cid.clone()), *seq);
        }
        c.resent += w.retries;
    }
    c.acked = acked.len();
    let mut stored: HashMap<(String, String), Vec<u64>> = HashMap::new();
    let mut previous = 0;
    for m in history {
        let seq = m["seq"].as_u64().expect("seq");
        if seq <= previous {
            c.out_of_order += 1;
        }
        previous = seq;
        stored.entry(identity(m)).or_default().push(seq);
    }
    // Per sender, history in seq order holds its numbers in increasing order.
    let mut last_number: HashMap<String, u64> = HashMap::new();
    for m in history {
        let (from, cid) = identity(m);
        let Some(number) = cid.rsplit('m').next().and_then(|n| n.parse::<u64>().ok()) else { continue };
        let last = last_number.entry(from.clone()).or_insert(0);
        if number < *last {
            if c.out_of_order < 3 {
                eprintln!("out of order: {from}'s {cid} stored after its number {last}");
            }
            c.out_of_order += 1;
        }
        *last = (*last).max(number);
    }
    c.duplicated += stored.values().filter(|seqs| seqs.len() > 1).count();
    let mut delivered: HashSet<(String, String)> = HashSet::new();
    for v in views {
        let mut seen: HashMap<&(String, String), u64> = HashMap::new();
        for (seq, id) in &v.got {
            if seen.insert(id, *seq).is_some() {
                c.duplicated += 1;
            }
            delivered.insert(id.clone());
        }
        c.duplicated += v.conflicts;
        c.out_of_order += v.out_of_order;
        c.recovered_by_sync += v.by_sync;
        c.reader_reconnects += v.reconnects;
    }
    for (id, seq) in &acked {
        let in_history = stored.get(id).is_some_and(|seqs| seqs.contains(seq));
        if !in_history {
            c.missing_from_history += 1;
        }
        for (r, v) in views.iter().enumerate() {
            if v.got.get(seq) != Some(id) {
                if c.missing_from_a_reader < 5 {
                    let before = v.got.range(..*seq).next_back().map(|(s, _)| *s);
                    let after = v.got.range(seq + 1..).next();
                    let after = after.map(|(s, id)| (*s, id.clone(), v.how.get(s).cloned()));
                    eprintln!(
                        "reader {r} lacks {id:?} acked as seq {seq} (history has it: {}; held at that seq: {:?}); \
                         it holds seq {before:?} before, and after it {after:?}; its last is {}",
                        stored.get(id).is_some_and(|s| s.contains(seq)),
                        v.got.get(seq),
                        v.last
                    );
                }
                c.missing_from_a_reader += 1;
            }
        }
        let anywhere = in_history || views.iter().any(|v| v.got.get(seq) == Some(id));
        if !anywhere {
            // The first few, for whoever reads a failure.
            if c.lost < 3 {
                let at = history.iter().find(|m| m["seq"].as_u64() == Some(*seq));
                eprintln!("lost: {id:?} acked as seq {seq}; history there: {at:?}; stored as {:?}", stored.get(id));
            }
            c.lost += 1;
        }
        // Stored, but not at the seq its ack gave: counted out of order.
        if stored.get(id).is_some_and(|seqs| !seqs.contains(seq)) {
            c.out_of_order += 1;
        }
    }
    c
}

fn assert_sound(fault: Fault, c: &Counts) {
    let want = acked_per_fault(fault);
    assert!(c.acked >= want, "`{}`: {} acked of {want}", fault.name(), c.acked);
    assert_eq!((c.lost, c.duplicated), (0, 0), "`{}`: nothing lost, nothing doubled: {c:?}", fault.name());
    assert_eq!(c.missing_from_history, 0, "`{}`: history holds every acked message: {c:?}", fault.name());
    assert_eq!(c.missing_from_a_reader, 0, "`{}`: every reader holds every acked message: {c:?}", fault.name());
}

#[tokio::test]
async fn checker_dispatcher_killed() {
    let c = check(Fault::DispatcherKilled).await;
    assert_sound(Fault::DispatcherKilled, &c);
    assert!(c.resent > 0, "the writers had to send again what the dead dispatcher never answered: {c:?}");
}

#[tokio::test]
async fn checker_gateway_killed() {
    let c = check(Fault::GatewayKilled).await;
    assert_sound(Fault::GatewayKilled, &c);
    assert!(c.reader_reconnects > 0 && c.resent > 0, "clients of the dead gateway moved: {c:?}");
}

#[tokio::test]
async fn checker_gateway_terminated() {
    let c = check(Fault::GatewayTerminated).await;
    assert_sound(Fault::GatewayTerminated, &c);
    assert!(c.reader_reconnects > 0, "the drained gateway's reader moved: {c:?}");
}

#[tokio::test]
async fn checker_kafka_restarted() {
    let c = check(Fault::KafkaRestarted).await;
    assert_sound(Fault::KafkaRestarted, &c);
    assert!(c.resent > 0, "sends went unacknowledged while Kafka was down: {c:?}");
}

#[tokio::test]
async fn checker_kafka3_leader_killed() {
    let c = check(Fault::Kafka3LeaderKilled).await;
    assert_sound(Fault::Kafka3LeaderKilled, &c);
    assert!(c.resent > 0, "sends went unacknowledged until a new leader was elected: {c:?}");
}

#[tokio::test]
async fn checker_kafka3_leader_frozen() {
    let c = check(Fault::Kafka3LeaderFrozen).await;
    assert_sound(Fault::Kafka3LeaderFrozen, &c);
    assert!(c.resent > 0, "sends went unacknowledged while the leader was frozen: {c:?}");
}

#[tokio::test]
async fn checker_kafka_partitioned_from_a_gateway() {
    let c = check(Fault::KafkaPartitionedFromGateway).await;
    assert_sound(Fault::KafkaPartitionedFromGateway, &c);
    assert!(c.resent > 0, "the cut-off gateway's writers went unacknowledged: {c:?}");
}

/// LOCAL_QUORUM is 2 of 3: the writes and reads go on while a node is
/// down (no `resent` is required: the driver moves to the other nodes).
#[tokio::test]
async fn checker_cql3_node_killed() {
    let c = check(Fault::Cql3NodeKilled).await;
    assert_sound(Fault::Cql3NodeKilled, &c);
}

#[tokio::test]
async fn checker_cassandra_restarted() {
    let c = check(Fault::CassandraRestarted).await;
    assert_sound(Fault::CassandraRestarted, &c);
}
