//! The web console (`/ui`, docs/console.md) on real Kafka and Cassandra: its security headers,
//! sessions, CSRF and sign-in throttle over HTTP; then, in Debian's headless Chromium driven by
//! Selenium (`tests/console/console_test.py`), sign-in, a key created in the console and used
//! with the official openai SDK, its spend seen in the console, the key blocked there and the
//! SDK refused with 401; hostile aliases shown as text; axe-core on every page; a
//! `proxy_admin_viewer` refused in the console and by the API.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tollgate_tests::*;

/// The session cookie's `name=value` from a sign-in answer, and the whole `Set-Cookie`.
fn session_cookie(resp: &reqwest::Response) -> Result<(String, String)> {
    let set = resp.headers().get("set-cookie").context("no set-cookie")?.to_str()?.to_owned();
    let pair = set.split(';').next().context("empty set-cookie")?.trim().to_owned();
    Ok((pair, set))
}

async fn sign_in(http: &reqwest::Client, gw: &str, key: &str) -> Result<reqwest::Response> {
    Ok(http.post(format!("{gw}/ui/api/sign-in")).json(&json!({"key": key})).send().await?)
}

/// The headers, the session and CSRF rules, over plain HTTP.
async fn sessions_and_headers(gw: &str, viewer_key: &str) -> Result<()> {
    let http = reqwest::Client::new();
    let page = http.get(format!("{gw}/ui")).send().await?;
    ensure!(page.status() == 200, "/ui: {}", page.status());
    let header = |name: &str| page.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let csp = header("content-security-policy");
    ensure!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe"),
        "CSP: {csp}"
    );
    ensure!(header("x-content-type-options") == "nosniff" && header("referrer-policy") == "no-referrer");
    let html = page.text().await?;
    ensure!(!html.contains("<script>") && html.contains("src=\"/ui/app.js\""), "inline script in the page");
    ensure!(http.get(format!("{gw}/ui/app.js")).send().await?.status() == 200);
    ensure!(http.get(format!("{gw}/ui/nope.js")).send().await?.status() == 404);

    let wrong = sign_in(&http, gw, "sk-not-a-key-at-all").await?;
    ensure!(wrong.status() == 401 && wrong.headers().get("set-cookie").is_none(), "a wrong key: {}", wrong.status());
    let plain_user = AdminApi::new(gw).ok("/key/generate", json!({})).await?;
    let plain = plain_user["key"].as_str().context("key")?;
    ensure!(sign_in(&http, gw, plain).await?.status() == 403, "a key of no admin signed in");

    let resp = sign_in(&http, gw, MASTER_KEY).await?;
    ensure!(resp.status() == 200, "master sign-in: {}", resp.status());
    let (cookie, set) = session_cookie(&resp)?;
    ensure!(
        set.contains("HttpOnly")
            && set.contains("SameSite=Strict")
            && set.contains("Max-Age=")
            && set.contains("Path=/"),
        "cookie attributes: {set}"
    );
    ensure!(cookie.len() == "tollgate_session=".len() + 64, "a 256-bit session id: {cookie}");
    let body: Value = resp.json().await?;
    let csrf = body["csrf_token"].as_str().context("csrf_token")?.to_owned();
    ensure!(body["role"] == "proxy_admin" && !body.to_string().contains(MASTER_KEY), "{body}");

    let with_cookie = |req: reqwest::RequestBuilder| req.header("cookie", &cookie);
    let list = with_cookie(http.get(format!("{gw}/key/list"))).send().await?;
    ensure!(list.status() == 200, "the admin API with the cookie: {}", list.status());
    let no_token = with_cookie(http.post(format!("{gw}/key/generate"))).json(&json!({})).send().await?;
    let status = no_token.status();
    let v: Value = no_token.json().await?;
    ensure!(status == 403 && v["error"]["code"] == "csrf_token_mismatch", "a change without the token: {status} {v}");
    let wrong_token =
        with_cookie(http.post(format!("{gw}/key/generate"))).header("x-csrf-token", "0".repeat(64)).json(&json!({}));
    ensure!(wrong_token.send().await?.status() == 403, "a change with a wrong token");
    let made = with_cookie(http.post(format!("{gw}/key/generate")))
        .header("x-csrf-token", &csrf)
        .json(&json!({"key_alias": "made-with-a-session"}))
        .send()
        .await?;
    ensure!(made.status() == 200, "a change with the token: {}", made.status());
    let out = with_cookie(http.post(format!("{gw}/ui/api/sign-out"))).header("x-csrf-token", &csrf).send().await?;
    ensure!(out.status() == 200, "sign-out: {}", out.status());
    let after = with_cookie(http.get(format!("{gw}/key/list"))).send().await?;
    ensure!(after.status() == 401, "the cookie after sign-out: {}", after.status());

    // The API refuses a viewer's change with its key too (the browser run checks the console).
    let viewer = reqwest::Client::new()
        .post(format!("{gw}/key/generate"))
        .bearer_auth(viewer_key)
        .json(&json!({}))
        .send()
        .await?;
    ensure!(viewer.status() == 403, "a viewer's /key/generate: {}", viewer.status());
    Ok(())
}

/// The sign-in throttle: past `sign_in_per_ip_per_minute` (10) attempts, 429 with Retry-After.
async fn sign_in_is_throttled(gw: &str) -> Result<()> {
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let resp = sign_in(&http, gw, "sk-guess-guess-guess").await?;
        if resp.status() == 429 {
            ensure!(resp.headers().contains_key("retry-after"), "429 without retry-after");
        }
        statuses.push(resp.status().as_u16());
    }
    ensure!(statuses.last() == Some(&429), "guessing is not throttled: {statuses:?}");
    // Even the right key waits once throttled.
    ensure!(sign_in(&http, gw, MASTER_KEY).await?.status() == 429, "throttled, the master key still signs in");
    Ok(())
}

/// Runs `tests/console/console_test.py` in Debian's chromium with a viewer's key; what it saw.
fn run_browser(gw: &str, viewer_key: &str, dir: &Path) -> Result<Value> {
    let suite = BrowserSuite {
        script: "console_test.py",
        gateway: gw,
        shots: std::env::var("TOLLGATE_CONSOLE_SHOTS").map(PathBuf::from).unwrap_or_else(|_| dir.join("shots")),
        result: dir.join("console-result.json"),
        env: &[("TOLLGATE_VIEWER_KEY", viewer_key)],
    };
    let run = suite.run()?;
    eprintln!("{}", run.log);
    Ok(run.seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_end_to_end_in_a_real_browser() -> Result<()> {
    let fx = Fixture::start("console", 1).await?;
    // A model whose only deployment always fails, falling back to gpt-4o-mini: a request's
    // attempt chain in its detail on the spend logs.
    let mut config = fx.gateway("gw-console")?;
    config.model_list.push(model_entry("console-broken", &format!("{}/status/500/v1", fx.mock.url()?)));
    config.prices.insert("console-broken".to_owned(), Price::TEST);
    let config = config.with_yaml("router_settings:\n  fallbacks: [{\"console-broken\": [\"gpt-4o-mini\"]}]\n")?;
    let gateway = start_gateway(&fx.dir, &config).await?;
    // Budget state with heartbeats: the key made in the console has a hard budget.
    let consumer_cfg = ConsumerConfig {
        budgets: Some(ConsumerBudgets {
            state_topic: Some(fx.topics.budget_state.clone()),
            heartbeat_interval_ms: Some(1000),
            alert_thresholds: None,
            webhook_url: None,
        }),
        ..fx.consumer(200)
    };
    let consumer = start_consumer(&fx.dir, &consumer_cfg).await?;
    let gw = gateway.url()?.to_owned();
    eventually("the gateway to read its budget state", std::time::Duration::from_secs(60), || async {
        let ready = reqwest::get(format!("{gw}/health/readiness")).await?.status() == 200;
        Ok(ready.then_some(()))
    })
    .await?;
    let admin = AdminApi::new(&gw);
    let viewer = unique("viewer-");
    admin
        .ok("/user/new", json!({"user_id": viewer, "user_role": "proxy_admin_viewer", "auto_create_key": false}))
        .await?;
    let viewer_key = admin.ok("/key/generate", json!({"user_id": viewer, "key_alias": "viewer"})).await?["key"]
        .as_str()
        .context("viewer key")?
        .to_owned();

    sessions_and_headers(&gw, &viewer_key).await?;
    ledger_health_answers(&gw, &consumer).await?;
    let seen = run_browser(&gw, &viewer_key, &fx.dir)?;
    let new_pages = [
        "overview-health",
        "usage-by-model",
        "usage-by-customer",
        "teams",
        "team",
        "customers",
        "customer",
        "users",
        "user",
        "organizations",
        "organization",
        "models",
        "request-detail",
        "request-attempts",
    ];
    for page in ["overview", "keys", "key-edit", "usage", "logs", "sign-in", "keys-viewer"].iter().chain(&new_pages) {
        ensure!(seen["axe"][page]["serious_or_critical"] == 0, "axe on {page}: {seen}");
    }
    ensure!(seen["blocked_sdk_status"] == 401 && seen["viewer_api_status"] == 403, "{seen}");
    ensure!(seen["log_rows_of_key"] == 3, "the key's requests in the spend logs: {seen}");
    ensure!(seen["filters_narrowed"] == true && seen["rotated_old_key_answers"] == true, "{seen}");
    ensure!(
        seen["csv_formula_defused"] == true && seen["entity_pages"] == true && seen["ledger_state"] == "fresh",
        "{seen}"
    );
    ensure!(seen["team_members"][0][1] == "admin" && seen["request_detail_total"].is_string(), "{seen}");
    ensure!(seen["attempt_chain"].as_array().is_some_and(|c| c.len() == 4), "the attempt chain shown: {seen}");
    ensure!(seen["consumer_lag"].as_str().is_some_and(|l| l.ends_with("records")), "the consumer's lag: {seen}");
    ensure!(seen["reconcile_shown"].as_str().is_some_and(|r| r.starts_with("agreed")), "{seen}");
    // What the console did is what the API holds.
    let alias = seen["created_alias"].as_str().context("created_alias")?;
    let (_, found) = admin.get(&format!("/key/list?key_alias={alias}&return_full_object=true")).await?;
    ensure!(found["keys"][0]["blocked"] == true, "the key blocked in the console: {found}");
    ensure!(found["keys"][0]["max_budget_nano_usd"] == 1000, "the budget edited in the console: {found}");
    ensure!(found["keys"][0]["metadata"]["owner"] == "<b>console</b>", "the metadata edited in the console: {found}");
    let (_, hostile) = admin.get("/key/list?search=%3Cscript%3E&return_full_object=true").await?;
    ensure!(hostile["total_count"] == 0, "the key deleted in the console is still there: {hostile}");
    model_health_counts_calls(&gw, &admin).await?;
    sign_in_is_throttled(&gw).await?;
    Ok(())
}

/// `/ledger/health` after a run of reconcile: the run recorded, the consumer's heartbeat with
/// its lag, no dead letter.
async fn ledger_health_answers(gw: &str, consumer: &Process) -> Result<()> {
    let config = consumer.config.clone().context("the consumer's config")?;
    let (ok, out) = reconcile(&config).await?;
    ensure!(ok, "reconcile: {out}");
    let admin = AdminApi::new(gw);
    eventually("the consumer's lag in /ledger/health", std::time::Duration::from_secs(60), || async {
        let (status, health) = admin.get("/ledger/health").await?;
        ensure!(status == 200, "/ledger/health: {status} {health}");
        let run = &health["last_reconcile"];
        ensure!(run["ok"] == true && run["differences"] == 0 && run["finished_at"].is_string(), "{health}");
        ensure!(health["dead_letters"]["count"] == 0 && health["budget_view"]["stale"] == false, "{health}");
        let reported = health["consumers"].as_array().is_some_and(|c| c.iter().any(|c| c["lag"].is_i64()));
        Ok(reported.then_some(()))
    })
    .await
}

/// `/model/health` counts a call that just ended, with its latency.
async fn model_health_counts_calls(gw: &str, admin: &AdminApi) -> Result<()> {
    let key = admin.ok("/key/generate", json!({})).await?["key"].as_str().context("key")?.to_owned();
    let answer = chat_as(&reqwest::Client::new(), gw, &key, "gpt-4o-mini", None).await?;
    ensure!(answer.status() == 200, "a chat: {}", answer.status());
    let (_, health) = admin.get("/model/health").await?;
    let mini = health["data"].as_array().and_then(|d| d.iter().find(|m| m["model_name"] == "gpt-4o-mini"));
    let mini = mini.with_context(|| format!("gpt-4o-mini in {health}"))?;
    ensure!(mini["calls"].as_u64() >= Some(1) && mini["latency_p50_ms"].is_u64(), "{mini}");
    ensure!(mini["state"] == "healthy" && mini["failures"] == 0, "{mini}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_turned_off_serves_nothing_and_takes_no_cookie() -> Result<()> {
    let fx = Fixture::start("console-off", 1).await?;
    let _consumer = start_consumer(&fx.dir, &fx.consumer(200)).await?;
    let config = fx.gateway("gw-console-off")?.with_yaml("gateway:\n  console:\n    enabled: false\n")?;
    let gateway = start_gateway(&fx.dir, &config).await?;
    let gw = gateway.url()?;
    let http = reqwest::Client::new();
    for path in ["/ui", "/ui/app.js", "/ui/api/session"] {
        ensure!(http.get(format!("{gw}{path}")).send().await?.status() == 404, "{path} served while off");
    }
    ensure!(sign_in(&http, gw, MASTER_KEY).await?.status() == 404, "sign-in while off");
    let with_cookie =
        http.get(format!("{gw}/key/list")).header("cookie", format!("tollgate_session={}", "a".repeat(64)));
    ensure!(with_cookie.send().await?.status() == 401, "a cookie taken while off");
    Ok(())
}
