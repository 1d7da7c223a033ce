//! What a request may spend and how fast: admission against the key's (and its team's, user's,
//! organization's and customer's) rate limits and budgets (`admission`), the rate limiter
//! (`ratelimit`), prices and costs in integer nano-USD (`pricing`), each gateway's view of spend
//! against budgets (`budget_view`) and the credit leases that bound hard budgets across gateways
//! (`leases`). docs/design.md §5.

pub mod admission;
pub mod budget_view;
pub mod leases;
pub mod pricing;
pub mod ratelimit;

/// Calls `f` with `scope|window`, the key budget cells and leases are kept by, written into a
/// buffer of the thread's: a lookup of a known scope allocates nothing.
pub(crate) fn with_window_key<R>(scope: &str, window: &str, f: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    KEY.with(|key| match key.try_borrow_mut() {
        Ok(mut key) => {
            key.clear();
            key.push_str(scope);
            key.push('|');
            key.push_str(window);
            f(&key)
        }
        // Only when `f` itself asks for a key: give it its own.
        Err(_) => f(&format!("{scope}|{window}")),
    })
}
