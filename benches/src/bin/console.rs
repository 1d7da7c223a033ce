//! `tollgate-console-bench`: the web console's API at scale, for `benches/console/run`.
//!
//! `load` writes the data set of `console_data` into a keyspace of its own: key, team and user
//! records as the admin API stores them (the same `id, doc, version` rows, written with plain
//! inserts instead of one LWT each), and usage events folded by the ledger consumer's own fold
//! (`fold::rows_of`, `fold::fold_row`) into the read model, written by its own
//! `CqlLedger::write_read_model`; the first `--log-events` events also go to the event ledger
//! (`CqlLedger::insert_events`) for `/spend/logs`. Skipped when the keyspace already holds this
//! size (a marker row written last). `measure` times each console call; `users` is that many
//! console users clicking through the pages' calls; `memory` measures the key index in this
//! process; `drop` removes the keyspace. Output: Markdown rows on stdout.

use anyhow::{bail, ensure, Context, Result};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tollgate_benches::console_calls::{calls, pages, Page};
use tollgate_benches::console_data::{self as data, Size};
use tollgate_ledger::fold::{fold_row, rows_of, Message, RowKey, RowState};
use tollgate_ledger::ledger::{CqlLedger, LedgerStore};

#[derive(Parser, Debug)]
#[command(about = "Load a million keys and their usage, and time the console's API on them")]
struct Args {
    #[command(flatten)]
    place: tollgate_benches::cassandra::Place,
    #[command(subcommand)]
    command: Command,
}

/// The gateway timed, its master key, and the data set's key count (which keys to ask for).
#[derive(clap::Args, Debug)]
struct Target {
    #[arg(long)]
    gateway: String,
    #[arg(long)]
    master_key: String,
    #[arg(long)]
    keys: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the schema and write the data set, unless it is there already.
    Load {
        #[arg(long)]
        keys: u64,
        #[arg(long)]
        events: u64,
        /// Events also written to the event ledger (Layer 1), for `/spend/logs`.
        #[arg(long, default_value_t = 50_000)]
        log_events: u64,
        /// When the data set's "now" is (seconds since 1970; the run script keeps it).
        #[arg(long)]
        now: i64,
    },
    /// Time each console call of the gateway (`rounds` after one warm-up, whose time is shown
    /// apart as the first call's).
    Measure {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Only the calls whose label holds one of these texts (comma-separated); all when absent.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// `users` console users clicking through the pages' calls for `secs` seconds.
    Users {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 5)]
        users: usize,
        #[arg(long)]
        secs: u64,
    },
    /// The key index's memory for `keys` keys, built in this process.
    Memory {
        #[arg(long)]
        keys: u64,
    },
    /// Drop the keyspace.
    Drop,
}

// === load ===

const IN_FLIGHT: usize = 64;

/// Whether the keyspace already holds a data set of `size` (its marker row).
async fn loaded(ledger: &CqlLedger, ks: &str, size: Size) -> Result<bool> {
    let session = ledger.session();
    session
        .query_unpaged(
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.bench_console_loaded (id int PRIMARY KEY, keys bigint, events bigint)"
            ),
            &[],
        )
        .await?;
    let rows = session
        .query_unpaged(format!("SELECT keys, events FROM {ks}.bench_console_loaded WHERE id = 0"), &[])
        .await?
        .into_rows_result()?;
    let found = rows.maybe_first_row::<(i64, i64)>()?;
    Ok(found == Some((i64::try_from(size.keys)?, i64::try_from(size.events)?)))
}

/// Attempts of one write before the load gives up.
const ATTEMPTS: u32 = 6;

/// `write`, tried again after a failure (a write timeout of a node busy compacting, most often)
/// with a doubling pause, up to [`ATTEMPTS`] times. Every write of the load is idempotent
/// (plain inserts, and read-model copies that never replace a row of a higher fence), so a
/// write that did land before its timeout is written again harmlessly.
async fn retried<T, E, F>(what: &str, write: impl FnMut() -> F) -> Result<T>
where
    E: std::fmt::Display + Into<anyhow::Error>,
    F: std::future::Future<Output = Result<T, E>>,
{
    retried_after(what, Duration::from_millis(500), write).await
}

/// [`retried`], its first pause `pause`.
async fn retried_after<T, E, F>(what: &str, mut pause: Duration, mut write: impl FnMut() -> F) -> Result<T>
where
    E: std::fmt::Display + Into<anyhow::Error>,
    F: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match write().await {
            Ok(done) => return Ok(done),
            Err(e) if attempt < ATTEMPTS => {
                eprintln!("load: {what} failed (attempt {attempt} of {ATTEMPTS}), trying again in {pause:?}: {e}");
                tokio::time::sleep(pause).await;
                (pause, attempt) = (pause * 2, attempt + 1);
            }
            Err(e) => return Err(e.into()).with_context(|| format!("{what}: {ATTEMPTS} attempts failed")),
        }
    }
}

/// Writes records as the admin API stores them (`id`, the JSON `doc`, version 1).
async fn write_records<I>(ledger: &CqlLedger, ks: &str, table: &str, records: I) -> Result<u64>
where
    I: Iterator<Item = (String, String)>,
{
    let session = ledger.session();
    let insert = session.prepare(format!("INSERT INTO {ks}.{table} (id, doc, version) VALUES (?, ?, 1)")).await?;
    let mut pending = FuturesUnordered::new();
    let mut written = 0u64;
    for (id, doc) in records {
        if pending.len() >= IN_FLIGHT {
            if let Some(r) = pending.next().await {
                r?;
            }
        }
        let insert = &insert;
        pending
            .push(async move { retried("a record's insert", || session.execute_unpaged(insert, (&id, &doc))).await });
        written += 1;
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    Ok(written)
}

/// The events of every key, folded into the read model: each key's own rows written as soon as
/// its events are folded, the rows of teams and users at the end. Returns the rows written.
async fn load_events(ledger: &CqlLedger, size: Size, log_events: u64, now: DateTime<Utc>) -> Result<(u64, u64)> {
    let mut offsets = [0i64; data::PARTITIONS as usize];
    let mut shared: BTreeMap<i32, HashMap<RowKey, RowState>> = BTreeMap::new();
    let mut logged: BTreeMap<i32, Vec<Message>> = BTreeMap::new();
    let (mut rows_written, mut logs_written) = (0u64, 0u64);
    let mut pending = FuturesUnordered::new();
    for k in 0..size.keys {
        let p = data::partition_of(k, size) as usize;
        let partition = i32::try_from(p)?;
        let mut own: HashMap<RowKey, RowState> = HashMap::new();
        for j in 0..size.events_of(k) {
            let m = Message { offset: offsets[p], event: data::event(k, j, size, now) };
            offsets[p] += 1;
            let (key_rows, other_rows): (Vec<RowKey>, Vec<RowKey>) =
                rows_of(&m.event).into_iter().partition(|(scope, _)| scope.starts_with("key/"));
            for (rows, wanted) in [(&mut own, key_rows), (shared.entry(partition).or_default(), other_rows)] {
                for row in wanted {
                    let current = rows.get(&row).copied().unwrap_or(RowState::NEW);
                    if let Some(next) = fold_row(current, &[&m])? {
                        rows.insert(row, next);
                    }
                }
            }
            if logs_written + logged.values().map(|v| v.len() as u64).sum::<u64>() < log_events {
                logged.entry(partition).or_default().push(m);
            }
        }
        rows_written += own.len() as u64;
        let rows: Vec<(RowKey, RowState)> = own.into_iter().collect();
        if pending.len() >= IN_FLIGHT / 8 {
            if let Some(r) = pending.next().await {
                r?;
            }
        }
        pending.push(async move { retried("a key's rows", || ledger.write_read_model(partition, &rows)).await });
        if logged.get(&partition).is_some_and(|v| v.len() >= 5_000) {
            let batch = logged.remove(&partition).unwrap_or_default();
            retried("events", || ledger.insert_events(partition, &batch)).await?;
            logs_written += batch.len() as u64;
        }
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    for (partition, batch) in logged {
        retried("events", || ledger.insert_events(partition, &batch)).await?;
        logs_written += batch.len() as u64;
    }
    for (partition, rows) in shared {
        let rows: Vec<(RowKey, RowState)> = rows.into_iter().collect();
        rows_written += rows.len() as u64;
        for chunk in rows.chunks(10_000) {
            retried("team and user rows", || ledger.write_read_model(partition, chunk)).await?;
        }
    }
    Ok((rows_written, logs_written))
}

#[allow(clippy::print_stdout)] // the result rows are this binary's output
async fn load(args: &Args, size: Size, log_events: u64, now: DateTime<Utc>) -> Result<()> {
    let ks = &args.place.keyspace;
    let ledger =
        CqlLedger::connect(&tollgate_benches::cassandra::connection(&args.place.cassandra), ks, "usage", true).await?;
    if loaded(&ledger, ks, size).await? {
        println!("| load | already there: {} keys, {} events in {ks} (not loaded again) | |", size.keys, size.events);
        return Ok(());
    }
    let started = Instant::now();
    let teams = (0..size.teams()).map(|t| (format!("team-{t}"), serde_json::to_string(&data::team(t))));
    let teams: Vec<(String, String)> =
        teams.map(|(id, doc)| Ok::<_, serde_json::Error>((id, doc?))).collect::<Result<_, _>>()?;
    write_records(&ledger, ks, "tenancy_teams", teams.into_iter()).await?;
    let users: Vec<(String, String)> = (0..size.teams())
        .flat_map(|t| (0..data::USERS_PER_TEAM).map(move |u| data::user(t, u)))
        .map(|u| Ok::<_, serde_json::Error>((u.user_id.clone(), serde_json::to_string(&u)?)))
        .collect::<Result<_, _>>()?;
    write_records(&ledger, ks, "tenancy_users", users.into_iter()).await?;
    let keys = (0..size.keys).map(|k| {
        let key = data::key(k, size, now);
        (key.key_id.clone(), serde_json::to_string(&key).unwrap_or_default())
    });
    let written = write_records(&ledger, ks, "tenancy_keys", keys).await?;
    let keys_took = started.elapsed();
    println!(
        "| load: key records (`tenancy_keys`, plain inserts of the admin API's rows), {} teams of 5 users | {written} in {:.0} s ({:.0}/s) | |",
        size.teams(),
        keys_took.as_secs_f64(),
        written as f64 / keys_took.as_secs_f64()
    );
    let started = Instant::now();
    let (rows, logs) = load_events(&ledger, size, log_events, now).await?;
    println!(
        "| load: {} events folded by the consumer's fold into `spend_aggregates` | {rows} rows in {:.0} s; {logs} events also in the event ledger | |",
        size.events,
        started.elapsed().as_secs_f64()
    );
    ledger
        .session()
        .query_unpaged(
            format!("INSERT INTO {ks}.bench_console_loaded (id, keys, events) VALUES (0, ?, ?)"),
            (i64::try_from(size.keys)?, i64::try_from(size.events)?),
        )
        .await?;
    Ok(())
}

// === measure ===

struct Http {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl Http {
    fn new(base: &str, key: &str) -> Result<Http> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
        Ok(Http { client, base: base.trim_end_matches('/').to_owned(), key: key.to_owned() })
    }

    async fn get(&self, path: &str) -> Result<Duration> {
        let started = Instant::now();
        let resp = self.client.get(format!("{}{path}", self.base)).bearer_auth(&self.key).send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let took = started.elapsed();
        ensure!(status.is_success(), "{path}: {status} {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
        Ok(took)
    }
}

/// `p`-th percentile (nearest rank) in milliseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

/// A call that takes longer than this is timed fewer times.
const SLOW: Duration = Duration::from_secs(5);

#[allow(clippy::print_stdout)]
async fn measure(target: &Target, rounds: usize, only: &[String]) -> Result<()> {
    let http = Http::new(&target.gateway, &target.master_key)?;
    let wanted_calls = calls(target.keys, Utc::now().date_naive())
        .into_iter()
        .filter(|(what, _)| only.is_empty() || only.iter().any(|o| what.contains(o.as_str())));
    for (what, path) in wanted_calls {
        let mut samples = Vec::with_capacity(rounds);
        // The warm-up call's time: the cold read (nothing cached in the gateway yet).
        let mut first = None;
        let mut failed = None;
        // A call slower than SLOW is timed 3 times only (a scan of the whole read model, say).
        let mut wanted = rounds;
        let mut round = 0;
        while round <= wanted {
            match http.get(&path).await {
                Ok(took) if round > 0 => samples.push(took),
                Ok(took) => {
                    first = Some(took.as_secs_f64() * 1e3);
                    if took > SLOW {
                        wanted = wanted.min(3);
                    }
                }
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
            round += 1;
        }
        samples.sort();
        let verdict = match &failed {
            Some(e) => format!("failed: {}", e.replace('|', "/")),
            None if percentile(&samples, 95.0) < 300.0 => "under 300 ms".into(),
            None => "**over 300 ms**".into(),
        };
        println!(
            "| {what} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {verdict} |",
            first.unwrap_or(f64::NAN),
            percentile(&samples, 50.0),
            percentile(&samples, 95.0),
            percentile(&samples, 100.0),
            samples.len()
        );
    }
    Ok(())
}

// === users ===

/// One console user: the pages in turn (each page's steps in turn, a step's calls at once), a
/// second between pages, until `until`. Returns every call's latency and the failed calls.
async fn user(http: &Http, pages: &[Page], n: usize, until: Instant) -> (Vec<Duration>, Vec<String>) {
    let mut samples = Vec::new();
    let mut failed = Vec::new();
    let mut i = n; // each user starts on another page
    while Instant::now() < until {
        for step in &pages[i % pages.len()] {
            let answers = futures::future::join_all(step.iter().map(|p| http.get(p))).await;
            for answer in answers {
                match answer {
                    Ok(took) => samples.push(took),
                    Err(e) => failed.push(e.to_string()),
                }
            }
        }
        i += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    (samples, failed)
}

#[allow(clippy::print_stdout)]
async fn users(target: &Target, n: usize, secs: u64) -> Result<()> {
    let http = Http::new(&target.gateway, &target.master_key)?;
    let pages = pages(&calls(target.keys, Utc::now().date_naive()))?;
    let until = Instant::now() + Duration::from_secs(secs);
    let all = futures::future::join_all((0..n).map(|i| user(&http, &pages, i, until))).await;
    let (mut samples, mut failed) = (Vec::new(), Vec::new());
    for (s, f) in all {
        samples.extend(s);
        failed.extend(f);
    }
    samples.sort();
    let failures = match failed.first() {
        None => String::new(),
        Some(e) => format!("; **{} failed** (first: {})", failed.len(), e.replace('|', "/")),
    };
    println!(
        "| {n} console users, {secs} s | {} calls{failures} | p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms |",
        samples.len(),
        percentile(&samples, 50.0),
        percentile(&samples, 95.0),
        percentile(&samples, 100.0)
    );
    Ok(())
}

// === memory ===

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok()))
        .unwrap_or(0)
}

#[allow(clippy::print_stdout)]
fn memory(keys: u64) {
    let size = Size { keys, events: 0 };
    let now = Utc::now();
    let (index, _changes) = tollgate_gateway::tenancy::key_index::KeyIndex::new();
    let before = rss_kib();
    let started = Instant::now();
    for k in 0..keys {
        let key = data::key(k, size, now);
        index.apply(&key.key_id.clone(), Some(&key));
    }
    let took = started.elapsed();
    let after = rss_kib();
    let per_key = (after.saturating_sub(before) * 1024) as f64 / keys.max(1) as f64;
    println!(
        "| key index, {keys} keys built in this process | RSS +{:.0} MiB, {per_key:.0} bytes a key | built in {:.1} s |",
        after.saturating_sub(before) as f64 / 1024.0,
        took.as_secs_f64()
    );
    walks(&index, size);
}

/// The index's own time for one filtered page (the walk of every key), median of 20, in this
/// process: what `/key/list` spends in memory before it reads the page's records.
#[allow(clippy::print_stdout)]
fn walks(index: &tollgate_gateway::tenancy::key_index::KeyIndex, size: Size) {
    use tollgate_gateway::tenancy::key_index::{KeyFilter, Start};
    let k = size.keys / 2;
    let filters = [
        ("search by alias", KeyFilter { search: Some(format!("svc-{k}")), ..KeyFilter::default() }),
        ("search by key prefix", KeyFilter { search: Some(data::key_id(k)[..12].to_owned()), ..KeyFilter::default() }),
        ("search by team", KeyFilter { search: Some(data::team_of(k, size)), ..KeyFilter::default() }),
        ("search matching a ninth of the keys", KeyFilter { search: Some("svc-1".into()), ..KeyFilter::default() }),
        ("team filter", KeyFilter { team_id: Some(data::team_of(k, size)), ..KeyFilter::default() }),
        ("user filter", KeyFilter { user_id: Some(data::user_of(k, size)), ..KeyFilter::default() }),
        (
            "metadata filter",
            KeyFilter { metadata: Some(("cost_center".into(), "cc-42".into())), ..KeyFilter::default() },
        ),
        (
            "metadata filter matching a third of the keys",
            KeyFilter { metadata: Some(("env".into(), "prod".into())), ..KeyFilter::default() },
        ),
        (
            "team filter and search",
            KeyFilter { team_id: Some(data::team_of(k, size)), search: Some("svc-1".into()), ..KeyFilter::default() },
        ),
    ];
    for (what, filter) in filters {
        let mut samples: Vec<Duration> = (0..20)
            .map(|_| {
                let started = Instant::now();
                let page = index.page(&filter, &Start::Offset(0), 20, false);
                std::hint::black_box(page);
                started.elapsed()
            })
            .collect();
        samples.sort();
        println!(
            "| key index walk, {what}, {} keys | median {:.1} ms | in process |",
            size.keys,
            percentile(&samples, 50.0)
        );
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tollgate_schemas::cql::validate_keyspace(&args.place.keyspace)?;
    if !args.place.keyspace.starts_with("bench_") {
        bail!("the keyspace must start with bench_ (it is dropped afterwards)");
    }
    match &args.command {
        Command::Load { keys, events, log_events, now } => {
            let now = DateTime::from_timestamp(*now, 0).context("--now")?;
            load(&args, Size { keys: *keys, events: *events }, *log_events, now).await?;
        }
        Command::Measure { target, rounds, only } => measure(target, *rounds, only).await?,
        Command::Users { target, users: n, secs } => users(target, *n, *secs).await?,
        Command::Memory { keys } => memory(*keys),
        Command::Drop => {
            let session =
                tollgate_schemas::store::connect(&tollgate_benches::cassandra::connection(&args.place.cassandra))
                    .await?;
            let mut drop =
                scylla::statement::Statement::new(format!("DROP KEYSPACE IF EXISTS {}", args.place.keyspace));
            drop.set_request_timeout(Some(Duration::from_secs(120)));
            session.query_unpaged(drop, &[]).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[tokio::test]
    async fn a_failed_write_is_tried_again_up_to_the_bound() {
        let tries = Cell::new(0);
        let flaky = || {
            tries.set(tries.get() + 1);
            let n = tries.get();
            async move {
                if n < 3 {
                    Err(anyhow::anyhow!("write timeout"))
                } else {
                    Ok(n)
                }
            }
        };
        assert_eq!(retried_after("a write", Duration::from_millis(1), flaky).await.unwrap(), 3);
        tries.set(0);
        let broken = || {
            tries.set(tries.get() + 1);
            async { Err::<(), _>(anyhow::anyhow!("write timeout")) }
        };
        let err = retried_after("a write", Duration::from_millis(1), broken).await.unwrap_err();
        assert_eq!(tries.get(), ATTEMPTS);
        assert!(format!("{err:#}").contains("6 attempts failed"), "{err:#}");
    }
}
