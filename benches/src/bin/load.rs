//! `tollgate-load`: an HTTP/1.1 load generator for overhead runs, closed-loop or at a constant rate.
//!
//! Each of `--concurrency` workers owns one keep-alive connection and sends its next request as
//! soon as the previous answer has been read to the end. `--warmup` requests go first and are not
//! recorded; then exactly `--requests` are timed.
//!
//! With `--rate R` the timed requests are paced instead (open loop, as wrk2 does): request `i` is
//! due at `start + i / R` and its latency counts from that moment whenever no worker was free to
//! send it then, so a stall of the target shows in the percentiles for every request it delayed
//! instead of hiding as fewer requests sent (coordinated omission). A request sent on time is
//! timed from its actual send, so the pacing timer's own slack (about a millisecond) is never
//! charged to the target. `rps` below `offered_rps` means the target could not keep up. With `--pid`, the CPU time of that process (all
//! its threads, from `/proc/<pid>/stat`) is sampled just before and just after the timed requests,
//! which gives CPU-µs per request: the steadiest figure on a shared, noisy machine.
//!
//! After the timed requests it waits (at most `--settle-secs`) until the process's CPU time stops
//! growing before the second sample, so that work a request leaves behind (a usage event written
//! and produced after the answer) is charged to that request and not to the next run. Machine-wide
//! CPU from `/proc/stat` gives `others_cores`: the cores used, on average during the timed
//! requests, by everything except the processes under test (`--pid`, `--also-pid`) and this one;
//! a run with a high figure shared the machine with something else.
//!
//! With `--rss-pid`, the resident memory of those processes (summed) is sampled every 100 ms
//! during the timed requests; `rss_peak_kib` is the largest sum seen.
//!
//! It prints one JSON line and never runs longer than its request count, `--max-secs` and the
//! per-request timeout allow; a failed request counts as an error and still uses up its place.

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

const DEFAULT_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"max_tokens":16}"#;
/// The same chat, streamed, asking for the usage chunk so that every target (the mock directly,
/// a plain proxy, Tollgate) sees and returns the same frames.
const DEFAULT_STREAM_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"max_tokens":16,"stream":true,"stream_options":{"include_usage":true}}"#;

#[derive(Parser, Debug)]
#[command(
    about = "HTTP load generator (closed loop, or constant rate with --rate): fixed request count, latency percentiles, CPU per request"
)]
struct Args {
    /// Target URL, e.g. http://127.0.0.1:4000/v1/chat/completions (plain http only).
    #[arg(long)]
    url: String,
    /// Concurrent workers, one keep-alive connection each.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Timed requests, after the warm-up.
    #[arg(long, default_value_t = 10_000)]
    requests: u64,
    /// Requests sent before timing starts (not recorded).
    #[arg(long, default_value_t = 1_000)]
    warmup: u64,
    /// Stream the chat and record the time to the first SSE `data:` chunk as well.
    #[arg(long)]
    stream: bool,
    /// Bearer token sent in `Authorization`.
    #[arg(long)]
    key: Option<String>,
    /// Further request header, `name: value` (e.g. a gateway's routing headers); repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// JSON body to POST; defaults to a small chat (streamed with `--stream`).
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Process whose CPU time (utime + stime of all threads) is sampled around the timed requests.
    #[arg(long)]
    pid: Option<u32>,
    /// Other processes under test (e.g. the upstream), left out of `others_cores`; repeatable.
    #[arg(long)]
    also_pid: Vec<u32>,
    /// Stop handing out timed requests after this many seconds; the count actually timed is
    /// reported as `requests` (and `capped` is true).
    #[arg(long)]
    max_secs: Option<f64>,
    /// Longest wait, after the timed requests, for the `--pid` process to go idle.
    #[arg(long, default_value_t = 5.0)]
    settle_secs: f64,
    /// Runtime threads of this generator; 1 uses a single-threaded runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Per-request limit in seconds; a request over it is an error and its connection is replaced.
    #[arg(long, default_value_t = 10.0)]
    timeout_secs: f64,
    /// Send the timed requests at this many per second (all workers together), timing each from
    /// when it was due; without it the workers send back to back (closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Processes whose resident memory (VmRSS, summed) is sampled during the timed requests;
    /// repeatable.
    #[arg(long)]
    rss_pid: Vec<u32>,
    /// Free-form label copied into the output line.
    #[arg(long)]
    label: Option<String>,
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // the JSON line is this binary's output
fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// === target and plan ===

/// What every worker sends, resolved once.
struct Target {
    addr: SocketAddr,
    uri: Uri,
    host: HeaderValue,
    auth: Option<HeaderValue>,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    stream: bool,
    timeout: Duration,
}

impl Target {
    fn from_args(args: &Args) -> anyhow::Result<Target> {
        let uri: Uri = args.url.parse().with_context(|| format!("--url {}", args.url))?;
        if uri.scheme_str() != Some("http") {
            bail!("--url must be plain http://");
        }
        let authority = uri.authority().context("--url has no host")?.clone();
        let port = authority.port_u16().unwrap_or(80);
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(authority.host(), port))
            .with_context(|| format!("cannot resolve {authority}"))?
            .next()
            .with_context(|| format!("{authority} resolves to no address"))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).parse::<Uri>()?;
        let body = match &args.body_file {
            Some(path) => Bytes::from(std::fs::read(path).with_context(|| format!("--body-file {}", path.display()))?),
            None if args.stream => Bytes::from_static(DEFAULT_STREAM_BODY.as_bytes()),
            None => Bytes::from_static(DEFAULT_BODY.as_bytes()),
        };
        let auth = match &args.key {
            Some(k) => {
                Some(HeaderValue::from_str(&format!("Bearer {k}")).context("--key is not a valid header value")?)
            }
            None => None,
        };
        let headers = args
            .headers
            .iter()
            .map(|h| {
                let (name, value) =
                    h.split_once(':').with_context(|| format!("--header {h:?} is not `name: value`"))?;
                Ok((HeaderName::try_from(name.trim())?, HeaderValue::from_str(value.trim())?))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if !(args.timeout_secs.is_finite() && args.timeout_secs > 0.0) {
            bail!("--timeout-secs must be positive");
        }
        Ok(Target {
            addr,
            uri: path,
            host: HeaderValue::from_str(authority.as_str())?,
            auth,
            headers,
            body,
            stream: args.stream,
            timeout: Duration::from_secs_f64(args.timeout_secs),
        })
    }

    fn request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(auth) = &self.auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        Ok(builder.body(Full::new(self.body.clone()))?)
    }
}

/// Hands out request slots until `count` are taken or, once started, `limit` has passed. With a
/// rate, slot `i` is due `i / rate` seconds after the start.
struct Tickets {
    next: AtomicU64,
    end: u64,
    limit: Option<Duration>,
    rate: Option<f64>,
    started: std::sync::OnceLock<Instant>,
    capped: std::sync::atomic::AtomicBool,
}

impl Tickets {
    fn new(count: u64, limit: Option<Duration>) -> Tickets {
        Tickets {
            next: AtomicU64::new(0),
            end: count,
            limit,
            rate: None,
            started: std::sync::OnceLock::new(),
            capped: std::sync::atomic::AtomicBool::new(false),
        }
    }
    fn paced(count: u64, limit: Option<Duration>, rate: Option<f64>) -> Tickets {
        Tickets { rate, ..Tickets::new(count, limit) }
    }
    fn start(&self) {
        let _ = self.started.set(Instant::now());
    }
    /// Slots handed out so far.
    fn taken(&self) -> u64 {
        self.next.load(Ordering::Relaxed).min(self.end)
    }
    /// The next slot: `None` when none is left, else `Some(due)` with the time it is due (`None`
    /// when unpaced or not started).
    fn take(&self) -> Option<Option<Instant>> {
        if let (Some(limit), Some(started)) = (self.limit, self.started.get()) {
            if started.elapsed() >= limit {
                self.capped.store(true, Ordering::Relaxed);
                return None;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if i >= self.end {
            return None;
        }
        Some(match (self.rate, self.started.get()) {
            (Some(rate), Some(started)) => Some(*started + Duration::from_secs_f64(i as f64 / rate)),
            _ => None,
        })
    }
}

// === one worker ===

/// Latencies in nanoseconds, as recorded by one worker.
struct Recorded {
    total: Histogram<u64>,
    ttfb: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Recorded {
    /// Requests that got to the end, answered or failed.
    fn count(&self) -> u64 {
        self.total.len() + self.errors
    }
}

impl Recorded {
    fn new() -> anyhow::Result<Recorded> {
        // 1 ns .. 120 s at 3 significant figures.
        Ok(Recorded {
            total: Histogram::new_with_bounds(1, 120_000_000_000, 3)?,
            ttfb: Histogram::new_with_bounds(1, 120_000_000_000, 3)?,
            errors: 0,
            first_error: None,
        })
    }
    fn error(&mut self, e: anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }
}

/// What one request gave: total time and, for streams, time to the first `data:` chunk.
struct Timing {
    total: Duration,
    ttfb: Option<Duration>,
}

struct Connection {
    sender: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Connection> {
    let stream = TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection's own driver; aborted when the worker drops the connection.
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Connection { sender, driver })
}

/// Sends one request on `conn` and reads the answer to its end.
async fn exchange(conn: &mut Connection, target: &Target) -> anyhow::Result<Timing> {
    let request = target.request()?;
    let start = Instant::now();
    conn.sender.ready().await?;
    let response = conn.sender.send_request(request).await?;
    let status = response.status();
    let mut body = response.into_body();
    let mut ttfb = None;
    // The last bytes seen, so that `[DONE]` split across two frames is still found.
    let mut tail: Vec<u8> = Vec::with_capacity(32);
    let mut done = false;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Some(data) = frame.data_ref() else { continue };
        if target.stream {
            if ttfb.is_none() && contains(data, b"data:") {
                ttfb = Some(start.elapsed());
            }
            tail.extend_from_slice(data);
            done = done || contains(&tail, b"data: [DONE]");
            let keep = tail.len().saturating_sub(16);
            tail.drain(..keep);
        }
    }
    let total = start.elapsed();
    if !status.is_success() {
        bail!("HTTP {status}");
    }
    if target.stream && !done {
        bail!("stream ended without `data: [DONE]`");
    }
    Ok(Timing { total, ttfb })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs requests while `tickets` last; records them into `rec` when given.
async fn drain(
    conn: &mut Option<Connection>,
    target: &Target,
    tickets: &Tickets,
    mut rec: Option<&mut Recorded>,
) -> anyhow::Result<()> {
    while let Some(due) = tickets.take() {
        // Paced: wait for the slot's time. `queued` is how long the request waited beyond it
        // because every worker was busy, which is the target's doing and part of its latency.
        let queued = match due {
            Some(due) => {
                let free = Instant::now();
                if free < due {
                    tokio::time::sleep_until(due.into()).await;
                    Duration::ZERO
                } else {
                    free - due
                }
            }
            None => Duration::ZERO,
        };
        // A server may close a keep-alive connection that sat idle (between the phases, while
        // waiting for the target to settle); like any pooled client, start on a fresh one.
        if conn.as_ref().is_some_and(|c| c.sender.is_closed()) {
            *conn = None;
        }
        let result = async {
            let c = match conn {
                Some(c) => c,
                None => conn.insert(connect(target.addr).await?),
            };
            exchange(c, target).await
        };
        let outcome = match tokio::time::timeout(target.timeout, result).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("no complete answer within {:?}", target.timeout)),
        };
        match outcome {
            Ok(t) => {
                if let Some(rec) = rec.as_deref_mut() {
                    rec.total.record(nanos(t.total + queued))?;
                    if let Some(ttfb) = t.ttfb {
                        rec.ttfb.record(nanos(ttfb + queued))?;
                    }
                }
            }
            Err(e) => {
                // The connection may be in any state: start the next request on a fresh one,
                // after a short pause so a refusing target is not hammered.
                *conn = None;
                if let Some(rec) = rec.as_deref_mut() {
                    rec.error(e);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    Ok(())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

async fn worker(
    target: Arc<Target>,
    warmup: Arc<Tickets>,
    timed: Arc<Tickets>,
    warmed: Arc<Barrier>,
    go: Arc<Barrier>,
) -> anyhow::Result<Recorded> {
    let mut rec = Recorded::new()?;
    let mut conn = match connect(target.addr).await {
        Ok(c) => Some(c),
        Err(e) => {
            rec.error(e);
            None
        }
    };
    // The phases are separated by barriers, so that the CPU samples bracket only timed requests.
    let warm = drain(&mut conn, &target, &warmup, None).await;
    warmed.wait().await;
    go.wait().await;
    warm?;
    drain(&mut conn, &target, &timed, Some(&mut rec)).await?;
    Ok(rec)
}

// === CPU time from /proc ===

/// utime + stime, in clock ticks, from the text of `/proc/<pid>/stat` (fields 14 and 15; for a
/// process they already include every thread, live or exited).
fn cpu_ticks_of(stat: &str) -> anyhow::Result<u64> {
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("no `)` in /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so field n is at index n - 3.
    let utime: u64 = fields.get(11).context("no utime field")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime field")?.parse()?;
    Ok(utime + stime)
}

fn cpu_ticks(pid: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    cpu_ticks_of(&stat)
}

/// Clock ticks per second, as `getconf CLK_TCK` reports it (sysconf needs unsafe code).
fn clock_ticks_per_second() -> anyhow::Result<u64> {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output().context("cannot run getconf CLK_TCK")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let hz: u64 = text.trim().parse().with_context(|| format!("getconf CLK_TCK printed {text:?}"))?;
    if hz == 0 {
        bail!("getconf CLK_TCK printed 0");
    }
    Ok(hz)
}

/// Busy clock ticks of the whole machine, all CPUs, from the first line of `/proc/stat`: user,
/// nice, system, irq, softirq and steal (idle and iowait left out).
fn machine_busy_ticks_of(stat: &str) -> anyhow::Result<u64> {
    let line = stat.lines().next().context("empty /proc/stat")?;
    let fields: Vec<u64> =
        line.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>().context("/proc/stat cpu line")?;
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    Ok(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

fn machine_busy_ticks() -> anyhow::Result<u64> {
    machine_busy_ticks_of(&std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?)
}

#[derive(Clone, Copy)]
struct CpuSample {
    target: Option<u64>,
    also: u64,
    own: u64,
    machine: u64,
}

fn sample_cpu(pid: Option<u32>, also: &[u32]) -> anyhow::Result<CpuSample> {
    let mut also_ticks = 0;
    for p in also {
        also_ticks += cpu_ticks(&p.to_string())?;
    }
    Ok(CpuSample {
        target: pid.map(|p| cpu_ticks(&p.to_string())).transpose()?,
        also: also_ticks,
        own: cpu_ticks("self")?,
        machine: machine_busy_ticks()?,
    })
}

/// Waits until `pid` uses at most one clock tick in 100 ms, or `limit` has passed.
async fn settle(pid: u32, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let mut last = cpu_ticks(&pid.to_string())?;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = cpu_ticks(&pid.to_string())?;
        if now.saturating_sub(last) <= 1 {
            break;
        }
        last = now;
    }
    Ok(())
}

/// CPU microseconds per request, rounded to 0.1 µs.
fn cpu_us_per_req(ticks: u64, hz: u64, requests: u64) -> f64 {
    round1(ticks as f64 * 1e6 / hz as f64 / requests.max(1) as f64)
}

// === resident memory from /proc ===

/// VmRSS in KiB from the text of `/proc/<pid>/status`.
fn rss_kib_of(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
}

fn rss_kib(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok().and_then(|s| rss_kib_of(&s))).sum()
}

/// Samples the summed RSS of some processes every 100 ms until stopped; keeps the largest.
struct RssSampler {
    task: Option<tokio::task::JoinHandle<Option<u64>>>,
    stop: Arc<tokio::sync::Notify>,
}

impl RssSampler {
    fn start(pids: &[u32]) -> RssSampler {
        let stop = Arc::new(tokio::sync::Notify::new());
        if pids.is_empty() {
            return RssSampler { task: None, stop };
        }
        let pids = pids.to_vec();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak = rss_kib(&pids);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = tick.tick() => peak = peak.max(rss_kib(&pids)),
                    () = stopped.notified() => break,
                }
            }
            peak.max(rss_kib(&pids))
        });
        RssSampler { task: Some(task), stop }
    }

    async fn stop(self) -> Option<u64> {
        let task = self.task?;
        self.stop.notify_one();
        task.await.ok().flatten()
    }
}

// === the run ===

async fn run(args: Args) -> anyhow::Result<String> {
    if args.concurrency == 0 || args.requests == 0 {
        bail!("--concurrency and --requests must be positive");
    }
    let target = Arc::new(Target::from_args(&args)?);
    let hz = clock_ticks_per_second()?;
    if args.max_secs.is_some_and(|s| !(s.is_finite() && s > 0.0))
        || !(args.settle_secs.is_finite() && args.settle_secs >= 0.0)
    {
        bail!("--max-secs must be positive and --settle-secs not negative");
    }
    let limit = args.max_secs.map(Duration::from_secs_f64);
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        bail!("--rate must be positive");
    }
    let warmup = Arc::new(Tickets::new(args.warmup, limit));
    warmup.start();
    let timed = Arc::new(Tickets::paced(args.requests, limit, args.rate));
    let warmed = Arc::new(Barrier::new(args.concurrency + 1));
    let go = Arc::new(Barrier::new(args.concurrency + 1));
    let mut workers = JoinSet::new();
    for _ in 0..args.concurrency {
        workers.spawn(worker(target.clone(), warmup.clone(), timed.clone(), warmed.clone(), go.clone()));
    }
    warmed.wait().await;
    if let Some(pid) = args.pid {
        settle(pid, Duration::from_secs_f64(args.settle_secs)).await?;
    }
    let before = sample_cpu(args.pid, &args.also_pid)?;
    let start = Instant::now();
    timed.start();
    go.wait().await;
    let rss = RssSampler::start(&args.rss_pid);
    let mut all = Recorded::new()?;
    while let Some(joined) = workers.join_next().await {
        let rec = joined??;
        all.total.add(&rec.total)?;
        all.ttfb.add(&rec.ttfb)?;
        all.errors += rec.errors;
        if all.first_error.is_none() {
            all.first_error = rec.first_error;
        }
    }
    let elapsed = start.elapsed();
    let rss_peak_kib = rss.stop().await;
    let end = sample_cpu(args.pid, &args.also_pid)?;
    let after = match args.pid {
        Some(pid) => {
            settle(pid, Duration::from_secs_f64(args.settle_secs)).await?;
            sample_cpu(args.pid, &args.also_pid)?
        }
        None => end,
    };
    let timed_requests = all.count();
    let under_test = |s: &CpuSample| s.target.unwrap_or(0) + s.also + s.own;
    let others = end.machine.saturating_sub(before.machine).saturating_sub(under_test(&end) - under_test(&before));

    let us = |h: &Histogram<u64>, q: f64| (!h.is_empty()).then(|| round1(h.value_at_quantile(q) as f64 / 1e3));
    let cpu = match (before.target, after.target) {
        (Some(b), Some(a)) => Some(cpu_us_per_req(a.saturating_sub(b), hz, timed_requests)),
        _ => None,
    };
    let line = json!({
        "label": args.label,
        "url": args.url,
        "stream": args.stream,
        "concurrency": args.concurrency,
        "warmup": warmup.taken(),
        "requests": timed_requests,
        "capped": timed.capped.load(Ordering::Relaxed),
        "elapsed_s": round3(elapsed.as_secs_f64()),
        "rps": round1(timed_requests as f64 / elapsed.as_secs_f64()),
        "offered_rps": args.rate,
        "mean_us": (!all.total.is_empty()).then(|| round1(all.total.mean() / 1e3)),
        "p50_us": us(&all.total, 0.50),
        "p90_us": us(&all.total, 0.90),
        "p99_us": us(&all.total, 0.99),
        "max_us": (!all.total.is_empty()).then(|| round1(all.total.max() as f64 / 1e3)),
        "ttfb_p50_us": if args.stream { us(&all.ttfb, 0.50) } else { None },
        "ttfb_p99_us": if args.stream { us(&all.ttfb, 0.99) } else { None },
        "errors": all.errors,
        "first_error": all.first_error,
        "pid": args.pid,
        "cpu_us_per_req": cpu,
        "loader_cpu_us_per_req": cpu_us_per_req(end.own.saturating_sub(before.own), hz, timed_requests),
        "others_cores": round3(others as f64 / hz as f64 / elapsed.as_secs_f64()),
        "rss_peak_kib": rss_peak_kib,
    });
    Ok(line.to_string())
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_after_the_command_name() {
        // A command name with spaces and a ')' must not shift the fields.
        let stat = "4242 (tollgate (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 9 0 1 0";
        assert_eq!(cpu_ticks_of(stat).unwrap(), 1234 + 567);
        assert!(cpu_ticks_of("4242 (short) S 1 2").is_err());
    }

    #[test]
    fn reads_this_process() {
        assert!(cpu_ticks("self").is_ok());
    }

    #[test]
    fn cpu_per_request_is_in_microseconds() {
        // 25 ticks at 100 Hz = 250 ms over 10 000 requests = 25 µs each.
        assert_eq!(cpu_us_per_req(25, 100, 10_000), 25.0);
    }

    #[test]
    fn tickets_run_out() {
        let t = Tickets::new(2, None);
        assert!(t.take().is_some() && t.take().is_some() && t.take().is_none() && t.take().is_none());
        assert!(!t.capped.load(Ordering::Relaxed));
    }

    #[test]
    fn tickets_stop_at_the_time_limit() {
        let t = Tickets::new(u64::MAX, Some(Duration::ZERO));
        assert!(t.take().is_some(), "the limit counts from start()");
        t.start();
        assert!(t.take().is_none() && t.capped.load(Ordering::Relaxed));
    }

    #[test]
    fn paced_tickets_are_due_at_the_rate() {
        let t = Tickets::paced(3, None, Some(1000.0));
        t.start();
        let Some(started) = t.started.get().copied() else { panic!("started") };
        assert_eq!(t.take(), Some(Some(started)));
        assert_eq!(t.take(), Some(Some(started + Duration::from_millis(1))));
        assert_eq!(t.take(), Some(Some(started + Duration::from_millis(2))));
        assert_eq!(t.take(), None);
    }

    #[test]
    fn reads_vm_rss() {
        assert_eq!(rss_kib_of("Name:\tx\nVmHWM:\t 900 kB\nVmRSS:\t  812 kB\n"), Some(812));
        assert_eq!(rss_kib_of("Name:\tkthread\n"), None);
        assert!(rss_kib(&[std::process::id()]).is_some_and(|k| k > 0));
    }

    #[test]
    fn machine_busy_leaves_out_idle_and_iowait() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let stat = "cpu  100 2 30 9999 55 4 5 6 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(machine_busy_ticks_of(stat).unwrap(), 100 + 2 + 30 + 4 + 5 + 6);
    }

    #[test]
    fn finds_done_split_across_frames() {
        let mut tail = b"data: [DO".to_vec();
        tail.extend_from_slice(b"NE]\n\n");
        assert!(contains(&tail, b"data: [DONE]"));
    }
}
