//! `tollgate-mock-provider`: the mock OpenAI-compatible upstream, as a process.

use clap::Parser;
use std::net::TcpListener;
use std::time::Duration;
use tollgate_benches::mock_provider::{serve, MockConfig};

#[derive(Parser, Debug)]
#[command(about = "Mock OpenAI-compatible provider for Tollgate tests and benchmarks")]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Delay before each answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Completion tokens when a request gives no max_tokens.
    #[arg(long, default_value_t = 16)]
    completion_tokens: u64,
    /// Require this bearer token on every request.
    #[arg(long, env = "TOLLGATE_MOCK_API_KEY")]
    api_key: Option<String>,
    /// Delay between streamed chunks, in microseconds.
    #[arg(long, default_value_t = 0)]
    chunk_delay_us: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

#[actix_web::main]
#[allow(clippy::print_stdout)] // the bound address is this binary's CLI output
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(&args.listen)?;
    let addr = listener.local_addr()?;
    let config = MockConfig {
        latency: Duration::from_millis(args.latency_ms),
        completion_tokens: args.completion_tokens,
        api_key: args.api_key,
        chunk_delay: Duration::from_micros(args.chunk_delay_us),
    };
    let server = serve(listener, config, args.workers)?;
    println!("listening on http://{addr}");
    server.await
}
