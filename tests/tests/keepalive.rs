//! Client connections outlive short idle gaps: a pooling client that leaves its connections idle
//! for about five seconds between bursts (httpx keeps them 5 s; actix-web's default keep-alive
//! was 5 s, counted from a clock that ticks every 500 ms) gets an answer to every request, on the
//! connections it already has.
//!
//! Before `gateway.keep_alive_secs` (75 s by default), the gateways closed such connections after
//! 4.5-5 s idle; a request the client sent as the gateway closed got no answer ("connection
//! closed before message completed"), and the next burst had to open every connection again.

use anyhow::{ensure, Result};
use std::time::Duration;
use tollgate_benches::keepalive::{run, Gaps, Plan};
use tollgate_tests::*;

const CONCURRENCY: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pooled_connections_survive_idle_gaps_without_lost_requests() -> Result<()> {
    let dir = scratch_dir("keepalive")?;
    let topic = unique("usage-keepalive-");
    create_topic(&topic, 2).await?;
    let mock = start_mock(&dir, &["--workers", "2"]).await?;
    let models = [model_entry("gpt-4o-mini", &format!("{}/v1", mock.url()?))];
    let mut gateways = Vec::new();
    for id in ["gw-keepalive-a", "gw-keepalive-b"] {
        gateways.push(start_gateway(&dir, &GatewayConfig::new(id, &models, &topic, &kafka_bootstrap())).await?);
    }
    let plan = Plan {
        gateways: gateways.iter().map(|g| g.url().map(str::to_owned)).collect::<Result<_>>()?,
        key: TENANT_KEYS[0].0.to_owned(),
        concurrency: CONCURRENCY,
        requests: 5 * 640,
        burst: 640,
        // Gaps just under 5 s land where the old keep-alive closed connections (4.5-5 s after
        // their last answer), those over 5 s where every connection had been closed.
        gaps: Gaps::Fixed([4_700, 5_500, 4_850, 5_900].map(Duration::from_millis).to_vec()),
        timeout: Duration::from_secs(10),
        // reqwest's and hyper's default: the client keeps idle connections far longer than the gaps.
        pool_idle: Duration::from_secs(90),
        max_duration: Duration::from_secs(60),
    };
    let report = run(&plan, |_| {}).await?;
    eprintln!("{}", serde_json::to_string(&report)?);
    ensure!(report.requests == plan.requests, "the run stopped early: {report:?}");
    ensure!(
        report.transport_errors == 0,
        "{} requests got no answer ({:?}), in bursts {:?}; first: {:?}",
        report.transport_errors,
        report.transport,
        report.failed_bursts,
        report.first_transport_error
    );
    ensure!(
        report.statuses.get(&200) == Some(&report.requests),
        "every request should be answered 200: {:?}",
        report.statuses
    );
    // The client keeps idle connections 90 s and closes none itself: a connection that ended
    // was closed by a gateway, and the next burst had to open it again. The defect this guards
    // against closed every connection idle for 5 s, that is nearly all of them at each gap (some
    // 500 closes over the four gaps). On a loaded two-core machine one or two of 129 were seen
    // to close with every request still answered (checked above), so a few are allowed: one in
    // twenty, far below the defect's signature.
    ensure!(
        report.connections_closed <= report.connections_opened / 20,
        "{} of {} connections were closed during the run: the gateways closed idle connections",
        report.connections_closed,
        report.connections_opened
    );
    for g in gateways {
        g.stop().await?;
    }
    drop(mock);
    Ok(())
}
