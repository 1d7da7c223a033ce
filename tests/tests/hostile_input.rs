//! Hostile input at the gateway's edge, on real Kafka and Cassandra: ids that would poison the
//! ledger (the 65,500-character `user` that once stalled billing for every tenant), malformed
//! request ids, output limits that disagree, customers of other teams, fallbacks a key may not
//! use, model lists of users and organizations, keys of deleted users. Each is refused with the
//! error that names it, and billing goes on exactly for everything that was served.

use anyhow::{ensure, Context, Result};
use serde_json::json;
use std::time::Duration;
use tollgate_tests::*;

/// `gpt-4o-mini` and `gpt-4o` on the mock, and `broken`, whose provider always answers 500 and
/// which falls back to `gpt-4o`.
fn config(mock: &str, topics: &Topics, keyspace: &str) -> Result<GatewayConfig> {
    let models = [
        model_entry("gpt-4o-mini", &format!("{mock}/v1")),
        model_entry("gpt-4o", &format!("{mock}/v1")),
        model_entry("broken", &format!("{mock}/status/500/v1")),
    ];
    let mut config = GatewayConfig {
        database: Some(Cql::test(keyspace)),
        general_settings: Some(GeneralSettings {
            master_key: Some(MASTER_KEY.to_owned()),
            ..GeneralSettings::default()
        }),
        budgets: Some(Budgets::fail_open()),
        ..GatewayConfig::new("gw-hostile", &models, &topics.usage, &kafka_bootstrap())
    };
    if let Some(kafka) = &mut config.kafka {
        kafka.budget_state_topic = Some(topics.budget_state.clone());
        kafka.control_topic = Some(topics.control.clone());
    }
    config.with_yaml("router_settings:\n  num_retries: 0\n  fallbacks: [{broken: [gpt-4o]}]\n")
}

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_at_the_edge_and_billing_goes_on() -> Result<()> {
    let Fixture { dir, topics, keyspace: ks, mock, .. } = Fixture::start("hostile", 3).await?;
    let group = unique("ledger-");
    let gateway = start_gateway(&dir, &config(mock.url()?, &topics, &ks)?).await?;
    let consumer = start_consumer(&dir, &ConsumerConfig::new(&topics.usage, &group, &ks, 500)).await?;
    let gw = gateway.url()?.to_owned();
    let admin = AdminApi::new(&gw);
    let client = reqwest::Client::new();
    let key_of = |v: serde_json::Value| v["key"].as_str().map(str::to_owned).context("key shown once");

    admin.ok("/organization/new", json!({"organization_id": "org-narrow", "models": ["gpt-4o-mini"]})).await?;
    admin.ok("/team/new", json!({"team_id": "team-narrow", "organization_id": "org-narrow"})).await?;
    admin.ok("/team/new", json!({"team_id": "team-open"})).await?;
    admin.ok("/team/new", json!({"team_id": "team-other"})).await?;
    let open = key_of(admin.ok("/key/generate", json!({"team_id": "team-open"})).await?)?;
    let only_broken = key_of(admin.ok("/key/generate", json!({"team_id": "team-open", "models": ["broken"]})).await?)?;
    let narrow = key_of(admin.ok("/key/generate", json!({"team_id": "team-narrow"})).await?)?;
    let other = key_of(admin.ok("/key/generate", json!({"team_id": "team-other"})).await?)?;
    admin.ok("/customer/new", json!({"user_id": "cust-open", "team_id": "team-open", "max_budget": 10})).await?;

    // Every 200 is charged what its header says; `served` counts requests that reached a
    // provider (they each leave one usage event, errors included).
    let mut charged = 0i64;
    let mut served = 0i64;

    // 1. Ids from requests are bounded: the `user` that once poisoned the ledger, and worse.
    for len in [65_500, 70_000] {
        let mut body = chat("gpt-4o-mini");
        body["user"] = json!("u".repeat(len));
        let resp = client.post(format!("{gw}/v1/chat/completions")).bearer_auth(&open).json(&body).send().await?;
        let (status, code, v) = error_code(resp).await;
        ensure!(
            status == 400 && code == "invalid_request" && v["error"]["param"] == "user",
            "user of {len}: {status} {v}"
        );
        ensure!(v.to_string().len() < 1_000, "the error does not repeat the value");
    }
    let bad_headers = [
        ("x-tollgate-customer-id", "a/model/gpt-4o".to_owned()),
        ("x-tollgate-customer-id", "c".repeat(300)),
        ("x-request-id", "r".repeat(200)),
    ];
    for (name, value) in bad_headers {
        let resp = client
            .post(format!("{gw}/v1/chat/completions"))
            .bearer_auth(&open)
            .header(name, value)
            .json(&chat("gpt-4o-mini"))
            .send()
            .await?;
        let (status, _, v) = error_code(resp).await;
        ensure!(status == 400 && v["error"]["param"] == name, "{name}: {status} {v}");
    }

    // 2. Output limits that disagree would let a request reserve less than it can spend.
    let mut body = chat("gpt-4o-mini");
    body["max_completion_tokens"] = json!(100_000);
    let resp = client.post(format!("{gw}/v1/chat/completions")).bearer_auth(&open).json(&body).send().await?;
    let (status, _, v) = error_code(resp).await;
    ensure!(status == 400 && v["error"]["param"] == "max_completion_tokens", "{status} {v}");

    // 3. A customer of another team is not this key's to charge; its own team's is.
    let (status, code, _) = error_code(chat_as(&client, &gw, &other, "gpt-4o-mini", Some("cust-open")).await?).await;
    ensure!(status == 403 && code == "customer_not_allowed", "{status} {code}");
    let resp = chat_as(&client, &gw, &open, "gpt-4o-mini", Some("cust-open")).await?;
    ensure!(resp.status() == 200, "own team's customer: {}", resp.status());
    charged += cost_of(&resp)?;
    served += 1;

    // 4. Fallbacks obey the key's allow-list: `broken` may not fall back to `gpt-4o` for a key
    // allowed `broken` only, and does for a key allowed everything.
    let resp = chat_as(&client, &gw, &only_broken, "broken", None).await?;
    ensure!(resp.status() == 500, "a fallback the key may not use was taken: {}", resp.status());
    served += 1;
    let resp = chat_as(&client, &gw, &open, "broken", None).await?;
    ensure!(resp.status() == 200, "fallback: {}", resp.status());
    ensure!(resp.headers()["x-tollgate-model-group"] == "gpt-4o", "served by the fallback");
    charged += cost_of(&resp)?;
    served += 1;

    // 5. The organization's model list applies to its teams' keys.
    let (status, code, _) = error_code(chat_as(&client, &gw, &narrow, "gpt-4o", None).await?).await;
    ensure!(status == 403 && code == "model_not_allowed", "{status} {code}");

    // 6. A key names a user that exists (a new id makes one); deleting the user stops the key.
    let with_user = key_of(admin.ok("/key/generate", json!({"user_id": "person-1"})).await?)?;
    let (status, info) = admin.get("/user/info?user_id=person-1").await?;
    ensure!(status == 200, "/key/generate made the user: {status} {info}");
    let resp = chat_as(&client, &gw, &with_user, "gpt-4o-mini", None).await?;
    ensure!(resp.status() == 200, "{}", resp.status());
    charged += cost_of(&resp)?;
    served += 1;
    admin.ok("/user/delete", json!({"user_ids": ["person-1"]})).await?;
    let (status, code, _) = error_code(chat_as(&client, &gw, &with_user, "gpt-4o-mini", None).await?).await;
    ensure!(status == 401 && code == "user_not_found", "{status} {code}");

    // 7. Where models are served from is for admins: a plain key sees its models and prices.
    let info: serde_json::Value =
        client.get(format!("{gw}/model/info")).bearer_auth(&narrow).send().await?.json().await?;
    let text = info.to_string();
    ensure!(!text.contains("api_base") && !text.contains("127.0.0.1"), "a plain key sees deployments: {info}");
    ensure!(info["data"].as_array().map(Vec::len) == Some(1), "only the models it may use: {info}");
    let (status, all) = admin.get("/model/info").await?;
    ensure!(status == 200 && all.to_string().contains("api_base"), "{status} {all}");

    // 8. Billing went on through all of it: every request that reached a provider is in the
    // event ledger once, and the ledger's total is what the answers said.
    for _ in 0..20 {
        let resp = chat_as(&client, &gw, &open, "gpt-4o-mini", Some("cust-any")).await?;
        ensure!(resp.status() == 200, "{}", resp.status());
        charged += cost_of(&resp)?;
        served += 1;
    }
    let session = cql().await?;
    let (count, sum) = eventually("the ledger to hold every served request", Duration::from_secs(60), || async {
        let (count, sum) = event_ledger_totals(&session, &ks).await?;
        Ok((count == served).then_some((count, sum)))
    })
    .await?;
    ensure!(sum == charged, "the ledger holds {sum} nano-USD for {count} events; the answers said {charged}");
    // Layer 1 is written first: reconcile once the group has committed the end of the topic,
    // which it does only after Layer 2 and the read model are written too.
    eventually("the consumer group to commit the end of every partition", Duration::from_secs(60), || {
        let (group, topic) = (group.clone(), topics.usage.clone());
        async move { Ok(group_caught_up(&group, &topic, 3)?.then_some(())) }
    })
    .await?;
    let (ok, report) = reconcile(consumer.config.as_deref().context("consumer config")?).await?;
    ensure!(ok, "reconcile: {report}");
    consumer.stop().await?;
    gateway.stop().await?;
    drop(mock);
    Ok(())
}

fn cost_of(resp: &reqwest::Response) -> Result<i64> {
    Ok(resp.headers().get("x-tollgate-cost-nano-usd").context("no cost header")?.to_str()?.parse()?)
}
