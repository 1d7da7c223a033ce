//! `tollgate-gateway import-litellm` against a real PostgreSQL holding LiteLLM's schema (from
//! `litellm-proxy-extras` on PyPI, `tests/litellm/fetch-schema`): the tables match
//! `schema.prisma`; an import creates every record, a re-run skips them, a changed row is
//! updated; imported keys work with their team's limits, and their running spend carries, into
//! Cassandra (gateways running) and into the embedded file alike.

use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::time::Duration;
use tollgate_tests::postgres::{litellm_schema, prisma_columns, Postgres};
use tollgate_tests::*;

fn sha256_hex(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.as_bytes()))
}

/// A private PostgreSQL with LiteLLM's tables.
async fn litellm_database(dir: &std::path::Path) -> Result<(Postgres, String)> {
    let (sql, prisma) = litellm_schema()?;
    let pg = Postgres::start(dir)?;
    pg.apply("postgres", &sql).context("applying LiteLLM's migrations")?;
    Ok((pg, prisma))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tables_read_match_litellm_schema_prisma() -> Result<()> {
    let dir = scratch_dir("import-schema")?;
    let (pg, prisma) = litellm_database(&dir).await?;
    let client = pg.client("postgres").await?;
    for (table, read) in tollgate_gateway::import::postgres::TABLES {
        let rows =
            client.query("SELECT column_name FROM information_schema.columns WHERE table_name = $1", &[&table]).await?;
        let created: BTreeSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
        let modelled: BTreeSet<String> = prisma_columns(&prisma, table)?.into_iter().map(|(c, _)| c).collect();
        ensure!(created == modelled, "{table}: migrations {created:?} != schema.prisma {modelled:?}");
        for column in read {
            ensure!(created.contains(*column), "{table}.{column} is read but LiteLLM has no such column");
        }
    }
    Ok(())
}

/// Runs the import; (exit status, stdout, stderr).
fn import(config: &std::path::Path, url: &str, flags: &[&str]) -> Result<(i32, String, String)> {
    let mut cmd = std::process::Command::new(binaries()?.join("tollgate-gateway"));
    cmd.arg("import-litellm").arg("--config").arg(config).args(["--database-url", url]).args(flags);
    let out = cmd.output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The report line of `kind`: (created, updated, skipped).
fn counts(report: &str, kind: &str) -> Result<(u64, u64, u64)> {
    let line =
        report.lines().find(|l| l.trim_start().starts_with(kind)).with_context(|| format!("{kind}: {report}"))?;
    let numbers: Vec<u64> = line.split_whitespace().filter_map(|w| w.trim_start_matches('(').parse().ok()).collect();
    ensure!(numbers.len() >= 3, "{line}");
    Ok((numbers[0], numbers[1], numbers[2]))
}

const SEED: &str = r#"
INSERT INTO "LiteLLM_BudgetTable" (budget_id, max_budget, rpm_limit, budget_duration, created_by, updated_by)
  VALUES ('b-small', 5.0, 100, '30d', 'admin', 'admin');
INSERT INTO "LiteLLM_OrganizationTable" (organization_id, organization_alias, budget_id, models, spend, created_by, updated_by)
  VALUES ('org-1', 'Org One', 'b-small', '{}', 0.25, 'admin', 'admin');
INSERT INTO "LiteLLM_TeamTable" (team_id, team_alias, organization_id, admins, members, members_with_roles, max_budget,
    spend, models, budget_duration, budget_reset_at, tpm_limit)
  VALUES ('team-a', 'Team A', 'org-1', '{}', '{}', '[{"user_id": "user-1", "role": "admin"}]', 10.0, 3.5,
    '{gpt-4o-mini}', '1mo', now() + interval '10 days', 100000);
INSERT INTO "LiteLLM_UserTable" (user_id, user_email, user_role, max_budget, spend, models, organization_id)
  VALUES ('user-1', 'one@example.com', 'internal_user', 100.0, 1.25, '{}', 'org-1');
INSERT INTO "LiteLLM_EndUserTable" (user_id, alias, spend, budget_id) VALUES ('cust-1', 'Customer One', 0.5, 'b-small');
"#;

/// LiteLLM's virtual keys as their users hold them.
struct Keys {
    /// With a 1 USD daily budget, all spent.
    spent: String,
    /// Of `team-a`, which allows `gpt-4o-mini` only.
    team: String,
    blocked: String,
}

/// [`SEED`] and three keys, stored as LiteLLM stores them (their SHA-256).
async fn seed(db: &tokio_postgres::Client) -> Result<Keys> {
    let new = |what: &str| format!("sk-litellm-{what}-{}", uuid::Uuid::new_v4().simple());
    let keys = Keys { spent: new("spent"), team: new("team"), blocked: new("blocked") };
    db.batch_execute(SEED).await?;
    let key_sql = r#"INSERT INTO "LiteLLM_VerificationToken" (token, key_name, key_alias, spend, models, team_id, user_id,
        max_budget, budget_duration, budget_reset_at, blocked, metadata)
        VALUES ($1, $2, $3, $4, '{}', $5, 'user-1', $6, '1d', now() + interval '1 day', $7, '{"source": "litellm"}')"#;
    // (key, alias, spend, team, max_budget, blocked)
    type Row<'a> = (&'a str, &'a str, f64, Option<&'a str>, Option<f64>, bool);
    let rows: [Row<'_>; 3] = [
        (&keys.spent, "spent", 1.0, None, Some(1.0), false),
        (&keys.team, "team", 0.0, Some("team-a"), None, false),
        (&keys.blocked, "blocked", 0.0, None, None, true),
    ];
    for (raw, alias, spend, team, budget, blocked) in rows {
        let name = format!("sk-...{}", &raw[raw.len() - 4..]);
        db.execute(key_sql, &[&sha256_hex(raw), &name, &alias, &spend, &team, &budget, &blocked]).await?;
    }
    Ok(keys)
}

/// Waits until `raw` is refused for its own budget.
async fn refused_for_its_budget(gw: &str, raw: &str) -> Result<()> {
    let http = reqwest::Client::new();
    eventually("the spent key to be refused", Duration::from_secs(30), || {
        let http = &http;
        async move {
            let (status, code, _) = error_code(chat_as(http, gw, raw, "gpt-4o-mini", None).await?).await;
            Ok((status == 400 && code == "key_budget_exceeded").then_some(()))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_keys_work_with_their_team_and_carry_their_spend() -> Result<()> {
    let dir = scratch_dir("import-litellm")?;
    let (pg, _) = litellm_database(&dir).await?;
    let db = pg.client("postgres").await?;
    let Keys { spent: raw_spent, team: raw_team, blocked: raw_blocked } = seed(&db).await?;

    let topics = Topics::create("import", 2).await?;
    let ks = unique("tg_import_").replace('-', "_");
    let mock = start_mock(&dir, &[]).await?;
    let gateway = start_gateway(&dir, &GatewayConfig::tenancy("gw-import", mock.url()?, &topics, &ks)).await?;
    let consumer_cfg = ConsumerConfig {
        budgets: Some(ConsumerBudgets {
            state_topic: Some(topics.budget_state.clone()),
            heartbeat_interval_ms: Some(1000),
            ..ConsumerBudgets::default()
        }),
        ..ConsumerConfig::new(&topics.usage, &unique("ledger-import-"), &ks, 500)
    };
    let _consumer = start_consumer(&dir, &consumer_cfg).await?;
    let gw = gateway.url()?.to_owned();
    let config = gateway.config.clone().context("the gateway's config file")?;
    let url = pg.url("postgres");

    // First run: every row created; running spend published as opening balances.
    let (status, report, errors) = import(&config, &url, &["--spend"])?;
    ensure!(status == 0, "import failed: {status}\n{report}\n{errors}");
    for (kind, n) in [("budgets", 1), ("organizations", 1), ("teams", 1), ("users", 1), ("customers", 1), ("keys", 3)] {
        ensure!(counts(&report, kind)? == (n, 0, 0), "first run, {kind}: {report}");
    }
    ensure!(report.contains("5 opening balances published"), "{report}");
    for secret in [&pg.password, &raw_spent, &raw_team, &raw_blocked] {
        ensure!(!report.contains(secret.as_str()) && !errors.contains(secret.as_str()), "a secret in the output");
    }

    // The keys work as LiteLLM had them: the team's model list applies, a blocked key is refused.
    let http = reqwest::Client::new();
    let resp = chat_as(&http, &gw, &raw_team, "gpt-4o-mini", None).await?;
    ensure!(resp.status() == 200, "an imported key: {:?}", error_code(resp).await);
    let (status, code, _) = error_code(chat_as(&http, &gw, &raw_team, "gpt-4o", None).await?).await;
    ensure!((status, code.as_str()) == (403, "model_not_allowed"), "the team's models: {status} {code}");
    let (status, code, _) = error_code(chat_as(&http, &gw, &raw_blocked, "gpt-4o-mini", None).await?).await;
    ensure!((status, code.as_str()) == (401, "key_blocked"), "a blocked key: {status} {code}");

    // Re-run (the team key has moved to its keyed hash meanwhile): nothing written twice.
    let (status, report, errors) = import(&config, &url, &["--spend"])?;
    ensure!(status == 0, "re-run failed: {status}\n{report}\n{errors}");
    for (kind, n) in [("budgets", 1), ("organizations", 1), ("teams", 1), ("users", 1), ("customers", 1), ("keys", 3)] {
        ensure!(counts(&report, kind)? == (0, 0, n), "re-run, {kind}: {report}");
    }
    // A row changed in LiteLLM is updated; the rest skipped. A dry run only tells.
    db.execute(r#"UPDATE "LiteLLM_TeamTable" SET max_budget = 20.0 WHERE team_id = 'team-a'"#, &[]).await?;
    let (status, report, errors) = import(&config, &url, &["--dry-run"])?;
    ensure!(status == 0, "dry run failed: {status}\n{report}\n{errors}");
    ensure!(report.contains("dry run") && counts(&report, "teams")? == (0, 1, 0), "{report}");
    let (status, report, errors) = import(&config, &url, &["--spend"])?;
    ensure!(status == 0, "third run failed: {status}\n{report}\n{errors}");
    ensure!(counts(&report, "teams")? == (0, 1, 0) && counts(&report, "keys")? == (0, 0, 3), "{report}");
    let admin = AdminApi::new(&gw);
    let (_, team) = admin.get("/team/info?team_id=team-a").await?;
    ensure!(team["team_info"]["max_budget_nano_usd"] == 20_000_000_000i64, "{team}");

    // The opening balances are folded once (three runs published them): the spent key's, and
    // the team's on top of what its key spent through the gateway.
    let spent_token = sha256_hex(&raw_spent);
    let team_token = sha256_hex(&raw_team);
    eventually("the opening balances to be folded", Duration::from_secs(60), || {
        let (admin, spent_token, team_token) = (&admin, &spent_token, &team_token);
        async move {
            let (_, spent) = admin.get(&format!("/key/info?key={spent_token}")).await?;
            let (_, team_key) = admin.get(&format!("/key/info?key={team_token}")).await?;
            let (_, team) = admin.get("/team/info?team_id=team-a").await?;
            let served = team_key["info"]["spend_all_time_nano_usd"].as_i64().unwrap_or(-1);
            Ok((spent["info"]["spend_nano_usd"] == 1_000_000_000i64
                && served > 0
                && team["team_info"]["spend_nano_usd"] == 3_500_000_000i64 + served)
                .then_some(()))
        }
    })
    .await?;
    refused_for_its_budget(&gw, &raw_spent).await?;
    let (_, user) = admin.get("/user/info?user_id=user-1").await?;
    let (_, team_key) = admin.get(&format!("/key/info?key={team_token}")).await?;
    let served = team_key["info"]["spend_all_time_nano_usd"].as_i64().context("the team key's spend")?;
    ensure!(user["user_info"]["spend_all_time_nano_usd"] == 1_250_000_000i64 + served, "{user}");
    Ok(())
}

/// The embedded default: the import writes the gateway's own file (the gateway stopped), and
/// the gateway started on it serves the imported keys with their spend, here summed from
/// LiteLLM's spend logs over the key's current window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_imports_into_its_file() -> Result<()> {
    let dir = scratch_dir("import-embedded")?;
    let (pg, _) = litellm_database(&dir).await?;
    let db = pg.client("postgres").await?;
    let keys = seed(&db).await?;
    // The spent key's requests: 1.5 USD today (its window: `1d`), 5 USD three days ago.
    let log_sql = r#"INSERT INTO "LiteLLM_SpendLogs" (request_id, call_type, api_key, spend, "startTime", "endTime")
        VALUES ($1, 'acompletion', $2, $3::float8, now() - $4::text::interval, now() - $4::text::interval)"#;
    for (i, (spend, ago)) in [(0.5, "0 seconds"), (1.0, "0 seconds"), (5.0, "3 days")].into_iter().enumerate() {
        db.execute(log_sql, &[&format!("req-{i}"), &sha256_hex(&keys.spent), &spend, &ago]).await?;
    }
    let mock = start_mock(&dir, &[]).await?;
    let config = GatewayConfig {
        gateway: GatewaySettings { id: Some("gw-import-embedded".to_owned()), ..GatewaySettings::default() },
        model_list: vec![model_entry("gpt-4o-mini", &format!("{}/v1", mock.url()?))],
        prices: [("gpt-4o-mini".to_owned(), Price::TEST)].into(),
        embedded: Some(Embedded { path: dir.join("data/tollgate.db"), max_size_bytes: None }),
        general_settings: Some(GeneralSettings {
            master_key: Some(MASTER_KEY.to_owned()),
            ..GeneralSettings::default()
        }),
        ..GatewayConfig::default()
    };
    let path = dir.join("embedded.yaml");
    std::fs::write(&path, config.to_yaml()?)?;
    let url = pg.url("postgres");
    let (status, report, errors) = import(&path, &url, &["--spend-logs"])?;
    ensure!(status == 0 && counts(&report, "keys")? == (3, 0, 0), "{status}\n{report}\n{errors}");
    ensure!(report.contains("1 opening balances published (1.5 USD in all)"), "{report}");
    let (status, report, errors) = import(&path, &url, &["--spend-logs"])?;
    ensure!(status == 0 && counts(&report, "keys")? == (0, 0, 3), "{status}\n{report}\n{errors}");

    let gateway = start_gateway(&dir, &config).await?;
    let gw = gateway.url()?.to_owned();
    let resp = chat_as(&reqwest::Client::new(), &gw, &keys.team, "gpt-4o-mini", None).await?;
    ensure!(resp.status() == 200, "an imported key: {:?}", error_code(resp).await);
    refused_for_its_budget(&gw, &keys.spent).await?;
    // Its window's requests only, once though the import ran twice.
    let (_, info) = AdminApi::new(&gw).get(&format!("/key/info?key={}", sha256_hex(&keys.spent))).await?;
    ensure!(info["info"]["spend_nano_usd"] == 1_500_000_000i64, "{info}");
    Ok(())
}

/// The import's figures: 10,000 keys, 1,000 teams and 1,000 users (with spend) into Cassandra
/// (first run, then a re-run that skips everything) and into the embedded file. Ignored by
/// default; `benches/import-litellm/run` runs it and keeps the results in `benches/results/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: benches/import-litellm/run"]
async fn import_figures() -> Result<()> {
    const KEYS: i64 = 10_000;
    const TEAMS: i64 = 1_000;
    const USERS: i64 = 1_000;
    let dir = scratch_dir("import-figures")?;
    let (pg, _) = litellm_database(&dir).await?;
    let db = pg.client("postgres").await?;
    db.batch_execute(&format!(
        r#"INSERT INTO "LiteLLM_TeamTable" (team_id, team_alias, admins, members, max_budget, spend, models, budget_duration, tpm_limit)
             SELECT 'team-' || i, 'Team ' || i, '{{}}', '{{}}', 100.0, 0.5, '{{gpt-4o-mini}}', '1mo', 100000
             FROM generate_series(1, {TEAMS}) i;
           INSERT INTO "LiteLLM_UserTable" (user_id, user_email, max_budget, spend, models)
             SELECT 'user-' || i, 'user' || i || '@example.com', 50.0, 0.25, '{{}}' FROM generate_series(1, {USERS}) i;
           INSERT INTO "LiteLLM_VerificationToken" (token, key_name, key_alias, spend, models, team_id, user_id,
               max_budget, budget_duration, rpm_limit, metadata)
             SELECT encode(sha256(('sk-bench-' || i)::bytea), 'hex'), 'sk-...' || lpad(i::text, 4, '0'), 'key ' || i,
               0.001 * i, '{{}}', 'team-' || (i % {TEAMS} + 1), 'user-' || (i % {USERS} + 1), 10.0, '30d', 600, '{{"n": 1}}'
             FROM generate_series(1, {KEYS}) i;"#
    ))
    .await?;
    let url = pg.url("postgres");
    let rows = KEYS + TEAMS + USERS;

    let topics = Topics::create("import-bench", 2).await?;
    let ks = unique("tg_import_bench_").replace('-', "_");
    let mut cql = GatewayConfig::tenancy("gw-import-bench", "http://127.0.0.1:9", &topics, &ks);
    cql.spool = Some(Spool { dir: dir.join("spool") });
    let cql_path = dir.join("cassandra.yaml");
    std::fs::write(&cql_path, cql.to_yaml()?)?;
    let mut embedded = GatewayConfig::new("gw-import-bench", &cql.model_list, &topics.usage, &kafka_bootstrap());
    embedded.kafka = None;
    embedded.embedded = Some(Embedded { path: dir.join("embedded/tollgate.db"), max_size_bytes: None });
    let embedded_path = dir.join("embedded.yaml");
    std::fs::write(&embedded_path, embedded.to_yaml()?)?;

    let mut table = String::new();
    for (target, config, flags) in [
        ("Cassandra, first run, --spend", &cql_path, &["--spend"][..]),
        ("Cassandra, re-run (all skipped), --spend", &cql_path, &["--spend"][..]),
        ("embedded file, first run, --spend", &embedded_path, &["--spend"][..]),
    ] {
        let started = std::time::Instant::now();
        let (status, report, errors) = import(config, &url, flags)?;
        let wall = started.elapsed().as_secs_f64();
        ensure!(status == 0, "{target}: {status}\n{report}\n{errors}");
        let (created, _, skipped) = counts(&report, "keys")?;
        ensure!(created + skipped == KEYS as u64, "{target}: {report}");
        let speed = report.lines().find(|l| l.contains("rows/s")).unwrap_or_default().trim().to_owned();
        table.push_str(&format!(
            "| {target} | {created} | {skipped} | {wall:.1} s | {:.0} | `{speed}` |\n",
            rows as f64 / wall
        ));
    }
    let results = std::env::var("TOLLGATE_BENCH_RESULTS").ok();
    let text = format!(
        "# import-litellm figures\n\n{} rows in LiteLLM's tables ({KEYS} keys, {TEAMS} teams, {USERS} users, each with \
         spend), read from a private PostgreSQL {} and written through Tollgate's tenancy store. Debug build, \
         2 cores shared with Kafka, Cassandra and PostgreSQL.\n\n\
         | target | keys created | keys skipped | wall time (process) | rows/s (wall) | the import's own report |\n\
         |---|---|---|---|---|---|\n{table}",
        rows,
        db.query_one("SHOW server_version", &[]).await?.get::<_, String>(0)
    );
    eprintln!("{text}");
    if let Some(path) = results {
        std::fs::write(path, text)?;
    }
    Ok(())
}
