//! Banned words and regexes, compiled once into one bounded regex (the `regex` crate matches in
//! linear time; its compiled size is capped, so a hostile pattern is refused at load, not run).
//! Streams are scanned with a look-behind window so a word split across chunks is caught.

/// Most words and patterns one guardrail may hold, and the longest of each.
pub const MAX_TERMS: usize = 1_000;
pub const MAX_TERM_BYTES: usize = 1_000;
/// The compiled program's size cap (bytes of the `regex` crate's NFA and its lazy DFA).
pub const MAX_COMPILED_BYTES: usize = 1 << 20;
/// Default and most text kept between chunks of a stream.
pub const DEFAULT_WINDOW_BYTES: usize = 256;
pub const MAX_WINDOW_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub struct Words {
    regex: regex::Regex,
    /// Bytes of streamed text kept to scan with the next chunk.
    window: usize,
}

impl Words {
    /// Compiles `words` (case-insensitive literals) and `patterns` into one regex. The error
    /// names the key at fault.
    pub fn build(
        words: &[String],
        patterns: &[String],
        window: Option<usize>,
    ) -> Result<Words, (&'static str, String)> {
        if words.is_empty() && patterns.is_empty() {
            return Err(("banned_words", "give `banned_words` or `patterns`".into()));
        }
        let mut alternatives = Vec::with_capacity(words.len() + patterns.len());
        for (key, list) in [("banned_words", words), ("patterns", patterns)] {
            if list.len() > MAX_TERMS {
                return Err((key, format!("at most {MAX_TERMS} entries")));
            }
            for term in list {
                if term.is_empty() || term.len() > MAX_TERM_BYTES {
                    return Err((key, format!("each entry must be 1 to {MAX_TERM_BYTES} bytes")));
                }
                if key == "patterns" {
                    // Each pattern alone first, so the error names it.
                    compile(term).map_err(|e| (key, format!("pattern `{term}`: {e}")))?;
                    alternatives.push(format!("(?:{term})"));
                } else {
                    alternatives.push(format!("(?i:{})", regex::escape(term)));
                }
            }
        }
        let regex = compile(&alternatives.join("|")).map_err(|e| ("patterns", e.to_string()))?;
        let longest = words.iter().map(String::len).max().unwrap_or(0);
        let window = window.unwrap_or(DEFAULT_WINDOW_BYTES.max(longest));
        if window > MAX_WINDOW_BYTES || window < longest {
            return Err((
                "stream_window_bytes",
                format!("must be from the longest banned word ({longest}) to {MAX_WINDOW_BYTES} bytes"),
            ));
        }
        Ok(Words { regex, window })
    }

    pub fn matches(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

fn compile(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern).size_limit(MAX_COMPILED_BYTES).dfa_size_limit(MAX_COMPILED_BYTES).build()
}

/// One stream's scan: the end of the text already passed, kept to join the next chunk.
#[derive(Debug, Default)]
pub struct StreamScan {
    tail: String,
}

impl StreamScan {
    /// Whether `chunk`, read after what came before, completes a match. A match wholly in the
    /// kept tail was found before; one longer than the window is missed (docs/guardrails.md).
    pub fn hit(&mut self, words: &Words, chunk: &str) -> bool {
        self.tail.push_str(chunk);
        if words.matches(&self.tail) {
            return true;
        }
        if self.tail.len() > words.window {
            let mut cut = self.tail.len() - words.window;
            while !self.tail.is_char_boundary(cut) {
                cut += 1;
            }
            self.tail.drain(..cut);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str], patterns: &[&str]) -> Words {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        let patterns: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        Words::build(&list, &patterns, None).unwrap()
    }

    #[test]
    fn words_match_in_any_case_and_patterns_as_written() {
        let w = words(&["project x", "a.b"], &[r"\bsk-[a-z0-9]{8}\b"]);
        assert!(w.matches("tell me of PROJECT X now"));
        assert!(w.matches("key sk-abcd1234 here"));
        assert!(!w.matches("aXb"), "`.` is a literal, not any byte");
        assert!(!w.matches("nothing to see"));
    }

    #[test]
    fn a_word_split_across_chunks_is_caught() {
        let w = words(&["forbidden"], &[]);
        let mut scan = StreamScan::default();
        assert!(!scan.hit(&w, "this is for"));
        assert!(!scan.hit(&w, "bid"));
        assert!(scan.hit(&w, "den fruit"));
    }

    #[test]
    fn the_window_is_bounded_and_keeps_a_split_word() {
        let list = vec!["secretword".to_owned()];
        let w = Words::build(&list, &[], Some(16)).unwrap();
        let mut scan = StreamScan::default();
        for _ in 0..1_000 {
            assert!(!scan.hit(&w, "filler text é "));
        }
        assert!(scan.tail.len() <= 16 + "filler text é ".len());
        assert!(!scan.hit(&w, "secr"));
        assert!(scan.hit(&w, "etword"));
    }

    #[test]
    fn hostile_patterns_are_refused_at_load() {
        let huge = vec![r"(\w{1000}){1000}".to_owned()];
        let err = Words::build(&[], &huge, None).unwrap_err();
        assert_eq!(err.0, "patterns");
        let bad = vec!["(unclosed".to_owned()];
        assert_eq!(Words::build(&[], &bad, None).unwrap_err().0, "patterns");
        let long = vec!["x".repeat(MAX_TERM_BYTES + 1)];
        assert_eq!(Words::build(&long, &[], None).unwrap_err().0, "banned_words");
        let short_window = vec!["abcdefgh".to_owned()];
        assert_eq!(Words::build(&short_window, &[], Some(4)).unwrap_err().0, "stream_window_bytes");
    }

    #[test]
    fn matching_a_long_text_takes_linear_time() {
        let w = words(&[], &[r"(a|aa)+b"]);
        let text = "a".repeat(200_000);
        let started = std::time::Instant::now();
        assert!(!w.matches(&text));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
