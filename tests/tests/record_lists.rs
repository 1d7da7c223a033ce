//! `GET /team/list`, `/user/list`, `/customer/list`, `/organization/list` from the gateways'
//! directory (docs/design.md §6, "The directory"): paging by page number and by cursor walks
//! every record once; search and the team, user and organization filters pick exactly what they
//! name; a call without paging parameters gets LiteLLM's answer, bounded; sizes beyond the bound
//! and hostile values are refused naming the parameter; a team admin lists only its teams, an
//! internal user only itself, and neither customers nor organizations; a change made on one
//! gateway (a new team, a member removed) reaches another's listings. On Cassandra with two
//! gateways, and on one embedded gateway.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use tollgate_tests::*;

/// `GET path` with `key`: status, headers and body.
async fn call(gw: &str, key: &str, path: &str) -> Result<(u16, reqwest::header::HeaderMap, Value)> {
    let resp = reqwest::Client::new().get(format!("{gw}{path}")).bearer_auth(key).send().await?;
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    Ok((status, headers, resp.json().await.unwrap_or(Value::Null)))
}

/// The ids of a listed page (`field` of each record).
fn ids(records: &Value, field: &str) -> Vec<String> {
    records.as_array().into_iter().flatten().filter_map(|r| r[field].as_str().map(str::to_owned)).collect()
}

/// Every record of `/<kind>/list?{query}`, following `next_cursor` (`size` a page): the ids in
/// the order listed, and the `total_count` each page reported.
async fn walk(gw: &str, key: &str, kind: &str, query: &str) -> Result<(Vec<String>, BTreeSet<u64>)> {
    let (plural, field) = match kind {
        "team" => ("teams", "team_id"),
        "user" => ("users", "user_id"),
        "customer" => ("customers", "user_id"),
        _ => ("organizations", "organization_id"),
    };
    let (mut seen, mut totals, mut after) = (Vec::new(), BTreeSet::new(), String::new());
    for _ in 0..100 {
        let (status, _, page) = call(gw, key, &format!("/{kind}/list?{query}{after}")).await?;
        ensure!(status == 200, "/{kind}/list?{query}{after}: {status} {page}");
        seen.extend(ids(&page[plural], field));
        totals.insert(page["total_count"].as_u64().context("total_count")?);
        match page["next_cursor"].as_str() {
            Some(c) => after = format!("&after={}", urlencoding(c)),
            None => return Ok((seen, totals)),
        }
    }
    anyhow::bail!("paging did not end")
}

fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_lists_page_filter_bound_and_keep_to_each_role() -> Result<()> {
    let dir = scratch_dir("record-lists")?;
    let topics = Topics::create("lists", 1).await?;
    let ks = unique("tg_lists_").replace('-', "_");
    let mock = start_mock(&dir, &[]).await?;
    let one = start_gateway(&dir, &GatewayConfig::tenancy("gw-lists-1", mock.url()?, &topics, &ks)).await?;
    let two = start_gateway(&dir, &GatewayConfig::tenancy("gw-lists-2", mock.url()?, &topics, &ks)).await?;
    exercise(one.url()?, Some(two.url()?)).await?;
    one.stop().await?;
    two.stop().await?;
    drop(mock);
    Ok(())
}

/// The same on one embedded gateway (its SQLite store): the listings do not depend on Cassandra.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_lists_page_filter_bound_and_keep_to_each_role_embedded() -> Result<()> {
    let dir = scratch_dir("record-lists-embedded")?;
    let mock = start_mock(&dir, &[]).await?;
    let models = [model_entry("gpt-4o-mini", &format!("{}/v1", mock.url()?))];
    let gateway =
        start_gateway(&dir, &GatewayConfig::embedded("gw-lists-embedded", &models, &dir.join("t.db"))).await?;
    exercise(gateway.url()?, None).await?;
    gateway.stop().await?;
    drop(mock);
    Ok(())
}

/// Every check, on gateway `gw` (and `gw2`, another gateway of the same store, when there is one).
async fn exercise(gw: &str, gw2: Option<&str>) -> Result<()> {
    let gw = gw.to_owned();
    let admin = AdminApi::new(&gw);
    let id = unique("");

    // Users: ann (admin of teams 0 to 2, member of 3), bob (member of 0), and ten more.
    let ann = format!("ann-{id}");
    let bob = format!("bob-{id}");
    let ann_key = admin.ok("/user/new", json!({"user_id": ann, "user_alias": "Ann Lee"})).await?["key"]
        .as_str()
        .context("ann's key")?
        .to_owned();
    let bob_key =
        admin.ok("/user/new", json!({"user_id": bob})).await?["key"].as_str().context("bob's key")?.to_owned();
    let mut users = vec![ann.clone(), bob.clone()];
    for i in 0..10 {
        let u = format!("usr-{id}-{i:02}");
        admin
            .ok("/user/new", json!({"user_id": u, "user_email": format!("U{i}@Example.com"), "auto_create_key": false}))
            .await?;
        users.push(u);
    }
    users.sort();
    // 23 teams, made out of order; five organizations; seven customers, three of team 0.
    let org = format!("org-{id}-0");
    let mut orgs = Vec::new();
    for i in 0..5 {
        let o = format!("org-{id}-{i}");
        admin.ok("/organization/new", json!({"organization_id": o, "organization_alias": format!("Org {i}")})).await?;
        orgs.push(o);
    }
    let mut teams = Vec::new();
    for i in (0..23).rev() {
        let t = format!("team-{id}-{i:02}");
        let mut members = Vec::new();
        if i < 3 {
            members.push(json!({"user_id": ann, "role": "admin"}));
        }
        if i == 3 {
            members.push(json!({"user_id": ann, "role": "user"}));
        }
        if i == 0 {
            members.push(json!({"user_id": bob, "role": "user"}));
        }
        let mut body = json!({"team_id": t, "team_alias": format!("Squad {i}"), "members_with_roles": members});
        if i % 5 == 0 {
            body["organization_id"] = json!(org);
        }
        admin.ok("/team/new", body).await?;
        teams.push(t);
    }
    teams.sort();
    let mut customers = Vec::new();
    for i in 0..7 {
        let c = format!("cust-{id}-{i}");
        let mut body = json!({"user_id": c, "alias": format!("Client {i}")});
        if i < 3 {
            body["team_id"] = json!(teams[0]);
        }
        admin.ok("/customer/new", body).await?;
        customers.push(c);
    }

    // Paging by cursor walks every record once, in id order, whatever the page size.
    let master = MASTER_KEY;
    for size in [1, 4, 23, 1000] {
        let (seen, totals) = walk(&gw, master, "team", &format!("search=team-{id}&size={size}")).await?;
        ensure!(seen == teams && totals == BTreeSet::from([23]), "teams by {size}: {seen:?} {totals:?}");
    }
    let (seen, _) = walk(&gw, master, "user", &format!("search=usr-{id}&page_size=3")).await?;
    ensure!(seen == users.iter().filter(|u| u.starts_with("usr-")).cloned().collect::<Vec<_>>(), "{seen:?}");
    let (seen, _) = walk(&gw, master, "customer", &format!("search=cust-{id}&size=2")).await?;
    ensure!(seen == customers, "{seen:?}");
    let (seen, _) = walk(&gw, master, "organization", &format!("search=org-{id}&size=2")).await?;
    ensure!(seen == orgs, "{seen:?}");
    // And by page number: pages 1 to 5 of 5, then an empty one.
    let mut by_page = Vec::new();
    for page in 1..=6 {
        let (status, _, v) = call(&gw, master, &format!("/team/list?search=team-{id}&size=5&page={page}")).await?;
        ensure!(status == 200 && v["total_pages"] == 5 && v["current_page"] == page && v["page_size"] == 5, "{v}");
        by_page.extend(ids(&v["teams"], "team_id"));
    }
    ensure!(by_page == teams, "by page: {by_page:?}");

    // Search: the start of an id, alias or email, any case; the filters.
    let (_, _, v) = call(&gw, master, "/team/list?search=squad%2012&size=10").await?;
    ensure!(ids(&v["teams"], "team_id") == [format!("team-{id}-12")], "by alias: {v}");
    let (_, _, v) = call(&gw, master, "/user/list?search=u7%40example").await?;
    ensure!(ids(&v["users"], "user_id") == [format!("usr-{id}-07")], "by email: {v}");
    let (_, _, v) = call(&gw, master, &format!("/team/list?user_id={ann}&size=10")).await?;
    ensure!(ids(&v["teams"], "team_id") == teams[..4], "ann's teams: {v}");
    let (_, _, v) = call(&gw, master, &format!("/team/list?organization_id={org}&size=10")).await?;
    let want: Vec<String> = teams.iter().enumerate().filter(|(i, _)| i % 5 == 0).map(|(_, t)| t.clone()).collect();
    ensure!(ids(&v["teams"], "team_id") == want && v["total_count"] == 5, "the org's teams: {v}");
    let (_, _, v) = call(&gw, master, &format!("/user/list?team_id={}", teams[0])).await?;
    let mut members = vec![ann.clone(), bob.clone()];
    members.sort();
    ensure!(ids(&v["users"], "user_id") == members, "team 0's users: {v}");
    let (_, _, v) = call(&gw, master, &format!("/customer/list?team_id={}&size=10", teams[0])).await?;
    ensure!(ids(&v["customers"], "user_id") == customers[..3], "team 0's customers: {v}");
    // Named ids (the console's Overview reads its top teams' budgets so): in id order, unknown
    // ones left out.
    let named = format!("{},nobody-{id},{}", teams[7], teams[2]);
    let (_, _, v) = call(&gw, master, &format!("/team/list?ids={named}&size=10")).await?;
    ensure!(ids(&v["teams"], "team_id") == [teams[2].clone(), teams[7].clone()] && v["total_count"] == 2, "{v}");

    // Without paging parameters: LiteLLM's answers. A bare array for teams (with the count in a
    // header); /user/list paged as LiteLLM pages it, 25 by default.
    let (status, headers, v) = call(&gw, master, &format!("/team/list?search=team-{id}")).await?;
    ensure!(status == 200 && ids(&v, "team_id") == teams, "{v}");
    ensure!(
        headers.get("x-total-count").is_some_and(|h| h == "23") && headers.get("x-next-cursor").is_none(),
        "{headers:?}"
    );
    let (status, _, v) = call(&gw, master, &format!("/user/list?search=usr-{id}")).await?;
    ensure!(status == 200 && v["page"] == 1 && v["page_size"] == 25 && v["total"] == 10, "{v}");
    ensure!(v["users"].as_array().map(Vec::len) == Some(10), "{v}");

    // Bounds and hostile values: 400 naming the parameter.
    let long = "s".repeat(257);
    for (path, param) in [
        ("/team/list?size=1001".to_owned(), "size"),
        ("/user/list?page_size=1001".to_owned(), "page_size"),
        ("/customer/list?size=0".to_owned(), "size"),
        ("/organization/list?page=0".to_owned(), "page"),
        ("/team/list?page=2&after=x".to_owned(), "after"),
        ("/user/list?size=5&page_size=5".to_owned(), "page_size"),
        (format!("/team/list?search={long}"), "search"),
        ("/user/list?team_id=".to_owned(), "team_id"),
        ("/team/list?user_id=a%0Ab".to_owned(), "user_id"),
        (format!("/team/list?ids={}", (0..101).map(|i| format!("t{i}")).collect::<Vec<_>>().join(",")), "ids"),
        ("/customer/list?ids=,".to_owned(), "ids"),
    ] {
        let (status, _, v) = call(&gw, master, &path).await?;
        ensure!(status == 400 && v["error"]["param"] == param, "{path}: {status} {v}");
    }

    // Roles: ann lists the teams she administers (paged the same way), herself, nothing more.
    let (seen, totals) = walk(&gw, &ann_key, "team", "size=2").await?;
    ensure!(seen == teams[..3] && totals == BTreeSet::from([3]), "ann's teams: {seen:?}");
    let (_, _, v) = call(&gw, &ann_key, &format!("/team/list?user_id={bob}")).await?;
    ensure!(ids(&v, "team_id") == teams[..1], "bob's teams as ann sees them: {v}");
    let (seen, _) = walk(&gw, &ann_key, "user", "size=5").await?;
    ensure!(seen == [ann.clone()], "ann sees herself only: {seen:?}");
    let (_, _, v) = call(&gw, &ann_key, &format!("/user/list?team_id={}", teams[0])).await?;
    ensure!(ids(&v["users"], "user_id") == [ann.clone()], "{v}");
    // `ids` narrows what the role reaches, never widens it.
    let (_, _, v) = call(&gw, &ann_key, &format!("/team/list?ids={},{}", teams[1], teams[9])).await?;
    ensure!(ids(&v, "team_id") == teams[1..2], "ann names a team she does not administer: {v}");
    let (_, _, v) = call(&gw, &bob_key, "/team/list").await?;
    ensure!(v.as_array().is_some_and(Vec::is_empty), "an internal user administers no team: {v}");
    for key in [&ann_key, &bob_key] {
        for path in ["/customer/list", "/organization/list?size=5"] {
            let (status, _, v) = call(&gw, key, path).await?;
            ensure!(status == 403, "{path}: {status} {v}");
        }
    }

    // A removed admin loses the team at once, here and (the user's teams are read afresh from
    // the store) on another gateway; a team made here is listed there.
    admin.ok("/team/member_delete", json!({"team_id": teams[0], "user_id": ann})).await?;
    let (_, _, v) = call(&gw, &ann_key, "/team/list").await?;
    ensure!(ids(&v, "team_id") == teams[1..3], "ann removed from team 0, here: {v}");
    let Some(gw2) = gw2 else { return Ok(()) };
    let (_, _, v) = call(gw2, &ann_key, "/team/list").await?;
    ensure!(ids(&v, "team_id") == teams[1..3], "ann removed from team 0, there at once: {v}");
    let late = format!("team-{id}-99");
    admin.ok("/team/new", json!({"team_id": late})).await?;
    eventually("the other gateway to list the new team", Duration::from_secs(20), || async {
        let (_, _, v) = call(gw2, master, &format!("/team/list?search={late}")).await?;
        Ok((ids(&v, "team_id") == [late.clone()]).then_some(()))
    })
    .await?;
    Ok(())
}
