//! `tollgate-keepalive`: bursts of chat requests through one pooled HTTP/1.1 client, round robin
//! over gateways, with idle gaps between bursts; counts requests that got no answer (transport
//! errors) apart from HTTP statuses. See `tollgate_benches::keepalive`.

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;
use tollgate_benches::keepalive::{run, Gaps, Plan};

#[derive(Parser, Debug)]
#[command(about = "Keep-alive load: bursts through a pooled client with idle gaps; transport errors counted apart")]
struct Args {
    /// Base URL of a gateway, e.g. http://127.0.0.1:4000; repeatable (round robin).
    #[arg(long = "gateway", required = true)]
    gateways: Vec<String>,
    /// Bearer token of every request.
    #[arg(long)]
    key: String,
    /// Requests in flight during a burst.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests in all.
    #[arg(long, default_value_t = 200_000)]
    requests: u64,
    /// Requests per burst.
    #[arg(long, default_value_t = 4_000)]
    burst: u64,
    /// Shortest idle gap between bursts, in milliseconds.
    #[arg(long, default_value_t = 4_000)]
    gap_min_ms: u64,
    /// Longest idle gap between bursts, in milliseconds.
    #[arg(long, default_value_t = 6_000)]
    gap_max_ms: u64,
    /// Seed of the gap generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Per-request limit in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout_secs: f64,
    /// How long the client keeps an idle connection, in seconds (90: reqwest's and hyper's default).
    #[arg(long, default_value_t = 90.0)]
    pool_idle_secs: f64,
    /// No burst starts after this many seconds.
    #[arg(long, default_value_t = 1_800.0)]
    max_secs: f64,
    /// Free-form label copied into the output line.
    #[arg(long)]
    label: Option<String>,
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // progress and the JSON line are this binary's output
fn main() -> ExitCode {
    let args = Args::parse();
    for (name, v) in [
        ("--timeout-secs", args.timeout_secs),
        ("--pool-idle-secs", args.pool_idle_secs),
        ("--max-secs", args.max_secs),
    ] {
        if !(v.is_finite() && v > 0.0) {
            eprintln!("error: {name} must be a positive number of seconds");
            return ExitCode::from(2);
        }
    }
    let plan = Plan {
        gateways: args.gateways,
        key: args.key,
        concurrency: args.concurrency,
        requests: args.requests,
        burst: args.burst,
        gaps: Gaps::Uniform {
            min: Duration::from_millis(args.gap_min_ms),
            max: Duration::from_millis(args.gap_max_ms),
            seed: args.seed,
        },
        timeout: Duration::from_secs_f64(args.timeout_secs),
        pool_idle: Duration::from_secs_f64(args.pool_idle_secs),
        max_duration: Duration::from_secs_f64(args.max_secs),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let progress = |r: &tollgate_benches::keepalive::Report| {
        if r.bursts.is_multiple_of(5) || r.requests >= plan.requests {
            eprintln!(
                "[keepalive] {:>7} requests, {:>3} bursts, {} connections opened, {} closed, {} transport errors ({:.0} s)",
                r.requests, r.bursts, r.connections_opened, r.connections_closed, r.transport_errors, r.elapsed_s
            );
        }
    };
    match runtime.block_on(run(&plan, progress)) {
        Ok(report) => {
            let mut line = serde_json::to_value(&report).unwrap_or_default();
            line["label"] = serde_json::json!(args.label);
            line["concurrency"] = serde_json::json!(plan.concurrency);
            line["burst"] = serde_json::json!(plan.burst);
            line["gateways"] = serde_json::json!(plan.gateways.len());
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
