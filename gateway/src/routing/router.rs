//! Chooses a deployment for a requested model: the routing strategy, per-deployment load and
//! latency statistics, and cooldowns of deployments that keep failing (LiteLLM semantics:
//! `allowed_fails` failures within a minute cool a deployment down for `cooldown_time`).
//!
//! Selection is pure over a snapshot of the statistics ([`choose`]), so it is unit-tested
//! without clocks or randomness.

use super::wildcard::{Pattern, Refusal, Template, Wildcards};
use crate::config::{Config, ConfigError, FallbackList, RoutingStrategy};
use crate::error::GatewayError;
use crate::limits::pricing::{built_in, configured_price, deployment_context_window, resolve_price, Price};
use crate::providers::{default_api_base, Deployment, Target};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a stream may last unless `stream_max_duration` says otherwise: generous, since
/// long reasoning answers take many minutes, but a provider trickling bytes cannot hold a
/// connection forever.
const DEFAULT_STREAM_MAX_DURATION_SECS: f64 = 1800.0;

/// Live statistics of one deployment.
#[derive(Debug, Default)]
pub struct DeploymentStats {
    in_flight: AtomicU64,
    /// Exponentially weighted latency of successful calls, in microseconds (0 = unknown).
    latency_ewma_us: AtomicU64,
    /// Requests and tokens in the current minute, and failures in the current minute.
    minute: Mutex<MinuteWindow>,
    /// Milliseconds since the router's epoch until which the deployment is cooling down.
    cooldown_until_ms: AtomicU64,
    /// Calls ended in the last two minutes, for `/model/health`.
    outcomes: super::outcomes::Outcomes,
}

#[derive(Debug, Default, Clone, Copy)]
struct MinuteWindow {
    minute: u64,
    requests: u64,
    tokens: u64,
    failures: u64,
}

impl MinuteWindow {
    fn roll(&mut self, minute: u64) {
        if self.minute != minute {
            *self = MinuteWindow { minute, ..MinuteWindow::default() };
        }
    }
}

/// What [`choose`] sees of a candidate.
#[derive(Clone, Copy, Debug, Default)]
pub struct Candidate {
    pub weight: f64,
    pub in_flight: u64,
    pub latency_us: u64,
    pub requests_this_minute: u64,
    pub tokens_this_minute: u64,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// Input + output nano-USD per token, for cost-based routing.
    pub unit_price: i64,
}

/// Picks an index among `candidates` (all eligible). `roll` in [0, 1) drives the weighted random
/// choice and breaks ties, so the function is deterministic for a given roll.
pub fn choose(strategy: RoutingStrategy, candidates: &[Candidate], roll: f64) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    let n = candidates.len();
    let tie_start = ((roll * n as f64) as usize).min(n - 1);
    // The minimum by `key`, scanning from a rolled start so equal keys share the load.
    let min_by = |key: &dyn Fn(&Candidate) -> f64| {
        (0..n).map(|i| (i + tie_start) % n).min_by(|&a, &b| key(&candidates[a]).total_cmp(&key(&candidates[b])))
    };
    match strategy {
        RoutingStrategy::SimpleShuffle => {
            let total: f64 = candidates.iter().map(|c| c.weight).sum();
            if total.is_nan() || total <= 0.0 {
                return Some(tie_start);
            }
            let mut target = roll * total;
            for (i, c) in candidates.iter().enumerate() {
                if target < c.weight {
                    return Some(i);
                }
                target -= c.weight;
            }
            Some(n - 1)
        }
        RoutingStrategy::LeastBusy => min_by(&|c| c.in_flight as f64),
        // Unknown latency counts as zero so new deployments get tried.
        RoutingStrategy::LatencyBased => min_by(&|c| c.latency_us as f64),
        RoutingStrategy::UsageBased => min_by(&|c| {
            let rpm_share = c.rpm.map_or(0.0, |l| c.requests_this_minute as f64 / l as f64);
            let tpm_share = c.tpm.map_or(0.0, |l| c.tokens_this_minute as f64 / l as f64);
            rpm_share.max(tpm_share)
        }),
        RoutingStrategy::CostBased => min_by(&|c| c.unit_price as f64),
    }
}

/// A model group: the deployments serving one `model_name`.
pub(super) struct ModelGroup {
    deployments: Vec<(Arc<Deployment>, Arc<DeploymentStats>)>,
    /// See [`Router::worst_price`].
    worst_price: Option<Price>,
    /// See [`Router::worst_default_output`].
    worst_default_output: Option<u64>,
    /// `model_info.access_groups` of its deployments, and the wildcard it was made from.
    access_groups: Vec<String>,
    /// The name its metrics carry: its own, or the wildcard's for a group made from one.
    label: String,
}

impl ModelGroup {
    fn new(deployments: Vec<Arc<Deployment>>, label: &str) -> ModelGroup {
        let mut access_groups: Vec<String> = deployments
            .iter()
            .filter_map(|d| d.model_info.as_ref()?.get("access_groups")?.as_array().cloned())
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        access_groups.sort();
        access_groups.dedup();
        ModelGroup {
            deployments: deployments.into_iter().map(|d| (d, Arc::new(DeploymentStats::default()))).collect(),
            worst_price: None,
            worst_default_output: None,
            access_groups,
            label: label.to_owned(),
        }
    }
}

/// Retry and fallback policy from `router_settings`.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub num_retries: u32,
    pub retry_after_min: Duration,
    pub allowed_fails: u64,
    pub cooldown: Duration,
    /// Whether failing deployments are cooled down at all (`disable_cooldowns` turns it off).
    pub cooldowns: bool,
    /// The most fallback model groups one request tries.
    pub max_fallbacks: usize,
    /// Prompts are checked against context windows before every call, not only for groups
    /// with `context_window_fallbacks`.
    pub pre_call_checks: bool,
}

pub struct Router {
    strategy: RoutingStrategy,
    groups: HashMap<String, Arc<ModelGroup>>,
    /// Wildcard `model_name`s and the groups made from them.
    wildcards: Wildcards,
    /// `prices:` by model name, for models served through a wildcard.
    prices: HashMap<String, Price>,
    /// Whether a model without a price is served (at cost zero, marked) or refused.
    serve_unpriced: bool,
    fallbacks: HashMap<String, Vec<String>>,
    context_window_fallbacks: HashMap<String, Vec<String>>,
    content_policy_fallbacks: HashMap<String, Vec<String>>,
    /// `model_group_alias`: alias → model group.
    aliases: HashMap<String, String>,
    /// The aliases `/v1/models` lists (not `hidden`), in name order.
    listed_aliases: Vec<String>,
    pub policy: RetryPolicy,
    epoch: Instant,
    /// Model names in config order, for `/v1/models`.
    names: Vec<String>,
}

/// A deployment picked for one attempt (not a credit lease: see `lease.rs`); it counts as in
/// flight on its deployment until dropped.
pub struct PickedDeployment {
    pub deployment: Arc<Deployment>,
    stats: Arc<DeploymentStats>,
}

impl Drop for PickedDeployment {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

mod build;

impl Router {
    /// The group serving `model_name`: a listed one, or one made from the wildcard matching it.
    fn group(&self, model_name: &str) -> Result<Arc<ModelGroup>, GatewayError> {
        if let Some(group) = self.groups.get(model_name) {
            return Ok(group.clone());
        }
        if self.wildcards.is_empty() {
            return Err(GatewayError::ModelNotFound(model_name.to_owned()));
        }
        if let Some(group) = self.wildcards.cached(model_name) {
            return Ok(group);
        }
        let not_found = || GatewayError::ModelNotFound(model_name.to_owned());
        let (pattern, captured) = self.wildcards.matching(model_name).ok_or_else(not_found)?;
        let price_of = |provider: &str, upstream: &str, model: &str| {
            let qualified = || built_in(&format!("{provider}/{upstream}"));
            self.prices.get(model).copied().or_else(qualified).or_else(|| built_in(upstream))
        };
        let deployments =
            pattern.concretize(model_name, captured, &price_of, self.serve_unpriced).map_err(|r| match r {
                Refusal::BadName => not_found(),
                Refusal::Unpriced => {
                    metrics::counter!("tollgate_unpriced_refusals_total", "model" => pattern.name.clone()).increment(1);
                    GatewayError::ModelUnpriced(model_name.to_owned())
                }
            })?;
        let mut group = ModelGroup::new(deployments.into_iter().map(Arc::new).collect(), &pattern.name);
        group.access_groups.push(pattern.name.clone());
        group.worst_price = self.reachable_worst_price(model_name, Some(&group));
        group.worst_default_output = self.reachable_default_output(model_name, Some(&group));
        let group = Arc::new(group);
        self.wildcards.keep(model_name, group.clone());
        Ok(group)
    }

    /// Whether a request for `model_name` can be served: a 404 for a name nothing serves, a
    /// 400 for a model a wildcard matches but that has no price while unpriced models are
    /// refused.
    pub fn lookup(&self, model_name: &str) -> Result<(), GatewayError> {
        self.group(model_name).map(|_| ())
    }

    /// Whether clients may ask for this model name, or name it in a key's model list (a
    /// wildcard `model_name` such as `openai/*` counts).
    pub fn knows(&self, model_name: &str) -> bool {
        self.wildcards.pattern_named(model_name).is_some() || self.lookup(model_name).is_ok()
    }

    /// The name metrics carry for `model_name`: itself, or the wildcard serving it, so that
    /// names chosen by clients never become label values.
    pub fn metric_label(&self, model_name: &str) -> String {
        match self.group(model_name) {
            Ok(group) => group.label.clone(),
            Err(_) => "unknown".to_owned(),
        }
    }

    /// The model group a `model_group_alias` stands for; `None` for any other name.
    pub fn alias_target(&self, name: &str) -> Option<&str> {
        self.aliases.get(name).map(String::as_str)
    }

    /// The aliases `/v1/models` lists, each with its model group.
    pub fn listed_aliases(&self) -> impl Iterator<Item = (&str, &str)> {
        self.listed_aliases.iter().filter_map(|a| Some((a.as_str(), self.alias_target(a)?)))
    }

    /// The access groups (`model_info.access_groups`) a model belongs to.
    /// A model served through a wildcard belongs to the wildcard's name too, so a key allowed
    /// `openai/*` may use `openai/gpt-4o`.
    pub fn groups_of(&self, model_name: &str) -> Vec<String> {
        self.group(model_name).map(|g| g.access_groups.clone()).unwrap_or_default()
    }

    /// The highest input and output prices among the deployments a request for `model_name`
    /// can reach — its own and, transitively, those of every fallback of any kind — for its
    /// worst-case cost. `None` when none of them has a price. Computed once, at start-up.
    pub fn worst_price(&self, model_name: &str) -> Option<Price> {
        self.group(model_name).ok()?.worst_price
    }

    /// The most output tokens a request for `model_name` without an output limit can get from
    /// a deployment whose adapter sets one (see `providers::default_output_limit`), among those
    /// it can reach. Computed once, at start-up.
    pub fn worst_default_output(&self, model_name: &str) -> Option<u64> {
        self.group(model_name).ok()?.worst_default_output
    }

    /// The groups `model_name` can reach: `own` standing for its own when it is being made.
    fn reachable_groups<'a>(&'a self, model_name: &'a str, own: Option<&'a ModelGroup>) -> Vec<&'a ModelGroup> {
        self.reachable(model_name)
            .into_iter()
            .filter_map(|name| match own {
                Some(own) if name == model_name => Some(own),
                _ => self.groups.get(name).map(Arc::as_ref),
            })
            .collect()
    }

    fn reachable_default_output(&self, model_name: &str, own: Option<&ModelGroup>) -> Option<u64> {
        self.reachable_groups(model_name, own)
            .into_iter()
            .flat_map(|g| g.deployments.iter().filter_map(|(d, _)| d.api.default_output_limit()))
            .max()
    }

    fn reachable_worst_price(&self, model_name: &str, own: Option<&ModelGroup>) -> Option<Price> {
        self.reachable_groups(model_name, own)
            .into_iter()
            .flat_map(|g| g.deployments.iter().filter_map(|(d, _)| d.price))
            .reduce(Price::worst_of)
    }

    /// `model_name` and, transitively, every fallback of any kind it can reach.
    fn reachable<'a>(&'a self, model_name: &'a str) -> Vec<&'a str> {
        let mut seen: Vec<&str> = vec![model_name];
        let mut next = 0;
        while next < seen.len() {
            let name = seen[next];
            next += 1;
            for map in [&self.fallbacks, &self.context_window_fallbacks, &self.content_policy_fallbacks] {
                for f in self.fallback_list(map, name) {
                    if !seen.contains(&f.as_str()) {
                        seen.push(f);
                    }
                }
            }
        }
        seen
    }

    /// The deployments of `model_name` (by index) whose context window is known and smaller
    /// than the prompt, and how many deployments it has. `prompt_tokens` is asked only when
    /// the prompt's size in bytes (an upper bound on its tokens) exceeds some window.
    pub fn too_small_for(
        &self,
        model_name: &str,
        prompt_bytes: u64,
        prompt_tokens: &dyn Fn() -> u64,
    ) -> (Vec<usize>, usize) {
        let Ok(group) = self.group(model_name) else { return (Vec::new(), 0) };
        let mut tokens = None;
        let small = group
            .deployments
            .iter()
            .enumerate()
            .filter(|(_, (d, _))| {
                d.max_input_tokens.is_some_and(|w| prompt_bytes > w && *tokens.get_or_insert_with(prompt_tokens) > w)
            })
            .map(|(i, _)| i)
            .collect();
        (small, group.deployments.len())
    }

    /// The deployments of `model_name` (by index, as `pick` counts them) that `test` accepts.
    pub fn indices_where(&self, model_name: &str, test: impl Fn(&Deployment) -> bool) -> Vec<usize> {
        let Ok(group) = self.group(model_name) else { return Vec::new() };
        group.deployments.iter().enumerate().filter(|(_, (d, _))| test(d)).map(|(i, _)| i).collect()
    }

    /// The error for a prompt longer than every context window of `model_name`.
    pub fn context_window_exceeded(&self, model_name: &str, tokens: u64) -> GatewayError {
        let window = self
            .group(model_name)
            .ok()
            .and_then(|g| g.deployments.iter().filter_map(|(d, _)| d.max_input_tokens).max())
            .unwrap_or(0);
        GatewayError::ContextWindowExceeded { model: model_name.to_owned(), tokens, window }
    }

    /// Whether some model names `name` as one of its access groups.
    pub fn is_access_group(&self, name: &str) -> bool {
        self.names.iter().any(|m| self.groups_of(m).iter().any(|g| g == name))
    }

    /// Served model names, in config order.
    pub fn model_names(&self) -> &[String] {
        &self.names
    }

    /// Every configured deployment, in config order within each model (a wildcard's as
    /// written, its upstream model still holding the `*`).
    pub fn deployments(&self) -> impl Iterator<Item = &Arc<Deployment>> {
        let listed =
            self.names.iter().filter_map(|n| self.groups.get(n)).flat_map(|g| g.deployments.iter().map(|(d, _)| d));
        listed.chain(self.wildcards.patterns().iter().flat_map(Pattern::deployments))
    }

    /// The fallbacks of `model`: its own, else (for a model served through a wildcard) the
    /// wildcard's, else the default ones (`*`).
    fn fallback_list<'a>(&'a self, map: &'a HashMap<String, Vec<String>>, model: &str) -> &'a [String] {
        let through_wildcard = || {
            if self.groups.contains_key(model) {
                return None;
            }
            map.get(&self.wildcards.matching(model)?.0.name)
        };
        map.get(model).or_else(through_wildcard).or_else(|| map.get("*")).map_or(&[], Vec::as_slice)
    }

    pub fn fallbacks(&self, model: &str) -> &[String] {
        self.fallback_list(&self.fallbacks, model)
    }
    pub fn context_window_fallbacks(&self, model: &str) -> &[String] {
        self.fallback_list(&self.context_window_fallbacks, model)
    }
    pub fn content_policy_fallbacks(&self, model: &str) -> &[String] {
        self.fallback_list(&self.content_policy_fallbacks, model)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn minute(&self) -> u64 {
        self.now_ms() / 60_000
    }

    /// Picks a deployment of `model_name`, skipping those in `exclude` (already tried) and those
    /// cooling down or over their rpm — unless nothing else is left, in which case cooled-down
    /// deployments are tried rather than failing without a call.
    pub fn pick(&self, model_name: &str, exclude: &[usize]) -> Option<(usize, PickedDeployment)> {
        let group = self.group(model_name).ok()?;
        let now = self.now_ms();
        let minute = now / 60_000;
        let snapshot: Vec<(usize, bool, Candidate)> = group
            .deployments
            .iter()
            .enumerate()
            .filter(|(i, _)| !exclude.contains(i))
            .map(|(i, (d, s))| {
                let mut w = s.minute.lock().map(|g| *g).unwrap_or_default();
                w.roll(minute);
                let cooling = s.cooldown_until_ms.load(Ordering::Relaxed) > now;
                let over_rpm = d.rpm.is_some_and(|l| w.requests >= l) || d.tpm.is_some_and(|l| w.tokens >= l);
                let unit_price = d.price.map_or(0, |p| p.unit_price());
                let c = Candidate {
                    weight: d.weight,
                    in_flight: s.in_flight.load(Ordering::Relaxed),
                    latency_us: s.latency_ewma_us.load(Ordering::Relaxed),
                    requests_this_minute: w.requests,
                    tokens_this_minute: w.tokens,
                    rpm: d.rpm,
                    tpm: d.tpm,
                    unit_price,
                };
                (i, cooling || over_rpm, c)
            })
            .collect();
        let healthy: Vec<&(usize, bool, Candidate)> =
            snapshot.iter().filter(|(_, unavailable, _)| !unavailable).collect();
        let pool: Vec<&(usize, bool, Candidate)> = if healthy.is_empty() { snapshot.iter().collect() } else { healthy };
        let candidates: Vec<Candidate> = pool.iter().map(|(_, _, c)| *c).collect();
        let chosen = choose(self.strategy, &candidates, fastrand::f64())?;
        let index = pool.get(chosen)?.0;
        let (deployment, stats) = group.deployments.get(index)?;
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut w) = stats.minute.lock() {
            w.roll(minute);
            w.requests += 1;
        }
        Some((index, PickedDeployment { deployment: deployment.clone(), stats: stats.clone() }))
    }

    /// Records a successful call: latency for latency-based routing, tokens for tpm.
    pub fn record_success(&self, picked: &PickedDeployment, latency: Duration, tokens: u64) {
        let sample = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        let old = picked.stats.latency_ewma_us.load(Ordering::Relaxed);
        let new = if old == 0 { sample } else { (old * 4 + sample) / 5 };
        picked.stats.latency_ewma_us.store(new, Ordering::Relaxed);
        let minute = self.minute();
        picked.stats.outcomes.record(minute, Ok(latency));
        if let Ok(mut w) = picked.stats.minute.lock() {
            w.roll(minute);
            w.tokens = w.tokens.saturating_add(tokens);
        }
    }

    /// Records a failed call; `allowed_fails` failures within the minute start a cooldown.
    /// Returns whether the deployment is now cooling down.
    pub fn record_failure(&self, picked: &PickedDeployment) -> bool {
        picked.stats.outcomes.record(self.minute(), Err(()));
        if !self.policy.cooldowns {
            return false;
        }
        let minute = self.minute();
        let failures = match picked.stats.minute.lock() {
            Ok(mut w) => {
                w.roll(minute);
                w.failures += 1;
                w.failures
            }
            Err(_) => return false,
        };
        if failures >= self.policy.allowed_fails.max(1) {
            let until = self.now_ms().saturating_add(u64::try_from(self.policy.cooldown.as_millis()).unwrap_or(0));
            picked.stats.cooldown_until_ms.store(until, Ordering::Relaxed);
            metrics::counter!("tollgate_deployment_cooldowns_total", "model" => self.metric_label(&picked.deployment.model_name))
                .increment(1);
            let d = &picked.deployment;
            crate::observability::litellm::cooled_down(&d.model_name, &d.id, &d.provider);
            tracing::warn!(deployment = %picked.deployment.id, "deployment cooling down after repeated failures");
            return true;
        }
        false
    }

    /// Each deployment with its state now (for the metrics scrape).
    pub fn deployment_states(&self) -> Vec<(&Arc<Deployment>, DeploymentState)> {
        let (now, minute) = (self.now_ms(), self.minute());
        self.all_deployments().map(|(d, s)| (d, state_of(s, now, minute))).collect()
    }

    /// Every deployment with its statistics, in config order.
    fn all_deployments(&self) -> impl Iterator<Item = &(Arc<Deployment>, Arc<DeploymentStats>)> {
        self.names.iter().filter_map(|n| self.groups.get(n)).flat_map(|g| g.deployments.iter())
    }
}

/// A deployment's health for `/model/health`: its state, the cooldown left (ms) and its calls of
/// the last two minutes.
pub struct DeploymentHealth {
    pub state: DeploymentState,
    pub cooldown_remaining_ms: u64,
    pub outcomes: super::outcomes::OutcomeSnapshot,
}

impl Router {
    /// Every deployment's health, in config order.
    pub fn deployment_health(&self) -> Vec<(&Arc<Deployment>, DeploymentHealth)> {
        let (now, minute) = (self.now_ms(), self.minute());
        self.all_deployments()
            .map(|(d, s)| {
                let health = DeploymentHealth {
                    state: state_of(s, now, minute),
                    cooldown_remaining_ms: s.cooldown_until_ms.load(Ordering::Relaxed).saturating_sub(now),
                    outcomes: s.outcomes.snapshot(minute),
                };
                (d, health)
            })
            .collect()
    }
}

fn state_of(s: &DeploymentStats, now: u64, minute: u64) -> DeploymentState {
    if s.cooldown_until_ms.load(Ordering::Relaxed) > now {
        DeploymentState::CooledDown
    } else if s.minute.lock().is_ok_and(|w| w.minute == minute && w.failures > 0) {
        DeploymentState::Failing
    } else {
        DeploymentState::Healthy
    }
}

/// A deployment's state as metrics report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeploymentState {
    Healthy,
    /// Failed calls this minute, not (yet) cooled down.
    Failing,
    CooledDown,
}

#[cfg(test)]
mod tests;
