//! `confab`: parses flags and starts the chosen role.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use confab::config::{
    ConfigError, DispatcherConfig, GatewayConfig, LogFormat, MigrateConfig, RoleConfig, StandaloneConfig, layered,
};
use confab::serving::Running;
use serde::Serialize;
use serde::de::DeserializeOwned;

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

fn main() -> ExitCode {
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
    }
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

/// Runs until SIGTERM or Ctrl-C, then stops politely.
async fn serve(running: Running) -> anyhow::Result<()> {
    confab::shutdown_signal().await;
    tracing::info!("shutdown requested");
    running.stop().await
}
