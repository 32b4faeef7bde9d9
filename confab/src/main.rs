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
    /// Print the ChatCluster CustomResourceDefinition as YAML (apply it with
    /// `kubectl apply --server-side -f -`).
    Crd(CrdArgs),
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
}

impl RoleConfig for OperatorConfig {
    fn check(&self) -> Result<(), ConfigError> {
        match &self.watch_namespace {
            Some(ns) if ns.trim().is_empty() => {
                Err(ConfigError::Invalid { field: "watch_namespace", reason: "must not be empty".into() })
            }
            _ => Ok(()),
        }
    }
    fn log_format(&self) -> LogFormat {
        self.ops.log_format
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
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

fn main() -> ExitCode {
    return_large_blocks();
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
        Command::Crd(args) => crd(&args),
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
    let settings = confab_operator::Config { namespace: config.watch_namespace.clone() };
    let operator = confab_operator::Operator::new(client, settings, metrics).await?;
    let admin = confab::serving::bind(config.ops.admin_listen, "admin_listen").await?;
    let admin_addr = admin.local_addr()?;
    tracing::info!("admin listening on http://{admin_addr}");
    let ready: confab::admin::ReadyCheck = std::sync::Arc::new(|| Box::pin(async { Ok(()) }));
    let mut tasks = confab::supervisor::Supervisor::new();
    tasks.spawn("admin", |stop| confab::serving::admin(admin, registry, ready, stop));
    tasks.spawn("operator", |stop| async move {
        operator.run(stop.cancelled_owned()).await;
        Ok(())
    });
    tracing::info!(namespace = config.watch_namespace.as_deref().unwrap_or("(all)"), "operator running");
    Running::new(None, admin_addr, None, tasks).until(confab::shutdown_signal()).await?;
    tracing::info!("operator stopped");
    Ok(())
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
