//! Property and fuzz tests of the metering stage (`MeteredStream`) on whatever a provider
//! streams: raw bytes, framing soup, OpenAI chunk streams with hostile fields and absurd usage,
//! and Anthropic and Gemini streams through their translators, as `providers::response_stream`
//! builds them; all in arbitrary reads.

use super::tests::{Harness, REQUEST};
use super::*;
use crate::sse::TranslatedStream;
use proptest::prelude::*;
use std::sync::LazyLock;
use tollgate_fuzzing::chunks::{chunking, Chunking};
use tollgate_fuzzing::{run, sse};
use tollgate_schemas::{limits, UsageEvent};

/// Built once: metering a stream needs a router and an authenticated key.
pub(crate) static HARNESS: LazyLock<Harness> = LazyLock::new(|| runtime().block_on(Harness::new()));

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(rt) => rt,
        Err(e) => panic!("no runtime: {e}"),
    }
}

/// The provider's wire format, and so the translator between it and the metering stage.
#[derive(Clone, Copy, Debug)]
enum Wire {
    OpenAi,
    Anthropic,
    Gemini,
}

fn upstream(wire: Wire, reads: Vec<Bytes>) -> Upstream {
    let raw = futures::stream::iter(reads.into_iter().map(Ok::<_, StreamError>));
    match wire {
        Wire::OpenAi => Box::pin(raw),
        Wire::Anthropic => {
            Box::pin(TranslatedStream::new(raw, crate::providers::anthropic::MessagesToChatStream::new()))
        }
        Wire::Gemini => Box::pin(TranslatedStream::new(raw, crate::providers::gemini::GenerateToChatStream::new("g"))),
    }
}

/// What the metering stage did with one stream.
struct Metered {
    out: Vec<u8>,
    events: Vec<UsageEvent>,
}

fn meter(wire: Wire, reads: Vec<Bytes>, hide_usage_chunk: bool) -> Metered {
    let (out, events) = runtime().block_on(HARNESS.meter(upstream(wire, reads), hide_usage_chunk, REQUEST));
    Metered { out, events }
}

/// The error event the metering stage appends when a stream ends badly, if `out` ends with one.
fn without_error_event(out: &[u8]) -> &[u8] {
    let Some(at) = out.windows(10).rposition(|w| w == b"data: {\"er") else { return out };
    let tail = &out[at..];
    let is_ours = tail.ends_with(b"\n\n")
        && serde_json::from_slice::<serde_json::Value>(&tail[6..tail.len() - 2])
            .is_ok_and(|v| v["error"]["type"] == "api_error" && v["error"]["code"].is_string());
    if is_ours {
        &out[..at]
    } else {
        out
    }
}

/// Metering publishes exactly one event, which the ledger accepts (`check_event`: it is never
/// dead-lettered whatever the provider sent); the client gets at most the provider's bytes and
/// one error event; and, for untranslated streams, the bytes are the provider's own, cut at
/// most after `[DONE]`, with nothing else changed unless the usage chunk is hidden.
fn metering_holds(wire: Wire, data: &[u8], how: &Chunking, hide: bool) -> Result<(), TestCaseError> {
    let Metered { out, events } = meter(wire, how.split(data), hide);
    prop_assert_eq!(events.len(), 1, "one usage event per request");
    let event = &events[0];
    prop_assert_eq!(limits::check_event(event), Ok(()), "the ledger would refuse {:?}", event);
    prop_assert!(event.estimated || !event.partial || event.error_type.is_some());
    if let Wire::OpenAi = wire {
        prop_assert!(out.len() <= data.len() + 512, "{} bytes out of {}", out.len(), data.len());
        let passed = without_error_event(&out);
        if !hide {
            prop_assert!(data.starts_with(passed), "the client got other bytes than the provider's");
        }
        // However the bytes arrive, the client gets the same, and the same is billed.
        let whole = meter(wire, Chunking::Whole.split(data), hide);
        prop_assert_eq!(&whole.out, &out);
        let e = &whole.events[0];
        prop_assert_eq!(
            (e.prompt_tokens, e.completion_tokens, e.cached_tokens, e.partial, e.estimated),
            (event.prompt_tokens, event.completion_tokens, event.cached_tokens, event.partial, event.estimated)
        );
    }
    Ok(())
}

fn openai_streams() -> BoxedStrategy<Vec<u8>> {
    let chunks = sse::streams(crate::http::wire::fuzz::answers(), crate::http::wire::fuzz::WORDS, &["message"], false);
    prop_oneof![
        4 => sse::framed(chunks),
        1 => sse::soup(),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
    .boxed()
}

proptest! {
    // A case is a whole stream, metered twice (in its reads and whole): fewer cases.
    #![proptest_config(run::config(256))]

    #[test]
    fn openai_streams_are_metered_once_within_bounds(data in openai_streams(), how in chunking(), hide in any::<bool>()) {
        run::watchdog(move || metering_holds(Wire::OpenAi, &data, &how, hide))?;
    }

    #[test]
    fn anthropic_streams_are_metered_once_within_bounds(
        data in prop_oneof![4 => sse::framed(crate::providers::anthropic::fuzz::streams()), 1 => sse::soup()],
        how in chunking(),
    ) {
        run::watchdog(move || metering_holds(Wire::Anthropic, &data, &how, true))?;
    }

    #[test]
    fn gemini_streams_are_metered_once_within_bounds(
        data in prop_oneof![4 => sse::framed(crate::providers::gemini::fuzz::streams()), 1 => sse::soup()],
        how in chunking(),
    ) {
        run::watchdog(move || metering_holds(Wire::Gemini, &data, &how, true))?;
    }
}
