//! Property and fuzz tests of token counting on outside text: the generated text scanned out
//! of stream chunks (`collect_generated_text`), a request's prompt (`prompt_text`) and the
//! tokenizer on long hostile runs (whitespace, digits, letters, marks, mixed scripts): never a
//! panic or a hang, never more tokens than bytes, and never more text kept than
//! [`MAX_COUNTED_TEXT`].

use super::*;
use proptest::prelude::*;
use tollgate_fuzzing::{json as gen, run};

/// Pieces of text the tokenizer's regex treats specially, repeated into long runs.
const UNITS: &[&str] = &[
    " ", "\t", "\n", "\r\n", " \t", "\u{a0}", "\u{3000}", "a", "A", "1", "12345", "!?", "'s", "'", "é", "e\u{301}",
    "中", "😀", "\u{200d}", "\u{feff}", "a1 ", "  a", "\\n", "\"", "\u{0}",
];

/// Text of up to 16 runs of up to 64 KiB each, or (one time in 16) a single run as long as the
/// text counted: each run a unit repeated.
fn hostile_text() -> BoxedStrategy<String> {
    let run = |max: usize| (prop::sample::select(UNITS), 0..=max);
    prop_oneof![
        15 => prop::collection::vec(run(65_536), 1..16),
        1 => run(MAX_COUNTED_TEXT).prop_map(|r| vec![r]),
    ]
    .prop_map(|runs| runs.into_iter().map(|(unit, bytes)| unit.repeat(bytes / unit.len())).collect())
    .boxed()
}

proptest! {
    // A case tokenizes up to a megabyte: few cases.
    #![proptest_config(run::config(32))]

    #[test]
    fn hostile_text_is_counted_without_a_panic(text in hostile_text()) {
        let _ = bpe();
        run::watchdog(move || {
            let tokens = count(&text);
            prop_assert!(tokens <= text.len() as u64);
            let mut tally = TextTally::default();
            tally.push(text.as_bytes());
            prop_assert!(tally.kept().len() <= MAX_COUNTED_TEXT);
            prop_assert!(tally.tokens() <= text.len() as u64);
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(run::config(512))]

    #[test]
    fn generated_text_is_scanned_from_any_chunk(
        chunks in prop::collection::vec(gen::bytes(crate::http::wire::fuzz::answers(), crate::http::wire::fuzz::WORDS), 0..16),
    ) {
        run::watchdog(move || {
            let mut tally = TextTally::default();
            let total: usize = chunks.iter().map(Vec::len).sum();
            for chunk in &chunks {
                collect_generated_text(chunk, &mut tally);
            }
            prop_assert!(tally.kept().len() <= MAX_COUNTED_TEXT);
            // What is kept is the inside of strings: with replacement characters for bytes that
            // are not UTF-8, at most three times the bytes scanned, counted at most a token a byte.
            prop_assert!(tally.tokens() <= 3 * total as u64 + 1);
            Ok(())
        })?;
    }

    #[test]
    fn prompts_of_any_shape_are_collected_within_bounds(doc in gen::document(crate::http::wire::fuzz::chat_requests(), crate::http::wire::fuzz::WORDS)) {
        run::watchdog(move || {
            let mut tally = TextTally::default();
            if let Some(doc) = gen::as_read(&doc) {
                prompt_text(&doc, &mut tally);
            }
            prop_assert!(tally.kept().len() <= MAX_COUNTED_TEXT);
            Ok(())
        })?;
    }
}
