//! Daily spend read through the closed-day cache (`CqlSpend::with_closed_day_cache`) on the real
//! Cassandra: a week of rows of several kinds, partitions and models read through it equals the
//! same week read straight from `spend_daily` and the sums of the rows written, to the nano-dollar;
//! today's rows show at once, a row written late to a closed day shows within the TTL, and a
//! closed day read within the TTL is served from memory. The same holds of the range sums
//! (`SpendSource::range`), which keep the closed days' sums as long.

use anyhow::{ensure, Result};
use chrono::{Days, NaiveDate, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tollgate_ledger::ledger::CqlLedger;
use tollgate_schemas::store::{CqlSpend, DailyQuery, SpendSource, SpendTotal};
use tollgate_schemas::NanoUsd;
use tollgate_tests::*;

const PARTITIONS: i32 = 4;

/// The rows written: (kind, day, partition, scope) → (spent, events, prompt, completion).
type Written = BTreeMap<(String, NaiveDate, i32, String), (i64, i64, i64, i64)>;

/// What `query` must answer: the written rows of its kind (or scope and its models), summed
/// over partitions per (scope, day), in (scope, day) order.
fn expected(written: &Written, query: &DailyQuery) -> Vec<(String, NaiveDate, SpendTotal)> {
    let mut sums: BTreeMap<(String, NaiveDate), SpendTotal> = BTreeMap::new();
    for ((kind, day, _, scope), (spent, events, prompt, completion)) in written {
        if *kind != query.kind || *day < query.from || *day > query.to || !query.wants(scope) {
            continue;
        }
        let t = sums.entry((scope.clone(), *day)).or_default();
        t.spent = NanoUsd(t.spent.0 + spent);
        t.events += events;
        t.prompt_tokens += prompt;
        t.completion_tokens += completion;
    }
    sums.into_iter().map(|((scope, day), t)| (scope, day, t)).collect()
}

/// `expected` summed over the days: one total per scope, in scope order.
fn summed(written: &Written, query: &DailyQuery) -> Vec<(String, SpendTotal)> {
    let mut sums: BTreeMap<String, SpendTotal> = BTreeMap::new();
    for (scope, _, t) in expected(written, query) {
        sums.entry(scope).or_default().add(&t);
    }
    sums.into_iter().collect()
}

fn sorted(mut sums: Vec<(String, SpendTotal)>) -> Vec<(String, SpendTotal)> {
    sums.sort_by(|a, b| a.0.cmp(&b.0));
    sums
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_daily_reads_equal_direct_ones_and_late_rows_show_within_the_ttl() -> Result<()> {
    let keyspace = unique("tg_daily_cache_");
    // Creates the keyspace and its tables.
    CqlLedger::connect(&cassandra_connection(), &keyspace, "usage", true).await?;
    let session = Arc::new(cql().await?);
    let insert = session
        .prepare(format!(
            "INSERT INTO {keyspace}.spend_daily (kind, day, partition, scope_id, spent_nano_usd, events, \
             prompt_tokens, completion_tokens, applied_offset) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .await?;
    let mut written = Written::new();
    let write = |written: &mut Written, kind: &str, day: NaiveDate, partition: i32, scope: String, n: i64| {
        // Amounts that are no round number of cents, and one near the top of an i64 share.
        let values = (n * 1_000_000_007 + 13, n, n * 17, n * 3);
        written.insert((kind.to_owned(), day, partition, scope), values);
    };
    let today = Utc::now().date_naive();
    let first = today - Days::new(6);
    let mut n = 1i64;
    for day in first.iter_days().take_while(|d| *d <= today) {
        for partition in 0..PARTITIONS {
            for team in 0..5 {
                // A team's rows in two of the partitions, as a team's keys spread over them.
                if (team + partition) % 2 == 0 {
                    continue;
                }
                write(&mut written, "team", day, partition, format!("team/t{team}"), n);
                for model in ["gpt-4o", "openai/gpt-4o-mini"] {
                    write(&mut written, "team", day, partition, format!("team/t{team}/model/{model}"), n + 1);
                    write(&mut written, "key", day, partition, format!("key/k{team}/model/{model}"), n + 2);
                }
                // A longer id that a scope read of `team/t1` must not take.
                write(&mut written, "team", day, partition, format!("team/t{team}x/model/m"), n + 3);
                n += 1;
            }
        }
    }
    for ((kind, day, partition, scope), (spent, events, prompt, completion)) in &written {
        let values = (kind, day.to_string(), partition, scope, spent, events, prompt, completion, 1i64);
        session.execute_unpaged(&insert, values).await?;
    }

    let direct = CqlSpend::new(session.clone(), &keyspace).await?.with_partitions(PARTITIONS);
    let ttl = Duration::from_secs(3);
    let cached =
        CqlSpend::new(session.clone(), &keyspace).await?.with_partitions(PARTITIONS).with_closed_day_cache(ttl);
    // A TTL no test run outlives: what it answers for a closed day is what it read first.
    let kept = CqlSpend::new(session.clone(), &keyspace)
        .await?
        .with_partitions(PARTITIONS)
        .with_closed_day_cache(Duration::from_secs(3_600));
    let query = |kind: &str, scope: Option<&str>| DailyQuery {
        kind: kind.to_owned(),
        scope: scope.map(str::to_owned),
        from: first,
        to: today,
    };
    let queries = [query("team", None), query("team", Some("team/t1")), query("key", None)];
    for q in &queries {
        let want = expected(&written, q);
        ensure!(want.len() >= 7, "{q:?}: {} rows expected", want.len());
        let straight = direct.daily(q.clone()).await?;
        ensure!(straight == want, "{q:?}: the direct read differs from the rows written");
        for (what, spend) in [("cached", &cached), ("kept", &kept)] {
            let cold = spend.daily(q.clone()).await?;
            let warm = spend.daily(q.clone()).await?;
            ensure!(cold == want && warm == want, "{q:?}: the {what} reads differ from the rows written");
        }
        // Summed over the range: the sums of the rows written per scope, straight, cold and
        // warm through both caches, and for a range of closed days only.
        let want = summed(&written, q);
        ensure!(sorted(direct.range(q.clone()).await?) == want, "{q:?}: the direct range sums differ");
        for (what, spend) in [("cached", &cached), ("kept", &kept)] {
            for pass in ["cold", "warm"] {
                ensure!(sorted(spend.range(q.clone()).await?) == want, "{q:?}: {what} {pass} range sums differ");
            }
        }
        let closed = DailyQuery { to: today - Days::new(1), ..q.clone() };
        ensure!(sorted(kept.range(closed.clone()).await?) == summed(&written, &closed), "{q:?}: closed days");
    }

    // A late row for yesterday and a new one for today, after both were read.
    let yesterday = today - Days::new(1);
    let late = [(yesterday, "team/t1/model/late"), (today, "team/t1/model/new")];
    for (day, scope) in late {
        write(&mut written, "team", day, 0, scope.to_owned(), 1_000);
        let (spent, events, prompt, completion) = written[&("team".to_owned(), day, 0, scope.to_owned())];
        let values = ("team", day.to_string(), 0i32, scope, spent, events, prompt, completion, 2i64);
        session.execute_unpaged(&insert, values).await?;
    }
    let q = query("team", Some("team/t1"));
    let before_late = {
        let mut w = written.clone();
        w.remove(&("team".to_owned(), yesterday, 0, "team/t1/model/late".to_owned()));
        expected(&w, &q)
    };
    let now_written = expected(&written, &q);
    ensure!(direct.daily(q.clone()).await? == now_written, "the direct read shows both rows at once");
    // Range sums: today's new row at once, the closed day's late one as first read (kept), and
    // within the TTL through the short-lived cache.
    let before_late_sums = {
        let mut w = written.clone();
        w.remove(&("team".to_owned(), yesterday, 0, "team/t1/model/late".to_owned()));
        summed(&w, &q)
    };
    ensure!(sorted(direct.range(q.clone()).await?) == summed(&written, &q), "direct range: both rows");
    ensure!(sorted(kept.range(q.clone()).await?) == before_late_sums, "kept range: today's row only");
    eventually("the late row in the range sums", ttl + Duration::from_secs(10), || async {
        Ok((sorted(cached.range(q.clone()).await?) == summed(&written, &q)).then_some(()))
    })
    .await?;
    // Served from memory for the closed day, read afresh for today.
    ensure!(kept.daily(q.clone()).await? == before_late, "a closed day read within the TTL is the one read first");
    // Within the TTL (and a poll's slack), the late row shows through the short-lived cache.
    eventually("the late row through the cache", ttl + Duration::from_secs(10), || async {
        Ok((cached.daily(q.clone()).await? == now_written).then_some(()))
    })
    .await?;
    session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), &[]).await?;
    Ok(())
}
