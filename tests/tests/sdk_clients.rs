//! Drives Tollgate with the official Python SDKs (`tests/sdk`, pytest) against the mock
//! provider: what a user of `openai` or `anthropic` sees, including typed exceptions.

use anyhow::{ensure, Context, Result};
use tollgate_tests::*;

/// A model `name` served by `model` at `api_base`, with an upstream key where the provider needs one.
fn model(name: &str, model: &str, api_base: String, api_key: Option<&str>) -> ModelEntry {
    ModelEntry {
        model_name: name.to_owned(),
        litellm_params: LitellmParams {
            model: model.to_owned(),
            api_base: Some(api_base),
            api_key: api_key.map(str::to_owned),
            ..LitellmParams::default()
        },
        model_info: None,
    }
}

/// A Vertex AI model signed in with the mock's test service account.
fn vertex(name: &str, model_id: &str, mock: &str) -> ModelEntry {
    let mut entry = model(name, model_id, format!("{mock}/vertex"), None);
    entry.litellm_params.vertex_credentials =
        Some(tollgate_benches::mock_vertex::test_key(&format!("{mock}/vertex/token")));
    entry
}

/// The SDKs' models on every provider the mock speaks; no prices (the model catalogue applies).
fn gateway_config(mock: &str, topic: &str) -> Result<GatewayConfig> {
    let mut azure = model("azure-mock", "azure/my-gpt-4o-deployment", format!("{mock}/azure"), Some("azure-upstream"));
    azure.litellm_params.api_version = Some("2024-10-21".to_owned());
    azure.model_info = Some([("base_model".to_owned(), "azure/gpt-4o".into())].into());
    // Signed with SigV4; the mock refuses a request whose signature it cannot reproduce.
    let mut bedrock = model("bedrock-mock", "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0", mock.to_owned(), None);
    bedrock.litellm_params.aws_access_key_id = Some(tollgate_benches::mock_bedrock::ACCESS_KEY_ID.to_owned());
    bedrock.litellm_params.aws_secret_access_key = Some(tollgate_benches::mock_bedrock::SECRET_ACCESS_KEY.to_owned());
    bedrock.litellm_params.aws_region_name = Some("us-east-1".to_owned());
    let config = GatewayConfig {
        gateway: GatewaySettings { id: Some("gw-sdk".to_owned()), ..GatewaySettings::default() },
        model_list: vec![
            model("gpt-4o-mini", "openai/gpt-4o-mini", format!("{mock}/v1"), None),
            model("text-embedding-3-small", "openai/text-embedding-3-small", format!("{mock}/v1"), None),
            model("omni-moderation-latest", "openai/omni-moderation-latest", format!("{mock}/v1"), None),
            model("rerank-english-v3.0", "hosted_vllm/rerank-english-v3.0", format!("{mock}/v1"), None),
            model("tts-1", "openai/tts-1", format!("{mock}/v1"), None),
            model("gpt-image-1-low", "openai/low/1024-x-1024/gpt-image-1", format!("{mock}/v1"), None),
            model("whisper-1", "openai/whisper-1", format!("{mock}/v1"), None),
            model("rate-limited", "openai/gpt-4o-mini", format!("{mock}/status/429/v1"), None),
            model("small-context", "openai/gpt-4o-mini", format!("{mock}/status/400/v1"), None),
            model(
                "claude-mock",
                "anthropic/claude-sonnet-4-20250514",
                format!("{mock}/anthropic"),
                Some("sk-ant-upstream"),
            ),
            model("gemini-mock", "gemini/gemini-2.0-flash", format!("{mock}/gemini/v1beta"), Some("goog-upstream")),
            bedrock,
            vertex("vertex-gemini-mock", "vertex_ai/gemini-2.5-flash", mock),
            vertex("vertex-claude-mock", "vertex_ai/claude-3-5-sonnet@20240620", mock),
            azure,
        ],
        virtual_keys: vec![VirtualKey { key: "sk-sdk-test-key".to_owned(), team_id: Some("sdk-team".to_owned()) }],
        kafka: Some(GatewayKafka {
            bootstrap_servers: kafka_bootstrap(),
            usage_topic: topic.to_owned(),
            ..GatewayKafka::default()
        }),
        ..GatewayConfig::default()
    };
    config.with_yaml(
        "router_settings:\n  num_retries: 1\n  context_window_fallbacks: [{\"small-context\": [\"gpt-4o-mini\"]}]\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_work_against_tollgate() -> Result<()> {
    let python = test_python();
    ensure!(
        python.exists(),
        "{} not found: run deploy/local/prereqs (it creates the SDK virtualenv) or set TOLLGATE_PYTHON",
        python.display()
    );
    let dir = scratch_dir("sdk")?;
    let topic = unique("usage-sdk-");
    create_topic(&topic, 1).await?;
    let mock = start_mock(&dir, &[]).await?;
    let gateway = start_gateway(&dir, &gateway_config(mock.url()?, &topic)?).await?;
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
