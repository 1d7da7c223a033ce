//! A streamed pass-through answer: its bytes passed on as they come, its server-sent events
//! read on the way for the usage they report, and the request metered once when the stream
//! ends, fails, goes silent past the deployment's `stream_idle_timeout`, or is dropped because
//! the client left (then `partial`).

use super::{usage, Family};
use crate::limits::pricing::Tokens;
use crate::metering::recorder::{Outcome, UsageRecorder};
use crate::providers::Deployment;
use futures::{Stream, StreamExt};
use std::sync::Arc;
use tollgate_schemas::limits::MAX_TOKENS_PER_REQUEST;

/// The longest event line read for usage; longer lines pass on unread.
const MAX_LINE_BYTES: usize = 1 << 20;

/// The usage a stream's events reported so far.
struct Scan {
    family: Family,
    /// The unfinished last line of what has passed.
    line: Vec<u8>,
    /// A line beyond `MAX_LINE_BYTES` is being skipped to its end.
    skipping: bool,
    tokens: Option<Tokens>,
}

impl Scan {
    fn new(family: Family) -> Scan {
        Scan { family, line: Vec::new(), skipping: false, tokens: None }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.push(&rest[..end]);
            if !std::mem::take(&mut self.skipping) {
                let line = std::mem::take(&mut self.line);
                if let Some(data) = line.strip_prefix(b"data:") {
                    usage::streamed(self.family, data.trim_ascii(), &mut self.tokens);
                }
            }
            self.line.clear();
            rest = &rest[end + 1..];
        }
        self.push(rest);
    }

    fn push(&mut self, part: &[u8]) {
        if self.skipping || self.line.len() + part.len() > MAX_LINE_BYTES {
            self.skipping = true;
            self.line.clear();
        } else {
            self.line.extend_from_slice(part);
        }
    }
}

/// The recorder a stream finishes, with what it reported.
struct Meter {
    recorder: Option<UsageRecorder>,
    deployment: Arc<Deployment>,
    scan: Scan,
}

impl Meter {
    fn finish(&mut self, partial: bool) {
        let Some(recorder) = self.recorder.take() else { return };
        let tokens = self.scan.tokens.filter(|t| t.largest() <= MAX_TOKENS_PER_REQUEST);
        recorder.finish(Outcome {
            status: 200,
            estimated: tokens.is_none(),
            tokens: tokens.unwrap_or_default(),
            served_model: Some(self.deployment.upstream_model.clone()),
            partial,
            deployment: Some(&self.deployment),
            ..Outcome::default()
        });
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.finish(true);
    }
}

/// The provider's stream, metered as it passes.
pub fn metered(
    response: reqwest::Response,
    recorder: UsageRecorder,
    family: Family,
    deployment: Arc<Deployment>,
) -> impl Stream<Item = Result<bytes::Bytes, actix_web::Error>> + 'static {
    let idle = deployment.stream_idle_timeout;
    let meter = Meter { recorder: Some(recorder), deployment, scan: Scan::new(family) };
    let upstream = Box::pin(response.bytes_stream());
    futures::stream::unfold(Some((upstream, meter)), move |state| async move {
        let (mut upstream, mut meter) = state?;
        match tokio::time::timeout(idle, upstream.next()).await {
            Ok(Some(Ok(bytes))) => {
                meter.scan.feed(&bytes);
                Some((Ok(bytes), Some((upstream, meter))))
            }
            Ok(Some(Err(_))) | Err(_) => {
                meter.finish(true);
                Some((Err(actix_web::error::ErrorBadGateway("the provider's stream was cut")), None))
            }
            Ok(None) => {
                meter.finish(false);
                None
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_across_chunk_boundaries() {
        let mut m = Scan::new(Family::OpenAi);
        m.feed(b"data: {\"choices\":[]}\n\ndata: {\"choices\":[],\"usa");
        m.feed(b"ge\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n");
        assert_eq!(m.tokens.map(|t| (t.prompt, t.completion)), Some((2, 3)));
    }

    #[test]
    fn an_overlong_line_is_skipped_not_kept() {
        let mut m = Scan::new(Family::Gemini);
        m.feed(b"data: {\"usageMetadata\":{\"promptTokenCount\":1,\"x\":\"");
        m.feed(&vec![b'a'; MAX_LINE_BYTES]);
        assert!(m.line.is_empty() && m.skipping);
        m.feed(b"\"}}\ndata: {\"usageMetadata\":{\"promptTokenCount\":7}}\n");
        assert_eq!(m.tokens.map(|t| t.prompt), Some(7));
    }
}
