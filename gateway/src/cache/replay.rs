//! A stored chat completion replayed as an OpenAI stream: for each choice one chunk with the
//! whole message as its delta (content, refusal, tool calls with their index) and one with its
//! `finish_reason`, then the usage chunk when the client asked for it, then `[DONE]`.

use bytes::Bytes;
use serde_json::{json, Map, Value};

/// The SSE events of `completion` (an OpenAI chat completion body); `None` when it is not one.
pub fn chunks(completion: &[u8], with_usage: bool) -> Option<Vec<Bytes>> {
    let whole: Value = serde_json::from_slice(completion).ok()?;
    let choices = whole.get("choices")?.as_array()?;
    let head = |choices: Value| {
        let mut chunk = Map::new();
        for field in ["id", "created", "model", "system_fingerprint"] {
            if let Some(v) = whole.get(field) {
                chunk.insert(field.to_owned(), v.clone());
            }
        }
        chunk.insert("object".to_owned(), json!("chat.completion.chunk"));
        chunk.insert("choices".to_owned(), choices);
        Value::Object(chunk)
    };
    let mut events = Vec::with_capacity(2 * choices.len() + 2);
    for (i, choice) in choices.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or_else(|| json!(i));
        let delta = delta(choice.get("message")?);
        events.push(event(&head(json!([{"index": index, "delta": delta, "finish_reason": null}]))));
        let finish = choice.get("finish_reason").cloned().unwrap_or(Value::Null);
        events.push(event(&head(json!([{"index": index, "delta": {}, "finish_reason": finish}]))));
    }
    if with_usage {
        if let Some(usage) = whole.get("usage") {
            let mut last = head(json!([]));
            if let Some(o) = last.as_object_mut() {
                o.insert("usage".to_owned(), usage.clone());
            }
            events.push(event(&last));
        }
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Some(events)
}

/// A message as a stream delta: its fields, tool calls numbered as a stream numbers them.
fn delta(message: &Value) -> Value {
    let mut delta = message.as_object().cloned().unwrap_or_default();
    if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
        for (i, call) in calls.iter_mut().enumerate() {
            if let Some(o) = call.as_object_mut() {
                o.entry("index").or_insert(json!(i));
            }
        }
    }
    Value::Object(delta)
}

fn event(chunk: &Value) -> Bytes {
    Bytes::from(format!("data: {chunk}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(events: &[Bytes]) -> Vec<Value> {
        events
            .iter()
            .map(|e| std::str::from_utf8(e).unwrap().strip_prefix("data: ").unwrap().trim_end().to_owned())
            .filter(|d| d != "[DONE]")
            .map(|d| serde_json::from_str(&d).unwrap())
            .collect()
    }

    #[test]
    fn replays_a_completion_as_openai_chunks() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":7,"model":"m",
            "choices":[{"index":0,"message":{"role":"assistant","content":"hi","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}],
            "usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let events = chunks(body, true).unwrap();
        assert_eq!(events.last().unwrap().as_ref(), b"data: [DONE]\n\n");
        let chunks = data(&events);
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == "chatcmpl-1"));
        assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "hi");
        assert_eq!(chunks[0]["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(chunks[1]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[2]["usage"]["total_tokens"], 5);
        assert_eq!(data(&chunks_of(body, false)).len(), 2, "no usage chunk unless asked");
    }

    fn chunks_of(body: &[u8], usage: bool) -> Vec<Bytes> {
        chunks(body, usage).unwrap()
    }

    #[test]
    fn refuses_what_is_not_a_completion() {
        assert!(chunks(b"not json", false).is_none());
        assert!(chunks(br#"{"choices": 3}"#, false).is_none());
        assert!(chunks(br#"{"choices": [{"index": 0}]}"#, false).is_none());
    }
}
