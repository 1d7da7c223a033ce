//! Events the ledger refuses (docs/security.md): the check every record passes before it is
//! folded, the one place that tells a permanent failure from a transient one, and the record kept
//! of each refused event.
//!
//! A permanent failure is the fault of one record, and retrying it can never succeed: the record
//! is dead-lettered and folding goes on without it. A transient failure (a timeout, an unavailable
//! or overloaded node, a broken connection) is retried until it passes. This module does no I/O.
//! It must never let a record's value into a message, a metric label or a log line: values may be
//! huge or hostile.

use crate::ledger::LedgerError;
use std::future::Future;
use tollgate_schemas::event::DecodeError;
use tollgate_schemas::UsageEvent;

/// Why a record was refused. The codes are the only values of the `reason` label of
/// `tollgate_ledger_dead_letters_total`, of the `tollgate_dlq_reason` header and of the
/// `reason` column of `dead_letters`: a fixed, small set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The record has no value.
    NoValue,
    /// The value is not JSON.
    NotJson,
    /// The value is JSON, but not a usage event.
    NotAnEvent,
    /// A usage event of a version this consumer does not know.
    UnsupportedVersion,
    /// A usage event that breaks a bound of `schemas::limits` (an id too long, a cost out of
    /// range, too many budget windows, ...).
    SchemaViolation,
    /// Adding the event would overflow a spend row.
    MoneyOverflow,
    /// The database refused the event's writes because of their values.
    RefusedByDatabase,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::NoValue,
        Reason::NotJson,
        Reason::NotAnEvent,
        Reason::UnsupportedVersion,
        Reason::SchemaViolation,
        Reason::MoneyOverflow,
        Reason::RefusedByDatabase,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::NoValue => "no_value",
            Reason::NotJson => "not_json",
            Reason::NotAnEvent => "not_an_event",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::SchemaViolation => "schema_violation",
            Reason::MoneyOverflow => "money_overflow",
            Reason::RefusedByDatabase => "refused_by_database",
        }
    }

    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// Whether retrying a failed ledger call can succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// It can: timeouts, unavailable or overloaded nodes, broken connections, a schema or
    /// configuration an operator must fix. Retried with backoff, forever.
    Transient,
    /// It cannot: the values of the events written are at fault. The event to blame is
    /// dead-lettered with this reason.
    Permanent(Reason),
}

/// Longest message kept with a dead letter, in characters.
pub const MAX_MESSAGE_CHARS: usize = 200;

/// Most bytes of a refused value kept in the `dead_letters` table (the dead-letter topic keeps
/// the whole record).
pub const MAX_BODY_BYTES: usize = 1024;

/// Why one record is refused: a reason code and a short message that never repeats the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: Reason, message: impl std::fmt::Display) -> Refusal {
        Refusal { reason, message: bounded(&message.to_string()) }
    }
}

/// `text` cut to [`MAX_MESSAGE_CHARS`] characters (messages of serde and of the database may
/// quote the value that failed).
fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// Decodes a record's value and checks every bound of the event (`schemas::limits`). A record
/// that fails can never be folded, however often it is retried.
pub fn check_record(value: Option<&[u8]>) -> Result<UsageEvent, Refusal> {
    let Some(bytes) = value else { return Err(Refusal::new(Reason::NoValue, "the record has no value")) };
    let event = UsageEvent::decode(bytes).map_err(|e| {
        let reason = match &e {
            DecodeError::Json(json) => match json.classify() {
                serde_json::error::Category::Data => Reason::NotAnEvent,
                serde_json::error::Category::Syntax
                | serde_json::error::Category::Eof
                | serde_json::error::Category::Io => Reason::NotJson,
            },
            DecodeError::UnsupportedVersion(_) => Reason::UnsupportedVersion,
        };
        Refusal::new(reason, e)
    })?;
    tollgate_schemas::limits::check_event(&event).map_err(|e| Refusal::new(Reason::SchemaViolation, e))?;
    Ok(event)
}

/// The `event_id` a value names, if it names one (for a value that is not a valid event).
fn event_id_of(value: &[u8]) -> Option<uuid::Uuid> {
    #[derive(serde::Deserialize)]
    struct Named {
        event_id: uuid::Uuid,
    }
    serde_json::from_slice::<Named>(value).ok().map(|n| n.event_id)
}

/// A refused record: where it was read, why it was refused, and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub reason: Reason,
    /// At most [`MAX_MESSAGE_CHARS`] characters; never the value.
    pub message: String,
    pub event_id: Option<uuid::Uuid>,
    /// The value as read (stores keep what they can of it).
    pub body: Option<Vec<u8>>,
}

impl DeadLetter {
    pub fn new(partition: i32, offset: i64, refusal: Refusal, value: Option<&[u8]>) -> DeadLetter {
        DeadLetter {
            partition,
            offset,
            reason: refusal.reason,
            message: refusal.message,
            event_id: value.and_then(event_id_of),
            body: value.map(<[u8]>::to_vec),
        }
    }

    /// The first [`MAX_BODY_BYTES`] of the value, and its full length.
    pub fn body_prefix(&self) -> (&[u8], usize) {
        let body = self.body.as_deref().unwrap_or_default();
        (&body[..body.len().min(MAX_BODY_BYTES)], body.len())
    }
}

/// Where dead letters are published besides the ledger's `dead_letters` table: the Kafka
/// consumer's dead-letter topic. The embedded ledger has none ([`NoTopic`]).
pub trait DeadLetterTopic: Send + Sync {
    /// Publishes `letter`; returns once the topic holds it. Publishing the same letter twice
    /// (after a crash) is allowed: readers deduplicate by source partition and offset.
    fn publish(
        &self,
        letter: &DeadLetter,
    ) -> impl Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Send;
}

/// No dead-letter topic: the `dead_letters` table is the whole record (embedded ledger).
pub struct NoTopic;

impl DeadLetterTopic for NoTopic {
    async fn publish(&self, _letter: &DeadLetter) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }
}

// === classification ===

/// Whether retrying `error` can succeed. The only place that decides it.
pub fn classify(error: &LedgerError) -> Failure {
    match error {
        LedgerError::Cql(e) => classify_cql(e),
        LedgerError::Sqlite(e) => classify_sqlite(e),
        LedgerError::Overflow { .. } => Failure::Permanent(Reason::MoneyOverflow),
        LedgerError::Encode(_) => Failure::Permanent(Reason::SchemaViolation),
        LedgerError::Connect(_)
        | LedgerError::Schema(_)
        | LedgerError::Query(_)
        | LedgerError::Result(_)
        | LedgerError::Contended { .. } => Failure::Transient,
    }
}

fn classify_cql(error: &scylla::errors::ExecutionError) -> Failure {
    use scylla::errors::{BadQuery, ExecutionError, RequestAttemptError};
    let refused = Failure::Permanent(Reason::RefusedByDatabase);
    match error {
        // Checked by the driver before sending: a key longer than 64 KiB, a value that does not
        // serialise, a batch of more than 65,535 statements.
        ExecutionError::BadQuery(BadQuery::SerializationError(e)) => serialization(e),
        ExecutionError::BadQuery(_) => refused,
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::SerializationError(e) => serialization(e),
            RequestAttemptError::CqlRequestSerialization(_) => refused,
            RequestAttemptError::DbError(db, message) => classify_db(db, message),
            // Broken connections, no free stream, responses that do not parse, re-prepared
            // statements: nothing about the values.
            _ => Failure::Transient,
        },
        // Client timeouts, empty plans, exhausted connection pools, schema agreement.
        _ => Failure::Transient,
    }
}

/// A value that does not fit its column is the data's fault; a type that does not match the
/// column's is the code's or the schema's, and refusing events would not fix it.
fn serialization(error: &scylla::serialize::SerializationError) -> Failure {
    use scylla::serialize::{row, value};
    if error.downcast_ref::<row::BuiltinTypeCheckError>().is_some()
        || error.downcast_ref::<value::BuiltinTypeCheckError>().is_some()
    {
        return Failure::Transient;
    }
    if let Some(row::BuiltinSerializationError {
        kind: row::BuiltinSerializationErrorKind::ColumnSerializationFailed { err, .. },
        ..
    }) = error.downcast_ref::<row::BuiltinSerializationError>()
    {
        return serialization(err);
    }
    Failure::Permanent(Reason::RefusedByDatabase)
}

fn classify_db(error: &scylla::errors::DbError, message: &str) -> Failure {
    use scylla::errors::DbError;
    match error {
        // "Key length of 65540 is longer than maximum of 65535", "Batch too large", a value
        // the column refuses: the statement is well formed and the values are at fault...
        DbError::Invalid | DbError::SyntaxError if !names_missing_schema(message) => {
            Failure::Permanent(Reason::RefusedByDatabase)
        }
        // ...unless the table, column or keyspace is missing: every event would be refused,
        // and an operator must fix the schema. Timeouts (LWT ones included), unavailable,
        // overloaded and bootstrapping nodes, read and write failures, unprepared statements,
        // server errors, rate limits, authentication and configuration: retry.
        _ => Failure::Transient,
    }
}

/// Whether an `Invalid` error says the schema itself is missing (the messages of Cassandra and
/// ScyllaDB: "unconfigured table x", "Undefined column name y", "Keyspace z does not exist").
fn names_missing_schema(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["unconfigured table", "undefined column", "does not exist", "unknown identifier"].iter().any(|s| m.contains(s))
}

fn classify_sqlite(error: &rusqlite::Error) -> Failure {
    use rusqlite::ErrorCode;
    match error {
        rusqlite::Error::SqliteFailure(e, _) => match e.code {
            ErrorCode::TooBig | ErrorCode::TypeMismatch => Failure::Permanent(Reason::RefusedByDatabase),
            // Busy, locked, I/O, a full disk, a corrupt file: nothing an event did.
            _ => Failure::Transient,
        },
        rusqlite::Error::ToSqlConversionFailure(_) => Failure::Permanent(Reason::RefusedByDatabase),
        _ => Failure::Transient,
    }
}

#[cfg(test)]
mod tests;
