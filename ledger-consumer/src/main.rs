//! `tollgate-ledger-consumer`: parses arguments and config, then runs the consumer.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tollgate_ledger::ledger::CqlLedger;
use tollgate_ledger_consumer::config::Config;
use tollgate_ledger_consumer::consumer::{RunEnd, UsageConsumer};
use tollgate_ledger_consumer::health::Health;

#[derive(Parser, Debug)]
#[command(about = "Folds Tollgate usage events into the spend ledgers exactly once")]
struct Args {
    /// YAML config file.
    #[arg(long, short, env = "TOLLGATE_LEDGER_CONFIG")]
    config: PathBuf,
    /// Validate the config and exit without connecting.
    #[arg(long)]
    check_config: bool,
    /// Apply the CQL schema and exit.
    #[arg(long)]
    migrate: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Compare the event ledger with the spend aggregates at every scope and window, the spend
    /// aggregates with partition_spend row by row, and the key index with the event ledger
    /// event by event; exit 1 on any difference. Without --from/--to every window is compared,
    /// all-time included (the key index is always compared whole). Dead-lettered events are
    /// counted by reason and left out of the event ledger's totals.
    Reconcile {
        /// First UTC day to compare (YYYY-MM-DD).
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// Last UTC day to compare (YYYY-MM-DD).
        #[arg(long)]
        to: Option<chrono::NaiveDate>,
    },
    /// Write the key index (usage_events_by_key) rows of every event of the event ledger, and the
    /// daily read model (spend_daily) from the day rows of spend_aggregates: once, after
    /// upgrading a ledger written before they existed. Idempotent; safe while consumers run.
    Reindex,
    /// Export the charges of UTC days --from to --to (both included) from the event ledger, one
    /// row per day, billing scope, model and token type (docs/finance.md). Dead-lettered events
    /// are not billed. The output's extension chooses CSV (.csv) or Parquet (.parquet).
    Export {
        /// The export format: `focus` (FOCUS 1.2).
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// First UTC day (YYYY-MM-DD).
        #[arg(long)]
        from: chrono::NaiveDate,
        /// Last UTC day (YYYY-MM-DD).
        #[arg(long)]
        to: chrono::NaiveDate,
        /// The file to write: `.csv` or `.parquet`.
        #[arg(long)]
        output: PathBuf,
        /// InvoiceIssuerName: who invoices these charges.
        #[arg(long, default_value = "Tollgate")]
        invoice_issuer: String,
    },
    /// Seal a period (a month YYYY-MM or a day YYYY-MM-DD): a statement per organization, team
    /// and customer, with totals by model and token type, stored once with its content hash and
    /// the previous close's hash (docs/finance.md). Events that arrive later for it are billed
    /// as corrections in the first open period; the close never changes.
    Close {
        #[arg(long)]
        period: String,
    },
    /// Price every event of a period (a month YYYY-MM or a day YYYY-MM-DD) again under a price
    /// file with versioned prices, in memory, and print per scope the spend so far, the spend
    /// under the new prices and the difference (docs/finance.md). Nothing is written unless
    /// --apply: then an adjustment event for each event whose cost changes is published to the
    /// usage topic, and the consumers fold it. Running it again changes nothing.
    Rerate {
        #[arg(long)]
        period: String,
        /// The price file (YAML; docs/finance.md, "Price files").
        #[arg(long)]
        prices: PathBuf,
        /// Print the diff as JSON.
        #[arg(long)]
        json: bool,
        /// Publish the adjustments.
        #[arg(long)]
        apply: bool,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ExportFormat {
    Focus,
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // CLI output
fn main() -> ExitCode {
    let args = Args::parse();
    // Traces as the standard OTLP variables say (OTEL_EXPORTER_OTLP_ENDPOINT, ...): off without.
    let telemetry = match tollgate_schemas::telemetry::TraceSettings::from_env("tollgate-ledger-consumer")
        .and_then(|traces| tollgate_schemas::telemetry::init(traces.as_ref()))
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("config OK: {}", args.config.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        match serve(args, config).await {
            Ok(code) => code,
            Err(Exit(code, message)) => {
                eprintln!("error: {message}");
                code
            }
        }
    });
    // Tasks still running (a heartbeat waiting on Kafka, a close left behind) do not hold the
    // exit up.
    runtime.shutdown_timeout(Duration::from_millis(500));
    // Queued spans are exported before the process ends.
    telemetry.shutdown();
    code
}

/// How the consumer ends early: the exit status and what goes to stderr.
struct Exit(ExitCode, String);

impl Exit {
    fn failure(message: impl std::fmt::Display) -> Exit {
        Exit(ExitCode::FAILURE, message.to_string())
    }
}

/// Connects to the ledger, then runs the one-off command asked for, or consumes until a signal.
#[allow(clippy::print_stdout)] // CLI output
async fn serve(args: Args, config: Config) -> Result<ExitCode, Exit> {
    let health = std::sync::Arc::new(Health::default());
    if args.command.is_none() && !args.migrate {
        serve_metrics(&config, &health).await?;
    }
    let c = &config.cassandra;
    let create_schema = c.create_schema || args.migrate;
    // Dead letters are kept under generation 0's topic name, with the ledger partition
    // (docs/design.md §4.10): the same key whatever the current generation.
    let generations =
        config.kafka.usage_generations().map_err(|(field, m)| Exit(ExitCode::from(2), format!("{field}: {m}")))?;
    let ledger = CqlLedger::connect(&c.connection(), &c.keyspace, generations.topic(0), create_schema)
        .await
        .map_err(Exit::failure)?;
    if args.migrate {
        println!("schema applied to keyspace {}", c.keyspace);
        return Ok(ExitCode::SUCCESS);
    }
    match args.command {
        Some(Command::Reconcile { from, to }) => return Ok(reconcile(&ledger, &c.keyspace, from, to).await),
        Some(Command::Reindex) => {
            let n = ledger.reindex_keys(&c.keyspace).await.map_err(Exit::failure)?;
            println!("reindex: {n} key index rows written");
            let n = ledger.reindex_daily(&c.keyspace).await.map_err(Exit::failure)?;
            println!("reindex: {n} daily read-model rows written");
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Export { format: ExportFormat::Focus, from, to, output, invoice_issuer }) => {
            return export(&ledger, &c.keyspace, (from, to), &output, invoice_issuer).await;
        }
        Some(Command::Close { period }) => return close(&ledger, &c.keyspace, &period).await,
        Some(Command::Rerate { period, prices, json, apply }) => {
            return rerate(&ledger, &config, &period, &prices, (json, apply)).await;
        }
        None => {}
    }
    let partitions = usage_partitions_within_bound(&config)?;
    let budgets = budget_publisher(&config, &ledger, partitions).await?;
    consume(&config, std::sync::Arc::new(ledger), budgets, health).await
}

/// `/metrics`, `/health/liveness` and `/health/readiness` on `metrics_listen`, when set.
async fn serve_metrics(config: &Config, health: &std::sync::Arc<Health>) -> Result<(), Exit> {
    let Some(addr) = &config.metrics_listen else { return Ok(()) };
    let listen: std::net::SocketAddr =
        addr.parse().map_err(|e| Exit(ExitCode::from(2), format!("metrics_listen {addr:?}: {e}")))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Exit::failure(format!("cannot serve metrics on {addr}: {e}")))?;
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| Exit::failure(format!("cannot install the metrics recorder: {e}")))?;
    let upkeep = handle.clone();
    tokio::spawn(tollgate_schemas::telemetry::metrics_upkeep(move || upkeep.run_upkeep(), Duration::from_secs(5)));
    tokio::spawn(tollgate_ledger_consumer::health::serve(listener, handle, health.clone()));
    register_zeroes();
    Ok(())
}

/// Counters the shipped alerts and dashboards read, created at zero so that their series exist
/// before the first event (an absent series makes `rate` and `increase` answer nothing).
fn register_zeroes() {
    use metrics::counter;
    for reason in tollgate_ledger::dead_letter::Reason::ALL {
        counter!("tollgate_ledger_dead_letters_total", "reason" => reason.code()).absolute(0);
    }
    for name in [
        "tollgate_ledger_lwt_conflicts_total",
        "tollgate_ledger_apply_errors_total",
        "tollgate_ledger_events_folded_total",
    ] {
        counter!(name).absolute(0);
    }
}

/// The partition count of each generation of the usage topic, generation 0 first
/// (MAX_USAGE_PARTITIONS where Kafka cannot say). Spend readers sum the rows of partitions
/// 0..MAX_USAGE_PARTITIONS of each generation: the spend folded from a partition beyond would
/// be missing from every total and every budget, so a larger topic is refused.
fn usage_partitions_within_bound(config: &Config) -> Result<Vec<i32>, Exit> {
    let generations = config.kafka.usage_generations().map_err(|(field, m)| Exit::failure(format!("{field}: {m}")))?;
    let mut counts = Vec::new();
    for topic in generations.topics() {
        let partitions = usage_partition_count(config, topic);
        if let Some(n) = partitions.filter(|n| *n > tollgate_schemas::store::MAX_USAGE_PARTITIONS) {
            return Err(Exit::failure(format!(
                "the usage topic {topic} has {n} partitions; at most {} are supported (docs/design.md §4)",
                tollgate_schemas::store::MAX_USAGE_PARTITIONS
            )));
        }
        counts.push(partitions.unwrap_or(tollgate_schemas::store::MAX_USAGE_PARTITIONS));
    }
    Ok(counts)
}

/// Budget push-back and alerts, when `budgets.enabled`.
async fn budget_publisher(
    config: &Config,
    ledger: &CqlLedger,
    partitions: Vec<i32>,
) -> Result<Option<std::sync::Arc<tollgate_ledger_consumer::budgets::BudgetPublisher>>, Exit> {
    if !config.budgets.enabled {
        return Ok(None);
    }
    let b = &config.budgets;
    let push = tollgate_ledger_consumer::budgets::PushBackConfig {
        kafka: config.kafka.client_config(),
        topic: b.state_topic.clone(),
        consumer_id: b.consumer_id.clone().unwrap_or_else(default_consumer_id),
        heartbeat_interval: std::time::Duration::from_millis(b.heartbeat_interval_ms),
        default_thresholds: b.alert_thresholds.clone(),
        webhook_url: b.webhook_url.clone(),
        usage_partitions: partitions,
    };
    let keyspace = &config.cassandra.keyspace;
    let tenancy =
        tollgate_schemas::store::CqlTenancy::new(ledger.session().clone(), keyspace).await.map_err(Exit::failure)?;
    let publisher = tollgate_ledger_consumer::budgets::BudgetPublisher::new(
        push,
        ledger.session().clone(),
        keyspace,
        std::sync::Arc::new(tenancy),
    )
    .await
    .map_err(|e| Exit::failure(format!("cannot start budget push-back: {e}")))?;
    Ok(Some(std::sync::Arc::new(publisher)))
}

/// Folds the usage topic until SIGTERM or SIGINT; a consumer that lost its group is replaced.
#[allow(clippy::print_stdout)] // the line tests and scripts wait for
async fn consume(
    config: &Config,
    ledger: std::sync::Arc<CqlLedger>,
    budgets: Option<std::sync::Arc<tollgate_ledger_consumer::budgets::BudgetPublisher>>,
    health: std::sync::Arc<Health>,
) -> Result<ExitCode, Exit> {
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        tollgate_schemas::telemetry::stop_signal().await;
        tracing::info!("shutdown requested");
        signal.cancel();
        exit_if_shutdown_hangs();
    });
    if let Some(b) = &budgets {
        tokio::spawn(b.clone().heartbeats(shutdown.clone(), health.clone()));
    }
    warn_if_missing(config, &config.kafka.dlq_topic);
    let mut announced = false;
    loop {
        let consumer = UsageConsumer::new(config, ledger.clone(), budgets.clone(), health.clone())
            .map_err(|e| Exit::failure(format!("cannot create the Kafka consumer: {e}")))?;
        if !announced {
            let topics = config.kafka.earlier_usage_topics.iter().chain([&config.kafka.usage_topic]);
            let topics: Vec<&str> = topics.map(String::as_str).collect();
            println!("consuming {} as group {}", topics.join(", "), config.kafka.group_id);
            announced = true;
        }
        match consumer.run(shutdown.clone()).await {
            RunEnd::Shutdown => {
                consumer.close(CLOSE_WITHIN).await;
                return Ok(ExitCode::SUCCESS);
            }
            RunEnd::Rejoin => {
                // Closing a consumer that lost its coordinator can block until the
                // coordinator answers; never let that stop the replacement.
                tokio::spawn(consumer.close(Duration::from_secs(60)));
            }
        }
    }
}

/// How long a shutdown waits for the Kafka consumer to commit and leave its group.
const CLOSE_WITHIN: Duration = Duration::from_secs(3);

/// The most a shutdown may take, from the signal to the exit, whatever it waits for.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(8);

/// The last line of defence of the shutdown bound: should anything still hold the process
/// [`SHUTDOWN_BOUND`] after the signal, exit anyway. Offsets are only ever stored for batches
/// wholly folded, so exiting at any point loses nothing: what is not committed is replayed.
fn exit_if_shutdown_hangs() {
    let spawned = std::thread::Builder::new().name("tollgate-shutdown-bound".into()).spawn(|| {
        std::thread::sleep(SHUTDOWN_BOUND);
        tracing::error!(bound = ?SHUTDOWN_BOUND, "shutdown did not finish in time; exiting anyway");
        std::process::exit(1);
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the shutdown bound");
    }
}

/// Says so at start-up when `topic` does not exist: a refused record would wait (retrying)
/// until it is created, and folding with it.
fn warn_if_missing(config: &Config, topic: &str) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: Result<BaseConsumer, _> = config.kafka.client_config().create();
    let exists = consumer
        .ok()
        .and_then(|c| c.fetch_metadata(Some(topic), Duration::from_secs(5)).ok())
        .map(|m| m.topics().iter().any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()));
    if exists == Some(false) {
        tracing::warn!(
            topic,
            "the dead-letter topic does not exist: a refused record will hold its partition up until it is created"
        );
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // CLI output
async fn reconcile(
    ledger: &CqlLedger,
    keyspace: &str,
    from: Option<chrono::NaiveDate>,
    to: Option<chrono::NaiveDate>,
) -> ExitCode {
    use tollgate_ledger::reconcile::{
        compare, compare_key_index, compare_read_model, dead_letters_by_reason, event_ledger_totals, scope_totals,
        without_dead_letters, Range, RowId, Totals,
    };
    let range = Range { from: from.map(|d| d.to_string()), to: to.map(|d| d.to_string()) };
    let scans = tokio::try_join!(
        ledger.scan_events(keyspace),
        ledger.scan_rows(keyspace, "spend_aggregates"),
        ledger.scan_rows(keyspace, "partition_spend"),
        ledger.scan_dead_letters(keyspace),
        ledger.scan_key_index(keyspace),
        ledger.scan_daily_rows(keyspace),
    );
    let (events, read_model, authoritative, dead, key_index, daily) = match scans {
        Ok(all) => all,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    type Rows = std::collections::BTreeMap<RowId, Totals>;
    let in_range = |rows: Rows| -> Rows { rows.into_iter().filter(|((_, w, _), _)| range.includes(w)).collect() };
    let (read_model, authoritative, daily) = (in_range(read_model), in_range(authoritative), in_range(daily));
    let counted = without_dead_letters(&events, &dead);
    let excluded = events.len() - counted.len();
    // The key index is compared whole, whatever the range: it must point at every event.
    let dead_ids: std::collections::HashSet<uuid::Uuid> = dead.iter().filter_map(|d| d.event_id).collect();
    let index_diff = compare_key_index(&counted, &dead_ids, &key_index);
    let layer1 = event_ledger_totals(counted, &range);
    let layer2 = scope_totals(&read_model);
    let diffs = compare(&layer1, &layer2);
    for d in &diffs {
        println!(
            "MISMATCH scope={} window={} event_ledger={{spent_nano_usd: {}, events: {}}} aggregates={{spent_nano_usd: {}, events: {}}}",
            d.scope, d.window, d.event_ledger.spent, d.event_ledger.events, d.aggregates.spent, d.aggregates.events
        );
    }
    let by_reason: Vec<String> =
        dead_letters_by_reason(&dead).into_iter().map(|(reason, n)| format!("{reason}: {n}")).collect();
    println!(
        "dead letters: {} dead-lettered events ({}); Layer 1 rows of dead-lettered events left out: {excluded}",
        dead.len(),
        if by_reason.is_empty() { "none".to_owned() } else { by_reason.join(", ") }
    );
    let lagging = compare_read_model(&authoritative, &read_model);
    for l in &lagging {
        let (scope, window, partition) = &l.row;
        println!(
            "READ MODEL LAGS scope={scope} window={window} partition={partition} \
             partition_spend={{spent_nano_usd: {}, events: {}}} spend_aggregates={{spent_nano_usd: {}, events: {}}}",
            l.authoritative.spent, l.authoritative.events, l.read_model.spent, l.read_model.events
        );
    }
    // The daily read model holds each day row of spend_aggregates again, by kind and day.
    let day_rows: Rows =
        read_model.iter().filter(|((_, w, _), _)| w.starts_with("d:")).map(|(k, v)| (k.clone(), *v)).collect();
    let daily_lagging = compare_read_model(&day_rows, &daily);
    for l in &daily_lagging {
        let (scope, window, partition) = &l.row;
        println!(
            "DAILY READ MODEL LAGS scope={scope} window={window} partition={partition} \
             spend_aggregates={{spent_nano_usd: {}, events: {}}} spend_daily={{spent_nano_usd: {}, events: {}}}",
            l.authoritative.spent, l.authoritative.events, l.read_model.spent, l.read_model.events
        );
    }
    const SHOWN: usize = 100;
    for (what, rows) in [("MISSING", &index_diff.missing), ("STRAY", &index_diff.extra)] {
        for r in rows.iter().take(SHOWN) {
            println!(
                "KEY INDEX {what} key={} day={} hour={} event={} team={:?} user={:?} customer={:?} model={}",
                r.key_id, r.day, r.hour, r.event_id, r.team_id, r.user_id, r.customer_id, r.model
            );
        }
        if rows.len() > SHOWN {
            println!("KEY INDEX {what}: {} more not shown", rows.len() - SHOWN);
        }
    }
    println!(
        "key index: {} rows, {} events without their row, {} rows pointing at no event",
        key_index.len(),
        index_diff.missing.len(),
        index_diff.extra.len()
    );
    println!(
        "reconcile: {} events, {} (scope, window) rows compared, {} differences; {} Layer 2 rows, {} behind partition_spend; \
         {} day rows, {} of spend_daily behind spend_aggregates",
        events.len() - excluded,
        layer1.len(),
        diffs.len(),
        authoritative.len(),
        lagging.len(),
        day_rows.len(),
        daily_lagging.len()
    );
    let ok = diffs.is_empty() && lagging.is_empty() && daily_lagging.is_empty() && index_diff.is_empty();
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let run = tollgate_schemas::store::ReconcileRun {
        finished_at: chrono::Utc::now(),
        range_from: range.from.clone(),
        range_to: range.to.clone(),
        events: count(events.len() - excluded),
        rows_compared: count(layer1.len()),
        differences: count(diffs.len()),
        read_model_behind: count(lagging.len() + daily_lagging.len()),
        key_index_missing: count(index_diff.missing.len()),
        key_index_stray: count(index_diff.extra.len()),
        dead_letters: count(dead.len()),
        ok,
    };
    // Gateways show the newest run (`GET /ledger/health`); not recording it changes no result.
    if let Err(e) = tollgate_schemas::store::record_reconcile(ledger.session(), keyspace, &run).await {
        eprintln!("warning: the run was not recorded in reconcile_runs: {e}");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `export --format focus`: the charges of the period, written to `output`.
#[allow(clippy::print_stdout)] // CLI output
async fn export(
    ledger: &CqlLedger,
    keyspace: &str,
    (from, to): (chrono::NaiveDate, chrono::NaiveDate),
    output: &std::path::Path,
    issuer: String,
) -> Result<ExitCode, Exit> {
    use tollgate_ledger_consumer::finance;
    let period = finance::period(from, to).map_err(|e| Exit(ExitCode::from(2), e.to_string()))?;
    finance::FileFormat::of(output).map_err(|e| Exit(ExitCode::from(2), e.to_string()))?;
    let (charges, events) = finance::charges(ledger, keyspace, period).await.map_err(Exit::failure)?;
    finance::write(&charges, &finance::Issuer { name: issuer }, output).map_err(Exit::failure)?;
    println!(
        "export: {} rows, {events} events, BilledCost {} USD ({} nano-USD), {from} to {to}, written to {}",
        charges.rows.len(),
        finance::focus::decimal(charges.total()),
        charges.total(),
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `close --period`: seals the period and says what the close holds.
#[allow(clippy::print_stdout)] // CLI output
async fn close(ledger: &CqlLedger, keyspace: &str, period: &str) -> Result<ExitCode, Exit> {
    use tollgate_ledger_consumer::finance;
    let (close, events) = finance::seal(ledger, keyspace, period).await.map_err(Exit::failure)?;
    let total: i128 =
        close.statements.iter().filter(|(s, _)| s.starts_with("org/")).map(|(_, s)| s.total_nano_usd).sum();
    println!(
        "close: {} ({} to {}) sealed as close {}: {events} events, {} statements (organizations' total {} USD), \
         watermark {:?}, hash {}, previous {}",
        close.period,
        close.from,
        close.to,
        close.seq,
        close.statements.len(),
        finance::focus::decimal(total),
        close.watermark,
        close.content_hash,
        if close.previous_hash.is_empty() { "none" } else { &close.previous_hash }
    );
    Ok(ExitCode::SUCCESS)
}

/// `rerate --period --prices [--json] [--apply]`: the diff per scope, and with `--apply` the
/// adjustments published first.
#[allow(clippy::print_stdout)] // CLI output
async fn rerate(
    ledger: &CqlLedger,
    config: &Config,
    period: &str,
    prices: &std::path::Path,
    (json, apply): (bool, bool),
) -> Result<ExitCode, Exit> {
    use tollgate_ledger_consumer::finance;
    let usage = |e: finance::ExportError| match e {
        finance::ExportError::Usage(m) => Exit(ExitCode::from(2), m),
        other => Exit::failure(other),
    };
    let text = std::fs::read(prices).map_err(|e| Exit(ExitCode::from(2), format!("{}: {e}", prices.display())))?;
    let generation = config.kafka.usage_generation;
    let plan = finance::rerate(ledger, &config.cassandra.keyspace, period, &text, generation).await.map_err(usage)?;
    if apply {
        finance::publish_adjustments(&config.kafka, &plan.adjustments).await.map_err(Exit::failure)?;
    }
    print!("{}", finance::diff::render(&plan, period, apply, json));
    Ok(ExitCode::SUCCESS)
}

/// The usage topic's partition count, from Kafka; `None` when Kafka cannot say (spend totals
/// then read every partition a topic may have).
fn usage_partition_count(config: &tollgate_ledger_consumer::config::Config, topic: &str) -> Option<i32> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: Result<BaseConsumer, _> = config.kafka.client_config().create();
    consumer
        .ok()
        .and_then(|c| c.fetch_metadata(Some(topic), std::time::Duration::from_secs(10)).ok())
        .and_then(|m| m.topics().first().map(|t| t.partitions().len()))
        .and_then(|n| i32::try_from(n).ok())
        .filter(|n| *n > 0)
}

fn default_consumer_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    format!("{host}-{}", std::process::id())
}
