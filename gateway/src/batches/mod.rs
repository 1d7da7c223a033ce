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
//! - `max_cost`, `hold`: the most a batch can cost, held against its hard budgets while it runs.
//!
//! - `ids`: the ids clients are given, which carry the provider's id, where it lives and whose
//!   it is under a MAC, so that every gateway of the deployment serves them without shared state.
//!
//! Ownership is in the ids: a file or batch id names its owner's key (as a keyed tag), and a key
//! never sees an id made for another (404). What is kept here, in the process, is only the
//! billing state of the batches this gateway has seen, for the poller and so that one process
//! bills a batch once. A batch also carries its owner's key id, model and customer in its
//! provider-side `metadata`, hidden from clients, so that a gateway that never saw it (restarted,
//! or another replica) bills it to the right parties (see `upstream`, `poller`).

pub mod billing;
pub mod hold;
pub mod ids;
pub mod jsonl;
pub mod max_cost;
pub mod output;
pub mod poller;
pub mod upstream;

use crate::config::BatchSettings;
use crate::providers::Deployment;
use crate::routing::router::Router;
use crate::tenancy::auth::Principal;
use ids::{DeploymentTag, Endpoint, IdCodec, Kind, ModelTag, Wrapped};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Batches remembered at most; past it the oldest are forgotten (a batch forgotten is found
/// again through its id, and billed at most once by the ledger anyway).
pub const MAX_TRACKED: usize = 100_000;

/// A file a key uploaded (or a batch of its produced), as its id names it.
#[derive(Clone)]
pub struct FileEntry {
    /// The provider's id of the file.
    pub provider_id: String,
    /// The model group its lines name, and the endpoint they call (none for an output file).
    pub model: String,
    pub url: &'static str,
    pub deployment: Arc<Deployment>,
}

/// A batch as its id names it: the provider's id, the model group and the deployment.
#[derive(Clone)]
pub struct BatchRef {
    pub provider_id: String,
    pub model: String,
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
/// to), the model group it was created for, the deployment that runs it, and what it holds
/// against hard budgets until it is billed (`hold`; none without a hard budget, or when this
/// gateway did not create it and did not recover it at start).
#[derive(Clone)]
pub struct BatchEntry {
    pub owner: Arc<Principal>,
    pub model: String,
    pub deployment: Arc<Deployment>,
    pub billing: Billing,
    pub hold: Option<Arc<hold::BatchHold>>,
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

/// The ids' codec, the deployments and model groups ids can name, the batches this gateway
/// bills, and the batch settings.
pub struct Batches {
    pub settings: BatchSettings,
    ids: IdCodec,
    /// Each provider account of OpenAI's family, by tag: its first deployment in config order.
    deployments: HashMap<DeploymentTag, Arc<Deployment>>,
    /// The configured model groups, by tag.
    models: HashMap<ModelTag, String>,
    batches: Mutex<Bounded<BatchEntry>>,
}

impl Batches {
    /// `secret` is the id secret (`lib::batch_id_secret`); every deployment and model group of
    /// `router` is named by its tag.
    pub fn new(settings: BatchSettings, secret: &[u8], router: &Router) -> Batches {
        let ids = IdCodec::new(secret);
        let mut deployments = HashMap::new();
        for d in router.deployments().filter(|d| d.api.name() == "openai") {
            deployments.entry(deployment_tag(&ids, d)).or_insert_with(|| d.clone());
        }
        let models = router.model_names().iter().map(|m| (ids.model_tag(m), m.clone())).collect();
        Batches { settings, ids, deployments, models, batches: Mutex::default() }
    }

    /// The id a key is given for a file of the provider's: `None` when the provider's id is out
    /// of bounds (`upstream::good_id`).
    pub fn file_id(&self, provider_id: &str, key_id: &str, model: &str, url: &str, d: &Deployment) -> Option<String> {
        self.seal(Kind::File, provider_id, key_id, model, Endpoint::of(url), d)
    }

    /// The id a key is given for a batch of the provider's.
    pub fn batch_id(&self, provider_id: &str, key_id: &str, model: &str, d: &Deployment) -> Option<String> {
        self.seal(Kind::Batch, provider_id, key_id, model, Endpoint::None, d)
    }

    fn seal(
        &self,
        kind: Kind,
        provider_id: &str,
        key_id: &str,
        model: &str,
        endpoint: Endpoint,
        d: &Deployment,
    ) -> Option<String> {
        self.ids.seal(&Wrapped {
            kind,
            endpoint,
            deployment: deployment_tag(&self.ids, d),
            owner: self.ids.owner_tag(key_id),
            model: self.ids.model_tag(model),
            provider_id: provider_id.to_owned(),
        })
    }

    /// What the id `id` of kind `kind` names, if it is a genuine id made for the key `key_id`
    /// and its deployment and model group are still configured.
    fn open_id(&self, kind: Kind, id: &str, key_id: &str) -> Option<(Wrapped, Arc<Deployment>, String)> {
        let w = self.ids.open(kind, id)?;
        if w.owner != self.ids.owner_tag(key_id) {
            return None;
        }
        let deployment = self.deployments.get(&w.deployment)?.clone();
        let model = self.models.get(&w.model)?.clone();
        Some((w, deployment, model))
    }

    /// The file `id` if the key `key_id` owns it.
    pub fn file(&self, id: &str, key_id: &str) -> Option<FileEntry> {
        let (w, deployment, model) = self.open_id(Kind::File, id, key_id)?;
        Some(FileEntry { provider_id: w.provider_id, model, url: w.endpoint.url(), deployment })
    }

    /// The batch `id` if the key `key_id` owns it.
    pub fn batch_ref(&self, id: &str, key_id: &str) -> Option<BatchRef> {
        let (w, deployment, model) = self.open_id(Kind::Batch, id, key_id)?;
        Some(BatchRef { provider_id: w.provider_id, model, deployment })
    }

    /// A provider's batch object as its owner `key_id` sees it: its id and its files' ids
    /// those of Tollgate, the gateway's metadata removed. `model` and `d` are the batch's.
    pub fn present(&self, batch: &mut Value, key_id: &str, model: &str, d: &Deployment) {
        let endpoint = batch.get("endpoint").and_then(Value::as_str).unwrap_or_default().to_owned();
        let mut rewrite = |field: &str, kind: Kind, url: &str| {
            let Some(slot) = batch.get_mut(field) else { return };
            let Some(provider_id) = slot.as_str() else { return };
            // An id that cannot be wrapped is not passed on: it would be useless to the client.
            *slot =
                self.seal(kind, provider_id, key_id, model, Endpoint::of(url), d).map_or(Value::Null, Value::String);
        };
        rewrite("id", Kind::Batch, "");
        rewrite("input_file_id", Kind::File, &endpoint);
        rewrite("output_file_id", Kind::File, "");
        rewrite("error_file_id", Kind::File, "");
        upstream::strip_owner(batch);
    }

    /// Remembers a batch; one known already keeps its billing state.
    pub fn remember_batch(&self, id: &str, entry: BatchEntry) {
        if let Ok(mut batches) = self.batches.lock() {
            if !batches.entries.contains_key(id) {
                batches.insert(id.to_owned(), entry);
            }
        }
    }

    /// The batch of provider id `id` as this gateway remembers it.
    pub fn batch(&self, id: &str) -> Option<BatchEntry> {
        let batches = self.batches.lock().ok()?;
        batches.entries.get(id).cloned()
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

    /// Releases every batch's hold (at a clean stop, before the leases go back to the store, so
    /// that none is stranded there; the next start takes them again: `poller::recover`).
    /// Returns how many were still held.
    pub fn release_holds(&self) -> usize {
        let Ok(batches) = self.batches.lock() else { return 0 };
        let mut n = 0;
        for hold in batches.entries.values().filter_map(|b| b.hold.as_ref()) {
            n += usize::from(hold.is_held());
            hold.release();
        }
        n
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

/// The tag of the provider account `d` calls.
fn deployment_tag(ids: &IdCodec, d: &Deployment) -> DeploymentTag {
    ids.deployment_tag(d.api.name(), &d.api_base, d.api_key.as_ref().map(|k| k.expose()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:9/v1", api_key: sk-a}
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_base: "http://127.0.0.1:9/v1", api_key: sk-b}
kafka:
  bootstrap_servers: 127.0.0.1:9092
"#;

    fn batches(config: &str, secret: &[u8]) -> (Batches, Router) {
        let config = crate::config::Config::parse(config, "test.yaml").unwrap();
        let router = Router::from_config(&config, "test.yaml").unwrap();
        (Batches::new(BatchSettings::default(), secret, &router), router)
    }

    #[test]
    fn a_file_id_names_its_file_for_its_owner_only() {
        let (b, router) = batches(CONFIG, &[7; 32]);
        let mini = router.deployments().find(|d| d.model_name == "gpt-4o-mini").unwrap().clone();
        let id = b.file_id("file-abc", "key-1", "gpt-4o-mini", "/v1/chat/completions", &mini).unwrap();
        let file = b.file(&id, "key-1").unwrap();
        assert_eq!(
            (file.provider_id.as_str(), file.model.as_str(), file.url),
            ("file-abc", "gpt-4o-mini", "/v1/chat/completions")
        );
        assert!(Arc::ptr_eq(&file.deployment, &mini));
        assert!(b.file(&id, "key-2").is_none(), "another key");
        assert!(b.batch_ref(&id, "key-1").is_none(), "a file id is no batch id");
        // Another gateway with the same secret and config opens it; with another secret, or
        // once the deployment's account or the model group is gone, nobody does.
        assert!(batches(CONFIG, &[7; 32]).0.file(&id, "key-1").is_some());
        assert!(batches(CONFIG, &[8; 32]).0.file(&id, "key-1").is_none());
        assert!(batches(&CONFIG.replace("sk-a", "sk-c"), &[7; 32]).0.file(&id, "key-1").is_none());
        assert!(batches(&CONFIG.replace("model_name: gpt-4o-mini", "model_name: mini"), &[7; 32])
            .0
            .file(&id, "key-1")
            .is_none());
    }

    #[test]
    fn a_batch_is_presented_with_ids_of_its_owner() {
        let (b, router) = batches(CONFIG, &[7; 32]);
        let d = router.deployments().find(|d| d.model_name == "gpt-4o").unwrap().clone();
        let mut batch = serde_json::json!({
            "id": "batch_1", "endpoint": "/v1/embeddings", "input_file_id": "file-in",
            "output_file_id": "file-out", "error_file_id": null,
            "metadata": {"tollgate_key_id": "key-1", "tollgate_customer_id": "c", "job": "x"}
        });
        b.present(&mut batch, "key-1", "gpt-4o", &d);
        let id = batch["id"].as_str().unwrap();
        let r = b.batch_ref(id, "key-1").unwrap();
        assert_eq!((r.provider_id.as_str(), r.model.as_str()), ("batch_1", "gpt-4o"));
        let input = b.file(batch["input_file_id"].as_str().unwrap(), "key-1").unwrap();
        assert_eq!((input.provider_id.as_str(), input.url), ("file-in", "/v1/embeddings"));
        assert_eq!(
            input.url,
            b.file(&b.file_id("file-in", "key-1", "gpt-4o", "/v1/embeddings", &d).unwrap(), "key-1").unwrap().url
        );
        let output = b.file(batch["output_file_id"].as_str().unwrap(), "key-1").unwrap();
        assert_eq!((output.provider_id.as_str(), output.url), ("file-out", ""));
        assert!(batch["error_file_id"].is_null());
        assert_eq!(batch["metadata"], serde_json::json!({"job": "x"}));
    }

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
