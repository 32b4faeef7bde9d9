//! `confab chat`: a terminal client of a Confab server.
//!
//! [`engine`] holds the connection: it connects over WebSocket, reconnects
//! with backoff, catches up with `rooms` and `sync` after every (re)connect,
//! and resends every `send` not yet acknowledged with its original `cid`, so
//! a restart of the server loses nothing. [`command`] parses the slash
//! commands both front ends share. The front ends are [`tui`] (full screen:
//! rooms with unread counts, the conversation, an input line, a status line)
//! and [`plain`] (`--plain`: one message a line on stdout, one line of stdin
//! sent to the current room, for pipes and scripts).

pub mod command;
pub mod engine;
pub mod plain;
pub mod tui;

use anyhow::{Context, bail};
use clap::Args;

/// `confab chat`.
#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// The server: its HTTP address, e.g. `http://127.0.0.1:8080`
    /// (`ws://` works too).
    #[arg(long, env = "CONFAB_SERVER", value_name = "URL")]
    pub server: String,

    /// The user name to sign in as; asked for when neither it nor a token
    /// is given.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// A token instead of a password (from `/v1/auth/login`, or an
    /// application's).
    #[arg(long, env = "CONFAB_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Line mode for pipes and scripts: each message one line on stdout
    /// (`[room] sender: text`), each line of stdin sent to the current room
    /// (or a slash command); status on stderr.
    #[arg(long)]
    pub plain: bool,

    /// The room to open first (joined if need be).
    #[arg(long, value_name = "ROOM")]
    pub room: Option<String>,
}

/// The addresses of a server: HTTP for signing in, WebSocket for the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub http: String,
    pub ws: String,
}

impl Server {
    pub fn parse(url: &str) -> anyhow::Result<Server> {
        let url = url.trim();
        let host = match url.split_once("://") {
            Some(("http" | "ws", host)) => host,
            Some(("https" | "wss", _)) => {
                bail!("{url}: confab chat speaks plain http/ws only; reach a TLS server through a local tunnel")
            }
            Some((scheme, _)) => bail!("{url}: unknown scheme `{scheme}` (use http://HOST:PORT)"),
            None => url,
        };
        let host = host.trim_end_matches('/');
        let host = host.strip_suffix("/v1/ws").unwrap_or(host);
        if host.is_empty() || host.contains('/') || host.ends_with(':') {
            bail!("{url}: expected http://HOST:PORT");
        }
        Ok(Server { http: format!("http://{host}"), ws: format!("ws://{host}/v1/ws") })
    }
}

/// Runs `confab chat` until `/quit` (or the end of stdin in `--plain`).
pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let server = Server::parse(&args.server)?;
    let token = match args.token.clone().filter(|t| !t.trim().is_empty()) {
        Some(token) => token.trim().to_owned(),
        None => {
            let user = match &args.user {
                Some(user) => user.clone(),
                None => prompt("user: ", false)?,
            };
            let password = prompt(&format!("password for {user}: "), true)?;
            login(&server, &user, &password).await?
        }
    };
    let (commands, updates) = engine::start(server, token, args.room.clone());
    if args.plain { plain::run(commands, updates).await } else { tui::run(commands, updates).await }
}

/// Signs in; the token.
pub async fn login(server: &Server, user: &str, password: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
    let response = client
        .post(format!("{}/v1/auth/login", server.http))
        .json(&serde_json::json!({ "username": user, "password": password }))
        .send()
        .await
        .with_context(|| format!("signing in at {}", server.http))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    match body["token"].as_str() {
        Some(token) if status.is_success() => Ok(token.to_owned()),
        _ => bail!("signing in: {status}: {}", body["error"]["message"].as_str().unwrap_or("no token")),
    }
}

/// Asks for a line on the terminal (stderr), without echo when `secret`;
/// from a pipe, reads a line of stdin.
fn prompt(question: &str, secret: bool) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    eprint!("{question}");
    std::io::stderr().flush()?;
    if secret && std::io::stdin().is_terminal() {
        return read_secret();
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// A line typed without echo (raw mode), up to Enter.
fn read_secret() -> anyhow::Result<String> {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    use ratatui::crossterm::terminal;
    terminal::enable_raw_mode()?;
    let mut secret = String::new();
    let result = loop {
        match event::read() {
            Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => match k.code {
                KeyCode::Enter => break Ok(()),
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                    break Err(anyhow::anyhow!("cancelled"));
                }
                KeyCode::Char(c) => secret.push(c),
                KeyCode::Backspace => {
                    secret.pop();
                }
                _ => {}
            },
            Ok(_) => {}
            Err(e) => break Err(e.into()),
        }
    };
    terminal::disable_raw_mode()?;
    eprintln!();
    result.map(|()| secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_url_gives_its_http_and_websocket_addresses() {
        let want = Server { http: "http://127.0.0.1:8080".into(), ws: "ws://127.0.0.1:8080/v1/ws".into() };
        for url in ["http://127.0.0.1:8080", "http://127.0.0.1:8080/", "ws://127.0.0.1:8080/v1/ws", "127.0.0.1:8080"] {
            assert_eq!(Server::parse(url).unwrap(), want, "{url}");
        }
        for url in ["https://chat.example", "ftp://x", "http://"] {
            assert!(Server::parse(url).is_err(), "{url}");
        }
    }
}
