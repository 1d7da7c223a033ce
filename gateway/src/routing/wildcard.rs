//! Wildcard deployments (LiteLLM's pattern routing): `model_name: openai/*` with
//! `litellm_params.model: openai/*` serves every model whose name the pattern matches, the `*`
//! of the upstream model standing for what the `*` of the name matched; `model_name: "*"`
//! catches every name no other entry serves. docs/design.md §2.4.
//!
//! A concrete model group is made from the pattern's deployments on its first request and kept
//! in a bounded cache. The name comes from a client, so it is bounded and checked before it
//! becomes part of a request to a provider: it may never change the provider's URL beyond the
//! model's own path segment. Metrics label such requests with the pattern, never with the
//! client's name, so their cardinality stays that of the config.

use super::router::ModelGroup;
use crate::limits::pricing::{deployment_context_window, Price};
use crate::providers::{endpoint_urls, Deployment, Target};
use std::sync::Arc;
use tollgate_schemas::limits::MAX_NAME_BYTES;

/// Most concrete model groups kept at once; a group evicted is made again on its next request
/// (with fresh load and cooldown statistics).
const MAX_CACHED_GROUPS: u64 = 1024;

/// One wildcard `model_name` and the deployments listed under it.
pub(super) struct Pattern {
    /// The `model_name` as written, e.g. `openai/*`.
    pub name: String,
    prefix: String,
    suffix: String,
    templates: Vec<Template>,
}

/// A deployment of a pattern, its upstream model still holding the `*` (or naming one model
/// for every match).
pub(super) struct Template {
    pub deployment: Arc<Deployment>,
    /// The price the config gives this deployment (`prices:`, LiteLLM's cost fields); when
    /// absent, each concrete model is priced by its own name.
    pub price: Option<Price>,
}

/// Why a name matched by a pattern is not served.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The name has characters or a length no model name has.
    BadName,
    /// No price is known for it, and unpriced models are refused.
    Unpriced,
}

impl Pattern {
    /// `name` must hold exactly one `*` (checked by the config).
    pub fn new(name: &str) -> Pattern {
        let (prefix, suffix) = name.split_once('*').unwrap_or((name, ""));
        Pattern { name: name.to_owned(), prefix: prefix.to_owned(), suffix: suffix.to_owned(), templates: Vec::new() }
    }

    pub fn push(&mut self, template: Template) {
        self.templates.push(template);
    }

    pub fn deployments(&self) -> impl Iterator<Item = &Arc<Deployment>> {
        self.templates.iter().map(|t| &t.deployment)
    }

    /// What the `*` matched in `model`, when the pattern matches it.
    pub fn capture<'a>(&self, model: &'a str) -> Option<&'a str> {
        let rest = model.strip_prefix(self.prefix.as_str())?.strip_suffix(self.suffix.as_str())?;
        (!rest.is_empty() && model.len() >= self.prefix.len() + self.suffix.len()).then_some(rest)
    }

    /// How specific the pattern is: more fixed characters win.
    pub fn specificity(&self) -> usize {
        self.prefix.len() + self.suffix.len()
    }

    /// The deployments serving `model`, which this pattern matches with `captured`.
    /// `price_of(provider, upstream, model)` prices a deployment without a configured price; `None` with
    /// `serve_unpriced` false refuses the model.
    pub fn concretize(
        &self,
        model: &str,
        captured: &str,
        price_of: &dyn Fn(&str, &str, &str) -> Option<Price>,
        serve_unpriced: bool,
    ) -> Result<Vec<Deployment>, Refusal> {
        if !plausible_model_name(model) {
            return Err(Refusal::BadName);
        }
        self.templates
            .iter()
            .map(|t| {
                let d = &t.deployment;
                let upstream = d.upstream_model.replace('*', captured);
                if upstream != d.upstream_model && !stays_in_its_path_segment(d, captured) {
                    return Err(Refusal::BadName);
                }
                let target =
                    Target { api_base: &d.api_base, upstream_model: &upstream, api_version: d.api_version.as_deref() };
                let urls = endpoint_urls(d.api, target).map_err(|_| Refusal::BadName)?;
                let price = t.price.or_else(|| price_of(&d.provider, &upstream, model));
                if price.is_none() && !serve_unpriced {
                    return Err(Refusal::Unpriced);
                }
                // The template's own `max_input_tokens` applies to every model it serves.
                let window = d
                    .max_input_tokens
                    .or_else(|| deployment_context_window(d.model_info.as_ref(), &d.provider, &upstream, model));
                Ok(Deployment {
                    model_name: model.to_owned(),
                    max_input_tokens: window,
                    id: d.id.replace('*', captured),
                    upstream_model: upstream,
                    urls,
                    price,
                    api_key: d.api_key.clone(),
                    api_base: d.api_base.clone(),
                    api_version: d.api_version.clone(),
                    aws: d.aws.clone(),
                    service_account: d.service_account.clone(),
                    provider: d.provider.clone(),
                    model_info: d.model_info.clone(),
                    ..**d
                })
            })
            .collect()
    }
}

/// Model names as providers spell them (`gpt-4o-2024-08-06`, `claude-3-5-sonnet@20240620`,
/// `meta-llama/Llama-3.1-8B`, `accounts/fireworks/models/x`): bounded, and of a small alphabet
/// with no URL syntax (`?`, `#`, `%`, spaces) and no `..` segment.
fn plausible_model_name(model: &str) -> bool {
    model.len() <= MAX_NAME_BYTES
        && model.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:@+/".contains(&b))
        && !model.split('/').any(|segment| segment == "..")
}

/// Whether the matched text can go where the deployment puts its model: anywhere when the
/// model goes only into the request body, one path segment (no `/`) when it is part of the URL
/// (Azure's deployment, Gemini's model).
fn stays_in_its_path_segment(d: &Deployment, captured: &str) -> bool {
    let url_of = |model: &str| {
        let target = Target { api_base: &d.api_base, upstream_model: model, api_version: d.api_version.as_deref() };
        endpoint_urls(d.api, target).ok().and_then(|u| u.chat.map(|c| c.to_string()))
    };
    let model_in_url = url_of("a") != url_of("b");
    !model_in_url || !captured.contains('/')
}

/// The patterns of a router, most specific first, and the groups made from them.
pub(super) struct Wildcards {
    patterns: Vec<Pattern>,
    groups: moka::sync::Cache<String, Arc<ModelGroup>>,
}

impl Wildcards {
    pub fn new(mut patterns: Vec<Pattern>) -> Wildcards {
        // Stable: among equally specific patterns, config order decides.
        patterns.sort_by_key(|p| std::cmp::Reverse(p.specificity()));
        Wildcards { patterns, groups: moka::sync::Cache::new(MAX_CACHED_GROUPS) }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// The pattern serving `model`, and what its `*` matched.
    pub fn matching<'a>(&self, model: &'a str) -> Option<(&Pattern, &'a str)> {
        self.patterns.iter().find_map(|p| Some((p, p.capture(model)?)))
    }

    pub fn cached(&self, model: &str) -> Option<Arc<ModelGroup>> {
        self.groups.get(model)
    }

    pub fn keep(&self, model: &str, group: Arc<ModelGroup>) {
        self.groups.insert(model.to_owned(), group);
    }

    pub fn pattern_named(&self, name: &str) -> Option<&Pattern> {
        self.patterns.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_capture_what_the_star_matches() {
        let p = Pattern::new("openai/*");
        assert_eq!(p.capture("openai/gpt-4o"), Some("gpt-4o"));
        assert_eq!(p.capture("openai/"), None, "the star matches something");
        assert_eq!(p.capture("anthropic/claude"), None);
        let any = Pattern::new("*");
        assert_eq!(any.capture("gpt-4o"), Some("gpt-4o"));
        let inner = Pattern::new("team-*-fast");
        assert_eq!(inner.capture("team-a-fast"), Some("a"));
        assert_eq!(inner.capture("team-fast"), None, "prefix and suffix may not overlap");
    }

    #[test]
    fn the_most_specific_pattern_wins() {
        let w = Wildcards::new(vec![Pattern::new("*"), Pattern::new("openai/*"), Pattern::new("openai/gpt-4o-*")]);
        assert_eq!(
            w.matching("openai/gpt-4o-mini").map(|(p, c)| (p.name.as_str(), c)),
            Some(("openai/gpt-4o-*", "mini"))
        );
        assert_eq!(w.matching("openai/o3").map(|(p, c)| (p.name.as_str(), c)), Some(("openai/*", "o3")));
        assert_eq!(w.matching("mistral-large").map(|(p, c)| (p.name.as_str(), c)), Some(("*", "mistral-large")));
    }

    #[test]
    fn names_from_clients_are_bounded_and_free_of_url_syntax() {
        for good in ["gpt-4o-2024-08-06", "claude-3-5-sonnet@20240620", "meta-llama/Llama-3.1-8B", "a:b+c"] {
            assert!(plausible_model_name(good), "{good}");
        }
        let long = "m".repeat(MAX_NAME_BYTES + 1);
        for bad in ["gpt 4o", "x?y=1", "x#y", "x%2F", "../admin", "a/../b", long.as_str(), "é"] {
            assert!(!plausible_model_name(bad), "{bad}");
        }
    }
}
