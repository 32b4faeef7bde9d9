//! The gateway's metrics, registered in the process's one registry. No label
//! carries a user or room id.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The values of `confab_sessions_closed_total{reason}`.
pub const CLOSE_REASONS: [&str; 7] = [
    "client_closed",
    "connection_error",
    "slow_consumer",
    "token_expired",
    "server_restart",
    "idle",
    "frame_too_large",
];

#[derive(Clone)]
pub struct Metrics {
    pub connections: IntGauge,
    /// The public listener's `max_connections`, for the operator's rollout
    /// gate (room on the other gateways for a drained one's clients).
    pub max_connections: IntGauge,
    pub sessions_opened: IntCounter,
    pub sessions_closed: IntCounterVec,
    pub frames_in: IntCounter,
    pub frames_out: IntCounter,
    pub requests: IntCounterVec,
    pub send_ack: Histogram,
    pub deliveries: IntCounter,
    pub room_events: IntCounter,
    pub push_misdirected: IntCounter,
    pub slow_consumers: IntCounter,
    pub produce_errors: IntCounter,
    pub produce_duration: Histogram,
    pub auth_failures: IntCounterVec,
    pub sessions_refused: IntCounterVec,
    pub server_api_requests: IntCounterVec,
    pub uploads: IntCounterVec,
    pub upload_bytes: IntCounter,
}

impl Metrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let m = Metrics {
            connections: IntGauge::new("confab_gateway_connections", "Live WebSocket sessions on this gateway.")?,
            max_connections: IntGauge::new(
                "confab_gateway_max_connections",
                "Connections this gateway's public listener accepts at most (max_connections).",
            )?,
            sessions_opened: IntCounter::new("confab_sessions_opened_total", "WebSocket sessions opened.")?,
            sessions_closed: IntCounterVec::new(
                Opts::new("confab_sessions_closed_total", "WebSocket sessions closed, by reason."),
                &["reason"],
            )?,
            frames_in: IntCounter::new("confab_frames_received_total", "Frames received from clients.")?,
            frames_out: IntCounter::new("confab_frames_sent_total", "Frames sent to clients.")?,
            requests: IntCounterVec::new(
                Opts::new(
                    "confab_requests_total",
                    "Client requests, by op and outcome (ok, pending or an error code).",
                ),
                &["op", "outcome"],
            )?,
            send_ack: Histogram::with_opts(
                HistogramOpts::new(
                    "confab_send_ack_duration_seconds",
                    "Time from a send's acceptance by the gateway to its ack (stored) arriving back.",
                )
                .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0]),
            )?,
            deliveries: IntCounter::new("confab_gateway_deliveries_total", "Event frames queued to local sessions.")?,
            room_events: IntCounter::new(
                "confab_gateway_room_events_received_total",
                "Room events pushed to this gateway by dispatchers (one per event, whatever its local audience).",
            )?,
            push_misdirected: IntCounter::new(
                "confab_gateway_push_misdirected_total",
                "Push batches dropped because a dispatcher meant them for another gateway id.",
            )?,
            slow_consumers: IntCounter::new(
                "confab_outbound_queue_drops_total",
                "Frames dropped because a session's outbound queue was full (the session is closed as slow_consumer).",
            )?,
            produce_errors: IntCounter::new(
                "confab_bus_produce_errors_total",
                "Writes the bus did not accept in time.",
            )?,
            produce_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "confab_bus_produce_duration_seconds",
                    "Time for the bus (Kafka: acks from all in-sync replicas) to accept one client write, failures included.",
                )
                .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0]),
            )?,
            auth_failures: IntCounterVec::new(
                Opts::new("confab_auth_failures_total", "Refused logins and tokens, by where."),
                &["where"],
            )?,
            sessions_refused: IntCounterVec::new(
                Opts::new("confab_sessions_refused_total", "WebSocket upgrades refused by a per-user limit, by reason."),
                &["reason"],
            )?,
            server_api_requests: IntCounterVec::new(
                Opts::new("confab_server_api_requests_total", "Server API calls (/v1/server/*), by endpoint and HTTP status."),
                &["endpoint", "status"],
            )?,
            uploads: IntCounterVec::new(
                Opts::new(
                    "confab_uploads_total",
                    "Uploads by outcome: ok, too_large, type_refused, refused, too_many, bad_request, failed, and deleted (by the sweeper).",
                ),
                &["outcome"],
            )?,
            upload_bytes: IntCounter::new("confab_upload_bytes_total", "Bytes of upload bodies received.")?,
        };
        registry.register(Box::new(m.uploads.clone()))?;
        registry.register(Box::new(m.upload_bytes.clone()))?;
        registry.register(Box::new(m.server_api_requests.clone()))?;
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.max_connections.clone()))?;
        registry.register(Box::new(m.sessions_opened.clone()))?;
        registry.register(Box::new(m.sessions_closed.clone()))?;
        registry.register(Box::new(m.frames_in.clone()))?;
        registry.register(Box::new(m.frames_out.clone()))?;
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.send_ack.clone()))?;
        registry.register(Box::new(m.deliveries.clone()))?;
        registry.register(Box::new(m.room_events.clone()))?;
        registry.register(Box::new(m.push_misdirected.clone()))?;
        registry.register(Box::new(m.slow_consumers.clone()))?;
        registry.register(Box::new(m.produce_errors.clone()))?;
        registry.register(Box::new(m.produce_duration.clone()))?;
        registry.register(Box::new(m.auth_failures.clone()))?;
        registry.register(Box::new(m.sessions_refused.clone()))?;
        // Every known label value exists from the start, at zero, so a rate
        // over it is 0 rather than no data.
        for reason in CLOSE_REASONS {
            m.sessions_closed.with_label_values(&[reason]);
        }
        for place in ["login", "ws", "tcp", "http"] {
            m.auth_failures.with_label_values(&[place]);
        }
        m.sessions_refused.with_label_values(&["too_many_sessions"]);
        for outcome in ["ok", "too_large", "type_refused", "refused", "too_many", "bad_request", "failed", "deleted"] {
            m.uploads.with_label_values(&[outcome]);
        }
        Ok(m)
    }
}
