//! Secrets stay where they belong: `/metrics` served on its own address or behind a token, and
//! no key, token or secret in any log line.

use anyhow::{ensure, Result};
use tollgate_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_moved_off_the_public_listener_and_put_behind_a_token() -> Result<()> {
    let dir = scratch_dir("secrets")?;
    let topic = unique("usage-secrets-");
    create_topic(&topic, 1).await?;
    let mock = start_mock(&dir, &[]).await?;
    let models = [model_entry("gpt-4o-mini", &format!("{}/v1", mock.url()?))];
    let token = "metrics-token-0123456789abcdef";
    let port = free_port()?;
    let mut config = GatewayConfig::new("gw-secrets", &models, &topic, &kafka_bootstrap())
        .with_yaml(&format!("environment_variables:\n  METRICS_TOKEN: {token}\n"))?;
    config.gateway.metrics =
        Some(Metrics { listen: Some(format!("127.0.0.1:{port}")), token: Some("os.environ/METRICS_TOKEN".to_owned()) });
    let gateway = start_gateway(&dir, &config).await?;
    let gw = gateway.url()?.to_owned();
    let client = reqwest::Client::new();
    // Some traffic, so there is something to count.
    let resp = chat_as(&client, &gw, TENANT_KEYS[0].0, "gpt-4o-mini", None).await?;
    ensure!(resp.status() == 200, "{}", resp.status());

    let public = client.get(format!("{gw}/metrics")).bearer_auth(token).send().await?;
    ensure!(public.status() == 404, "metrics still on the public listener: {}", public.status());
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let anonymous = client.get(&metrics).send().await?;
    ensure!(anonymous.status() == 403, "metrics without the token: {}", anonymous.status());
    let wrong = client.get(&metrics).bearer_auth("metrics-token-wrong-0000000").send().await?;
    ensure!(wrong.status() == 403, "metrics with a wrong token: {}", wrong.status());
    let text = client.get(&metrics).bearer_auth(token).send().await?.text().await?;
    ensure!(text.contains("tollgate_requests_total"), "no request counter in:\n{text}");

    let log = gateway.log();
    gateway.stop().await?;
    for secret in [token, KEY_HASH_SECRET, TENANT_KEYS[0].0] {
        ensure!(!log.contains(secret), "a secret is in the log");
    }
    ensure!(!text.contains(TENANT_KEYS[0].0), "a key is in the metrics");
    drop(mock);
    Ok(())
}

/// Kafka's SASL listener and Cassandra's TLS and login, end to end: a gateway and a consumer
/// that use them meter a request into the ledger; with a wrong password they do not get in,
/// and never print the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_kafka_and_tls_cassandra_with_a_login_carry_billing() -> Result<()> {
    let Fixture { dir, topics, keyspace: ks, mock, .. } = Fixture::start("sasl", 3).await?;
    let (sasl, user, password) = kafka_sasl();
    let (cql_user, cql_password) = cassandra_login();
    let ca = cassandra_ca();
    ensure!(ca.exists(), "deploy/local/up made no CA at {}", ca.display());
    let kafka_security = |pw: &str| {
        properties(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", &user),
            ("sasl.password", pw),
        ])
    };
    let database = |password: &str| Cql {
        username: Some(cql_user.clone()),
        password: Some(password.to_owned()),
        tls: Some(CqlTls { ca_file: ca.clone() }),
        ..Cql::test(&ks)
    };
    let gateway_config = |kafka_pw: &str, cql_pw: &str| {
        let models = [model_entry("gpt-4o-mini", &format!("{}/v1", mock.url().unwrap_or_default()))];
        let mut config = GatewayConfig {
            database: Some(database(cql_pw)),
            general_settings: Some(GeneralSettings {
                master_key: Some(MASTER_KEY.to_owned()),
                ..GeneralSettings::default()
            }),
            ..GatewayConfig::new("gw-sasl", &models, &topics.usage, &sasl)
        };
        if let Some(kafka) = &mut config.kafka {
            kafka.budget_state_topic = Some(topics.budget_state.clone());
            kafka.control_topic = Some(topics.control.clone());
            kafka.client_properties = kafka_security(kafka_pw);
        }
        config
    };

    // A wrong database password: the gateway refuses to start, naming the database, not the password.
    let wrong = "not-the-password-8d2f";
    let path = dir.join("wrong-cql.yaml");
    std::fs::write(&path, gateway_config(&password, wrong).to_yaml()?)?;
    let out = std::process::Command::new(binaries()?.join("tollgate-gateway"))
        .args(["--config", &path.to_string_lossy(), "--listen", "127.0.0.1:0"])
        .current_dir(&dir)
        .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(!out.status.success(), "started with a wrong database password:\n{text}");
    ensure!(text.contains("database") && !text.contains(wrong), "{text}");

    // A wrong Kafka password: the budget state cannot be read, so the gateway never gets ready.
    let gateway = start_gateway(&dir, &gateway_config("wrong-sasl-password", &cql_password)).await?;
    // A state that must not change: polled throughout a quiet period, not looked at once.
    let readiness = format!("{}/health/readiness", gateway.url()?);
    holds_for("not ready without Kafka's login (503)", std::time::Duration::from_secs(5), || async {
        Ok(reqwest::get(&readiness).await?.status() == 503)
    })
    .await?;
    ensure!(!gateway.log().contains("wrong-sasl-password"), "the Kafka password is in the log");
    gateway.stop().await?;

    // The right logins: a request is metered into the ledger through SASL and TLS.
    let gateway = start_gateway(&dir, &gateway_config(&password, &cql_password)).await?;
    let mut consumer_config = ConsumerConfig {
        cassandra: database(&cql_password),
        budgets: Some(ConsumerBudgets { state_topic: Some(topics.budget_state.clone()), ..ConsumerBudgets::default() }),
        ..ConsumerConfig::new(&topics.usage, &unique("ledger-"), &ks, 100)
    };
    consumer_config.kafka.bootstrap_servers = sasl.clone();
    consumer_config.kafka.client_properties = kafka_security(&password);
    let consumer = start_consumer(&dir, &consumer_config).await?;
    let gw = gateway.url()?.to_owned();
    eventually("the gateway to be ready", std::time::Duration::from_secs(60), || async {
        Ok((reqwest::get(format!("{gw}/health/readiness")).await?.status() == 200).then_some(()))
    })
    .await?;
    let admin = AdminApi::new(&gw);
    let key = admin.ok("/key/generate", serde_json::json!({})).await?["key"].as_str().unwrap_or_default().to_owned();
    let resp = chat_as(&reqwest::Client::new(), &gw, &key, "gpt-4o-mini", None).await?;
    ensure!(resp.status() == 200, "{}", resp.status());
    let session = cql().await?;
    eventually("the request in the ledger", std::time::Duration::from_secs(60), || async {
        Ok((event_ledger_totals(&session, &ks).await?.0 == 1).then_some(()))
    })
    .await?;
    consumer.stop().await?;
    gateway.stop().await?;
    drop(mock);
    Ok(())
}
