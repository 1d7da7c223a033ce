//! `/v1/files` and `/v1/batches` end to end: a batch input file uploaded through a real gateway
//! to the mock provider's Files API, a batch created and run, and billed once it completed: one
//! usage event per answered line on real Kafka, at the catalogue's batch prices, none for the
//! line that failed; the ledger holds exactly what was charged, however many times and by how
//! many gateways the batch is billed. Another key sees none of it, and hostile uploads are
//! refused before anything reaches the provider.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::time::Duration;
use tollgate_benches::mock_batches::{FAIL_MARKER, RUNS_FOR_SECS};
use tollgate_tests::*;

/// gpt-4o-mini through OpenAI's Batch API, in the catalogue (`input_cost_per_token_batches`
/// 7.5e-08, `output_cost_per_token_batches` 3e-07): nano-USD per token.
const BATCH_INPUT: i64 = 75;
const BATCH_OUTPUT: i64 = 300;
const LIMITED_KEY: &str = "sk-e2e-batch-limited";
const BROKE_KEY: &str = "sk-e2e-batch-broke";
const MAX_LINES: usize = 8;
const MAX_FILE: usize = 3 * 1024 * 1024;

fn gateway_config(id: &str, mock: &str, topic: &str, poll_secs: u64) -> Result<GatewayConfig> {
    gateway_config_with(id, mock, topic, poll_secs, &[])
}

/// [`gateway_config`] with more `virtual_keys` entries (YAML list items).
fn gateway_config_with(id: &str, mock: &str, topic: &str, poll_secs: u64, extra: &[String]) -> Result<GatewayConfig> {
    let mut claude = model_entry("claude-batch", &format!("{mock}/anthropic"));
    claude.litellm_params.model = "anthropic/claude-sonnet-4-20250514".to_owned();
    let models =
        [model_entry("gpt-4o-mini", &format!("{mock}/v1")), model_entry("gpt-4o", &format!("{mock}/v1")), claude];
    let mut config = GatewayConfig::new(id, &models, topic, &kafka_bootstrap());
    // Priced by the catalogue, whose entry has batch prices (the test prices have none).
    config.prices.remove("gpt-4o-mini");
    config.virtual_keys.clear();
    let mut keys: Vec<String> = TENANT_KEYS
        .iter()
        .map(|(k, t)| match t {
            Some(team) => format!("  - key: {k}\n    team_id: {team}"),
            None => format!("  - key: {k}"),
        })
        .collect();
    keys.push(format!("  - key: {LIMITED_KEY}\n    models: [gpt-4o]"));
    keys.push(format!("  - key: {BROKE_KEY}\n    max_budget: 0"));
    keys.extend(extra.iter().cloned());
    config.with_yaml(&format!(
        "virtual_keys:\n{}\ngateway:\n  batches: {{max_file_bytes: {MAX_FILE}, max_lines: {MAX_LINES}, poll_interval_secs: {poll_secs}}}\n",
        keys.join("\n")
    ))
}

/// A request line of the input file.
fn line(id: &str, model: &str, content: &str, max_tokens: u64) -> String {
    json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}})
    .to_string()
}

/// A multipart form of `purpose` and `file`.
fn form(purpose: &str, file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "e2e-boundary-7d1f0c";
    let mut body = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n--{boundary}\r\n\
         content-disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\ncontent-type: application/jsonl\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn upload(&self, key: &str, file: &[u8]) -> Result<(u16, Value)> {
        let (content_type, body) = form("batch", file);
        let resp = self
            .http
            .post(format!("{}/v1/files", self.base))
            .bearer_auth(key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
        Self::json(resp).await
    }

    async fn get(&self, key: &str, path: &str) -> Result<(u16, Value)> {
        Self::json(self.http.get(format!("{}{path}", self.base)).bearer_auth(key).send().await?).await
    }

    async fn delete(&self, key: &str, path: &str) -> Result<(u16, Value)> {
        Self::json(self.http.delete(format!("{}{path}", self.base)).bearer_auth(key).send().await?).await
    }

    async fn post(&self, key: &str, path: &str, body: &Value) -> Result<(u16, Value)> {
        Self::json(self.http.post(format!("{}{path}", self.base)).bearer_auth(key).json(body).send().await?).await
    }

    /// `POST` with more headers.
    async fn post_with(&self, key: &str, headers: &[(&str, &str)], path: &str, body: &Value) -> Result<(u16, Value)> {
        let mut request = self.http.post(format!("{}{path}", self.base)).bearer_auth(key);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Self::json(request.json(body).send().await?).await
    }

    async fn json(resp: reqwest::Response) -> Result<(u16, Value)> {
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }
}

/// The error envelope's `type`, checked to be OpenAI's shape.
fn error_type(answer: &Value) -> &str {
    assert!(answer["error"]["message"].is_string(), "not the OpenAI error envelope: {answer}");
    answer["error"]["type"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_billed_once_per_answered_line_at_batch_prices() -> Result<()> {
    let dir = scratch_dir("batches")?;
    let topic = unique("usage-batches-");
    let keyspace = unique("e2e_batches_");
    create_topic(&topic, 1).await?;
    let consumer = start_consumer(&dir, &ConsumerConfig::new(&topic, &unique("ledger-"), &keyspace, 500)).await?;
    let mock = start_mock(&dir, &[]).await?;
    let gateway = start_gateway(&dir, &gateway_config("gw-batches-a", mock.url()?, &topic, 1)?).await?;
    let gw = Client { http: reqwest::Client::new(), base: gateway.url()?.to_owned() };
    let (owner, other) = (TENANT_KEYS[0].0, TENANT_KEYS[2].0);

    // Five lines answered, one the mock fails.
    let contents = ["one", "a longer question for the batch", "x", "four four four four", "fifth line"];
    let mut lines: Vec<String> =
        contents.iter().enumerate().map(|(i, c)| line(&format!("req-{i}"), "gpt-4o-mini", c, 3 + i as u64)).collect();
    lines.push(line("req-fail", "gpt-4o-mini", FAIL_MARKER, 9));
    let file = lines.join("\n") + "\n";
    let (status, uploaded) = gw.upload(owner, file.as_bytes()).await?;
    ensure!(status == 200, "upload: {uploaded}");
    let file_id = uploaded["id"].as_str().context("file id")?.to_owned();
    ensure!(uploaded["purpose"] == "batch");

    // Hostile uploads: refused with 400 (403 for a model the key may not use, 413 over size).
    let long = line("long", "gpt-4o-mini", &"y".repeat(1024 * 1024), 1);
    let too_many: Vec<String> = (0..=MAX_LINES).map(|i| line(&format!("n{i}"), "gpt-4o-mini", "hi", 1)).collect();
    let hostile: Vec<(&str, &str, String, u16)> = vec![
        ("not JSONL", owner, "this is not json\n".into(), 400),
        ("duplicate custom_id", owner, format!("{}\n{}", lines[0], lines[0]), 400),
        ("too many lines", owner, too_many.join("\n"), 400),
        ("line too long", owner, long, 400),
        ("wrong url", owner, lines[0].replace("/v1/chat/completions", "/v1/files"), 400),
        ("provider without batches", owner, line("c", "claude-batch", "hi", 1), 400),
        ("model not allowed", LIMITED_KEY, lines[0].clone(), 403),
        ("over size", owner, "z".repeat(MAX_FILE + 1), 413),
    ];
    for (what, key, data, want) in &hostile {
        let (status, answer) = gw.upload(key, data.as_bytes()).await?;
        ensure!(status == *want, "{what}: {status} {answer}");
        let kind = error_type(&answer);
        ensure!(kind == "invalid_request_error" || *want == 403, "{what}: {answer}");
    }
    ensure!(
        gw.post(
            owner,
            "/v1/batches",
            &json!({"input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"})
        )
        .await?
        .0 == 404
    );

    // A key with a spent budget is refused at creation, as at any request.
    let (_, broke_file) = gw.upload(BROKE_KEY, file.as_bytes()).await?;
    let create = |id: &str| json!({"input_file_id": id, "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": {"job": "e2e"}});
    let (status, answer) =
        gw.post(BROKE_KEY, "/v1/batches", &create(broke_file["id"].as_str().unwrap_or_default())).await?;
    ensure!((status, error_type(&answer)) == (400, "budget_exceeded"), "{answer}");
    // Another key's file is not there for it.
    ensure!(gw.post(other, "/v1/batches", &create(&file_id)).await?.0 == 404);
    let (status, answer) = gw.post(owner, "/v1/batches", &json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": {"tollgate_key_id": "x"}})).await?;
    ensure!(status == 400, "a client may not set the owner: {answer}");

    let (status, batch) =
        gw.post_with(owner, &[("x-litellm-tags", "nightly")], "/v1/batches", &create(&file_id)).await?;
    ensure!(status == 200, "create: {batch}");
    let batch_id = batch["id"].as_str().context("batch id")?.to_owned();
    ensure!(batch["metadata"] == json!({"job": "e2e"}), "the owner stays hidden: {batch}");

    // Another key: 404 for the batch, its file, its list; cancelling it too.
    for path in
        [format!("/v1/batches/{batch_id}"), format!("/v1/files/{file_id}"), format!("/v1/files/{file_id}/content")]
    {
        let (status, answer) = gw.get(other, &path).await?;
        ensure!(status == 404 && error_type(&answer) == "invalid_request_error", "{path}: {status} {answer}");
    }
    ensure!(gw.post(other, &format!("/v1/batches/{batch_id}/cancel"), &json!({})).await?.0 == 404);
    let (_, list) = gw.get(other, "/v1/batches").await?;
    ensure!(list["data"].as_array().is_some_and(Vec::is_empty), "{list}");

    // The poller (every second) finds the batch completed and bills it: one event per answered line.
    let events = collect_events(&topic, contents.len(), Duration::from_secs(60)).await?;
    let mut charged = Vec::new();
    for (i, content) in contents.iter().enumerate() {
        // `request_id` is the provider's batch id and the line's `custom_id`.
        let e = events.values().find(|e| e.request_id.ends_with(&format!("/req-{i}"))).context("an event per line")?;
        let (prompt, completion) = (1 + content.len() as i64 / 4, 3 + i as i64);
        ensure!((e.prompt_tokens as i64, e.completion_tokens as i64) == (prompt, completion), "{e:?}");
        let cost = prompt * BATCH_INPUT + completion * BATCH_OUTPUT;
        ensure!(e.cost_nano_usd.0 == cost, "req-{i}: {} at batch prices is {cost}", e.cost_nano_usd.0);
        ensure!(e.cost_by_token_type.iter().map(|p| p.cost_nano_usd.0).sum::<i64>() == cost);
        ensure!(
            Some(e.occurred_at.timestamp()) == batch["created_at"].as_i64().map(|t| t + RUNS_FOR_SECS)
                && e.requested_model == "gpt-4o-mini"
                && e.team_id.as_deref() == Some("team-alpha")
                && e.tags == ["nightly"],
            "{e:?}"
        );
        charged.push((owner, cost));
    }
    ensure!(!events.values().any(|e| e.request_id.ends_with("/req-fail")), "the failed line is not charged");

    // The client sees it completed; the output file is its own to read. Nothing more is charged.
    let (status, done) = gw.get(owner, &format!("/v1/batches/{batch_id}")).await?;
    ensure!(status == 200 && done["status"] == "completed", "{done}");
    let output_id = done["output_file_id"].as_str().context("output file")?;
    let resp = gw.http.get(format!("{}/v1/files/{output_id}/content", gw.base)).bearer_auth(owner).send().await?;
    ensure!(resp.status() == 200);
    ensure!(resp.text().await?.lines().count() == lines.len());
    ensure!(gw.get(other, &format!("/v1/files/{output_id}/content")).await?.0 == 404);
    let (_, list) = gw.get(owner, "/v1/batches").await?;
    ensure!(
        list["data"][0]["id"] == batch_id.as_str() && list["data"][0]["metadata"] == json!({"job": "e2e"}),
        "{list}"
    );
    holds_for("no second billing in the same gateway", Duration::from_secs(3), || async {
        Ok(records_on(&topic, 1)? == contents.len() as i64)
    })
    .await?;

    // A second gateway, which never saw the batch, finds it for its owner and bills it again:
    // the same event ids, counted once by the ledger.
    let second = start_gateway(&dir, &gateway_config("gw-batches-b", mock.url()?, &topic, 0)?).await?;
    let gw2 = Client { http: reqwest::Client::new(), base: second.url()?.to_owned() };
    ensure!(gw2.get(other, &format!("/v1/batches/{batch_id}")).await?.0 == 404);
    let (status, again) = gw2.get(owner, &format!("/v1/batches/{batch_id}")).await?;
    ensure!(status == 200 && again["status"] == "completed", "{again}");
    eventually("the second gateway's copies on the topic", Duration::from_secs(30), || async {
        Ok((records_on(&topic, 1)? == 2 * contents.len() as i64).then_some(()))
    })
    .await?;
    let session = cql().await?;
    assert_charged(&session, &keyspace, &charged).await?;

    // Deleting files: another key's attempt is 404 and deletes nothing; the owner's deletes the
    // input file and the output at the provider, answered with Tollgate's ids; they are gone.
    for id in [file_id.as_str(), output_id] {
        let path = format!("/v1/files/{id}");
        let (status, answer) = gw.delete(other, &path).await?;
        ensure!(status == 404 && error_type(&answer) == "invalid_request_error", "{path}: {status} {answer}");
        ensure!(gw.get(owner, &path).await?.0 == 200, "{path} is still there");
        let (status, answer) = gw2.delete(owner, &path).await?;
        ensure!(status == 200 && answer == json!({"id": id, "object": "file", "deleted": true}), "{answer}");
        let (status, answer) = gw.get(owner, &path).await?;
        ensure!(status == 404, "{path} after deletion: {status} {answer}");
    }

    second.stop().await?;
    gateway.stop().await?;
    consumer.stop().await?;
    mock.stop().await
}

/// `id` with its character at `at` replaced by another of the same alphabet.
fn forged(id: &str, at: usize) -> String {
    let mut bytes = id.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap_or_default()
}

/// Ids are Tollgate's, authenticated by a secret every gateway shares (here derived from the
/// shared key hash secret): a file uploaded through one gateway is used through another, and
/// through the first after it restarted; a batch created with a customer is billed to the
/// customer by a restarted gateway that never saw it, which finds it in the provider's list
/// without any client asking. Forged, cut, oversized and other keys' ids are 404.
#[tokio::test(flavor = "multi_thread")]
async fn ids_work_on_every_gateway_and_after_a_restart() -> Result<()> {
    let dir = scratch_dir("batch-ids")?;
    let topic = unique("usage-batch-ids-");
    let keyspace = unique("e2e_batch_ids_");
    create_topic(&topic, 1).await?;
    let consumer = start_consumer(&dir, &ConsumerConfig::new(&topic, &unique("ledger-"), &keyspace, 500)).await?;
    let mock = start_mock(&dir, &[]).await?;
    let first = start_gateway(&dir, &gateway_config("gw-ids-1", mock.url()?, &topic, 0)?).await?;
    let second = start_gateway(&dir, &gateway_config("gw-ids-2", mock.url()?, &topic, 0)?).await?;
    let gw1 = Client { http: reqwest::Client::new(), base: first.url()?.to_owned() };
    let gw2 = Client { http: reqwest::Client::new(), base: second.url()?.to_owned() };
    let (owner, other) = (TENANT_KEYS[0].0, TENANT_KEYS[2].0);
    let customer = unique("cust-batch-");

    let contents = ["first question", "second, a longer one", "third"];
    let lines: Vec<String> =
        contents.iter().enumerate().map(|(i, c)| line(&format!("q-{i}"), "gpt-4o-mini", c, 2 + i as u64)).collect();
    let (status, uploaded) = gw1.upload(owner, (lines.join("\n") + "\n").as_bytes()).await?;
    ensure!(status == 200, "upload: {uploaded}");
    let file_id = uploaded["id"].as_str().context("file id")?.to_owned();
    ensure!(
        file_id.starts_with("file-")
            && file_id.len() <= 256
            && file_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "bounded and URL-safe: {file_id}"
    );

    // The second gateway never saw the upload and serves it to its owner, to nobody else.
    let (status, object) = gw2.get(owner, &format!("/v1/files/{file_id}")).await?;
    ensure!(status == 200 && object["id"] == file_id.as_str(), "{object}");
    let bad_ids = [
        forged(&file_id, file_id.len() / 2),
        forged(&file_id, file_id.len() - 1),
        file_id[..file_id.len() - 4].to_owned(),
        format!("{file_id}{}", "A".repeat(300)),
        "file-tg1".to_owned(),
    ];
    for (key, id) in bad_ids.iter().map(|id| (owner, id.as_str())).chain([(other, file_id.as_str())]) {
        for path in [format!("/v1/files/{id}"), format!("/v1/files/{id}/content")] {
            let (status, answer) = gw2.get(key, &path).await?;
            ensure!(status == 404 && error_type(&answer) == "invalid_request_error", "{path}: {status} {answer}");
        }
        let create = json!({"input_file_id": id, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
        ensure!(gw2.post(key, "/v1/batches", &create).await?.0 == 404, "{id}");
    }

    // A batch created on the second gateway, for a customer.
    let create = json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h",
                        "metadata": {"job": "ids"}});
    let headers = [("x-tollgate-customer-id", customer.as_str()), ("x-litellm-tags", "eval-7, nightly")];
    let (status, batch) = gw2.post_with(owner, &headers, "/v1/batches", &create).await?;
    ensure!(status == 200, "create: {batch}");
    let batch_id = batch["id"].as_str().context("batch id")?.to_owned();
    ensure!(batch_id.starts_with("batch_") && batch_id.len() <= 256, "{batch_id}");
    ensure!(batch["input_file_id"] == file_id.as_str() && batch["metadata"] == json!({"job": "ids"}), "{batch}");
    for (key, id) in [(owner, forged(&batch_id, batch_id.len() / 2)), (other, batch_id.clone())] {
        ensure!(gw2.get(key, &format!("/v1/batches/{id}")).await?.0 == 404, "{id}");
        ensure!(gw2.post(key, &format!("/v1/batches/{id}/cancel"), &json!({})).await?.0 == 404, "{id}");
    }

    // The first gateway restarts, now polling: it finds the batch in the provider's list and
    // bills it, to the customer too, before anyone retrieves it.
    first.stop().await?;
    let first = start_gateway(&dir, &gateway_config("gw-ids-1", mock.url()?, &topic, 1)?).await?;
    let gw1 = Client { http: reqwest::Client::new(), base: first.url()?.to_owned() };
    let events = collect_events(&topic, contents.len(), Duration::from_secs(60)).await?;
    let created = batch["created_at"].as_i64().context("created_at")?;
    let mut charged = Vec::new();
    for (i, content) in contents.iter().enumerate() {
        let e = events.values().find(|e| e.request_id.ends_with(&format!("/q-{i}"))).context("an event per line")?;
        let (prompt, completion) = (1 + content.len() as i64 / 4, 2 + i as i64);
        let cost = prompt * BATCH_INPUT + completion * BATCH_OUTPUT;
        ensure!(
            e.cost_nano_usd.0 == cost
                && e.customer_id.as_deref() == Some(customer.as_str())
                && e.team_id.as_deref() == Some("team-alpha")
                && e.gateway_id == "gw-ids-1"
                && e.tags == ["eval-7", "nightly"]
                && e.occurred_at.timestamp() == created + RUNS_FOR_SECS,
            "q-{i}: {e:?}"
        );
        charged.push((owner, cost));
    }

    // The restarted gateway serves the file uploaded before it restarted, and the batch; the
    // output file it names is read through the other gateway.
    ensure!(gw1.get(owner, &format!("/v1/files/{file_id}")).await?.0 == 200);
    let (status, done) = gw1.get(owner, &format!("/v1/batches/{batch_id}")).await?;
    ensure!(status == 200 && done["status"] == "completed" && done["id"] == batch_id.as_str(), "{done}");
    ensure!(done["metadata"] == json!({"job": "ids"}), "the owner and customer stay hidden: {done}");
    let output_id = done["output_file_id"].as_str().context("output file")?;
    let resp = gw2.http.get(format!("{}/v1/files/{output_id}/content", gw2.base)).bearer_auth(owner).send().await?;
    ensure!(resp.status() == 200);
    ensure!(resp.text().await?.lines().count() == lines.len());
    ensure!(gw1.get(other, &format!("/v1/files/{output_id}/content")).await?.0 == 404);
    ensure!(gw1.get(other, &format!("/v1/batches/{batch_id}")).await?.0 == 404);
    let (_, list) = gw2.get(owner, "/v1/batches").await?;
    ensure!(list["data"][0]["id"] == batch_id.as_str() && list["first_id"] == batch_id.as_str(), "{list}");
    let (status, page) = gw2.get(owner, &format!("/v1/batches?after={batch_id}")).await?;
    ensure!(status == 200 && page["data"].as_array().is_some_and(Vec::is_empty), "{page}");

    // The batch routes are counted like the others, under the model group of their id.
    let metrics = gw1.http.get(format!("{}/metrics", gw1.base)).send().await?.text().await?;
    let counted = |endpoint: &str, model: &str, status: &str| {
        let labels = [format!("endpoint=\"{endpoint}\""), format!("model=\"{model}\""), format!("status=\"{status}\"")];
        metrics
            .lines()
            .filter(|l| l.starts_with("tollgate_requests_total{") && labels.iter().all(|x| l.contains(x.as_str())))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    let seen = [("files", "200"), ("files", "404"), ("batches", "200"), ("batches", "404")]
        .map(|(endpoint, status)| counted(endpoint, if status == "200" { "gpt-4o-mini" } else { "unknown" }, status));
    ensure!(seen == [1, 1, 1, 1], "{seen:?}: {metrics}");

    let session = cql().await?;
    assert_charged(&session, &keyspace, &charged).await?;
    let total: i64 = charged.iter().map(|(_, c)| c).sum();
    ensure!(scope_total(&session, &keyspace, &format!("customer/{customer}")).await?.0 == total, "customer total");
    ensure!(scope_total(&session, &keyspace, "tag/eval-7").await?.0 == total, "the batch's tag total");

    first.stop().await?;
    second.stop().await?;
    consumer.stop().await?;
    mock.stop().await
}

/// The most a line can cost at gpt-4o-mini's batch prices, as the gateway bounds it: every
/// byte of its body a prompt token, plus its `max_tokens` (else the catalogue's 16,384 output
/// tokens of gpt-4o-mini).
fn line_max(line: &str) -> i64 {
    let v: Value = serde_json::from_str(line).unwrap_or_default();
    let body = v["body"].to_string();
    let output = v["body"]["max_tokens"].as_i64().unwrap_or(16_384);
    body.len() as i64 * BATCH_INPUT + output * BATCH_OUTPUT
}

/// A key with a hard budget is refused a batch that could cost more than the budget, with the
/// error a request over budget gets; one that fits is held while it runs, so a request made
/// meanwhile is refused as the budget is committed, before and after a restart of the gateway;
/// once billed, the hold becomes what the batch was charged and requests pass again. A soft budget refuses nothing. The ledger holds
/// exactly what was charged.
#[tokio::test(flavor = "multi_thread")]
async fn a_hard_budget_refuses_a_batch_over_it_and_holds_one_that_fits() -> Result<()> {
    // Keys of their own: budget state outlives a test's keyspace.
    let (hard_key, soft_key) = (unique("sk-e2e-batch-hard-"), unique("sk-e2e-batch-soft-"));
    let (hard, soft) = (hard_key.as_str(), soft_key.as_str());
    let dir = scratch_dir("batch-budget")?;
    let topic = unique("usage-batch-budget-");
    let keyspace = unique("e2e_batch_budget_");
    create_topic(&topic, 1).await?;
    let consumer = start_consumer(&dir, &ConsumerConfig::new(&topic, &unique("ledger-"), &keyspace, 500)).await?;
    let mock = start_mock(&dir, &[]).await?;

    // The batch that fits: three lines with `max_tokens`, one without. Its maximum is the
    // key's whole budget, so while it runs nothing is left for anything else.
    let mut fits: Vec<String> =
        (0..3).map(|i| line(&format!("fit-{i}"), "gpt-4o-mini", "a question that fits", 500 + i)).collect();
    fits.push(
        json!({"custom_id": "fit-3", "method": "POST", "url": "/v1/chat/completions",
               "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "no limit"}]}})
        .to_string(),
    );
    let budget: i64 = fits.iter().map(|l| line_max(l)).sum();
    // The batch over it: more lines, with larger output limits.
    let over: Vec<String> = (0..MAX_LINES as u64)
        .map(|i| line(&format!("over-{i}"), "gpt-4o-mini", "a question too many", 3_000 + i))
        .collect();
    ensure!(over.iter().map(|l| line_max(l)).sum::<i64>() > budget);
    let usd = |n: i64| format!("\"{}.{:09}\"", n / 1_000_000_000, n % 1_000_000_000);
    let keys = [
        format!("  - key: {hard}\n    max_budget: {}", usd(budget)),
        format!("  - key: {soft}\n    soft_budget: {}", usd(1)),
    ];
    let gateway = start_gateway(&dir, &gateway_config_with("gw-batch-budget", mock.url()?, &topic, 0, &keys)?).await?;
    let gw = Client { http: reqwest::Client::new(), base: gateway.url()?.to_owned() };
    let create =
        |id: &Value| json!({"input_file_id": id, "endpoint": "/v1/chat/completions", "completion_window": "24h"});

    // Over the budget: refused as a request over budget is, naming the budget's scope.
    let (status, up) = gw.upload(hard, (over.join("\n") + "\n").as_bytes()).await?;
    ensure!(status == 200, "upload: {up}");
    // Asked until the gateway has heard from the ledger consumer (hard budgets fail closed).
    let (status, answer) = eventually("a fresh budget view", Duration::from_secs(60), || async {
        let (status, answer) = gw.post(hard, "/v1/batches", &create(&up["id"])).await?;
        Ok((status != 503).then_some((status, answer)))
    })
    .await?;
    ensure!((status, error_type(&answer)) == (400, "budget_exceeded"), "{status} {answer}");
    ensure!(answer["error"]["code"] == "key_budget_exceeded", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    ensure!(message.contains("API key") && message.contains("this batch can cost up to"), "{message}");
    ensure!(!message.contains(hard), "no secret in the message: {message}");
    // A soft budget far below it refuses nothing.
    let (status, up_soft) = gw.upload(soft, (over.join("\n") + "\n").as_bytes()).await?;
    ensure!(status == 200, "upload: {up_soft}");
    let (status, answer) = gw.post(soft, "/v1/batches", &create(&up_soft["id"])).await?;
    ensure!(status == 200, "a soft budget does not refuse: {answer}");

    // Within the budget: created, and held while it runs (nobody polls it here).
    let (status, up) = gw.upload(hard, (fits.join("\n") + "\n").as_bytes()).await?;
    ensure!(status == 200, "upload: {up}");
    let (status, batch) = gw.post(hard, "/v1/batches", &create(&up["id"])).await?;
    ensure!(status == 200, "create: {batch}");
    ensure!(batch["metadata"].as_object().is_none_or(|m| m.is_empty()), "the hold stays hidden: {batch}");
    let batch_id = batch["id"].as_str().context("batch id")?.to_owned();
    let resp = chat_as(&gw.http, &gw.base, hard, "gpt-4o-mini", None).await?;
    let (status, code, body) = error_code(resp).await;
    ensure!((status, code.as_str()) == (400, "key_budget_exceeded"), "the request sees the hold: {status} {body}");
    ensure!(body["error"]["message"].as_str().is_some_and(|m| m.contains("committed")), "{body}");

    // A clean stop releases the hold; the restarted gateway's recovery (its first poll an
    // hour away) finds the batch running and holds it again, from its metadata.
    gateway.stop().await?;
    let gateway =
        start_gateway(&dir, &gateway_config_with("gw-batch-budget", mock.url()?, &topic, 3_600, &keys)?).await?;
    let gw = Client { http: reqwest::Client::new(), base: gateway.url()?.to_owned() };
    eventually("the batch held again after the restart", Duration::from_secs(30), || async {
        let metrics = gw.http.get(format!("{}/metrics", gw.base)).send().await?.text().await?;
        Ok(metrics.lines().any(|l| l.starts_with("tollgate_batch_holds_total{result=\"recovered\"} 1")).then_some(()))
    })
    .await?;
    let (status, code, body) = eventually("a fresh budget view after the restart", Duration::from_secs(60), || async {
        let answer = error_code(chat_as(&gw.http, &gw.base, hard, "gpt-4o-mini", None).await?).await;
        Ok((answer.0 != 503).then_some(answer))
    })
    .await?;
    ensure!((status, code.as_str()) == (400, "key_budget_exceeded"), "held after the restart: {status} {body}");

    // Retrieved, it has completed and is billed: the hold becomes its cost, the rest is free.
    let (status, done) = gw.get(hard, &format!("/v1/batches/{batch_id}")).await?;
    ensure!(status == 200 && done["status"] == "completed", "{done}");
    let resp = chat_as(&gw.http, &gw.base, hard, "gpt-4o-mini", None).await?;
    ensure!(resp.status() == 200, "after billing: {}", resp.text().await?);

    let events = collect_events(&topic, fits.len() + 1, Duration::from_secs(60)).await?;
    let charged: Vec<(&str, i64)> = events.values().map(|e| (hard, e.cost_nano_usd.0)).collect();
    ensure!(charged.len() == fits.len() + 1, "{events:?}");
    ensure!(charged.iter().map(|(_, c)| c).sum::<i64>() <= budget, "within the budget");
    for (i, l) in fits.iter().enumerate() {
        let e = events.values().find(|e| e.request_id.ends_with(&format!("/fit-{i}"))).context("an event per line")?;
        ensure!(e.cost_nano_usd.0 > 0 && e.cost_nano_usd.0 <= line_max(l), "fit-{i}: {e:?}");
    }
    let session = cql().await?;
    assert_charged(&session, &keyspace, &charged).await?;

    gateway.stop().await?;
    consumer.stop().await?;
    mock.stop().await
}
