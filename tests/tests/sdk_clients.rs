//! Drives Tollgate with the official Python SDKs (`tests/sdk`, pytest) against the mock
//! provider: what a user of `openai` or `anthropic` sees, including typed exceptions.

use anyhow::{ensure, Context, Result};
use std::path::PathBuf;
use tollgate_tests::*;

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("TOLLGATE_PYTHON") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("TOLLGATE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/tollgate"));
    cache.join("venv/bin/python")
}

fn gateway_config(mock: &str, topic: &str) -> String {
    format!(
        r#"gateway:
  id: gw-sdk
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock}/v1"}}
  - model_name: text-embedding-3-small
    litellm_params: {{model: openai/text-embedding-3-small, api_base: "{mock}/v1"}}
  - model_name: rate-limited
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock}/status/429/v1"}}
  - model_name: small-context
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock}/status/400/v1"}}
  - model_name: claude-mock
    litellm_params: {{model: anthropic/claude-sonnet-4-20250514, api_base: "{mock}/anthropic", api_key: sk-ant-upstream}}
  - model_name: gemini-mock
    litellm_params: {{model: gemini/gemini-2.0-flash, api_base: "{mock}/gemini/v1beta", api_key: goog-upstream}}
  - model_name: azure-mock
    litellm_params: {{model: azure/my-gpt-4o-deployment, api_base: "{mock}/azure", api_key: azure-upstream, api_version: "2024-10-21"}}
    model_info: {{base_model: azure/gpt-4o}}
router_settings:
  num_retries: 1
  context_window_fallbacks: [{{"small-context": ["gpt-4o-mini"]}}]
virtual_keys:
  - key: sk-sdk-test-key
    team_id: sdk-team
kafka:
  bootstrap_servers: {kafka}
  usage_topic: {topic}
"#,
        kafka = kafka_bootstrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_work_against_tollgate() -> Result<()> {
    let python = python();
    ensure!(
        python.exists(),
        "{} not found: run deploy/local/prereqs (it creates the SDK virtualenv) or set TOLLGATE_PYTHON",
        python.display()
    );
    let dir = scratch_dir("sdk")?;
    let topic = unique("usage-sdk-");
    create_topic(&topic, 1).await?;
    let mock = start_mock(&dir, &[]).await?;
    let gateway = start_gateway(&dir, &gateway_config(mock.url()?, &topic)).await?;
    let sdk_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk");
    let output = tokio::process::Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&sdk_dir)
        .env("TOLLGATE_SDK_BASE_URL", gateway.url()?)
        .env("TOLLGATE_SDK_KEY", "sk-sdk-test-key")
        .output()
        .await
        .context("cannot run pytest")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}\n{stderr}");
    ensure!(output.status.success(), "SDK tests failed:\n{stdout}\n{stderr}\ngateway log:\n{}", gateway.log());
    ensure!(!gateway.log().contains("sk-sdk-test-key"), "the virtual key appears in the gateway log");
    gateway.stop().await?;
    drop(mock);
    Ok(())
}
