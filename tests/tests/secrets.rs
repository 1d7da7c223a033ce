//! Secrets stay where they belong: `/metrics` served on its own address or behind a token, and
//! no key, token or secret in any log line.

use anyhow::{ensure, Result};
use tollgate_tests::*;

/// A free port on 127.0.0.1 (bound, then released for the gateway to take).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_moved_off_the_public_listener_and_put_behind_a_token() -> Result<()> {
    let dir = scratch_dir("secrets")?;
    let topic = unique("usage-secrets-");
    create_topic(&topic, 1).await?;
    let mock = start_mock(&dir, &[]).await?;
    let models = [model_entry("gpt-4o-mini", &format!("{}/v1", mock.url()?), "")];
    let token = "metrics-token-0123456789abcdef";
    let port = free_port()?;
    let extra = format!("environment_variables:\n  METRICS_TOKEN: {token}\n");
    let config = gateway_yaml("gw-secrets", &models, &topic, &kafka_bootstrap(), &extra).replacen(
        "gateway:\n",
        &format!("gateway:\n  metrics:\n    listen: 127.0.0.1:{port}\n    token: os.environ/METRICS_TOKEN\n"),
        1,
    );
    let gateway = start_gateway(&dir, &config).await?;
    let gw = gateway.url()?.to_owned();
    let client = reqwest::Client::new();
    // Some traffic, so there is something to count.
    let resp = chat_as(&client, &gw, TENANT_KEYS[0].0, "gpt-4o-mini", None).await?;
    ensure!(resp.status() == 200, "{}", resp.status());

    let public = client.get(format!("{gw}/metrics")).bearer_auth(token).send().await?;
    ensure!(public.status() == 404, "metrics still on the public listener: {}", public.status());
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let anonymous = client.get(&metrics).send().await?;
    ensure!(anonymous.status() == 403, "metrics without the token: {}", anonymous.status());
    let wrong = client.get(&metrics).bearer_auth("metrics-token-wrong-0000000").send().await?;
    ensure!(wrong.status() == 403, "metrics with a wrong token: {}", wrong.status());
    let text = client.get(&metrics).bearer_auth(token).send().await?.text().await?;
    ensure!(text.contains("tollgate_requests_total"), "no request counter in:\n{text}");

    let log = gateway.log();
    gateway.stop().await?;
    for secret in [token, KEY_HASH_SECRET, TENANT_KEYS[0].0] {
        ensure!(!log.contains(secret), "a secret is in the log");
    }
    ensure!(!text.contains(TENANT_KEYS[0].0), "a key is in the metrics");
    drop(mock);
    Ok(())
}
