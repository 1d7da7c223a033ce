//! `GET /key/list` from the gateways' key index (docs/design.md §6, "The key index"): paging by
//! cursor while keys are added misses none and repeats none; the team, user, alias, metadata
//! and search filters pick exactly the keys they name; hostile values are refused naming the
//! parameter; a key made on one gateway is listed by another (the index follows the change
//! log and the control topic); listing by spend is refused beyond its bound; listing by spend
//! sorts and filters by the spend the ledger holds (rows of `spend_aggregates` in several
//! partitions and budget windows), exactly, and shows the same figures.

use anyhow::{ensure, Context, Result};
use chrono::Utc;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tollgate_tests::*;

/// Makes a key with `body`; its token.
async fn generate(admin: &AdminApi, body: Value) -> Result<String> {
    let k = admin.ok("/key/generate", body).await?;
    k["token"].as_str().map(str::to_owned).with_context(|| format!("no token in {k}"))
}

async fn list(admin: &AdminApi, query: &str) -> Result<Value> {
    let (status, v) = admin.get(&format!("/key/list?{query}")).await?;
    ensure!(status == 200, "/key/list?{query}: {status} {v}");
    Ok(v)
}

fn tokens(v: &Value) -> Vec<String> {
    v["keys"].as_array().into_iter().flatten().filter_map(|k| k.as_str().map(str::to_owned)).collect()
}

/// Every key of `team`, page by page through `next_cursor` (3 a page), making a new key of the
/// team after each page: the pages hold each key that existed when paging began exactly once.
async fn page_while_adding(admin: &AdminApi, team: &str, order: &str) -> Result<(Vec<String>, Vec<String>)> {
    let (mut seen, mut added) = (Vec::new(), Vec::new());
    let mut query = format!("team_id={team}&size=3&order={order}");
    for _ in 0..20 {
        let page = list(admin, &query).await?;
        seen.extend(tokens(&page));
        added.push(generate(admin, json!({"team_id": team, "metadata": {"batch": "late"}})).await?);
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("team_id={team}&size=3&order={order}&after={cursor}"),
            None => return Ok((seen, added)),
        }
    }
    anyhow::bail!("paging did not end")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_list_pages_by_cursor_filters_and_refuses_hostile_values() -> Result<()> {
    let Fixture { dir, topics, keyspace: ks, mock, .. } = Fixture::start("key-list", 1).await?;
    let one = start_gateway(&dir, &GatewayConfig::tenancy("gw-keylist-1", mock.url()?, &topics, &ks)).await?;
    let two = start_gateway(&dir, &GatewayConfig::tenancy("gw-keylist-2", mock.url()?, &topics, &ks)).await?;
    let admin = AdminApi::new(one.url()?);
    let other = AdminApi::new(two.url()?);
    let id = unique("");
    let (team, other_team, user) = (format!("team-{id}"), format!("other-{id}"), format!("user-{id}"));
    for t in [&team, &other_team] {
        admin.ok("/team/new", json!({"team_id": t})).await?;
    }
    admin.ok("/user/new", json!({"user_id": user, "auto_create_key": false})).await?;

    // Ten keys of the team, alternately of the user and prod; two of the other team.
    let mut made = Vec::new();
    for i in 0..10 {
        let mut body = json!({"team_id": team, "key_alias": format!("svc-{id}-{i}"),
                              "metadata": {"env": if i % 2 == 0 { "prod" } else { "dev" }, "shard": i}});
        if i % 2 == 0 {
            body["user_id"] = json!(user);
        }
        made.push(generate(&admin, body).await?);
    }
    for _ in 0..2 {
        generate(&admin, json!({"team_id": other_team, "metadata": {"env": "prod"}})).await?;
    }

    // This gateway lists its own keys at once, oldest first.
    let all = list(&admin, &format!("team_id={team}&size=100")).await?;
    ensure!(tokens(&all) == made && all["total_count"] == 10 && all["next_cursor"].is_null(), "{all}");

    // The filters pick exactly what they name, alone and combined.
    let evens: Vec<String> = made.iter().step_by(2).cloned().collect();
    ensure!(tokens(&list(&admin, &format!("user_id={user}&size=100")).await?) == evens, "by user");
    let prod = list(&admin, &format!("team_id={team}&metadata=env%3Dprod&size=100")).await?;
    ensure!(tokens(&prod) == evens && prod["total_count"] == 5, "by metadata: {prod}");
    let shard = list(&admin, &format!("team_id={team}&metadata=shard%3D7")).await?;
    ensure!(tokens(&shard) == [made[7].clone()], "a number in metadata: {shard}");
    let alias = list(&admin, &format!("key_alias=svc-{id}-3")).await?;
    ensure!(tokens(&alias) == [made[3].clone()], "by alias: {alias}");
    let search = list(&admin, &format!("search=SVC-{id}-1&size=100")).await?;
    ensure!(tokens(&search) == [made[1].clone()], "search, any case: {search}");
    let prefix = list(&admin, &format!("search={}", &made[4][..16])).await?;
    ensure!(tokens(&prefix) == [made[4].clone()], "search by token prefix: {prefix}");
    let everyone_prod = list(&admin, "metadata=env%3Dprod&size=100").await?;
    ensure!(everyone_prod["total_count"] == 7, "prod keys of both teams: {everyone_prod}");

    // Paging by cursor while keys are added: the first ten, each once, in order, both ways.
    let (seen, added) = page_while_adding(&admin, &team, "asc").await?;
    let distinct: BTreeSet<&String> = seen.iter().collect();
    ensure!(distinct.len() == seen.len(), "a key twice across pages: {seen:?}");
    ensure!(seen[..10] == made[..], "the keys from before, in creation order: {seen:?}");
    ensure!(seen[10..].iter().all(|k| added.contains(k)), "only keys added meanwhile beyond them: {seen:?}");
    let (seen, _) = page_while_adding(&admin, &team, "desc").await?;
    let distinct: BTreeSet<&String> = seen.iter().collect();
    ensure!(distinct.len() == seen.len(), "a key twice across pages, newest first: {seen:?}");
    ensure!(made.iter().all(|k| seen.contains(k)), "a key missing, newest first: {seen:?}");

    // The other gateway learns of keys made here (change log, control topic) and of deletions.
    let late = generate(&admin, json!({"team_id": other_team, "key_alias": format!("late-{id}")})).await?;
    let query = format!("key_alias=late-{id}");
    eventually("the other gateway lists the new key", Duration::from_secs(10), || async {
        let (status, v) = other.get(&format!("/key/list?{query}")).await?;
        Ok((status == 200 && tokens(&v) == [late.clone()]).then_some(()))
    })
    .await?;
    admin.ok("/key/delete", json!({"keys": [late]})).await?;
    eventually("the other gateway drops the deleted key", Duration::from_secs(10), || async {
        let (status, v) = other.get(&format!("/key/list?{query}")).await?;
        Ok((status == 200 && v["total_count"] == 0).then_some(()))
    })
    .await?;

    // Listing by spend within its bound, and refused beyond it naming the parameter.
    let by_spend = list(&admin, &format!("team_id={team}&sort=spend&order=desc&size=100")).await?;
    ensure!(by_spend["total_count"].as_u64() >= Some(10), "{by_spend}");
    for i in 0..500 {
        generate(&admin, json!({"team_id": other_team, "key_alias": format!("bulk-{id}-{i}")})).await?;
    }
    for (query, param) in [("sort=spend", "sort"), ("min_budget_percent=10", "min_budget_percent")] {
        let (status, v) = admin.get(&format!("/key/list?{query}")).await?;
        ensure!(status == 400 && v["error"]["param"] == param, "{query}: {status} {v}");
    }

    // Hostile values: refused with 400 naming the parameter.
    let long = "x".repeat(257);
    for (query, param) in [
        (format!("user_id={long}"), "user_id"),
        ("user_id=".to_owned(), "user_id"),
        ("team_id=a%00b".to_owned(), "team_id"),
        ("metadata=env".to_owned(), "metadata"),
        ("metadata=%3Dprod".to_owned(), "metadata"),
        (format!("metadata=a%3D{}", "v".repeat(600)), "metadata"),
        ("after=abc".to_owned(), "after"),
        ("after=1.abc%2F..%2Fx".to_owned(), "after"),
        (format!("after=1.{}", "a".repeat(300)), "after"),
        ("after=1.abc&page=2".to_owned(), "after"),
        ("after=1.abc&sort=spend".to_owned(), "after"),
        ("size=1001".to_owned(), "size"),
        ("page=0".to_owned(), "page"),
    ] {
        let (status, v) = admin.get(&format!("/key/list?{query}")).await?;
        ensure!(status == 400 && v["error"]["param"] == param, "{query}: {status} {v}");
    }
    one.stop().await?;
    two.stop().await?;
    drop(mock);
    Ok(())
}

/// The tokens of a listing of whole objects, and each one's `spend_nano_usd`.
fn spends(v: &Value) -> Vec<(String, i64)> {
    let keys = v["keys"].as_array().into_iter().flatten();
    keys.map(|k| (k["key_id"].as_str().unwrap_or_default().to_owned(), k["spend_nano_usd"].as_i64().unwrap_or(-1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_list_by_spend_sorts_and_filters_by_the_ledgers_spend_exactly() -> Result<()> {
    let Fixture { dir, topics, keyspace: ks, mock, .. } = Fixture::start("key-spend", 1).await?;
    let gw = start_gateway(&dir, &GatewayConfig::tenancy("gw-keyspend-1", mock.url()?, &topics, &ks)).await?;
    let admin = AdminApi::new(gw.url()?);
    let team = format!("team-{}", unique(""));
    admin.ok("/team/new", json!({"team_id": team})).await?;
    let month = tollgate_schemas::tenancy::budget_window(
        Some(tollgate_schemas::tenancy::BudgetDuration::Months(1)),
        Utc::now(),
    );

    // 24 keys (more than one ledger query's worth). Key i's spend: (all time, this month,
    // budget in nano-USD, monthly budget). Around 80 % of a budget: exactly 80 % (in), one
    // nano-dollar under (out), a monthly key at 95 % of its month but far more all time (in),
    // a key at 100 % (in), a key with no spend rows at all, keys with no budget.
    let special: BTreeMap<usize, (i64, Option<i64>, Option<i64>, bool)> = [
        (0, (800_000_000, None, Some(1_000_000_000), false)),
        (1, (799_999_999, None, Some(1_000_000_000), false)),
        (2, (5_000_000_007, None, None, false)),
        (3, (9_000_000_000, Some(1_900_000_000), Some(2_000_000_000), true)),
        (4, (0, None, Some(1_000_000_000), false)),
        (5, (500_000_000, None, Some(500_000_000), false)),
    ]
    .into_iter()
    .collect();
    let session = cql().await?;
    let insert = session
        .prepare(format!(
            "INSERT INTO {ks}.spend_aggregates (scope_id, window_id, partition, spent_nano_usd, events, \
             prompt_tokens, completion_tokens, applied_offset) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .await?;
    // (token, spend sorted by, spend all time, budget).
    let mut keys: Vec<(String, i64, i64, Option<i64>)> = Vec::new();
    for i in 0..24 {
        let (all, in_month, budget, monthly) =
            special.get(&i).copied().unwrap_or((i as i64 * 10_000_019 + 3, None, None, false));
        let mut body = json!({"team_id": team, "key_alias": format!("spend-{i}")});
        if let Some(b) = budget {
            body["max_budget"] = json!(b as f64 / 1e9);
        }
        if monthly {
            body["budget_duration"] = json!("1mo");
        }
        let token = generate(&admin, body).await?;
        let scope = format!("key/{token}");
        // Each amount split over two ledger partitions (the first and the last of 64), as a key's
        // events may land in several.
        for (window, amount) in [("all".to_owned(), all), (month.clone(), in_month.unwrap_or(0))] {
            if amount == 0 {
                continue;
            }
            let first = amount / 3;
            for (partition, part) in [(0, first), (63, amount - first)] {
                session.execute_unpaged(&insert, (&scope, &window, partition, part, 1i64, 1i64, 1i64, 1i64)).await?;
            }
        }
        keys.push((token, in_month.unwrap_or(all), all, budget));
    }

    // Sorted by spend, both ways: the ledger's figures, ties (none here) by creation.
    let mut by_spend: Vec<(String, i64)> = keys.iter().map(|(t, s, _, _)| (t.clone(), *s)).collect();
    by_spend.sort_by_key(|k| std::cmp::Reverse(k.1));
    let desc = list(&admin, &format!("team_id={team}&sort=spend&order=desc&size=100&return_full_object=true")).await?;
    ensure!(spends(&desc) == by_spend && desc["total_count"] == 24, "by spend, most first: {desc}");
    let asc = list(&admin, &format!("team_id={team}&sort=spend&size=100")).await?;
    let ascending: Vec<String> = by_spend.iter().rev().map(|(t, _)| t.clone()).collect();
    ensure!(tokens(&asc) == ascending, "by spend, least first: {asc}");
    // A page within it: the third and fourth most.
    let page = list(&admin, &format!("team_id={team}&sort=spend&order=desc&size=2&page=2")).await?;
    ensure!(tokens(&page) == [by_spend[2].0.clone(), by_spend[3].0.clone()] && page["total_count"] == 24, "{page}");
    // The monthly key shows its month as `spend` and its all time apart.
    let monthly = desc["keys"].as_array().into_iter().flatten().find(|k| k["key_id"] == keys[3].0.as_str());
    let monthly = monthly.with_context(|| format!("the monthly key is not listed: {desc}"))?;
    ensure!(
        monthly["spend_nano_usd"] == 1_900_000_000_i64
            && monthly["spend_all_time_nano_usd"] == 9_000_000_000_i64
            && monthly["budget_window"] == month.as_str(),
        "the monthly key: {monthly}"
    );

    // At least 80 % of the budget: exactly 80 %, 95 % of the month and 100 %; not one nano-dollar
    // under 80 %, nor the keys without a budget. In creation order, or by spend.
    let over: Vec<String> = [0, 3, 5].iter().map(|i| keys[*i].0.clone()).collect();
    let eighty = list(&admin, &format!("team_id={team}&min_budget_percent=80&size=100")).await?;
    ensure!(tokens(&eighty) == over && eighty["total_count"] == 3, "over 80 %: {eighty}");
    let eighty = list(&admin, &format!("team_id={team}&min_budget_percent=80&sort=spend&order=desc&size=100")).await?;
    ensure!(tokens(&eighty) == [over[1].clone(), over[0].clone(), over[2].clone()], "over 80 %, by spend: {eighty}");
    let all_budgeted = list(&admin, &format!("team_id={team}&min_budget_percent=0&size=100")).await?;
    ensure!(all_budgeted["total_count"] == 5, "every key with a budget, even with no spend: {all_budgeted}");

    // The plain listing of whole keys shows the same figures, read for the page at once.
    let plain = list(&admin, &format!("team_id={team}&size=100&return_full_object=true")).await?;
    let made: Vec<(String, i64)> = keys.iter().map(|(t, s, _, _)| (t.clone(), *s)).collect();
    ensure!(spends(&plain) == made, "the plain listing's spend: {plain}");
    for (k, (_, _, all, _)) in plain["keys"].as_array().into_iter().flatten().zip(&keys) {
        ensure!(k["spend_all_time_nano_usd"] == *all, "all time: {k}");
    }
    gw.stop().await?;
    drop(mock);
    Ok(())
}
