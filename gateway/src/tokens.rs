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

/// Appends the generated text of one stream chunk (`content`, `text`, `arguments`, `delta`
/// string values, still JSON-escaped) to `out`, by a byte scan rather than a JSON parse: this
/// runs on every chunk of every stream.
pub fn collect_generated_text(data: &[u8], out: &mut String) {
    const KEYS: [&[u8]; 5] =
        [b"\"content\":\"", b"\"text\":\"", b"\"arguments\":\"", b"\"delta\":\"", b"\"reasoning_content\":\""];
    for key in KEYS {
        let mut rest = data;
        while let Some(at) = find(rest, key) {
            let start = at + key.len();
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
            out.push_str(&String::from_utf8_lossy(&value[..end]));
            rest = &value[end.min(value.len())..];
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The text of a request's prompt: every string in `messages` / `prompt` / `input`.
pub fn prompt_text(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::String(s) => {
            out.push_str(s);
            out.push(' ');
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
        let mut out = String::new();
        collect_generated_text(br#"{"choices":[{"delta":{"content":"Hel\"lo"}}]}"#, &mut out);
        collect_generated_text(
            br#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"a\""}}]}}]}"#,
            &mut out,
        );
        assert_eq!(out, r#"Hel\"lo{\"a\""#);
    }

    #[test]
    fn counts_with_the_tokenizer() {
        let _ = bpe();
        assert_eq!(count("hello world"), 2);
        assert_eq!(count(""), 0);
    }
}
