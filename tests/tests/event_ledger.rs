//! Layer 1 on the real Cassandra: an event's absent optional fields stay unset. A null would be a
//! tombstone, and reading an owner's events (`/spend/logs`) would wade through four or so per
//! event; the read's own trace says how many tombstones it met.

use anyhow::{ensure, Context, Result};
use std::time::Duration;
use tollgate_ledger_consumer::fold::Message;
use tollgate_ledger_consumer::ledger::{CqlLedger, LedgerStore};
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
    let mut read = scylla::statement::Statement::new(format!(
        "SELECT team_id, user_id, customer_id, organization_id, served_model, provider FROM {ks}.usage_events \
         WHERE owner_id = ? AND day = ? AND shard = ?"
    ));
    read.set_tracing(true);
    let result = session.query_unpaged(read, (e.budget_owner(), e.day(), e.shard())).await?;
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
    let ledger = CqlLedger::connect(
        &tollgate_schemas::store::CqlConnection { contact_points: vec![cassandra_node()], ..Default::default() },
        &keyspace,
        "usage",
        true,
    )
    .await?;
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
