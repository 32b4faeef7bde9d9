//! `confab-bench`: an open-loop load generator for Confab and its peer.
//!
//! Each scenario starts its target (`target.rs`: Confab standalone, a
//! distributed Confab cluster on real Kafka and CQL, or the Centrifugo peer),
//! spreads its connections over worker processes and 127.0.0.x source
//! addresses (`scenario.rs`), and has the workers (`worker.rs`) send on a
//! fixed schedule whatever the server does, stamping each message with its
//! sender, sequence number and scheduled time (`payload.rs`), so latency
//! percentiles, losses, duplicates and reordering come from what arrives.
//! `client.rs` speaks both protocols; `report.rs` prints the table, the
//! `--json` file and the Markdown that `bench/run` puts in docs/benchmarks.md.

mod bigroom;
mod client;
mod compression;
mod payload;
mod report;
mod scenario;
mod target;
mod uploads;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::report::{ReportArgs, RunResult};
use crate::scenario::{DmArgs, FanoutArgs, IdleArgs, Spread};
use crate::target::{Target, TargetArgs};

#[derive(Parser)]
#[command(
    name = "confab-bench",
    version,
    about = "Confab's load generator: idle memory, fan-out and direct-message latency"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, clap::Args)]
struct Common {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    spread: Spread,
    /// Also write the result as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// N authenticated connections, each in a room, pinging on the heartbeat:
    /// the gateway's resident memory per connection (slope between two N's) and CPU while idle.
    Idle {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: IdleArgs,
    },
    /// One room of M members, publishers at a set rate: deliveries/s, delivery
    /// latency percentiles, losses.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: FanoutArgs,
    },
    /// U users sending 1:1 messages at a set rate (Poisson): send→ack and
    /// send→delivery percentiles, losses, duplicates.
    Dm {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: DmArgs,
    },
    /// One room of M members (100,000 by default) made with `create` and
    /// `join`: joins/s, then `room_info`, `directory` and `members` page
    /// latencies, and messages fanned out to the members kept online.
    Bigroom {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: bigroom::BigRoomArgs,
    },
    /// One room of M members on clients that offer permessage-deflate
    /// (`--deflate`) or not, K messages: bytes on the wire and server CPU per
    /// delivery, gateway memory per connection.
    Compression {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: compression::CompressionArgs,
    },
    /// Attachments: upload and download MB/s and per-file p50/p99 at 1 and
    /// 25 MiB, then the gateway's memory while 100 uploads of 25 MiB run at
    /// once, on the directory backend or an S3-compatible bucket.
    Uploads {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: uploads::UploadsArgs,
    },
    /// Markdown comparison of result files written with --json.
    Report(ReportArgs),
    /// (internal) a worker process, driven by the scenario over stdin/stdout.
    #[command(hide = true)]
    Worker,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Worker | Cmd::Report(_)) {
        raise_fd_limit();
    }
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("confab-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    match cli.command {
        // A worker is one thread: the processes, not threads, share out the cores.
        Cmd::Worker => {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(worker::run())?;
            Ok(true)
        }
        Cmd::Report(args) => {
            print!("{}", report::markdown(&args)?);
            Ok(true)
        }
        Cmd::Idle { common, args } => scenario_main("idle", common, move |t, run, spread| {
            Box::pin(async move { scenario::idle(t, &run, &spread, &args).await })
        }),
        Cmd::Fanout { common, args } => scenario_main("fanout", common, move |t, run, spread| {
            Box::pin(async move { scenario::fanout(t, &run, &spread, &args).await })
        }),
        Cmd::Bigroom { mut common, args } => {
            // The timed reads come one after another from the owner's session.
            common.target.server_args.extend(["--rate-per-second=100000".into(), "--rate-burst=100000".into()]);
            scenario_main("bigroom", common, move |t, run, spread| {
                Box::pin(async move { bigroom::bigroom(t, &run, &spread, &args).await })
            })
        }
        Cmd::Compression { mut common, args } => {
            // One publisher sends as fast as it is answered.
            common.target.server_args.extend(["--rate-per-second=100000".into(), "--rate-burst=100000".into()]);
            scenario_main("compression", common, move |t, run, spread| {
                Box::pin(async move { compression::compression(t, &run, &spread, &args).await })
            })
        }
        Cmd::Uploads { mut common, args } => {
            let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
            let scratch = uploads::scratch(&format!("{started:x}-{}", std::process::id()));
            common.target.server_args.extend(args.server_args(&scratch)?);
            let done = scenario_main("uploads", common, move |t, run, _| {
                Box::pin(async move { uploads::uploads(t, &run, &args).await })
            });
            let _ = std::fs::remove_dir_all(&scratch);
            done
        }
        Cmd::Dm { common, args } => scenario_main("dm", common, move |t, run, spread| {
            Box::pin(async move { scenario::dm(t, &run, &spread, &args).await })
        }),
    }
}

/// Raises the open-file limit, which the servers and workers started from
/// here inherit: every connection is a descriptor in a gateway and in a
/// worker. The hard limit goes up to the kernel's `fs.nr_open` where this
/// process may raise it (root), the soft one to the hard one in any case.
fn raise_fd_limit() {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse::<u64>().ok());
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let hard = limit.rlim_max;
        if let Some(max) = nr_open.filter(|&m| m as libc::rlim_t > hard) {
            let raised = libc::rlimit { rlim_cur: max as libc::rlim_t, rlim_max: max as libc::rlim_t };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return;
            }
        }
        limit.rlim_cur = hard;
        let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

type ScenarioFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<report::Outcome>> + 'a>>;

fn scenario_main(
    name: &str,
    common: Common,
    body: impl for<'a> FnOnce(&'a mut Target, String, Spread) -> ScenarioFuture<'a>,
) -> Result<bool> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async move {
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        // Short and lower-case: it prefixes user names (at most 32 characters).
        let run = format!("b{:x}", (started % 0xfffff) ^ u64::from(std::process::id() & 0xfff));
        let load_before = scenario::load();
        let mut target = Target::start(&common.target, &run).await?;
        let outcome = body(&mut target, run, common.spread.clone()).await;
        let server = target.describe.clone();
        target.stop().await;
        let outcome = outcome?;
        let result = RunResult {
            scenario: name.into(),
            target: format!("{:?}", common.target.target).to_lowercase(),
            server,
            command: std::env::args().collect::<Vec<_>>().join(" "),
            started_unix: started,
            load_before,
            load_after: scenario::load(),
            ok: outcome.ok,
            errors: outcome.errors,
            figures: outcome.figures,
        };
        print!("{}", result.table());
        if let Some(path) = &common.json {
            std::fs::write(path, serde_json::to_string_pretty(&result)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(result.ok)
    })
}
