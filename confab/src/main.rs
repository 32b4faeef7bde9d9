//! `confab`: parses flags and starts the chosen role.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use confab::config::{
    ConfigError, DispatcherConfig, GatewayConfig, LogFormat, MigrateConfig, OpsConfig, RoleConfig, StandaloneConfig,
    layered,
};
use confab::serving::Running;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// Confab: an instant-messaging platform (rooms, direct messages, history,
/// multi-device sync, presence) over WebSocket.
///
/// Every option can also be set by its CONFAB_* variable or by a key of the
/// TOML file given with --config (keys are the option names with
/// underscores: `admin_listen = "127.0.0.1:9090"`). Flags beat variables,
/// which beat the file.
#[derive(Parser)]
#[command(name = "confab", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once; boxing the settings would buy nothing")]
enum Command {
    /// Run everything in one process: gateway, dispatcher, an embedded store
    /// on local disk, an in-process bus and the web client.
    Standalone(WithFile<StandaloneConfig>),
    /// Create the Kafka topics and the CQL schema of a distributed cluster
    /// (idempotent).
    Migrate(WithFile<MigrateConfig>),
    /// Run a gateway of a distributed cluster: client sessions, writes to
    /// Kafka, reads from the CQL database, pushes from dispatchers.
    Gateway(WithFile<GatewayConfig>),
    /// Run a dispatcher of a distributed cluster: consume the ingress topic,
    /// dedupe, persist, ack and push to the gateways.
    Dispatcher(WithFile<DispatcherConfig>),
    /// Run the Kubernetes operator: reconcile ChatCluster resources into
    /// gateways, dispatchers and their Services (credentials from the pod's
    /// ServiceAccount, or KUBECONFIG).
    Operator(WithFile<OperatorConfig>),
    /// Run a synthetic chat user that sends a message through every gateway
    /// every few seconds and checks every gateway delivers it (metrics
    /// confab_canary_* on the admin port).
    Canary(WithFile<confab::canary::CanaryConfig>),
    /// Print the ChatCluster CustomResourceDefinition as YAML (apply it with
    /// `kubectl apply --server-side -f -`).
    Crd(CrdArgs),
    /// A terminal chat client: `confab chat --server URL [--user NAME]`
    /// (full screen; `--plain` for a line mode).
    Chat(confab::chat::ChatArgs),
}

/// `confab operator`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
struct OperatorConfig {
    #[command(flatten)]
    #[serde(flatten)]
    ops: OpsConfig,

    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "CONFAB_WATCH_NAMESPACE", value_name = "NAMESPACE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    watch_namespace: Option<String>,

    /// Elect a leader among the operator's replicas with a Lease: only its
    /// holder reconciles. Off: this process reconciles at once (run one).
    #[arg(long, env = "CONFAB_LEADER_ELECTION", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = true)]
    #[serde(default = "yes")]
    leader_election: bool,

    /// Namespace of the leader election Lease (default: POD_NAMESPACE, the
    /// operator's own namespace in a pod; else --watch-namespace; else
    /// `default`).
    #[arg(long, env = "CONFAB_LEADER_ELECTION_NAMESPACE", value_name = "NAMESPACE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    leader_election_namespace: Option<String>,

    /// Name of the leader election Lease, shared by the replicas.
    #[arg(long, env = "CONFAB_LEADER_ELECTION_LEASE", value_name = "NAME", default_value = "confab-operator")]
    #[serde(default = "default_lease")]
    leader_election_lease: String,

    /// How long the Lease stays held when its holder stops renewing it: the
    /// longest a dead leader delays its successor (it renews a third of
    /// this before expiry).
    #[arg(long, env = "CONFAB_LEADER_ELECTION_LEASE_SECONDS", value_name = "SECONDS", default_value_t = 15)]
    #[serde(default = "default_lease_seconds")]
    leader_election_lease_seconds: u64,
}

fn yes() -> bool {
    true
}
fn default_lease() -> String {
    "confab-operator".into()
}
fn default_lease_seconds() -> u64 {
    15
}

impl RoleConfig for OperatorConfig {
    fn check(&self) -> Result<(), ConfigError> {
        match &self.watch_namespace {
            Some(ns) if ns.trim().is_empty() => {
                Err(ConfigError::Invalid { field: "watch_namespace", reason: "must not be empty".into() })
            }
            _ => Ok(()),
        }?;
        if self.leader_election_lease_seconds < 2 {
            return Err(ConfigError::Invalid {
                field: "leader_election_lease_seconds",
                reason: "must be at least 2".into(),
            });
        }
        if self.leader_election_lease.trim().is_empty() {
            return Err(ConfigError::Invalid { field: "leader_election_lease", reason: "must not be empty".into() });
        }
        Ok(())
    }
    fn log_format(&self) -> LogFormat {
        self.ops.log_format
    }
}

impl OperatorConfig {
    fn operator(&self) -> confab_operator::Config {
        confab_operator::Config { namespace: self.watch_namespace.clone(), ..Default::default() }
    }

    /// The Lease, when electing a leader: in the operator's namespace, held
    /// under the pod's name (else host name and process id).
    fn election(&self) -> Option<confab_operator::leader::Election> {
        let env = |name| std::env::var(name).ok().filter(|v: &String| !v.trim().is_empty());
        self.leader_election.then(|| confab_operator::leader::Election {
            namespace: self
                .leader_election_namespace
                .clone()
                .or_else(|| env("POD_NAMESPACE"))
                .or_else(|| self.watch_namespace.clone())
                .unwrap_or_else(|| "default".into()),
            lease: self.leader_election_lease.clone(),
            identity: env("POD_NAME").unwrap_or_else(|| {
                let host = hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
                format!("{host}-{}", std::process::id())
            }),
            lease_seconds: self.leader_election_lease_seconds,
        })
    }
}

#[derive(Args)]
struct CrdArgs {
    /// Instead of the CRD, print the objects the operator would apply for
    /// the ChatCluster in FILE (YAML): a dry run, and what CI validates
    /// against the Kubernetes schemas.
    #[arg(long, value_name = "FILE")]
    children: Option<PathBuf>,
}

#[derive(Args)]
struct WithFile<T: Args> {
    /// TOML configuration file.
    #[arg(long, env = "CONFAB_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: T,
}

/// The process's log, on stdout, at the level of RUST_LOG (default: info).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    install_logging(format, filter, ansi, std::io::stdout);
}

/// `init` also makes the `log` crate's records events of this subscriber,
/// under the same filter (tracing-subscriber's `tracing-log` feature): what
/// librdkafka logs (through rdkafka's client contexts) and rustls' TLS
/// failures. rdkafka sets librdkafka's own log level from that filter when it
/// makes a client, so logging must be set up before any Kafka client is.
fn install_logging<W>(format: LogFormat, filter: EnvFilter, ansi: bool, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(writer);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// The settings of subcommand `name`, layered over its config file.
fn settings<T>(matches: &ArgMatches, name: &str, file: Option<&std::path::Path>) -> Result<T, ConfigError>
where
    T: Args + FromArgMatches + Serialize + DeserializeOwned,
{
    let sub = matches.subcommand_matches(name).expect("the subcommand matched");
    layered::<T>(sub, file)
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("confab: invalid configuration: {e}");
    ExitCode::from(2)
}

/// Allocations of a megabyte or more get pages of their own, returned to
/// the system when freed. glibc otherwise raises that threshold to the
/// largest block freed so far, so after the first 19 MiB password hash every
/// later one came from a malloc arena and stayed resident there (hundreds of
/// megabytes in a gateway after a storm of logins).
fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Raises the soft limit on open files to the hard limit: every client
/// connection is a file descriptor, and the usual soft limit (1024) is far
/// below what a gateway holds.
fn raise_fd_limit() {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit and setrlimit only read and write `limit`.
        let (got, raised) = unsafe {
            let got = libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0;
            let before = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            (got.then_some(before), got && libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0)
        };
        match got {
            Some(before) if raised => tracing::info!(from = before, to = limit.rlim_max, "open file limit"),
            Some(before) => {
                tracing::warn!(limit = before, error = %std::io::Error::last_os_error(), "cannot raise the open file limit")
            }
            None => tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open file limit"),
        }
    }
}

fn main() -> ExitCode {
    return_large_blocks();
    // The CQL driver's rustls brings the aws-lc-rs provider beside ring;
    // with two compiled in, rustls picks none by itself (the Kubernetes
    // client asks it to). Confab uses ring everywhere.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Standalone(args) => match configured::<StandaloneConfig>(&matches, "standalone", &args) {
            Ok(config) => run(async move { serve(confab::standalone::start(config).await?).await }),
            Err(code) => code,
        },
        Command::Gateway(args) => match configured::<GatewayConfig>(&matches, "gateway", &args) {
            Ok(config) => run(async move { serve(confab::distributed::start_gateway(config).await?).await }),
            Err(code) => code,
        },
        Command::Dispatcher(args) => match configured::<DispatcherConfig>(&matches, "dispatcher", &args) {
            Ok(config) => run(async move { serve(confab::distributed::start_dispatcher(config).await?).await }),
            Err(code) => code,
        },
        Command::Migrate(args) => match configured::<MigrateConfig>(&matches, "migrate", &args) {
            Ok(config) => run(async move { confab::distributed::migrate(&config).await }),
            Err(code) => code,
        },
        Command::Operator(args) => match configured::<OperatorConfig>(&matches, "operator", &args) {
            Ok(config) => run(operator(config)),
            Err(code) => code,
        },
        Command::Canary(args) => match configured::<confab::canary::CanaryConfig>(&matches, "canary", &args) {
            Ok(config) => run(canary(config)),
            Err(code) => code,
        },
        Command::Crd(args) => crd(&args),
        Command::Chat(args) => run(confab::chat::run(args)),
    }
}

fn crd(args: &CrdArgs) -> ExitCode {
    let Some(path) = &args.children else {
        print!("{}", confab_operator::crd_yaml());
        return ExitCode::SUCCESS;
    };
    let rendered = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e}", path.display()))
        .and_then(|yaml| confab_operator::render_children(&yaml).map_err(|e| format!("{}: {e}", path.display())));
    match rendered {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("confab crd: {e}");
            ExitCode::from(2)
        }
    }
}

/// The operator and its admin port (/metrics, /healthz, /readyz) until
/// SIGTERM or Ctrl-C.
async fn operator(config: OperatorConfig) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    let metrics = confab_operator::metrics::Metrics::new(&registry)?;
    let client = confab_operator::client().await?;
    let settings = config.operator();
    let operator = confab_operator::Operator::new(client.clone(), settings, metrics.clone()).await?;
    let admin = confab::serving::bind(config.ops.admin_listen, "admin_listen").await?;
    let admin_addr = admin.local_addr()?;
    tracing::info!("admin listening on http://{admin_addr}");
    let ready: confab::admin::ReadyCheck = std::sync::Arc::new(|| Box::pin(async { Ok(()) }));
    let mut tasks = confab::supervisor::Supervisor::new();
    tasks.spawn("admin", |stop| confab::serving::admin(admin, registry, ready, stop));
    match config.election() {
        Some(election) => tasks.spawn("operator", |stop| async move {
            confab_operator::leader::run(client, election, operator, metrics, stop.cancelled_owned()).await?;
            Ok(())
        }),
        None => tasks.spawn("operator", |stop| async move {
            metrics.set_leader(true);
            operator.run(stop.cancelled_owned()).await;
            Ok(())
        }),
    }
    tracing::info!(namespace = config.watch_namespace.as_deref().unwrap_or("(all)"), "operator running");
    Running::new(None, admin_addr, None, tasks).until(confab::shutdown_signal()).await?;
    tracing::info!("operator stopped");
    Ok(())
}

/// The canary and its admin port (/metrics, /healthz, /readyz) until
/// SIGTERM or Ctrl-C.
async fn canary(config: confab::canary::CanaryConfig) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    let metrics = confab::canary::CanaryMetrics::new(&registry)?;
    let admin = confab::serving::bind(config.ops.admin_listen, "admin_listen").await?;
    let admin_addr = admin.local_addr()?;
    tracing::info!("admin listening on http://{admin_addr}");
    let ready: confab::admin::ReadyCheck = std::sync::Arc::new(|| Box::pin(async { Ok(()) }));
    let mut tasks = confab::supervisor::Supervisor::new();
    tasks.spawn("admin", |stop| confab::serving::admin(admin, registry, ready, stop));
    tasks.spawn("canary", |stop| confab::canary::run(config, metrics, stop));
    Running::new(None, admin_addr, None, tasks).until(confab::shutdown_signal()).await
}

/// The role's settings, checked, with logging set up; exit code 2 otherwise.
fn configured<T>(matches: &ArgMatches, name: &str, args: &WithFile<T>) -> Result<T, ExitCode>
where
    T: Args + FromArgMatches + Serialize + DeserializeOwned + RoleConfig,
{
    let config =
        settings::<T>(matches, name, args.config.as_deref()).and_then(|c| c.check().map(|()| c)).map_err(fail)?;
    init_logging(config.log_format());
    Ok(config)
}

fn run(main: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("confab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs until SIGTERM or Ctrl-C, then stops politely; fails as soon as a
/// task of the role stops on its own.
async fn serve(running: Running) -> anyhow::Result<()> {
    running.until(confab::shutdown_signal()).await
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use clap::Arg;
    use confab::config::ServerConfig;

    use super::*;

    /// The roles whose options are settings (not `crd`).
    const ROLES: [&str; 5] = ["standalone", "gateway", "dispatcher", "migrate", "operator"];

    /// A role's options, as clap knows them (without `--config` and `--help`).
    fn options(role: &str) -> Vec<Arg> {
        let cli = Cli::command();
        let sub = cli.find_subcommand(role).expect("a role");
        sub.get_arguments().filter(|a| a.get_long().is_some() && a.get_id() != "config").cloned().collect()
    }

    /// A value of `arg` that is not its default.
    fn other_value(arg: &Arg) -> String {
        let default = arg.get_default_values().first().map(|v| v.to_string_lossy().into_owned());
        let possible = arg.get_possible_values();
        if !possible.is_empty() {
            return possible.iter().map(|p| p.get_name().to_owned()).find(|p| Some(p) != default.as_ref()).unwrap();
        }
        if let Some(Ok(n)) = default.as_deref().map(str::parse::<u64>) {
            return (n + 1).to_string();
        }
        match arg.get_value_names().and_then(|names| names.first()).map(|n| n.as_str()) {
            Some("ADDR") => "127.0.0.1:1".into(),
            Some("KEY=VALUE") => "client.id=other".into(),
            Some("N") => "1".into(),
            Some("DAYS") => "30".into(),
            _ => "other".into(),
        }
    }

    /// Options clap accepts only with another.
    fn companion(id: &str) -> &'static [&'static str] {
        match id {
            "tls_cert" => &["--tls-key", "key.pem"],
            "tls_key" => &["--tls-cert", "cert.pem"],
            "tcp_tls_cert" => &["--tcp-tls-key", "key.pem"],
            "tcp_tls_key" => &["--tcp-tls-cert", "cert.pem"],
            "internal_tls_cert" => &["--internal-tls-key", "key.pem"],
            "internal_tls_key" => &["--internal-tls-cert", "cert.pem"],
            "internal_tls_client_ca" => &["--internal-tls-cert", "cert.pem", "--internal-tls-key", "key.pem"],
            "internal_tls_client_cert" => &["--internal-tls-client-key", "key.pem", "--internal-tls-ca", "ca.pem"],
            "internal_tls_client_key" => &["--internal-tls-client-cert", "cert.pem", "--internal-tls-ca", "ca.pem"],
            "internal_tls_server_name" => &["--internal-tls-ca", "ca.pem"],
            _ => &[],
        }
    }

    fn matches(role: &str, args: &[&str]) -> ArgMatches {
        let argv = ["confab", role].into_iter().chain(args.iter().copied());
        let m = Cli::command().try_get_matches_from(argv).unwrap_or_else(|e| panic!("confab {role} {args:?}: {e}"));
        m.subcommand_matches(role).unwrap().clone()
    }

    /// What the binary's serving code reads of `ServerConfig` itself; the
    /// rest goes to the gateway through `gateway()`.
    fn serving(s: &ServerConfig) -> impl Debug + '_ {
        let limits = s.connection_limits.limits();
        let tokens = (&s.jwt_public_keys, s.token_ttl_secs, s.max_token_lifetime_secs);
        let tcp = (s.tcp_listen, &s.tcp_tls_cert, &s.tcp_tls_key);
        let blobs = &s.object_store;
        let api = (&s.api_key_file, s.api_rate_per_second, s.api_rate_burst);
        (s.listen, &s.tls_cert, &s.tls_key, tcp, &s.secret, tokens, s.drain_grace_ms, limits, api, (blobs, &s.uploads))
    }

    /// Everything `role` hands on from its settings: the libraries' configs,
    /// and what the binary reads itself (listeners, TLS, tokens, logs).
    fn handed(role: &str, m: &ArgMatches) -> String {
        fn get<T: FromArgMatches>(m: &ArgMatches) -> T {
            T::from_arg_matches(m).unwrap()
        }
        match role {
            "standalone" => {
                let c: StandaloneConfig = get(m);
                let hooks = &c.hooks;
                format!(
                    "{:?}",
                    (
                        c.gateway(),
                        c.dispatcher(),
                        serving(&c.server),
                        &c.ops,
                        &c.data,
                        c.partitions,
                        hooks,
                        c.webhook_journal_bytes
                    )
                )
            }
            "gateway" => {
                let c: GatewayConfig = get(m);
                let bound = "127.0.0.1:7070".parse().unwrap();
                let b = &c.backend;
                let libraries = (c.gateway(bound), b.kafka().unwrap(), b.cql());
                let internal_tls = (&c.internal_tls_cert, &c.internal_tls_key, &c.internal_tls_client_ca);
                format!(
                    "{:?}",
                    (
                        libraries,
                        serving(&c.server),
                        &c.ops,
                        c.internal_listen,
                        c.advertised_internal(bound),
                        internal_tls
                    )
                )
            }
            "dispatcher" => {
                let c: DispatcherConfig = get(m);
                let push_tls = (
                    &c.internal_tls_ca,
                    &c.internal_tls_server_name,
                    &c.internal_tls_client_cert,
                    &c.internal_tls_client_key,
                );
                format!(
                    "{:?}",
                    (
                        c.dispatcher(),
                        c.backend.kafka().unwrap(),
                        c.backend.cql(),
                        &c.secret,
                        &c.ops,
                        push_tls,
                        (&c.hooks, c.max_text_bytes)
                    )
                )
            }
            "migrate" => {
                let c: MigrateConfig = get(m);
                let b = &c.backend;
                let replication = (c.kafka_replication, c.kafka_min_insync_replicas);
                format!("{:?}", (b.kafka().unwrap(), c.cql(), c.partitions, replication, c.log_format))
            }
            "operator" => {
                let c: OperatorConfig = get(m);
                format!("{:?}", (c.operator(), &c.ops, c.election()))
            }
            other => panic!("no role {other}"),
        }
    }

    /// The settings of `role` as `T`, serialized as the file would hold them.
    fn as_table(role: &str, m: &ArgMatches) -> toml::Table {
        fn table<T: FromArgMatches + Serialize>(m: &ArgMatches) -> toml::Table {
            toml::Table::try_from(T::from_arg_matches(m).unwrap()).unwrap()
        }
        match role {
            "standalone" => table::<StandaloneConfig>(m),
            "gateway" => table::<GatewayConfig>(m),
            "dispatcher" => table::<DispatcherConfig>(m),
            "migrate" => table::<MigrateConfig>(m),
            "operator" => table::<OperatorConfig>(m),
            other => panic!("no role {other}"),
        }
    }

    /// `role`'s settings layered over `file`, as a table.
    fn from_file(role: &str, file: &std::path::Path) -> toml::Table {
        fn table<T: Args + FromArgMatches + Serialize + DeserializeOwned>(
            m: &ArgMatches,
            file: &std::path::Path,
        ) -> toml::Table {
            toml::Table::try_from(layered::<T>(m, Some(file)).unwrap()).unwrap()
        }
        let m = matches(role, &[]);
        match role {
            "standalone" => table::<StandaloneConfig>(&m, file),
            "gateway" => table::<GatewayConfig>(&m, file),
            "dispatcher" => table::<DispatcherConfig>(&m, file),
            "migrate" => table::<MigrateConfig>(&m, file),
            "operator" => table::<OperatorConfig>(&m, file),
            other => panic!("no role {other}"),
        }
    }

    /// A new option that nothing reads fails here: every option, set to a
    /// value other than its default, by flag or by file key, changes what its
    /// role hands to the libraries or reads itself.
    #[test]
    fn every_option_changes_what_its_role_hands_on() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("confab.toml");
        for role in ROLES {
            let default = handed(role, &matches(role, &[]));
            for arg in options(role) {
                let (id, flag, value) =
                    (arg.get_id().as_str(), format!("--{}", arg.get_long().unwrap()), other_value(&arg));
                let mut args = vec![flag.as_str(), value.as_str()];
                args.extend(companion(id));
                let set = matches(role, &args);
                assert_ne!(handed(role, &set), default, "`confab {role} {flag} {value}` changes nothing {role} does");

                // The same value as a file key.
                let key_value = as_table(role, &set).remove(id).unwrap_or_else(|| panic!("{role}: no file key {id}"));
                std::fs::write(&file, toml::Table::from_iter([(id.to_owned(), key_value.clone())]).to_string())
                    .unwrap();
                assert_eq!(from_file(role, &file).get(id), Some(&key_value), "{role}: file key {id}");
            }
        }
    }

    /// The README's configuration tables list every option of the roles
    /// they describe, with its flag, its variable (when it is not the flag's
    /// name in capitals after `CONFAB_`) and its default.
    #[test]
    fn the_readme_lists_every_option_with_its_flag_and_default() {
        let readme = include_str!("../../README.md");
        let rows: Vec<Vec<&str>> =
            readme.lines().filter(|l| l.starts_with("| `")).map(|l| l.split(" | ").collect()).collect();
        for role in ["standalone", "gateway", "dispatcher", "migrate"] {
            for arg in options(role) {
                let long = arg.get_long().unwrap();
                let key = format!("`{}`", arg.get_id());
                let (flag, flag_and_value) = (format!("`--{long}`"), format!("`--{long} "));
                let default = arg.get_default_values().first().map(|d| format!("`{}`", d.to_string_lossy()));
                let env = arg.get_env().unwrap().to_str().unwrap();
                let env_by_rule = env == format!("CONFAB_{}", long.to_uppercase().replace('-', "_"));
                let listed = rows.iter().any(|r| {
                    r[0].contains(&key)
                        && (r[1].contains(&flag) || r[1].contains(&flag_and_value))
                        && (env_by_rule || r[1].contains(env))
                        && default.as_ref().is_none_or(|d| r[2].contains(d.as_str()))
                });
                assert!(listed, "README.md: no row for {key} ({flag}, {env}, default {default:?}) of `confab {role}`");
            }
        }
    }

    /// A `MakeWriter` that keeps what is written.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    /// The one test in this binary that installs the global subscriber.
    #[test]
    fn log_crate_records_reach_the_process_log_at_its_level() {
        let out = Captured::default();
        install_logging(LogFormat::Json, EnvFilter::new("info"), false, out.clone());
        log::warn!(target: "librdkafka", "librdkafka: FAIL [thrd:127.0.0.1:1/bootstrap]: Connection refused");
        log::debug!(target: "librdkafka", "below the level");
        tracing::info!("a tracing event");
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let warn =
            lines.iter().find(|l| l["fields"]["message"].as_str().is_some_and(|m| m.contains("Connection refused")));
        let warn = warn.unwrap_or_else(|| panic!("the log record is not in the output:\n{text}"));
        assert_eq!(warn["level"], "WARN");
        assert_eq!(warn["target"], "librdkafka");
        assert!(!text.contains("below the level"), "{text}");
        assert!(text.contains("a tracing event"), "{text}");

        // rdkafka sets librdkafka's own log level from the same filter.
        use rdkafka::config::RDKafkaLogLevel;
        assert!(matches!(rdkafka::ClientConfig::new().log_level, RDKafkaLogLevel::Info));
    }
}
