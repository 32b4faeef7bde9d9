//! `confab-bot`: the example robot user (examples/bots/README.md).

use clap::Parser;

#[derive(Parser)]
#[command(about = "A Confab robot user on the server API and a webhook")]
struct Args {
    /// Where Confab's webhook calls arrive (`confab standalone --webhook http://THIS/`).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// Confab's HTTP base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "CONFAB_URL")]
    server: String,
    /// The bot's user name.
    #[arg(long, default_value = "helpbot")]
    user: String,
    /// A file holding an API key (the key only; or `name:key` as in `--api-key-file`).
    #[arg(long)]
    api_key_file: std::path::PathBuf,
    /// The file given to `confab standalone --webhook-secret-file`.
    #[arg(long)]
    webhook_secret_file: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let args = Args::parse();
    let key = std::fs::read_to_string(&args.api_key_file)?;
    let key = key.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or_default();
    let api_key = key.split_once(':').map_or(key, |(_, k)| k).to_owned();
    let webhook_secret = std::fs::read_to_string(&args.webhook_secret_file)?.trim().to_owned();
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, user = %args.user, server = %args.server, "confab-bot");
    let config = confab_bot::BotConfig { user: args.user, server: args.server, api_key, webhook_secret };
    confab_bot::serve(listener, config).await?;
    Ok(())
}
