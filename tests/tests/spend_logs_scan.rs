//! `/spend/logs` naming no key or team, on the real Cassandra: a scan of the event ledger in its
//! storage order. A short range over a ledger of many days (today among a month, as the
//! console's Logs page asks) reads only the range's partitions, 16 at a time, and passes over
//! the others without a read; followed by its cursor, it shows every event of the range once
//! and none of the other days.

use anyhow::{ensure, Result};
use std::collections::BTreeSet;
use std::sync::Arc;
use tollgate_ledger::fold::Message;
use tollgate_ledger::ledger::{CqlLedger, LedgerStore};
use tollgate_schemas::logs::{LogFilter, LogQuery};
use tollgate_schemas::store::{CqlSpend, SpendSource};
use tollgate_schemas::UsageEvent;
use tollgate_tests::*;

/// Days of events, and budget owners (teams) with events on each of them.
const DAYS: i64 = 12;
const TEAMS: u64 = 40;

fn event(team: u64, day: i64, i: u64) -> Result<UsageEvent> {
    let mut e = UsageEvent::decode(include_bytes!("../../schemas/fixtures/usage_event_v1_minimal.json"))?;
    let at = chrono::Utc::now() - chrono::Duration::days(day) - chrono::Duration::seconds(i64::try_from(i)? * 7);
    let secs = u64::try_from(at.timestamp())?;
    e.event_id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, at.timestamp_subsec_nanos()));
    e.occurred_at = at;
    e.team_id = Some(format!("team-{team}"));
    e.key_id = format!("key-{team}-{}", i % 3);
    Ok(e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_of_one_day_among_many_shows_that_days_events_once() -> Result<()> {
    let keyspace = unique("tg_logs_scan_");
    let ledger = CqlLedger::connect(&cassandra_connection(), &keyspace, "usage", true).await?;
    let session = Arc::new(cql().await?);
    let mut messages = Vec::new();
    let mut offset = 0;
    for team in 0..TEAMS {
        for day in 0..DAYS {
            // A few events a team and day: most partitions hold one event or none.
            for i in 0..(team + u64::try_from(day)?) % 3 + 1 {
                messages.push(Message { offset, event: event(team, day, i)? });
                offset += 1;
            }
        }
    }
    for batch in messages.chunks(500) {
        ledger.insert_events(0, batch).await?;
    }
    let spend = CqlSpend::new(session.clone(), &keyspace).await?;

    // Two days: the newest and one in the middle, each a twelfth of the ledger.
    for back in [0, DAYS / 2] {
        let day = (chrono::Utc::now() - chrono::Duration::days(back)).date_naive();
        let want: BTreeSet<uuid::Uuid> =
            messages.iter().filter(|m| m.event.day() == day).map(|m| m.event.event_id).collect();
        ensure!(want.len() > 2 * 16, "the day has {} events: more than a read group's", want.len());
        let query = LogQuery { filter: LogFilter::default(), from: day, to: day, after: None, skip: 0, limit: 7 };
        let mut seen = BTreeSet::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let page = spend.logs(LogQuery { after: after.clone(), ..query.clone() }).await?;
            pages += 1;
            ensure!(page.missing == 0, "{} entries without their body", page.missing);
            ensure!(page.events.len() <= 7, "a page of {} entries", page.events.len());
            for e in &page.events {
                ensure!(e.day() == day, "an event of {} in the page of {day}", e.day());
                ensure!(seen.insert(e.event_id), "{} shown twice", e.event_id);
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
            ensure!(pages < 1_000, "the cursor does not end");
        }
        ensure!(seen == want, "day {day}: {} entries shown, {} events", seen.len(), want.len());
        ensure!(pages >= want.len() / 7, "day {day}: {pages} pages of 7 for {} events", want.len());
    }
    session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), &[]).await?;
    Ok(())
}
