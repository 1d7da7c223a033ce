//! Each request's upstream attempts on real Kafka and Cassandra: a request retried then served,
//! one that falls back to another model group after errors, one after timeouts and one after
//! refused connections each carry their chain (model group, deployment, provider, retry or
//! fallback, outcome, status) in their usage event on the topic and in `/spend/logs`; a request
//! served by its first attempt carries none; no attempt names an `api_base`.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::time::Duration;
use tollgate_tests::*;

/// What one attempt must show: model group, deployment, kind, outcome and status.
type Want<'a> = (&'a str, &'a str, &'a str, &'a str, Option<u16>);
/// An attempt as shown, owned.
type Shown = (String, String, String, String, Option<u16>);

/// The attempts of an event or a log entry, as [`Want`]s (owned), and whether each says its
/// provider (`openai`, every deployment's here) and a latency.
fn chain(attempts: &Value) -> Result<Vec<Shown>> {
    attempts
        .as_array()
        .context("attempts is no list")?
        .iter()
        .map(|a| {
            ensure!(a["provider"] == "openai" && a["latency_ms"].is_u64(), "{a}");
            let text = |f: &str| a[f].as_str().map(str::to_owned).with_context(|| format!("{f}: {a}"));
            let status = a.get("status").and_then(Value::as_u64).and_then(|s| u16::try_from(s).ok());
            Ok((text("model_group")?, text("deployment")?, text("kind")?, text("outcome")?, status))
        })
        .collect()
}

fn same(got: &[Shown], want: &[Want]) -> bool {
    got.len() == want.len()
        && got.iter().zip(want).all(|(g, w)| (g.0.as_str(), g.1.as_str(), g.2.as_str(), g.3.as_str(), g.4) == *w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_fallbacks_are_listed_in_the_event_and_the_spend_logs() -> Result<()> {
    let Fixture { dir, topics, keyspace: ks, mock, .. } = Fixture::start("attempts", 1).await?;
    // Two mocks: `/fail-first/1` fails the first request a mock sees, so the model route and
    // the pass-through each get one of their own.
    let pt_mock = start_mock(&dir, &[]).await?;
    let m = mock.url()?.to_owned();
    let mut config = GatewayConfig::tenancy("gw-attempts", &m, &topics, &ks);
    let mut slow = model_entry("slow", &format!("{m}/delay/3000/v1"));
    slow.litellm_params.timeout = Some(0.3);
    let added = [
        model_entry("retried", &format!("{m}/fail-first/1/v1")),
        model_entry("broken", &format!("{m}/status/500/v1")),
        slow,
        // Nothing listens on the discard port: the connection is refused.
        model_entry("gone", "http://127.0.0.1:9/v1"),
        model_entry("pt-retried", &format!("{}/fail-first/1/v1", pt_mock.url()?)),
    ];
    for e in added {
        config.prices.insert(e.model_name.clone(), Price::TEST);
        config.model_list.push(e);
    }
    // model_list: gpt-4o-mini #0, gpt-4o #1, retried #2, broken #3, slow #4, gone #5, pt-retried #6.
    let config = config.with_yaml(
        "router_settings:\n  num_retries: 1\n  allowed_fails: 100\n  \
         fallbacks: [{\"broken\": [\"gpt-4o-mini\"]}, {\"slow\": [\"gpt-4o-mini\"]}, {\"gone\": [\"gpt-4o-mini\"]}]\n",
    )?;
    let gateway = start_gateway(&dir, &config).await?;
    let consumer =
        start_consumer(&dir, &ConsumerConfig::new(&topics.usage, &unique("ledger-attempts-"), &ks, 500)).await?;
    let gw = gateway.url()?.to_owned();
    let admin = AdminApi::new(&gw);
    let client = reqwest::Client::new();
    let key = admin.ok("/key/generate", json!({})).await?["key"].as_str().context("key")?.to_owned();

    let ok = "openai/gpt-4o-mini";
    let cases: Vec<(&str, &str, &str, Vec<Want>)> = vec![
        ("att-single", "/v1/chat/completions", "gpt-4o-mini", vec![]),
        (
            "att-retried",
            "/v1/chat/completions",
            "retried",
            vec![
                ("retried", "openai/gpt-4o-mini#2", "first", "error_status", Some(503)),
                ("retried", "openai/gpt-4o-mini#2", "retry", "ok", Some(200)),
            ],
        ),
        (
            "att-broken",
            "/v1/chat/completions",
            "broken",
            vec![
                ("broken", "openai/gpt-4o-mini#3", "first", "error_status", Some(500)),
                ("broken", "openai/gpt-4o-mini#3", "retry", "error_status", Some(500)),
                ("gpt-4o-mini", "openai/gpt-4o-mini#0", "fallback", "ok", Some(200)),
            ],
        ),
        (
            "att-slow",
            "/v1/chat/completions",
            "slow",
            vec![
                ("slow", "openai/gpt-4o-mini#4", "first", "timeout", None),
                ("slow", "openai/gpt-4o-mini#4", "retry", "timeout", None),
                ("gpt-4o-mini", "openai/gpt-4o-mini#0", "fallback", "ok", Some(200)),
            ],
        ),
        (
            "att-gone",
            "/v1/chat/completions",
            "gone",
            vec![
                ("gone", "openai/gpt-4o-mini#5", "first", "connect", None),
                ("gone", "openai/gpt-4o-mini#5", "retry", "connect", None),
                ("gpt-4o-mini", "openai/gpt-4o-mini#0", "fallback", "ok", Some(200)),
            ],
        ),
        (
            "att-pt-retried",
            "/openai/v1/chat/completions",
            "pt-retried",
            vec![
                ("pt-retried", "openai/gpt-4o-mini#6", "first", "error_status", Some(503)),
                ("pt-retried", "openai/gpt-4o-mini#6", "retry", "ok", Some(200)),
            ],
        ),
    ];
    for (id, path, model, want) in &cases {
        let body =
            json!({"model": model, "messages": [{"role": "user", "content": "hello attempts"}], "max_tokens": 3});
        let resp =
            client.post(format!("{gw}{path}")).bearer_auth(&key).header("x-request-id", *id).json(&body).send().await?;
        let status = resp.status();
        let attempts = resp.headers().get("x-tollgate-attempts").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = resp.text().await?;
        ensure!(status == 200, "{id}: {status} {text}");
        let counted = attempts.as_deref().and_then(|a| a.parse::<usize>().ok()).context("x-tollgate-attempts")?;
        ensure!(counted == want.len().max(1), "{id}: x-tollgate-attempts {counted}, want {}", want.len());
    }

    // On the topic: each event's attempts, in order; within every bound; no api_base in it.
    let events = collect_events(&topics.usage, cases.len(), Duration::from_secs(60)).await?;
    for (id, _, model, want) in &cases {
        let event = events.get(*id).with_context(|| format!("no event for {id}"))?;
        tollgate_schemas::limits::check_event(event).map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
        let v = serde_json::to_value(event)?;
        let got = if want.is_empty() {
            ensure!(v.get("attempts").is_none(), "{id}: one attempt lists none: {v}");
            Vec::new()
        } else {
            chain(&v["attempts"])?
        };
        ensure!(same(&got, want), "{id}: attempts {got:?}, want {want:?}");
        ensure!(event.attempts_omitted == 0, "{id}");
        ensure!(event.requested_model == *model && event.status == 200, "{id}: {v}");
        let served = if want.last().is_some_and(|w| w.2 == "fallback") { format!("{ok}#0") } else { String::new() };
        ensure!(served.is_empty() || event.deployment.as_deref() == Some(served.as_str()), "{id}: {v}");
        let text = v.to_string();
        ensure!(!text.contains(&m) && !text.contains("127.0.0.1:9/"), "{id}: an api_base in the event: {text}");
    }

    // In the spend logs, once the ledger holds every event: the same chains.
    let logs = eventually("the spend logs to hold every request", Duration::from_secs(60), || async {
        let (status, logs) = admin.get(&format!("/spend/logs?api_key={key}&page_size=100")).await?;
        ensure!(status == 200, "{status} {logs}");
        let n = logs["data"].as_array().map_or(0, Vec::len);
        Ok((n == cases.len()).then_some(logs))
    })
    .await?;
    let entries = logs["data"].as_array().context("data")?;
    for (id, _, _, want) in &cases {
        let entry = entries.iter().find(|e| e["request_id"] == *id).with_context(|| format!("no log entry {id}"))?;
        let got = chain(&entry["attempts"])?;
        ensure!(same(&got, want), "{id}: logged attempts {got:?}, want {want:?}");
        ensure!(entry["attempts_omitted"] == 0, "{id}: {entry}");
    }

    gateway.stop().await?;
    consumer.stop().await?;
    mock.stop().await?;
    pt_mock.stop().await?;
    Ok(())
}
