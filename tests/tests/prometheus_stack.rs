//! The shipped dashboards and alert rules against a real Prometheus: `promtool` checks the rules
//! and runs their unit tests, and a Prometheus on loopback scrapes a gateway and a ledger
//! consumer under load (successes, streams, upstream errors, a fallback, a refusal) while every
//! dashboard query and every alert's signal is required to parse and to return a series.

use anyhow::{ensure, Context, Result};
use serde_json::json;
use std::time::Duration;
use tollgate_tests::prometheus::{alert_rules, dashboard_queries, free_port, rule_files, rule_tests, Prometheus};
use tollgate_tests::*;

/// LiteLLM's metric names the gateway must export when `litellm_settings.callbacks` names
/// `prometheus` (docs/observability.md lists the whole mapping).
const LITELLM_NAMES: &[&str] = &[
    "litellm_spend_metric_total",
    "litellm_total_tokens_total",
    "litellm_requests_metric_total",
    "litellm_proxy_total_requests_metric_total",
    "litellm_proxy_failed_requests_metric_total",
    "litellm_request_total_latency_metric_bucket",
    "litellm_deployment_state",
    "litellm_deployment_cooled_down_total",
    "litellm_remaining_team_budget_metric",
];

fn promtool(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("promtool")
        .args(args)
        .output()
        .context("cannot run promtool: run deploy/local/prereqs")?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "promtool {args:?} failed:\n{text}");
    Ok(text)
}

#[test]
fn promtool_checks_and_tests_the_alert_rules() -> Result<()> {
    let rules = rule_files()?;
    ensure!(!rules.is_empty(), "no rule files");
    for file in &rules {
        let text = promtool(&["check", "rules", &file.to_string_lossy()])?;
        ensure!(text.contains("SUCCESS"), "{text}");
    }
    let tests = rule_tests()?;
    ensure!(!tests.is_empty(), "no rule tests beside the rules");
    let mut tested = String::new();
    for file in &tests {
        promtool(&["test", "rules", &file.to_string_lossy()])?;
        tested.push_str(&std::fs::read_to_string(file)?);
    }
    // Every alert has a unit test that expects it to fire.
    for alert in alert_rules()? {
        ensure!(tested.contains(&format!("alertname: {}\n", alert.name)), "{} has no promtool unit test", alert.name);
        alert.signal()?;
    }
    Ok(())
}

async fn stream_chat(client: &reqwest::Client, gw: &str, key: &str) -> Result<()> {
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}],
                      "max_tokens": 5, "stream": true, "stream_options": {"include_usage": true}});
    let resp = client.post(format!("{gw}/v1/chat/completions")).bearer_auth(key).json(&body).send().await?;
    ensure!(resp.status() == 200, "stream: {}", resp.status());
    resp.bytes().await?;
    Ok(())
}

/// Traffic of every kind the dashboards show.
async fn drive(client: &reqwest::Client, gw: &str, key: &str, limited: &str) -> Result<()> {
    for _ in 0..5 {
        let resp = chat_as(client, gw, key, "gpt-4o-mini", None).await?;
        ensure!(resp.status() == 200, "gpt-4o-mini: {}", resp.status());
        stream_chat(client, gw, key).await?;
    }
    // Every deployment of `broken` fails: retried, cooled down, then served by its fallback.
    for _ in 0..3 {
        let resp = chat_as(client, gw, key, "broken", None).await?;
        ensure!(resp.status() == 200, "broken falls back: {}", resp.status());
    }
    // No fallback: the upstream error reaches the client.
    let resp = chat_as(client, gw, key, "dead", None).await?;
    ensure!(resp.status().is_server_error(), "dead: {}", resp.status());
    // One request a minute: the second is refused.
    chat_as(client, gw, limited, "gpt-4o-mini", None).await?;
    let (status, code, _) = error_code(chat_as(client, gw, limited, "gpt-4o-mini", None).await?).await;
    ensure!(status == 429 && code == "rpm_limit_exceeded", "refusal: {status} {code}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_query_returns_series() -> Result<()> {
    let dir = scratch_dir("prometheus-stack")?;
    let topics = Topics::create("prom", 1).await?;
    let ks = unique("tg_prom_").replace('-', "_");
    let consumer_metrics = format!("127.0.0.1:{}", free_port()?);
    let consumer_cfg = ConsumerConfig {
        budgets: Some(ConsumerBudgets {
            state_topic: Some(topics.budget_state.clone()),
            heartbeat_interval_ms: Some(500),
            ..ConsumerBudgets::default()
        }),
        metrics_listen: Some(consumer_metrics.clone()),
        ..ConsumerConfig::new(&topics.usage, &unique("ledger-prom-"), &ks, 100)
    };
    let consumer = start_consumer(&dir, &consumer_cfg).await?;
    let mock = start_mock(&dir, &[]).await?;
    let mut gateway_cfg = GatewayConfig::tenancy("gw-prom", mock.url()?, &topics, &ks);
    let broken = format!("{}/status/500/v1", mock.url()?);
    gateway_cfg.model_list.push(model_entry("broken", &broken));
    gateway_cfg.model_list.push(model_entry("dead", &broken));
    for m in ["broken", "dead"] {
        gateway_cfg.prices.insert(m.to_owned(), Price::TEST);
    }
    let gateway_cfg = gateway_cfg.with_yaml(
        "router_settings:\n  num_retries: 1\n  allowed_fails: 1\n  cooldown_time: 300\n  \
         fallbacks: [{\"broken\": [\"gpt-4o-mini\"]}]\n\
         litellm_settings:\n  callbacks: [prometheus]\n",
    )?;
    let gateway = start_gateway(&dir, &gateway_cfg).await?;
    let gw = gateway.url()?.to_owned();
    let admin = AdminApi::new(&gw);
    let client = reqwest::Client::new();

    let team = unique("team-prom-");
    admin.ok("/team/new", json!({"team_id": team, "max_budget": 100.0})).await?;
    let key = admin.ok("/key/generate", json!({"team_id": team})).await?["key"].as_str().context("key")?.to_owned();
    let limited = admin.ok("/key/generate", json!({"rpm_limit": 1})).await?["key"].as_str().context("key")?.to_owned();
    // The team's hard budget is served once the gateway has heard the consumer's heartbeat.
    eventually("a fresh budget view", Duration::from_secs(60), || async {
        Ok((chat_as(&client, &gw, &key, "gpt-4o-mini", None).await?.status() == 200).then_some(()))
    })
    .await?;
    drive(&client, &gw, &key, &limited).await?;

    let gateway_target = gw.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let prometheus =
        Prometheus::start(&dir, &[("gateway", gateway_target), ("ledger", consumer_metrics.clone())]).await?;
    // Both targets up, and scraped often enough for `rate` and `deriv` (two samples or more).
    eventually("both targets scraped", Duration::from_secs(60), || async {
        let up = prometheus.query("count_over_time(up[1m]) >= 3 and up == 1").await?;
        Ok((up.len() == 2).then_some(()))
    })
    .await?;

    let mut queries = dashboard_queries()?;
    for alert in alert_rules()? {
        // The whole rule parses (it may well return nothing: nothing is wrong) ...
        prometheus.query(&alert.expr).await.with_context(|| format!("alert {}", alert.name))?;
        // ... and what it measures exists.
        queries.push((format!("alert {}", alert.name), alert.signal()?.to_owned()));
    }
    for name in LITELLM_NAMES {
        queries.push((format!("LiteLLM name {name}"), (*name).to_owned()));
    }
    let checked = queries.len();
    // Polled until every query answers (series fill in as scrapes arrive), then the list of
    // those that still answer nothing is the failure.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let missing = loop {
        let mut missing = Vec::new();
        for (what, expr) in &queries {
            // A parse error fails at once.
            let series = prometheus.query(expr).await.with_context(|| format!("{what}: {expr}"))?;
            if series.is_empty() {
                missing.push(format!("{what}: {expr}"));
            }
        }
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break missing;
        }
        // Keep some traffic going while waiting; the pause only paces the polling.
        stream_chat(&client, &gw, &key).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    ensure!(missing.is_empty(), "{} of {checked} queries return no series:\n{}", missing.len(), missing.join("\n"));
    eprintln!("{checked} PromQL expressions returned series");

    prometheus.stop().await?;
    gateway.stop().await?;
    consumer.stop().await?;
    drop(mock);
    Ok(())
}
