//! What the admin listings' two in-memory copies of the tenancy store share: the key index
//! (`key_index`) and the directory of the other records (`directory`) are each loaded whole,
//! then kept current by the change notices queued for them ([`maintain`]), and searched
//! ignoring case ([`contains_folded`]).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tollgate_schemas::store::TenancyStore;

/// An in-memory copy of some of the store's records.
pub(crate) trait Mirror: Send + Sync {
    /// A change notice: which record to read again.
    type Change: Send;
    /// What it is, in logs.
    const NAME: &'static str;
    /// Set once the first load is done.
    fn ready_flag(&self) -> &AtomicBool;
    /// Set when a change could not be queued: the whole copy is loaded again.
    fn overflow_flag(&self) -> &AtomicBool;
    /// Replaces the copy by a scan of the store; how many records it holds.
    fn load_all(&self, store: &dyn TenancyStore) -> impl Future<Output = Result<usize, &'static str>> + Send;
    /// Reads the changed record again.
    fn apply_change(&self, store: &dyn TenancyStore, change: Self::Change) -> impl Future<Output = ()> + Send;
}

/// Loads every record from `store`, then applies each change noticed, until `shutdown`. A
/// failed load is retried in 5 s; an overflow of changes loads the whole copy again.
pub(crate) async fn maintain<M: Mirror>(
    mirror: &M,
    store: Arc<dyn TenancyStore>,
    mut changes: mpsc::Receiver<M::Change>,
    shutdown: CancellationToken,
) {
    loop {
        mirror.overflow_flag().store(false, Ordering::Release);
        let loaded = tokio::select! {
            loaded = mirror.load_all(store.as_ref()) => loaded,
            () = shutdown.cancelled() => return,
        };
        match loaded {
            Ok(n) => {
                mirror.ready_flag().store(true, Ordering::Release);
                tracing::info!(records = n, "{} loaded", M::NAME);
            }
            Err(failure) => {
                tracing::warn!(failure, "the {} could not be loaded; retrying in 5 s", M::NAME);
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(5)) => continue,
                    () = shutdown.cancelled() => return,
                }
            }
        }
        while !mirror.overflow_flag().load(Ordering::Acquire) {
            let change = tokio::select! {
                change = changes.recv() => change,
                () = shutdown.cancelled() => return,
            };
            let Some(change) = change else { return };
            mirror.apply_change(store.as_ref(), change).await;
        }
        tracing::warn!("more changes than the {} can queue: loading it again", M::NAME);
    }
}

/// Whether `hay` contains `needle` (lower case already), ignoring case. Without allocating
/// when the needle is ASCII: a search walks every record of a listing.
pub(crate) fn contains_folded(hay: &str, needle: &str) -> bool {
    if !needle.is_ascii() {
        return hay.to_lowercase().contains(needle);
    }
    let n = needle.as_bytes();
    n.is_empty() || hay.as_bytes().windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}
