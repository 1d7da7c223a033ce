//! The walking skeleton end to end: chat completions through the gateway to the mock provider,
//! usage events through real Kafka, folded into real Cassandra exactly once — also when the whole
//! topic is replayed by a fresh consumer group.

use anyhow::{ensure, Context, Result};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use tollgate_tests::*;

const PARTITIONS: i32 = 3;
const REQUESTS: usize = 240;
const CONCURRENCY: usize = 32;
fn gateway_config(mock_url: &str, topic: &str, dead_port: u16) -> GatewayConfig {
    let model = |name: &str, api_base: String| {
        let mut entry = model_entry(name, &api_base);
        entry.litellm_params.api_key = Some("os.environ/TOLLGATE_E2E_UPSTREAM_KEY".to_owned());
        entry
    };
    let mut slow = model("slow", format!("{mock_url}/delay/2000/v1"));
    slow.litellm_params.timeout = Some(0.3);
    let models = [
        model("gpt-4o-mini", format!("{mock_url}/v1")),
        model("unreachable", format!("http://127.0.0.1:{dead_port}/v1")),
        slow,
    ];
    let mut config = GatewayConfig::new("gw-e2e", &models, topic, &kafka_bootstrap());
    // Config-file keys only: the gateway's own key hashing, without a server secret.
    config.gateway.key_hash_secret = None;
    config.gateway.max_body_bytes = Some(65_536);
    config
}

fn consumer_config(topic: &str, group: &str, keyspace: &str) -> ConsumerConfig {
    ConsumerConfig::new(topic, group, keyspace, 500)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chat_completions_are_metered_exactly_once_and_replays_do_not_count_twice() -> Result<()> {
    let dir = scratch_dir("skeleton")?;
    let topic = unique("usage-e2e-");
    let keyspace = unique("e2e_");
    create_topic(&topic, PARTITIONS).await?;

    std::env::set_var("TOLLGATE_E2E_UPSTREAM_KEY", "sk-upstream-e2e");
    let mock = start_mock(&dir, &["--latency-ms", "2", "--api-key", "sk-upstream-e2e", "--workers", "2"]).await?;
    let gateway = start_gateway(&dir, &gateway_config(mock.url()?, &topic, 9)).await?;
    let first_group = unique("ledger-");
    let consumer = start_consumer(&dir, &consumer_config(&topic, &first_group, &keyspace)).await?;
    let gw = gateway.url()?.to_owned();

    // N concurrent requests spread over the keys; every response reports its cost.
    let client = reqwest::Client::new();
    let results: Vec<Result<(usize, i64, i64)>> = stream::iter(0..REQUESTS)
        .map(|i| {
            let client = client.clone();
            let gw = gw.clone();
            async move {
                let (body, expected, _) = request_body(i);
                let (key, _) = TENANT_KEYS[i % TENANT_KEYS.len()];
                let resp = client.post(format!("{gw}/v1/chat/completions")).bearer_auth(key).json(&body).send().await?;
                ensure!(resp.status() == 200, "request {i}: status {} body {}", resp.status(), resp.text().await?);
                let reported: i64 =
                    resp.headers().get("x-tollgate-cost-nano-usd").context("no cost header")?.to_str()?.parse()?;
                let answer: Value = resp.json().await?;
                ensure!(answer["choices"][0]["message"]["content"].is_string(), "not a chat completion: {answer}");
                Ok((i, reported, expected))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut reported_total = 0i64;
    let mut per_key: HashMap<&str, i64> = HashMap::new();
    let mut per_team: HashMap<&str, i64> = HashMap::new();
    for r in results {
        let (i, reported, expected) = r?;
        assert_eq!(reported, expected, "request {i}: the gateway reported a cost the price table does not give");
        reported_total += reported;
        let (key, team) = TENANT_KEYS[i % TENANT_KEYS.len()];
        *per_key.entry(key).or_default() += reported;
        if let Some(team) = team {
            *per_team.entry(team).or_default() += reported;
        }
    }

    // The ledger converges to exactly what the gateway reported, at every scope.
    let session = cql().await?;
    let key_scopes: Vec<(String, i64)> = per_key.iter().map(|(k, v)| (format!("key/{}", key_hash(k)), *v)).collect();
    eventually("the ledger to hold every request", Duration::from_secs(90), || async {
        let mut total = 0;
        let mut events = 0;
        for (scope, _) in &key_scopes {
            let (s, e) = scope_total(&session, &keyspace, scope).await?;
            total += s;
            events += e;
        }
        let mut teams_done = true;
        for (team, expected) in &per_team {
            teams_done &= scope_total(&session, &keyspace, &format!("team/{team}")).await?.0 == *expected;
        }
        Ok((events == REQUESTS as i64 && total == reported_total && teams_done).then_some(()))
    })
    .await?;
    let assert_ledger = |label: &'static str| {
        let session = &session;
        let keyspace = &keyspace;
        let key_scopes = &key_scopes;
        let per_team = &per_team;
        async move {
            for (scope, expected) in key_scopes {
                let (spent, _) = scope_total(session, keyspace, scope).await?;
                assert_eq!(spent, *expected, "{label}: key scope {scope}");
            }
            for (team, expected) in per_team {
                let (spent, _) = scope_total(session, keyspace, &format!("team/{team}")).await?;
                assert_eq!(spent, *expected, "{label}: team {team}");
            }
            let (count, sum) = event_ledger_totals(session, keyspace).await?;
            assert_eq!(count, REQUESTS as i64, "{label}: event ledger rows");
            assert_eq!(sum, reported_total, "{label}: event ledger sum");
            Ok::<(), anyhow::Error>(())
        }
    };
    assert_ledger("after the first pass").await?;

    // Publish copies of already-counted events (as a gateway replaying its spool would): they
    // must be recognised by event_id and not counted again.
    let copied = republish_some(&topic, 60).await?;
    assert_eq!(copied, 60);
    let first_group_topic = topic.clone();
    eventually("the consumer to read the copies", Duration::from_secs(60), || {
        let topic = first_group_topic.clone();
        let group = first_group.clone();
        async move { Ok(group_caught_up(&group, &topic, PARTITIONS)?.then_some(())) }
    })
    .await?;
    assert_ledger("after duplicates were published").await?;

    // Replay the whole topic from offset 0 with a fresh consumer group: nothing may change.
    consumer.stop().await?;
    let replay_group = unique("replay-");
    let replay = start_consumer(&dir, &consumer_config(&topic, &replay_group, &keyspace)).await?;
    let replay_topic = topic.clone();
    eventually("the replay consumer to commit the end of every partition", Duration::from_secs(90), || {
        let group = replay_group.clone();
        let topic = replay_topic.clone();
        async move { Ok(group_caught_up(&group, &topic, PARTITIONS)?.then_some(())) }
    })
    .await?;
    assert_ledger("after replaying the topic from offset 0").await?;
    replay.stop().await?;
    gateway.stop().await?;
    drop(mock);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_openai_errors_and_failed_upstreams_are_still_metered() -> Result<()> {
    let dir = scratch_dir("bad-input")?;
    let topic = unique("usage-bad-");
    create_topic(&topic, 1).await?;
    std::env::set_var("TOLLGATE_E2E_UPSTREAM_KEY", "sk-upstream-e2e");
    let mock = start_mock(&dir, &["--api-key", "sk-upstream-e2e"]).await?;
    // A port that refuses connections: bind, note it, close it.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let gateway = start_gateway(&dir, &gateway_config(mock.url()?, &topic, dead_port)).await?;
    let gw = gateway.url()?.to_owned();
    let client = reqwest::Client::new();
    let chat = format!("{gw}/v1/chat/completions");
    let key = TENANT_KEYS[0].0;

    let expect_envelope = |status: u16, kind: &'static str| {
        move |resp: (u16, Value)| {
            assert_eq!(resp.0, status, "{}", resp.1);
            assert_eq!(resp.1["error"]["type"], kind, "{}", resp.1);
            assert!(resp.1["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", resp.1);
            assert!(resp.1["error"].get("param").is_some() && resp.1["error"].get("code").is_some(), "{}", resp.1);
        }
    };
    async fn send(r: reqwest::RequestBuilder) -> Result<(u16, Value)> {
        let resp = r.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?))
    }

    let ok_body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    expect_envelope(400, "invalid_request_error")(
        send(client.post(&chat).bearer_auth(key).header("content-type", "application/json").body("{\"model\": "))
            .await?,
    );
    expect_envelope(400, "invalid_request_error")(
        send(client.post(&chat).bearer_auth(key).json(&json!({"model": 7, "messages": []}))).await?,
    );
    expect_envelope(401, "authentication_error")(send(client.post(&chat).json(&ok_body)).await?);
    let wrong = send(client.post(&chat).bearer_auth("sk-not-a-key-e2e").json(&ok_body)).await?;
    assert!(!wrong.1.to_string().contains("sk-not-a-key-e2e"), "the key must not be echoed: {}", wrong.1);
    expect_envelope(401, "authentication_error")(wrong);
    expect_envelope(404, "invalid_request_error")(
        send(client.post(&chat).bearer_auth(key).json(&json!({"model": "nope", "messages": []}))).await?,
    );
    let huge = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "y".repeat(100_000)}]});
    expect_envelope(413, "invalid_request_error")(send(client.post(&chat).bearer_auth(key).json(&huge)).await?);

    // Upstream refused and upstream timed out: 502/504 in the envelope, and an event each.
    let refused = send(
        client
            .post(&chat)
            .bearer_auth(key)
            .header("x-request-id", "e2e-refused")
            .json(&json!({"model": "unreachable", "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await?;
    expect_envelope(502, "api_error")(refused);
    let timed_out = send(
        client
            .post(&chat)
            .bearer_auth(key)
            .header("x-request-id", "e2e-timeout")
            .json(&json!({"model": "slow", "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await?;
    expect_envelope(504, "timeout_error")(timed_out);
    let ok = send(client.post(&chat).bearer_auth(key).header("x-request-id", "e2e-ok").json(&ok_body)).await?;
    assert_eq!(ok.0, 200, "{}", ok.1);

    // Exactly the three requests that reached a provider produced events, as CloudEvents.
    let events = collect_events(&topic, 3, Duration::from_secs(60)).await?;
    assert_eq!(events["e2e-refused"].status, 502);
    assert_eq!(events["e2e-refused"].error_type.as_deref(), Some("upstream_unavailable"));
    assert_eq!(events["e2e-timeout"].status, 504);
    assert_eq!(events["e2e-timeout"].error_type.as_deref(), Some("upstream_timeout"));
    assert_eq!(events["e2e-ok"].status, 200);
    assert!(events["e2e-ok"].cost_nano_usd.0 > 0);
    assert_eq!(events.len(), 3, "requests rejected before a provider must not produce events");

    // No secret reached the gateway's log.
    gateway_log_has_no_secrets(&gateway.log())?;
    gateway.stop().await?;
    drop(mock);
    Ok(())
}

fn gateway_log_has_no_secrets(log: &str) -> Result<()> {
    for secret in ["sk-upstream-e2e", "sk-not-a-key-e2e"].iter().chain(TENANT_KEYS.iter().map(|(k, _)| k)) {
        ensure!(!log.contains(secret), "a secret appears in the gateway log");
    }
    Ok(())
}
