//! The `period_closes` table (schemas/cql/010_period_closes.cql) and the watermark a close
//! records: reads of the chain and of `partition_spend`'s fences, and the one conditional insert
//! that seals a period. Rows are never updated or deleted.

use crate::close::{Close, Watermark};
use crate::ledger::LedgerError;
use futures::TryStreamExt;
use scylla::client::session::Session;

/// The chain every close of a keyspace belongs to.
const CHAIN: &str = "usage";

fn cql_err(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Result(e.to_string())
}

/// Every close, in `seq` order. A row whose body does not match its hash, or that does not
/// follow the one before it (its `previous_hash`), is an error: the chain was tampered with.
pub async fn read(session: &Session, keyspace: &str) -> Result<Vec<Close>, LedgerError> {
    let rows = session
        .query_unpaged(
            format!("SELECT seq, body, content_hash FROM {keyspace}.period_closes WHERE chain = ?"),
            (CHAIN,),
        )
        .await
        .map_err(cql_err)?
        .into_rows_result()
        .map_err(cql_err)?;
    let mut closes = Vec::new();
    for row in rows.rows::<(i64, String, String)>().map_err(cql_err)? {
        let (seq, body, hash) = row.map_err(cql_err)?;
        let close: Close = serde_json::from_str(&body).map_err(cql_err)?;
        if close.seq != seq || close.content_hash != hash || crate::close::content_hash(&close) != hash {
            return Err(LedgerError::Result(format!("close {seq} does not match its content hash")));
        }
        let previous = closes.last().map(|c: &Close| (c.seq, c.content_hash.as_str())).unwrap_or((0, ""));
        if (seq - 1, close.previous_hash.as_str()) != previous {
            return Err(LedgerError::Result(format!("close {seq} does not follow close {} in the chain", previous.0)));
        }
        closes.push(close);
    }
    Ok(closes)
}

/// The highest applied offset of each usage-topic partition: the largest fence of its buckets
/// in `partition_spend`. Every event first read at or below it is in the event ledger (a batch
/// writes Layer 1 before any fence moves past it).
pub async fn watermark(session: &Session, keyspace: &str) -> Result<Watermark, LedgerError> {
    let mut rows = session
        .query_iter(format!("SELECT DISTINCT partition, bucket, applied_offset FROM {keyspace}.partition_spend"), &[])
        .await
        .map_err(cql_err)?
        .rows_stream::<(i32, i32, Option<i64>)>()
        .map_err(cql_err)?;
    let mut watermark = Watermark::new();
    while let Some((partition, _, fence)) = rows.try_next().await.map_err(cql_err)? {
        if let Some(f) = fence {
            let w = watermark.entry(partition).or_insert(f);
            *w = (*w).max(f);
        }
    }
    Ok(watermark)
}

/// Writes `close` at its `seq` if that place in the chain is free; `false` when another close
/// took it first.
pub async fn insert(session: &Session, keyspace: &str, close: &Close) -> Result<bool, LedgerError> {
    let body = serde_json::to_string(close).map_err(cql_err)?;
    let result = session
        .query_unpaged(
            format!(
                "INSERT INTO {keyspace}.period_closes (chain, seq, period, closed_at, content_hash, previous_hash, body) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
            ),
            (CHAIN, close.seq, &close.period, chrono::Utc::now(), &close.content_hash, &close.previous_hash, body),
        )
        .await
        .map_err(cql_err)?;
    tollgate_schemas::store::lwt_applied(result).map_err(cql_err)
}
