//! `confab chat --plain`, the binary itself with pipes, against a real
//! standalone server that restarts between messages: both clients
//! reconnect, what was typed while the server was down is delivered, and
//! nothing is shown twice. (scripts/chat-tmux-test.sh drives the full-screen
//! mode in tmux.)

#[macro_use]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use common::PATIENCE;
use confab::serving::Running;
use serde_json::json;

async fn start(dir: &std::path::Path, addr: SocketAddr) -> Running {
    let mut config = common::config(dir);
    config.server.listen = addr;
    confab::standalone::start(config).await.expect("server starts")
}

async fn token(http: &str, name: &str) -> String {
    let client = reqwest::Client::builder().timeout(PATIENCE).build().unwrap();
    let creds = json!({"username": name, "password": "password-123"});
    let r = client.post(format!("{http}/v1/auth/register")).json(&creds).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let r = client.post(format!("{http}/v1/auth/login")).json(&creds).send().await.unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

/// One `confab chat --plain` process: its stdin, and its stdout and stderr
/// lines as they come.
struct Chat {
    child: Child,
    stdin: Option<ChildStdin>,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    /// Every stdout line so far.
    seen: Vec<String>,
}

fn lines(read: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(read).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

impl Chat {
    fn start(server: &str, token: &str, room: &str) -> Chat {
        let mut child = Command::new(env!("CARGO_BIN_EXE_confab"))
            .args(["chat", "--plain", "--server", server, "--room", room])
            .env("CONFAB_TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (out, err) = (lines(child.stdout.take().unwrap()), lines(child.stderr.take().unwrap()));
        Chat { stdin: child.stdin.take(), child, out, err, seen: Vec::new() }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for a stdout line equal to `want`.
    fn shows(&mut self, want: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.seen.iter().any(|l| l == want) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("never showed {want:?}; showed {:?}", self.seen),
            }
        }
    }

    /// Waits for a stderr line containing `want`.
    fn says(&mut self, want: &str) {
        let deadline = Instant::now() + PATIENCE;
        let mut said = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(line) if line.contains(want) => return,
                Ok(line) => said.push(line),
                Err(_) => panic!("never said {want:?}; said {said:?}"),
            }
        }
    }

    /// Closes stdin and waits for the process to exit on its own.
    fn quit(mut self) -> Vec<String> {
        drop(self.stdin.take());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                break;
            }
            assert!(Instant::now() < deadline, "confab chat did not exit at the end of its input");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.seen.extend(self.out.try_iter());
        self.seen
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_plain_clients_chat_across_a_server_restart_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let running = start(dir.path(), addr).await;
    let http = format!("http://{addr}");
    let (alice_token, bob_token) = (token(&http, "alice").await, token(&http, "bob").await);

    let (mut alice, mut bob) = (Chat::start(&http, &alice_token, "r"), Chat::start(&http, &bob_token, "r"));
    alice.says("now talking in r");
    bob.says("now talking in r");
    alice.type_line("hello before");
    bob.shows("[r] alice: hello before");
    alice.shows("[r] alice: hello before");
    bob.type_line("/who");
    bob.says("online in r: ");

    running.stop().await.expect("clean stop");
    alice.says("disconnected");
    bob.says("disconnected");
    // Typed while the server is down: sent once it is back.
    alice.type_line("typed while down");
    bob.type_line("bob typed while down");
    let running = start(dir.path(), addr).await;
    bob.shows("[r] alice: typed while down");
    alice.shows("[r] bob: bob typed while down");
    alice.type_line("after the restart");
    bob.shows("[r] alice: after the restart");

    // An unknown command is refused, not sent.
    alice.type_line("/frobnicate");
    alice.says("unknown command /frobnicate");
    let (alice, bob) = (alice.quit(), bob.quit());
    for (who, seen) in [("alice", alice), ("bob", bob)] {
        let messages: Vec<&String> = seen.iter().filter(|l| l.starts_with("[r] ")).collect();
        for want in [
            "[r] alice: hello before",
            "[r] alice: typed while down",
            "[r] bob: bob typed while down",
            "[r] alice: after the restart",
        ] {
            let n = messages.iter().filter(|m| **m == want).count();
            assert_eq!(n, 1, "{who} shows {want:?} once: {seen:?}");
        }
        assert_eq!(messages.len(), 4, "{who}: nothing else, nothing twice: {seen:?}");
    }
    running.stop().await.expect("clean stop");
}
