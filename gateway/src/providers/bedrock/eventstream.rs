//! AWS's event-stream framing (`application/vnd.amazon.eventstream`), which ConverseStream
//! answers in: binary messages, each a prelude (total length, headers length, CRC32 of the
//! two), headers, a payload and a CRC32 of the whole message.
//!
//! The decoder is fed the body as it arrives and keeps at most one message, bounded by
//! [`MAX_MESSAGE_BYTES`]; every length and both checksums are checked before a byte is trusted.
//! Hostile input ends with a [`FrameError`], never a panic.

/// The largest message accepted: Bedrock's events are a few KiB.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Prelude (12 bytes) and message CRC (4): the smallest message.
const OVERHEAD: usize = 16;

/// Why a stream's framing cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("an event-stream message declares {0} bytes, over the limit")]
    TooLarge(u64),
    #[error("an event-stream message's lengths do not fit together")]
    BadLength,
    #[error("an event-stream message's prelude checksum does not match")]
    PreludeChecksum,
    #[error("an event-stream message's checksum does not match")]
    MessageChecksum,
    #[error("an event-stream message's headers are malformed")]
    BadHeaders,
}

/// One message: its string headers (other header types are skipped) and its payload.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Bytes received and not yet made into messages.
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: Vec<u8>,
}

impl Decoder {
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Whether bytes of an unfinished message are held.
    pub fn has_partial(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// The next whole message, `None` until one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        if self.buffer.len() < 12 {
            return Ok(None);
        }
        let total = read_u32(&self.buffer, 0) as usize;
        let headers_len = read_u32(&self.buffer, 4) as usize;
        if crc32fast::hash(&self.buffer[..8]) != read_u32(&self.buffer, 8) {
            return Err(FrameError::PreludeChecksum);
        }
        if total > MAX_MESSAGE_BYTES {
            return Err(FrameError::TooLarge(total as u64));
        }
        if total < OVERHEAD || headers_len > total - OVERHEAD {
            return Err(FrameError::BadLength);
        }
        if self.buffer.len() < total {
            return Ok(None);
        }
        let message: Vec<u8> = self.buffer.drain(..total).collect();
        if crc32fast::hash(&message[..total - 4]) != read_u32(&message, total - 4) {
            return Err(FrameError::MessageChecksum);
        }
        let headers = parse_headers(&message[12..12 + headers_len])?;
        let payload = message[12 + headers_len..total - 4].to_vec();
        Ok(Some(Message { headers, payload }))
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(word)
}

/// Takes `n` bytes from the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], FrameError> {
    if rest.len() < n {
        return Err(FrameError::BadHeaders);
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn parse_headers(mut rest: &[u8]) -> Result<Vec<(String, String)>, FrameError> {
    let mut headers = Vec::new();
    while !rest.is_empty() {
        let name_len = take(&mut rest, 1)?[0] as usize;
        let name = String::from_utf8_lossy(take(&mut rest, name_len)?).into_owned();
        let kind = take(&mut rest, 1)?[0];
        let value = match kind {
            0 | 1 => None,
            2 => take(&mut rest, 1).map(|_| None)?,
            3 => take(&mut rest, 2).map(|_| None)?,
            4 => take(&mut rest, 4).map(|_| None)?,
            5 | 8 => take(&mut rest, 8).map(|_| None)?,
            9 => take(&mut rest, 16).map(|_| None)?,
            6 | 7 => {
                let len = take(&mut rest, 2)?;
                let len = u16::from_be_bytes([len[0], len[1]]) as usize;
                let bytes = take(&mut rest, len)?;
                (kind == 7).then(|| String::from_utf8_lossy(bytes).into_owned())
            }
            _ => return Err(FrameError::BadHeaders),
        };
        if let Some(value) = value {
            headers.push((name, value));
        }
    }
    Ok(headers)
}

/// One message with string headers, framed (the inverse of [`Decoder`], for tests and mocks).
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut head = Vec::new();
    for (name, value) in headers {
        head.push(name.len() as u8);
        head.extend_from_slice(name.as_bytes());
        head.push(7);
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        head.extend_from_slice(value.as_bytes());
    }
    let total = (OVERHEAD + head.len() + payload.len()) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, payload: &str) -> Vec<u8> {
        encode(&[(":message-type", "event"), (":event-type", kind)], payload.as_bytes())
    }

    #[test]
    fn messages_are_read_across_any_split() {
        let mut wire = event("messageStart", r#"{"role":"assistant"}"#);
        wire.extend(event("messageStop", r#"{"stopReason":"end_turn"}"#));
        for split in 0..wire.len() {
            let mut decoder = Decoder::default();
            let mut seen = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                decoder.extend(part);
                while let Some(m) = decoder.next_message().unwrap() {
                    seen.push(m);
                }
            }
            assert_eq!(seen.len(), 2, "split at {split}");
            assert_eq!(seen[0].header(":event-type"), Some("messageStart"));
            assert_eq!(seen[1].payload, br#"{"stopReason":"end_turn"}"#);
            assert!(!decoder.has_partial());
        }
    }

    #[test]
    fn a_flipped_bit_fails_a_checksum() {
        let wire = event("contentBlockDelta", r#"{"delta":{"text":"hi"}}"#);
        for at in 0..wire.len() {
            let mut bad = wire.clone();
            bad[at] ^= 0x01;
            let mut decoder = Decoder::default();
            decoder.extend(&bad);
            let got = decoder.next_message();
            assert!(got.is_err() || got == Ok(None), "byte {at}: {got:?}");
        }
        let mut bad = wire.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let mut decoder = Decoder::default();
        decoder.extend(&bad);
        assert_eq!(decoder.next_message(), Err(FrameError::MessageChecksum));
        bad = wire;
        bad[9] ^= 0xff;
        decoder = Decoder::default();
        decoder.extend(&bad);
        assert_eq!(decoder.next_message(), Err(FrameError::PreludeChecksum));
    }

    #[test]
    fn oversized_and_inconsistent_lengths_are_refused_before_reading_on() {
        let prelude = |total: u32, headers: u32| {
            let mut p = total.to_be_bytes().to_vec();
            p.extend(headers.to_be_bytes());
            p.extend(crc32fast::hash(&p).to_be_bytes());
            p
        };
        let mut decoder = Decoder::default();
        decoder.extend(&prelude(u32::MAX, 0));
        assert_eq!(decoder.next_message(), Err(FrameError::TooLarge(u64::from(u32::MAX))));
        let mut decoder = Decoder::default();
        decoder.extend(&prelude(20, 10));
        assert_eq!(decoder.next_message(), Err(FrameError::BadLength));
        let mut decoder = Decoder::default();
        decoder.extend(&prelude(8, 0));
        assert_eq!(decoder.next_message(), Err(FrameError::BadLength));
        // Within the bound, a message waits for its bytes.
        let mut decoder = Decoder::default();
        decoder.extend(&prelude(MAX_MESSAGE_BYTES as u32, 0));
        assert_eq!(decoder.next_message(), Ok(None));
    }
}
