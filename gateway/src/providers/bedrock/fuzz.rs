//! Fuzz tests of what Bedrock sends back: any bytes as an event-stream, and any message
//! payloads, decode or fail cleanly, never panic, and stay within their bounds; any Converse
//! answer translates into one metering reads, with counts never below Bedrock's.

use super::converse::converse_to_chat;
use super::eventstream::{encode, Decoder, MAX_MESSAGE_BYTES};
use super::stream::ConverseToChatStream;
use super::tests::answer_events;
use proptest::prelude::*;
use serde_json::{json, Value};
use tollgate_fuzzing::{json as gen, run};

/// Words of Bedrock's answers, for the structure-aware generators.
pub(crate) const WORDS: &[&str] = &[
    "output",
    "message",
    "content",
    "text",
    "toolUse",
    "toolUseId",
    "input",
    "stopReason",
    "usage",
    "inputTokens",
    "outputTokens",
    "cacheReadInputTokens",
    "cacheWriteInputTokens",
    "end_turn",
    "tool_use",
];

/// Known-good Converse answers.
pub(crate) fn answers() -> Vec<Value> {
    vec![
        json!({"output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}}, "stopReason": "end_turn",
               "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}}),
        json!({"output": {"message": {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t", "name": "f", "input": {"a": [1]}}}]}},
               "stopReason": "tool_use", "usage": {"inputTokens": 9, "outputTokens": 5, "cacheReadInputTokens": 2, "cacheWriteInputTokens": 4}}),
    ]
}

fn converse_to_chat_holds(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(answer) = serde_json::from_slice::<Value>(bytes) else { return Ok(()) };
    let chat = converse_to_chat(&answer, "m");
    prop_assert!(chat["choices"][0]["finish_reason"].is_string());
    prop_assert!(serde_json::to_vec(&chat).map_or(0, |v| v.len()) <= 4 * bytes.len() + 1024);
    let read = serde_json::from_value::<crate::http::wire::ResponseUsage>(chat);
    prop_assert!(read.is_ok(), "metering cannot read the translated answer: {:?}", read.err());
    if let Some(usage) = read.ok().and_then(|r| r.usage) {
        let count = |key: &str| answer.pointer(&format!("/usage/{key}")).and_then(Value::as_u64).unwrap_or(0);
        prop_assert!(usage.prompt_tokens >= count("inputTokens"));
        prop_assert_eq!(usage.completion_tokens, count("outputTokens"));
    }
    Ok(())
}

/// Known-good streams, mutated: bytes flipped, cut, spliced, or an event's payload replaced.
fn streams() -> BoxedStrategy<Vec<u8>> {
    let good = answer_events().concat();
    let len = good.len();
    prop_oneof![
        prop::collection::vec((0..len, any::<u8>()), 0..8).prop_map(move |flips| {
            let mut bytes = answer_events().concat();
            for (at, value) in flips {
                bytes[at] = value;
            }
            bytes
        }),
        (0..len).prop_map(|cut| answer_events().concat()[..cut].to_vec()),
        prop::collection::vec(any::<u8>(), 0..256),
        (any::<String>(), "[a-zA-Z]{0,20}", prop::sample::select(vec!["event", "exception", "error"])).prop_map(
            |(payload, kind, message)| {
                let mut bytes = answer_events()[0].clone();
                bytes.extend(encode(&[(":message-type", message), (":event-type", &kind)], payload.as_bytes()));
                bytes
            }
        ),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(run::config(1_000))]

    #[test]
    fn converse_answers_translate_and_keep_their_counts(bytes in gen::bytes(answers(), WORDS)) {
        run::watchdog(move || converse_to_chat_holds(&bytes))?;
    }

    /// Any bytes, in any reads: messages or a clean error, and the output of each message is
    /// bounded by its size.
    #[test]
    fn hostile_event_streams_decode_or_fail_cleanly(bytes in streams(), read in 1usize..64) {
        run::watchdog(move || {
            let mut decoder = Decoder::default();
            let mut translator = ConverseToChatStream::new("m");
            for chunk in bytes.chunks(read) {
                decoder.extend(chunk);
                loop {
                    match decoder.next_message() {
                        Ok(Some(message)) => {
                            prop_assert!(message.payload.len() <= MAX_MESSAGE_BYTES);
                            let out: usize = translator.message(&message).iter().map(|b| b.len()).sum();
                            prop_assert!(out <= 4 * message.payload.len() + 1024, "{} bytes out", out);
                        }
                        Ok(None) => break,
                        Err(_) => return Ok(()),
                    }
                }
            }
            translator.end();
            Ok(())
        })?;
    }
}
