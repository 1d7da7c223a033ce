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

/// Longest piece of text handed to the tokenizer at once. Its pre-tokenizing regex backtracks
/// on a bounded stack, and tiktoken-rs unwraps the error it returns when that stack runs out:
/// a run of about 500,000 spaces in one piece made `encode_ordinary` panic. Pieces of this size
/// stay far below it; each cut changes the count by at most a token.
const MAX_PIECE: usize = 16 * 1024;

/// Tokens in `text`.
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    match BPE.get().and_then(Option::as_ref) {
        Some(b) => pieces(text).map(|piece| count_piece(b, piece)).sum(),
        None => {
            warm_up();
            (text.len() as u64).div_ceil(4)
        }
    }
}

/// Tokens in one piece. Should the tokenizer fail on a piece anyway, it counts at the fallback
/// rate: counting runs as a request's usage event is made, and must never stop it.
fn count_piece(bpe: &CoreBPE, piece: &str) -> u64 {
    let encode = std::panic::AssertUnwindSafe(|| bpe.encode_ordinary(piece).len() as u64);
    std::panic::catch_unwind(encode).unwrap_or_else(|_| (piece.len() as u64).div_ceil(4))
}

/// `text` cut into pieces of at most [`MAX_PIECE`] bytes, at character boundaries.
fn pieces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(MAX_PIECE);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
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

/// Keys whose string values are generated text, as they appear in a stream chunk (each
/// followed by `":"`).
const GENERATED_KEYS: [&[u8]; 5] = [b"\"content", b"\"text", b"\"arguments", b"\"delta", b"\"reasoning_content"];

/// Adds the generated text of one stream chunk (`content`, `text`, `arguments`, `delta`
/// string values, still JSON-escaped) to `out`, in the order they appear, by a byte scan
/// rather than a JSON parse: this runs on every chunk of every stream. One pass over the
/// chunk: each `":"` (a key and a string value) is looked at, and the key before it compared
/// with [`GENERATED_KEYS`].
pub fn collect_generated_text(data: &[u8], out: &mut TextTally) {
    let mut at = 0;
    while let Some(i) = memchr::memchr(b':', &data[at..]) {
        let colon = at + i;
        at = colon + 1;
        if colon == 0 || data[colon - 1] != b'"' || data.get(colon + 1) != Some(&b'"') {
            continue;
        }
        let key = &data[..colon - 1];
        if !GENERATED_KEYS.iter().any(|k| key.ends_with(k)) {
            continue;
        }
        let value = &data[colon + 2..];
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
        at = colon + 2 + end;
    }
}

/// Keys whose string values are generated text in a whole (non-streamed) answer.
const ANSWER_TEXT_KEYS: [&str; 5] = ["content", "text", "arguments", "reasoning_content", "refusal"];

/// The generated text of a whole answer, for an answer without usage: every string under a
/// text key ([`ANSWER_TEXT_KEYS`]), wherever it sits (an OpenAI `message`, an Anthropic or
/// Gemini content block, a tool call's `arguments`). An answer that is not JSON is counted
/// whole: the client was sent it, so it is what the completion was.
pub fn answer_text(body: &[u8], out: &mut TextTally) {
    fn walk(value: &serde_json::Value, under_text_key: bool, out: &mut TextTally) {
        match value {
            serde_json::Value::String(s) if under_text_key => out.push(s.as_bytes()),
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, under_text_key, out)),
            serde_json::Value::Object(o) => {
                o.iter().for_each(|(k, v)| walk(v, ANSWER_TEXT_KEYS.contains(&k.as_str()), out))
            }
            _ => {}
        }
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => walk(&value, false, out),
        Err(_) => out.push(body),
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
mod fuzz;

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

    /// One pass, in the chunk's order; a key only counts whole (`reasoning_content` is not
    /// `content`), and colons elsewhere (in ids, in the text itself) are not keys.
    #[test]
    fn collects_each_generated_value_once_in_order() {
        let mut out = TextTally::default();
        collect_generated_text(
            br#"{"id":"a:b","x":"\":\"content\":\"","choices":[{"delta":{"reasoning_content":"think: ","content":"say:\"\":\"","role":"assistant"}}],"text":"","n":1}"#,
            &mut out,
        );
        assert_eq!(out.kept(), r#"think: say:\"\":\""#);
        let mut none = TextTally::default();
        collect_generated_text(br#":":"#, &mut none);
        collect_generated_text(br#"{"contents":"no","context":"no","content":"#, &mut none);
        assert_eq!(none.kept(), "");
        let mut cut = TextTally::default();
        collect_generated_text(br#"{"content":"unterminated"#, &mut cut);
        assert_eq!(cut.kept(), "unterminated");
    }

    #[test]
    fn an_answer_without_usage_counts_its_generated_text() {
        let mut out = TextTally::default();
        answer_text(
            br#"{"id":"x","model":"m","choices":[{"message":{"role":"assistant","content": "Hello there",
                "tool_calls":[{"function":{"name":"f","arguments":"{\"a\":1}"}}]}}],
                "content":[{"type":"text","text":" block"}]}"#,
            &mut out,
        );
        assert_eq!(out.kept(), r#"Hello there{"a":1} block"#);
        // Ids, roles, models and names are not generated text.
        let mut none = TextTally::default();
        answer_text(br#"{"id":"chatcmpl-1","model":"gpt","choices":[{"message":{"role":"assistant"}}]}"#, &mut none);
        assert_eq!(none.tokens(), 0);
        // Not JSON: the whole body is what the client got.
        let mut raw = TextTally::default();
        answer_text(b"plain words", &mut raw);
        assert_eq!(raw.kept(), "plain words");
    }

    #[test]
    fn counts_with_the_tokenizer() {
        let _ = bpe();
        assert_eq!(count("hello world"), 2);
        assert_eq!(count(""), 0);
    }

    /// Found by fuzzing the tokenizer with long runs: a megabyte of spaces (or of spaces and
    /// tabs) made tiktoken-rs panic (its regex ran out of backtracking stack, and it unwraps
    /// the error). A client could send such a prompt, or a provider stream such text, and the
    /// count that makes a request's usage event when the provider reports none would panic
    /// instead: no event, an unbilled request. Text goes to the tokenizer in bounded pieces.
    #[test]
    fn a_megabyte_of_whitespace_is_counted_without_a_panic() {
        let bpe = bpe().unwrap();
        for unit in [" ", " \t", "\u{a0}"] {
            let text = unit.repeat(MAX_COUNTED_TEXT / unit.len());
            let tokens = count(&text);
            assert!(tokens > 0 && tokens <= text.len() as u64, "{unit:?}: {tokens}");
            // Counted by the tokenizer, piece by piece (not at the fallback rate).
            let tokenized: usize = pieces(&text).map(|p| bpe.encode_ordinary(p).len()).sum();
            assert_eq!(tokens, tokenized as u64);
        }
        let accents = "é".repeat(MAX_PIECE);
        let cut: Vec<&str> = pieces(&accents).collect();
        assert!(cut.len() == 2 && cut.iter().all(|p| p.len() <= MAX_PIECE) && cut.concat() == accents);
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
