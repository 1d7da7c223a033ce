//! Server-sent event streams: plausible events framed in every way the format allows (`\n` or
//! `\r\n`, `data:` with or without its space, data split over several lines, comments, `id:`
//! and `retry:` lines, a last event without its blank line), and token soup for the framing
//! itself.

use crate::json;
use proptest::prelude::*;
use proptest::sample::select;

/// One event before framing.
#[derive(Clone, Debug)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

/// How one event is written.
#[derive(Clone, Debug)]
struct Style {
    crlf: bool,
    space_after_colon: bool,
    /// A line before the event's own lines.
    extra: Option<&'static str>,
    /// An empty event (a blank line) before it.
    blank_before: bool,
}

fn style() -> BoxedStrategy<Style> {
    (
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.8),
        prop::option::weighted(0.15, select(vec![": ping", ":", "id: 7", "retry: 100", "data", "event"])),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(crlf, space_after_colon, extra, blank_before)| Style {
            crlf,
            space_after_colon,
            extra,
            blank_before,
        })
        .boxed()
}

/// `events` framed as a stream; the last event sometimes lacks its blank line (a provider that
/// closes mid-event).
pub fn framed(events: BoxedStrategy<Vec<Event>>) -> BoxedStrategy<Vec<u8>> {
    (events, prop::collection::vec(style(), 64), prop::bool::weighted(0.15))
        .prop_map(|(events, styles, cut_last)| {
            let mut out = Vec::new();
            for (i, event) in events.iter().enumerate() {
                let style = &styles[i % styles.len()];
                let nl: &[u8] = if style.crlf { b"\r\n" } else { b"\n" };
                let sp: &[u8] = if style.space_after_colon { b" " } else { b"" };
                if style.blank_before {
                    out.extend_from_slice(nl);
                }
                if let Some(extra) = style.extra {
                    out.extend_from_slice(extra.as_bytes());
                    out.extend_from_slice(nl);
                }
                if let Some(name) = &event.name {
                    out.extend_from_slice(b"event:");
                    out.extend_from_slice(sp);
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(nl);
                }
                for line in event.data.split('\n') {
                    out.extend_from_slice(b"data:");
                    out.extend_from_slice(sp);
                    out.extend_from_slice(line.as_bytes());
                    out.extend_from_slice(nl);
                }
                if !(cut_last && i + 1 == events.len()) {
                    out.extend_from_slice(nl);
                }
            }
            out
        })
        .boxed()
}

/// Streams of a protocol: up to 32 events whose data is one of `docs` (written compact, or
/// pretty: data over several lines), `[DONE]`, or arbitrary text; named (sometimes) from `names`.
pub fn events(docs: BoxedStrategy<serde_json::Value>, names: &'static [&'static str]) -> BoxedStrategy<Vec<Event>> {
    let data = prop_oneof![
        12 => docs.clone().prop_map(|doc| serde_json::to_string(&doc).unwrap_or_default()),
        1 => docs.prop_map(|doc| serde_json::to_string_pretty(&doc).unwrap_or_default()),
        1 => Just("[DONE]".to_owned()),
        1 => "\\PC{0,32}",
    ];
    let name = prop_oneof![3 => Just(None), 1 => select(names).prop_map(|n| Some(n.to_owned())), 1 => "[a-z_ ]{0,12}".prop_map(Some)];
    prop::collection::vec((name, data).prop_map(|(name, data)| Event { name, data }), 0..32).boxed()
}

/// Streams of a protocol: a known-good stream (`seeds`, in their order) with some events
/// mutated, or events drawn from mutated seeds and the vocabulary in any order. `named`: events
/// carry their JSON `type` as their `event:` name, as Anthropic's do.
pub fn streams(
    seeds: Vec<serde_json::Value>,
    words: &'static [&'static str],
    names: &'static [&'static str],
    named: bool,
) -> BoxedStrategy<Vec<Event>> {
    let in_order: Vec<BoxedStrategy<serde_json::Value>> = seeds
        .iter()
        .map(|seed| {
            let seed = vec![seed.clone()];
            prop_oneof![4 => Just(seed[0].clone()), 1 => json::mutated(seed.clone(), words), 1 => json::perturbed(seed, words)]
                .boxed()
        })
        .collect();
    let ordered = in_order.prop_map(move |docs| {
        docs.into_iter()
            .map(|doc| Event {
                name: if named { doc.get("type").and_then(|t| t.as_str()).map(str::to_owned) } else { None },
                data: serde_json::to_string(&doc).unwrap_or_default(),
            })
            .collect::<Vec<Event>>()
    });
    prop_oneof![1 => ordered, 1 => events(json::document(seeds, words), names)].boxed()
}

/// Pieces of SSE framing and of the JSON inside, with arbitrary bytes between them.
const TOKENS: &[&[u8]] = &[
    b"data:",
    b"data: ",
    b"event:",
    b"event: ",
    b"\n",
    b"\r\n",
    b"\r",
    b"\n\n",
    b"\r\n\r\n",
    b": ping\n\n",
    b"[DONE]",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"\\",
    b"\"usage\"",
    b"\"usage\":{\"prompt_tokens\":18446744073709551615}",
    b"\"content\":\"",
    b"\"text\":\"",
    b"\"arguments\":\"",
    b"\"choices\":[]",
    b"\"model\":\"",
    b"\"type\":\"message_start\"",
    b"\"type\":\"content_block_delta\"",
    b"\"candidates\":[",
    b"\"error\":{",
    b"\xc3\xa9",
    b"\xc3",
    b"\xf0\x9d\x84\x9e",
    b"\xf0\x9d",
    b"\xef\xbb\xbf",
];

/// Framing soup: SSE and JSON tokens and arbitrary bytes, up to a few KiB.
pub fn soup() -> BoxedStrategy<Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => select(TOKENS).prop_map(<[u8]>::to_vec),
            1 => prop::collection::vec(any::<u8>(), 0..8),
            1 => "[a-z0-9 ]{0,16}".prop_map(String::into_bytes),
        ],
        0..128,
    )
    .prop_map(|pieces| pieces.concat())
    .boxed()
}
