//! A robot user on Confab's server API and a webhook (examples/bots/README.md).
//!
//! Confab POSTs every stored message to the bot's webhook, signed with
//! `Confab-Signature` (docs/webhooks.md); the bot verifies the signature over
//! the raw body, ignores its own messages, and answers `!help`, `!time` and
//! `@mentions` with `POST /v1/server/publish` (docs/server-api.md), whose
//! `cid` is derived from the event's `id`: a webhook delivered twice gets one
//! answer.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// A signature older or newer than this is refused (a replay).
pub const MAX_SKEW_SECS: u64 = 300;

/// What the bot needs.
#[derive(Debug, Clone)]
pub struct BotConfig {
    /// The bot's user name (an account made with `POST /v1/server/users`, `bot: true`).
    pub user: String,
    /// Base URL of Confab's HTTP port, e.g. `http://127.0.0.1:8080`.
    pub server: String,
    /// An API key (`--api-key-file`).
    pub api_key: String,
    /// The webhook secret (`--webhook-secret-file`).
    pub webhook_secret: String,
}

struct Bot {
    config: BotConfig,
    http: reqwest::Client,
}

/// The webhook receiver: `POST /` (any path is fine: Confab calls the URL it is given).
pub fn router(config: BotConfig) -> Router {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("an HTTP client");
    let bot = Arc::new(Bot { config, http });
    Router::new().route("/", post(webhook)).route("/{*path}", post(webhook)).with_state(bot)
}

/// Serves the bot on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, config: BotConfig) -> std::io::Result<()> {
    axum::serve(listener, router(config)).await
}

async fn webhook(State(bot): State<Arc<Bot>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = headers.get("confab-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !verify(bot.config.webhook_secret.as_bytes(), header, &body, unix_secs()) {
        tracing::warn!("a webhook call with a bad or missing signature: refused");
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    if event["type"] != "message" {
        return StatusCode::OK;
    }
    let m = &event["message"];
    let Some(text) = answer(&bot.config.user, m, unix_secs()) else {
        return StatusCode::OK;
    };
    let cid = format!("bot-{}", event["id"].as_str().unwrap_or_default());
    let mut publish = json!({"room": m["room"], "from": bot.config.user, "text": text, "cid": cid});
    if let Some(seq) = m["seq"].as_u64() {
        publish["reply_to"] = json!(seq);
    }
    let url = format!("{}/v1/server/publish", bot.config.server.trim_end_matches('/'));
    match bot.http.post(url).bearer_auth(&bot.config.api_key).json(&publish).send().await {
        Ok(r) if r.status().is_success() => StatusCode::OK,
        Ok(r) => {
            tracing::warn!(status = %r.status(), "publish refused");
            // 4xx: answering again will not help (the room is gone, the bot is not a member...).
            if r.status().is_client_error() { StatusCode::OK } else { StatusCode::BAD_GATEWAY }
        }
        Err(e) => {
            tracing::warn!(error = %e, "publish failed; Confab will deliver the event again");
            StatusCode::BAD_GATEWAY
        }
    }
}

/// Checks `Confab-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now_secs: u64) -> bool {
    let (mut t, mut v1) = (None, None);
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    if t.abs_diff(now_secs) > MAX_SKEW_SECS {
        return false;
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let want = hex(&mac.finalize().into_bytes());
    want.as_bytes().ct_eq(v1.as_bytes()).into()
}

/// The bot's answer to message `m`, if any: never to its own messages.
pub fn answer(me: &str, m: &Value, now_secs: u64) -> Option<String> {
    let from = m["from"].as_str().unwrap_or_default();
    if from == me || from.is_empty() || m["deleted"] == true {
        return None;
    }
    let text = m["text"].as_str().unwrap_or_default().trim();
    match text.split_whitespace().next() {
        Some("!help") => return Some("I answer !help and !time, and say hello when you mention me.".into()),
        Some("!time") => return Some(format!("It is {} UTC.", utc(now_secs))),
        _ => {}
    }
    let mentioned = m["mentions"].as_array().is_some_and(|a| a.iter().any(|u| u == me))
        || text
            .split(|c: char| !(c.is_alphanumeric() || c == '@' || c == '_' || c == '-'))
            .any(|w| w.strip_prefix('@') == Some(me));
    mentioned.then(|| format!("Hello @{from}! I am a bot: try !help."))
}

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `YYYY-MM-DD HH:MM:SS` of unix seconds (civil-from-days, no time crate needed).
pub fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], t: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        format!("t={t},v1={}", hex(&mac.finalize().into_bytes()))
    }

    #[test]
    fn signatures_are_checked_over_the_raw_body_and_the_clock() {
        let header = sign(b"s3cret", 1_000, b"{}");
        assert!(verify(b"s3cret", &header, b"{}", 1_000));
        assert!(verify(b"s3cret", &header, b"{}", 1_000 + MAX_SKEW_SECS));
        assert!(!verify(b"s3cret", &header, b"{ }", 1_000), "another body");
        assert!(!verify(b"other", &header, b"{}", 1_000), "another secret");
        assert!(!verify(b"s3cret", &header, b"{}", 1_001 + MAX_SKEW_SECS), "a replay");
        assert!(!verify(b"s3cret", "", b"{}", 1_000));
        assert!(!verify(b"s3cret", "t=x,v1=00", b"{}", 1_000));
    }

    #[test]
    fn answers_commands_and_mentions_but_never_itself() {
        let m = |from: &str, text: &str| json!({"room": "r", "seq": 1, "from": from, "text": text});
        assert!(answer("robo", &m("ann", "!help"), 0).unwrap().contains("!time"));
        assert_eq!(answer("robo", &m("ann", "!time"), 86_400 + 3_661).unwrap(), "It is 1970-01-02 01:01:01 UTC.");
        assert_eq!(answer("robo", &m("ann", "hey @robo, there?"), 0).unwrap(), "Hello @ann! I am a bot: try !help.");
        assert_eq!(answer("robo", &m("ann", "hey @robot"), 0), None);
        assert_eq!(answer("robo", &m("ann", "hello"), 0), None);
        assert_eq!(answer("robo", &m("robo", "!help"), 0), None, "its own message");
        assert_eq!(answer("robo", &m("robo", "Hello @robo"), 0), None);
        assert_eq!(utc(1_764_536_400), "2025-11-30 21:00:00");
    }
}
