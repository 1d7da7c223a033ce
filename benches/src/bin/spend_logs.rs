//! `tollgate-spend-logs-bench`: `/spend/logs` at scale, for `benches/spend-logs/run`.
//!
//! `load` writes one key's events (a million by default) and some other keys' into a keyspace
//! of its own through the ledger consumer's Layer 1 write path (`CqlLedger::insert_events`: the
//! event ledger and its key index, exactly as the consumer writes them; no Kafka, no Layer 2).
//! `measure` times `/spend/logs` of a running gateway on that keyspace, and the same pages read
//! in this process by the current reader (`CqlSpend::logs`) and by the reader it replaced (every
//! event of the owner and day read, then filtered, sorted and paged in memory). `drop` removes
//! the keyspace. Output: Markdown table rows on stdout.

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_ledger::fold::Message;
use tollgate_ledger::ledger::{CqlLedger, LedgerStore};
use tollgate_schemas::logs::{LogCursor, LogFilter, LogQuery};
use tollgate_schemas::store::{CqlSpend, SpendSource};
use tollgate_schemas::{NanoUsd, UsageEvent, USAGE_EVENT_VERSION};
use uuid::{NoContext, Timestamp, Uuid};

#[derive(Parser, Debug)]
#[command(about = "Load a large key into the event ledger and time /spend/logs on it")]
struct Args {
    #[command(flatten)]
    place: tollgate_benches::cassandra::Place,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the schema and write the events.
    Load {
        /// The big key's identity (its hash).
        #[arg(long)]
        key_id: String,
        /// Its events, spread evenly over `day`.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Events of other keys (in teams of ten keys), the same day.
        #[arg(long, default_value_t = 100_000)]
        other_events: u64,
        #[arg(long, default_value_t = 20_000)]
        other_keys: u64,
        #[arg(long)]
        day: chrono::NaiveDate,
    },
    /// Time /spend/logs of the gateway at `gateway` for the big key (`key`, raw) on `day`.
    Measure {
        #[arg(long)]
        gateway: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        master_key: String,
        #[arg(long)]
        day: chrono::NaiveDate,
        /// Timed calls per figure (after one warm-up call).
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Timed calls of the replaced reader (each reads the whole day).
        #[arg(long, default_value_t = 3)]
        old_rounds: usize,
        /// Run the replaced reader as it was, one unpaged answer per shard (about 125,000 rows
        /// and 100 MB each for a million events): Cassandra builds each answer in its heap, which
        /// a small node may not survive. By default the driver pages the same reads.
        #[arg(long)]
        old_unpaged: bool,
    },
    /// Drop the keyspace.
    Drop,
}

/// Models of the big key's events: the first three evenly, `rare` once in 10,000.
const MODELS: [&str; 3] = ["gpt-4o-mini", "gpt-4o", "claude-sonnet"];

fn event(key_id: &str, team: Option<String>, i: u64, at: chrono::DateTime<chrono::Utc>) -> UsageEvent {
    let prompt = 100 + i % 900;
    let completion = 10 + i % 300;
    let model = if i % 10_000 == 7 { "rare" } else { MODELS[(i % 3) as usize] };
    let nanos = at.timestamp_subsec_nanos();
    let secs = u64::try_from(at.timestamp()).unwrap_or(0);
    UsageEvent {
        version: USAGE_EVENT_VERSION,
        event_id: Uuid::new_v7(Timestamp::from_unix(NoContext, secs, nanos)),
        occurred_at: at,
        gateway_id: "bench-gw".into(),
        request_id: format!("bench-req-{i:010}"),
        key_id: key_id.into(),
        key_alias: Some("bench".into()),
        team_id: team,
        customer_id: Some(format!("cust-{}", i % 50)),
        requested_model: model.into(),
        served_model: Some(model.into()),
        provider: Some("openai".into()),
        deployment: Some(format!("openai/{model}#0")),
        prompt_tokens: prompt,
        completion_tokens: completion,
        cost_nano_usd: NanoUsd(i64::try_from(prompt * 150 + completion * 600).unwrap_or(0)),
        latency_ms: 250 + i % 500,
        status: 200,
        stream: i.is_multiple_of(2),
        ..UsageEvent::default()
    }
}

/// Writes `events` through the consumer's Layer 1 path, `CHUNK` events a call.
async fn load(ledger: &CqlLedger, events: impl Iterator<Item = UsageEvent>) -> Result<u64> {
    const CHUNK: usize = 20_000;
    let mut offset = 0i64;
    let mut written = 0u64;
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut events = events.peekable();
    while events.peek().is_some() {
        chunk.clear();
        for e in events.by_ref().take(CHUNK) {
            chunk.push(Message { offset, event: e });
            offset += 1;
        }
        ledger.insert_events(0, &chunk).await?;
        written += chunk.len() as u64;
    }
    Ok(written)
}

/// Median, minimum and maximum of `samples`, in milliseconds.
fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    match samples {
        [] => "-".into(),
        [only] => format!("{:.1}", ms(*only)),
        _ => format!(
            "{:.1} (min {:.1}, max {:.1})",
            ms(samples[samples.len() / 2]),
            ms(samples[0]),
            ms(samples[samples.len() - 1])
        ),
    }
}

struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    async fn get(&self, bearer: &str, query: &str) -> Result<(Duration, serde_json::Value)> {
        let started = Instant::now();
        let resp = self.client.get(format!("{}/spend/logs?{query}", self.base)).bearer_auth(bearer).send().await?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await?;
        let took = started.elapsed();
        ensure!(status.is_success(), "{query}: {status} {body}");
        Ok((took, body))
    }

    /// One warm-up call, then `rounds` timed ones; returns the summary and the last answer.
    async fn time(&self, bearer: &str, query: &str, rounds: usize) -> Result<(String, serde_json::Value)> {
        let (_, mut last) = self.get(bearer, query).await?;
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let (took, body) = self.get(bearer, query).await?;
            samples.push(took);
            last = body;
        }
        Ok((summary(&mut samples), last))
    }
}

fn entries(v: &serde_json::Value) -> usize {
    v["data"].as_array().map_or(0, Vec::len)
}

/// The reader `/spend/logs` had before it was paged in the database, as it was: every event of
/// the owner's partitions of the day read whole, then filtered, sorted and paged in memory.
async fn old_reader(
    session: &scylla::client::session::Session,
    ks: &str,
    owner: &str,
    day: chrono::NaiveDate,
    key_id: &str,
    page: usize,
    page_size: usize,
) -> Result<(usize, usize)> {
    let stmt = session
        .prepare(format!("SELECT body FROM {ks}.usage_events WHERE owner_id = ? AND day = ? AND shard = ?"))
        .await?;
    let mut events = Vec::new();
    for shard in 0..i16::from(tollgate_schemas::event::EVENT_LEDGER_SHARDS) {
        let result = session.execute_unpaged(&stmt, (owner, day, shard)).await?;
        for row in result.into_rows_result()?.rows::<(Option<String>,)>()? {
            events.push(UsageEvent::decode(row?.0.unwrap_or_default().as_bytes())?);
        }
    }
    let total = events.len();
    let mut events: Vec<UsageEvent> = events.into_iter().filter(|e| e.key_id == key_id).collect();
    events.sort_by_key(|e| std::cmp::Reverse((e.occurred_at, e.event_id)));
    let shown = events.iter().skip((page - 1) * page_size).take(page_size).count();
    Ok((total, shown))
}

/// The same reads paged by the driver (5,000 rows a page) instead of one answer per shard: what
/// the replaced reader costs at best, without asking Cassandra for 100 MB answers.
async fn old_reader_paged(
    session: &scylla::client::session::Session,
    ks: &str,
    owner: &str,
    day: chrono::NaiveDate,
    key_id: &str,
    page_size: usize,
) -> Result<(usize, usize)> {
    let mut events = Vec::new();
    for shard in 0..i16::from(tollgate_schemas::event::EVENT_LEDGER_SHARDS) {
        let mut stmt = scylla::statement::Statement::new(format!(
            "SELECT body FROM {ks}.usage_events WHERE owner_id = ? AND day = ? AND shard = ?"
        ));
        stmt.set_page_size(5_000);
        let mut rows = session.query_iter(stmt, (owner, day, shard)).await?.rows_stream::<(Option<String>,)>()?;
        while let Some(row) = rows.next().await {
            events.push(UsageEvent::decode(row?.0.unwrap_or_default().as_bytes())?);
        }
    }
    let total = events.len();
    let mut events: Vec<UsageEvent> = events.into_iter().filter(|e| e.key_id == key_id).collect();
    events.sort_by_key(|e| std::cmp::Reverse((e.occurred_at, e.event_id)));
    Ok((total, events.iter().take(page_size).count()))
}

/// The peak resident memory of this process so far (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    session: Arc<scylla::client::session::Session>,
    ks: &str,
    gateway: &str,
    key: &str,
    key_id: &str,
    master: &str,
    day: chrono::NaiveDate,
    rounds: usize,
    (old_rounds, old_unpaged): (usize, bool),
) -> Result<Vec<String>> {
    let http = Http { client: reqwest::Client::new(), base: gateway.trim_end_matches('/').to_owned() };
    let range = format!("start_date={day}&end_date={day}");
    let mut out = Vec::new();
    let mut row = |what: &str, figure: String, note: String| out.push(format!("| {what} | {figure} | {note} |"));

    // The plain key itself, as a client of its own logs.
    let (t, first) = http.time(key, &format!("{range}&page_size=50"), rounds).await?;
    ensure!(entries(&first) == 50 && first["has_more"] == true, "page 1: {first}");
    row("page 1, 50 entries (the key's own Bearer)", t, format!("total {}", first["total"]));
    let cursor = first["next_cursor"].as_str().context("no next_cursor")?.to_owned();
    let (t, second) = http.time(key, &format!("{range}&page_size=50&after={cursor}"), rounds).await?;
    ensure!(entries(&second) == 50, "page 2: {second}");
    row("page 2 by `after=next_cursor`", t, String::new());
    let (t, big) = http.time(key, &format!("{range}&page_size=1000"), rounds).await?;
    row("page 1, 1,000 entries", t, format!("{} entries", entries(&big)));
    let (t, deep) = http.time(key, &format!("{range}&page_size=50&page=201"), rounds).await?;
    ensure!(entries(&deep) == 50, "page 201: {deep}");
    row("page=201 of 50 (skips 10,000: the deepest page number)", t, String::new());
    // A cursor halfway through the day: the cost of a page does not depend on its depth.
    let half = chrono::NaiveTime::from_hms_opt(12, 0, 0).map(|t| day.and_time(t).and_utc()).context("noon")?;
    let secs = u64::try_from(half.timestamp()).unwrap_or(0);
    let noon = Uuid::new_v7(Timestamp::from_unix(NoContext, secs, 0));
    let midday = LogCursor::Newest { day, slice: 12, event_id: noon };
    let (t, mid) = http.time(key, &format!("{range}&page_size=50&after={}", midday.encode()), rounds).await?;
    ensure!(entries(&mid) == 50, "midday: {mid}");
    row("page by cursor at entry ~500,000 (noon)", t, String::new());
    // The range ends 30 days after the data: 720 empty hours of the key index come first.
    let later = day + chrono::Days::new(30);
    let (t, sparse) = http.time(key, &format!("start_date={day}&end_date={later}&page_size=50"), rounds).await?;
    ensure!(entries(&sparse) == 50, "sparse: {sparse}");
    row("page 1 of `end_date` 30 days after the data (720 empty hours first)", t, String::new());
    let (t, by_model) = http.time(key, &format!("{range}&page_size=50&model=gpt-4o"), rounds).await?;
    row("page 1, `model=gpt-4o` (a third of the entries)", t, format!("total {}", by_model["total"]));
    let (t, rare) = http.time(key, &format!("{range}&page_size=50&model=rare"), rounds).await?;
    row(
        "page 1, `model=rare` (1 in 10,000): stops at 50,000 rows looked at",
        t,
        format!("{} entries, has_more {}", entries(&rare), rare["has_more"]),
    );
    let (t, scan) = http.time(master, &format!("{range}&page_size=50"), rounds).await?;
    row("admin, no key or team: page 1 of the ledger scan", t, format!("{} entries", entries(&scan)));
    let (t, none) = http.time(master, &format!("{range}&page_size=50&user_id=nobody"), rounds).await?;
    row(
        "admin, `user_id` matching nothing: one bounded scan call",
        t,
        format!("{} entries, has_more {}", entries(&none), none["has_more"]),
    );

    // In this process: the current reader without HTTP, then the replaced one.
    let spend = CqlSpend::new(session.clone(), ks).await?;
    let filter = LogFilter { key_id: Some(key_id.to_owned()), ..LogFilter::default() };
    let query = LogQuery { filter, from: day, to: day, after: None, skip: 0, limit: 50 };
    spend.logs(query.clone()).await?;
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let page = spend.logs(query.clone()).await?;
        samples.push(started.elapsed());
        ensure!(page.events.len() == 50, "in process: {} entries", page.events.len());
    }
    row("in process, current reader (`CqlSpend::logs`), page 1 of 50", summary(&mut samples), String::new());
    // What the answer's `total` adds: the key's day row of the spend ledger, over 64 partitions.
    let (scope, window) = (format!("key/{key_id}"), tollgate_schemas::ledger::day_window_of(day));
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        spend.total(&scope, &window).await?;
        samples.push(started.elapsed());
    }
    row("in process, the `total` read (one day row, 64 usage partitions)", summary(&mut samples), String::new());

    let owner = format!("key/{key_id}");
    let rss_before = peak_rss_mib();
    let mut samples = Vec::new();
    let mut note = String::new();
    for round in 0..old_rounds {
        let started = Instant::now();
        let read = if old_unpaged {
            old_reader(&session, ks, &owner, day, key_id, 1, 50).await
        } else {
            old_reader_paged(&session, ks, &owner, day, key_id, 50).await
        };
        match read {
            Ok((read, shown)) => {
                samples.push(started.elapsed());
                note = format!("read {read} events for {shown} entries");
            }
            Err(e) => {
                note = format!("fails: {e}");
                eprintln!("replaced reader, round {round}: {e}");
                break;
            }
        }
    }
    note.push_str(&format!("; peak RSS of this process {rss_before:.0} -> {:.0} MiB", peak_rss_mib()));
    let how =
        if old_unpaged { "one unpaged answer per shard, as it was" } else { "the same reads paged by the driver" };
    row(
        &format!("in process, replaced reader (whole day into memory; {how}), page 1 of 50"),
        summary(&mut samples),
        note,
    );
    Ok(out)
}

#[tokio::main]
#[allow(clippy::print_stdout)] // the result rows are this binary's output
async fn main() -> Result<()> {
    let args = Args::parse();
    tollgate_schemas::cql::validate_keyspace(&args.place.keyspace)?;
    if !args.place.keyspace.starts_with("bench_") {
        bail!("the keyspace must start with bench_ (it is dropped afterwards)");
    }
    let cassandra = tollgate_benches::cassandra::connection(&args.place.cassandra);
    match args.command {
        Command::Load { key_id, events, other_events, other_keys, day } => {
            let ledger = CqlLedger::connect(&cassandra, &args.place.keyspace, "usage", true).await?;
            let start = day.and_hms_opt(0, 0, 0).context("midnight")?.and_utc();
            let at =
                move |i: u64, n: u64| start + chrono::Duration::microseconds((86_400_000_000 / n.max(1) * i) as i64);
            let started = Instant::now();
            let written = load(&ledger, (0..events).map(|i| event(&key_id, None, i, at(i, events)))).await?;
            let big = started.elapsed();
            let others = (0..other_events).map(|i| {
                let k = i % other_keys.max(1);
                event(&format!("{k:064x}"), Some(format!("team-{}", k / 10)), i, at(i, other_events))
            });
            let started = Instant::now();
            let noise = load(&ledger, others).await?;
            println!(
                "| load: the key's events, Layer 1 + key index via `CqlLedger::insert_events` | {written} in {:.1} s ({:.0} events/s) | |",
                big.as_secs_f64(),
                written as f64 / big.as_secs_f64()
            );
            println!(
                "| load: other keys' events ({other_keys} keys in teams of 10) | {noise} in {:.1} s | |",
                started.elapsed().as_secs_f64()
            );
        }
        Command::Measure { gateway, key, key_id, master_key, day, rounds, old_rounds, old_unpaged } => {
            let session = Arc::new(tollgate_schemas::store::connect(&cassandra).await?);
            let ks = &args.place.keyspace;
            let old = (old_rounds, old_unpaged);
            let rows = measure(session, ks, &gateway, &key, &key_id, &master_key, day, rounds, old).await?;
            for r in rows {
                println!("{r}");
            }
        }
        Command::Drop => {
            let session = tollgate_schemas::store::connect(&cassandra).await?;
            let mut drop =
                scylla::statement::Statement::new(format!("DROP KEYSPACE IF EXISTS {}", args.place.keyspace));
            drop.set_request_timeout(Some(Duration::from_secs(120)));
            session.query_unpaged(drop, &[]).await?;
        }
    }
    Ok(())
}
