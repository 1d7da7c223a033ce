//! Layer 1 on the real Cassandra: an event's absent optional fields stay unset, in the event
//! ledger and in its key index. A null would be a tombstone, and reading a key's or an owner's
//! events (`/spend/logs`) would wade through four or so per event; the read's own trace says how
//! many tombstones it met. And a key's request logs read its own events only, a page at a time.

use anyhow::{ensure, Context, Result};
use std::sync::Arc;
use std::time::Duration;
use tollgate_ledger::fold::Message;
use tollgate_ledger::ledger::{CqlLedger, LedgerStore};
use tollgate_schemas::UsageEvent;
use tollgate_tests::*;

fn minimal_event() -> Result<UsageEvent> {
    let mut e = UsageEvent::decode(include_bytes!("../../schemas/fixtures/usage_event_v1_minimal.json"))?;
    e.event_id = uuid::Uuid::now_v7();
    e.occurred_at = chrono::Utc::now();
    Ok(e)
}

/// The tombstone cells a read of one event-ledger partition met, from the read's trace
/// (Cassandra's "Read N live rows and M tombstone cells").
async fn tombstones_read(session: &scylla::client::session::Session, ks: &str, e: &UsageEvent) -> Result<u64> {
    let read = format!(
        "SELECT team_id, user_id, customer_id, organization_id, served_model, provider FROM {ks}.usage_events \
         WHERE owner_id = ? AND day = ? AND shard = ?"
    );
    traced_tombstones(session, &read, (e.budget_owner(), e.day(), e.shard())).await
}

/// The tombstone cells one traced read met.
async fn traced_tombstones(
    session: &scylla::client::session::Session,
    cql: &str,
    values: impl scylla::serialize::row::SerializeRow,
) -> Result<u64> {
    let mut read = scylla::statement::Statement::new(cql.to_owned());
    read.set_tracing(true);
    let result = session.query_unpaged(read, values).await?;
    let trace = result.tracing_id().context("no trace id")?;
    eventually("the read's trace", Duration::from_secs(20), || async {
        let info = session.get_tracing_info(&trace).await?;
        let counted = info.events.iter().filter_map(|ev| ev.activity.as_deref()).find_map(|a| {
            let rest = a.strip_prefix("Read ")?;
            let (_, tail) = rest.split_once(" live rows and ")?;
            tail.split_whitespace().next()?.parse::<u64>().ok()
        });
        Ok(counted)
    })
    .await
}

#[derive(scylla::DeserializeRow)]
struct Layer1Row {
    team_id: Option<String>,
    user_id: Option<String>,
    customer_id: Option<String>,
    organization_id: Option<String>,
    served_model: Option<String>,
    provider: Option<String>,
    body: Option<String>,
    kafka_offset: Option<i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_without_optional_fields_writes_no_nulls() -> Result<()> {
    let keyspace = unique("layer1_");
    let ledger = CqlLedger::connect(&cassandra_connection(), &keyspace, "usage", true).await?;
    let session = cql().await?;
    let event = minimal_event()?;
    ensure!(event.team_id.is_none() && event.provider.is_none(), "the fixture is the minimal event");
    ledger.insert_events(0, &[Message { offset: 7, event: event.clone() }]).await?;

    let row = session
        .query_unpaged(
            format!(
                "SELECT team_id, user_id, customer_id, organization_id, served_model, provider, body, kafka_offset \
                 FROM {keyspace}.usage_events WHERE owner_id = ? AND day = ? AND shard = ? AND event_id = ?"
            ),
            (event.budget_owner(), event.day(), event.shard(), event.event_id),
        )
        .await?
        .into_rows_result()?
        .single_row::<Layer1Row>()?;
    let absent = [&row.team_id, &row.user_id, &row.customer_id, &row.organization_id, &row.served_model, &row.provider];
    ensure!(absent.iter().all(|v| v.is_none()), "absent fields read back as absent: {absent:?}");
    ensure!(UsageEvent::decode(row.body.context("no body")?.as_bytes())? == event, "the body is the event");
    ensure!(row.kafka_offset == Some(7), "the offset is recorded");

    let written_by_the_ledger = tombstones_read(&session, &keyspace, &event).await?;
    // Control: the same row written with nulls, as the ledger used to, in a partition of its own.
    let control = minimal_event()?;
    let mut with_nulls = scylla::statement::Statement::new(format!(
        "INSERT INTO {keyspace}.usage_events (owner_id, day, shard, event_id, team_id, user_id, customer_id, \
         organization_id, served_model, provider, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ));
    with_nulls.set_consistency(scylla::statement::Consistency::One);
    let none: Option<&str> = None;
    session
        .query_unpaged(
            with_nulls,
            (
                format!("{}-control", control.budget_owner()),
                control.day(),
                control.shard(),
                control.event_id,
                none,
                none,
                none,
                none,
                none,
                none,
                "{}",
            ),
        )
        .await?;
    let mut owner_control = control.clone();
    owner_control.key_id = format!("{}-control", control.key_id);
    let written_with_nulls = tombstones_read(&session, &keyspace, &owner_control).await?;
    eprintln!("tombstone cells read: {written_by_the_ledger} (ledger), {written_with_nulls} (nulls)");
    ensure!(written_with_nulls >= 6, "the trace counts tombstones: {written_with_nulls} for six nulls");
    ensure!(written_by_the_ledger == 0, "the ledger wrote {written_by_the_ledger} tombstones for one event");
    Ok(())
}

/// A key with a few hundred events in a team of two keys: its request logs show exactly its own
/// events, newest first, having looked at no row of the other key, and the reads `/spend/logs`
/// makes meet no tombstone (Cassandra warns from 1,000 in a read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_logs_read_its_own_rows_and_no_tombstones() -> Result<()> {
    use tollgate_schemas::logs::{LogFilter, LogQuery};
    use tollgate_schemas::store::{CqlSpend, SpendSource};
    let keyspace = unique("tg_layer1_logs_");
    let ledger = CqlLedger::connect(&cassandra_connection(), &keyspace, "usage", true).await?;
    let session = Arc::new(cql().await?);
    let mut mine = Vec::new();
    let mut messages = Vec::new();
    let now = chrono::Utc::now();
    for i in 0..400 {
        let mut e = minimal_event()?;
        e.occurred_at = now;
        e.team_id = Some("team-logs".into());
        e.key_id = if i % 4 == 3 { "other-key".into() } else { "my-key".into() };
        if e.key_id == "my-key" {
            mine.push(e.event_id);
        }
        messages.push(Message { offset: i, event: e });
    }
    ledger.insert_events(0, &messages).await?;
    let day = messages[0].event.day();
    mine.sort_by(|a, b| b.cmp(a));

    let spend = CqlSpend::new(session.clone(), &keyspace).await?;
    let filter = LogFilter { key_id: Some("my-key".into()), ..LogFilter::default() };
    let query = LogQuery { filter, from: day, to: day, after: None, skip: 0, limit: 1_000 };
    let page = spend.logs(query.clone()).await?;
    let shown: Vec<uuid::Uuid> = page.events.iter().map(|e| e.event_id).collect();
    ensure!(shown == mine, "{} entries, not the key's {} newest first", shown.len(), mine.len());
    ensure!(page.examined == mine.len() && page.next.is_none() && page.missing == 0, "{page:?}");
    // A page of 20, then the next by cursor.
    let first = spend.logs(LogQuery { limit: 20, ..query.clone() }).await?;
    ensure!(first.examined == 21 && first.events.len() == 20, "a page of 20 looked at {} rows", first.examined);
    let second = spend.logs(LogQuery { limit: 20, after: first.next, ..query.clone() }).await?;
    let ids: Vec<uuid::Uuid> = first.events.iter().chain(&second.events).map(|e| e.event_id).collect();
    ensure!(ids == mine[..40], "two pages by cursor");

    let index = format!(
        "SELECT event_id, team_id, user_id, customer_id, requested_model FROM {keyspace}.usage_events_by_key \
         WHERE key_id = ? AND day = ? AND hour = ? LIMIT 1000"
    );
    let owner = format!(
        "SELECT event_id, key_id, team_id, user_id, customer_id, requested_model FROM {keyspace}.usage_events \
         WHERE owner_id = ? AND day = ? AND shard = ? ORDER BY event_id DESC LIMIT 1000"
    );
    let mut tombstones = traced_tombstones(&session, &index, ("my-key", day, messages[0].event.hour())).await?;
    for shard in 0..8i16 {
        tombstones += traced_tombstones(&session, &owner, ("team/team-logs", day, shard)).await?;
    }
    ensure!(tombstones == 0, "the reads of /spend/logs met {tombstones} tombstones");
    session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), &[]).await?;
    Ok(())
}

/// `database.local_datacenter` keeps every request in the named data centre: a session naming
/// the node's own data centre works; one naming another finds no node to send to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_datacenter_keeps_requests_there() -> Result<()> {
    let probe = cql().await?;
    let dc: String = probe
        .query_unpaged("SELECT data_center FROM system.local", &[])
        .await?
        .into_rows_result()?
        .first_row::<(String,)>()?
        .0;
    let session = |dc: &str| {
        let connection =
            tollgate_schemas::store::CqlConnection { local_datacenter: Some(dc.to_owned()), ..cassandra_connection() };
        async move { tollgate_schemas::store::connect(&connection).await }
    };
    let local = session(&dc).await?;
    local.query_unpaged("SELECT release_version FROM system.local", &[]).await.context("the local data centre")?;
    let elsewhere = session("a-data-centre-with-no-nodes").await;
    let refused = match elsewhere {
        Err(_) => true,
        Ok(s) => s.query_unpaged("SELECT release_version FROM system.local", &[]).await.is_err(),
    };
    ensure!(refused, "a session for a data centre with no nodes reached the {dc} node");
    Ok(())
}
