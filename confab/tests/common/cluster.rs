//! A distributed cluster in this process, on the real Kafka and Cassandra
//! from `scripts/infra up kafka cql`: fresh topics and keyspace, then
//! dispatchers and gateways, warmed up until every gateway's writes on every
//! partition are answered.

use std::time::Duration;

use clap::Parser;
use confab::config::{DispatcherConfig, GatewayConfig, MigrateConfig};
use confab::serving::Running;
use confab_store::scylla::ScyllaStore;
use serde_json::json;

use super::{Client, SECRET};

pub const PARTITIONS: u32 = 4;

/// The longest any stage of starting a cluster may take before the test
/// fails with the stage's name (rather than hanging).
const STAGE: Duration = Duration::from_secs(90);

async fn stage<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STAGE, f).await.unwrap_or_else(|_| panic!("{what}: not done in {STAGE:?}"))
}

#[derive(Parser)]
struct Flags<T: clap::Args> {
    #[command(flatten)]
    config: T,
}

pub fn parse<T: clap::Args>(args: &[&str]) -> T {
    Flags::<T>::parse_from(std::iter::once("confab").chain(args.iter().copied())).config
}

pub fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run `scripts/infra up kafka cql` and `source target/infra/env`"))
}

/// Drops a test's keyspace when the test is over, so a test run does not
/// pile up keyspaces in the database: on the CQL nodes it was created on
/// (`scripts/infra up cql3`'s keyspaces on those, not on `cql`'s).
pub struct Keyspace {
    pub name: String,
    /// Comma-separated `host:port`s, as `--cql` takes them.
    pub contact_points: String,
}

fn cql_config(contact_points: &str, keyspace: &str) -> confab_store::scylla::CqlConfig {
    confab_store::scylla::CqlConfig {
        contact_points: contact_points.split(',').map(str::to_owned).collect(),
        keyspace: keyspace.to_owned(),
        replication: Default::default(),
        username: None,
        password: None,
        // A schema change on a loaded node takes a while.
        request_timeout: Duration::from_secs(30),
        tls: None,
        derived_counts: true,
    }
}

impl Drop for Keyspace {
    fn drop(&mut self) {
        // Never a panic in `drop`: it would abort the test binary.
        let config = cql_config(&self.contact_points, &self.name);
        // Drop runs inside the test's runtime; the cleanup gets one of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            // The timer is made inside the runtime: it needs its clock.
            Some(rt.block_on(async {
                // A loaded node can take longer than a request timeout over
                // a schema change: tried again until STAGE has passed.
                let deadline = tokio::time::Instant::now() + STAGE;
                loop {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let e = match tokio::time::timeout(left, ScyllaStore::drop_keyspace(&config)).await {
                        Ok(Ok(())) => return Ok(()),
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => format!("not done in {STAGE:?}"),
                    };
                    if tokio::time::Instant::now() + Duration::from_secs(1) >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }))
        })
        .join();
        match dropped {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => eprintln!("keyspace {} on {} was not dropped: {e}", self.name, self.contact_points),
            _ => eprintln!("keyspace {} on {} was not dropped: the cleanup failed", self.name, self.contact_points),
        }
    }
}

/// Whether the keyspace `name` on the CQL nodes at `contact_points` holds a
/// schema: `false` once it was dropped (a store cannot connect to it and says
/// to run `confab migrate`). Panics when the nodes cannot be asked.
#[allow(dead_code)] // not every test file uses it
pub async fn keyspace_exists(contact_points: &str, name: &str) -> bool {
    match ScyllaStore::connect(&cql_config(contact_points, name)).await {
        Ok(_) => true,
        Err(e) if e.to_string().contains("confab migrate") => false,
        Err(e) => panic!("could not ask {contact_points} about keyspace {name}: {e}"),
    }
}

/// A fresh topic prefix and keyspace name, the keyspace on
/// `CQL_CONTACT_POINTS`.
pub fn names(kind: &str) -> (String, Keyspace) {
    names_on(kind, &std::env::var("CQL_CONTACT_POINTS").unwrap_or_default())
}

/// [`names`], the keyspace on the CQL nodes at `contact_points`.
pub fn names_on(kind: &str, contact_points: &str) -> (String, Keyspace) {
    use std::hash::{BuildHasher, RandomState};
    let id = RandomState::new().hash_one(std::time::SystemTime::now());
    let keyspace = Keyspace { name: format!("{kind}_{id:016x}"), contact_points: contact_points.to_owned() };
    (format!("{kind}-{id:016x}"), keyspace)
}

/// Gateways (named `gw-0`, `gw-1`, ...) and dispatchers, ready for traffic;
/// the keyspace goes when the guard is dropped.
pub async fn start(
    gateways: usize,
    dispatchers: usize,
    gateway_flags: &[&str],
) -> (Vec<Running>, Vec<Running>, Keyspace) {
    start_roles(gateways, dispatchers, gateway_flags, &[]).await
}

/// [`start`] with more flags for the dispatchers too.
pub async fn start_roles(
    gateways: usize,
    dispatchers: usize,
    gateway_flags: &[&str],
    dispatcher_flags: &[&str],
) -> (Vec<Running>, Vec<Running>, Keyspace) {
    let started = start_with(gateways, dispatchers, gateway_flags, dispatcher_flags).await;
    (started.gateways, started.dispatchers, started.keyspace)
}

/// [`start`] with every process (migrate too) reaching the CQL database at
/// `cql` with `cql_flags` (TLS options). The keyspace is dropped directly.
#[allow(dead_code)] // not every test file uses it
pub async fn start_on(
    cql: &str,
    cql_flags: &[&str],
    gateways: usize,
    dispatchers: usize,
    gateway_flags: &[&str],
) -> (Vec<Running>, Vec<Running>, Keyspace) {
    let started = start_full(cql, cql_flags, gateways, dispatchers, gateway_flags, &[]).await;
    (started.gateways, started.dispatchers, started.keyspace)
}

/// A cluster from [`start_with`].
pub struct Started {
    pub gateways: Vec<Running>,
    pub dispatchers: Vec<Running>,
    pub keyspace: Keyspace,
    /// Its Kafka topics' prefix.
    pub topic_prefix: String,
}

/// [`start_roles`], with the topic prefix too.
pub async fn start_with(
    gateways: usize,
    dispatchers: usize,
    gateway_flags: &[&str],
    dispatcher_flags: &[&str],
) -> Started {
    start_full(&env("CQL_CONTACT_POINTS"), &[], gateways, dispatchers, gateway_flags, dispatcher_flags).await
}

async fn start_full(
    cql: &str,
    cql_flags: &[&str],
    gateways: usize,
    dispatchers: usize,
    gateway_flags: &[&str],
    dispatcher_flags: &[&str],
) -> Started {
    let kafka = env("KAFKA_BOOTSTRAP");
    let shared_uploads = in_the_bucket(gateway_flags);
    let gateway_flags: Vec<&str> = shared_uploads.iter().map(String::as_str).collect();
    let gateway_flags = gateway_flags.as_slice();
    let (prefix, guard) = names("dist");
    let keyspace = guard.name.clone();
    // Sparse room heads, as a cluster of one version runs: every read of a
    // room's last seq and count goes through the newest message row.
    let mut backend = vec![
        "--kafka",
        &kafka,
        "--topic-prefix",
        &prefix,
        "--cql",
        cql,
        "--keyspace",
        &keyspace,
        "--cql-derived-counts",
    ];
    backend.extend(cql_flags);
    let partitions = PARTITIONS.to_string();
    let mut args = backend.clone();
    args.extend(["--partitions", &partitions]);
    stage("migrate", confab::distributed::migrate(&parse::<MigrateConfig>(&args))).await.expect("migrate");
    let mut ds = Vec::new();
    for i in 0..dispatchers {
        let mut args = backend.to_vec();
        args.extend(["--admin-listen", "127.0.0.1:0", "--jwt-secret", SECRET]);
        args.extend(dispatcher_flags);
        let d =
            stage("dispatcher start", confab::distributed::start_dispatcher(parse::<DispatcherConfig>(&args))).await;
        ds.push(d.unwrap_or_else(|e| panic!("dispatcher {i}: {e:#}")));
    }
    let mut gs = Vec::new();
    for i in 0..gateways {
        let name = format!("gw-{i}");
        let mut args = backend.to_vec();
        args.extend(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--internal-listen", "127.0.0.1:0"]);
        args.extend(["--jwt-secret", SECRET, "--server-id", &name]);
        args.extend(gateway_flags);
        super::with_test_budgets(&mut args, gateway_flags);
        let g = stage("gateway start", confab::distributed::start_gateway(parse::<GatewayConfig>(&args))).await;
        gs.push(g.unwrap_or_else(|e| panic!("gateway {i}: {e:#}")));
    }
    for (i, g) in gs.iter().enumerate() {
        stage("warm-up", warm_up(g, i)).await;
    }
    Started { gateways: gs, dispatchers: ds, keyspace: guard, topic_prefix: prefix }
}

/// Waits until the gateway's writes on every partition are answered: the
/// dispatchers own the partitions and reach the gateway.
async fn warm_up(gateway: &Running, i: usize) {
    // A token as /v1/auth/login issues it, signed here: the gateways under
    // test may have registration closed.
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let claims = json!({"sub": format!("warmup{i}"), "exp": exp});
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    let mut c = Client::connect(&format!("ws://{}/v1/ws?token={token}", gateway.public())).await;
    for p in 0..PARTITIONS {
        let room =
            (0..).map(|n| format!("warm-{p}-{n}")).find(|r| confab_bus::partition_for(r, PARTITIONS) == p).unwrap();
        loop {
            // A reply lost while links come up is retried: join is idempotent.
            c.send_text(&json!({"id": "w", "op": "join", "room": room}).to_string()).await;
            if tokio::time::timeout(Duration::from_secs(2), c.reply_to(json!("w"))).await.is_ok() {
                break;
            }
        }
    }
}

/// A cluster's gateways share attachments as a deployment's do: through
/// S3-compatible object storage, the server `scripts/infra up s3` starts
/// (`CONFAB_TEST_S3_*`). A test that asks for an uploads directory
/// (`--uploads-dir=DIR`, which standalone uses) gets the bucket instead,
/// the bucket is shared by every test (keys are random
/// upload ids). Without the server's settings the directory stays
/// (the two gateways run on this one host).
fn in_the_bucket(gateway_flags: &[&str]) -> Vec<String> {
    let flags: Vec<String> = gateway_flags.iter().map(|f| f.to_string()).collect();
    let Ok(endpoint) = std::env::var("CONFAB_TEST_S3_ENDPOINT") else { return flags };
    if !flags.iter().any(|f| f.starts_with("--uploads-dir=")) {
        return flags;
    }
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (scripts/infra up s3)"));
    let credentials = std::env::temp_dir().join(format!("confab-s3-credentials-{}", std::process::id()));
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            var("CONFAB_TEST_S3_ACCESS_KEY"),
            var("CONFAB_TEST_S3_SECRET_KEY")
        ),
    )
    .unwrap();
    let mut out: Vec<String> = flags.into_iter().filter(|f| !f.starts_with("--uploads-dir=")).collect();
    out.extend([
        format!("--s3-endpoint={endpoint}"),
        format!("--s3-bucket={}", var("CONFAB_TEST_S3_BUCKET")),
        format!("--s3-region={}", std::env::var("CONFAB_TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".into())),
        format!("--s3-credentials-file={}", credentials.display()),
    ]);
    out
}
