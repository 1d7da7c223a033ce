//! Gemini stream events as OpenAI chat chunks.

use super::errors::error_envelope;
use super::response::{candidate_parts, chat_id, finish_reason, is_blocked_prompt, now_secs, read_parts, usage};
use super::*;

#[derive(Default)]
pub(super) struct ChoiceState {
    role_sent: bool,
    tool_calls: usize,
}

/// Gemini's `alt=sse` stream (each event a GenerateContentResponse) → OpenAI
/// `chat.completion.chunk` events, ending with a usage chunk (`choices: []`, from the last
/// `usageMetadata` seen, which Gemini repeats on every event) and `data: [DONE]`.
///
/// The usage chunk is always emitted when Gemini reported usage: the metering stage reads it and
/// hides it from clients that did not ask for it. At most [`MAX_CANDIDATES`] candidates are
/// followed: a stream that names more ends with an error.
pub struct GenerateToChatStream {
    model: String,
    id: Option<String>,
    created: u64,
    pub(super) choices: HashMap<u64, ChoiceState>,
    next_call: usize,
    usage: Option<Value>,
    ended: bool,
    failed: bool,
}

/// Most candidates one Gemini stream may carry: OpenAI's `n` is at most 128 too.
pub(super) const MAX_CANDIDATES: usize = 128;

impl GenerateToChatStream {
    pub fn new(model: &str) -> Self {
        GenerateToChatStream {
            model: model.to_owned(),
            id: None,
            created: now_secs(),
            choices: HashMap::new(),
            next_call: 0,
            usage: None,
            ended: false,
            failed: false,
        }
    }

    fn chunk(&self, choices: Value) -> Value {
        json!({
            "id": self.id.as_deref().unwrap_or("chatcmpl-gemini"),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    fn choice_chunk(&self, index: u64, delta: Map<String, Value>, finish: Option<&str>) -> Bytes {
        frame_json(None, &self.chunk(json!([{ "index": index, "delta": delta, "finish_reason": finish }])))
    }

    /// Ends the stream with an error event: more candidates than [`MAX_CANDIDATES`].
    fn fail(&mut self) -> Vec<Bytes> {
        self.failed = true;
        let message = format!("the upstream stream has more than {MAX_CANDIDATES} candidates");
        let error =
            json!({"error": {"message": message, "type": "api_error", "param": null, "code": "upstream_error"}});
        vec![frame_json(None, &error)]
    }
}

impl SseTranslator for GenerateToChatStream {
    fn event(&mut self, _name: Option<&str>, data: &[u8]) -> Vec<Bytes> {
        if self.failed {
            return Vec::new();
        }
        let Ok(resp) = serde_json::from_slice::<Value>(data) else { return Vec::new() };
        if let Some(error) = resp.get("error") {
            return vec![frame_json(None, &error_envelope(error))];
        }
        if self.id.is_none() {
            self.id = Some(chat_id(&resp));
        }
        if let Some(meta) = resp.get("usageMetadata") {
            self.usage = Some(usage(meta));
        }
        let mut out = Vec::new();
        let candidates = resp.get("candidates").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        // Each candidate of an event becomes up to two chunks: more of them than any request
        // asks for would turn a small event into a large output.
        if candidates.len() > MAX_CANDIDATES {
            return self.fail();
        }
        for (position, candidate) in candidates.iter().enumerate() {
            let index = candidate.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
            if self.choices.len() >= MAX_CANDIDATES && !self.choices.contains_key(&index) {
                out.extend(self.fail());
                return out;
            }
            let said = read_parts(candidate_parts(candidate), &mut self.next_call);
            let state = self.choices.entry(index).or_default();
            let mut delta = Map::new();
            if !state.role_sent {
                state.role_sent = true;
                delta.insert("role".into(), json!("assistant"));
                delta.insert("content".into(), json!(""));
            }
            if !said.text.is_empty() {
                delta.insert("content".into(), json!(said.text));
            }
            if !said.reasoning.is_empty() {
                delta.insert("reasoning_content".into(), json!(said.reasoning));
            }
            if !said.tool_calls.is_empty() {
                let calls: Vec<Value> = said
                    .tool_calls
                    .into_iter()
                    .map(|mut call| {
                        call["index"] = json!(state.tool_calls);
                        state.tool_calls += 1;
                        call
                    })
                    .collect();
                delta.insert("tool_calls".into(), Value::Array(calls));
            }
            let made_calls = state.tool_calls > 0;
            if !delta.is_empty() {
                out.push(self.choice_chunk(index, delta, None));
            }
            if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
                out.push(self.choice_chunk(index, Map::new(), Some(finish_reason(reason, made_calls))));
            }
        }
        if candidates.is_empty() && is_blocked_prompt(&resp) {
            let mut delta = Map::new();
            delta.insert("role".into(), json!("assistant"));
            out.push(self.choice_chunk(0, delta, Some("content_filter")));
        }
        out
    }

    fn end(&mut self) -> Vec<Bytes> {
        // A failed stream owes nothing: without `[DONE]`, metering sees it cut short.
        if self.ended || self.failed {
            return Vec::new();
        }
        self.ended = true;
        let mut out = Vec::with_capacity(2);
        if let Some(usage) = self.usage.take() {
            let mut chunk = self.chunk(json!([]));
            chunk["usage"] = usage;
            out.push(frame_json(None, &chunk));
        }
        out.push(frame(None, b"[DONE]"));
        out
    }

    fn finished(&self) -> bool {
        self.failed
    }
}
