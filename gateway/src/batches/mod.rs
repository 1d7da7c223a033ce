//! OpenAI's Files and Batch API (`/v1/files`, `/v1/batches`), forwarded to the provider's own
//! as LiteLLM does, and billed at batch prices when a batch ends: one usage event per answered
//! line, through the same sink as every request (docs/design.md §2.13).
//!
//! - `jsonl`: an input file checked (and written again with the provider's model name);
//! - `output`: an output file read for billing;
//! - `upstream`: the provider's Files and Batch API;
//! - `billing`: the events of a finished batch, with ids derived from (batch, `custom_id`) so
//!   that billing it again anywhere is folded once by the ledger;
//! - `poller`: the background poll of the batches this gateway created.
//!
//! Ownership is kept here, in the process: which key uploaded each file and created each batch,
//! and which deployment serves it. It never lets a key see another's files or batches. A batch
//! also carries its owner's key id in its provider-side `metadata`, so a gateway that does not
//! know it (restarted, or another replica) finds it again for its owner (see `upstream`).

pub mod billing;
pub mod jsonl;
pub mod output;
pub mod poller;
pub mod upstream;

use crate::config::BatchSettings;
use crate::providers::Deployment;
use crate::tenancy::auth::Principal;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Files and batches remembered at most, each; past it the oldest are forgotten (a batch
/// forgotten is found again through its provider, and billed at most once anyway).
pub const MAX_TRACKED: usize = 100_000;

/// A file a key uploaded (or a batch of its produced), and where it lives.
#[derive(Clone)]
pub struct FileEntry {
    pub key_id: String,
    /// The model group its lines name, and the endpoint they call.
    pub model: String,
    pub url: String,
    pub deployment: Arc<Deployment>,
}

/// Where a batch's billing stands in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Billing {
    Open,
    /// Being billed now (by a client's retrieval or the poller): nobody else starts.
    Claimed,
    Done,
}

/// A batch: its owner as it was admitted (whose key, team and customer its lines are charged
/// to), the model group it was created for and the deployment that runs it.
#[derive(Clone)]
pub struct BatchEntry {
    pub owner: Arc<Principal>,
    pub model: String,
    pub deployment: Arc<Deployment>,
    pub billing: Billing,
}

/// A map that forgets its oldest entries past [`MAX_TRACKED`].
struct Bounded<T> {
    entries: HashMap<String, T>,
    order: VecDeque<String>,
}

impl<T> Default for Bounded<T> {
    fn default() -> Self {
        Bounded { entries: HashMap::new(), order: VecDeque::new() }
    }
}

impl<T> Bounded<T> {
    fn insert(&mut self, id: String, value: T) {
        if self.entries.insert(id.clone(), value).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > MAX_TRACKED {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }
}

/// The files and batches this gateway knows, and the batch settings.
pub struct Batches {
    pub settings: BatchSettings,
    files: Mutex<Bounded<FileEntry>>,
    batches: Mutex<Bounded<BatchEntry>>,
}

impl Batches {
    pub fn new(settings: BatchSettings) -> Batches {
        Batches { settings, files: Mutex::default(), batches: Mutex::default() }
    }

    pub fn remember_file(&self, id: &str, entry: FileEntry) {
        if let Ok(mut files) = self.files.lock() {
            files.insert(id.to_owned(), entry);
        }
    }

    /// The file `id` if the key `key_id` owns it.
    pub fn file(&self, id: &str, key_id: &str) -> Option<FileEntry> {
        let files = self.files.lock().ok()?;
        files.entries.get(id).filter(|f| f.key_id == key_id).cloned()
    }

    /// Remembers a batch; one known already keeps its billing state.
    pub fn remember_batch(&self, id: &str, entry: BatchEntry) {
        if let Ok(mut batches) = self.batches.lock() {
            if !batches.entries.contains_key(id) {
                batches.insert(id.to_owned(), entry);
            }
        }
    }

    /// The batch `id` if the key `key_id` owns it.
    pub fn batch(&self, id: &str, key_id: &str) -> Option<BatchEntry> {
        let batches = self.batches.lock().ok()?;
        batches.entries.get(id).filter(|b| b.owner.key.key_id == key_id).cloned()
    }

    /// Takes the billing of batch `id` if nobody has (open): the caller bills it, then calls
    /// [`Batches::billed`].
    pub fn claim(&self, id: &str) -> bool {
        let Ok(mut batches) = self.batches.lock() else { return false };
        match batches.entries.get_mut(id) {
            Some(b) if b.billing == Billing::Open => {
                b.billing = Billing::Claimed;
                true
            }
            _ => false,
        }
    }

    /// Ends a claim: billed (never again in this process), or open again to retry.
    pub fn billed(&self, id: &str, done: bool) {
        if let Ok(mut batches) = self.batches.lock() {
            if let Some(b) = batches.entries.get_mut(id) {
                b.billing = if done { Billing::Done } else { Billing::Open };
            }
        }
    }

    /// The batches not billed yet, for the poller.
    pub fn open(&self) -> Vec<(String, BatchEntry)> {
        let Ok(batches) = self.batches.lock() else { return Vec::new() };
        batches
            .entries
            .iter()
            .filter(|(_, b)| b.billing == Billing::Open)
            .map(|(id, b)| (id.clone(), b.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entries_are_forgotten_past_the_bound() {
        let mut m = Bounded::default();
        for i in 0..=MAX_TRACKED {
            m.insert(i.to_string(), i);
        }
        m.insert("5".into(), 5);
        assert_eq!(m.entries.len(), MAX_TRACKED);
        assert!(
            !m.entries.contains_key("0")
                && m.entries.contains_key("1")
                && m.entries.contains_key(&MAX_TRACKED.to_string())
        );
    }
}
