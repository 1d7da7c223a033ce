//! ConverseStream's event-stream messages → OpenAI chat chunks (server-sent events).
//!
//! [`FrameStream`] decodes the binary messages as they arrive ([`super::eventstream`]) and hands
//! each to [`ConverseToChatStream`], which is pure. A stream that cannot be decoded ends with an
//! error event (a message over the bound, with [`crate::sse::EventTooLarge`]).

use super::converse::{exception_envelope, finish_reason, now_secs, usage};
use super::eventstream::{Decoder, FrameError, Message, MAX_MESSAGE_BYTES};
use crate::providers::StreamError;
use crate::sse::{frame, frame_json, EventTooLarge};
use bytes::{Bytes, BytesMut};
use futures::Stream;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Most tool calls one answer may stream: the map of block indexes stays small.
const MAX_TOOL_CALLS: usize = 128;

/// ConverseStream events → `chat.completion.chunk` events: a usage chunk (`choices: []`) from
/// the `metadata` event, then `[DONE]`. An exception event becomes an error event, and ends it.
pub struct ConverseToChatStream {
    model: String,
    id: String,
    created: u64,
    /// Tool calls by content block index, numbered in the order they started.
    tools: HashMap<u64, usize>,
    stopped: bool,
    finished: bool,
}

impl ConverseToChatStream {
    pub fn new(model: &str) -> Self {
        let created = now_secs();
        ConverseToChatStream {
            model: model.to_owned(),
            id: format!("chatcmpl-bedrock-{created}"),
            created,
            tools: HashMap::new(),
            stopped: false,
            finished: false,
        }
    }

    pub fn finished(&self) -> bool {
        self.finished
    }

    fn chunk(&self, choices: Value) -> Value {
        json!({ "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": choices })
    }

    fn delta(&self, delta: Value, finish: Option<&str>) -> Bytes {
        frame_json(None, &self.chunk(json!([{ "index": 0, "delta": delta, "finish_reason": finish }])))
    }

    fn fail(&mut self, envelope: &Value) -> Vec<Bytes> {
        self.finished = true;
        vec![frame_json(None, envelope)]
    }

    /// One decoded message.
    pub fn message(&mut self, message: &Message) -> Vec<Bytes> {
        if self.finished {
            return Vec::new();
        }
        let payload = serde_json::from_slice::<Value>(&message.payload).unwrap_or(Value::Null);
        if message.header(":message-type") != Some("event") {
            let kind = message.header(":exception-type").or_else(|| message.header(":error-code"));
            let text = payload.get("message").and_then(Value::as_str).or_else(|| message.header(":error-message"));
            let text = text.unwrap_or(crate::providers::UNREADABLE_ERROR);
            return self.fail(&exception_envelope(kind, text));
        }
        match message.header(":event-type").unwrap_or_default() {
            "messageStart" => vec![self.delta(json!({ "role": "assistant", "content": "" }), None)],
            "contentBlockStart" => self.tool_start(&payload),
            "contentBlockDelta" => self.block_delta(&payload),
            "messageStop" => {
                self.stopped = true;
                let finish = finish_reason(payload.get("stopReason").and_then(Value::as_str));
                vec![self.delta(json!({}), Some(finish))]
            }
            "metadata" => {
                self.finished = true;
                let mut out = Vec::with_capacity(2);
                if let Some(usage) = payload.get("usage").and_then(usage) {
                    let mut chunk = self.chunk(json!([]));
                    chunk["usage"] = usage;
                    out.push(frame_json(None, &chunk));
                }
                out.push(frame(None, b"[DONE]"));
                out
            }
            _ => Vec::new(),
        }
    }

    fn tool_start(&mut self, payload: &Value) -> Vec<Bytes> {
        let Some(call) = payload.pointer("/start/toolUse") else { return Vec::new() };
        let block = payload.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
        if self.tools.len() >= MAX_TOOL_CALLS {
            let message = format!("the upstream stream has more than {MAX_TOOL_CALLS} tool calls");
            return self.fail(&exception_envelope(None, &message));
        }
        let index = self.tools.len();
        self.tools.insert(block, index);
        let id = call.get("toolUseId").and_then(Value::as_str).unwrap_or_default();
        let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
        let call =
            json!({ "index": index, "id": id, "type": "function", "function": { "name": name, "arguments": "" } });
        vec![self.delta(json!({ "tool_calls": [call] }), None)]
    }

    fn block_delta(&mut self, payload: &Value) -> Vec<Bytes> {
        let Some(delta) = payload.get("delta") else { return Vec::new() };
        if let Some(text) = delta.get("text").and_then(Value::as_str) {
            return vec![self.delta(json!({ "content": text }), None)];
        }
        let Some(input) = delta.pointer("/toolUse/input").and_then(Value::as_str) else { return Vec::new() };
        let block = payload.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
        let Some(index) = self.tools.get(&block) else { return Vec::new() };
        let call = json!({ "index": index, "function": { "arguments": input } });
        vec![self.delta(json!({ "tool_calls": [call] }), None)]
    }

    /// The body ended: `[DONE]` when the message had stopped (its usage never came).
    pub fn end(&mut self) -> Vec<Bytes> {
        if self.finished || !self.stopped {
            return Vec::new();
        }
        self.finished = true;
        vec![frame(None, b"[DONE]")]
    }

    /// A framing error: an error event (the provider's stream is not readable past it).
    pub fn broken(&mut self, error: &FrameError) -> Vec<Bytes> {
        let envelope = json!({ "error": { "message": format!("the upstream stream is malformed: {error}"),
                                          "type": "api_error", "param": null, "code": "upstream_error" } });
        self.fail(&envelope)
    }
}

/// A ConverseStream body as OpenAI chat chunks.
pub struct FrameStream<S> {
    inner: S,
    decoder: Decoder,
    translator: ConverseToChatStream,
    /// An oversized message, reported after the output before it.
    failed: Option<EventTooLarge>,
    done: bool,
}

impl<S> FrameStream<S> {
    pub fn new(inner: S, translator: ConverseToChatStream) -> Self {
        FrameStream { inner, decoder: Decoder::default(), translator, failed: None, done: false }
    }

    /// The output of the messages decoded so far.
    fn drain(&mut self) -> BytesMut {
        let mut out = BytesMut::new();
        while !self.translator.finished() {
            let pieces = match self.decoder.next_message() {
                Ok(Some(message)) => self.translator.message(&message),
                Ok(None) => break,
                Err(FrameError::TooLarge(_)) => {
                    self.failed = Some(EventTooLarge { limit: MAX_MESSAGE_BYTES });
                    break;
                }
                Err(e) => self.translator.broken(&e),
            };
            pieces.iter().for_each(|p| out.extend_from_slice(p));
        }
        self.done = self.translator.finished() || self.failed.is_some();
        out
    }
}

impl<S> Stream for FrameStream<S>
where
    S: Stream<Item = Result<Bytes, StreamError>> + Unpin,
{
    type Item = Result<Bytes, StreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(this.failed.take().map(|e| Err(e.into())));
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.decoder.extend(&chunk);
                    let out = this.drain();
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out.freeze())));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let out: Vec<u8> = this.translator.end().concat();
                    return Poll::Ready((!out.is_empty()).then(|| Ok(Bytes::from(out))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
