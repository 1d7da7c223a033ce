//! External guardrails on a stream: a call to the service per chunk would cost a round trip per
//! token, so the answer's text is checked by windows. The output is held while text gathers; at
//! `WINDOW_TEXT_BYTES` of new text (or `MAX_HELD_BYTES` of held output, or the stream's end) the
//! window, after the last `OVERLAP_BYTES` of the one before (a phrase cut across two windows is
//! seen whole), is sent to each `post_call` external guardrail, and the held output goes on only
//! when every one passes. Nothing the services have not passed reaches the client; the client
//! waits at most one window (and one call) behind the provider.

use super::external::Verdict;
use super::{blocked_metric, Applied, Check};
use bytes::{Bytes, BytesMut};

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
    /// Answer text not yet checked.
    text: String,
    /// The end of the text checked last.
    overlap: String,
}

impl Window {
    pub fn push_text(&mut self, text: &str) {
        self.text.push_str(text);
    }

    pub fn hold(&mut self, out: &[u8]) {
        self.held.extend_from_slice(out);
    }

    /// Whether a check is due before more is read.
    pub fn due(&self) -> bool {
        self.text.len() >= WINDOW_TEXT_BYTES || self.held.len() >= MAX_HELD_BYTES
    }

    /// Checks the new text with every `post_call` external guardrail of the request; the held
    /// output when all pass, else `Err(guardrail)`: the one that blocked, rewrote (a stream's
    /// text already framed in chunks is not rewritten: the answer is ended instead) or failed
    /// closed.
    pub async fn check(&mut self, applied: &Applied, client: &reqwest::Client) -> Result<Bytes, String> {
        if !self.text.is_empty() {
            let mut sent = std::mem::take(&mut self.overlap);
            sent.push_str(&self.text);
            self.text.clear();
            let texts = [sent];
            for g in applied.guardrails.iter().filter(|g| g.post_call) {
                let Check::External(e) = &g.check else { continue };
                match g.ask(e, client, &texts, &applied.request_data, "response", &applied.call_id).await {
                    Ok(Verdict::Pass) => {}
                    Ok(Verdict::Block | Verdict::Rewrite(_)) => {
                        blocked_metric(&g.name, "post_call");
                        return Err(g.name.clone());
                    }
                    Err(_) => return Err(g.name.clone()),
                }
            }
            let [sent] = texts;
            self.overlap = tail(&sent, OVERLAP_BYTES).to_owned();
        }
        Ok(self.held.split().freeze())
    }
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
        w.push_text(&"a".repeat(WINDOW_TEXT_BYTES - 1));
        assert!(!w.due());
        w.push_text("b");
        assert!(w.due());
        let mut held = Window::default();
        held.hold(&vec![b'x'; MAX_HELD_BYTES]);
        assert!(held.due());
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("ab", 10), "ab");
    }

    #[test]
    fn without_external_guardrails_the_held_output_passes_and_the_overlap_is_kept() {
        let applied = Applied::default();
        let mut w = Window::default();
        w.hold(b"data: {}\n\n");
        w.push_text(&format!("{}end", "x".repeat(OVERLAP_BYTES)));
        let client = reqwest::Client::new();
        let out = futures::executor::block_on(w.check(&applied, &client));
        assert_eq!(out.as_deref(), Ok(&b"data: {}\n\n"[..]));
        assert!(w.overlap.ends_with("end") && w.overlap.len() == OVERLAP_BYTES && w.held.is_empty());
    }
}
