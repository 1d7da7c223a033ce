//! Server-sent events: framing, and stream translation between wire formats (an Anthropic or
//! Gemini stream into OpenAI chunks, OpenAI chunks into Anthropic events).
//!
//! A [`SseTranslator`] sees one event at a time and returns fully framed output events; a
//! [`TranslatedStream`] applies it to a byte stream without buffering more than one event.

use bytes::{Bytes, BytesMut};
use futures::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Turns events of one wire format into framed events of another.
pub trait SseTranslator: Send + 'static {
    /// One input event: its `event:` name, if any, and its `data:` payload (lines joined).
    /// Returns the output events, each framed (`data: ...\n\n`, with `event: ...` if needed).
    fn event(&mut self, name: Option<&str>, data: &[u8]) -> Vec<Bytes>;
    /// The input ended; anything still owed (e.g. `data: [DONE]`).
    fn end(&mut self) -> Vec<Bytes>;
}

/// A parsed event.
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    pub name: Option<&'a str>,
    pub data: Vec<u8>,
}

/// End (exclusive) of the first complete event in `buf`: after a blank line.
pub fn find_event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses one framed event: `event:` name and `data:` lines (joined with `\n`).
pub fn parse_event(raw: &[u8]) -> Event<'_> {
    let mut name = None;
    let mut data: Vec<u8> = Vec::new();
    let mut first = true;
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"event:") {
            name = std::str::from_utf8(rest.trim_ascii()).ok();
        } else if let Some(rest) = line.strip_prefix(b"data:") {
            if !first {
                data.push(b'\n');
            }
            data.extend_from_slice(rest.strip_prefix(b" ").unwrap_or(rest));
            first = false;
        }
    }
    Event { name, data }
}

/// Frames `data` as one event, with an `event:` line when `name` is given.
pub fn frame(name: Option<&str>, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 32);
    if let Some(n) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

/// Frames a JSON value as one event.
pub fn frame_json(name: Option<&str>, value: &serde_json::Value) -> Bytes {
    frame(name, value.to_string().as_bytes())
}

/// Applies a translator to a stream of bytes.
pub struct TranslatedStream<S, T> {
    inner: S,
    translator: T,
    buffer: BytesMut,
    done: bool,
}

impl<S, T> TranslatedStream<S, T> {
    pub fn new(inner: S, translator: T) -> Self {
        TranslatedStream { inner, translator, buffer: BytesMut::new(), done: false }
    }
}

impl<S, E, T> Stream for TranslatedStream<S, T>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    T: SseTranslator + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.buffer.extend_from_slice(&chunk);
                    let mut out = BytesMut::new();
                    while let Some(end) = find_event_end(&this.buffer) {
                        let raw = this.buffer.split_to(end);
                        let event = parse_event(&raw);
                        if event.data.is_empty() && event.name.is_none() {
                            continue; // comments and keep-alives
                        }
                        for piece in this.translator.event(event.name, &event.data) {
                            out.extend_from_slice(&piece);
                        }
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out.freeze())));
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.done = true;
                    let mut out = BytesMut::new();
                    if !this.buffer.is_empty() {
                        let raw = this.buffer.split();
                        let event = parse_event(&raw);
                        if !event.data.is_empty() {
                            for piece in this.translator.event(event.name, &event.data) {
                                out.extend_from_slice(&piece);
                            }
                        }
                    }
                    for piece in this.translator.end() {
                        out.extend_from_slice(&piece);
                    }
                    return if out.is_empty() { Poll::Ready(None) } else { Poll::Ready(Some(Ok(out.freeze()))) };
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    struct Upper;
    impl SseTranslator for Upper {
        fn event(&mut self, name: Option<&str>, data: &[u8]) -> Vec<Bytes> {
            vec![frame(name, &data.to_ascii_uppercase())]
        }
        fn end(&mut self) -> Vec<Bytes> {
            vec![frame(None, b"[DONE]")]
        }
    }

    #[test]
    fn parses_names_and_multiline_data() {
        let e = parse_event(b"event: message_start\ndata: {\"a\":\ndata: 1}\n\n");
        assert_eq!(e.name, Some("message_start"));
        assert_eq!(e.data, b"{\"a\":\n1}");
        assert_eq!(find_event_end(b"data: x\r\n\r\nrest"), Some(11));
    }

    #[tokio::test]
    async fn translates_events_split_across_chunks() {
        let chunks: Vec<Result<Bytes, ()>> = vec![
            Ok(Bytes::from_static(b"event: a\ndata: he")),
            Ok(Bytes::from_static(b"llo\n\ndata: x\n\n: ping\n\n")),
        ];
        let out: Vec<Bytes> =
            TranslatedStream::new(futures::stream::iter(chunks), Upper).map(|r| r.unwrap_or_default()).collect().await;
        let text: String = out.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
        assert_eq!(text, "event: a\ndata: HELLO\n\ndata: X\n\ndata: [DONE]\n\n");
    }
}
