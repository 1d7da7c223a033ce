//! The `guardrails:` section in LiteLLM's shape: a list of `{guardrail_name, litellm_params}`.
//! Read strictly (unknown keys are errors naming the field) and compiled once at load into a
//! [`Guardrails`] set; nothing here runs on the request path.

use super::external::{External, Fallback};
use super::pii::{Entity, Pii};
use super::words::Words;
use super::{Check, Guardrail, Guardrails};
use crate::config::{ConfigError, Secret};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Most guardrails one file may define.
pub const MAX_GUARDRAILS: usize = 64;

/// One entry of `guardrails:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailConfig {
    pub guardrail_name: String,
    pub litellm_params: GuardrailParams,
    /// LiteLLM's free-form description for `/guardrails/list`: accepted, not served.
    #[serde(default)]
    pub guardrail_info: Option<serde_yaml::Value>,
}

/// Which check a guardrail runs (`litellm_params.guardrail`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Banned words and regexes: a match blocks.
    BannedWords,
    /// PII masked with placeholders before the call, restored in the answer.
    PiiMasking,
    /// LiteLLM's generic guardrail API over HTTP.
    GenericGuardrailApi,
}

/// When a guardrail runs (`litellm_params.mode`): one name or a list.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    PreCall,
    PostCall,
    /// LiteLLM runs it beside the call; Tollgate runs it before the call, as `pre_call`.
    DuringCall,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Modes {
    One(Mode),
    Many(Vec<Mode>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailParams {
    pub guardrail: Kind,
    pub mode: Modes,
    /// Runs on every request, whatever the key, team or request names.
    #[serde(default)]
    pub default_on: bool,
    /// `banned_words`: words (case-insensitive literals) that block.
    #[serde(default)]
    pub banned_words: Vec<String>,
    /// `banned_words`: regexes that block.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// `banned_words`: bytes of streamed text kept to catch a match split across chunks.
    pub stream_window_bytes: Option<usize>,
    /// `pii_masking`: which entities to mask (all when absent).
    pub pii_entities: Option<Vec<Entity>>,
    /// `generic_guardrail_api`: the service's base URL.
    pub api_base: Option<String>,
    pub api_key: Option<Secret>,
    #[serde(default)]
    pub additional_provider_specific_params: Option<serde_json::Map<String, serde_json::Value>>,
    pub timeout_ms: Option<u64>,
    pub max_response_bytes: Option<usize>,
    /// What a failed call does: `fail_closed` (block, the default) or `fail_open` (pass).
    pub unreachable_fallback: Option<Fallback>,
}

/// Builds the set; every error names its field (`guardrails[i].litellm_params.<key>`).
pub fn build(list: &[GuardrailConfig], env: &HashMap<String, Secret>, origin: &str) -> Result<Guardrails, ConfigError> {
    let invalid = |field: String, message: String| ConfigError::Invalid { path: origin.to_owned(), field, message };
    if list.len() > MAX_GUARDRAILS {
        return Err(invalid("guardrails".into(), format!("at most {MAX_GUARDRAILS} guardrails")));
    }
    let mut set = Guardrails::default();
    for (i, entry) in list.iter().enumerate() {
        let at = |key: &str| format!("guardrails[{i}].{key}");
        let name = entry.guardrail_name.as_str();
        if let Err(e) = tollgate_schemas::limits::check_name("guardrail_name", name, 64) {
            return Err(invalid(at("guardrail_name"), e.to_string()));
        }
        if set.by_name.contains_key(name) {
            return Err(invalid(at("guardrail_name"), format!("`{name}` is defined twice")));
        }
        let p = &entry.litellm_params;
        let modes = match &p.mode {
            Modes::One(m) => vec![*m],
            Modes::Many(list) if !list.is_empty() => list.clone(),
            Modes::Many(_) => return Err(invalid(at("litellm_params.mode"), "names no mode".into())),
        };
        misplaced(p).map_err(|key| {
            invalid(at(&format!("litellm_params.{key}")), format!("is not a key of guardrail `{:?}`", p.guardrail))
        })?;
        let check = match p.guardrail {
            Kind::BannedWords => Check::Words(
                Words::build(&p.banned_words, &p.patterns, p.stream_window_bytes)
                    .map_err(|(key, message)| invalid(at(&format!("litellm_params.{key}")), message))?,
            ),
            Kind::PiiMasking => Check::Pii(Pii::new(p.pii_entities.as_deref())),
            Kind::GenericGuardrailApi => Check::External(
                External::build(p, env, origin)
                    .map_err(|(key, message)| invalid(at(&format!("litellm_params.{key}")), message))?,
            ),
        };
        let guardrail = Guardrail {
            fingerprint: fingerprint(name, p),
            name: name.to_owned(),
            pre_call: modes.iter().any(|m| matches!(m, Mode::PreCall | Mode::DuringCall)),
            post_call: modes.contains(&Mode::PostCall),
            default_on: p.default_on,
            check,
        };
        set.by_name.insert(name.to_owned(), set.list.len());
        set.list.push(Arc::new(guardrail));
    }
    Ok(set)
}

/// What identifies a guardrail's settings in the response cache's key: a hash of its name and
/// settings, its API key left out (a changed key checks the same way, and a secret is never
/// hashed into a key a client sees).
fn fingerprint(name: &str, p: &GuardrailParams) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut p = p.clone();
    p.api_key = None;
    let mut hash = Sha256::new();
    hash.update((name.len() as u64).to_be_bytes());
    hash.update(name.as_bytes());
    hash.update(format!("{p:?}").as_bytes());
    hash.finalize().into()
}

/// The first key given that the guardrail's kind does not read.
fn misplaced(p: &GuardrailParams) -> Result<(), &'static str> {
    let words = [
        ("banned_words", !p.banned_words.is_empty()),
        ("patterns", !p.patterns.is_empty()),
        ("stream_window_bytes", p.stream_window_bytes.is_some()),
    ];
    let pii = [("pii_entities", p.pii_entities.is_some())];
    let external = [
        ("api_base", p.api_base.is_some()),
        ("api_key", p.api_key.is_some()),
        ("additional_provider_specific_params", p.additional_provider_specific_params.is_some()),
        ("timeout_ms", p.timeout_ms.is_some()),
        ("max_response_bytes", p.max_response_bytes.is_some()),
        ("unreachable_fallback", p.unreachable_fallback.is_some()),
    ];
    let others: Vec<&[(&'static str, bool)]> = match p.guardrail {
        Kind::BannedWords => vec![&pii, &external],
        Kind::PiiMasking => vec![&words, &external],
        Kind::GenericGuardrailApi => vec![&words, &pii],
    };
    match others.into_iter().flatten().find(|(_, given)| *given) {
        Some((key, _)) => Err(key),
        None => Ok(()),
    }
}

/// The default timeout of an external guardrail's call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
