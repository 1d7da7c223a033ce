//! LiteLLM's model catalogue (prices and context windows), shipped in the binary as data:
//! `gateway/data/litellm-model-prices.json`, an extract of the MIT-licensed
//! `model_prices_and_context_window.json` of the `litellm` package, with its provenance in
//! `gateway/data/PROVENANCE` and refreshed by `gateway/data/refresh-prices`. Indexed once, on
//! first use (at config load): each model's entry stays JSON text in the binary and is parsed
//! when looked up, which happens at config load and at a wildcard model's first request. Parsed
//! whole, the catalogue's 2,600 entries took about 7 MB of memory for the life of the process.
//! Never edited by hand.

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::LazyLock;

const DATA: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/data/litellm-model-prices.json"));

/// One model's fields, as the catalogue gives them.
pub type Entry = Map<String, Value>;

/// Each model's entry, as the JSON text of the shipped data.
static CATALOGUE: LazyLock<HashMap<String, &'static RawValue>> = LazyLock::new(|| {
    // The data is part of the build and a test parses it; should it still not parse, Tollgate
    // knows no prices rather than failing to start (models are then unpriced, and reported).
    serde_json::from_str(DATA).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the built-in model catalogue does not parse; no built-in prices");
        HashMap::new()
    })
});

/// The catalogue entry named exactly `name` (`gpt-4o`, `gemini/gemini-2.5-pro`). An entry that
/// is not an object of fields (a test checks none is) counts as absent.
pub fn entry(name: &str) -> Option<Entry> {
    serde_json::from_str(CATALOGUE.get(name)?.get()).ok()
}

/// Every entry, for tests: each must be an object of fields.
#[cfg(test)]
pub fn entries() -> impl Iterator<Item = (&'static String, Entry)> {
    CATALOGUE.iter().map(|(name, raw)| match serde_json::from_str(raw.get()) {
        Ok(entry) => (name, entry),
        Err(e) => panic!("catalogue entry {name}: {e}"),
    })
}

/// The catalogue entry of a deployment: by `base_model` (as written, then without its
/// `provider/` prefix), then `provider/upstream`, then `upstream`, then the public model name.
/// The first name found wins.
pub fn lookup(base_model: Option<&str>, provider: &str, upstream: &str, model_name: &str) -> Option<(String, Entry)> {
    let unprefixed = base_model.and_then(|b| b.split_once('/')).map(|(_, rest)| rest.to_owned());
    let candidates = [
        base_model.map(str::to_owned),
        unprefixed,
        Some(format!("{provider}/{upstream}")),
        Some(upstream.to_owned()),
        Some(model_name.to_owned()),
    ];
    candidates.into_iter().flatten().find_map(|name| entry(&name).map(|e| (name, e)))
}

/// The most prompt tokens a model takes: `max_input_tokens` of its catalogue entry, else
/// `max_tokens` (older entries give only that). `model` is a catalogue name, e.g. the upstream
/// model (`gpt-4o`) or `provider/model` (`gemini/gemini-2.5-pro`).
pub fn context_window(model: &str) -> Option<u64> {
    entry_window(&entry(model)?)
}

/// A deployment's context window: `model_info.max_input_tokens` when it gives one, else its
/// catalogue entry's (found as [`lookup`] finds it).
pub fn deployment_context_window(
    model_info: Option<&Map<String, Value>>,
    provider: &str,
    upstream: &str,
    model_name: &str,
) -> Option<u64> {
    let deployment = DeploymentModel { model_info, provider, upstream, model_name };
    deployment.info_u64("max_input_tokens").or_else(|| deployment.entry().and_then(|e| entry_window(&e)))
}

/// The most output tokens a deployment's model gives one answer: `model_info.max_output_tokens`
/// when it gives one, else its catalogue entry's `max_output_tokens` (found as [`lookup`] finds
/// it). A batch's lines without an output limit are bounded by it.
pub fn deployment_max_output(
    model_info: Option<&Map<String, Value>>,
    provider: &str,
    upstream: &str,
    model_name: &str,
) -> Option<u64> {
    let deployment = DeploymentModel { model_info, provider, upstream, model_name };
    let from_entry = || deployment.entry().and_then(|e| e.get("max_output_tokens").and_then(Value::as_u64));
    deployment.info_u64("max_output_tokens").or_else(from_entry)
}

/// What names a deployment's model: its `model_info` (which may give a limit itself, or a
/// `base_model`), provider, upstream model and model group.
struct DeploymentModel<'a> {
    model_info: Option<&'a Map<String, Value>>,
    provider: &'a str,
    upstream: &'a str,
    model_name: &'a str,
}

impl DeploymentModel<'_> {
    fn info_u64(&self, key: &str) -> Option<u64> {
        self.model_info.and_then(|i| i.get(key)).and_then(Value::as_u64)
    }

    /// Its catalogue entry, found as [`lookup`] finds it.
    fn entry(&self) -> Option<Entry> {
        let base_model = self.model_info.and_then(|i| i.get("base_model")).and_then(Value::as_str);
        lookup(base_model, self.provider, self.upstream, self.model_name).map(|(_, e)| e)
    }
}

fn entry_window(entry: &Entry) -> Option<u64> {
    entry.get("max_input_tokens").and_then(Value::as_u64).or_else(|| entry.get("max_tokens").and_then(Value::as_u64))
}
