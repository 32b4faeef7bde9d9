//! The message filter: an application's HTTP endpoint, asked before a
//! message is stored whether to accept, reject or rewrite it (docs/webhooks.md).
//!
//! The pipeline asks it for every new `send` of a batch, concurrently, before
//! deciding the batch; a reply that does not come within the deadline, or
//! is not one of the three answers, counts as the filter being down, and
//! [`WhenDown`] says what happens to the message then.

use std::time::Duration;

use std::sync::Arc;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::webhooks::sign;

/// Most bytes of a filter's answer that are read.
const MAX_ANSWER: usize = 64 * 1024;
/// Filter calls of one batch in flight at once.
const CONCURRENCY: usize = 32;

/// What happens to a message while the filter cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenDown {
    /// Store it as sent.
    Allow,
    /// Refuse it (`unavailable`): the client may resend with its cid.
    Refuse,
}

#[derive(Clone)]
pub struct FilterConfig {
    pub url: String,
    pub timeout: Duration,
    pub when_down: WhenDown,
    /// Longest text a rewrite may give (the gateway's `max_text_bytes`).
    pub max_text_bytes: usize,
    /// More root certificates (PEM) for an `https://` URL (`--webhook-ca-file`).
    pub ca_pem: Option<Vec<u8>>,
    /// Signs each call as webhooks are, when set.
    pub secret: Option<Vec<u8>>,
}

/// What the filter said of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Reject(String),
    Rewrite(String),
    /// No usable answer; the reason is logged.
    Down(String),
}

#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum Answer {
    Accept,
    Reject {
        #[serde(default)]
        reason: String,
    },
    Rewrite {
        text: String,
    },
}

#[derive(Clone)]
pub struct FilterMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl FilterMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = FilterMetrics {
            requests: IntCounterVec::new(
                Opts::new("confab_filter_requests_total", "Message filter calls, by outcome."),
                &["outcome"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new("confab_filter_duration_seconds", "Time of one message filter call, by outcome.")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
                &["outcome"],
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        Ok(m)
    }
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter").field("url", &self.config.url).field("when_down", &self.config.when_down).finish()
    }
}

#[derive(Clone)]
pub struct Filter {
    config: FilterConfig,
    client: reqwest::Client,
    metrics: FilterMetrics,
}

/// One message as the filter sees it.
#[derive(Debug, serde::Serialize)]
pub struct Candidate {
    pub room: String,
    pub from: String,
    pub text: String,
    pub cid: String,
}

impl Filter {
    /// The filter; `Err` when its HTTP client cannot be built (its CA file).
    pub fn new(config: FilterConfig, metrics: FilterMetrics) -> Result<Self, String> {
        let client = crate::http_client(config.timeout, config.ca_pem.as_deref())?;
        Ok(Filter { config, client, metrics })
    }

    pub fn when_down(&self) -> WhenDown {
        self.config.when_down
    }

    /// Asks about every candidate, at most [`CONCURRENCY`] at once; the
    /// verdicts come in the candidates' order.
    pub async fn check_all(&self, candidates: Vec<Candidate>) -> Vec<Verdict> {
        let permits = Arc::new(Semaphore::new(CONCURRENCY));
        let calls: Vec<_> = candidates
            .into_iter()
            .map(|c| {
                let (filter, permits) = (self.clone(), permits.clone());
                tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    filter.check(&c).await
                })
            })
            .collect();
        let mut verdicts = Vec::with_capacity(calls.len());
        for call in calls {
            verdicts.push(call.await.unwrap_or_else(|e| Verdict::Down(format!("filter call: {e}"))));
        }
        verdicts
    }

    pub async fn check(&self, candidate: &Candidate) -> Verdict {
        let started = std::time::Instant::now();
        let verdict = match tokio::time::timeout(self.config.timeout, self.ask(candidate)).await {
            Ok(Ok(v)) => v,
            Ok(Err(why)) => Verdict::Down(why),
            Err(_) => Verdict::Down(format!("no answer within {} ms", self.config.timeout.as_millis())),
        };
        let outcome = match &verdict {
            Verdict::Accept => "accept",
            Verdict::Reject(_) => "reject",
            Verdict::Rewrite(_) => "rewrite",
            Verdict::Down(why) => {
                tracing::warn!(url = %self.config.url, error = %why, "message filter down");
                "error"
            }
        };
        self.metrics.requests.with_label_values(&[outcome]).inc();
        self.metrics.duration.with_label_values(&[outcome]).observe(started.elapsed().as_secs_f64());
        verdict
    }

    async fn ask(&self, candidate: &Candidate) -> Result<Verdict, String> {
        let body = serde_json::to_vec(candidate).expect("a candidate serializes");
        let mut request = self.client.post(&self.config.url).header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.config.secret {
            request = request.header("Confab-Signature", sign(secret, unix_now(), &body));
        }
        let mut response = request.body(body).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if answer.len() + chunk.len() > MAX_ANSWER {
                return Err(format!("answer over {MAX_ANSWER} bytes"));
            }
            answer.extend_from_slice(&chunk);
        }
        match serde_json::from_slice::<Answer>(&answer).map_err(|e| format!("answer: {e}"))? {
            Answer::Accept => Ok(Verdict::Accept),
            Answer::Reject { reason } => {
                let reason = if reason.is_empty() { "refused by the message filter".to_owned() } else { reason };
                // The reason goes into an error reply: keep it short.
                Ok(Verdict::Reject(truncate(&reason, 256).to_owned()))
            }
            Answer::Rewrite { text } if text.is_empty() || text.len() > self.config.max_text_bytes => {
                Err(format!("rewrite to {} bytes (1 to {} allowed)", text.len(), self.config.max_text_bytes))
            }
            Answer::Rewrite { text } => Ok(Verdict::Rewrite(text)),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_reason_is_cut_on_a_char_boundary() {
        assert_eq!(super::truncate("héllo", 2), "h");
        assert_eq!(super::truncate("abc", 10), "abc");
    }
}
