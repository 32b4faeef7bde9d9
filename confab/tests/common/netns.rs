//! A gateway in a network namespace of the test's own, so that a network
//! partition between it and Kafka can be made and healed.
//!
//! A thread of the test leaves the host's network namespace
//! (`unshare(CLONE_NEWNET)`, which needs root), brings its loopback up and
//! starts the gateway from there, so the gateway shares that namespace and
//! nothing else: it has no route to anything of the host. The test's own
//! relays connect the two namespaces:
//!
//! * inside, listeners on the very addresses of the host's Kafka brokers and
//!   CQL node (`127.0.0.1:<port>`): the gateway, and the broker addresses in
//!   Kafka's metadata, reach them unchanged. The relays to Kafka are the
//!   ones [`Partition::cut`] cuts: while cut they move no byte in either
//!   direction and leave every connection open (a blackhole, as a dropped
//!   link is: no reset, no close; TCP's buffers fill and the peers wait),
//!   and connections opened meanwhile are accepted but get nothing through
//!   either. [`Partition::heal`] lets the bytes flow again.
//! * outside, listeners on the host's loopback (port 0) for the gateway's
//!   public, admin and internal ports: clients and dispatchers reach the
//!   gateway through these (the gateway announces the outside internal
//!   address with `--internal-advertise`). Never cut.
//!
//! Relays are plain threads with blocking sockets: the test's runtime may be
//! a current-thread one blocked in `Proc::spawn` while the gateway starts.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::drill::Proc;

/// The gateway's ports inside its namespace (nothing else listens there).
const PUBLIC: u16 = 8080;
const ADMIN: u16 = 9090;
const INTERNAL: u16 = 7070;

/// The switch of the relays to Kafka. Dropping it stops the relays'
/// listeners (their open connections end with the gateway).
pub struct Partition {
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Partition {
    /// From now on no byte passes between the gateway and Kafka.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Bytes pass again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// A request to the thread inside the namespace: connect to its
/// `127.0.0.1:<port>`.
type Connect = (u16, mpsc::Sender<std::io::Result<TcpStream>>);

/// Starts `confab` with `args` (a gateway's, without its listen and
/// advertise flags) in a network namespace of its own. `kafka` are the
/// host's broker addresses (relayed, cuttable), `other` the other servers it
/// needs (relayed, never cut). The returned [`Proc`]'s `listening` and
/// `admin listening` addresses are the outside relays'.
pub fn spawn_gateway(args: &[String], kafka: &[SocketAddr], other: &[SocketAddr]) -> (Proc, Partition) {
    let cut = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    // Outside listeners first: the internal one's address is announced.
    let outside: Vec<TcpListener> =
        (0..3).map(|_| TcpListener::bind("127.0.0.1:0").expect("an outside relay listener")).collect();
    let outside_addr: Vec<SocketAddr> = outside.iter().map(|l| l.local_addr().expect("its address")).collect();
    let mut args = args.to_vec();
    args.extend(["--listen".into(), format!("127.0.0.1:{PUBLIC}")]);
    args.extend(["--admin-listen".into(), format!("127.0.0.1:{ADMIN}")]);
    args.extend(["--internal-listen".into(), format!("127.0.0.1:{INTERNAL}")]);
    args.extend(["--internal-advertise".into(), outside_addr[2].to_string()]);

    // Listeners inside, bound by the namespace's thread and handed back:
    // threads started from that thread would be in its namespace too, so the
    // relays' threads (which connect to the host's servers) are started here.
    type Inside = Vec<(TcpListener, SocketAddr, bool)>;
    let (inside_tx, inside_rx) = mpsc::channel::<Result<Inside, String>>();
    let (started_tx, started_rx) = mpsc::channel::<(Proc, mpsc::Sender<Connect>)>();
    let (kafka, other) = (kafka.to_vec(), other.to_vec());
    std::thread::spawn(move || {
        // This thread, and what it starts, leave the host's network.
        // SAFETY: unshare takes no pointers; CLONE_NEWNET affects this thread only.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            let e = std::io::Error::last_os_error();
            let _ = inside_tx.send(Err(format!("unshare(CLONE_NEWNET): {e} (the partition drill needs root)")));
            return;
        }
        let up = Command::new("ip").args(["link", "set", "lo", "up"]).status();
        if !up.as_ref().is_ok_and(|s| s.success()) {
            let _ = inside_tx.send(Err(format!("ip link set lo up in the namespace: {up:?}")));
            return;
        }
        let mut inside = Vec::new();
        for (addrs, cuttable) in [(&kafka, true), (&other, false)] {
            for addr in addrs.iter() {
                match TcpListener::bind(addr) {
                    Ok(l) => inside.push((l, *addr, cuttable)),
                    Err(e) => {
                        let _ = inside_tx.send(Err(format!("binding {addr} in the namespace: {e}")));
                        return;
                    }
                }
            }
        }
        let _ = inside_tx.send(Ok(inside));
        let (connect_tx, connect_rx) = mpsc::channel::<Connect>();
        let proc = Proc::spawn(&args, &["listening", "admin listening"]);
        let _ = started_tx.send((proc, connect_tx));
        // Then it opens connections inside for the outside relays.
        for (port, reply) in connect_rx {
            let _ = reply.send(TcpStream::connect(("127.0.0.1", port)));
        }
    });
    let inside = inside_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the namespace's thread answers")
        .unwrap_or_else(|e| panic!("{e}"));
    for (listener, to, cuttable) in inside {
        let gate = if cuttable { Some(cut.clone()) } else { None };
        let stop = stop.clone();
        std::thread::spawn(move || accept(listener, stop, gate, move || TcpStream::connect(to)));
    }
    let (mut proc, connect) = started_rx.recv_timeout(Duration::from_secs(90)).expect("the gateway started");
    for (listener, port) in outside.into_iter().zip([PUBLIC, ADMIN, INTERNAL]) {
        let connect = connect.clone();
        let open = move || {
            let (tx, rx) = mpsc::channel();
            connect.send((port, tx)).map_err(|_| std::io::Error::other("the namespace's thread is gone"))?;
            rx.recv().map_err(|_| std::io::Error::other("the namespace's thread is gone"))?
        };
        let stop = stop.clone();
        std::thread::spawn(move || accept(listener, stop, None, open));
    }
    proc.addrs.insert("listening", outside_addr[0].to_string());
    proc.addrs.insert("admin listening", outside_addr[1].to_string());
    (proc, Partition { cut, stop })
}

/// Accepts on `listener` until `stop`, relaying each connection to what
/// `open` connects; `gate`, when set, holds the bytes while it is true.
fn accept(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    gate: Option<Arc<AtomicBool>>,
    open: impl Fn() -> std::io::Result<TcpStream> + Send + 'static,
) {
    for client in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(server) = open() else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = (client.set_nodelay(true), server.set_nodelay(true));
        let (c2, s2) = match (client.try_clone(), server.try_clone()) {
            (Ok(c), Ok(s)) => (c, s),
            _ => continue,
        };
        let g = gate.clone();
        std::thread::spawn(move || pump(client, server, g));
        let g = gate.clone();
        std::thread::spawn(move || pump(s2, c2, g));
    }
}

/// Copies `from` to `to` until either ends; while `gate` is true nothing is
/// read or written (and so the sender's buffers fill, as over a dead link).
fn pump(mut from: TcpStream, mut to: TcpStream, gate: Option<Arc<AtomicBool>>) {
    let held = || gate.as_ref().is_some_and(|g| g.load(Ordering::SeqCst));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while held() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Bytes read just before a cut are held too.
        while held() {
            std::thread::sleep(Duration::from_millis(10));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
