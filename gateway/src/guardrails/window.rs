//! External guardrails on a stream: a call to the service per chunk would cost a round trip per
//! token, so the answer's text is checked by windows. The output is held while text gathers; at
//! `WINDOW_TEXT_BYTES` of new text (or `MAX_HELD_BYTES` of held output, or the stream's end) the
//! window, one text per choice, each after the last `OVERLAP_BYTES` of that choice's window
//! before (a phrase cut across two windows is seen whole), is sent to each `post_call` external
//! guardrail, and the held output goes on only when every one passes it. Nothing the services
//! have not passed reaches the client; the client waits at most one window (and one call)
//! behind the provider.
//!
//! A guardrail that rewrites a window (`GUARDRAIL_INTERVENED`) has its text framed again in the
//! held events: a choice's new text goes in its first held text event, its other held text
//! events carry empty text, and every other event (role, finish reason, tool calls, usage) goes
//! on as the provider sent it, so the stream stays valid and metering is untouched. A rewrite
//! of the overlap, text the client already has, cannot be taken back: it ends the stream as a
//! block.

use super::external::Verdict;
use super::{blocked_metric, text, Applied, Check};
use bytes::{Bytes, BytesMut};
use serde_json::Value;
use std::collections::BTreeMap;

/// New answer text that makes a window.
pub const WINDOW_TEXT_BYTES: usize = 2048;
/// The end of the window before, sent again in front of the next.
pub const OVERLAP_BYTES: usize = 256;
/// Output held at most before a check, whatever its text (tool calls, large events).
pub const MAX_HELD_BYTES: usize = 1 << 20;

/// The output and text held until the external guardrails pass them.
#[derive(Default)]
pub struct Window {
    held: BytesMut,
    /// The held events that carry text: where they lie in `held`, and their choice.
    marks: Vec<Mark>,
    /// Per choice: the text not yet checked, and the end of the text checked last.
    choices: BTreeMap<u64, ChoiceText>,
    /// Bytes of text not yet checked, over all choices.
    text_bytes: usize,
}

/// A held event carrying text of one choice, as a range of the held output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub start: usize,
    pub end: usize,
    pub choice: u64,
}

#[derive(Default)]
struct ChoiceText {
    new: String,
    overlap: String,
}

impl Window {
    pub fn push_text(&mut self, choice: u64, text: &str) {
        if !text.is_empty() {
            self.choices.entry(choice).or_default().new.push_str(text);
            self.text_bytes += text.len();
        }
    }

    /// Holds `out`; `marks` are its text events, as ranges of `out`.
    pub fn hold(&mut self, out: &[u8], marks: &[Mark]) {
        let base = self.held.len();
        self.marks.extend(marks.iter().map(|m| Mark { start: base + m.start, end: base + m.end, choice: m.choice }));
        self.held.extend_from_slice(out);
    }

    /// Whether a check is due before more is read.
    pub fn due(&self) -> bool {
        self.text_bytes >= WINDOW_TEXT_BYTES || self.held.len() >= MAX_HELD_BYTES
    }

    /// Checks the new text with every `post_call` external guardrail of the request, in order
    /// (each sees the texts as the one before left them); the held output when all pass,
    /// rewritten where one rewrote; else `Err(guardrail)`: the one that blocked, failed closed
    /// or rewrote text already sent.
    pub async fn check(&mut self, applied: &Applied, client: &reqwest::Client) -> Result<Bytes, String> {
        if self.text_bytes == 0 {
            self.marks.clear();
            return Ok(self.held.split().freeze());
        }
        let order: Vec<u64> = self.choices.iter().filter(|(_, t)| !t.new.is_empty()).map(|(c, _)| *c).collect();
        let sent: Vec<String> = order
            .iter()
            .filter_map(|c| self.choices.get(c))
            .map(|t| {
                let mut s = String::with_capacity(t.overlap.len() + t.new.len());
                s.push_str(&t.overlap);
                s.push_str(&t.new);
                s
            })
            .collect();
        let mut texts = sent.clone();
        let mut rewriter: Option<&str> = None;
        for g in applied.guardrails.iter().filter(|g| g.post_call) {
            let Check::External(e) = &g.check else { continue };
            match g.ask(e, client, &texts, &applied.request_data, "response", &applied.call_id).await {
                Ok(Verdict::Pass) => {}
                Ok(Verdict::Rewrite(new)) => {
                    texts = new;
                    rewriter = Some(&g.name);
                }
                Ok(Verdict::Block) => {
                    blocked_metric(&g.name, "post_call");
                    return Err(g.name.clone());
                }
                Err(_) => return Err(g.name.clone()),
            }
        }
        let mut replaced: BTreeMap<u64, String> = BTreeMap::new();
        for ((choice, sent), passed) in order.iter().zip(&sent).zip(&texts) {
            let Some(t) = self.choices.get_mut(choice) else { continue };
            if passed != sent {
                let Some(fresh) = passed.strip_prefix(t.overlap.as_str()) else {
                    let name = rewriter.unwrap_or_default().to_owned();
                    blocked_metric(&name, "post_call");
                    return Err(name);
                };
                replaced.insert(*choice, fresh.to_owned());
            }
            t.overlap = tail(passed, OVERLAP_BYTES).to_owned();
            t.new.clear();
        }
        self.text_bytes = 0;
        let marks = std::mem::take(&mut self.marks);
        let held = self.held.split().freeze();
        if replaced.is_empty() {
            return Ok(held);
        }
        Ok(reframe(&held, &marks, replaced))
    }
}

/// `held` with the text of its marked events replaced: a choice's new text in its first marked
/// event, empty text in the others.
fn reframe(held: &Bytes, marks: &[Mark], mut replaced: BTreeMap<u64, String>) -> Bytes {
    let mut out = BytesMut::with_capacity(held.len());
    let mut at = 0;
    for m in marks {
        let Some(raw) = held.get(m.start..m.end) else { continue };
        out.extend_from_slice(held.get(at..m.start).unwrap_or_default());
        at = m.end;
        let Some(fresh) = replaced.get_mut(&m.choice) else {
            out.extend_from_slice(raw);
            continue;
        };
        let parsed = crate::sse::parse_event(raw);
        let Ok(mut chunk) = serde_json::from_slice::<Value>(&parsed.data) else {
            out.extend_from_slice(raw);
            continue;
        };
        text::answer_texts(&mut chunk, &mut |s| *s = std::mem::take(fresh));
        out.extend_from_slice(&crate::sse::frame_json(parsed.name, &chunk));
    }
    out.extend_from_slice(held.get(at..).unwrap_or_default());
    out.freeze()
}

/// The last `n` bytes of `s`, or fewer, to start on a character.
fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_due_at_its_text_or_held_bytes_and_the_overlap_starts_on_a_character() {
        let mut w = Window::default();
        w.push_text(0, &"a".repeat(WINDOW_TEXT_BYTES - 1));
        assert!(!w.due());
        w.push_text(1, "b");
        assert!(w.due());
        let mut held = Window::default();
        held.hold(&vec![b'x'; MAX_HELD_BYTES], &[]);
        assert!(held.due());
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("ab", 10), "ab");
    }

    #[test]
    fn without_external_guardrails_the_held_output_passes_and_the_overlap_is_kept() {
        let applied = Applied::default();
        let mut w = Window::default();
        w.hold(b"data: {}\n\n", &[Mark { start: 0, end: 10, choice: 0 }]);
        w.push_text(0, &format!("{}end", "x".repeat(OVERLAP_BYTES)));
        let client = reqwest::Client::new();
        let out = futures::executor::block_on(w.check(&applied, &client));
        assert_eq!(out.as_deref(), Ok(&b"data: {}\n\n"[..]));
        let overlap = &w.choices[&0].overlap;
        assert!(overlap.ends_with("end") && overlap.len() == OVERLAP_BYTES && w.held.is_empty() && w.marks.is_empty());
    }

    #[test]
    fn a_rewrite_goes_in_the_first_text_event_of_its_choice_and_the_rest_passes_as_sent() {
        let event = |v: Value| crate::sse::frame_json(None, &v);
        let text = |i: u64, t: &str| event(serde_json::json!({"choices": [{"index": i, "delta": {"content": t}}]}));
        let role = event(serde_json::json!({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}));
        let usage = event(serde_json::json!({"choices": [], "usage": {"completion_tokens": 3}}));
        let parts = [role.clone(), text(0, "ab"), text(1, "x"), text(0, "cd"), usage.clone()];
        let mut held = BytesMut::new();
        let mut marks = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            if (1..=3).contains(&i) {
                marks.push(Mark { start: held.len(), end: held.len() + p.len(), choice: u64::from(i == 2) });
            }
            held.extend_from_slice(p);
        }
        let out = reframe(&held.freeze(), &marks, BTreeMap::from([(0, "ABCD!".to_owned())]));
        let expected = [role, text(0, "ABCD!"), text(1, "x"), text(0, ""), usage].concat();
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected));
    }
}
