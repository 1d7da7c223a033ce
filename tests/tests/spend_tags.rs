//! Spend by tag on real Kafka and Cassandra: a request's tags come from its key, its team, its
//! body (`metadata.tags`) and the `x-litellm-tags` header; the ledger's `tag/<tag>` totals,
//! `/spend/daily?group_by=tag`, `/spend/tags` and `/global/spend/report?group_by=tag` all equal
//! what was charged per tag, to the nano-dollar; hostile tags are refused naming the field; with
//! `reject_clientside_metadata_tags` a request may not tag itself; `/spend/logs?tag=` pages
//! exactly the requests of a tag.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tollgate_tests::*;

/// One chat completion with `key`, `tags` in its body's metadata and `header` as
/// `x-litellm-tags`; returns the status, the charge (`x-tollgate-cost-nano-usd`) and the body.
async fn tagged(
    client: &reqwest::Client,
    gw: &str,
    key: &str,
    tags: Option<Value>,
    header: Option<&str>,
) -> Result<(u16, i64, Value)> {
    let mut body =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello tags"}], "max_tokens": 5});
    if let Some(tags) = tags {
        body["metadata"] = json!({"tags": tags, "other": "kept"});
    }
    let mut req = client.post(format!("{gw}/v1/chat/completions")).bearer_auth(key).json(&body);
    if let Some(h) = header {
        req = req.header("x-litellm-tags", h);
    }
    let resp = req.send().await?;
    let (status, cost) = (resp.status().as_u16(), charged(&resp));
    Ok((status, cost, resp.json().await.unwrap_or(Value::Null)))
}

/// Every entry of `/spend/logs?{query}`, page after page through `next_cursor`.
async fn tagged_logs(admin: &AdminApi, query: &str) -> Result<Vec<Value>> {
    let (mut entries, mut after) = (Vec::new(), String::new());
    for _ in 0..200 {
        let (status, page) = admin.get(&format!("/spend/logs?{query}{after}")).await?;
        ensure!(status == 200, "{query}: {status} {page}");
        entries.extend(page["data"].as_array().context("data")?.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => after = format!("&after={cursor}"),
            None => return Ok(entries),
        }
    }
    anyhow::bail!("{query}: paging did not end")
}

/// A request: its key, body tags, `x-litellm-tags`, and the tags its event must carry.
type Tagged<'a> = (&'a str, Option<Value>, Option<&'a str>, &'a [&'a str]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_by_tag_equals_what_was_charged_per_tag() -> Result<()> {
    let fx = Fixture::start("tags", 3).await?;
    let config = fx.gateway("gw-tags")?;
    let gateway = start_gateway(&fx.dir, &config).await?;
    let consumer = start_consumer(&fx.dir, &fx.consumer(500)).await?;
    let ks = &fx.keyspace;
    let gw = gateway.url()?.to_owned();
    let admin = AdminApi::new(&gw);
    let client = reqwest::Client::new();
    let session = cql().await?;

    // A team with a tag and a key of it with its own (and one the team has too); a solo key.
    admin.ok("/team/new", json!({"team_id": "tagged-team", "tags": ["team-tag", "shared"]})).await?;
    let in_team =
        admin.new_key(json!({"team_id": "tagged-team", "tags": ["key-tag", "shared", "not a scope"]})).await?;
    let solo = admin.new_key(json!({})).await?;

    // Each request, and the tags its event must carry.
    let requests: Vec<Tagged> = vec![
        (&in_team, None, None, &["key-tag", "shared", "team-tag"]),
        (&in_team, Some(json!(["body-a", "shared"])), None, &["key-tag", "shared", "team-tag", "body-a"]),
        (&in_team, None, Some("hdr-a, body-a"), &["key-tag", "shared", "team-tag", "hdr-a", "body-a"]),
        (&solo, Some(json!(["shared"])), Some("hdr-b"), &["shared", "hdr-b"]),
        (&solo, None, None, &[]),
        (&solo, Some(Value::Null), Some(""), &[]),
    ];
    let mut charged: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut total = 0i64;
    for (key, body, header, tags) in &requests {
        let (status, cost, v) = tagged(&client, &gw, key, body.clone(), *header).await?;
        ensure!(status == 200 && cost > 0, "{tags:?}: {status} {cost} {v}");
        total += cost;
        for t in *tags {
            let e = charged.entry((*t).to_owned()).or_default();
            e.0 += cost;
            e.1 += 1;
        }
    }

    // Hostile tags: 400 naming the field, nothing charged.
    let long = "t".repeat(129);
    let many: Vec<String> = (0..9).map(|i| format!("t{i}")).collect();
    for (body, header, param) in [
        (Some(json!(["ok", "a/model/x"])), None, "metadata.tags[1]"),
        (Some(json!([long])), None, "metadata.tags[0]"),
        (Some(json!(["two words"])), None, "metadata.tags[0]"),
        (Some(json!(["bell\u{7}"])), None, "metadata.tags[0]"),
        (Some(json!([""])), None, "metadata.tags[0]"),
        (Some(json!([7])), None, "metadata.tags[0]"),
        (Some(json!("prod")), None, "metadata.tags"),
        (Some(json!(many)), None, "metadata.tags"),
        // The key's and team's three tags leave room for five of the request's.
        (Some(json!(["r1", "r2", "r3", "r4", "r5", "r6"])), None, "metadata.tags"),
        (None, Some("a/b"), "x-litellm-tags"),
        (None, Some(many.join(",").as_str()), "x-litellm-tags"),
    ] {
        let (status, _, v) = tagged(&client, &gw, &in_team, body.clone(), header).await?;
        ensure!(status == 400 && v["error"]["param"] == param, "{body:?} {header:?}: {status} {v}");
    }

    // A gateway that refuses client-side tags (LiteLLM's `reject_clientside_metadata_tags`): a
    // request that tags itself is refused, naming the field; the key's and team's tags still apply.
    let mut strict_config = config.clone();
    if let Some(g) = &mut strict_config.general_settings {
        g.reject_clientside_metadata_tags = Some(true);
    }
    strict_config.gateway.id = Some("gw-tags-strict".into());
    let strict = start_gateway(&fx.dir, &strict_config).await?;
    let sgw = strict.url()?.to_owned();
    let (status, _, v) = tagged(&client, &sgw, &in_team, Some(json!(["mine"])), None).await?;
    ensure!(status == 400 && v["error"]["param"] == "metadata.tags", "{status} {v}");
    let (status, _, v) = tagged(&client, &sgw, &in_team, None, Some("mine")).await?;
    ensure!(status == 400 && v["error"]["param"] == "x-litellm-tags", "{status} {v}");
    let (status, cost, v) = tagged(&client, &sgw, &in_team, None, None).await?;
    ensure!(status == 200 && cost > 0, "{status} {v}");
    total += cost;
    for t in ["key-tag", "shared", "team-tag"] {
        let e = charged.entry(t.to_owned()).or_default();
        e.0 += cost;
        e.1 += 1;
    }

    // The ledger: each tag's scope totals what was charged with that tag, and nothing else.
    eventually("the ledger's tag scopes to hold every tagged request", Duration::from_secs(60), || async {
        for (tag, want) in &charged {
            if scope_total(&session, ks, &format!("tag/{tag}")).await? != *want {
                return Ok(None);
            }
        }
        Ok((scope_total(&session, ks, "global/all").await?.0 == total).then_some(()))
    })
    .await?;
    for (tag, want) in &charged {
        let per_model = scope_total(&session, ks, &format!("tag/{tag}/model/gpt-4o-mini")).await?;
        ensure!(per_model == *want, "tag/{tag}/model/gpt-4o-mini: {per_model:?} != {want:?}");
    }
    ensure!(scope_total(&session, ks, "tag/not a scope").await? == (0, 0), "a key tag that is no scope part");

    // /spend/daily by tag: one row per day, tag and model, the tag's charge.
    let (status, daily) = admin.get("/spend/daily?group_by=tag").await?;
    ensure!(status == 200, "{status} {daily}");
    let mut by_tag: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in daily["results"].as_array().context("results")? {
        let e = by_tag.entry(r["tag"].as_str().context("tag")?.to_owned()).or_default();
        e.0 += r["spend_nano_usd"].as_i64().context("spend")?;
        e.1 += r["requests"].as_i64().context("requests")?;
    }
    ensure!(by_tag == charged, "daily by tag {by_tag:?} != charged {charged:?}");
    let (status, one) = admin.get("/spend/daily?group_by=tag&tag=shared").await?;
    let rows = one["results"].as_array().context("results")?;
    ensure!(status == 200 && !rows.is_empty() && rows.iter().all(|r| r["tag"] == "shared"), "{one}");
    ensure!(one["totals"]["spend_nano_usd"] == charged["shared"].0, "{one}");
    let (status, v) = admin.get("/spend/daily?group_by=tag&tag=a%2Fb").await?;
    ensure!(status == 400 && v["error"]["param"] == "tag", "{status} {v}");

    // /spend/tags (LiteLLM's): spend per tag, largest first.
    let (status, tags) = admin.get("/spend/tags").await?;
    ensure!(status == 200, "{status} {tags}");
    let rows = tags.as_array().context("spend per tag")?;
    let got: BTreeMap<String, (i64, i64)> = rows
        .iter()
        .map(|r| {
            let tag = r["individual_request_tag"].as_str().unwrap_or_default().to_owned();
            (tag, (r["spend_nano_usd"].as_i64().unwrap_or(-1), r["log_count"].as_i64().unwrap_or(-1)))
        })
        .collect();
    ensure!(got == charged, "/spend/tags {got:?} != charged {charged:?}");
    let spends: Vec<i64> = rows.iter().map(|r| r["spend_nano_usd"].as_i64().unwrap_or(0)).collect();
    ensure!(spends.windows(2).all(|w| w[0] >= w[1]), "largest first: {spends:?}");
    let (status, v) = admin.get("/spend/tags?start_date=2026-01-01&end_date=2026-12-31").await?;
    ensure!(status == 400 && v["error"]["param"] == "end_date", "{status} {v}");
    // A key that is no admin reads no tag spend (it spans tenants).
    let resp = client.get(format!("{gw}/spend/tags")).bearer_auth(&solo).send().await?;
    ensure!(resp.status() == 403, "a plain key: {}", resp.status());

    // The global report by tag.
    let (status, report) = admin.get("/global/spend/report?group_by=tag").await?;
    ensure!(status == 200, "{status} {report}");
    for (tag, (spent, _)) in &charged {
        let row = report.as_array().context("report")?.iter().find(|r| r["tag"] == tag.as_str()).context("tag row")?;
        ensure!(row["spend_nano_usd"] == *spent, "{tag}: {row}");
    }

    // Request logs show each entry's tags.
    let (status, logs) = admin.get(&format!("/spend/logs?api_key={solo}&page_size=100")).await?;
    ensure!(status == 200, "{status} {logs}");
    let mut seen: Vec<Vec<String>> = logs["data"]
        .as_array()
        .context("data")?
        .iter()
        .map(|e| e["request_tags"].as_array().map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect()))
        .collect::<Option<_>>()
        .context("request_tags")?;
    seen.sort();
    ensure!(seen == [vec![], vec![], vec!["shared".to_owned(), "hdr-b".to_owned()]], "{seen:?}");

    // `/spend/logs?tag=`: following the cursor two entries a page yields each request of the
    // tag once, and only those; with a key named, that key's tagged requests only.
    for (tag, (_, requests)) in &charged {
        let entries = eventually("the tagged logs", Duration::from_secs(30), || async {
            let found = tagged_logs(&admin, &format!("tag={tag}&page_size=2")).await?;
            Ok((found.len() as i64 == *requests).then_some(found))
        })
        .await?;
        let ids: std::collections::BTreeSet<&str> = entries.iter().filter_map(|e| e["request_id"].as_str()).collect();
        ensure!(ids.len() == entries.len(), "{tag}: an entry twice: {entries:?}");
        for e in &entries {
            let tags = e["request_tags"].as_array().context("request_tags")?;
            ensure!(tags.iter().any(|t| t == tag.as_str()), "{tag}: an untagged entry {e}");
        }
    }
    let solo_shared = tagged_logs(&admin, &format!("tag=shared&api_key={solo}&page_size=1")).await?;
    ensure!(solo_shared.len() == 1 && solo_shared[0]["request_tags"] == json!(["shared", "hdr-b"]), "{solo_shared:?}");
    ensure!(tagged_logs(&admin, "tag=nobody-has-it").await?.is_empty(), "an absent tag");
    let long = format!("tag={}", "t".repeat(129));
    for (query, param) in [
        ("tag=a%2Fb", "tag"),
        ("tag=", "tag"),
        ("tag=two%20words", "tag"),
        (long.as_str(), "tag"),
        ("tag=shared&page=2", "page"),
    ] {
        let (status, v) = admin.get(&format!("/spend/logs?{query}")).await?;
        ensure!(status == 400 && v["error"]["param"] == param, "{query}: {status} {v}");
    }

    strict.stop().await?;
    gateway.stop().await?;
    consumer.stop().await?;
    fx.mock.stop().await?;
    Ok(())
}

/// `/spend/logs?tag=` on one embedded gateway (its own ledger, no Cassandra): paging two entries
/// a page through `next_cursor` yields exactly the requests of each tag, each once; bad values
/// are refused naming the parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_logs_filter_by_tag_embedded() -> Result<()> {
    let dir = scratch_dir("tags-embedded")?;
    let mock = start_mock(&dir, &[]).await?;
    let models = [model_entry("gpt-4o-mini", &format!("{}/v1", mock.url()?))];
    let gateway = start_gateway(&dir, &GatewayConfig::embedded("gw-tags-embedded", &models, &dir.join("t.db"))).await?;
    let gw = gateway.url()?.to_owned();
    let admin = AdminApi::new(&gw);
    let client = reqwest::Client::new();
    let key = admin.new_key(json!({"tags": ["every"]})).await?;
    // Eleven requests: every third tagged `third`, every fourth `fourth`, all `every`.
    let mut want: BTreeMap<&str, usize> = BTreeMap::from([("every", 11), ("third", 0), ("fourth", 0)]);
    for i in 0..11 {
        let mut tags = Vec::new();
        for (tag, n) in [("third", 3), ("fourth", 4)] {
            if i % n == 0 {
                tags.push(tag);
                *want.entry(tag).or_default() += 1;
            }
        }
        let (status, cost, v) = tagged(&client, &gw, &key, Some(json!(tags)), None).await?;
        ensure!(status == 200 && cost > 0, "{status} {v}");
    }
    for (tag, n) in &want {
        let entries = eventually("the tagged logs", Duration::from_secs(30), || async {
            let found = tagged_logs(&admin, &format!("tag={tag}&page_size=2")).await?;
            Ok((found.len() == *n).then_some(found))
        })
        .await?;
        let ids: std::collections::BTreeSet<&str> = entries.iter().filter_map(|e| e["request_id"].as_str()).collect();
        ensure!(ids.len() == *n, "{tag}: an entry twice: {entries:?}");
        ensure!(
            entries.iter().all(|e| e["request_tags"].as_array().is_some_and(|t| t.iter().any(|t| t == tag))),
            "{tag}: an untagged entry {entries:?}"
        );
    }
    ensure!(tagged_logs(&admin, "tag=nobody-has-it").await?.is_empty(), "an absent tag");
    for (query, param) in [("tag=a%2Fb", "tag"), ("tag=", "tag"), ("tag=shared&page=2", "page")] {
        let (status, v) = admin.get(&format!("/spend/logs?{query}")).await?;
        ensure!(status == 400 && v["error"]["param"] == param, "{query}: {status} {v}");
    }
    gateway.stop().await?;
    drop(mock);
    Ok(())
}
