//! `gateway.admin.listen`: the admin API, the spend API and the console move to a listener of
//! their own, served by a worker at a lower priority, and the data-plane listener no longer
//! answers them; keys made there work on the data plane, and its spend shows there.

use anyhow::{ensure, Context, Result};
use serde_json::json;
use tollgate_tests::*;

/// The name and niceness (field 19 of its `stat`) of each thread of process `pid`.
fn threads(pid: u32) -> Result<Vec<(String, i64)>> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("stat"))?;
        let (open, close) = (stat.find('(').context("stat")?, stat.rfind(')').context("stat")?);
        let name = stat.get(open + 1..close).context("stat")?.to_owned();
        let after_name = stat.get(close + 2..).context("stat")?;
        threads.push((name, after_name.split(' ').nth(16).context("no niceness")?.parse()?));
    }
    Ok(threads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_side_is_served_apart_by_a_lower_priority_worker() -> Result<()> {
    let dir = scratch_dir("admin-listener")?;
    let mock = start_mock(&dir, &[]).await?;
    let port = free_port()?;
    let config = GatewayConfig::embedded(
        "gw-admin-listener",
        &[model_entry("gpt-4o-mini", &format!("{}/v1", mock.url()?))],
        &dir.join("data").join("tollgate.db"),
    )
    .with_yaml(&format!("gateway:\n  admin:\n    listen: 127.0.0.1:{port}\n    workers: 1\n"))?;
    let gateway = start_gateway(&dir, &config).await?;
    let gw = gateway.url()?.to_owned();
    let admin_url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    // The data-plane listener answers no admin, spend or console route.
    let on_main = AdminApi::new(&gw);
    for path in ["/key/list", "/team/list", "/spend/logs", "/global/spend/report", "/ledger/health"] {
        let (status, body) = on_main.get(path).await?;
        ensure!(status == 404 && body["error"]["code"] == "route_not_found", "main {path}: {status} {body}");
    }
    let (status, _) = on_main.post("/key/generate", json!({})).await?;
    ensure!(status == 404, "key generation on the data-plane listener: {status}");
    let ui = client.get(format!("{gw}/ui")).send().await?.status();
    ensure!(ui == 404, "the console on the data-plane listener: {ui}");

    // The admin listener serves them, and no model route.
    let admin = AdminApi::new(&admin_url);
    let key = admin.ok("/key/generate", json!({"key_alias": "apart", "max_budget": 1})).await?["key"]
        .as_str()
        .context("key")?
        .to_owned();
    let page = client.get(format!("{admin_url}/ui")).send().await?;
    ensure!(page.status() == 200, "the console on the admin listener: {}", page.status());
    let chat = chat_as(&client, &admin_url, &key, "gpt-4o-mini", None).await?.status();
    ensure!(chat == 404, "a model call on the admin listener: {chat}");
    for base in [&gw, &admin_url] {
        let health = client.get(format!("{base}/health")).send().await?.status();
        ensure!(health == 200, "health on {base}: {health}");
    }

    // The key made there works on the data plane, and its spend is read there.
    for _ in 0..3 {
        let resp = chat_as(&client, &gw, &key, "gpt-4o-mini", None).await?;
        ensure!(resp.status() == 200, "chat with the new key: {}", resp.status());
    }
    let logs = format!("/spend/logs?api_key={key}&page_size=10");
    eventually("the key's three requests in the spend logs", std::time::Duration::from_secs(30), || async {
        let (status, v) = admin.get(&logs).await?;
        ensure!(status == 200, "{status} {v}");
        let rows = v["data"].as_array().map(Vec::len).unwrap_or(0);
        Ok((rows == 3).then_some(()))
    })
    .await?;

    // One thread (the admin worker, named tollgate-admin) at nice 10; the data plane's at the
    // process's own.
    let pid = gateway.child.id().context("pid")?;
    let threads = threads(pid)?;
    let nice: Vec<i64> = threads.iter().map(|(_, n)| *n).collect();
    let base = *nice.iter().min().context("no threads")?;
    let named: Vec<i64> = threads.iter().filter(|(name, _)| name == "tollgate-admin").map(|(_, n)| *n).collect();
    ensure!(named.len() == 1, "threads named tollgate-admin: {} of {threads:?}", named.len());
    if base <= 10 {
        let lowered = nice.iter().filter(|&&n| n == 10 && n != base).count();
        ensure!(lowered == 1, "threads at nice 10: {lowered} of {nice:?}");
        ensure!(named == [10], "the admin worker's niceness: {named:?}");
    }

    let log = gateway.log();
    gateway.stop().await?;
    ensure!(!log.contains(&key), "the key is in the log");
    drop(mock);
    Ok(())
}
