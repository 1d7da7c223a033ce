//! Routing shapes of LiteLLM configs, from the YAML in: wildcard deployments,
//! `custom_llm_provider`, and prompts checked against context windows before the call.

use super::router::Router;
use crate::config::Config;
use crate::error::GatewayError;
use crate::limits::pricing::AttoUsd;

fn router(yaml: &str) -> Router {
    let config = Config::parse(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    Router::from_config(&config, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

const WILDCARDS: &str = "\
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_key: k, api_base: 'http://exact.test/v1'}
  - model_name: openai/*
    litellm_params: {model: openai/*, api_key: k, api_base: 'http://openai.test/v1'}
  - model_name: anthropic/*
    litellm_params: {model: anthropic/*, api_key: k, api_base: 'http://anthropic.test'}
  - model_name: gemini-*
    litellm_params: {model: gemini/gemini-*, api_key: k, api_base: 'http://gemini.test'}
  - model_name: '*'
    litellm_params: {model: openai/*, api_key: k, api_base: 'http://catchall.test/v1', input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}
router_settings:
  fallbacks: [{'openai/*': [gpt-4o]}]
gateway:
  allow_unpriced_models: true
";

fn served_by(router: &Router, model: &str) -> (String, String, String) {
    let (_, picked) = router.pick(model, &[]).unwrap_or_else(|| panic!("{model} is not served"));
    let d = &picked.deployment;
    let url = d.urls.chat.as_ref().map(|u| u.to_string()).unwrap_or_default();
    (d.provider.clone(), d.upstream_model.clone(), url)
}

#[test]
fn wildcards_serve_every_model_they_match_with_the_star_filled_in() {
    let r = router(WILDCARDS);
    assert_eq!(served_by(&r, "gpt-4o").2, "http://exact.test/v1/chat/completions", "an exact name wins");
    let (provider, upstream, url) = served_by(&r, "openai/o3-mini");
    assert_eq!((provider.as_str(), upstream.as_str()), ("openai", "o3-mini"));
    assert_eq!(url, "http://openai.test/v1/chat/completions");
    let (provider, upstream, _) = served_by(&r, "anthropic/claude-sonnet-4-20250514");
    assert_eq!((provider.as_str(), upstream.as_str()), ("anthropic", "claude-sonnet-4-20250514"));
    let (provider, upstream, url) = served_by(&r, "gemini-2.5-flash");
    assert_eq!((provider.as_str(), upstream.as_str()), ("gemini", "gemini-2.5-flash"));
    assert!(url.contains("/models/gemini-2.5-flash:"), "{url}");
    let (_, upstream, url) = served_by(&r, "mistral-large-latest");
    assert_eq!(upstream, "mistral-large-latest", "`*` catches every other name");
    assert_eq!(url, "http://catchall.test/v1/chat/completions");
}

#[test]
fn models_served_through_a_wildcard_are_priced_by_their_own_name_or_the_config() {
    let r = router(WILDCARDS);
    let built_in = crate::limits::pricing::built_in("gpt-4o-mini");
    assert!(built_in.is_some());
    assert_eq!(
        r.worst_price("openai/gpt-4o-mini").map(|p| p.input()),
        built_in.map(|p| p.input()).max(r.worst_price("gpt-4o").map(|p| p.input())),
        "its own price, or its fallback's when that is higher"
    );
    assert_eq!(
        r.worst_price("mistral-large-latest").map(|p| (p.input(), p.output())),
        Some((AttoUsd::from_nanos(1_000), AttoUsd::from_nanos(2_000))),
        "the config's price"
    );
    assert_eq!(r.worst_price("anthropic/some-unreleased-model"), None, "unpriced, served at zero here");

    let refusing = router(&WILDCARDS.replace("allow_unpriced_models: true", "allow_unpriced_models: false"));
    assert!(matches!(refusing.lookup("anthropic/some-unreleased-model"), Err(GatewayError::ModelUnpriced(_))));
    assert!(refusing.lookup("anthropic/claude-sonnet-4-5-20250929").is_ok(), "priced models are still served");
}

#[test]
fn names_from_clients_never_reach_a_provider_url_unchecked() {
    let r = router(WILDCARDS);
    for bad in ["openai/../admin", "openai/a b", "openai/x?y=1", "gemini-x/../../files", "gemini-a/b"] {
        assert!(matches!(r.lookup(bad), Err(GatewayError::ModelNotFound(_))), "{bad}");
    }
    // A slash is fine where the model goes only into the body (OpenAI-compatible servers).
    assert_eq!(served_by(&r, "openai/meta-llama/Llama-3.1-8B").1, "meta-llama/Llama-3.1-8B");
    let long = format!("openai/{}", "m".repeat(300));
    assert!(r.lookup(&long).is_err());
}

#[test]
fn wildcard_models_carry_the_wildcard_for_access_fallbacks_and_metrics() {
    let r = router(WILDCARDS);
    assert!(r.groups_of("openai/gpt-4.1").contains(&"openai/*".to_owned()), "a key allowed `openai/*` may use it");
    assert!(r.knows("openai/*"), "a key's model list may name the wildcard");
    assert_eq!(r.fallbacks("openai/gpt-4.1"), ["gpt-4o"], "the wildcard's fallbacks");
    assert!(r.fallbacks("gpt-4o").is_empty(), "a listed model keeps its own");
    assert_eq!(r.metric_label("openai/gpt-4.1"), "openai/*");
    assert_eq!(r.metric_label("gpt-4o"), "gpt-4o");
    assert_eq!(r.deployments().filter(|d| d.upstream_model.contains('*')).count(), 4, "/model/info lists wildcards");
}

#[test]
fn wildcards_are_checked_at_load() {
    for (entry, message) in [
        ("{model_name: m, litellm_params: {model: 'openai/*', api_key: k}}", "must be one too"),
        ("{model_name: 'a*b*', litellm_params: {model: 'openai/*', api_key: k}}", "one `*`"),
        ("{model_name: '*', litellm_params: {model: '*/gpt-4o', api_key: k}}", "provider prefix cannot be a wildcard"),
    ] {
        let err = Config::parse(&format!("model_list:\n  - {entry}\n"), "t.yaml")
            .and_then(|c| Router::from_config(&c, "t.yaml").map(|_| c));
        let err = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(message), "{entry}: {err}");
    }
}

#[test]
fn custom_llm_provider_names_the_provider_of_a_bare_model() {
    let r = router(
        "model_list:\n  - model_name: local\n    litellm_params: {model: llama-3.1-8b, custom_llm_provider: openai, \
         api_base: 'http://vllm.test/v1', input_cost_per_token: 0, output_cost_per_token: 0}\n  \
         - model_name: prefixed\n    litellm_params: {model: openai/gpt-4o, custom_llm_provider: openai, api_key: k}\n",
    );
    assert_eq!(
        served_by(&r, "local"),
        ("openai".into(), "llama-3.1-8b".into(), "http://vllm.test/v1/chat/completions".into())
    );
    assert_eq!(served_by(&r, "prefixed").1, "gpt-4o", "a prefix already there is not doubled");
}

const WINDOWS: &str = "\
model_list:
  - model_name: small
    litellm_params: {model: openai/gpt-4o-mini, api_key: k}
    model_info: {max_input_tokens: 100}
  - model_name: small
    litellm_params: {model: openai/gpt-4o-mini, api_key: k, api_base: 'http://second.test/v1'}
    model_info: {max_input_tokens: 1000}
  - model_name: large
    litellm_params: {model: openai/gpt-4o, api_key: k}
router_settings:
  context_window_fallbacks: [{small: [large]}]
";

#[test]
fn prompts_skip_deployments_whose_context_window_they_exceed() {
    let r = router(WINDOWS);
    let counted = std::cell::Cell::new(0);
    let counted = &counted;
    let tokens = |n: u64| {
        move || {
            counted.set(counted.get() + 1);
            n
        }
    };
    assert_eq!(r.too_small_for("small", 90, &tokens(90)), (vec![], 2), "bytes bound tokens: nothing counted");
    assert_eq!(counted.get(), 0);
    assert_eq!(r.too_small_for("small", 5_000, &tokens(500)), (vec![0], 2));
    assert_eq!(counted.get(), 1, "counted once for the whole group");
    assert_eq!(r.too_small_for("small", 50_000, &tokens(5_000)), (vec![0, 1], 2));
    assert_eq!(r.too_small_for("large", 50_000, &tokens(5_000)), (vec![], 1));
    let gpt_4o = crate::limits::pricing::context_window("gpt-4o").unwrap_or(0);
    assert!(gpt_4o >= 100_000, "the catalogue knows gpt-4o's window: {gpt_4o}");
    assert_eq!(r.too_small_for("large", u64::MAX, &tokens(gpt_4o + 1)), (vec![0], 1), "the catalogue's window");
    let w = router(WILDCARDS);
    assert_eq!(w.too_small_for("openai/gpt-4o", u64::MAX, &tokens(gpt_4o + 1)).0, [0], "wildcards too");
    assert_eq!(w.too_small_for("openai/gpt-4o", u64::MAX, &tokens(gpt_4o)).0, Vec::<usize>::new());
    let err = r.context_window_exceeded("small", 5_000);
    assert!(err.to_string().contains("at most 1000 tokens"), "{err}");
    assert!(!r.policy.pre_call_checks);
    assert!(router(&format!("{WINDOWS}  enable_pre_call_checks: true\n")).policy.pre_call_checks);
}

/// A service account key made for the test.
fn vertex_key() -> String {
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let pem = String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    serde_json::json!({"client_email": "gw@p.iam.gserviceaccount.com", "private_key": pem, "project_id": "key-project"})
        .to_string()
}

#[test]
fn vertex_deployments_are_signed_in_priced_and_routed_by_publisher() {
    let yaml = format!(
        "\
environment_variables: {{VERTEX_KEY: '{}'}}
model_list:
  - model_name: claude
    litellm_params: {{model: vertex_ai/claude-3-5-sonnet@20240620, vertex_credentials: os.environ/VERTEX_KEY,
                     vertex_project: my-project, vertex_location: europe-west4}}
  - model_name: vertex/*
    litellm_params: {{model: vertex_ai/*, vertex_credentials: os.environ/VERTEX_KEY, api_base: 'http://mock.test/vertex'}}
gateway:
  allow_unpriced_models: true
",
        vertex_key()
    );
    let router = router(&yaml);
    let (provider, _, url) = served_by(&router, "claude");
    assert_eq!(provider, "vertex_ai");
    assert_eq!(
        url,
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/my-project/locations/europe-west4\
         /publishers/anthropic/models/claude-3-5-sonnet@20240620:rawPredict"
    );
    let (_, picked) = router.pick("claude", &[]).unwrap();
    assert!(picked.deployment.service_account.is_some() && picked.deployment.price.is_some());
    // A wildcard serves Gemini models under the same account, priced from the catalogue.
    let (_, picked) = router.pick("vertex/gemini-2.5-pro", &[]).unwrap();
    let url = picked.deployment.urls.get(crate::providers::Endpoint::ChatCompletions, true).unwrap().to_string();
    assert_eq!(
        url,
        "http://mock.test/vertex/v1/projects/key-project/locations/us-central1\
         /publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    );
    assert!(picked.deployment.service_account.is_some() && picked.deployment.price.is_some());

    // Without a key, the error names the field.
    let config = Config::parse(
        "model_list:\n  - model_name: g\n    litellm_params: {model: vertex_ai/gemini-2.5-pro}\n",
        "test.yaml",
    )
    .unwrap();
    let Err(err) = Router::from_config(&config, "test.yaml") else { panic!("a Vertex AI deployment without a key") };
    let err = err.to_string();
    assert!(err.contains("model_list[0].litellm_params.vertex_credentials"), "{err}");
}
