//! `confab`: parses flags and starts the chosen mode.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use confab::config::{LogFormat, StandaloneConfig, layered};

/// Confab: an instant-messaging platform (rooms, direct messages, history,
/// multi-device sync, presence) over WebSocket.
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
    ///
    /// Every option can also be set by its CONFAB_* variable or by a key of
    /// the TOML file given with --config (keys are the option names with
    /// underscores: `admin_listen = "127.0.0.1:9090"`). Flags beat variables,
    /// which beat the file.
    Standalone(StandaloneArgs),
}

#[derive(clap::Args)]
struct StandaloneArgs {
    /// TOML configuration file.
    #[arg(long, env = "CONFAB_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: StandaloneConfig,
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

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Standalone(args) => {
            let sub = matches.subcommand_matches("standalone").expect("the standalone subcommand matched");
            let config =
                match layered::<StandaloneConfig>(sub, args.config.as_deref()).and_then(|c| c.validate().map(|()| c)) {
                    Ok(config) => config,
                    Err(e) => {
                        eprintln!("confab: invalid configuration: {e}");
                        return ExitCode::from(2);
                    }
                };
            init_logging(config.log_format);
            run(standalone(config))
        }
    }
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

async fn standalone(config: StandaloneConfig) -> anyhow::Result<()> {
    let running = confab::standalone::start(config).await?;
    confab::shutdown_signal().await;
    tracing::info!("shutdown requested");
    running.stop().await
}
