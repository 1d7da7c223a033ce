use super::*;
use crate::http::wire::ProxyRequest;
use crate::providers::Endpoint;
use crate::tenancy::auth::Principal;
use tollgate_schemas::tenancy::KeyRecord;

const ANSWER: &[u8] = br#"{"id":"c1","object":"chat.completion","created":1,"model":"m",
    "choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],
    "usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#;

fn principal(key: &str, team: Option<&str>) -> Principal {
    Principal::of_key(KeyRecord { key_id: key.into(), team_id: team.map(str::to_owned), ..KeyRecord::default() })
}

fn cache(params: CacheParams) -> ResponseCache {
    ResponseCache::new(params).unwrap()
}

fn plan(cache: &ResponseCache, who: &Principal, body: &str) -> Plan {
    let request = ProxyRequest::parse(body.as_bytes(), Endpoint::ChatCompletions).unwrap();
    let (request, plan) = key::prepare(Some(cache), who, request).unwrap();
    assert!(!request.fields().contains("cache"), "the cache field never goes upstream");
    plan.unwrap()
}

const PROMPT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn tokens() -> Tokens {
    Tokens { prompt: 10, completion: 5, ..Tokens::default() }
}

#[tokio::test]
async fn a_stored_answer_is_served_to_the_same_request_of_the_same_team() {
    let c = cache(CacheParams::default());
    let alice = principal("k1", Some("team-a"));
    let p = plan(&c, &alice, PROMPT);
    assert!(c.lookup(&p, "m").await.is_none());
    c.store(&p, &Bytes::from_static(ANSWER), NanoUsd(1000), tokens(), Some("m-1")).await;
    let streamed = plan(&c, &alice, r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#);
    let hit = c.lookup(&streamed, "m").await.expect("a streamed request is answered from a whole answer");
    assert_eq!((hit.prompt_tokens, hit.completion_tokens, hit.cost), (10, 5, NanoUsd(1000)));
    let same_team = plan(&c, &principal("k2", Some("team-a")), PROMPT);
    assert!(c.lookup(&same_team, "m").await.is_some());
    let other_team = plan(&c, &principal("k3", Some("team-b")), PROMPT);
    assert!(c.lookup(&other_team, "m").await.is_none(), "teams never share by default");
    let no_team = plan(&c, &principal("k1", None), PROMPT);
    assert!(c.lookup(&no_team, "m").await.is_none());
    let other_prompt = plan(&c, &alice, r#"{"model":"m","messages":[{"role":"user","content":"bye"}]}"#);
    assert!(c.lookup(&other_prompt, "m").await.is_none());
    let other_model = plan(&c, &alice, r#"{"model":"n","messages":[{"role":"user","content":"hi"}]}"#);
    assert!(c.lookup(&other_model, "m").await.is_none());
}

#[tokio::test]
async fn sharing_across_teams_is_explicit() {
    let c = cache(CacheParams { share_across_teams: true, ..CacheParams::default() });
    let p = plan(&c, &principal("k1", Some("team-a")), PROMPT);
    c.store(&p, &Bytes::from_static(ANSWER), NanoUsd(1000), tokens(), None).await;
    assert!(c.lookup(&plan(&c, &principal("k3", Some("team-b")), PROMPT), "m").await.is_some());
}

#[tokio::test]
async fn request_controls_are_honoured() {
    let c = cache(CacheParams::default());
    let who = principal("k1", Some("team-a"));
    let no_store =
        plan(&c, &who, r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"cache":{"no-store":true}}"#);
    assert_eq!(no_store.key, plan(&c, &who, PROMPT).key, "controls are not part of the key");
    c.store(&no_store, &Bytes::from_static(ANSWER), NanoUsd(1), tokens(), None).await;
    assert!(c.lookup(&plan(&c, &who, PROMPT), "m").await.is_none());
    c.store(&plan(&c, &who, PROMPT), &Bytes::from_static(ANSWER), NanoUsd(1), tokens(), None).await;
    let no_cache =
        plan(&c, &who, r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"cache":{"no-cache":true}}"#);
    assert!(c.lookup(&no_cache, "m").await.is_none());
    let other_ns =
        plan(&c, &who, r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"cache":{"namespace":"x"}}"#);
    assert!(c.lookup(&other_ns, "m").await.is_none());
    let bad = ProxyRequest::parse(br#"{"model":"m","messages":[],"cache":{"ttl":0}}"#, Endpoint::ChatCompletions);
    assert!(key::prepare(Some(&c), &who, bad.unwrap()).is_err());
}

#[tokio::test]
async fn errors_and_oversized_answers_are_never_kept() {
    let c = cache(CacheParams { max_entry_bytes: 64, max_memory_bytes: 1 << 20, ..CacheParams::default() });
    let who = principal("k1", Some("team-a"));
    let p = plan(&c, &who, PROMPT);
    c.store(&p, &Bytes::from_static(ANSWER), NanoUsd(1), tokens(), None).await;
    assert!(c.lookup(&p, "m").await.is_none(), "larger than max_entry_bytes");
    let c = cache(CacheParams::default());
    let p = plan(&c, &who, PROMPT);
    c.store(&p, &Bytes::from_static(br#"{"error":{"message":"x"}}"#), NanoUsd(1), tokens(), None).await;
    assert!(c.lookup(&p, "m").await.is_none(), "not a chat completion");
}

#[test]
fn a_hit_costs_its_percentage_rounded_down() {
    assert_eq!(hit_cost(NanoUsd(1000), 0), NanoUsd(0));
    assert_eq!(hit_cost(NanoUsd(999), 10), NanoUsd(99));
    assert_eq!(hit_cost(NanoUsd(i64::MAX), 100), NanoUsd(i64::MAX));
    assert_eq!(hit_cost(NanoUsd(-5), 50), NanoUsd(0));
}

#[test]
fn only_chat_completions_are_cached() {
    let c = cache(CacheParams::default());
    let who = principal("k1", None);
    let embed = ProxyRequest::parse(br#"{"model":"m","input":"x"}"#, Endpoint::Embeddings).unwrap();
    assert!(key::prepare(Some(&c), &who, embed).unwrap().1.is_none());
    let off = cache(CacheParams { supported_call_types: Some(vec!["embedding".into()]), ..CacheParams::default() });
    let chat = ProxyRequest::parse(PROMPT.as_bytes(), Endpoint::ChatCompletions).unwrap();
    assert!(key::prepare(Some(&off), &who, chat).unwrap().1.is_none());
}

/// LiteLLM's `s-maxage`: only an entry stored at most that many seconds ago answers.
#[tokio::test]
async fn s_maxage_refuses_older_entries() {
    let c = cache(CacheParams::default());
    let who = principal("k1", Some("team-a"));
    let p = plan(&c, &who, PROMPT);
    let entry = |age: u64| Entry {
        body: Bytes::from_static(ANSWER),
        cost: NanoUsd(1),
        prompt_tokens: 1,
        completion_tokens: 1,
        served_model: None,
        stored_at: now_secs() - age,
    };
    let Backend::Local(store) = &c.backend else { panic!("a local cache") };
    store.put(&p.key, entry(100), Duration::from_secs(600)).await;
    let with_age = |age: u64| {
        let body =
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"cache":{{"s-maxage":{age}}}}}"#);
        plan(&c, &who, &body)
    };
    assert!(c.lookup(&with_age(30), "m").await.is_none(), "stored 100 s ago, at most 30 s accepted");
    assert!(c.lookup(&with_age(300), "m").await.is_some());
    assert!(c.lookup(&p, "m").await.is_some(), "no s-maxage: any age");
}

/// The plan of `body` for `who` once the guardrails of `yaml` (a `guardrails:` list) ran on it.
async fn guarded_plan(cache: &ResponseCache, who: &Principal, body: &str, yaml: &str) -> Plan {
    let list: Vec<crate::guardrails::config::GuardrailConfig> = serde_yaml::from_str(yaml).unwrap();
    let set = crate::guardrails::config::build(&list, &std::collections::HashMap::new(), "test").unwrap();
    let request = ProxyRequest::parse(body.as_bytes(), Endpoint::ChatCompletions).unwrap();
    let (request, plan) = key::prepare(Some(cache), who, request).unwrap();
    let client = reqwest::Client::new();
    let (rebuilt, applied) = crate::guardrails::before_call(&set, &client, who, &request, "r1").await.unwrap();
    key::after_guardrails(plan.unwrap(), cache, who, rebuilt.as_ref().unwrap_or(&request), &applied)
}

const PII: &str =
    "- {guardrail_name: pii, litellm_params: {guardrail: pii_masking, mode: pre_call, default_on: true}}\n";

#[tokio::test]
async fn a_guarded_request_is_keyed_masked_and_by_its_guardrails() {
    let c = cache(CacheParams::default());
    let alice = principal("k1", Some("team-a"));
    let ann = r#"{"model":"m","messages":[{"role":"user","content":"mail ann@example.com"}]}"#;
    let bob = r#"{"model":"m","messages":[{"role":"user","content":"mail bob@example.org"}]}"#;
    let literal = r#"{"model":"m","messages":[{"role":"user","content":"mail <EMAIL_1>"}]}"#;
    let masked = guarded_plan(&c, &alice, ann, PII).await;
    // The key is the masked prompt's: another address is the same request to the provider.
    assert_eq!(masked.key, guarded_plan(&c, &alice, bob, PII).await.key);
    // Never the unguarded request that reads the same, nor the same request under other
    // guardrail settings (PII masking of cards only: the address is not masked) or more of them.
    assert_ne!(masked.key, plan(&c, &alice, literal).key);
    assert_ne!(masked.key, plan(&c, &alice, ann).key);
    let cards = "- {guardrail_name: pii, litellm_params: {guardrail: pii_masking, mode: pre_call, default_on: true, pii_entities: [CREDIT_CARD]}}\n";
    assert_ne!(masked.key, guarded_plan(&c, &alice, literal, cards).await.key);
    let more = format!("{PII}- {{guardrail_name: w, litellm_params: {{guardrail: banned_words, mode: post_call, default_on: true, banned_words: [x]}}}}\n");
    assert_ne!(masked.key, guarded_plan(&c, &alice, ann, &more).await.key);
    // A guardrail's API key is not part of its identity.
    let ext = |key: &str| {
        format!("- {{guardrail_name: e, litellm_params: {{guardrail: generic_guardrail_api, mode: post_call, default_on: true, api_base: \"http://127.0.0.1:9\", api_key: {key}}}}}\n")
    };
    assert_eq!(
        guarded_plan(&c, &alice, ann, &ext("k-1")).await.key,
        guarded_plan(&c, &alice, ann, &ext("k-2")).await.key
    );
    // No guardrail run: the key is the unguarded one.
    assert_eq!(guarded_plan(&c, &alice, ann, "[]").await.key, plan(&c, &alice, ann).key);
}
