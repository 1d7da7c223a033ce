//! Server-sent events: framing, and stream translation between wire formats (an Anthropic or
//! Gemini stream into OpenAI chunks, OpenAI chunks into Anthropic events).
//!
//! A [`SseTranslator`] sees one event at a time and returns fully framed output events; a
//! [`TranslatedStream`] applies it to a byte stream without buffering more than one event.
//! Framing never rescans bytes it has seen and never holds an event beyond a limit
//! ([`MAX_EVENT_BYTES`]): a provider is not trusted to end its events.

use bytes::{Bytes, BytesMut};
use futures::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Largest server-sent event held while waiting for its end. The largest legitimate events
/// carry base64 images (Gemini's inline data, the Responses API's partial images): a few MiB.
/// A provider that sends more without a blank line is cut off rather than buffered.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// A provider sent a server-sent event larger than the limit (or never ended one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the upstream provider sent a server-sent event larger than {limit} bytes")]
pub struct EventTooLarge {
    pub limit: usize,
}

/// Turns events of one wire format into framed events of another.
pub trait SseTranslator: Send + 'static {
    /// One input event: its `event:` name, if any, and its `data:` payload (lines joined).
    /// Returns the output events, each framed (`data: ...\n\n`, with `event: ...` if needed).
    fn event(&mut self, name: Option<&str>, data: &[u8]) -> Vec<Bytes>;
    /// The input ended; anything still owed (e.g. `data: [DONE]`).
    fn end(&mut self) -> Vec<Bytes>;
    /// Whether the output is complete (its last event, or an error, was sent): the rest of the
    /// input is not read.
    fn finished(&self) -> bool {
        false
    }
}

/// A parsed event.
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    pub name: Option<&'a str>,
    pub data: Vec<u8>,
}

/// End (exclusive) of the first complete event of `buf`, after its blank line (`\n\n` or
/// `\r\n\r\n`), searching from `from`: the bytes before it are known to hold no event end.
/// `Err(resume)` when no event is complete yet; the next search may start at `resume`.
pub fn find_event_end(buf: &[u8], from: usize) -> Result<usize, usize> {
    let mut at = from.min(buf.len());
    while let Some(i) = memchr::memchr(b'\n', &buf[at..]) {
        let lf = at + i;
        match buf.get(lf + 1) {
            None => return Err(lf),
            Some(b'\n') => return Ok(lf + 2),
            Some(b'\r') if lf > 0 && buf[lf - 1] == b'\r' => match buf.get(lf + 2) {
                None => return Err(lf),
                Some(b'\n') => return Ok(lf + 3),
                Some(_) => {}
            },
            Some(_) => {}
        }
        at = lf + 1;
    }
    Err(buf.len())
}

/// Cuts a byte stream into events. Each byte is scanned once, so an event that arrives in many
/// reads costs its length, not its length squared; no event is held beyond `limit` bytes.
#[derive(Debug)]
pub struct EventBuffer {
    buffer: BytesMut,
    /// Bytes at the front of `buffer` known to hold no event end.
    scanned: usize,
    limit: usize,
}

impl EventBuffer {
    pub fn new(limit: usize) -> EventBuffer {
        EventBuffer { buffer: BytesMut::new(), scanned: 0, limit }
    }

    pub fn extend(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete event, blank line included; `None` until one is complete. An event
    /// over the limit, complete or not, is an error, and the buffer is let go.
    pub fn next_event(&mut self) -> Result<Option<BytesMut>, EventTooLarge> {
        match find_event_end(&self.buffer, self.scanned) {
            Ok(end) if end <= self.limit => {
                self.scanned = 0;
                Ok(Some(self.buffer.split_to(end)))
            }
            Err(resume) if self.buffer.len() <= self.limit => {
                self.scanned = resume;
                Ok(None)
            }
            _ => {
                self.buffer = BytesMut::new();
                self.scanned = 0;
                Err(EventTooLarge { limit: self.limit })
            }
        }
    }

    /// Takes one read and hands each complete event (blank line included) to `each`, in order,
    /// until `each` says to stop ([`Fed`]). With nothing held from earlier reads, the events are
    /// handed out of `chunk` itself, without a copy, and only an unfinished event at its end is
    /// kept: a provider's usual read is whole events. The limit holds as in
    /// [`EventBuffer::next_event`].
    pub fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(&[u8]) -> Fed) -> Result<(), EventTooLarge> {
        if !self.buffer.is_empty() {
            self.extend(chunk);
            while let Some(event) = self.next_event()? {
                match each(&event) {
                    Fed::Next => {}
                    Fed::Stop => break,
                    Fed::Keep => {
                        // Back in front of what is left, to be handed out again.
                        let mut kept = event;
                        kept.extend_from_slice(&self.buffer);
                        self.buffer = kept;
                        self.scanned = 0;
                        break;
                    }
                }
            }
            return Ok(());
        }
        let mut rest = chunk;
        loop {
            match find_event_end(rest, 0) {
                Ok(end) if end <= self.limit => {
                    let (event, after) = rest.split_at(end);
                    match each(event) {
                        Fed::Next => rest = after,
                        Fed::Stop => return Ok(()),
                        Fed::Keep => {
                            self.buffer.extend_from_slice(rest);
                            self.scanned = 0;
                            return Ok(());
                        }
                    }
                }
                Err(resume) if rest.len() <= self.limit => {
                    self.buffer.extend_from_slice(rest);
                    self.scanned = resume;
                    return Ok(());
                }
                _ => return Err(EventTooLarge { limit: self.limit }),
            }
        }
    }

    /// What is left when the input ends: an event without its blank line.
    pub fn take_rest(&mut self) -> BytesMut {
        self.scanned = 0;
        self.buffer.split()
    }
}

/// What [`EventBuffer::feed`] does after handing out an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fed {
    /// The event was taken; hand out the next.
    Next,
    /// The event was taken; stop (the rest is not needed).
    Stop,
    /// The event was not taken: keep it, and what follows, for the next call.
    Keep,
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

/// Applies a translator to a stream of bytes. An event over the limit ([`MAX_EVENT_BYTES`]
/// unless told otherwise) ends the stream with an [`EventTooLarge`] error, after the output
/// translated before it.
pub struct TranslatedStream<S, T> {
    inner: S,
    translator: T,
    events: EventBuffer,
    /// An oversized event, reported once the output before it has been taken.
    failed: Option<EventTooLarge>,
    done: bool,
}

impl<S, T> TranslatedStream<S, T> {
    pub fn new(inner: S, translator: T) -> Self {
        TranslatedStream::with_limit(inner, translator, MAX_EVENT_BYTES)
    }

    pub fn with_limit(inner: S, translator: T, max_event_bytes: usize) -> Self {
        TranslatedStream { inner, translator, events: EventBuffer::new(max_event_bytes), failed: None, done: false }
    }
}

impl<S, E, T> Stream for TranslatedStream<S, T>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: From<EventTooLarge>,
    T: SseTranslator + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e.into())));
        }
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.events.extend(&chunk);
                    let mut out = BytesMut::new();
                    while !this.done {
                        let raw = match this.events.next_event() {
                            Ok(Some(raw)) => raw,
                            Ok(None) => break,
                            Err(e) => {
                                this.done = true;
                                this.failed = Some(e);
                                break;
                            }
                        };
                        let event = parse_event(&raw);
                        if event.data.is_empty() && event.name.is_none() {
                            continue; // comments and keep-alives
                        }
                        for piece in this.translator.event(event.name, &event.data) {
                            out.extend_from_slice(&piece);
                        }
                        this.done = this.translator.finished();
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out.freeze())));
                    }
                    if let Some(e) = this.failed.take() {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    if this.done {
                        return Poll::Ready(None);
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.done = true;
                    let mut out = BytesMut::new();
                    let raw = this.events.take_rest();
                    if !raw.is_empty() {
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
pub(crate) mod fuzz;

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

    /// Runs `Upper` over `chunks`; returns the text and the error that ended it, if any.
    async fn translate(chunks: Vec<Bytes>, limit: usize) -> (String, Option<EventTooLarge>) {
        let input = futures::stream::iter(chunks.into_iter().map(Ok::<_, EventTooLarge>));
        let mut stream = TranslatedStream::with_limit(input, Upper, limit);
        let (mut text, mut error) = (String::new(), None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(b) => text.push_str(&String::from_utf8_lossy(&b)),
                Err(e) => error = Some(e),
            }
        }
        (text, error)
    }

    #[test]
    fn parses_names_and_multiline_data() {
        let e = parse_event(b"event: message_start\ndata: {\"a\":\ndata: 1}\n\n");
        assert_eq!(e.name, Some("message_start"));
        assert_eq!(e.data, b"{\"a\":\n1}");
    }

    #[test]
    fn finds_event_ends_and_where_to_resume() {
        assert_eq!(find_event_end(b"data: a\n\ndata: b", 0), Ok(9));
        assert_eq!(find_event_end(b"data: a\r\n\r\n", 0), Ok(11));
        assert_eq!(find_event_end(b"data: x\r\n\r\nrest", 0), Ok(11));
        assert_eq!(find_event_end(b"data: a\r\ndata: b\r\n\r\n", 0), Ok(20));
        assert_eq!(find_event_end(b"data: a\n", 0), Err(7));
        assert_eq!(find_event_end(b"data: a\r\n\r", 0), Err(8));
        assert_eq!(find_event_end(b"data: a", 0), Err(7));
        // A resumed search finds what a whole one finds.
        let buf = b"data: a\ndata: b\n\n";
        for from in 0..=7 {
            assert_eq!(find_event_end(buf, from), Ok(17), "from {from}");
        }
    }

    /// An event that arrives a byte at a time is scanned once: the bytes examined by all the
    /// searches together stay within twice its length (a search from the start on every read
    /// would examine about 10¹⁰ here).
    #[test]
    fn framing_scans_each_byte_once() {
        let mut event = b"data: ".to_vec();
        event.extend(std::iter::repeat_n(b'x', 50_000).flat_map(|b| [b, b'\n']));
        event.extend_from_slice(b"\n");
        let mut buffer = EventBuffer::new(MAX_EVENT_BYTES);
        let mut examined = 0;
        let mut found = None;
        for (i, byte) in event.iter().enumerate() {
            buffer.extend(&[*byte]);
            examined += buffer.buffer.len() - buffer.scanned.min(buffer.buffer.len());
            if let Some(e) = buffer.next_event().ok().flatten() {
                found = Some((i, e.len()));
            }
        }
        assert_eq!(found, Some((event.len() - 1, event.len())));
        assert!(examined <= 2 * event.len(), "examined {examined} bytes for an event of {}", event.len());
    }

    #[tokio::test]
    async fn translates_events_split_across_chunks() {
        let chunks =
            vec![Bytes::from_static(b"event: a\ndata: he"), Bytes::from_static(b"llo\n\ndata: x\n\n: ping\n\n")];
        let (text, error) = translate(chunks, MAX_EVENT_BYTES).await;
        assert_eq!(text, "event: a\ndata: HELLO\n\ndata: X\n\ndata: [DONE]\n\n");
        assert_eq!(error, None);
    }

    /// An event over the limit ends the stream with an error after what came before it, and
    /// the input after it is not read; one without an end is cut at the limit too.
    #[tokio::test]
    async fn an_oversized_event_ends_the_stream() {
        let chunks = vec![
            Bytes::from_static(b"data: a\n\ndata: "),
            Bytes::from(vec![b'b'; 64]),
            Bytes::from_static(b"\n\ndata: c\n\n"),
        ];
        let (text, error) = translate(chunks, 32).await;
        assert_eq!(text, "data: A\n\n");
        assert_eq!(error, Some(EventTooLarge { limit: 32 }));

        let unended = std::iter::repeat_n(Bytes::from(vec![b'z'; 16]), 10);
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let input = futures::stream::iter(unended.inspect(|_| {
            reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }))
        .map(Ok::<_, EventTooLarge>);
        let out: Vec<_> = TranslatedStream::with_limit(input, Upper, 32).collect().await;
        assert_eq!(out, vec![Err(EventTooLarge { limit: 32 })]);
        assert_eq!(reads.into_inner(), 3, "reads after the limit");
    }

    /// A translator that says it is finished ends the stream: the rest is not read.
    #[tokio::test]
    async fn a_finished_translator_ends_the_stream() {
        struct UntilStop(bool);
        impl SseTranslator for UntilStop {
            fn event(&mut self, _: Option<&str>, data: &[u8]) -> Vec<Bytes> {
                self.0 = data == b"stop";
                vec![frame(None, data)]
            }
            fn end(&mut self) -> Vec<Bytes> {
                vec![frame(None, b"end")]
            }
            fn finished(&self) -> bool {
                self.0
            }
        }
        let chunks = [&b"data: a\n\ndata: stop\n\ndata: b\n\n"[..], b"data: c\n\n"];
        let input = futures::stream::iter(chunks.map(|c| Ok::<_, EventTooLarge>(Bytes::from_static(c))));
        let out: Vec<_> = TranslatedStream::new(input, UntilStop(false)).collect().await;
        assert_eq!(out, vec![Ok(Bytes::from_static(b"data: a\n\ndata: stop\n\n"))]);
    }
}
