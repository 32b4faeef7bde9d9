//! `kubectl confab`: a kubectl plugin (kubectl runs `kubectl-confab` from
//! the PATH) to look at and act on ChatClusters. See `kubectl confab --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Look at and act on Confab ChatClusters.
#[derive(Parser)]
#[command(name = "kubectl confab", version)]
struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Each ChatCluster's conditions, and per pod: ready, connections
    /// (gateways), lag (dispatchers), draining (gateways), canary results.
    Status {
        /// One ChatCluster (default: every one in the namespace).
        name: Option<String>,
    },
    /// Drain a gateway pod: evict it (its PodDisruptionBudget permitting);
    /// it tells its clients `bye server_restart`, they reconnect to the other
    /// gateways, and its Deployment starts a replacement.
    Drain {
        /// The gateway pod.
        pod: String,
    },
    /// Write a tar archive of the ChatCluster's resources, the namespace's
    /// Events and the pods' logs (never Secrets), for a bug report.
    Report {
        /// One ChatCluster (default: every one in the namespace).
        name: Option<String>,
        /// Where to write it.
        #[arg(short, long, default_value = "confab-report.tar")]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubectl confab: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let config = kube::Config::infer().await?;
    let ns = cli.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config)?;
    use confab_operator::plugin;
    match cli.command {
        Command::Status { name } => print!("{}", plugin::status(&client, &ns, name.as_deref()).await?),
        Command::Drain { pod } => print!("{}", plugin::drain(&client, &ns, &pod).await?),
        Command::Report { name, output } => {
            let tar = plugin::report(&client, &ns, name.as_deref()).await?;
            std::fs::write(&output, tar)?;
            println!("wrote {}", output.display());
        }
    }
    Ok(())
}
