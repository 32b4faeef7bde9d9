//! The `confab` binary's library: configuration ([`config`]), the admin
//! endpoints every process serves ([`admin`]), what every process does
//! around its work ([`serving`]), the one [`supervisor`] that runs and stops
//! the tasks of every role, and the wiring of each mode ([`standalone`],
//! [`distributed`]); [`chat`] is the terminal client, `confab chat`. `main.rs` only parses flags and calls in here, so tests
//! start the very same server on port 0.

pub mod admin;
pub mod blobs;
pub mod canary;
pub mod chat;
pub mod config;
pub mod distributed;
pub mod serving;
pub mod standalone;
pub mod supervisor;

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
