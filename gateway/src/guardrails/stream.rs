//! The post-call hook on a stream: between the provider's chunks and the metered stream, each
//! event's text has its masked values restored (a placeholder split across chunks is held until
//! complete) and is scanned by the `post_call` banned-words guardrails with a bounded
//! look-behind window. A hit ends the stream with [`StreamError::GuardrailBlocked`]: the
//! metered stream sends the client an error event and bills what was sent, marked `partial`.
//! External `post_call` guardrails check the text by windows, the output held until they pass
//! it, rewritten where they rewrite it (`window.rs`); a block ends the stream the same way,
//! before the held output.

use super::pii::StreamRestore;
use super::window::{Mark, Window};
use super::words::StreamScan;
use super::{blocked_metric, text, Applied, Check};
use crate::providers::{ByteStream, StreamError};
use crate::sse::{EventBuffer, Fed, MAX_EVENT_BYTES};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// Choices tracked apart (`n` is at most 128); higher indexes share the last one's state.
const MAX_CHOICES: u64 = 128;

/// `upstream` with the request's post-call guardrails applied, or `upstream` itself when they
/// have nothing to do on a stream.
pub fn guard_stream(applied: Arc<Applied>, client: &reqwest::Client, upstream: ByteStream) -> ByteStream {
    let post_call = |external: bool| {
        applied.guardrails.iter().any(|g| g.post_call && matches!(g.check, Check::External(_)) == external)
    };
    let window = post_call(true).then(Window::default);
    if applied.masks.is_empty() && !post_call(false) && window.is_none() {
        return upstream;
    }
    let state = Guarded {
        applied,
        client: client.clone(),
        window,
        marks: Vec::new(),
        upstream,
        events: EventBuffer::new(MAX_EVENT_BYTES),
        choices: HashMap::new(),
        blocked: None,
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move { s.next().await.map(|item| (item, s)) }))
}

struct Guarded {
    applied: Arc<Applied>,
    client: reqwest::Client,
    /// Output held for the external guardrails, when the request runs any after the call.
    window: Option<Window>,
    /// The text events of the output not yet held in `window`, as ranges of that output.
    marks: Vec<Mark>,
    upstream: ByteStream,
    events: EventBuffer,
    choices: HashMap<u64, Choice>,
    /// A block found after output that must go first.
    blocked: Option<String>,
    done: bool,
}

#[derive(Default)]
struct Choice {
    restore: StreamRestore,
    /// One scan per post-call banned-words guardrail, in order.
    scans: Vec<StreamScan>,
}

impl Guarded {
    async fn next(&mut self) -> Option<Result<Bytes, StreamError>> {
        if let Some(name) = self.blocked.take() {
            self.done = true;
            return Some(Err(StreamError::GuardrailBlocked(name)));
        }
        while !self.done {
            let out = match self.upstream.next().await {
                Some(Ok(chunk)) => match self.take(&chunk) {
                    Ok(out) => out,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                },
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => {
                    self.done = true;
                    self.events.take_rest().freeze()
                }
            };
            match self.window.as_mut() {
                None if out.is_empty() => {}
                None => return Some(Ok(out)),
                // A banned word: what is held was never checked by the external guardrails.
                Some(_) if self.blocked.is_some() => {
                    return self.blocked.take().map(|name| Err(StreamError::GuardrailBlocked(name)))
                }
                Some(window) => {
                    window.hold(&out, &self.marks);
                    self.marks.clear();
                    if !window.due() && !self.done {
                        continue;
                    }
                    match window.check(&self.applied, &self.client).await {
                        Ok(passed) if passed.is_empty() => {}
                        Ok(passed) => return Some(Ok(passed)),
                        Err(name) => {
                            self.done = true;
                            return Some(Err(StreamError::GuardrailBlocked(name)));
                        }
                    }
                }
            }
        }
        None
    }

    /// The events complete in `chunk`, guarded. A block with output before it returns the
    /// output and keeps the block for the next call.
    fn take(&mut self, chunk: &[u8]) -> Result<Bytes, StreamError> {
        let mut out = BytesMut::new();
        let mut hit: Option<String> = None;
        let mut events = std::mem::replace(&mut self.events, EventBuffer::new(MAX_EVENT_BYTES));
        let fed = events.feed(chunk, |event| match self.event(event, &mut out) {
            Ok(()) => Fed::Next,
            Err(name) => {
                hit = Some(name);
                Fed::Stop
            }
        });
        self.events = events;
        fed?;
        if let Some(name) = hit {
            if out.is_empty() {
                return Err(StreamError::GuardrailBlocked(name));
            }
            self.blocked = Some(name);
        }
        Ok(out.freeze())
    }

    /// One event: passed as it is, or re-framed with its text restored; `Err(guardrail)` on a hit.
    fn event(&mut self, raw: &[u8], out: &mut BytesMut) -> Result<(), String> {
        let parsed = crate::sse::parse_event(raw);
        let Ok(mut chunk) = serde_json::from_slice::<Value>(&parsed.data) else {
            out.extend_from_slice(raw);
            return Ok(());
        };
        let index = chunk.pointer("/choices/0/index").and_then(Value::as_u64).unwrap_or(0).min(MAX_CHOICES);
        let finished = chunk.pointer("/choices/0/finish_reason").is_some_and(|f| !f.is_null());
        let applied = self.applied.clone();
        let choice = self.choices.entry(index).or_default();
        let window = &mut self.window;
        let mut changed = false;
        let mut verdict = Ok(());
        let mut has_text = false;
        text::answer_texts(&mut chunk, &mut |s| {
            let restored = choice.restore.push(&applied.masks, s);
            changed |= restored != *s;
            if verdict.is_ok() {
                verdict = scan(&applied, &mut choice.scans, &restored);
            }
            if let Some(w) = window.as_mut() {
                w.push_text(index, &restored);
                has_text |= !restored.is_empty();
            }
            *s = restored;
        });
        verdict?;
        if finished {
            // What was held waiting for the rest of a placeholder goes out with the last chunk.
            let rest = choice.restore.finish(&applied.masks);
            if !rest.is_empty() {
                scan(&applied, &mut choice.scans, &rest)?;
                if let Some(w) = self.window.as_mut() {
                    w.push_text(index, &rest);
                    has_text = true;
                }
                if let Some(delta) = chunk.pointer_mut("/choices/0/delta") {
                    let before = delta.get("content").and_then(Value::as_str).unwrap_or("").to_owned();
                    delta["content"] = Value::String(before + &rest);
                    changed = true;
                }
            }
        }
        let start = out.len();
        if changed {
            out.extend_from_slice(&crate::sse::frame_json(parsed.name, &chunk));
        } else {
            out.extend_from_slice(raw);
        }
        if has_text {
            // Where a rewrite of the window will put its text.
            self.marks.push(Mark { start, end: out.len(), choice: index });
        }
        Ok(())
    }
}

/// Runs the post-call banned-words guardrails on the next text of one choice.
fn scan(applied: &Applied, scans: &mut Vec<StreamScan>, text: &str) -> Result<(), String> {
    let words = applied.guardrails.iter().filter(|g| g.post_call).filter_map(|g| match &g.check {
        Check::Words(w) => Some((g, w)),
        _ => None,
    });
    for (i, (g, w)) in words.enumerate() {
        if scans.len() <= i {
            scans.push(StreamScan::default());
        }
        if scans[i].hit(w, text) {
            blocked_metric(&g.name, "post_call");
            return Err(g.name.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::pii::{Masks, Pii};
    use super::super::{Guardrail, Words};
    use super::*;

    fn chunk(text: &str) -> Bytes {
        let v = serde_json::json!({"id": "x", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
        crate::sse::frame_json(None, &v)
    }

    fn applied(masks: Masks) -> Arc<Applied> {
        let words = Words::build(&["forbidden fruit".to_owned()], &[], None).unwrap();
        let guardrail = Guardrail {
            name: "clean".into(),
            fingerprint: [0; 32],
            pre_call: false,
            post_call: true,
            default_on: true,
            check: Check::Words(words),
        };
        Arc::new(Applied { guardrails: vec![Arc::new(guardrail)], masks, ..Applied::default() })
    }

    /// The text of the output's chunks, and the error that ended it.
    fn run(applied: Arc<Applied>, pieces: &[&str]) -> (String, Option<String>) {
        let mut input: Vec<Result<Bytes, StreamError>> = pieces.iter().map(|p| Ok(chunk(p))).collect();
        input.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
        let out = futures::executor::block_on(
            guard_stream(applied, &reqwest::Client::new(), Box::pin(futures::stream::iter(input))).collect::<Vec<_>>(),
        );
        let mut text = String::new();
        let mut error = None;
        for item in out {
            match item {
                Ok(bytes) => {
                    for line in String::from_utf8_lossy(&bytes).lines() {
                        let v: Value = serde_json::from_str(line.trim_start_matches("data: ")).unwrap_or_default();
                        text.push_str(v.pointer("/choices/0/delta/content").and_then(Value::as_str).unwrap_or(""));
                    }
                }
                Err(e) => error = Some(e.to_string()),
            }
        }
        (text, error)
    }

    #[test]
    fn placeholders_cut_across_events_are_restored() {
        let mut masks = Masks::default();
        let masked = Pii::new(None).mask("ann@example.com", &mut masks).unwrap();
        assert_eq!(masked, "<EMAIL_1>");
        let (text, error) = run(applied(masks), &["write to <EM", "AIL", "_1> now"]);
        assert_eq!((text.as_str(), error), ("write to ann@example.com now", None));
    }

    #[test]
    fn a_banned_phrase_cut_across_events_ends_the_stream() {
        let (text, error) = run(applied(Masks::default()), &["the forb", "idden fr", "uit is", " here"]);
        assert_eq!(error.as_deref(), Some("the answer was blocked by guardrail 'clean'"));
        assert!(!text.contains("forbidden fruit") && !text.contains("here"), "{text}");
    }
}
