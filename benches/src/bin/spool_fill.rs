//! `tollgate-spool-fill`: writes synthetic usage events into a gateway spool directory as a
//! crashed gateway would leave them (unacknowledged, no watermark), for the replay benchmark
//! (`benches/spool/run`).
//!
//! Prints one JSON line: `{"events", "bytes", "seconds"}`.

use anyhow::Result;
use clap::Parser;
use std::time::Instant;
use tollgate_benches::synthetic::usage_event;
use tollgate_gateway::metering::spool::Spool;

#[derive(Parser, Debug)]
#[command(about = "Fill a spool directory with unacknowledged synthetic usage events")]
struct Args {
    /// The spool directory (created; must not be in use by a gateway).
    #[arg(long)]
    dir: std::path::PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Distinct virtual keys; every 10 keys share a team.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Segment size, as `spool.max_segment_bytes`.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    segment_bytes: u64,
}

#[allow(clippy::print_stdout)] // the result line is this binary's output
fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let (mut spool, _) = Spool::open(&args.dir, args.segment_bytes)?;
    let mut written = 0;
    while written < args.events {
        let n = (args.events - written).min(1024);
        let batch: Vec<Vec<u8>> =
            (written..written + n).map(|i| usage_event(i, args.keys).encode()).collect::<Result<_, _>>()?;
        spool.append_batch(&batch)?;
        written += n;
    }
    let bytes = spool.bytes_on_disk();
    println!("{}", serde_json::json!({"events": written, "bytes": bytes, "seconds": started.elapsed().as_secs_f64()}));
    Ok(())
}
