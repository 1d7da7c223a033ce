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

/// Changes waiting to be read again; beyond this the whole copy is loaded again.
pub(crate) const PENDING_CHANGES: usize = 65_536;

/// What a copy keeps beside its records: whether it is loaded, and the changes queued for it.
pub(crate) struct Feed<C> {
    pub(super) ready: AtomicBool,
    /// Set when a change could not be queued: the whole copy is loaded again.
    pub(super) overflowed: AtomicBool,
    changes: mpsc::Sender<C>,
}

impl<C> Feed<C> {
    /// A feed not yet loaded, and what [`maintain`] reads its changes from.
    pub(crate) fn new() -> (Feed<C>, mpsc::Receiver<C>) {
        let (changes, rx) = mpsc::channel(PENDING_CHANGES);
        (Feed { ready: AtomicBool::new(false), overflowed: AtomicBool::new(false), changes }, rx)
    }

    /// Whether the first load is done (until then listings are refused, not served partial).
    pub(crate) fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Queues a change to read again soon. Never blocks: when the queue is full, the whole copy
    /// is loaded again instead.
    pub(crate) fn notice(&self, change: C) {
        if self.changes.try_send(change).is_err() {
            self.overflowed.store(true, Ordering::Release);
        }
    }
}

/// An in-memory copy of some of the store's records.
pub(crate) trait Mirror: Send + Sync {
    /// A change notice: which record to read again.
    type Change: Send;
    /// What it is, in logs.
    const NAME: &'static str;
    fn feed(&self) -> &Feed<Self::Change>;
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
    let feed = mirror.feed();
    loop {
        feed.overflowed.store(false, Ordering::Release);
        let loaded = tokio::select! {
            loaded = mirror.load_all(store.as_ref()) => loaded,
            () = shutdown.cancelled() => return,
        };
        match loaded {
            Ok(n) => {
                feed.ready.store(true, Ordering::Release);
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
        while !feed.overflowed.load(Ordering::Acquire) {
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
