//! `GET /key/list` from the gateways' key index (docs/design.md §6, "The key index"): paging by
//! cursor while keys are added misses none and repeats none; the team, user, alias, metadata
//! and search filters pick exactly the keys they name; hostile values are refused naming the
//! parameter; a key made on one gateway is listed by another (the index follows the change
//! log and the control topic); listing by spend is refused beyond its bound.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeSet;
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
