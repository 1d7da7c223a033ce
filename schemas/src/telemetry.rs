//! Process set-up for both binaries, the gateway and the ledger consumer (feature `telemetry`):
//! logs, so they read the same variables and write the same format, and the stop signal. Never called by a library: a binary's
//! `main` calls it once, before anything logs.

/// Structured logs to stderr; level from `TOLLGATE_LOG` (default `info`), JSON when
/// `TOLLGATE_LOG_FORMAT=json`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = if std::env::var("TOLLGATE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    let _ = result; // already initialised (tests): keep the first subscriber
}

/// Resolves at the first SIGTERM or SIGINT (Ctrl-C): both mean a graceful stop.
pub async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
