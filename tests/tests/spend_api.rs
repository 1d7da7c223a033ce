//! The spend API and budget push-back on real Kafka and Cassandra: request logs, key/team spend,
//! the global report and daily activity all equal what the gateway served, to the nano-dollar;
//! budget alerts go out once per threshold.

use anyhow::{ensure, Context, Result};
use serde_json::json;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tollgate_tests::*;

/// A webhook receiver on loopback: records every POSTed JSON body, answers 200.
async fn webhook_receiver() -> Result<(String, Arc<Mutex<Vec<serde_json::Value>>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/alerts", listener.local_addr()?);
    let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = conn.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(head_end) = text.find("\r\n\r\n") else { continue };
                    let length: usize = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if buf.len() < head_end + 4 + length {
                        continue;
                    }
                    if let Ok(v) = serde_json::from_slice(&buf[head_end + 4..head_end + 4 + length]) {
                        sink.lock().await.push(v);
                    }
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                    return;
                }
            });
        }
    });
    Ok((url, received))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_api_equals_what_was_served_and_alerts_go_out_once() -> Result<()> {
    let dir = scratch_dir("spend-api")?;
    let topics = Topics::create("spend", 3).await?;
    let ks = unique("tg_spend_").replace('-', "_");
    let (webhook, alerts) = webhook_receiver().await?;
    let consumer_cfg = ConsumerConfig {
        budgets: Some(ConsumerBudgets {
            state_topic: Some(topics.budget_state.clone()),
            heartbeat_interval_ms: Some(1000),
            alert_thresholds: Some(vec![50, 90]),
            webhook_url: Some(webhook.clone()),
        }),
        ..ConsumerConfig::new(&topics.usage, &unique("ledger-spend-"), &ks, 500)
    };
    let mock = start_mock(&dir, &[]).await?;
    let gateway = start_gateway(&dir, &GatewayConfig::tenancy("gw-spend", mock.url()?, &topics, &ks)).await?;
    let consumer = start_consumer(&dir, &consumer_cfg).await?;
    let gw = gateway.url()?.to_owned();
    let admin = AdminApi::new(&gw);
    let session = cql().await?;

    // Load through the config file's keys (two teams, a solo key, five customers).
    let truth = drive_load(std::slice::from_ref(&gw), 8, 300, Arc::new(AtomicBool::new(false))).await?;
    eventually("the ledger to hold every request", Duration::from_secs(60), || async {
        Ok(truth.ledger_complete(&session, &ks).await?.then_some(()))
    })
    .await?;
    let expect = |scope: &str| truth.scopes.get(scope).copied().unwrap_or_default();

    // Request logs, per key, by page number (LiteLLM's way) and by cursor: the same entries,
    // each once, newest first, all of the key's and only the key's.
    for (raw, _) in TENANT_KEYS {
        let hash = key_hash(raw);
        let (spent, requests) = expect(&format!("key/{hash}"));
        let mut sum = 0i64;
        let mut by_page: Vec<String> = Vec::new();
        for page in 1.. {
            let (status, v) = admin.get(&format!("/spend/logs?api_key={raw}&page={page}&page_size=17")).await?;
            ensure!(status == 200, "{status} {v}");
            let data = v["data"].as_array().context("data")?;
            ensure!(data.iter().all(|e| e["api_key"] == hash.as_str()), "another key's log");
            sum += data.iter().map(|e| e["spend_nano_usd"].as_i64().unwrap_or(0)).sum::<i64>();
            by_page.extend(data.iter().map(|e| e["event_id"].as_str().unwrap_or_default().to_owned()));
            // `total` comes from the spend ledger's day rows, `has_more` from the read itself.
            ensure!(v["total"] == requests, "key {raw}: total {} != {requests}", v["total"]);
            let last = page >= v["total_pages"].as_u64().unwrap_or(0) as usize;
            ensure!(v["has_more"] == !last && v["next_cursor"].is_null() == last, "page {page} of {raw}: {v}");
            if last {
                break;
            }
        }
        ensure!(
            by_page.len() as i64 == requests && sum == spent,
            "key {raw}: logs {by_page:?} {sum} != {requests} {spent}"
        );
        let mut newest_first = by_page.clone();
        newest_first.sort_by(|a, b| b.cmp(a)); // UUIDv7: time ordered
        ensure!(by_page == newest_first, "key {raw}: not newest first");
        let mut by_cursor: Vec<String> = Vec::new();
        let mut after = String::new();
        loop {
            let (status, v) = admin.get(&format!("/spend/logs?api_key={hash}&page_size=17{after}")).await?;
            ensure!(status == 200, "{status} {v}");
            let data = v["data"].as_array().context("data")?;
            by_cursor.extend(data.iter().map(|e| e["event_id"].as_str().unwrap_or_default().to_owned()));
            match v["next_cursor"].as_str() {
                Some(c) => after = format!("&after={c}"),
                None => break,
            }
        }
        ensure!(by_cursor == by_page, "key {raw}: cursor pages differ from numbered pages");
    }
    // Filters: team and customer. Two tenants at once: no ledger row counts them, no total.
    let (_, v) = admin.get("/spend/logs?team_id=team-alpha&end_user=cust-3&page_size=1000").await?;
    let sum: i64 =
        v["data"].as_array().context("data")?.iter().map(|e| e["spend_nano_usd"].as_i64().unwrap_or(0)).sum();
    let alpha_cust3: i64 = (0..truth.requests + truth.rejected)
        .filter(|i| TENANT_KEYS[i % TENANT_KEYS.len()].1 == Some("team-alpha") && i % 5 == 3)
        .map(|i| request_body(i).1)
        .sum();
    ensure!(sum == alpha_cust3, "team+customer filter: {sum} != {alpha_cust3}");
    ensure!(v["total"].is_null() && v["total_pages"].is_null() && v["has_more"] == false, "{v}");
    // No key or team named: a scan of the event ledger, which still shows every entry once.
    let mut scanned = std::collections::BTreeSet::new();
    let mut after = String::new();
    loop {
        let (status, v) = admin.get(&format!("/spend/logs?page_size=50{after}")).await?;
        ensure!(status == 200, "{status} {v}");
        for e in v["data"].as_array().context("data")? {
            ensure!(scanned.insert(e["event_id"].to_string()), "{} twice", e["event_id"]);
        }
        match v["next_cursor"].as_str() {
            Some(c) => after = format!("&after={c}"),
            None => break,
        }
    }
    ensure!(scanned.len() == truth.requests, "scan: {} entries, served {}", scanned.len(), truth.requests);
    let (status, v) = admin.get("/spend/logs?start_date=2026-01-01&end_date=2026-12-31").await?;
    ensure!(status == 400 && v["error"]["param"] == "end_date", "{status} {v}");
    for (query, param) in [
        ("page=202&page_size=50", "page"),
        ("after=00zz", "after"),
        ("page=2&after=7b7d", "page"),
        (
            "team_id=team-alpha&after=7b2276223a312c2264223a22323032362d31322d3031222c226f223a226b6579222c2273223a307d",
            "after",
        ),
    ] {
        let (status, v) = admin.get(&format!("/spend/logs?{query}")).await?;
        ensure!(status == 400 && v["error"]["param"] == param, "{query}: {status} {v}");
    }

    // Key and team spend in /key/info (config keys have no team record, so /team/info is for
    // records of the database; see below) and the global report.
    let (_, info) = admin.get(&format!("/key/info?key={}", TENANT_KEYS[0].0)).await?;
    ensure!(info["info"]["spend_nano_usd"] == expect(&format!("key/{}", key_hash(TENANT_KEYS[0].0))).0, "{info}");
    let (_, report) = admin.get("/global/spend/report?group_by=team").await?;
    for team in ["team-alpha", "team-beta"] {
        let row = report.as_array().context("report")?.iter().find(|r| r["team_id"] == team).context("team row")?;
        ensure!(row["spend_nano_usd"] == expect(&format!("team/{team}")).0, "{team}: {row}");
        ensure!(row["models"][0]["model"] == "gpt-4o-mini", "{row}");
    }
    let (_, report) = admin.get("/global/spend/report?group_by=customer").await?;
    ensure!(report.as_array().map(Vec::len) == Some(5), "five customers: {report}");
    let (_, daily) = admin.get("/spend/daily?group_by=key").await?;
    let total: i64 = TENANT_KEYS.iter().map(|(k, _)| expect(&format!("key/{}", key_hash(k))).0).sum();
    ensure!(daily["totals"]["spend_nano_usd"] == total, "daily totals: {} != {total}", daily["totals"]);
    // By model: the platform's own rows (`global/all/model/*`, written apart from the keys'), one
    // row per day and model, the same total as the keys' rows.
    let (_, by_model) = admin.get("/spend/daily?group_by=model").await?;
    ensure!(by_model["totals"] == daily["totals"], "by model {} != by key {}", by_model["totals"], daily["totals"]);
    let rows = by_model["results"].as_array().context("results")?;
    ensure!(rows.len() == 1 && rows[0]["model"] == "gpt-4o-mini" && rows[0].get("api_key").is_none(), "{by_model}");
    let (_, by_customer) = admin.get("/spend/daily?group_by=customer").await?;
    let customers: std::collections::BTreeSet<&str> =
        by_customer["results"].as_array().context("results")?.iter().filter_map(|r| r["end_user"].as_str()).collect();
    ensure!(customers.len() == 5, "five customers by day: {by_customer}");
    let (status, v) = admin.get("/spend/daily?group_by=tags").await?;
    ensure!(status == 400 && v["error"]["param"] == "group_by", "group_by=tags: {status} {v}");
    // One tenant by its id field: its own rows only, its ledger total; a hostile id names the field.
    for team in ["team-alpha", "team-beta"] {
        let (status, one) = admin.get(&format!("/spend/daily?group_by=team&team_id={team}")).await?;
        let rows = one["results"].as_array().context("results")?;
        ensure!(status == 200 && !rows.is_empty() && rows.iter().all(|r| r["team_id"] == team), "{team}: {one}");
        ensure!(one["totals"]["spend_nano_usd"] == expect(&format!("team/{team}")).0, "{team}: {}", one["totals"]);
        let (_, report) = admin.get(&format!("/global/spend/report?group_by=team&team_id={team}")).await?;
        let rows = report.as_array().context("report")?;
        ensure!(rows.len() == 1 && rows[0]["spend_nano_usd"] == expect(&format!("team/{team}")).0, "{report}");
    }
    // Summed over the range (`sum=range`): one result per group, largest first, each the sum of
    // its day results and its ledger total to the nano-dollar; a page of them with the totals of
    // all; `/global/spend/report` paged the same way.
    for (group, field) in [("key", "api_key"), ("customer", "end_user"), ("team", "team_id"), ("model", "model")] {
        let (_, days) = admin.get(&format!("/spend/daily?group_by={group}")).await?;
        let (status, summed) = admin.get(&format!("/spend/daily?group_by={group}&sum=range&limit=1000")).await?;
        ensure!(status == 200 && summed["totals"] == days["totals"], "{group}: {status} {summed} against {days}");
        let mut by_day: std::collections::BTreeMap<String, i64> = Default::default();
        for r in days["results"].as_array().context("results")? {
            *by_day.entry(r[field].as_str().context("id")?.to_owned()).or_default() +=
                r["spend_nano_usd"].as_i64().context("spend")?;
        }
        let results = summed["results"].as_array().context("results")?;
        let by_range: std::collections::BTreeMap<String, i64> = results
            .iter()
            .map(|r| Some((r[field].as_str()?.to_owned(), r["spend_nano_usd"].as_i64()?)))
            .collect::<Option<_>>()
            .context("ids and spend")?;
        ensure!(by_range == by_day && summed["total_groups"] == by_day.len(), "{group}: {by_range:?} != {by_day:?}");
        ensure!(results.windows(2).all(|w| w[0]["spend_nano_usd"].as_i64() >= w[1]["spend_nano_usd"].as_i64()));
        if group != "model" {
            for (id, spend) in &by_range {
                let scope = if group == "key" { format!("key/{id}") } else { format!("{group}/{id}") };
                ensure!(*spend == expect(&scope).0, "{scope}: {spend}");
            }
        }
        // Page by page, two at a time: the same list, each page with every group's totals.
        let mut paged = Vec::new();
        for offset in (0..results.len() + 2).step_by(2) {
            let (_, page) =
                admin.get(&format!("/spend/daily?group_by={group}&sum=range&limit=2&offset={offset}")).await?;
            ensure!(page["totals"] == days["totals"] && page["limit"] == 2, "{group} at {offset}: {page}");
            ensure!(page["has_more"] == (offset + 2 < results.len()), "{group} at {offset}: {page}");
            paged.extend(page["results"].as_array().context("results")?.iter().cloned());
        }
        ensure!(&paged == results, "{group}: the pages together are not the list");
    }
    let (_, whole) = admin.get("/global/spend/report?group_by=customer").await?;
    let (_, part) = admin.get("/global/spend/report?group_by=customer&limit=2&offset=1").await?;
    ensure!(part.as_array().map(Vec::as_slice) == whole.as_array().and_then(|w| w.get(1..3)), "{part} of {whole}");
    for (query, param) in [
        ("/spend/daily?group_by=team&sum=range&limit=0", "limit"),
        ("/spend/daily?group_by=team&sum=range&limit=1001", "limit"),
        ("/spend/daily?group_by=team&sum=range&offset=-1", "offset"),
        ("/spend/daily?group_by=team&sum=range&offset=1000001", "offset"),
        ("/spend/daily?group_by=team&sum=week", "sum"),
        ("/spend/daily?group_by=team&limit=10", "limit"),
        ("/global/spend/report?group_by=team&limit=abc", "limit"),
        ("/global/spend/report?group_by=team&offset=x", "offset"),
    ] {
        let (status, v) = admin.get(query).await?;
        ensure!(status == 400 && v["error"]["param"] == param, "{query}: {status} {v}");
    }
    let (status, none) = admin.get("/spend/daily?group_by=team&team_id=team-nobody").await?;
    ensure!(status == 200 && none["results"].as_array().is_some_and(Vec::is_empty), "{status} {none}");
    for (query, param) in
        [("group_by=team&team_id=a/model/b", "team_id"), ("group_by=customer&end_user=a%20b", "end_user")]
    {
        let (status, v) = admin.get(&format!("/spend/daily?{query}")).await?;
        ensure!(status == 400 && v["error"]["param"] == param, "{query}: {status} {v}");
    }

    // A plain key sees its own logs and no reports; a key of a team sees its own entries, not
    // its team's, even when it names the team.
    let own = AdminApi { key: TENANT_KEYS[3].0.to_owned(), ..AdminApi::new(&gw) };
    let (status, v) = own.get("/spend/logs").await?;
    ensure!(status == 200 && v["total"] == expect(&format!("key/{}", key_hash(TENANT_KEYS[3].0))).1, "{status}");
    ensure!(own.get("/global/spend/report").await?.0 == 403);
    let member = AdminApi { key: TENANT_KEYS[0].0.to_owned(), ..AdminApi::new(&gw) };
    let mine = key_hash(TENANT_KEYS[0].0);
    let (status, v) = member.get("/spend/logs?team_id=team-alpha&page_size=1000").await?;
    let data = v["data"].as_array().context("data")?;
    ensure!(status == 200 && data.iter().all(|e| e["api_key"] == mine.as_str()), "{status} {v}");
    ensure!(data.len() as i64 == expect(&format!("key/{mine}")).1, "{} of the key's entries", data.len());
    let (status, _) = member.get(&format!("/spend/logs?api_key={}", TENANT_KEYS[1].0)).await?;
    ensure!(status == 403, "another key's logs: {status}");

    // Budget push-back and alerts: a database key with a budget of 0.0004 USD and alerts at
    // 50% and 90%; each request costs 3,450 nano-USD.
    admin.ok("/team/new", json!({"team_id": "team-db", "max_budget": 10})).await?;
    let key = admin.ok("/key/generate", json!({"team_id": "team-db", "max_budget": 0.0004})).await?["key"]
        .as_str()
        .context("key")?
        .to_owned();
    let client = reqwest::Client::new();
    let mut served = 0;
    for _ in 0..400 {
        // A hard budget is refused with 503 until the consumer's first heartbeat arrives.
        let resp = eventually("a budget view fresh enough to serve", Duration::from_secs(60), || async {
            let resp = chat_as(&client, &gw, &key, "gpt-4o-mini", None).await?;
            Ok((resp.status() != 503).then_some(resp))
        })
        .await?;
        if resp.status() != 200 {
            let (_, code, _) = error_code(resp).await;
            ensure!(code == "key_budget_exceeded", "{code}");
            break;
        }
        served += 1;
    }
    ensure!(served == 116, "0.0004 USD at 3,450 nano-USD a request is 116 requests, served {served}");
    let scope = format!("key/{}", key_token(&key));
    let got = eventually("three alerts", Duration::from_secs(30), || async {
        let a = alerts.lock().await;
        let mine: Vec<serde_json::Value> = a.iter().filter(|v| v["scope"] == scope.as_str()).cloned().collect();
        Ok((mine.len() >= 3).then_some(mine))
    })
    .await?;
    // A quiet period, deliberately: a duplicate alert would arrive within it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mine: Vec<serde_json::Value> =
        alerts.lock().await.iter().filter(|v| v["scope"] == scope.as_str()).cloned().collect();
    let mut kinds: Vec<(String, Option<i64>)> =
        mine.iter().map(|v| (v["type"].as_str().unwrap_or_default().to_owned(), v["threshold_pct"].as_i64())).collect();
    kinds.sort();
    ensure!(
        kinds
            == vec![
                ("budget_exceeded".to_owned(), Some(100)),
                ("budget_threshold_crossed".to_owned(), Some(50)),
                ("budget_threshold_crossed".to_owned(), Some(90)),
            ],
        "alerts: {kinds:?} (first {:?})",
        got.first()
    );
    let (_, ti) = admin.get("/team/info?team_id=team-db").await?;
    ensure!(ti["team_info"]["spend_nano_usd"] == 116 * 3_450, "team spend: {ti}");

    gateway.stop().await?;
    consumer.stop().await?;
    drop(mock);
    Ok(())
}
