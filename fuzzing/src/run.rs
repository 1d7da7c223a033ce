//! How many cases a property runs, and the hang detector each case runs under.

use proptest::test_runner::Config;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// Longest one case may take before it counts as a hang. A hang detector, not a performance
/// assertion: every input is bounded to a few KiB (a case takes milliseconds), so a case that
/// runs this long is stuck in a loop or in work that grows out of proportion to its input.
pub const CASE_TIME_LIMIT: Duration = Duration::from_secs(10);

/// Cases per property: `TOLLGATE_FUZZ_CASES` (or proptest's own `PROPTEST_CASES`) when set;
/// otherwise `default` times `TOLLGATE_FUZZ_SCALE` (1 unless set). The defaults keep the whole
/// suite within about half a minute of `cargo test` on two cores; long runs scale them, so each
/// property keeps its share of the time (a whole stream costs a hundred times a request body;
/// docs/security.md, "Fuzzing").
pub fn cases(default: u32) -> u32 {
    let read = |name: &str| std::env::var(name).ok()?.trim().parse::<u32>().ok().filter(|n| *n > 0);
    let scale = read("TOLLGATE_FUZZ_SCALE").unwrap_or(1);
    read("TOLLGATE_FUZZ_CASES").or_else(|| read("PROPTEST_CASES")).unwrap_or_else(|| default.saturating_mul(scale))
}

/// A proptest configuration running [`cases`] cases, shrinking a failure for at most a minute,
/// and writing no regression files (every bug found gets a named regression test instead).
pub fn config(default_cases: u32) -> Config {
    Config { cases: cases(default_cases), failure_persistence: None, max_shrink_time: 60_000, ..Config::default() }
}

/// Runs one case on a thread of its own (with the 2 MiB stack of tokio's and actix's worker
/// threads, so a recursion too deep for production is too deep here) and waits at most
/// [`CASE_TIME_LIMIT`] for it. A panic in the case is re-raised here, so proptest sees it and
/// shrinks the input; a case still running at the limit fails the test as a hang (its thread is
/// left behind: a thread cannot be stopped from outside).
pub fn watchdog<T: Send + 'static>(case: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = mpsc::channel();
    let thread = std::thread::Builder::new().name("fuzz-case".into()).stack_size(2 * 1024 * 1024).spawn(move || {
        let out = case();
        let _ = done.send(());
        out
    });
    let thread = match thread {
        Ok(t) => t,
        Err(e) => panic!("cannot start a thread for the case: {e}"),
    };
    match finished.recv_timeout(CASE_TIME_LIMIT) {
        // Finished, or panicked (the sender was dropped while unwinding): `join` tells which.
        Ok(()) | Err(RecvTimeoutError::Disconnected) => match thread.join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(RecvTimeoutError::Timeout) => {
            panic!("one case ran longer than {CASE_TIME_LIMIT:?}: a hang (or work out of proportion to its input)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_returns_its_value_and_a_panic_is_raised_again() {
        assert_eq!(watchdog(|| 7), 7);
        let caught = std::panic::catch_unwind(|| watchdog(|| panic!("boom")));
        let payload = caught.expect_err("the panic comes back");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
    }
}
