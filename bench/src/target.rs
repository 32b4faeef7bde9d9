//! The server under test, started by the benchmark and stopped with it:
//! Confab standalone, a distributed Confab cluster on the infra's Kafka and
//! CQL database, or the Centrifugo peer.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Dialect};

/// The servers' `/v1/auth/*` budget and connection caps: every benchmark
/// user registers and connects from this machine's one address.
const BENCH_AUTH_PER_IP: u32 = 1_000_000;
const BENCH_MAX_CONNECTIONS: usize = 10_000_000;

/// How long a server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `confab standalone`: one process, embedded store, in-process bus.
    Standalone,
    /// `confab migrate`, dispatchers and gateways on real Kafka and CQL.
    Distributed,
    /// The Centrifugo peer (scripts/infra.d/centrifugo).
    Centrifugo,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value = "standalone")]
    pub target: Kind,

    /// The `confab` binary (default: `confab` next to this program, i.e. the same build).
    #[arg(long, value_name = "FILE")]
    pub confab_bin: Option<PathBuf>,

    /// The Centrifugo peer's binary (`scripts/infra up centrifugo` builds it and exports CENTRIFUGO_BIN).
    #[arg(long, env = "CENTRIFUGO_BIN", value_name = "FILE")]
    pub centrifugo_bin: Option<PathBuf>,

    /// Kafka bootstrap servers for `--target distributed`.
    #[arg(long, env = "KAFKA_BOOTSTRAP", value_name = "HOSTS", default_value = "127.0.0.1:19092")]
    pub kafka: String,

    /// CQL contact points for `--target distributed`.
    #[arg(long, env = "CQL_CONTACT_POINTS", value_name = "HOSTS", default_value = "127.0.0.1:19042")]
    pub cql: String,

    /// Gateways of the distributed cluster; connections alternate between them.
    #[arg(long, default_value_t = 1)]
    pub gateways: usize,

    /// Dispatchers of the distributed cluster.
    #[arg(long, default_value_t = 1)]
    pub dispatchers: usize,

    /// Ingress partitions (Kafka partitions of the distributed cluster, bus partitions of standalone).
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,

    /// An extra flag for the standalone server and every gateway, e.g. `--server-arg=--outbound-queue=1024`; repeat.
    #[arg(long = "server-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,

    /// An extra flag for every dispatcher, e.g. `--dispatcher-arg=--cql-derived-counts`; repeat.
    #[arg(long = "dispatcher-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub dispatcher_args: Vec<String>,
}

pub struct Target {
    pub dialect: Dialect,
    /// WebSocket URLs clients connect to (one per gateway).
    pub urls: Vec<String>,
    /// The HTTP API (Confab only), for registering users.
    pub http: Option<String>,
    pub secret: String,
    /// The processes that hold client connections.
    pub gateway_pids: Vec<u32>,
    /// Every process of the server.
    pub all_pids: Vec<u32>,
    /// Every process of the server with its role (`gateway gw-0`,
    /// `dispatcher 1`, ...), for the per-process figures.
    pub processes: Vec<(String, u32)>,
    /// Versions and settings, for the report.
    pub describe: String,
    children: Vec<Child>,
    data_dir: Option<PathBuf>,
    keyspace: Option<confab_store::scylla::CqlConfig>,
}

/// `N` distinct ports free now (bound at once, then let go).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners: Vec<TcpListener> = (0..N).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    let mut ports = [0u16; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// How many times a server process that exited before it was ready is
/// started again on other ports ([`Target::start_process`]).
const START_ATTEMPTS: usize = 3;

fn default_confab_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("confab");
    if bin.exists() {
        return Ok(bin);
    }
    // Under `cargo test` this program sits in target/<profile>/, and so does confab;
    // a test binary sits one level deeper, in deps/.
    if let Some(up) = exe.parent().and_then(Path::parent) {
        let bin = up.join("confab");
        if bin.exists() {
            return Ok(bin);
        }
    }
    bail!("no confab binary next to {}: build it (cargo build --release -p confab) or pass --confab-bin", exe.display())
}

impl Target {
    pub async fn start(args: &TargetArgs, run: &str) -> Result<Target> {
        let secret = format!("bench-secret-{run}-0123456789abcdefghijklmnopqrstuvwxyz");
        let mut t = Target {
            dialect: if args.target == Kind::Centrifugo { Dialect::Centrifugo } else { Dialect::Confab },
            urls: Vec::new(),
            http: None,
            secret,
            gateway_pids: Vec::new(),
            all_pids: Vec::new(),
            processes: Vec::new(),
            describe: String::new(),
            children: Vec::new(),
            data_dir: None,
            keyspace: None,
        };
        match args.target {
            Kind::Standalone => t.start_standalone(args, run).await?,
            Kind::Distributed => t.start_distributed(args, run).await?,
            Kind::Centrifugo => t.start_centrifugo(args).await?,
        }
        Ok(t)
    }

    /// Starts a server process on `N` ports free a moment ago and waits for
    /// its `/readyz`; `flags` makes its arguments and admin port from them.
    /// Another process may take such a port before the server binds it (the
    /// smoke tests run side by side): a process that exits before it is
    /// ready starts again on other ports, up to [`START_ATTEMPTS`] times.
    async fn start_process<const N: usize>(
        &mut self,
        bin: &Path,
        gateway: bool,
        role: &str,
        flags: impl Fn([u16; N]) -> (Vec<String>, u16),
    ) -> Result<[u16; N]> {
        let mut attempt = 1;
        loop {
            let ports = free_ports::<N>()?;
            let (args, admin) = flags(ports);
            self.spawn(bin, &args, gateway, role.to_owned())?;
            match ready(&format!("http://127.0.0.1:{admin}/readyz"), self).await {
                Ok(()) => return Ok(ports),
                Err(e) if attempt < START_ATTEMPTS && self.forget_last_if_exited() => {
                    eprintln!("confab-bench: {role}: {e:#}; starting it again on other ports");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Forgets the process started last when it has exited.
    fn forget_last_if_exited(&mut self) -> bool {
        let Some(last) = self.children.last_mut() else { return false };
        if !matches!(last.try_wait(), Ok(Some(_))) {
            return false;
        }
        self.children.pop();
        self.processes.pop();
        if let Some(pid) = self.all_pids.pop() {
            self.gateway_pids.retain(|p| *p != pid);
        }
        true
    }

    fn spawn(&mut self, program: &Path, args: &[String], gateway: bool, role: String) -> Result<()> {
        let child = Command::new(program)
            .args(args)
            .env("RUST_LOG", std::env::var("CONFAB_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id().context("the server exited at once")?;
        if gateway {
            self.gateway_pids.push(pid);
        }
        self.all_pids.push(pid);
        self.processes.push((role, pid));
        self.children.push(child);
        Ok(())
    }

    async fn start_standalone(&mut self, args: &TargetArgs, run: &str) -> Result<()> {
        let bin = args.confab_bin.clone().map_or_else(default_confab_bin, Ok)?;
        let dir = std::env::temp_dir().join(format!("confab-bench-{run}"));
        std::fs::create_dir_all(&dir)?;
        self.data_dir = Some(dir.clone());
        let secret = self.secret.clone();
        let [port, _] = self
            .start_process(&bin, true, "standalone", |[port, admin]| {
                let mut flags: Vec<String> = vec![
                    "standalone".into(),
                    format!("--listen=127.0.0.1:{port}"),
                    format!("--admin-listen=127.0.0.1:{admin}"),
                    format!("--data={}", dir.display()),
                    format!("--jwt-secret={secret}"),
                    format!("--partitions={}", args.partitions),
                    // Every benchmark user registers from this one address.
                    format!("--auth-per-ip-per-minute={BENCH_AUTH_PER_IP}"),
                    format!("--max-connections={BENCH_MAX_CONNECTIONS}"),
                    format!("--max-connections-per-ip={BENCH_MAX_CONNECTIONS}"),
                ];
                flags.extend(args.server_args.iter().cloned());
                (flags, admin)
            })
            .await?;
        self.urls.push(format!("ws://127.0.0.1:{port}/v1/ws"));
        self.http = Some(format!("http://127.0.0.1:{port}"));
        self.describe = format!("confab standalone ({}), {} partitions", bin.display(), args.partitions);
        Ok(())
    }

    async fn start_distributed(&mut self, args: &TargetArgs, run: &str) -> Result<()> {
        let bin = args.confab_bin.clone().map_or_else(default_confab_bin, Ok)?;
        let keyspace = format!("bench_{run}");
        let backend = [
            format!("--kafka={}", args.kafka),
            format!("--topic-prefix=bench-{run}"),
            format!("--cql={}", args.cql),
            format!("--keyspace={keyspace}"),
        ];
        self.keyspace = Some(confab_store::scylla::CqlConfig {
            contact_points: args.cql.split(',').map(str::to_owned).collect(),
            keyspace,
            replication: Default::default(),
            username: None,
            password: None,
            request_timeout: Duration::from_secs(10),
            tls: None,
            derived_counts: false,
        });
        let mut migrate = vec!["migrate".to_owned(), format!("--partitions={}", args.partitions)];
        migrate.extend(backend.iter().cloned());
        let status = Command::new(&bin).args(&migrate).stdout(Stdio::null()).status().await?;
        if !status.success() {
            bail!("confab migrate failed ({status}); is the infra up? (scripts/infra up kafka cql)");
        }
        let secret = self.secret.clone();
        for d in 0..args.dispatchers {
            self.start_process(&bin, false, &format!("dispatcher {d}"), |[admin]| {
                let mut flags = vec!["dispatcher".to_owned(), format!("--admin-listen=127.0.0.1:{admin}")];
                flags.push(format!("--jwt-secret={secret}"));
                flags.extend(backend.iter().cloned());
                flags.extend(args.dispatcher_args.iter().cloned());
                (flags, admin)
            })
            .await?;
        }
        for g in 0..args.gateways {
            let [port, ..] = self
                .start_process(&bin, true, &format!("gateway gw-{g}"), |[port, admin, internal]| {
                    let mut flags = vec![
                        "gateway".to_owned(),
                        format!("--listen=127.0.0.1:{port}"),
                        format!("--admin-listen=127.0.0.1:{admin}"),
                        format!("--internal-listen=127.0.0.1:{internal}"),
                        format!("--server-id=gw-{g}"),
                        format!("--jwt-secret={secret}"),
                        format!("--auth-per-ip-per-minute={BENCH_AUTH_PER_IP}"),
                        format!("--max-connections={BENCH_MAX_CONNECTIONS}"),
                        format!("--max-connections-per-ip={BENCH_MAX_CONNECTIONS}"),
                    ];
                    flags.extend(backend.iter().cloned());
                    flags.extend(args.server_args.iter().cloned());
                    (flags, admin)
                })
                .await?;
            let url = format!("ws://127.0.0.1:{port}/v1/ws");
            warm_up(&url, &self.secret, run, args.partitions).await?;
            self.urls.push(url);
            self.http.get_or_insert(format!("http://127.0.0.1:{port}"));
        }
        self.describe = format!(
            "confab distributed: {} gateway(s), {} dispatcher(s), {} partitions, Kafka {}, CQL {}",
            args.gateways, args.dispatchers, args.partitions, args.kafka, args.cql
        );
        Ok(())
    }

    async fn start_centrifugo(&mut self, args: &TargetArgs) -> Result<()> {
        let bin = args.centrifugo_bin.clone().context(
            "no Centrifugo peer: run `scripts/infra up centrifugo` and `source target/infra/env` (CENTRIFUGO_BIN), or pass --centrifugo-bin",
        )?;
        let [port] = free_ports()?;
        let flags = vec![format!("-addr=127.0.0.1:{port}"), format!("-secret={}", self.secret)];
        self.spawn(&bin, &flags, true, "centrifugo".into())?;
        ready(&format!("http://127.0.0.1:{port}/health"), self).await?;
        self.urls.push(format!("ws://127.0.0.1:{port}/connection/websocket"));
        self.describe = format!("Centrifugo peer ({})", bin.display());
        Ok(())
    }

    /// The CQL statements run so far on each table of a distributed
    /// target's keyspace (`table -> (reads, writes)`); `None` elsewhere or
    /// when the database does not say (before Cassandra 4.1).
    pub async fn cql_counts(&self) -> Option<std::collections::BTreeMap<String, (u64, u64)>> {
        let ks = self.keyspace.as_ref()?;
        match confab_store::scylla::ScyllaStore::statement_counts(ks).await {
            Ok(counts) => Some(counts),
            Err(e) => {
                eprintln!("bench: no CQL statement counts: {e}");
                None
            }
        }
    }

    /// Registers users (Confab checks that a direct message's recipient exists).
    pub async fn register(&self, names: &[String]) -> Result<()> {
        let Some(http) = &self.http else { return Ok(()) };
        let client = reqwest::Client::new();
        let url = format!("{http}/v1/auth/register");
        use futures_util::StreamExt;
        let results: Vec<Result<()>> = futures_util::stream::iter(names.iter().map(|name| {
            let (client, url) = (&client, &url);
            async move {
                let body = serde_json::json!({"username": name, "password": "bench-password"});
                let r = client.post(url).json(&body).send().await?;
                if r.status().as_u16() != 201 {
                    bail!("register {name}: {} {}", r.status(), r.text().await.unwrap_or_default());
                }
                Ok(())
            }
        }))
        .buffer_unordered(8)
        .collect()
        .await;
        results.into_iter().collect()
    }

    /// Stops the processes and drops the cluster's keyspace.
    pub async fn stop(mut self) {
        for child in &mut self.children {
            if let Some(pid) = child.id() {
                // SIGTERM first: the servers drain and exit; SIGKILL if they take long.
                let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            }
        }
        for child in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(15), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
        if let Some(dir) = self.data_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(ks) = self.keyspace.take() {
            let _ = confab_store::scylla::ScyllaStore::drop_keyspace(&ks).await;
        }
    }

    pub fn exited(&mut self) -> Option<String> {
        self.children.iter_mut().find_map(|c| match c.try_wait() {
            Ok(Some(status)) => Some(format!("a server process exited: {status}")),
            _ => None,
        })
    }
}

async fn ready(url: &str, target: &mut Target) -> Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(r) = client.get(url).timeout(Duration::from_secs(2)).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if let Some(why) = target.exited() {
            bail!("{why} before {url} was ready");
        }
        if Instant::now() > deadline {
            bail!("{url} not ready after {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a new gateway's writes on every partition are answered:
/// the dispatchers own the partitions and reach the gateway.
async fn warm_up(url: &str, secret: &str, run: &str, partitions: u32) -> Result<()> {
    let token = client::token(secret, &format!("{run}warm"));
    let (mut ws, _) = client::setup(Dialect::Confab, url, "127.0.0.1".parse()?, &token, &[]).await?;
    let deadline = Instant::now() + READY_TIMEOUT;
    for p in 0..partitions {
        let room = (0..).map(|n| format!("{run}-warm-{p}-{n}")).find(|r| confab_bus::partition_for(r, partitions) == p);
        let room = room.expect("some name falls in every partition");
        loop {
            ws.send(Message::text(serde_json::json!({"id": p, "op": "join", "room": room}).to_string())).await?;
            let answered = tokio::time::timeout(Duration::from_secs(2), async {
                use futures_util::StreamExt;
                while let Some(Ok(msg)) = ws.next().await {
                    if let Message::Text(t) = msg
                        && client::classify(Dialect::Confab, t.as_str())
                            == (client::Incoming::Reply { id: u64::from(p), error: None })
                    {
                        return true;
                    }
                }
                false
            })
            .await;
            if answered == Ok(true) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the cluster did not answer writes on partition {p} within {READY_TIMEOUT:?}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ports one server gets are distinct: all are bound at once.
    #[test]
    fn ports_picked_together_are_distinct() {
        for _ in 0..100 {
            let [a, b, c] = free_ports::<3>().unwrap();
            assert!(a != b && b != c && a != c, "{a} {b} {c}");
        }
    }
}
