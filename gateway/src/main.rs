//! `tollgate-gateway`: parses arguments and config, then calls `tollgate_gateway::run`.

use clap::Parser;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use tollgate_gateway::config::Config;

/// mimalloc: a request allocates and frees many small buffers across threads; the system
/// allocator showed as about a fifth of the gateway's CPU in profiles. Built without transparent
/// huge pages (`no_thp`, Cargo.toml): with them, each 2 MiB region it touched was resident whole,
/// about half the idle gateway's memory. `MIMALLOC_ALLOW_THP=1` turns them back on.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "Tollgate: an OpenAI-compatible LLM gateway with exact metering")]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// YAML config file.
    #[arg(long, short, env = "TOLLGATE_CONFIG", required = true)]
    config: Option<PathBuf>,
    /// Listen address, overriding `gateway.listen` (port 0 picks a free port).
    #[arg(long, env = "TOLLGATE_LISTEN")]
    listen: Option<String>,
    /// Validate the config and exit (non-zero on error) without binding a port.
    #[arg(long)]
    check_config: bool,
    /// Refuse to start (or, with --check-config, fail) when the config sets LiteLLM settings
    /// Tollgate accepts but does not act on.
    #[arg(long)]
    strict: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Import keys, teams, users, organizations, end users and budgets from LiteLLM's
    /// PostgreSQL database into the store the config names (docs/litellm-migration.md).
    ImportLitellm {
        /// YAML config file (its `database`, or the embedded file, receives the records).
        #[arg(long, short, env = "TOLLGATE_CONFIG")]
        config: PathBuf,
        /// LiteLLM's database: postgres://user:password@host:port/db[?sslmode=disable|prefer|require]
        #[arg(long, env = "LITELLM_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// Also carry running spend, as opening balances in the current budget windows.
        #[arg(long)]
        spend: bool,
        /// Carry spend summed from LiteLLM_SpendLogs over each current budget window instead of
        /// the running `spend` columns (implies --spend).
        #[arg(long)]
        spend_logs: bool,
        /// Read and compare; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // CLI output
fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::ImportLitellm { config, database_url, spend, spend_logs, dry_run }) = args.command {
        tollgate_schemas::telemetry::init_logging();
        let options = tollgate_gateway::import::Options { database_url, spend, spend_logs, dry_run };
        return import_litellm(&config, &options);
    }
    // Required by clap without a subcommand.
    let Some(path) = args.config.clone() else { return ExitCode::from(2) };
    let origin = path.display().to_string();
    let (config, traces) = match Config::load(&path).and_then(|c| Ok((c.trace_settings(&origin)?, c))) {
        Ok((traces, c)) => (c, traces),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(code) = report_config(&args, &config, &origin) {
        return code;
    }
    // Before the runtime starts: the span exporter's client blocks on a thread of its own.
    let traces = traces.map(tollgate_gateway::traces::sample_in_gateway);
    let telemetry = match tollgate_schemas::telemetry::init(traces.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for callback in config.ignored_callbacks() {
        tracing::warn!("{callback} is not supported; ignored");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let state = match tollgate_gateway::build_state(&config, &origin).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let addr = args.listen.unwrap_or_else(|| config.gateway.listen.clone());
        let listener = match listen(&addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match listener.local_addr() {
            Ok(bound) => println!("listening on http://{bound}"),
            Err(e) => eprintln!("warning: cannot read the bound address: {e}"),
        }
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            tollgate_schemas::telemetry::stop_signal().await;
            tracing::info!("shutdown requested");
            signal.cancel();
        });
        match tollgate_gateway::run(listener, state, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    });
    // Queued spans are exported before the process ends.
    telemetry.shutdown();
    code
}

/// `import-litellm`: prints the report; non-zero when the import failed or refused rows.
#[allow(clippy::print_stdout, clippy::print_stderr)] // CLI output
fn import_litellm(path: &std::path::Path, options: &tollgate_gateway::import::Options) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tollgate_gateway::import::run(&config, options)) {
        Ok(report) => {
            print!("{report}");
            if report.refused() > 0 {
                eprintln!("error: {} rows refused (listed above)", report.refused());
                return ExitCode::from(3);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: import-litellm: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The LiteLLM settings the config sets and Tollgate ignores: refused under `--strict`, listed
/// by `--check-config` before its verdict. `Some` when the process stops here.
#[allow(clippy::print_stdout, clippy::print_stderr)] // CLI output
fn report_config(args: &Args, config: &Config, origin: &str) -> Option<ExitCode> {
    let unsupported = config.unsupported();
    if args.strict && !unsupported.is_empty() {
        eprintln!("error: {origin}: {} LiteLLM settings are not supported (--strict):", unsupported.len());
        for setting in &unsupported {
            eprintln!("  {setting}");
        }
        return Some(ExitCode::from(2));
    }
    if !args.check_config {
        return None;
    }
    for setting in &unsupported {
        println!("warning: {origin}: {setting}; ignored");
    }
    Some(match tollgate_gateway::check_config(config, origin) {
        Ok(()) => {
            println!("config OK: {origin}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    })
}

/// Connections the kernel queues before the gateway accepts them: a burst of new clients at
/// high request rates must not be refused (the standard library's `bind` queues 128).
const LISTEN_BACKLOG: i32 = 4096;

/// A listening socket on `addr` (address reuse on, as servers do).
fn listen(addr: &str) -> std::io::Result<TcpListener> {
    use std::net::ToSocketAddrs;
    let addr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"))?;
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}
