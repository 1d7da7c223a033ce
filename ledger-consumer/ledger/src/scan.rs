//! Full scans of the event ledger and the dead letters, and which events count: what
//! `reconcile`, the finance commands and the gateway's statements read. Full scans are for audit
//! tools and finance, never the request path.

use crate::ledger::{full_scan, query_err, LedgerError};
use futures::StreamExt;
use scylla::client::session::Session;
use std::collections::HashSet;
use tollgate_schemas::UsageEvent;

/// A row of `dead_letters` as reconcile reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterRow {
    pub partition: i32,
    pub offset: i64,
    pub event_id: Option<uuid::Uuid>,
    pub reason: String,
}

/// The events of the event ledger that were not dead-lettered: an event is left out when it
/// was refused at the very partition and offset its Layer 1 row records (the row an event
/// refused mid-write leaves), so a good copy of the same event elsewhere still counts.
pub fn without_dead_letters<'a>(events: &'a [RecordedEvent], dead: &[DeadLetterRow]) -> Vec<&'a UsageEvent> {
    counted_records(events, dead).into_iter().map(|e| &e.event).collect()
}

/// [`without_dead_letters`], keeping where each event was first read.
pub fn counted_records<'a>(events: &'a [RecordedEvent], dead: &[DeadLetterRow]) -> Vec<&'a RecordedEvent> {
    let refused: HashSet<(uuid::Uuid, i32, i64)> =
        dead.iter().filter_map(|d| d.event_id.map(|id| (id, d.partition, d.offset))).collect();
    events.iter().filter(|e| !refused.contains(&(e.event.event_id, e.partition, e.offset))).collect()
}

/// An event of the event ledger and where it was first read.
#[derive(Clone, Debug)]
pub struct RecordedEvent {
    pub event: tollgate_schemas::UsageEvent,
    pub partition: i32,
    pub offset: i64,
}

/// Every event in the event ledger with the `(partition, offset)` it was recorded at.
pub async fn events(session: &Session, keyspace: &str) -> Result<Vec<RecordedEvent>, LedgerError> {
    let mut rows = full_scan::<(Option<String>, Option<i32>, Option<i64>)>(
        session,
        format!("SELECT body, kafka_partition, kafka_offset FROM {keyspace}.usage_events"),
    )
    .await?;
    let mut events = Vec::new();
    while let Some(row) = rows.next().await {
        let (body, partition, offset) = row.map_err(query_err)?;
        let body = body.unwrap_or_default();
        let event = UsageEvent::decode(body.as_bytes())
            .map_err(|e| LedgerError::Result(format!("event ledger row does not decode: {e}")))?;
        events.push(RecordedEvent { event, partition: partition.unwrap_or(-1), offset: offset.unwrap_or(-1) });
    }
    Ok(events)
}

/// Every dead letter of the keyspace, of every topic.
pub async fn dead_letters(session: &Session, keyspace: &str) -> Result<Vec<DeadLetterRow>, LedgerError> {
    let mut rows = full_scan::<(i32, i64, Option<uuid::Uuid>, Option<String>)>(
        session,
        format!("SELECT partition, kafka_offset, event_id, reason FROM {keyspace}.dead_letters"),
    )
    .await?;
    let mut letters = Vec::new();
    while let Some(row) = rows.next().await {
        let (partition, offset, event_id, reason) = row.map_err(query_err)?;
        letters.push(DeadLetterRow { partition, offset, event_id, reason: reason.unwrap_or_default() });
    }
    Ok(letters)
}
