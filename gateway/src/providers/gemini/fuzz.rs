//! Property and fuzz tests of every Gemini translation that reads outside input: OpenAI requests
//! sent to Gemini (`chat_request_to_generate`, with hostile `tools` and `response_format` JSON
//! schemas: `$ref` chains that multiply, recursion, wrong types), Gemini's answers
//! (`generate_response_to_chat`), error bodies (`error_to_openai`) and its streams
//! (`GenerateToChatStream`), raw and structure-aware.

use super::*;
use crate::http::wire::fuzz as openai;
use crate::sse::fuzz::{feed, frames, openai_chunks_hold, translate};
use crate::sse::MAX_EVENT_BYTES;
use proptest::prelude::*;
use tollgate_fuzzing::chunks::chunking;
use tollgate_fuzzing::{json as gen, run, sse};

/// Words of Gemini's API and of JSON schemas.
pub(crate) const WORDS: &[&str] = &[
    "candidates",
    "content",
    "role",
    "model",
    "user",
    "parts",
    "text",
    "thought",
    "functionCall",
    "functionResponse",
    "name",
    "args",
    "id",
    "finishReason",
    "STOP",
    "MAX_TOKENS",
    "SAFETY",
    "RECITATION",
    "index",
    "usageMetadata",
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "cachedContentTokenCount",
    "totalTokenCount",
    "responseId",
    "modelVersion",
    "promptFeedback",
    "blockReason",
    "error",
    "code",
    "message",
    "status",
    "details",
    "reason",
    "INVALID_ARGUMENT",
    "RESOURCE_EXHAUSTED",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "DEADLINE_EXCEEDED",
    "API_KEY_INVALID",
    "The input token count exceeds the maximum",
    "inlineData",
    "mimeType",
    "$defs",
    "definitions",
    "$ref",
    "#/$defs/a",
    "#/$defs/d0",
    "#/definitions/a",
    "type",
    "object",
    "array",
    "string",
    "integer",
    "null",
    "properties",
    "items",
    "anyOf",
    "oneOf",
    "const",
    "enum",
    "required",
    "additionalProperties",
    "description",
    "nullable",
    "default",
    "$schema",
];

/// Known-good Gemini answers, stream events and errors.
pub(crate) fn answers() -> Vec<Value> {
    vec![
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}],
               "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1, "totalTokenCount": 6},
               "modelVersion": "gemini-2.0-flash", "responseId": "abc"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [
                   {"text": "think", "thought": true}, {"text": "lo"},
                   {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
               "finishReason": "STOP", "index": 0}],
               "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 7, "thoughtsTokenCount": 3,
                                 "cachedContentTokenCount": 2}}),
        json!({"candidates": [{"content": {"parts": [{"text": "a"}]}, "index": 1, "finishReason": "MAX_TOKENS"}]}),
        json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 9}}),
        // Absurd counts, and an id longer than any real one.
        json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": u64::MAX, "candidatesTokenCount": u64::MAX,
                                 "thoughtsTokenCount": u64::MAX, "cachedContentTokenCount": u64::MAX},
               "responseId": "r".repeat(300)}),
        json!({"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
               "details": [{"reason": "RATE_LIMIT_EXCEEDED"}]}}),
        json!([{"error": {"code": 400, "message": "API key not valid", "status": "INVALID_ARGUMENT",
                "details": [{"reason": "API_KEY_INVALID"}]}}]),
    ]
}

/// JSON schemas: keywords Gemini takes and drops, local `$ref`s, nullable types, nesting.
fn schema() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(json!({"type": "string", "description": "d", "format": "date"})),
        Just(json!({"type": ["integer", "null"], "minimum": 0})),
        Just(json!({"$ref": "#/$defs/a"})),
        Just(json!({"$ref": "#/definitions/a", "description": "beside a $ref"})),
        Just(json!({"$ref": "#/$defs/missing"})),
        gen::value(WORDS).prop_map(|v| json!({"const": v})),
        gen::value(WORDS),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::btree_map("[a-z]{1,6}", inner.clone(), 0..6).prop_map(|properties| {
                let required: Vec<&String> = properties.keys().collect();
                json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
            }),
            inner.clone().prop_map(|items| json!({"type": "array", "items": items})),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| json!({"anyOf": v})),
            prop::collection::vec(inner, 0..4).prop_map(|mut v| {
                v.push(json!({"type": "null"}));
                json!({"oneOf": v})
            }),
        ]
    })
    .boxed()
}

/// `$defs` whose every level refers to the one below `width` times (`width^levels` nodes once
/// inlined), or refers to itself.
fn multiplying_defs() -> BoxedStrategy<Value> {
    (1usize..24, 1usize..12, any::<bool>())
        .prop_map(|(levels, width, recursive)| {
            let mut defs = serde_json::Map::new();
            defs.insert("d0".into(), json!({"type": "string", "description": "x".repeat(64)}));
            for level in 1..=levels {
                let target = if recursive { level } else { level - 1 };
                let properties: Map<String, Value> =
                    (0..width).map(|i| (format!("p{i}"), json!({"$ref": format!("#/$defs/d{target}")}))).collect();
                defs.insert(format!("d{level}"), json!({"type": "object", "properties": properties}));
            }
            json!({"type": "object", "properties": {"root": {"$ref": format!("#/$defs/d{levels}")}}, "$defs": defs})
        })
        .boxed()
}

/// Chat requests whose tools and structured output carry generated schemas (with the `$defs` of
/// `defs` beside them).
fn schema_requests() -> BoxedStrategy<Value> {
    let parameters = (prop_oneof![schema(), multiplying_defs()], prop_oneof![Just(Value::Null), multiplying_defs()])
        .prop_map(|(mut schema, defs)| {
            if let (Some(schema), Some(defs)) = (schema.as_object_mut(), defs.get("$defs")) {
                schema.insert("$defs".into(), defs.clone());
                schema.entry("properties").or_insert_with(|| json!({"x": {"$ref": "#/$defs/d1"}}));
            }
            schema
        });
    (prop::collection::vec(parameters.clone(), 0..4), prop::option::of(parameters), gen::value(WORDS))
        .prop_map(|(tools, structured, choice)| {
            let tools: Vec<Value> = tools
                .into_iter()
                .enumerate()
                .map(|(i, p)| json!({"type": "function", "function": {"name": format!("f{i}"), "parameters": p}}))
                .collect();
            let mut body = json!({"model": "g", "messages": [{"role": "user", "content": "x"}], "tools": tools});
            if let Some(schema) = structured {
                body["response_format"] =
                    json!({"type": "json_schema", "json_schema": {"name": "s", "schema": schema}});
            }
            if !choice.is_null() {
                body["tool_choice"] = choice;
            }
            body
        })
        .boxed()
}

/// Schema nodes (objects) under `value`.
fn objects(value: &Value) -> usize {
    match value {
        Value::Object(o) => 1 + o.values().map(objects).sum::<usize>(),
        Value::Array(a) => a.iter().map(objects).sum(),
        _ => 0,
    }
}

fn size(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(0, |v| v.len())
}

fn chat_to_generate_holds(body: &Value) -> Result<(), TestCaseError> {
    let out = match chat_request_to_generate(body) {
        Ok(out) => out,
        Err(GatewayError::InvalidRequest { .. }) => return Ok(()),
        Err(other) => return Err(TestCaseError::fail(format!("not a 400: {other:?}"))),
    };
    let contents = out["contents"].as_array().cloned().unwrap_or_default();
    prop_assert!(!contents.is_empty());
    for pair in contents.windows(2) {
        prop_assert!(pair[0]["role"] != pair[1]["role"], "roles do not alternate: {:?}", pair);
    }
    for turn in &contents {
        prop_assert!(turn["role"] == "user" || turn["role"] == "model");
        prop_assert!(turn["parts"].as_array().is_some_and(|p| !p.is_empty()));
    }
    // Schemas stay within the translation's bounds, however their `$ref`s multiply.
    let mut schemas = out["generationConfig"]["responseSchema"].clone();
    let declarations = out["tools"][0]["functionDeclarations"].as_array().cloned().unwrap_or_default();
    let parameters: Vec<Value> = declarations.iter().map(|d| d["parameters"].clone()).collect();
    schemas = json!([schemas, parameters]);
    prop_assert!(objects(&schemas) <= MAX_SCHEMA_NODES, "{} schema nodes", objects(&schemas));
    prop_assert!(size(&out) <= 16 * size(body) + MAX_SCHEMA_BYTES + 64 * MAX_SCHEMA_NODES);
    Ok(())
}

fn generate_to_chat_holds(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(resp) = serde_json::from_slice::<Value>(bytes) else { return Ok(()) };
    let chat = generate_response_to_chat(&resp, "gemini-upstream");
    prop_assert_eq!(&chat["model"], "gemini-upstream");
    for choice in chat["choices"].as_array().cloned().unwrap_or_default() {
        prop_assert_eq!(&choice["message"]["role"], "assistant");
        prop_assert!(choice["finish_reason"].is_string());
    }
    prop_assert!(size(&chat) <= 16 * bytes.len() + 4096);
    // Metering reads the translated answer, and the counts it bills are never below Gemini's.
    let read = serde_json::from_value::<crate::http::wire::ResponseUsage>(chat);
    prop_assert!(read.is_ok(), "metering cannot read the translated answer: {:?}", read.err());
    if let Some(u) = read.ok().and_then(|r| r.usage) {
        let reported = |key: &str| resp.pointer(&format!("/usageMetadata/{key}")).and_then(Value::as_u64);
        prop_assert_eq!(Some(u.prompt_tokens), reported("promptTokenCount").or(Some(0)));
        for key in ["candidatesTokenCount", "thoughtsTokenCount"] {
            prop_assert!(reported(key).is_none_or(|n| u.completion_tokens >= n), "completion below {}", key);
        }
    }
    Ok(())
}

fn error_holds(bytes: &[u8]) -> Result<(), TestCaseError> {
    let envelope = error_to_openai(bytes);
    let error = &envelope["error"];
    prop_assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", envelope);
    prop_assert!(error["type"].is_string() && error.get("param").is_some() && error.get("code").is_some());
    prop_assert!(size(&envelope) <= 8 * bytes.len() + 1024);
    Ok(())
}

/// Gemini streams: the known-good events in order, some mutated, and events in any order.
pub(crate) fn streams() -> BoxedStrategy<Vec<sse::Event>> {
    sse::streams(answers(), WORDS, &["message"], false)
}

proptest! {
    #![proptest_config(run::config(1_000))]

    #[test]
    fn openai_requests_are_refused_or_translated_for_gemini(bytes in gen::bytes(openai::chat_requests(), openai::WORDS)) {
        run::watchdog(move || match serde_json::from_slice::<Value>(&bytes) {
            Ok(body) => chat_to_generate_holds(&body),
            Err(_) => Ok(()),
        })?;
    }

    #[test]
    fn gemini_answers_translate_and_keep_their_counts(bytes in gen::bytes(answers(), WORDS)) {
        run::watchdog(move || generate_to_chat_holds(&bytes))?;
    }

    #[test]
    fn error_bodies_become_envelopes(bytes in gen::bytes(answers(), WORDS)) {
        run::watchdog(move || error_holds(&bytes))?;
    }

}

proptest! {
    // A case is a whole stream of up to 32 events: fewer cases.
    #![proptest_config(run::config(256))]

    /// Gemini events, one at a time: each event's output is bounded by its own size, and the
    /// whole is OpenAI chunks, `[DONE]` last.
    #[test]
    fn gemini_streams_become_bounded_openai_chunks(events in streams()) {
        run::watchdog(move || {
            let out = feed(&mut GenerateToChatStream::new("gemini-upstream"), &events)?;
            openai_chunks_hold(&frames(&out).map_err(TestCaseError::fail)?, false)
        })?;
    }

    /// The same as bytes in arbitrary reads through `TranslatedStream`.
    #[test]
    fn translated_byte_streams_stay_well_formed(
        bytes in prop_oneof![sse::framed(streams()), sse::soup()],
        how in chunking(),
        limit in prop_oneof![3 => Just(MAX_EVENT_BYTES), 1 => 16usize..512],
    ) {
        run::watchdog(move || {
            let done = translate(how.split(&bytes), GenerateToChatStream::new("gemini-upstream"), limit)?;
            openai_chunks_hold(&frames(&done.out).map_err(TestCaseError::fail)?, false)
        })?;
    }
}

proptest! {
    // Schemas that multiply take the translation to its node bound: fewer cases.
    #![proptest_config(run::config(256))]

    /// Hostile `tools` and `response_format` schemas: refused or translated within the bounds.
    #[test]
    fn hostile_schemas_are_refused_or_translated_within_bounds(body in schema_requests()) {
        run::watchdog(move || match gen::as_read(&body) {
            Some(body) => chat_to_generate_holds(&body),
            None => Ok(()),
        })?;
    }
}
