//! One scope's statement for a period (docs/finance.md, "Statements over the API"), as the
//! gateway's `/customer/statement`, `/team/statement` and `/organization/statement` answer it.
//!
//! A closed period's statement is the one its close sealed, as stored, with the close's hashes.
//! An open period's is computed from the event ledger as `close` would seal it now: the events
//! of the period (their own usage) and the late events of earlier closed periods billed in it
//! (corrections), dead-lettered events left out; it has no hash, since it may still change.
//! Reads only: the chain of closes, then (open periods) full scans of the event ledger and the
//! dead letters.

use crate::close::{billing, parse_period, statements, Billing, Period, Statement};
use crate::ledger::LedgerError;
use crate::{closes, scan};
use chrono::NaiveDate;
use scylla::client::session::Session;
use serde::Serialize;

/// A statement as the API answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScopeStatement {
    /// `org/<id>`, `team/<id>` or `customer/<id>`.
    pub scope: String,
    pub period: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// `closed` (sealed, never changes) or `open` (as it stands now).
    pub status: &'static str,
    /// Totals by model and token type; all zero when the scope has no charges in the period.
    pub statement: Statement,
    /// The close that sealed it (closed periods only).
    pub close_seq: Option<i64>,
    pub content_hash: Option<String>,
    pub previous_hash: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    /// The period is not a month or a day, or straddles a closed period without being it.
    #[error("{0}")]
    Period(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The statement of `scope` for the period `name` (`YYYY-MM` or `YYYY-MM-DD`).
pub async fn statement(
    session: &Session,
    keyspace: &str,
    scope: &str,
    name: &str,
) -> Result<ScopeStatement, StatementError> {
    let period = parse_period(name).ok_or_else(|| StatementError::Period("expected YYYY-MM or YYYY-MM-DD".into()))?;
    let chain = closes::read(session, keyspace).await?;
    let answer = |status, statement: Option<&Statement>| ScopeStatement {
        scope: scope.to_owned(),
        period: name.to_owned(),
        from: period.from,
        to: period.to,
        status,
        statement: statement.cloned().unwrap_or_default(),
        close_seq: None,
        content_hash: None,
        previous_hash: None,
    };
    if let Some(c) = chain.iter().find(|c| c.period == name) {
        return Ok(ScopeStatement {
            close_seq: Some(c.seq),
            content_hash: Some(c.content_hash.clone()),
            previous_hash: Some(c.previous_hash.clone()),
            ..answer("closed", c.statements.get(scope))
        });
    }
    if let Some(c) = chain.iter().find(|c| c.from <= period.to && period.from <= c.to) {
        return Err(StatementError::Period(format!(
            "{name} overlaps the closed period {}: ask for {} itself",
            c.period, c.period
        )));
    }
    let (events, dead) = tokio::try_join!(scan::events(session, keyspace), scan::dead_letters(session, keyspace))?;
    let billed = scan::counted_records(&events, &dead).into_iter().filter_map(|r| {
        let in_scope = tollgate_schemas::ledger::tenant_scopes_of(&r.event).iter().any(|s| s == scope);
        let correction = billed_in(billing(&r.event, r.partition, r.offset, &chain), &r.event, period)?;
        in_scope.then_some((&r.event, correction))
    });
    Ok(answer("open", statements(billed).get(scope)))
}

/// Whether an event is billed in open `period`, and if so whether as a correction.
fn billed_in(b: Billing, e: &tollgate_schemas::UsageEvent, period: Period) -> Option<bool> {
    match b {
        Billing::Own { .. } => period.contains(e.day()).then_some(false),
        Billing::Correction { day, .. } => period.contains(day).then_some(true),
    }
}
