//! Token counting for answers a provider did not report usage for (a stream cut short, a
//! provider without usage): OpenAI's `o200k_base` BPE, exact for the GPT-4o family and an
//! estimate for other models. Counts from here always mark the usage event `estimated`.
//!
//! The tokenizer's tables take tens of megabytes, and most providers report usage, so they are
//! loaded only when first needed, in the background ([`warm_up`]); until they are ready, or if
//! they cannot load, counts fall back to one token per four bytes (still marked `estimated`).

use std::sync::OnceLock;
use tiktoken_rs::CoreBPE;

static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();

fn bpe() -> Option<&'static CoreBPE> {
    BPE.get_or_init(|| match tiktoken_rs::o200k_base() {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(error = %e, "tokenizer unavailable; estimating four bytes per token");
            None
        }
    })
    .as_ref()
}

static LOADING: std::sync::Once = std::sync::Once::new();

/// Starts loading the tokenizer off the request path (once).
pub fn warm_up() {
    LOADING.call_once(|| {
        let _ = std::thread::Builder::new().name("tollgate-tokenizer".into()).spawn(|| {
            let _ = bpe();
        });
    });
}

/// Tokens in `text`.
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    match BPE.get().and_then(Option::as_ref) {
        Some(b) => b.encode_ordinary(text).len() as u64,
        None => {
            warm_up();
            (text.len() as u64).div_ceil(4)
        }
    }
}

/// Most text kept for the tokenizer per count (a stream's generated text, a request's
/// prompt). Beyond it bytes are only added up and counted at the fallback rate, one token per
/// four bytes: what a stream holds and what the tokenizer does when it ends stay bounded.
pub const MAX_COUNTED_TEXT: usize = 1024 * 1024;

/// Text to count: kept up to [`MAX_COUNTED_TEXT`] bytes, only measured beyond.
#[derive(Debug, Default)]
pub struct TextTally {
    text: String,
    /// Bytes that did not fit.
    overflow: u64,
}

impl TextTally {
    pub fn push(&mut self, piece: &[u8]) {
        let piece = String::from_utf8_lossy(piece);
        if self.text.len() + piece.len() <= MAX_COUNTED_TEXT {
            self.text.push_str(&piece);
        } else {
            self.overflow = self.overflow.saturating_add(piece.len() as u64);
        }
    }

    /// Tokens: the kept text through the tokenizer, the rest at the fallback rate.
    pub fn tokens(&self) -> u64 {
        count(&self.text).saturating_add(self.overflow.div_ceil(4))
    }

    #[cfg(test)]
    pub fn kept(&self) -> &str {
        &self.text
    }
}

/// Keys whose string values are generated text, as they appear in a stream chunk.
const GENERATED_KEYS: [&[u8]; 5] =
    [b"\"content\":\"", b"\"text\":\"", b"\"arguments\":\"", b"\"delta\":\"", b"\"reasoning_content\":\""];

static GENERATED: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 5]> =
    std::sync::LazyLock::new(|| GENERATED_KEYS.map(memchr::memmem::Finder::new));

/// Adds the generated text of one stream chunk (`content`, `text`, `arguments`, `delta`
/// string values, still JSON-escaped) to `out`, by a byte scan rather than a JSON parse: this
/// runs on every chunk of every stream.
pub fn collect_generated_text(data: &[u8], out: &mut TextTally) {
    for key in GENERATED.iter() {
        let mut rest = data;
        while let Some(at) = key.find(rest) {
            let start = at + key.needle().len();
            let value = &rest[start..];
            let mut end = 0;
            let mut escaped = false;
            while end < value.len() {
                match value[end] {
                    b'\\' if !escaped => escaped = true,
                    b'"' if !escaped => break,
                    _ => escaped = false,
                }
                end += 1;
            }
            out.push(&value[..end]);
            rest = &value[end.min(value.len())..];
        }
    }
}

/// The text of a request's prompt: every string in `messages` / `prompt` / `input`. The
/// recursion follows the value's nesting, which the JSON reader bounds (128 levels).
pub fn prompt_text(value: &serde_json::Value, out: &mut TextTally) {
    match value {
        serde_json::Value::String(s) => {
            out.push(s.as_bytes());
            out.push(b" ");
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| prompt_text(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| prompt_text(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_text_without_parsing() {
        let mut out = TextTally::default();
        collect_generated_text(br#"{"choices":[{"delta":{"content":"Hel\"lo"}}]}"#, &mut out);
        collect_generated_text(
            br#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"a\""}}]}}]}"#,
            &mut out,
        );
        assert_eq!(out.kept(), r#"Hel\"lo{\"a\""#);
    }

    #[test]
    fn counts_with_the_tokenizer() {
        let _ = bpe();
        assert_eq!(count("hello world"), 2);
        assert_eq!(count(""), 0);
    }

    /// Past [`MAX_COUNTED_TEXT`] text is not kept but counted at one token per four bytes.
    #[test]
    fn keeps_at_most_the_counted_text() {
        let _ = bpe();
        let mut tally = TextTally::default();
        let chunk = format!(r#"{{"choices":[{{"delta":{{"content":"{}"}}}}]}}"#, "word ".repeat(1000));
        for _ in 0..420 {
            collect_generated_text(chunk.as_bytes(), &mut tally);
        }
        assert!(tally.kept().len() <= MAX_COUNTED_TEXT, "kept {} bytes", tally.kept().len());
        let kept_pieces = (MAX_COUNTED_TEXT / 5000) as u64;
        assert_eq!(tally.kept().len() as u64, kept_pieces * 5000);
        assert_eq!(tally.tokens(), count(tally.kept()) + (420 - kept_pieces) * 5000 / 4);
    }
}
