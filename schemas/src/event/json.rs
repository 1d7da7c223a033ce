//! The usage event written as JSON by hand: byte for byte what `serde_json::to_vec` writes for
//! it (the tests hold the two equal, over generated events and the golden fixtures), at a
//! fraction of its cost, since one is written for every request. What serde spends most of its
//! time on is scanning each string for characters to escape, the field names included: here the
//! field names are written as they are (plain identifiers), and a value is checked eight bytes at
//! a time, the rare one that holds a character to escape being written by `serde_json` itself.
//! Nested records that few events carry (an adjustment, a cache hit, the attempts) and instants
//! outside years 0 to 9999 are written by `serde_json` too.
//!
//! A field added to [`UsageEvent`] must be added here, in its place: the tests fail until it is.

use super::{TokenTypeCost, UsageEvent};
use chrono::{DateTime, Datelike, Timelike, Utc};
use uuid::Uuid;

/// The event's JSON, as `serde_json::to_vec` writes it.
pub(super) fn encode(e: &UsageEvent) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(1024);
    let o = &mut out;
    o.extend_from_slice(b"{\"version\":");
    unsigned(o, u64::from(e.version));
    key(o, "event_id");
    uuid(o, &e.event_id);
    key(o, "occurred_at");
    instant(o, &e.occurred_at)?;
    key(o, "gateway_id");
    string(o, &e.gateway_id)?;
    key(o, "request_id");
    string(o, &e.request_id)?;
    key(o, "key_id");
    string(o, &e.key_id)?;
    for (name, value) in [
        ("key_alias", &e.key_alias),
        ("team_id", &e.team_id),
        ("user_id", &e.user_id),
        ("customer_id", &e.customer_id),
        ("organization_id", &e.organization_id),
    ] {
        key(o, name);
        optional(o, value.as_deref())?;
    }
    key(o, "requested_model");
    string(o, &e.requested_model)?;
    for (name, value) in [("served_model", &e.served_model), ("provider", &e.provider), ("deployment", &e.deployment)] {
        key(o, name);
        optional(o, value.as_deref())?;
    }
    for (name, n) in [
        ("prompt_tokens", e.prompt_tokens),
        ("completion_tokens", e.completion_tokens),
        ("cached_tokens", e.cached_tokens),
    ] {
        key(o, name);
        unsigned(o, n);
    }
    for (name, n) in e.optional_counts() {
        // Left out when zero.
        if n != 0 {
            key(o, name);
            unsigned(o, n);
        }
    }
    key(o, "unpriced");
    boolean(o, e.unpriced);
    key(o, "cost_nano_usd");
    signed(o, e.cost_nano_usd.0);
    if !e.cost_by_token_type.is_empty() {
        key(o, "cost_by_token_type");
        list(o, &e.cost_by_token_type, part)?;
    }
    key(o, "latency_ms");
    unsigned(o, e.latency_ms);
    key(o, "status");
    unsigned(o, u64::from(e.status));
    key(o, "error_type");
    optional(o, e.error_type.as_deref())?;
    for (name, flag) in [("stream", e.stream), ("partial", e.partial), ("estimated", e.estimated)] {
        key(o, name);
        boolean(o, flag);
    }
    key(o, "client_disconnected");
    optional(o, e.client_disconnected.as_deref())?;
    if !e.budget_windows.is_empty() {
        key(o, "budget_windows");
        o.push(b'{');
        for (i, (scope, windows)) in e.budget_windows.iter().enumerate() {
            if i > 0 {
                o.push(b',');
            }
            string(o, scope)?;
            o.push(b':');
            list(o, windows, |o, w| string(o, w))?;
        }
        o.push(b'}');
    }
    if let Some(trace_id) = &e.trace_id {
        key(o, "trace_id");
        string(o, trace_id)?;
    }
    if e.usage_generation != 0 {
        key(o, "usage_generation");
        unsigned(o, u64::from(e.usage_generation));
    }
    if let Some(adjustment) = &e.adjustment {
        key(o, "adjustment");
        serde_json::to_writer(&mut *o, adjustment)?;
    }
    if let Some(cache) = &e.cache {
        key(o, "cache");
        serde_json::to_writer(&mut *o, cache)?;
    }
    if !e.tags.is_empty() {
        key(o, "tags");
        list(o, &e.tags, |o, t| string(o, t))?;
    }
    if !e.attempts.is_empty() {
        key(o, "attempts");
        serde_json::to_writer(&mut *o, &e.attempts)?;
    }
    if e.attempts_omitted != 0 {
        key(o, "attempts_omitted");
        unsigned(o, u64::from(e.attempts_omitted));
    }
    o.push(b'}');
    Ok(out)
}

/// One part of the cost by token type.
fn part(o: &mut Vec<u8>, p: &TokenTypeCost) -> Result<(), serde_json::Error> {
    o.extend_from_slice(b"{\"token_type\":");
    string(o, &p.token_type)?;
    o.extend_from_slice(b",\"tokens\":");
    unsigned(o, p.tokens);
    o.extend_from_slice(b",\"cost_nano_usd\":");
    signed(o, p.cost_nano_usd.0);
    o.push(b'}');
    Ok(())
}

/// `,"name":` — a field after the first (a plain identifier: nothing to escape).
fn key(o: &mut Vec<u8>, name: &'static str) {
    debug_assert!(plain(name.as_bytes()), "field name {name:?}");
    o.extend_from_slice(b",\"");
    o.extend_from_slice(name.as_bytes());
    o.extend_from_slice(b"\":");
}

/// A JSON array of `items`, each written by `write`.
fn list<T>(
    o: &mut Vec<u8>,
    items: &[T],
    mut write: impl FnMut(&mut Vec<u8>, &T) -> Result<(), serde_json::Error>,
) -> Result<(), serde_json::Error> {
    o.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            o.push(b',');
        }
        write(o, item)?;
    }
    o.push(b']');
    Ok(())
}

/// A string: as it is when nothing in it needs escaping, else as `serde_json` escapes it.
fn string(o: &mut Vec<u8>, s: &str) -> Result<(), serde_json::Error> {
    if plain(s.as_bytes()) {
        o.push(b'"');
        o.extend_from_slice(s.as_bytes());
        o.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *o, s)
    }
}

fn optional(o: &mut Vec<u8>, s: Option<&str>) -> Result<(), serde_json::Error> {
    match s {
        Some(s) => string(o, s),
        None => {
            o.extend_from_slice(b"null");
            Ok(())
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether no byte of `bytes` is one JSON escapes (`"`, `\` or a control character below
/// 0x20; `serde_json` leaves every other byte as it is), eight bytes at a time. A word that may
/// hold one is answered no: the string is then written by `serde_json`, which decides exactly.
fn plain(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let below_space = w.wrapping_sub(ONES * 0x20) & !w;
        let quote = (w ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES) & !(w ^ (ONES * u64::from(b'"')));
        let backslash = (w ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES) & !(w ^ (ONES * u64::from(b'\\')));
        if (below_space | quote | backslash) & HIGHS != 0 {
            return false;
        }
    }
    words.remainder().iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

fn boolean(o: &mut Vec<u8>, v: bool) {
    o.extend_from_slice(if v { b"true" } else { b"false" });
}

/// `n` in decimal.
fn unsigned(o: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    o.extend_from_slice(&digits[at..]);
}

fn signed(o: &mut Vec<u8>, n: i64) {
    if n < 0 {
        o.push(b'-');
    }
    unsigned(o, n.unsigned_abs());
}

/// `n` in decimal on exactly `width` digits (it fits).
fn padded(o: &mut Vec<u8>, mut n: u32, width: usize) {
    let mut digits = [b'0'; 9];
    for at in (0..width).rev() {
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    o.extend_from_slice(&digits[..width]);
}

/// A UUID as its hyphenated lower-case text, as `uuid` serializes it.
fn uuid(o: &mut Vec<u8>, id: &Uuid) {
    let mut text = Uuid::encode_buffer();
    o.push(b'"');
    o.extend_from_slice(id.hyphenated().encode_lower(&mut text).as_bytes());
    o.push(b'"');
}

/// An instant as `chrono` serializes one (RFC 3339 in UTC, `Z`, the fraction of a second in 3,
/// 6 or 9 digits as it needs, none when whole); a year outside 0 to 9999 or a leap second by
/// `chrono` itself.
fn instant(o: &mut Vec<u8>, t: &DateTime<Utc>) -> Result<(), serde_json::Error> {
    let (date, time) = (t.date_naive(), t.time());
    let (year, nanos) = (date.year(), time.nanosecond());
    let Ok(year) = u32::try_from(year) else { return serde_json::to_writer(&mut *o, t) };
    if year > 9999 || nanos >= 1_000_000_000 {
        return serde_json::to_writer(&mut *o, t);
    }
    o.push(b'"');
    padded(o, year, 4);
    o.push(b'-');
    padded(o, date.month(), 2);
    o.push(b'-');
    padded(o, date.day(), 2);
    o.push(b'T');
    padded(o, time.hour(), 2);
    o.push(b':');
    padded(o, time.minute(), 2);
    o.push(b':');
    padded(o, time.second(), 2);
    if nanos != 0 {
        o.push(b'.');
        if nanos % 1_000_000 == 0 {
            padded(o, nanos / 1_000_000, 3);
        } else if nanos % 1_000 == 0 {
            padded(o, nanos / 1_000, 6);
        } else {
            padded(o, nanos, 9);
        }
    }
    o.extend_from_slice(b"Z\"");
    Ok(())
}

#[cfg(test)]
mod tests;
