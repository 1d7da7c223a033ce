//! The gateway's side listeners, beside the main one that [`crate::run`] serves: `/metrics` alone
//! (`gateway.metrics.listen`) and the admin side (`gateway.admin.listen`: the admin API, the
//! spend API and the console) on workers of its own, at a lower priority by default
//! (docs/design.md §1.6, "The admin listener").

use super::routes;
use crate::config::{AdminPriority, AdminSettings};
use crate::AppState;
use actix_web::{web, App, HttpServer};

/// The side servers started with the main one.
pub struct SideListeners {
    metrics: Option<Running>,
    admin: Option<Running>,
}

struct Running {
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    fn spawn(server: actix_web::dev::Server) -> Running {
        Running { handle: server.handle(), task: tokio::spawn(server) }
    }
}

impl SideListeners {
    /// Binds and starts the side listeners `state` asks for.
    pub fn start(state: &web::Data<AppState>) -> std::io::Result<SideListeners> {
        let metrics = state.metrics_listen.as_deref().map(|addr| metrics_server(state, addr)).transpose()?;
        let admin = state.admin.listen.as_deref().map(|addr| admin_server(state, &state.admin, addr)).transpose()?;
        Ok(SideListeners { metrics: metrics.map(Running::spawn), admin: admin.map(Running::spawn) })
    }

    /// What stops the admin listener when the main one begins to stop: gracefully, its
    /// requests in flight finishing within the gateway's `shutdown_timeout`, counted from the
    /// same instant as the main listener's.
    pub fn admin_handle(&self) -> Option<actix_web::dev::ServerHandle> {
        self.admin.as_ref().map(|a| a.handle.clone())
    }

    /// Once the main listener has stopped: stops `/metrics` (scraped until then, through the
    /// drain) and waits until both have stopped.
    pub async fn stopped(self) {
        if let Some(metrics) = self.metrics {
            metrics.handle.stop(false).await;
            let _ = metrics.task.await;
        }
        if let Some(admin) = self.admin {
            admin.handle.stop(true).await;
            let _ = admin.task.await;
        }
    }
}

/// `/metrics` served on a listener of its own (one worker), so it need not share the API's port.
fn metrics_server(state: &web::Data<AppState>, addr: &str) -> std::io::Result<actix_web::dev::Server> {
    let metrics_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(metrics_state.clone())
            .app_data(super::MetricsListener)
            .configure(routes::metrics_listener)
            .default_service(web::to(super::not_found))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)?;
    for bound in server.addrs() {
        tracing::info!(addr = %bound, "metrics on their own listener");
    }
    Ok(server.run())
}

/// The admin API, the spend API and the console on `addr`, served by `settings.workers` workers
/// of their own: a month of spend read for the console, or a walk of a million keys, keeps
/// those workers busy and never the data plane's.
fn admin_server(
    state: &web::Data<AppState>,
    settings: &AdminSettings,
    addr: &str,
) -> std::io::Result<actix_web::dev::Server> {
    let admin_state = state.clone();
    let low = settings.priority == AdminPriority::Low;
    let server = HttpServer::new(move || {
        // Called on each worker's own thread as it starts.
        name_this_thread(ADMIN_THREAD_NAME);
        if low {
            lower_this_thread();
        }
        App::new()
            .app_data(admin_state.clone())
            .configure(routes::admin_listener)
            .default_service(web::to(super::not_found))
    })
    .workers(settings.workers)
    .keep_alive(state.keep_alive)
    .client_request_timeout(state.client_request_timeout)
    .shutdown_timeout(state.shutdown_timeout.as_secs())
    .disable_signals()
    .bind(addr)?;
    for bound in server.addrs() {
        tracing::info!(addr = %bound, workers = settings.workers, "admin API, spend API and console on their own listener");
    }
    Ok(server.run())
}

/// The admin workers' thread name: actix names every worker thread `actix-server worker <n>`,
/// the data plane's and the admin side's alike; with a name of its own an admin worker can be
/// told apart in `top -H` or `ps -L` and placed on other cores (`taskset`; benches/console).
pub const ADMIN_THREAD_NAME: &str = "tollgate-admin";

/// Names the calling thread (Linux: its `comm`, at most 15 bytes); elsewhere, or if procfs
/// refuses, the thread keeps its name and serves as before.
fn name_this_thread(name: &str) {
    if let Err(error) = std::fs::write("/proc/thread-self/comm", name) {
        tracing::debug!(%error, "could not name an admin worker's thread");
    }
}

/// The crate's cross-platform priority that is nice 10 on Linux (it maps 0..=99 onto nice
/// 19..=-20; the test below reads the niceness back).
const LOW_PRIORITY: u8 = 22;

/// Lowers the calling thread's scheduling priority to nice 10, once; a failure is logged and
/// the thread keeps its priority.
fn lower_this_thread() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority,
        ThreadPriorityValue, ThreadSchedulePolicy,
    };
    thread_local! {
        static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if LOWERED.with(|done| done.replace(true)) {
        return;
    }
    let result = ThreadPriorityValue::try_from(LOW_PRIORITY).map_err(|e| e.to_string()).and_then(|value| {
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Crossplatform(value),
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
        )
        .map_err(|e| format!("{e:?}"))
    });
    if let Err(error) = result {
        tracing::warn!(%error, "could not lower the priority of an admin worker");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The niceness of the calling thread, from procfs (field 19 of its `stat`).
    fn niceness() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_named_thread_has_the_admin_name_and_the_others_keep_theirs() {
        let comm = || std::fs::read_to_string("/proc/thread-self/comm").unwrap().trim_end().to_owned();
        let before = comm();
        let named = std::thread::Builder::new()
            .name("before-naming".into())
            .spawn(move || {
                name_this_thread(ADMIN_THREAD_NAME);
                comm()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(named, ADMIN_THREAD_NAME);
        assert!(ADMIN_THREAD_NAME.len() <= 15, "Linux keeps 15 bytes of a thread's name");
        assert_eq!(comm(), before, "the calling thread keeps its name");
    }

    #[test]
    fn a_lowered_thread_runs_at_nice_10_and_the_others_do_not() {
        let before = niceness();
        let lowered = std::thread::spawn(|| {
            lower_this_thread();
            lower_this_thread();
            niceness()
        })
        .join()
        .unwrap();
        if before <= 10 {
            assert_eq!(lowered, 10, "the admin worker's niceness");
        }
        assert_eq!(niceness(), before, "the calling thread keeps its priority");
    }
}
