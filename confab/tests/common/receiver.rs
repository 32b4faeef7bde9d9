//! A minimal HTTP/1.1 receiver for webhooks and the message filter: every
//! request's headers and body are kept, and `answer` decides each reply.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
                let Ok((socket, _)) = listener.accept().await else { return };
                tokio::spawn(serve(socket, kept.clone(), answer.clone()));
            }
        });
        Receiver { url, got }
    }

    /// [`start`](Self::start) over TLS: an `https://127.0.0.1:<port>/hook`
    /// URL whose certificate a fresh self-signed one, returned in PEM, is.
    #[allow(dead_code)] // not every test file uses it
    pub async fn start_tls(answer: Answer) -> (Receiver, String) {
        use tokio_rustls::rustls;
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let pem = cert.cert.pem();
        let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/hook", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let kept = got.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                let (kept, answer, acceptor) = (kept.clone(), answer.clone(), acceptor.clone());
                tokio::spawn(async move {
                    // A client that does not trust the certificate ends here.
                    if let Ok(tls) = acceptor.accept(socket).await {
                        serve(tls, kept, answer).await;
                    }
                });
            }
        });
        (Receiver { url, got }, pem)
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

/// Answers one request on `socket` (Connection: close).
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut socket: S, kept: Arc<Mutex<Vec<Received>>>, answer: Answer) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
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
}
