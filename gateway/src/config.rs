//! The gateway's settings. The `confab` binary fills every field from its
//! layered configuration, where the defaults are and whose doc comments are
//! the user's documentation; this crate has no defaults of its own.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// This gateway's id, unique in the cluster; shown as `server` in `hello`.
    pub id: String,
    /// Internal push address announced to dispatchers (distributed mode).
    pub internal_addr: Option<String>,
    pub heartbeat: Duration,
    /// Largest client frame; larger closes the connection with 1009.
    pub max_frame_bytes: usize,
    /// Largest message text; larger is `too_large`.
    pub max_text_bytes: usize,
    pub rate_per_second: u32,
    pub rate_burst: u32,
    /// Frames queued for one session before it is closed as a slow consumer.
    pub outbound_queue: usize,
    /// Bytes queued for one session (frames not yet written to its socket)
    /// before it is closed as a slow consumer.
    pub outbound_queue_bytes: usize,
    /// Encoded bytes of messages a `history` or `sync` reply holds at most
    /// (a reply always holds at least one message when there is one).
    pub reply_max_bytes: usize,
    /// Messages a `sync` reply holds at most, across its rooms.
    pub sync_max_messages: u32,
    /// Rooms larger than this get no `presence` events.
    pub presence_event_limit: u64,
    /// How long `produce` may take before `send` gets `unavailable`.
    pub produce_timeout: Duration,
    /// WebSocket read buffer per connection. Small, because every idle
    /// connection holds it: client frames are small and rate-limited, and a
    /// larger frame still arrives whole (the buffer grows for it), in more reads.
    pub ws_read_buffer: usize,
    /// WebSocket write buffer per connection.
    pub ws_write_buffer: usize,
    /// permessage-deflate when the client offers it (else every WebSocket
    /// session is uncompressed).
    pub ws_compression: bool,
    /// Frames under this many bytes are sent uncompressed on a compressed
    /// WebSocket session.
    pub ws_compression_threshold: usize,
    /// `/v1/auth/*` attempts per minute (and burst) from one client IP.
    pub auth_per_ip_per_minute: u32,
    /// `/v1/auth/*` attempts per minute (and burst) for one user name.
    pub auth_per_user_per_minute: u32,
    /// Password hashes that may wait for a hashing thread.
    pub hash_queue: usize,
    /// Whether `/v1/auth/register` creates accounts (else `403 forbidden`).
    pub open_registration: bool,
    /// Sessions one user may hold on this gateway; more are refused at the
    /// upgrade with `429 rate_limited`.
    pub max_sessions_per_user: usize,
    /// At most one `typing` per (user, room) per this long goes on to the
    /// room; zero sends them all.
    pub typing_interval: Duration,
    /// Contact relations one user may have (`contact_add` past it, on
    /// either side, is `forbidden`).
    pub max_contacts: usize,
    /// Users one user may block.
    pub max_blocks: usize,
    /// How long messages are kept: `history` and `sync` leave out those
    /// older than their room's retention, and `room_info` shows it.
    pub retention: confab_protocol::Retention,
    /// The server API's keys (none: every `/v1/server/*` route is 404).
    pub api_keys: crate::server_api::ApiKeys,
}

impl Config {
    /// What `ws_read_buffer` should be (not an option): small, because every
    /// idle connection holds it (tungstenite allocates and zero-fills all of
    /// it with the connection). A ping, a typing event or a short `send`
    /// fits in one read; a larger frame is read whole all the same: its
    /// header says its length and the buffer grows to it (one more read).
    pub const WS_READ_BUFFER: usize = 256;
    /// What `ws_write_buffer` should be (not an option).
    pub const WS_WRITE_BUFFER: usize = 4 * 1024;
}
