//! A minimal HTTP/1.1 receiver for webhooks and the message filter: every
//! request's headers and body are kept, and `answer` decides each reply.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Received {
    pub signature: Option<String>,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
}

/// Status, body, and milliseconds to wait before answering.
pub type Answer = Arc<dyn Fn(usize, &[u8]) -> (u16, String, u64) + Send + Sync>;

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Serves on 127.0.0.1:0; `answer(n, body)` gives the status and body of
    /// the n-th request (from 0).
    pub async fn start(answer: Answer) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let kept = got.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let (kept, answer) = (kept.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        // One request per connection, Connection: close.
                        let Ok(n) = socket.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let header = |name: &str| {
                            head.lines().find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                            })
                        };
                        let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                        if buf.len() < end + 4 + len {
                            continue;
                        }
                        let body = buf[end + 4..end + 4 + len].to_vec();
                        let n = {
                            let got = kept.lock().unwrap();
                            got.len()
                        };
                        let (status, reply, delay) = answer(n, &body);
                        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                        kept.lock().unwrap().push(Received { signature: header("confab-signature"), body, status });
                        let response = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                            reply.len()
                        );
                        let _ = socket.write_all(response.as_bytes()).await;
                        let _ = socket.shutdown().await;
                        return;
                    }
                });
            }
        });
        Receiver { url, got }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}
