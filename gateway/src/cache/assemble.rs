//! A streamed answer kept in the cache as the whole chat completion its chunks make up: each
//! choice's deltas joined (role, content, refusal, tool calls by index with their arguments
//! joined), its `finish_reason`, and the usage of the last chunk. The entry is then the same as
//! the one a whole answer makes, so a later request, streamed or not, is answered from it.
//!
//! It never grows past `max_entry_bytes` of text (nor past [`MAX_CHOICES`] choices or
//! [`MAX_TOOL_CALLS`] tool calls per choice): past them, or on a chunk it cannot read, it gives up
//! and nothing is kept. Only a stream that ended cleanly is kept (the metered stream hands it
//! over only then: status 200, usage reported, the client still there).

use super::{Plan, ResponseCache};
use crate::limits::pricing::Tokens;
use crate::providers::ByteStream;
use crate::sse::{EventBuffer, Fed, MAX_EVENT_BYTES};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tollgate_schemas::NanoUsd;

/// Most choices (`n`) assembled.
pub const MAX_CHOICES: usize = 128;
/// Most tool calls assembled in one choice.
pub const MAX_TOOL_CALLS: usize = 128;

#[derive(Deserialize)]
struct Chunk {
    id: Option<String>,
    created: Option<i64>,
    model: Option<String>,
    system_fingerprint: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    index: u64,
    #[serde(default)]
    delta: Delta,
    finish_reason: Option<String>,
}

#[derive(Default, Deserialize)]
struct Delta {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Option<Vec<CallDelta>>,
}

#[derive(Deserialize)]
struct CallDelta {
    index: Option<u64>,
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Default)]
struct Choice {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, Call>,
    finish_reason: Option<String>,
}

#[derive(Default)]
struct Call {
    id: Option<String>,
    kind: Option<String>,
    name: String,
    arguments: String,
}

/// The chat completion a stream's chunks make up, built as they pass.
pub struct Assembler {
    limit: usize,
    size: usize,
    broken: bool,
    head: Map<String, Value>,
    choices: BTreeMap<u64, Choice>,
    usage: Option<Value>,
}

impl Assembler {
    /// An assembler that gives up past `max_entry_bytes` of text.
    pub fn new(max_entry_bytes: u64) -> Assembler {
        Assembler {
            limit: usize::try_from(max_entry_bytes).unwrap_or(usize::MAX),
            size: 0,
            broken: false,
            head: Map::new(),
            choices: BTreeMap::new(),
            usage: None,
        }
    }

    /// Takes one chunk's JSON (an event's `data`).
    pub fn feed(&mut self, data: &[u8]) {
        if self.broken {
            return;
        }
        self.size = self.size.saturating_add(data.len());
        let parsed = (self.size <= self.limit).then(|| serde_json::from_slice::<Chunk>(data).ok()).flatten();
        let Some(chunk) = parsed else { return self.give_up() };
        for (name, value) in [
            ("id", chunk.id.map(Value::from)),
            ("created", chunk.created.map(Value::from)),
            ("model", chunk.model.map(Value::from)),
            ("system_fingerprint", chunk.system_fingerprint.map(Value::from)),
        ] {
            if let Some(v) = value {
                self.head.entry(name).or_insert(v);
            }
        }
        if chunk.usage.as_ref().is_some_and(|u| !u.is_null()) {
            self.usage = chunk.usage;
        }
        for choice in chunk.choices {
            if !self.take_choice(choice) {
                return self.give_up();
            }
        }
    }

    /// Adds a choice's delta; false past the bounds.
    fn take_choice(&mut self, c: ChunkChoice) -> bool {
        if !self.choices.contains_key(&c.index) && self.choices.len() >= MAX_CHOICES {
            return false;
        }
        let choice = self.choices.entry(c.index).or_default();
        if choice.role.is_none() {
            choice.role = c.delta.role;
        }
        append(&mut choice.content, c.delta.content);
        append(&mut choice.refusal, c.delta.refusal);
        for (i, call) in c.delta.tool_calls.into_iter().flatten().enumerate() {
            let index = call.index.unwrap_or(i as u64);
            if !choice.tool_calls.contains_key(&index) && choice.tool_calls.len() >= MAX_TOOL_CALLS {
                return false;
            }
            let held = choice.tool_calls.entry(index).or_default();
            held.id = held.id.take().or(call.id);
            held.kind = held.kind.take().or(call.kind);
            if let Some(f) = call.function {
                held.name.push_str(f.name.as_deref().unwrap_or_default());
                held.arguments.push_str(f.arguments.as_deref().unwrap_or_default());
            }
        }
        if c.finish_reason.is_some() {
            choice.finish_reason = c.finish_reason;
        }
        true
    }

    fn give_up(&mut self) {
        self.broken = true;
        self.choices.clear();
        self.head.clear();
    }

    /// The whole chat completion; `None` when it gave up, saw no choice, or a choice did not
    /// finish.
    pub fn finish(self) -> Option<Bytes> {
        let done = !self.broken && !self.choices.is_empty() && self.choices.values().all(|c| c.finish_reason.is_some());
        if !done {
            return None;
        }
        let mut whole = self.head;
        whole.insert("object".to_owned(), json!("chat.completion"));
        let choices: Vec<Value> = self.choices.into_iter().map(|(index, c)| choice_json(index, c)).collect();
        whole.insert("choices".to_owned(), Value::Array(choices));
        if let Some(usage) = self.usage {
            whole.insert("usage".to_owned(), usage);
        }
        serde_json::to_vec(&Value::Object(whole)).ok().map(Bytes::from)
    }
}

fn append(to: &mut Option<String>, more: Option<String>) {
    if let Some(more) = more {
        to.get_or_insert_with(String::new).push_str(&more);
    }
}

fn choice_json(index: u64, c: Choice) -> Value {
    let mut message = Map::new();
    message.insert("role".to_owned(), json!(c.role.unwrap_or_else(|| "assistant".to_owned())));
    message.insert("content".to_owned(), json!(c.content));
    if let Some(refusal) = c.refusal {
        message.insert("refusal".to_owned(), json!(refusal));
    }
    if !c.tool_calls.is_empty() {
        let calls: Vec<Value> = c
            .tool_calls
            .into_values()
            .map(|call| {
                json!({"id": call.id, "type": call.kind.unwrap_or_else(|| "function".to_owned()),
                       "function": {"name": call.name, "arguments": call.arguments}})
            })
            .collect();
        message.insert("tool_calls".to_owned(), Value::Array(calls));
    }
    json!({"index": index, "message": message, "finish_reason": c.finish_reason})
}

/// A streamed answer on its way into the cache: where it goes, under which plan, and what it
/// is so far.
pub struct Capture {
    cache: Arc<ResponseCache>,
    plan: Plan,
    assembler: Source,
}

/// Where the capture's chunks come from: what the metered stream sees, or (a guarded stream)
/// the provider's stream before the post-call guardrails, read by [`Capture::tap`].
enum Source {
    Own(Assembler),
    Tapped(Arc<Mutex<Assembler>>),
}

impl Capture {
    /// A capture for `plan`, unless the request said `no-store`.
    pub fn new(cache: Arc<ResponseCache>, plan: &Plan) -> Option<Capture> {
        let assembler = Source::Own(Assembler::new(cache.params().max_entry_bytes));
        (!plan.controls.no_store).then(|| Capture { cache, plan: plan.clone(), assembler })
    }

    /// Chunks the metered stream saw (ignored once the capture [`tap`](Capture::tap)s).
    pub fn feed(&mut self, data: &[u8]) {
        if let Source::Own(a) = &mut self.assembler {
            a.feed(data);
        }
    }

    /// `upstream` (the provider's stream, before the post-call guardrails) as it is, its chunks
    /// assembled into this capture: a guarded answer is kept as the provider made it, PII
    /// still masked, and a hit runs the post-call guardrails again. An event the stream cannot
    /// frame, or a poisoned lock, gives up the capture.
    pub fn tap(&mut self, upstream: ByteStream) -> ByteStream {
        let own = std::mem::replace(&mut self.assembler, Source::Own(Assembler::new(0)));
        let Source::Own(assembler) = own else {
            self.assembler = own;
            return upstream;
        };
        let shared = Arc::new(Mutex::new(assembler));
        self.assembler = Source::Tapped(shared.clone());
        let mut events = EventBuffer::new(MAX_EVENT_BYTES);
        Box::pin(upstream.inspect(move |item| {
            let Ok(chunk) = item else { return };
            let Ok(mut assembler) = shared.lock() else { return };
            let fed = events.feed(chunk, |raw| {
                let event = crate::sse::parse_event(raw);
                if !event.data.is_empty() && event.data != b"[DONE]" {
                    assembler.feed(&event.data);
                }
                Fed::Next
            });
            if fed.is_err() {
                assembler.give_up();
            }
        }))
    }

    /// Keeps the finished stream, as it cost `cost`; `None` when there is nothing to keep.
    pub fn store(
        self,
        cost: NanoUsd,
        tokens: Tokens,
        served_model: Option<String>,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let Capture { cache, plan, assembler } = self;
        let assembler = match assembler {
            Source::Own(a) => a,
            Source::Tapped(shared) => std::mem::replace(&mut *shared.lock().ok()?, Assembler::new(0)),
        };
        let body = assembler.finish()?;
        Some(async move { cache.store(&plan, &body, cost, tokens, served_model.as_deref()).await })
    }
}

#[cfg(test)]
mod tests;
