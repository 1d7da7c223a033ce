//! What clients of the gateway do in the tests: chat completions with a key, the admin API on
//! the master key, the OpenAI error envelope, and load whose every answer is checked against an
//! independent price computation and counted into the ground truth.

use crate::configs::{INPUT_PRICE, MASTER_KEY, OUTPUT_PRICE, TENANT_KEYS};
use crate::ledger::GroundTruth;
use anyhow::{ensure, Context, Result};
use futures::stream::StreamExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A small chat completion with `key`; returns the response.
pub async fn chat_as(
    client: &reqwest::Client,
    gw: &str,
    key: &str,
    model: &str,
    user: Option<&str>,
) -> Result<reqwest::Response> {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5});
    if let Some(u) = user {
        body["user"] = json!(u);
    }
    Ok(client.post(format!("{gw}/v1/chat/completions")).bearer_auth(key).json(&body).send().await?)
}

/// What an answer says it charged (`x-tollgate-cost-nano-usd`), 0 when it says nothing.
pub fn charged(resp: &reqwest::Response) -> i64 {
    resp.headers()
        .get("x-tollgate-cost-nano-usd")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The status, `error.code` and body of an OpenAI error envelope.
pub async fn error_code(resp: reqwest::Response) -> (u16, String, Value) {
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    (status, v["error"]["code"].as_str().unwrap_or_default().to_owned(), v)
}

/// A client of one gateway's admin API.
pub struct AdminApi {
    pub client: reqwest::Client,
    pub base: String,
    pub key: String,
}

// === impl AdminApi ===

impl AdminApi {
    pub fn new(base: &str) -> AdminApi {
        AdminApi { client: reqwest::Client::new(), base: base.to_owned(), key: MASTER_KEY.to_owned() }
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        let resp = self.client.post(format!("{}{path}", self.base)).bearer_auth(&self.key).json(&body).send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let resp = self.client.get(format!("{}{path}", self.base)).bearer_auth(&self.key).send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// POSTs and requires 200; returns the body.
    pub async fn ok(&self, path: &str, body: Value) -> Result<Value> {
        let (status, v) = self.post(path, body).await?;
        ensure!(status == 200, "{path}: {status} {v}");
        Ok(v)
    }

    /// Makes a virtual key (`/key/generate` with `body`, required to answer 200); returns it.
    pub async fn new_key(&self, body: Value) -> Result<String> {
        Ok(self.ok("/key/generate", body).await?["key"]
            .as_str()
            .context("no key in /key/generate's answer")?
            .to_owned())
    }
}

// === load with ground truth ===

/// Request `i` of a load run and what the mock provider will charge for it at the test prices.
pub fn request_body(i: usize) -> (Value, i64, String) {
    let content = "x".repeat(7 + (i * 37) % 400);
    let max_tokens = 1 + (i * 13) % 97;
    let prompt_tokens = 1 + content.len() as i64 / 4;
    let cost = prompt_tokens * INPUT_PRICE + max_tokens as i64 * OUTPUT_PRICE;
    let customer = format!("cust-{}", i % 5);
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "user": customer,
    });
    (body, cost, customer)
}

/// Sends requests round-robin over `gateways` with `concurrency` in flight until `stop` returns
/// true (checked between requests) or `max_requests` were sent. Every 200 answer's reported
/// cost is checked against the independent price computation and added to the ground truth;
/// 503s (metering backlog full, a documented policy) are counted as rejected.
pub async fn drive_load(
    gateways: &[String],
    concurrency: usize,
    max_requests: usize,
    stop: Arc<AtomicBool>,
) -> Result<GroundTruth> {
    let client = reqwest::Client::new();
    let results: Vec<Result<Option<(usize, i64, String)>>> = futures::stream::iter(0..max_requests)
        .take_while(|_| {
            let stop = stop.clone();
            async move { !stop.load(Ordering::Relaxed) }
        })
        .map(|i| {
            let client = client.clone();
            let gw = gateways[i % gateways.len()].clone();
            async move {
                let (body, expected, customer) = request_body(i);
                let (key, _) = TENANT_KEYS[i % TENANT_KEYS.len()];
                let resp = client.post(format!("{gw}/v1/chat/completions")).bearer_auth(key).json(&body).send().await?;
                if resp.status() == 503 {
                    return Ok(None);
                }
                ensure!(resp.status() == 200, "request {i}: status {} {}", resp.status(), resp.text().await?);
                let reported: i64 =
                    resp.headers().get("x-tollgate-cost-nano-usd").context("no cost header")?.to_str()?.parse()?;
                ensure!(reported == expected, "request {i}: reported cost {reported} != price table {expected}");
                Ok(Some((i, reported, customer)))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut truth = GroundTruth::default();
    for r in results {
        match r? {
            Some((i, cost, customer)) => {
                let (key, team) = TENANT_KEYS[i % TENANT_KEYS.len()];
                truth.add(key, team, &customer, cost);
            }
            None => truth.rejected += 1,
        }
    }
    Ok(truth)
}

/// How many requests the mock provider at `mock` (its base URL) has answered.
pub async fn mock_served(client: &reqwest::Client, mock: &str) -> Result<u64> {
    let stats: Value = client.get(format!("{mock}/stats")).send().await?.json().await?;
    stats["served"].as_u64().context("no served count")
}
