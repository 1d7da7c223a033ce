//! Console roles enforced by the API (docs/console.md, "Roles"), on real Kafka and Cassandra: for
//! each role (proxy_admin, proxy_admin_viewer, a team admin, an internal_user) a matrix of calls
//! that must succeed and calls that must be refused, made twice, with the role's key as a Bearer
//! key and through a console session (cookie and CSRF token): cross-team attempts (team A's admin
//! touching team B's keys, members or spend), another user's keys, routes no such role may use,
//! and listings filtered to what the role reaches. Then, in Debian's headless Chromium
//! (`tests/console/roles_test.py`), a team admin and an internal user signed in to the console:
//! the pages and keys each sees, the buttons on them, and a forbidden change made from the page
//! refused.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use tollgate_tests::*;

/// How a role calls: with its key, or with the console session it signed in to with that key.
#[derive(Clone)]
enum Via {
    Bearer(String),
    Console { cookie: String, csrf: String },
}

struct Role {
    name: &'static str,
    via: Via,
}

impl Role {
    async fn call(&self, gw: &str, method: &str, path: &str, body: &Value) -> Result<(u16, Value)> {
        let http = reqwest::Client::new();
        let mut req = match method {
            "GET" => http.get(format!("{gw}{path}")),
            _ => http.post(format!("{gw}{path}")).json(body),
        };
        req = match &self.via {
            Via::Bearer(key) => req.bearer_auth(key),
            Via::Console { cookie, csrf } => req.header("cookie", cookie).header("x-csrf-token", csrf),
        };
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }
}

/// Signs in to the console with `key`: the session cookie and CSRF token, and the session's
/// answer.
async fn console_session(gw: &str, key: &str) -> Result<(Via, Value)> {
    let resp = reqwest::Client::new().post(format!("{gw}/ui/api/sign-in")).json(&json!({"key": key})).send().await?;
    ensure!(resp.status() == 200, "sign-in: {}", resp.status());
    let set = resp.headers().get("set-cookie").context("set-cookie")?.to_str()?.to_owned();
    let cookie = set.split(';').next().context("cookie")?.trim().to_owned();
    let body: Value = resp.json().await?;
    let csrf = body["csrf_token"].as_str().context("csrf_token")?.to_owned();
    Ok((Via::Console { cookie, csrf }, body))
}

/// One call of a matrix and what must come back: a status and, for a refusal, the error code
/// (and the parameter named, where one is).
struct Case {
    method: &'static str,
    path: String,
    body: Value,
    status: u16,
    param: Option<&'static str>,
}

fn get(path: impl Into<String>, status: u16) -> Case {
    Case { method: "GET", path: path.into(), body: Value::Null, status, param: None }
}

fn post(path: impl Into<String>, body: Value, status: u16) -> Case {
    Case { method: "POST", path: path.into(), body, status, param: None }
}

fn refused_naming(mut case: Case, param: &'static str) -> Case {
    case.param = Some(param);
    case
}

async fn run_matrix(gw: &str, role: &Role, cases: &[Case]) -> Result<usize> {
    for c in cases {
        let (status, v) = role.call(gw, c.method, &c.path, &c.body).await?;
        let what = format!("{} via {}: {} {} {}", role.name, via_name(&role.via), c.method, c.path, c.body);
        ensure!(status == c.status, "{what}: {status}, wanted {}: {v}", c.status);
        if status >= 400 {
            let code = v["error"]["code"].as_str().unwrap_or_default();
            let wanted = match status {
                403 => "forbidden",
                404 => "not_found",
                _ => code,
            };
            ensure!(code == wanted, "{what}: code {code}, wanted {wanted}: {v}");
            if let Some(param) = c.param {
                ensure!(v["error"]["param"] == param, "{what}: param, wanted {param}: {v}");
            }
        }
    }
    Ok(cases.len())
}

fn via_name(via: &Via) -> &'static str {
    match via {
        Via::Bearer(_) => "key",
        Via::Console { .. } => "console",
    }
}

/// The tokens of a `/key/list` answer.
fn tokens(list: &Value) -> BTreeSet<String> {
    list["keys"].as_array().into_iter().flatten().filter_map(|k| k.as_str().map(str::to_owned)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_reaches_only_what_it_may_through_the_api_and_the_console() -> Result<()> {
    let fx = Fixture::start("roles", 1).await?;
    let config = GatewayConfig { budgets: Some(Budgets::fail_open()), ..fx.gateway("gw-roles")? };
    let gateway = start_gateway(&fx.dir, &config).await?;
    let _consumer = start_consumer(&fx.dir, &fx.consumer(200)).await?;
    let gw = gateway.url()?.to_owned();
    let admin = AdminApi::new(&gw);

    // Two teams with an admin each; a plain member of team A; an internal user with a budget of
    // its own; another internal user; a proxy admin user and a viewer.
    for (user, role, budget) in [
        ("alice", "internal_user", None),
        ("bob", "internal_user", None),
        ("carol", "internal_user", None),
        ("ivy", "internal_user", Some(1)),
        ("olga", "internal_user", None),
        ("root", "proxy_admin", None),
        ("vera", "proxy_admin_viewer", None),
    ] {
        let mut body = json!({"user_id": user, "user_role": role, "auto_create_key": false});
        if let Some(b) = budget {
            body["max_budget"] = json!(b);
        }
        admin.ok("/user/new", body).await?;
    }
    admin
        .ok(
            "/team/new",
            json!({"team_id": "team-a", "max_budget": 10,
                   "members_with_roles": [{"user_id": "alice", "role": "admin"}, {"user_id": "carol", "role": "user"}]}),
        )
        .await?;
    admin
        .ok("/team/new", json!({"team_id": "team-b", "members_with_roles": [{"user_id": "bob", "role": "admin"}]}))
        .await?;
    let mut keys = std::collections::BTreeMap::new();
    for (name, body) in [
        ("alice", json!({"user_id": "alice", "key_alias": "alice-own"})),
        ("bob", json!({"user_id": "bob", "key_alias": "bob-own"})),
        ("ivy", json!({"user_id": "ivy", "key_alias": "ivy-own"})),
        ("olga", json!({"user_id": "olga", "key_alias": "olga-own"})),
        ("root", json!({"user_id": "root"})),
        ("vera", json!({"user_id": "vera"})),
        ("a-svc", json!({"team_id": "team-a", "key_alias": "a-svc"})),
        ("a-carol", json!({"team_id": "team-a", "user_id": "carol", "key_alias": "a-carol"})),
        ("b-svc", json!({"team_id": "team-b", "key_alias": "b-svc"})),
    ] {
        let made = admin.ok("/key/generate", body).await?;
        let raw = made["key"].as_str().context("key")?.to_owned();
        let token = made["token"].as_str().context("token")?.to_owned();
        keys.insert(name, (raw, token));
    }
    let raw = |name: &str| keys[name].0.clone();
    let tok = |name: &str| keys[name].1.clone();

    // Spend on four keys, seen in the ledger before the matrices read it.
    let http = reqwest::Client::new();
    for name in ["a-svc", "b-svc", "ivy", "olga"] {
        let answer = chat_as(&http, &gw, &raw(name), "gpt-4o-mini", None).await?;
        ensure!(answer.status() == 200, "{name}'s chat: {}", answer.status());
    }
    eventually("the four requests in the spend logs", Duration::from_secs(60), || async {
        let (status, logs) = admin.get("/spend/logs?page_size=100").await?;
        Ok((status == 200 && logs["data"].as_array().is_some_and(|d| d.len() >= 4)).then_some(()))
    })
    .await?;
    eventually("the key index loaded", Duration::from_secs(60), || async {
        Ok((admin.get("/key/list").await?.0 == 200).then_some(()))
    })
    .await?;

    let period = chrono::Utc::now().format("%Y-%m").to_string();
    // Routes no team admin or internal user may use, whatever they name.
    let never = || {
        vec![
            post("/team/new", json!({"team_id": "team-x"}), 403),
            post("/team/update", json!({"team_id": "team-a", "max_budget": 1000}), 403),
            post("/team/delete", json!({"team_ids": ["team-b"]}), 403),
            post("/team/block", json!({"team_id": "team-a"}), 403),
            post("/user/new", json!({"user_id": "mallory", "user_role": "proxy_admin"}), 403),
            post("/user/update", json!({"user_id": "alice", "user_role": "proxy_admin"}), 403),
            post("/user/delete", json!({"user_ids": ["olga"]}), 403),
            get("/customer/list", 403),
            get("/customer/info?end_user_id=c", 403),
            post("/customer/new", json!({"user_id": "c"}), 403),
            get("/organization/list", 403),
            post("/organization/new", json!({}), 403),
            get("/budget/list", 403),
            post("/budget/new", json!({"budget_id": "big", "max_budget": 1000}), 403),
            get("/global/spend/report", 403),
            get("/ledger/health", 403),
            get("/model/health", 403),
            get(format!("/organization/statement?organization_id=o&period={period}"), 403),
        ]
    };

    // --- A team admin (alice, admin of team A).
    let team_admin_ok = vec![
        get(format!("/key/info?key={}", tok("a-svc")), 200),
        get(format!("/key/info?key={}", tok("a-carol")), 200),
        get("/key/info", 200),
        post("/key/update", json!({"key": tok("a-svc"), "max_budget": 2, "key_alias": "a-svc"}), 200),
        post("/key/block", json!({"key": tok("a-svc")}), 200),
        post("/key/unblock", json!({"key": tok("a-svc")}), 200),
        get("/team/info?team_id=team-a", 200),
        post("/team/member_add", json!({"team_id": "team-a", "member": {"user_id": "dave", "role": "user"}}), 200),
        post("/team/member_delete", json!({"team_id": "team-a", "user_id": "dave"}), 200),
        get("/spend/logs?team_id=team-a", 200),
        get(format!("/spend/logs?api_key={}", tok("a-svc")), 200),
        get("/user/info?user_id=alice", 200),
    ];
    let mut team_admin_refused = vec![
        // Team B's key: not found, whatever is done with it.
        get(format!("/key/info?key={}", tok("b-svc")), 404),
        post("/key/update", json!({"key": tok("b-svc"), "max_budget": 100}), 404),
        post("/key/block", json!({"key": tok("b-svc")}), 404),
        post("/key/delete", json!({"keys": [tok("b-svc")]}), 404),
        post(format!("/key/{}/regenerate", tok("b-svc")), json!({}), 404),
        // Another user's own key, in no team.
        get(format!("/key/info?key={}", tok("ivy")), 404),
        post("/key/delete", json!({"keys": [tok("ivy")]}), 404),
        // Keys put where it may not put them.
        refused_naming(post("/key/generate", json!({"team_id": "team-b"}), 403), "team_id"),
        refused_naming(post("/key/generate", json!({"team_id": "no-such-team"}), 403), "team_id"),
        refused_naming(post("/key/generate", json!({"team_id": "team-a", "user_id": "root"}), 403), "user_id"),
        refused_naming(post("/key/generate", json!({"user_id": "olga"}), 403), "user_id"),
        refused_naming(post("/key/generate", json!({"team_id": "team-a", "max_budget": 11}), 403), "max_budget"),
        refused_naming(post("/key/generate", json!({"team_id": "team-a", "budget_id": "any"}), 403), "budget_id"),
        refused_naming(post("/key/update", json!({"key": tok("a-svc"), "team_id": "team-b"}), 403), "team_id"),
        refused_naming(post("/key/update", json!({"key": tok("a-svc"), "user_id": "root"}), 403), "user_id"),
        // Team B itself, and users beyond itself.
        get("/team/info?team_id=team-b", 404),
        post("/team/member_add", json!({"team_id": "team-b", "member": {"user_id": "alice", "role": "admin"}}), 404),
        post("/team/member_delete", json!({"team_id": "team-b", "user_id": "bob"}), 404),
        get(format!("/team/statement?team_id=team-b&period={period}"), 404),
        get("/user/info?user_id=bob", 404),
        refused_naming(get("/spend/logs?team_id=team-b", 403), "team_id"),
        refused_naming(get(format!("/spend/logs?api_key={}", tok("b-svc")), 403), "api_key"),
        refused_naming(get("/spend/logs?user_id=bob", 403), "user_id"),
    ];
    team_admin_refused.extend(never());

    // --- An internal user (ivy, budget 1 USD, in no team).
    let internal_ok = vec![
        get("/key/info", 200),
        get(format!("/key/info?key={}", tok("ivy")), 200),
        get("/spend/logs", 200),
        get(format!("/spend/logs?api_key={}", tok("ivy")), 200),
        get("/user/info?user_id=ivy", 200),
    ];
    let mut internal_refused = vec![
        get(format!("/key/info?key={}", tok("olga")), 404),
        get(format!("/key/info?key={}", tok("a-svc")), 404),
        post("/key/delete", json!({"keys": [tok("olga")]}), 404),
        post("/key/update", json!({"key": tok("olga"), "max_budget": 100}), 404),
        post("/key/block", json!({"key": tok("olga")}), 404),
        // Its own key: it may delete it, not change it.
        post("/key/update", json!({"key": tok("ivy"), "max_budget": 100}), 403),
        post("/key/block", json!({"key": tok("ivy")}), 403),
        post(format!("/key/{}/regenerate", tok("ivy")), json!({}), 403),
        refused_naming(post("/key/generate", json!({"max_budget": 2}), 403), "max_budget"),
        refused_naming(post("/key/generate", json!({"user_id": "olga"}), 403), "user_id"),
        refused_naming(post("/key/generate", json!({"team_id": "team-a"}), 403), "team_id"),
        refused_naming(post("/key/generate", json!({"organization_id": "org"}), 403), "organization_id"),
        get("/team/info?team_id=team-a", 404),
        post("/team/member_add", json!({"team_id": "team-a", "member": {"user_id": "ivy", "role": "admin"}}), 404),
        get(format!("/team/statement?team_id=team-a&period={period}"), 404),
        get("/user/info?user_id=olga", 404),
        refused_naming(get(format!("/spend/logs?api_key={}", tok("olga")), 403), "api_key"),
        refused_naming(get("/spend/logs?user_id=olga", 403), "user_id"),
        refused_naming(get("/spend/logs?team_id=team-a", 403), "team_id"),
    ];
    internal_refused.extend(never());

    // --- A viewer reads everything and changes nothing; a proxy admin user does anything.
    let viewer_ok = vec![
        get("/key/list", 200),
        get(format!("/key/info?key={}", tok("b-svc")), 200),
        get("/team/info?team_id=team-b", 200),
        get("/global/spend/report", 200),
        get("/customer/list", 200),
    ];
    let viewer_refused = vec![
        post("/key/generate", json!({}), 403),
        post("/key/block", json!({"key": tok("b-svc")}), 403),
        post("/team/member_add", json!({"team_id": "team-a", "member": {"user_id": "vera"}}), 403),
        post("/team/new", json!({}), 403),
    ];
    let root_ok = vec![
        get(format!("/key/info?key={}", tok("b-svc")), 200),
        post("/team/new", json!({}), 200),
        get("/global/spend/report", 200),
    ];

    let mut checked = 0;
    let matrices = [
        ("team admin", raw("alice"), "team_admin", team_admin_ok, team_admin_refused),
        ("internal user", raw("ivy"), "internal_user", internal_ok, internal_refused),
        ("viewer", raw("vera"), "proxy_admin_viewer", viewer_ok, viewer_refused),
        ("proxy admin", raw("root"), "proxy_admin", root_ok, Vec::new()),
    ];
    for (name, key, want, ok, refused) in &matrices {
        let (console, session) = console_session(&gw, key).await?;
        ensure!(session["role"] == *want, "{name}'s session: {session}");
        for via in [Via::Bearer(key.clone()), console] {
            let role = Role { name, via };
            checked += run_matrix(&gw, &role, ok).await?;
            checked += run_matrix(&gw, &role, refused).await?;
        }
    }
    ensure!(checked > 150, "{checked} calls checked");
    let (_, session) = console_session(&gw, &raw("alice")).await?;
    ensure!(session["user_id"] == "alice" && session["teams"] == json!(["team-a"]), "{session}");

    // What each user reaches, listed: the listings are filtered, not refused.
    let alice = Role { name: "team admin", via: Via::Bearer(raw("alice")) };
    let ivy = Role { name: "internal user", via: Via::Bearer(raw("ivy")) };
    let (_, listed) = alice.call(&gw, "GET", "/key/list", &Value::Null).await?;
    let want: BTreeSet<String> = ["alice", "a-svc", "a-carol"].iter().map(|n| tok(n)).collect();
    ensure!(tokens(&listed) == want, "the team admin's keys: {listed}");
    let (_, listed) = alice.call(&gw, "GET", "/key/list?team_id=team-b", &Value::Null).await?;
    ensure!(tokens(&listed).is_empty(), "team B's keys listed to team A's admin: {listed}");
    let (_, teams) = alice.call(&gw, "GET", "/team/list", &Value::Null).await?;
    ensure!(teams.as_array().map(Vec::len) == Some(1) && teams[0]["team_id"] == "team-a", "{teams}");
    let (_, users) = alice.call(&gw, "GET", "/user/list", &Value::Null).await?;
    ensure!(users["users"].as_array().map(Vec::len) == Some(1) && users["users"][0]["user_id"] == "alice", "{users}");
    let (_, listed) = ivy.call(&gw, "GET", "/key/list", &Value::Null).await?;
    ensure!(tokens(&listed) == BTreeSet::from([tok("ivy")]), "the internal user's keys: {listed}");
    let (_, teams) = ivy.call(&gw, "GET", "/team/list", &Value::Null).await?;
    ensure!(teams.as_array().is_some_and(Vec::is_empty), "{teams}");

    // Spend: logs and daily rows of what each reaches only.
    let (_, logs) = alice.call(&gw, "GET", "/spend/logs?team_id=team-a", &Value::Null).await?;
    let data = logs["data"].as_array().context("data")?;
    ensure!(data.len() == 1 && data[0]["api_key"] == tok("a-svc").as_str(), "team A's logs: {logs}");
    let (_, logs) = ivy.call(&gw, "GET", "/spend/logs", &Value::Null).await?;
    let data = logs["data"].as_array().context("data")?;
    ensure!(data.len() == 1 && data[0]["api_key"] == tok("ivy").as_str(), "the internal user's logs: {logs}");
    eventually("the daily rows of each user's reach", Duration::from_secs(60), || async {
        let (status, by_team) = alice.call(&gw, "GET", "/spend/daily?group_by=team", &Value::Null).await?;
        ensure!(status == 200, "{status} {by_team}");
        let teams: BTreeSet<&str> =
            by_team["results"].as_array().into_iter().flatten().filter_map(|r| r["team_id"].as_str()).collect();
        ensure!(teams.iter().all(|t| *t == "team-a"), "team B's spend shown to team A's admin: {by_team}");
        let (_, by_key) = ivy.call(&gw, "GET", "/spend/daily?group_by=key", &Value::Null).await?;
        let keys: BTreeSet<&str> =
            by_key["results"].as_array().into_iter().flatten().filter_map(|r| r["api_key"].as_str()).collect();
        let ivy_token = tok("ivy");
        ensure!(keys.iter().all(|k| *k == ivy_token.as_str()), "other keys' spend shown to ivy: {by_key}");
        let (_, by_model) = ivy.call(&gw, "GET", "/spend/daily?group_by=model", &Value::Null).await?;
        Ok((teams.len() == 1 && keys.len() == 1 && by_model["totals"]["requests"] == 1).then_some(()))
    })
    .await?;

    // What a team admin and an internal user make: in reach, with their user or team.
    let (status, made) = alice
        .call(&gw, "POST", "/key/generate", &json!({"team_id": "team-a", "key_alias": "a-new", "max_budget": 5}))
        .await?;
    ensure!(status == 200 && made["team_id"] == "team-a" && made["user_id"].is_null(), "{status} {made}");
    let new_token = made["token"].as_str().context("token")?.to_owned();
    let (status, rotated) = alice.call(&gw, "POST", &format!("/key/{new_token}/regenerate"), &json!({})).await?;
    ensure!(status == 200, "the team admin rotates its team's key: {status} {rotated}");
    let rotated = rotated["token"].as_str().context("token")?.to_owned();
    let (status, _) = alice.call(&gw, "POST", "/key/delete", &json!({"keys": [rotated]})).await?;
    ensure!(status == 200, "the team admin deletes its team's key: {status}");
    let (status, own) =
        ivy.call(&gw, "POST", "/key/generate", &json!({"key_alias": "ivy-2", "max_budget": 0.5})).await?;
    ensure!(status == 200 && own["user_id"] == "ivy" && own["team_id"].is_null(), "{status} {own}");
    let (status, _) = ivy.call(&gw, "POST", "/key/delete", &json!({"keys": [own["token"].clone()]})).await?;
    ensure!(status == 200, "the internal user deletes its own key: {status}");
    // Deleting by alias reaches only its own keys: olga's key stays.
    let (status, gone) = ivy.call(&gw, "POST", "/key/delete", &json!({"key_aliases": ["olga-own"]})).await?;
    ensure!(status == 200 && gone["deleted_keys"].as_array().is_some_and(Vec::is_empty), "{status} {gone}");
    ensure!(admin.get(&format!("/key/info?key={}", tok("olga"))).await?.0 == 200, "olga's key was deleted");

    // Nothing the refusals named was changed: team B's key, team A's budget, the users' roles.
    let (_, b) = admin.get(&format!("/key/info?key={}", tok("b-svc"))).await?;
    ensure!(b["info"]["blocked"] == false && b["info"]["max_budget"].is_null(), "team B's key changed: {b}");
    let (_, a) = admin.get("/team/info?team_id=team-a").await?;
    ensure!(a["team_info"]["max_budget_nano_usd"] == 10_000_000_000_i64, "team A's budget changed: {a}");
    let (_, b) = admin.get("/team/info?team_id=team-b").await?;
    ensure!(b["team_info"]["members"].as_array().map(Vec::len) == Some(1), "team B's members changed: {b}");
    let (_, alice_user) = admin.get("/user/info?user_id=alice").await?;
    ensure!(alice_user["user_info"]["user_role"] == "internal_user", "{alice_user}");
    ensure!(admin.get("/user/info?user_id=mallory").await?.0 == 404, "a user made by a team admin");
    eprintln!("roles: {checked} calls checked over the API and the console");

    // In a real browser: what a team admin and an internal user see, and a forbidden change
    // made from the page refused.
    let seen = run_browser(&gw, &fx.dir, &[raw("alice"), raw("ivy"), raw("vera")])?;
    let names =
        |v: &Value| -> BTreeSet<String> { v.as_object().into_iter().flatten().map(|(k, _)| k.clone()).collect() };
    let buttons = |v: &Value, alias: &str| -> Vec<String> {
        v[alias].as_array().into_iter().flatten().filter_map(|b| b.as_str().map(str::to_owned)).collect()
    };
    ensure!(seen["team_admin_nav"] == json!(["keys", "logs", "teams", "usage"]), "{seen}");
    let team_keys = &seen["team_admin_keys"];
    ensure!(names(team_keys) == ["a-carol", "a-svc", "alice-own"].map(String::from).into(), "{seen}");
    ensure!(buttons(team_keys, "a-svc") == ["block", "delete", "details", "edit", "rotate"], "{seen}");
    ensure!(buttons(team_keys, "alice-own") == ["delete", "details"], "{seen}");
    ensure!(seen["team_admin_customers_page"] == "keys", "{seen}");
    let refusal = seen["team_admin_refusal"].as_str().unwrap_or_default();
    ensure!(refusal.contains("team you administer"), "a key in team B made from the page: {seen}");
    ensure!(seen["team_admin_teams"] == json!(["team-a"]), "{seen}");
    ensure!(seen["internal_nav"] == json!(["keys", "logs", "usage"]), "{seen}");
    ensure!(names(&seen["internal_keys"]) == ["ivy-own"].map(String::from).into(), "{seen}");
    ensure!(buttons(&seen["internal_keys"], "ivy-own") == ["delete", "details"], "{seen}");
    let refusal = seen["internal_refusal"].as_str().unwrap_or_default();
    ensure!(refusal.contains("may not exceed"), "a key over the user's budget made from the page: {seen}");
    ensure!(seen["internal_teams_page"] == "keys", "{seen}");
    for page in ["keys-team-admin", "teams-team-admin", "keys-internal-user"] {
        ensure!(seen["axe"][page]["serious_or_critical"] == 0, "axe on {page}: {seen}");
    }
    // The refused changes made nothing.
    for alias in ["refused-another-team", "refused-over-budget"] {
        let (_, found) = admin.get(&format!("/key/list?key_alias={alias}")).await?;
        ensure!(found["total_count"] == 0, "{alias} was made: {found}");
    }
    Ok(())
}

/// Runs `tests/console/roles_test.py` in Debian's chromium with the keys of a team admin, an
/// internal user and a viewer; what it saw.
fn run_browser(gw: &str, dir: &std::path::Path, keys: &[String; 3]) -> Result<Value> {
    let [team_admin, internal, viewer] = keys;
    let suite = BrowserSuite {
        script: "roles_test.py",
        gateway: gw,
        shots: dir.join("shots"),
        result: dir.join("roles-result.json"),
        env: &[
            ("TOLLGATE_VIEWER_KEY", viewer.as_str()),
            ("TOLLGATE_TEAM_ADMIN_KEY", team_admin.as_str()),
            ("TOLLGATE_INTERNAL_KEY", internal.as_str()),
        ],
    };
    Ok(suite.run()?.seen)
}
