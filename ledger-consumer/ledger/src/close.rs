//! Sealed periods (docs/finance.md, "Closing a period"): which events a close holds, where a
//! late event is billed, and the statements and hash of a close. Pure code, no I/O; the ledger
//! consumer's `close` and `export` and the gateway's statements share it.
//!
//! A close records a watermark, the highest applied offset of each usage-topic partition (the
//! fences of `partition_spend`), read before the event ledger. It holds exactly the events of
//! its period whose `(kafka_partition, kafka_offset)`, where Layer 1 says the event was first
//! read, is at or below the watermark; replays keep their first offset, so that set never
//! changes. Any other event of a closed period is late: it is sealed, as a correction, by the
//! first later close whose watermark covers it, and billed on that close's first day, or, while
//! none does, on the first day after the latest closed period.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tollgate_schemas::event::cost_by_type::UNSPLIT;
use tollgate_schemas::UsageEvent;

/// UTC days `from` to `to`, both included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Period {
    pub fn contains(&self, day: NaiveDate) -> bool {
        self.from <= day && day <= self.to
    }
}

/// One line of an event: its token type, tokens and nano-USD. An event with a breakdown has one
/// per part; one without (older, unpriced or clamped) one `unsplit` line with all its tokens; an
/// event with neither tokens nor cost bills nothing and has none.
pub fn lines_of(e: &UsageEvent) -> Vec<(String, u64, i64)> {
    if !e.cost_by_token_type.is_empty() {
        return e.cost_by_token_type.iter().map(|p| (p.token_type.clone(), p.tokens, p.cost_nano_usd.0)).collect();
    }
    let tokens = e.prompt_tokens.saturating_add(e.completion_tokens);
    if tokens == 0 && e.cost_nano_usd.0 == 0 {
        return Vec::new();
    }
    vec![(UNSPLIT.to_owned(), tokens, e.cost_nano_usd.0)]
}

/// The first day of the month of `day`, and of the next month.
pub fn month_of(day: NaiveDate) -> (NaiveDate, NaiveDate) {
    let first = day.with_day(1).unwrap_or(day);
    let next = first.checked_add_months(chrono::Months::new(1)).unwrap_or(first);
    (first, next)
}

/// Highest applied offset per partition of the usage topic.
pub type Watermark = BTreeMap<i32, i64>;

/// A sealed period as stored (`period_closes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Close {
    pub seq: i64,
    /// `YYYY-MM` or `YYYY-MM-DD`.
    pub period: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub watermark: Watermark,
    pub statements: Statements,
    pub previous_hash: String,
    pub content_hash: String,
}

/// Per scope (`org/<id>`, `team/<id>`, `customer/<id>`): totals by model and token type, the
/// period's own events and corrections of earlier closed periods apart.
pub type Statements = BTreeMap<String, Statement>;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub total_nano_usd: i128,
    /// `<model> <token type>` → amounts.
    pub usage: BTreeMap<String, Line>,
    pub corrections: BTreeMap<String, Line>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub nano_usd: i128,
    pub tokens: u128,
    pub events: u64,
}

/// `--period`: a month `YYYY-MM` or a day `YYYY-MM-DD`.
pub fn parse_period(text: &str) -> Option<Period> {
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Some(Period { from: day, to: day });
    }
    let first = NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d").ok()?;
    let (_, next) = month_of(first);
    Some(Period { from: first, to: next.pred_opt()? })
}

/// Whether `(partition, offset)` is at or below `watermark`.
pub fn covered(watermark: &Watermark, partition: i32, offset: i64) -> bool {
    watermark.get(&partition).is_some_and(|w| offset <= *w)
}

/// How an event is billed, given the closes so far (in `seq` order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Billing {
    /// On its own day, in the close of `seq` if any.
    Own { sealed_in: Option<i64> },
    /// Late for a closed period: a correction billed on `day`, sealed in `sealed_in` if any.
    Correction { day: NaiveDate, sealed_in: Option<i64> },
}

/// Where `e`, first read at `(partition, offset)`, is billed.
pub fn billing(e: &UsageEvent, partition: i32, offset: i64, closes: &[Close]) -> Billing {
    let day = e.day();
    let Some(own) = closes.iter().find(|c| c.from <= day && day <= c.to) else {
        return Billing::Own { sealed_in: None };
    };
    if covered(&own.watermark, partition, offset) {
        return Billing::Own { sealed_in: Some(own.seq) };
    }
    match closes.iter().find(|c| c.seq > own.seq && covered(&c.watermark, partition, offset)) {
        Some(k) => Billing::Correction { day: k.from, sealed_in: Some(k.seq) },
        None => {
            let after = closes.iter().map(|c| c.to).max().unwrap_or(own.to);
            Billing::Correction { day: after.succ_opt().unwrap_or(after), sealed_in: None }
        }
    }
}

/// The statements of a close: every line of the events it seals, by scope.
pub fn statements<'a>(sealed: impl IntoIterator<Item = (&'a UsageEvent, bool)>) -> Statements {
    let mut out = Statements::new();
    for (e, correction) in sealed {
        let scopes = [("org", &e.organization_id), ("team", &e.team_id), ("customer", &e.customer_id)];
        for (kind, id) in scopes {
            let Some(id) = id else { continue };
            let statement = out.entry(format!("{kind}/{id}")).or_default();
            for (token_type, tokens, nanos) in lines_of(e) {
                let book = if correction { &mut statement.corrections } else { &mut statement.usage };
                let line = book.entry(format!("{} {token_type}", e.requested_model)).or_default();
                line.nano_usd += i128::from(nanos);
                line.tokens += u128::from(tokens);
                line.events += 1;
                statement.total_nano_usd += i128::from(nanos);
            }
        }
    }
    out
}

/// The content hash of a close: SHA-256 (hex) of its canonical JSON (keys sorted, no spaces)
/// with `content_hash` empty, so the hash covers the period, the watermark, every statement
/// and the previous close's hash.
pub fn content_hash(close: &Close) -> String {
    let mut unhashed = close.clone();
    unhashed.content_hash = String::new();
    let canonical = serde_json::to_vec(&unhashed).unwrap_or_default();
    hex::encode(Sha256::digest(canonical))
}

#[cfg(test)]
mod tests;
