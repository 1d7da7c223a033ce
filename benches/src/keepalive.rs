//! A pooling client's view of a gateway's keep-alive: bursts of chat requests at a fixed
//! concurrency, round robin over several gateways, with idle gaps between the bursts, through one
//! pooled HTTP/1.1 client (hyper-util's, the pool reqwest uses) whose connections outlive the gaps.
//!
//! A server that closes an idle keep-alive connection at the moment the client sends its next
//! request on it makes that request fail with no answer ("connection closed before message
//! completed", or a reset). Such transport failures are counted by kind, apart from HTTP statuses,
//! together with the idle gap before the burst they happened in.
//!
//! It sends requests to the addresses it is given and nowhere else, and stops after its request
//! count or its time limit, whichever comes first.

use anyhow::{bail, Context};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"max_tokens":16}"#;

/// The idle gaps between bursts.
#[derive(Clone, Debug)]
pub enum Gaps {
    /// These gaps in turn, from the first again when they run out.
    Fixed(Vec<Duration>),
    /// Uniformly random between the two bounds, from a seeded generator (reproducible).
    Uniform { min: Duration, max: Duration, seed: u64 },
}

/// What to send.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Base URLs of the gateways, `http://host:port`; request `i` goes to `gateways[i % n]`.
    pub gateways: Vec<String>,
    /// Bearer token of every request.
    pub key: String,
    /// Requests in flight during a burst.
    pub concurrency: usize,
    /// Requests in all.
    pub requests: u64,
    /// Requests per burst.
    pub burst: u64,
    pub gaps: Gaps,
    /// Limit of one request, connection set-up included; over it the request is a timeout.
    pub timeout: Duration,
    /// How long the client keeps an idle connection in its pool.
    pub pool_idle: Duration,
    /// No burst starts after this much time.
    pub max_duration: Duration,
}

/// Why a request got no complete answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transport {
    /// The connection closed before a complete answer arrived.
    Closed,
    /// The connection was reset (or the write found it broken).
    Reset,
    /// No complete answer within the request timeout.
    Timeout,
    /// No connection could be opened.
    Connect,
    Other,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Closed => "closed",
            Transport::Reset => "reset",
            Transport::Timeout => "timeout",
            Transport::Connect => "connect",
            Transport::Other => "other",
        }
    }

    /// Classifies a client error by what its chain of sources says.
    fn of(error: &hyper_util::client::legacy::Error) -> Transport {
        if error.is_connect() {
            return Transport::Connect;
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = source {
            if let Some(h) = e.downcast_ref::<hyper::Error>() {
                if h.is_incomplete_message() || h.is_canceled() {
                    return Transport::Closed;
                }
                if h.is_timeout() {
                    return Transport::Timeout;
                }
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::*;
                match io.kind() {
                    ConnectionReset | ConnectionAborted | BrokenPipe => return Transport::Reset,
                    UnexpectedEof => return Transport::Closed,
                    TimedOut => return Transport::Timeout,
                    _ => {}
                }
            }
            source = e.source();
        }
        Transport::Other
    }
}

/// One burst that had transport failures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FailedBurst {
    pub burst: u64,
    /// The idle gap before it, in milliseconds (`None` for the first burst).
    pub gap_ms: Option<u64>,
    pub failures: u64,
}

/// What a run saw.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    pub requests: u64,
    pub bursts: u64,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests without a complete answer, by kind.
    pub transport: BTreeMap<&'static str, u64>,
    pub transport_errors: u64,
    /// TCP connections the client opened: far fewer than `requests` when the pool reuses them.
    pub connections_opened: u64,
    /// Connections that ended during the run. The pool keeps idle connections longer than any
    /// gap and never closes one itself, so each of these was closed by a gateway (or broke).
    pub connections_closed: u64,
    pub failed_bursts: Vec<FailedBurst>,
    pub first_transport_error: Option<String>,
    pub elapsed_s: f64,
}

/// Counts the connections the pool opens, and those that end.
#[derive(Clone)]
struct CountingConnector {
    inner: HttpConnector,
    opened: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
}

type Tcp = <HttpConnector as tower_service::Service<Uri>>::Response;
type ConnectError = <HttpConnector as tower_service::Service<Uri>>::Error;

impl tower_service::Service<Uri> for CountingConnector {
    type Response = Counted;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Counted, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        self.opened.fetch_add(1, Ordering::Relaxed);
        let connecting = self.inner.call(uri);
        let closed = self.closed.clone();
        Box::pin(async move { Ok(Counted { io: connecting.await?, closed }) })
    }
}

/// A connection of the pool; counted as closed when hyper drops it.
struct Counted {
    io: Tcp,
    closed: Arc<AtomicU64>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }
}

impl hyper::rt::Read for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Counted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Connection for Counted {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

type PooledClient = Client<CountingConnector, Full<Bytes>>;

/// What one request gave.
enum Outcome {
    Status(u16),
    Failed(Transport, String),
}

async fn send(client: &PooledClient, uri: Uri, auth: &str, timeout: Duration) -> Outcome {
    let request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, auth)
        .body(Full::new(Bytes::from_static(BODY.as_bytes())));
    let request = match request {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(Transport::Other, e.to_string()),
    };
    let exchange = async {
        let response = client.request(request).await.map_err(|e| (Transport::of(&e), format!("{e:?}")))?;
        let status = response.status().as_u16();
        // The whole body: a connection that closes in the middle of it is a transport failure.
        response.into_body().collect().await.map_err(|e| {
            let kind = if e.is_incomplete_message() { Transport::Closed } else { Transport::Other };
            (kind, format!("{e:?}"))
        })?;
        Ok::<_, (Transport, String)>(status)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(status)) => Outcome::Status(status),
        Ok(Err((kind, message))) => Outcome::Failed(kind, message),
        Err(_) => Outcome::Failed(Transport::Timeout, format!("no complete answer within {timeout:?}")),
    }
}

/// Runs `plan`; `progress` sees the report after every burst.
pub async fn run(plan: &Plan, mut progress: impl FnMut(&Report)) -> anyhow::Result<Report> {
    if plan.gateways.is_empty() || plan.concurrency == 0 || plan.burst == 0 {
        bail!("a plan needs gateways, a concurrency and a burst size");
    }
    let uris = plan
        .gateways
        .iter()
        .map(|g| format!("{}/v1/chat/completions", g.trim_end_matches('/')).parse::<Uri>())
        .collect::<Result<Vec<_>, _>>()
        .context("a gateway URL is not valid")?;
    let auth = format!("Bearer {}", plan.key);
    let (opened, closed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let connector = CountingConnector { inner: http, opened: opened.clone(), closed: closed.clone() };
    // No cap on idle connections per host: the pool closes none of its own before `pool_idle`.
    let client: PooledClient = Client::builder(TokioExecutor::new()).pool_idle_timeout(plan.pool_idle).build(connector);
    let mut rng = match plan.gaps {
        Gaps::Uniform { seed, .. } => fastrand::Rng::with_seed(seed),
        Gaps::Fixed(_) => fastrand::Rng::new(),
    };
    let started = Instant::now();
    let mut report = Report::default();
    let mut gap = None;
    while report.requests < plan.requests && started.elapsed() < plan.max_duration {
        let first = report.requests;
        let count = plan.burst.min(plan.requests - first);
        let outcomes: Vec<Outcome> = futures::stream::iter(first..first + count)
            .map(|i| {
                let uri = uris[(i % uris.len() as u64) as usize].clone();
                let (client, auth) = (&client, auth.as_str());
                async move { send(client, uri, auth, plan.timeout).await }
            })
            .buffer_unordered(plan.concurrency)
            .collect()
            .await;
        let mut failures = 0;
        for outcome in outcomes {
            match outcome {
                Outcome::Status(s) => *report.statuses.entry(s).or_default() += 1,
                Outcome::Failed(kind, message) => {
                    failures += 1;
                    *report.transport.entry(kind.name()).or_default() += 1;
                    report.first_transport_error.get_or_insert(message);
                }
            }
        }
        report.requests += count;
        report.transport_errors += failures;
        if failures > 0 {
            report.failed_bursts.push(FailedBurst {
                burst: report.bursts,
                gap_ms: gap.map(|g: Duration| g.as_millis() as u64),
                failures,
            });
        }
        report.bursts += 1;
        report.connections_opened = opened.load(Ordering::Relaxed);
        report.connections_closed = closed.load(Ordering::Relaxed);
        report.elapsed_s = started.elapsed().as_secs_f64();
        progress(&report);
        if report.requests >= plan.requests {
            break;
        }
        let next = match &plan.gaps {
            Gaps::Fixed(list) if list.is_empty() => Duration::ZERO,
            Gaps::Fixed(list) => list[(report.bursts - 1) as usize % list.len()],
            Gaps::Uniform { min, max, .. } => {
                let (lo, hi) = (min.as_millis() as u64, max.as_millis() as u64);
                Duration::from_millis(rng.u64(lo.min(hi)..=hi.max(lo)))
            }
        };
        // The pool sits idle: every connection of the last burst waits for the next one.
        tokio::time::sleep(next).await;
        gap = Some(next);
    }
    report.connections_opened = opened.load(Ordering::Relaxed);
    report.connections_closed = closed.load(Ordering::Relaxed);
    report.elapsed_s = started.elapsed().as_secs_f64();
    Ok(report)
}
