//! The consumer's health, served beside `/metrics` on `metrics_listen` (docs/design.md §4.8):
//! `/health/liveness` answers while the process serves; `/health/readiness` answers 200 once the
//! consumer has joined its group, and 503 (saying why) while its group membership is lost or its
//! ledger writes have been failing for longer than [`FAILING_BOUND`]. Orchestrators roll
//! consumers on readiness; a consumer that is not ready still holds no offset it has not folded.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ledger writes failing for longer than this make the consumer unready.
pub const FAILING_BOUND: Duration = Duration::from_secs(30);

/// What readiness is decided on; shared by the Kafka consumer's callbacks and its fold loop.
#[derive(Debug)]
pub struct Health {
    /// When the process started; failure times are kept as milliseconds after it.
    epoch: Instant,
    /// The consumer received an assignment (possibly empty: more consumers than partitions).
    joined: AtomicBool,
    /// The group session was lost and has not come back.
    session_lost: AtomicBool,
    /// Milliseconds after `epoch` when ledger writes started failing; -1 while they succeed.
    failing_since_ms: AtomicI64,
    /// The lag of this consumer's partitions, summed (librdkafka's statistics); -1 until known.
    lag: AtomicI64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            epoch: Instant::now(),
            joined: AtomicBool::new(false),
            session_lost: AtomicBool::new(false),
            failing_since_ms: AtomicI64::new(-1),
            lag: AtomicI64::new(-1),
        }
    }
}

impl Health {
    /// The group gave this consumer its partitions (or none).
    pub fn joined(&self) {
        self.joined.store(true, Ordering::Relaxed);
        self.session_lost.store(false, Ordering::Relaxed);
    }

    pub fn session_lost(&self) {
        self.session_lost.store(true, Ordering::Relaxed);
    }

    /// A ledger write failed (it is retried); the first of a run of failures is remembered.
    pub fn write_failed(&self) {
        let now = i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX);
        let _ = self.failing_since_ms.compare_exchange(-1, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub fn write_succeeded(&self) {
        self.failing_since_ms.store(-1, Ordering::Relaxed);
    }

    /// The lag of this consumer's partitions, summed, as librdkafka last reported it.
    pub fn set_lag(&self, records: i64) {
        self.lag.store(records.max(0), Ordering::Relaxed);
    }

    /// The last lag reported, if any (heartbeats carry it to the gateways).
    pub fn lag(&self) -> Option<i64> {
        Some(self.lag.load(Ordering::Relaxed)).filter(|l| *l >= 0)
    }

    /// `Ok` when ready, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.joined.load(Ordering::Relaxed) {
            return Err("joining the consumer group".into());
        }
        if self.session_lost.load(Ordering::Relaxed) {
            return Err("the consumer group session is lost".into());
        }
        let since = self.failing_since_ms.load(Ordering::Relaxed);
        if since >= 0 {
            let failing = self.epoch.elapsed().saturating_sub(Duration::from_millis(since.unsigned_abs()));
            if failing > FAILING_BOUND {
                return Err(format!("ledger writes failing for {} s", failing.as_secs()));
            }
        }
        Ok(())
    }
}

/// Serves `/metrics`, `/health/liveness` and `/health/readiness` on `listener` until the process
/// ends. Requests are GETs with no body; anything else is refused.
pub async fn serve(listener: tokio::net::TcpListener, metrics: PrometheusHandle, health: Arc<Health>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = answer(&req, &metrics, &health);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .max_buf_size(16 * 1024)
                .header_read_timeout(Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

fn answer(req: &Request<Incoming>, metrics: &PrometheusHandle, health: &Health) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "application/json", r#"{"status":"GET only"}"#.into());
    }
    match req.uri().path() {
        "/metrics" => respond(StatusCode::OK, "text/plain; version=0.0.4", metrics.render()),
        "/health/liveness" => respond(StatusCode::OK, "application/json", r#"{"status":"ok"}"#.into()),
        "/health/readiness" => match health.readiness() {
            Ok(()) => respond(StatusCode::OK, "application/json", r#"{"status":"ok"}"#.into()),
            Err(why) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                serde_json::json!({"status": why}).to_string(),
            ),
        },
        _ => respond(StatusCode::NOT_FOUND, "application/json", r#"{"status":"not found"}"#.into()),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_joined_and_while_writes_do_not_keep_failing() {
        let h = Health::default();
        assert_eq!(h.readiness(), Err("joining the consumer group".into()));
        h.joined();
        assert_eq!(h.readiness(), Ok(()));
        h.session_lost();
        assert!(h.readiness().is_err_and(|e| e.contains("session")));
        h.joined();
        // Failing writes are tolerated for FAILING_BOUND, from the first of the run.
        h.write_failed();
        assert_eq!(h.readiness(), Ok(()));
        let h = Health { epoch: Instant::now() - FAILING_BOUND - Duration::from_secs(1), ..Health::default() };
        h.joined();
        h.write_failed(); // at epoch + ~31 s: just now
        assert_eq!(h.readiness(), Ok(()));
        h.failing_since_ms.store(0, Ordering::Relaxed); // since the epoch, 31 s ago
        assert!(h.readiness().is_err_and(|e| e.contains("failing for 31 s")), "{:?}", h.readiness());
        h.write_succeeded();
        assert_eq!(h.readiness(), Ok(()));
    }
}
