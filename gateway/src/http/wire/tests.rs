//! Unit tests of the wire types: parsing, bounds, usage and the units a request is charged.

use super::*;

/// OpenAI's token details (chat and Responses names), LiteLLM's Anthropic cache-write
/// count, and `null` counts some servers send.
#[test]
fn usage_details_are_read_as_parts_of_their_totals() {
    let chat = br#"{"usage":{"prompt_tokens":100,"completion_tokens":50,
        "prompt_tokens_details":{"cached_tokens":40,"audio_tokens":10,"image_tokens":null},
        "completion_tokens_details":{"reasoning_tokens":30,"audio_tokens":5,"accepted_prediction_tokens":1},
        "cache_creation_input_tokens":20}}"#;
    let usage: ResponseUsage = serde_json::from_slice(chat).unwrap();
    let t = usage.usage().unwrap().tokens();
    assert_eq!((t.prompt, t.completion, t.cached, t.cache_write), (100, 50, 40, 20));
    assert_eq!((t.audio_input, t.image_input, t.reasoning, t.audio_output), (10, 0, 30, 5));
    let responses = br#"{"response":{"usage":{"input_tokens":9,"output_tokens":8,
        "input_tokens_details":{"cached_tokens":1},"output_tokens_details":{"reasoning_tokens":7}}}}"#;
    let t = serde_json::from_slice::<ResponseUsage>(responses).unwrap().usage().unwrap().tokens();
    assert_eq!((t.prompt, t.completion, t.cached, t.reasoning), (9, 8, 1, 7));
    // A detail count beyond any real request makes the whole usage unbelievable.
    let absurd = br#"{"usage":{"prompt_tokens":1,"completion_tokens":1,"completion_tokens_details":{"reasoning_tokens":18446744073709551615}}}"#;
    assert!(serde_json::from_slice::<ResponseUsage>(absurd).unwrap().usage().is_none());
}

/// Every input shape OpenAI's moderation takes is read; the prompt counted is its text, and
/// its answer (which has no usage) is read as no usage at all.
#[test]
fn moderations_take_strings_and_parts() {
    for input in [r#""hello there""#, r#"["hello","there"]"#, r#"[{"type":"text","text":"hello there"}]"#] {
        let body = format!(r#"{{"model":"omni-moderation-latest","input":{input}}}"#);
        let req = ProxyRequest::parse(body.as_bytes(), Endpoint::Moderations).unwrap();
        assert!(!req.stream);
        assert!((2..=4).contains(&req.prompt_tokens_estimate()), "{input}");
    }
    let answer = br#"{"id":"modr-1","model":"omni-moderation-latest","results":[{"flagged":true}]}"#;
    assert!(serde_json::from_slice::<ResponseUsage>(answer).unwrap().usage().is_none());
    let mut generated = crate::metering::tokens::TextTally::default();
    crate::metering::tokens::answer_text(answer, &mut generated);
    assert_eq!(generated.tokens(), 0, "a moderation generates no text");
}

/// A rerank request is charged the search units its provider reports, else one per 100
/// documents; its documents are bounded.
#[test]
fn rerank_counts_documents_and_search_units() {
    let body = |n: usize| {
        let docs = vec!["d"; n];
        serde_json::json!({"model": "m", "query": "q", "documents": docs}).to_string()
    };
    let req = |n| ProxyRequest::parse(body(n).as_bytes(), Endpoint::Rerank);
    assert_eq!(req(1).unwrap().search_units(None), 1);
    assert_eq!(req(100).unwrap().search_units(None), 1);
    assert_eq!(req(101).unwrap().search_units(None), 2);
    assert_eq!(req(101).unwrap().search_units(Some(7)), 7);
    assert!(req(0).is_err());
    assert!(req(MAX_RERANK_DOCUMENTS as usize + 1).is_err());
    assert_eq!(req(MAX_RERANK_DOCUMENTS as usize).unwrap().documents, MAX_RERANK_DOCUMENTS);
    let chat = ProxyRequest::parse(br#"{"model":"m","messages":[]}"#, Endpoint::ChatCompletions).unwrap();
    assert_eq!(chat.search_units(Some(3)), 0);
    let answer = br#"{"results":[],"meta":{"billed_units":{"search_units":2}}}"#;
    assert_eq!(serde_json::from_slice::<ResponseUsage>(answer).unwrap().search_units(), Some(2));
    let absurd = br#"{"meta":{"billed_units":{"search_units":18446744073709551615}}}"#;
    assert_eq!(serde_json::from_slice::<ResponseUsage>(absurd).unwrap().search_units(), None);
}

/// Speech is charged by the characters of `input` (not its bytes), 1 to 4,096 of them.
#[test]
fn speech_counts_characters() {
    let req = |input: serde_json::Value| {
        let body = serde_json::json!({"model": "tts-1", "voice": "alloy", "input": input}).to_string();
        ProxyRequest::parse(body.as_bytes(), Endpoint::AudioSpeech)
    };
    let spoken = req("Café ✓".into()).unwrap();
    assert_eq!(
        (spoken.characters, spoken.units(None, None).characters, spoken.units(None, None).search_units),
        (6, 6, 0)
    );
    assert_eq!(req("é".repeat(4_096).into()).unwrap().characters, 4_096);
    for bad in [serde_json::json!(""), "x".repeat(4_097).into(), serde_json::json!(["hi"]), serde_json::json!(null)] {
        assert!(matches!(req(bad), Err(GatewayError::InvalidRequest { .. })));
    }
}

#[test]
fn only_generating_endpoints_reserve_output() {
    let worst =
        |body: &str, endpoint| ProxyRequest::parse(body.as_bytes(), endpoint).unwrap().worst_output_tokens(|| 1000);
    assert_eq!(worst(r#"{"model":"m","messages":[],"n":2}"#, Endpoint::ChatCompletions), 2000);
    assert_eq!(worst(r#"{"model":"m","messages":[],"max_tokens":7,"n":3}"#, Endpoint::ChatCompletions), 21);
    assert_eq!(worst(r#"{"model":"m","input":"x","max_tokens":7}"#, Endpoint::Moderations), 0);
    assert_eq!(worst(r#"{"model":"m","input":"x"}"#, Endpoint::Embeddings), 0);
}

#[test]
fn parses_and_rewrites_only_the_model() {
    let body = br#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"temperature":0.2,"user":"c-1"}"#;
    let req = ProxyRequest::parse(body, Endpoint::ChatCompletions).unwrap();
    assert_eq!(req.model, "fast");
    assert_eq!(req.user.as_deref(), Some("c-1"));
    assert_eq!((req.body_len, req.choices), (body.len(), 1));
    let three = ProxyRequest::parse(br#"{"model":"m","prompt":"x","n":2,"best_of":3}"#, Endpoint::Completions);
    assert_eq!(three.unwrap().choices, 3);
    assert!(!req.stream);
    let out: serde_json::Value = serde_json::from_slice(&req.upstream_body("gpt-4o-mini").unwrap()).unwrap();
    assert_eq!(out["model"], "gpt-4o-mini");
    assert_eq!(out["temperature"], 0.2);
    assert_eq!(out["messages"][0]["content"], "hi");
    assert!(out.get("stream_options").is_none());
}

#[test]
fn streams_ask_for_usage_and_remember_whether_the_client_did() {
    let body = br#"{"model":"m","messages":[],"stream":true,"stream_options":{"foo":1}}"#;
    let req = ProxyRequest::parse(body, Endpoint::ChatCompletions).unwrap();
    assert!(req.stream && !req.client_wants_usage);
    let out: serde_json::Value = serde_json::from_slice(&req.upstream_body("u").unwrap()).unwrap();
    assert_eq!(out["stream_options"]["include_usage"], true);
    assert_eq!(out["stream_options"]["foo"], 1);
    let body = br#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#;
    assert!(ProxyRequest::parse(body, Endpoint::ChatCompletions).unwrap().client_wants_usage);
}

#[test]
fn rejects_bad_bodies_with_the_param() {
    for (body, endpoint, param) in [
        (&br#"{"messages":[]}"#[..], Endpoint::ChatCompletions, Some("model")),
        (br#"{"model":1,"messages":[]}"#, Endpoint::ChatCompletions, Some("model")),
        (br#"{"model":"m","messages":"hi"}"#, Endpoint::ChatCompletions, Some("messages")),
        (br#"{"model":"m","messages":[],"stream":"yes"}"#, Endpoint::ChatCompletions, Some("stream")),
        (br#"{"model":"m","messages":[],"max_tokens":-1}"#, Endpoint::ChatCompletions, Some("max_tokens")),
        (br#"{"model":"m","messages":[],"n":0}"#, Endpoint::ChatCompletions, Some("n")),
        (br#"{"model":"m","prompt":"x","best_of":"3"}"#, Endpoint::Completions, Some("best_of")),
        (br#"{"model":"m"}"#, Endpoint::Embeddings, Some("input")),
        (br#"{"model":"m","input":"x","stream":true}"#, Endpoint::Embeddings, Some("stream")),
        (br#"{"model":"m"}"#, Endpoint::Moderations, Some("input")),
        (br#"{"model":"m","input":{"text":"x"}}"#, Endpoint::Moderations, Some("input")),
        (br#"{"model":"m","input":"x","stream":true}"#, Endpoint::Moderations, Some("stream")),
        (br#"{"model":"m","prompt":5}"#, Endpoint::Completions, Some("prompt")),
        (br#"{"model":"m""#, Endpoint::ChatCompletions, None),
        (br#"[1,2]"#, Endpoint::ChatCompletions, None),
    ] {
        match ProxyRequest::parse(body, endpoint) {
            Err(GatewayError::InvalidRequest { param: p, .. }) => assert_eq!(p, param, "{body:?}"),
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(_) => panic!("accepted {:?}", String::from_utf8_lossy(body)),
        }
    }
}

/// A body nested deeper than the JSON reader follows passes the syntax check; translating
/// it is a 400 naming the field, and its prompt still counts, by its bytes.
#[test]
fn deeply_nested_fields_are_refused_by_name_and_still_counted() {
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi","x":{deep}}}]}}"#);
    let req = ProxyRequest::parse(body.as_bytes(), Endpoint::ChatCompletions).unwrap();
    match req.to_value() {
        Err(GatewayError::InvalidField { field, .. }) => assert_eq!(field, "messages"),
        other => panic!("expected a 400 naming `messages`, got {other:?}"),
    }
    let messages_bytes = body.len() as u64 - r#"{"model":"m","messages":}"#.len() as u64;
    assert_eq!(req.prompt_tokens_estimate(), messages_bytes.div_ceil(4));
}

#[test]
fn the_output_limit_is_one_value_whatever_field_gives_it() {
    let limit = |body: &str| ProxyRequest::parse(body.as_bytes(), Endpoint::ChatCompletions).map(|r| r.max_tokens);
    assert_eq!(limit(r#"{"model":"m","messages":[],"max_tokens":7}"#).unwrap(), Some(7));
    assert_eq!(limit(r#"{"model":"m","messages":[],"max_output_tokens":9}"#).unwrap(), Some(9));
    assert_eq!(limit(r#"{"model":"m","messages":[],"max_tokens":5,"max_completion_tokens":5}"#).unwrap(), Some(5));
    assert_eq!(limit(r#"{"model":"m","messages":[],"max_tokens":null}"#).unwrap(), None);
    // A small limit in one field and a large one in another would reserve the small one
    // while a provider honours the large one: refused.
    for body in [
        r#"{"model":"m","messages":[],"max_completion_tokens":1,"max_tokens":100000}"#,
        r#"{"model":"m","messages":[],"max_tokens":1,"max_output_tokens":100000}"#,
    ] {
        match limit(body) {
            Err(GatewayError::InvalidRequest { param: Some(p), message }) => {
                assert!(OUTPUT_LIMIT_FIELDS.contains(&p) && message.contains("disagree"), "{message}")
            }
            other => panic!("{body}: {:?}", other.map(|_| ())),
        }
    }
    assert!(limit(r#"{"model":"m","messages":[],"max_tokens":1000000001}"#).is_err());
}

#[test]
fn ids_and_names_from_the_body_are_bounded() {
    let field_of = |body: String| match ProxyRequest::parse(body.as_bytes(), Endpoint::ChatCompletions) {
        Err(GatewayError::InvalidField { field, .. }) => field,
        Err(GatewayError::InvalidRequest { param, .. }) => param.unwrap_or_default().to_owned(),
        Err(e) => panic!("{e:?}"),
        Ok(_) => "accepted".to_owned(),
    };
    let user = |u: &str| field_of(format!(r#"{{"model":"m","messages":[],"user":{}}}"#, serde_json::json!(u)));
    assert_eq!(user(&"c".repeat(65_500)), "user");
    assert_eq!(user(&"c".repeat(70_000)), "user");
    assert_eq!(user("a/model/gpt-4o"), "user");
    assert_eq!(user("tab	here"), "user");
    assert_eq!(user("cust-7@example.com"), "accepted");
    assert_eq!(user(""), "accepted", "an empty user is no customer");
    let model = "m".repeat(300);
    assert_eq!(field_of(format!(r#"{{"model":"{model}","messages":[]}}"#)), "model");
    let metadata = "x".repeat(20_000);
    assert_eq!(field_of(format!(r#"{{"model":"m","messages":[],"metadata":{{"a":"{metadata}"}}}}"#)), "metadata");
    assert_eq!(field_of(r#"{"model":"m","messages":[],"metadata":[1]}"#.to_owned()), "metadata");
}

#[test]
fn absurd_usage_from_a_provider_is_not_believed() {
    let absurd: ResponseUsage =
        serde_json::from_str(r#"{"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":1}}"#).unwrap();
    assert_eq!(absurd.usage(), None);
    let big: ResponseUsage =
        serde_json::from_str(r#"{"usage":{"prompt_tokens":1000000000,"completion_tokens":1000000000}}"#).unwrap();
    assert!(big.usage().is_some(), "the bound itself is believed");
}

#[test]
fn reads_usage_of_every_shape() {
    let chat: ResponseUsage = serde_json::from_str(
        r#"{"model":"x","usage":{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":1}}}"#,
    )
    .unwrap();
    assert_eq!(chat.usage().map(|u| (u.prompt_tokens, u.completion_tokens)), Some((3, 4)));
    let responses: ResponseUsage = serde_json::from_str(
        r#"{"type":"response.completed","response":{"model":"y","usage":{"input_tokens":5,"output_tokens":6,"input_tokens_details":{"cached_tokens":2}}}}"#,
    )
    .unwrap();
    let u = responses.usage().unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens, u.prompt_tokens_details.unwrap().cached_tokens), (5, 6, 2));
    assert_eq!(responses.model(), Some("y"));
}
