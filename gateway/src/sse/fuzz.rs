//! Property and fuzz tests of SSE framing (`find_event_end`, `EventBuffer`, `parse_event`) on
//! arbitrary bytes arriving in arbitrary reads, and the helpers the translators' and the
//! metering stage's fuzz tests share: running a translator over reads, and checking that output
//! is well-formed SSE.

use super::*;
use futures::StreamExt;
use proptest::prelude::*;
use tollgate_fuzzing::chunks::{chunking, Chunking};
use tollgate_fuzzing::{run, sse as gen};

/// One event of a translator's output.
#[derive(Debug)]
pub(crate) struct Frame {
    pub name: Option<String>,
    /// `[DONE]`, or the JSON object of the payload in `json`.
    pub data: String,
    pub json: Option<serde_json::Value>,
}

/// The events of translated output; an error when it is not well-formed: every event is an
/// optional `event: <name>` line and one `data: <payload>` line, then a blank line, and each
/// payload is `[DONE]` or a JSON object (what clients' SSE parsers and SDKs rely on).
pub(crate) fn frames(out: &[u8]) -> Result<Vec<Frame>, String> {
    let text = std::str::from_utf8(out).map_err(|e| format!("output is not UTF-8: {e}"))?;
    let mut frames = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find("\n\n").ok_or_else(|| format!("an event without its blank line: {rest:?}"))?;
        let event = &rest[..end];
        rest = &rest[end + 2..];
        let mut lines = event.split('\n');
        let mut line = lines.next().unwrap_or_default();
        let name = match line.strip_prefix("event: ") {
            Some(name) => {
                line = lines.next().ok_or_else(|| format!("an event without data: {event:?}"))?;
                Some(name.to_owned())
            }
            None => None,
        };
        let data = line.strip_prefix("data: ").ok_or_else(|| format!("not a data line: {line:?}"))?;
        if lines.next().is_some() || event.contains('\r') {
            return Err(format!("an event of more than its lines: {event:?}"));
        }
        let json = if data == "[DONE]" {
            None
        } else {
            match serde_json::from_str::<serde_json::Value>(data) {
                Ok(v @ serde_json::Value::Object(_)) => Some(v),
                _ => return Err(format!("a payload that is not a JSON object: {data:?}")),
            }
        };
        frames.push(Frame { name, data: data.to_owned(), json });
    }
    Ok(frames)
}

/// What a [`TranslatedStream`] produced from some reads.
#[derive(Debug)]
pub(crate) struct Translated {
    pub out: Vec<u8>,
    pub error: Option<EventTooLarge>,
}

/// Runs `translator` over `reads` through a [`TranslatedStream`] (events held at most `limit`
/// bytes). Fails when anything follows an error.
pub(crate) fn translate<T: SseTranslator + Unpin>(
    reads: Vec<Bytes>,
    translator: T,
    limit: usize,
) -> Result<Translated, TestCaseError> {
    let input = futures::stream::iter(reads.into_iter().map(Ok::<_, EventTooLarge>));
    let items: Vec<Result<Bytes, EventTooLarge>> =
        futures::executor::block_on(TranslatedStream::with_limit(input, translator, limit).collect());
    let mut out = Vec::new();
    let mut error = None;
    for item in items {
        prop_assert!(error.is_none(), "output after the stream failed");
        match item {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(e) => error = Some(e),
        }
    }
    Ok(Translated { out, error })
}

/// Most a translator may write for one input event: a multiple of the event's own bytes (text is
/// re-escaped, a tool call opens a block) and a constant (ids, model and framing). Nothing a
/// provider said earlier may make every later event's output larger without bound.
fn output_bound(event_bytes: usize) -> usize {
    32 * event_bytes + 4096
}

/// Feeds `events` to `translator` one by one, then ends it; fails when one event's output passes
/// [`output_bound`] or anything is written after the translator said it was finished. Returns
/// the output.
pub(crate) fn feed<T: SseTranslator>(translator: &mut T, events: &[gen::Event]) -> Result<Vec<u8>, TestCaseError> {
    let mut out = Vec::new();
    for event in events {
        let finished = translator.finished();
        let written: Vec<Bytes> = translator.event(event.name.as_deref(), event.data.as_bytes());
        let size: usize = written.iter().map(Bytes::len).sum();
        prop_assert!(!finished || size == 0, "output after the translator finished");
        let weight = event.data.len() + event.name.as_ref().map_or(0, String::len);
        prop_assert!(size <= output_bound(weight), "{} bytes written for an event of {} bytes", size, weight);
        written.iter().for_each(|piece| out.extend_from_slice(piece));
    }
    let end: usize = translator
        .end()
        .iter()
        .map(|piece| {
            out.extend_from_slice(piece);
            piece.len()
        })
        .sum();
    prop_assert!(end <= output_bound(0), "{} bytes written at the end", end);
    Ok(out)
}

/// Checks output in OpenAI's chunk format: unnamed events; `[DONE]` at most once and last; at
/// most one usage chunk (`choices: []`), right before `[DONE]`; every other event a chunk whose
/// `model` is a name within bounds (or null), or an error envelope. `errors_end`: an error is the
/// last event.
pub(crate) fn openai_chunks_hold(frames: &[Frame], errors_end: bool) -> Result<(), TestCaseError> {
    let last = frames.len().saturating_sub(1);
    for (i, frame) in frames.iter().enumerate() {
        prop_assert!(frame.name.is_none(), "a named OpenAI event: {:?}", frame);
        let Some(json) = &frame.json else {
            prop_assert_eq!(i, last, "[DONE] is not the last event");
            continue;
        };
        if let Some(error) = json.get("error") {
            prop_assert!(error["message"].is_string() && error["type"].is_string(), "{}", json);
            prop_assert!(!errors_end || i == last, "an event after an error");
            continue;
        }
        prop_assert_eq!(&json["object"], "chat.completion.chunk");
        let model = &json["model"];
        let max = tollgate_schemas::limits::MAX_NAME_BYTES;
        prop_assert!(
            model.is_null()
                || model.as_str().is_some_and(|m| tollgate_schemas::limits::check_name("model", m, max).is_ok()),
            "a chunk names a model out of bounds: {}",
            model
        );
        prop_assert!(
            json["id"].as_str().is_some_and(|id| id.len() <= 2 * max),
            "a chunk id out of bounds: {}",
            json["id"]
        );
        let choices = json["choices"].as_array().map(Vec::len);
        prop_assert!(choices.is_some(), "{}", json);
        if choices == Some(0) {
            prop_assert!(json["usage"].is_object(), "{}", json);
            prop_assert!(i + 1 == last && frames[last].data == "[DONE]", "the usage chunk is not right before [DONE]");
        }
    }
    Ok(())
}

/// The events an [`EventBuffer`] cuts from `reads`, the error that stopped it, and what is left.
fn cut(reads: &[Bytes], limit: usize) -> (Vec<BytesMut>, Option<EventTooLarge>, BytesMut) {
    let mut buffer = EventBuffer::new(limit);
    let mut events = Vec::new();
    for read in reads {
        buffer.extend(read);
        loop {
            match buffer.next_event() {
                Ok(Some(event)) => events.push(event),
                Ok(None) => break,
                Err(e) => return (events, Some(e), buffer.take_rest()),
            }
        }
    }
    (events, None, buffer.take_rest())
}

/// [`cut`] through [`EventBuffer::feed`]: events handed out of each read where they are whole.
fn fed(reads: &[Bytes], limit: usize) -> (Vec<Vec<u8>>, Option<EventTooLarge>, BytesMut) {
    let mut buffer = EventBuffer::new(limit);
    let mut events = Vec::new();
    for read in reads {
        if let Err(e) = buffer.feed(read, |event| {
            events.push(event.to_vec());
            Fed::Next
        }) {
            return (events, Some(e), buffer.take_rest());
        }
    }
    (events, None, buffer.take_rest())
}

/// Bytes for the framing: SSE token soup, arbitrary bytes, framed plausible events.
fn stream_bytes() -> BoxedStrategy<Vec<u8>> {
    let events = prop::collection::vec(
        ("[a-z_]{0,12}", "[^\n]{0,40}", any::<bool>())
            .prop_map(|(name, data, named)| gen::Event { name: named.then_some(name), data }),
        0..24,
    )
    .boxed();
    prop_oneof![
        2 => gen::soup(),
        1 => prop::collection::vec(any::<u8>(), 0..512),
        2 => gen::framed(events),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(run::config(1_000))]

    /// However the bytes arrive, the same events come out, no byte is lost or repeated, and
    /// every event ends with its blank line.
    #[test]
    fn events_do_not_depend_on_how_bytes_arrive(data in stream_bytes(), how in chunking()) {
        run::watchdog(move || {
            let (events, error, rest) = cut(&how.split(&data), MAX_EVENT_BYTES);
            let (whole, _, whole_rest) = cut(&Chunking::Whole.split(&data), MAX_EVENT_BYTES);
            prop_assert!(error.is_none());
            prop_assert_eq!(&events, &whole);
            prop_assert_eq!(&rest, &whole_rest);
            let mut joined: Vec<u8> = events.iter().flat_map(|e| e.iter().copied()).collect();
            joined.extend_from_slice(&rest);
            prop_assert_eq!(joined, data);
            for event in &events {
                prop_assert!(event.ends_with(b"\n\n") || event.ends_with(b"\r\n\r\n"), "{:?}", event);
                let _ = parse_event(event);
            }
            let _ = parse_event(&rest);
            Ok(())
        })?;
    }

    /// With a small limit no event returned passes it, and without an oversized event the
    /// events do not depend on how the bytes arrive.
    #[test]
    fn no_event_passes_the_limit(data in stream_bytes(), how in chunking(), limit in 1usize..256) {
        run::watchdog(move || {
            let (events, error, _) = cut(&how.split(&data), limit);
            prop_assert!(events.iter().all(|e| e.len() <= limit));
            let (whole, whole_error, _) = cut(&Chunking::Whole.split(&data), limit);
            if error.is_none() && whole_error.is_none() {
                prop_assert_eq!(events, whole);
            }
            Ok(())
        })?;
    }

    /// Feeding reads finds the events, the oversized event and the rest that cutting them from
    /// a buffer finds, whatever the limit and however the bytes arrive.
    #[test]
    fn feeding_finds_what_cutting_finds(data in stream_bytes(), how in chunking(), limit in 1usize..512) {
        run::watchdog(move || {
            let reads = how.split(&data);
            let (events, error, rest) = cut(&reads, limit);
            let (fed_events, fed_error, fed_rest) = fed(&reads, limit);
            let events: Vec<Vec<u8>> = events.iter().map(|e| e.to_vec()).collect();
            prop_assert_eq!(events, fed_events);
            prop_assert_eq!(error, fed_error);
            if error.is_none() {
                prop_assert_eq!(rest, fed_rest);
            }
            Ok(())
        })?;
    }

    /// A search resumed where an earlier one stopped finds what a search from the start finds:
    /// `EventBuffer` relies on it to scan each byte once.
    #[test]
    fn a_resumed_search_finds_the_same_end(data in stream_bytes(), at in any::<prop::sample::Index>()) {
        run::watchdog(move || {
            let prefix = at.index(data.len() + 1);
            if let Err(resume) = find_event_end(&data[..prefix], 0) {
                prop_assert_eq!(find_event_end(&data, resume), find_event_end(&data, 0));
            }
            Ok(())
        })?;
    }
}
