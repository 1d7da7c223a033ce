//! The upstream attempts of one request, as the router makes them (`routing::retry`), for its
//! usage event's `attempts` (docs/design.md, "Attempts"): which deployment of which model group,
//! a retry or a fallback, what each came to and how long it took.
//!
//! Shared between the routed call and the request's recorder, which may outlive it (a client
//! that hangs up drops the call): an attempt still waiting when the event is made was cancelled.
//! A request of one attempt, nearly every request, allocates nothing here and lists nothing in
//! its event (its own deployment, status and latency describe that call); only a second
//! attempt makes a list. It holds a deployment's id and provider, never its `api_base` or key.

use crate::providers::Deployment;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tollgate_schemas::event::{AttemptKind, AttemptOutcome, UpstreamAttempt};
use tollgate_schemas::limits::MAX_EVENT_ATTEMPTS;

/// The deployments a request is sent to, as the router picks them (retries and fallbacks
/// change it): the one being tried is what a request abandoned while waiting for the provider
/// is priced at, and every attempt's outcome goes into the event.
#[derive(Default)]
pub struct Attempt(Mutex<Tried>);

#[derive(Default)]
struct Tried {
    /// The deployment being tried, or tried last.
    current: Option<Arc<Deployment>>,
    /// The attempt waiting for its answer, and since when.
    pending: Option<(Call, Instant)>,
    /// The first attempt, apart so that a request of one attempt needs no list.
    first: Option<Done>,
    /// The later attempts, at most `MAX_EVENT_ATTEMPTS - 1`.
    later: Vec<Done>,
    /// Attempts past the listed ones.
    omitted: u32,
}

/// Where an attempt went. `group` is `None` for the requested model's own group (the event
/// names it already): a request that never falls back copies no name.
struct Call {
    deployment: Arc<Deployment>,
    group: Option<String>,
    kind: AttemptKind,
}

struct Done {
    call: Call,
    outcome: AttemptOutcome,
    status: Option<u16>,
    latency_ms: u64,
}

impl Attempt {
    /// An attempt is sent to `deployment`: of the requested model's group (`fallback_group`
    /// `None`) or of the fallback group named.
    pub fn begin(&self, deployment: &Arc<Deployment>, fallback_group: Option<&str>, kind: AttemptKind) {
        if let Ok(mut t) = self.0.lock() {
            t.current = Some(deployment.clone());
            let call = Call { deployment: deployment.clone(), group: fallback_group.map(str::to_owned), kind };
            // An attempt never ended (it cannot happen: `end` follows each `begin`) counts as
            // cancelled rather than vanish.
            t.close_pending(AttemptOutcome::Cancelled, None);
            t.pending = Some((call, Instant::now()));
        }
    }

    /// The attempt begun last came to `outcome` (`status`: the provider's, when it answered).
    pub fn end(&self, outcome: AttemptOutcome, status: Option<u16>) {
        if let Ok(mut t) = self.0.lock() {
            t.close_pending(outcome, status);
        }
    }

    /// The deployment being tried, or tried last.
    pub fn get(&self) -> Option<Arc<Deployment>> {
        self.0.lock().ok().and_then(|t| t.current.clone())
    }

    /// The event's `attempts` and `attempts_omitted`: empty unless the request made more than
    /// one attempt. An attempt still waiting for its answer is recorded as cancelled.
    pub fn for_event(&self, requested_model: &str) -> (Vec<UpstreamAttempt>, u32) {
        let Ok(mut t) = self.0.lock() else { return (Vec::new(), 0) };
        t.close_pending(AttemptOutcome::Cancelled, None);
        if t.later.is_empty() {
            return (Vec::new(), 0);
        }
        let listed = t.first.iter().chain(t.later.iter());
        let attempts = listed
            .map(|d| UpstreamAttempt {
                model_group: d.call.group.as_deref().unwrap_or(requested_model).to_owned(),
                deployment: d.call.deployment.id.clone(),
                provider: d.call.deployment.provider.clone(),
                kind: d.call.kind,
                outcome: d.outcome,
                status: d.status,
                latency_ms: d.latency_ms,
            })
            .collect();
        (attempts, t.omitted)
    }
}

impl Tried {
    fn close_pending(&mut self, outcome: AttemptOutcome, status: Option<u16>) {
        let Some((call, at)) = self.pending.take() else { return };
        let latency_ms = u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX);
        let done = Done { call, outcome, status, latency_ms };
        if self.first.is_none() {
            self.first = Some(done);
        } else if self.later.len() + 1 < MAX_EVENT_ATTEMPTS {
            self.later.push(done);
        } else {
            self.omitted = self.omitted.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::REGISTRY;

    fn deployment(group: &str, index: usize) -> Arc<Deployment> {
        Arc::new(Deployment {
            model_name: group.into(),
            provider: "openai".into(),
            upstream_model: group.into(),
            id: format!("openai/{group}#{index}"),
            api_base: "http://secret-host.internal:9".into(),
            ..Deployment::for_test(REGISTRY[0])
        })
    }

    #[test]
    fn one_attempt_lists_nothing() {
        let a = Attempt::default();
        let d = deployment("gpt-4o", 0);
        a.begin(&d, None, AttemptKind::First);
        a.end(AttemptOutcome::Ok, Some(200));
        assert_eq!(a.for_event("gpt-4o"), (Vec::new(), 0));
        assert_eq!(a.get().map(|d| d.id.clone()).as_deref(), Some("openai/gpt-4o#0"));
    }

    #[test]
    fn a_retry_then_a_fallback_are_listed_in_order() {
        let a = Attempt::default();
        a.begin(&deployment("gpt-4o", 0), None, AttemptKind::First);
        a.end(AttemptOutcome::ErrorStatus, Some(503));
        a.begin(&deployment("gpt-4o", 1), None, AttemptKind::Retry);
        a.end(AttemptOutcome::Timeout, None);
        a.begin(&deployment("backup", 0), Some("backup"), AttemptKind::Fallback);
        a.end(AttemptOutcome::Ok, Some(200));
        let (list, omitted) = a.for_event("gpt-4o");
        assert_eq!(omitted, 0);
        let seen: Vec<(&str, &str, AttemptKind, AttemptOutcome, Option<u16>)> =
            list.iter().map(|x| (x.model_group.as_str(), x.deployment.as_str(), x.kind, x.outcome, x.status)).collect();
        assert_eq!(
            seen,
            [
                ("gpt-4o", "openai/gpt-4o#0", AttemptKind::First, AttemptOutcome::ErrorStatus, Some(503)),
                ("gpt-4o", "openai/gpt-4o#1", AttemptKind::Retry, AttemptOutcome::Timeout, None),
                ("backup", "openai/backup#0", AttemptKind::Fallback, AttemptOutcome::Ok, Some(200)),
            ]
        );
        assert!(list.iter().all(|x| x.provider == "openai"));
        let text = serde_json::to_string(&list).unwrap();
        assert!(!text.contains("secret-host"), "no api_base in the event: {text}");
    }

    #[test]
    fn an_attempt_left_waiting_was_cancelled() {
        let a = Attempt::default();
        a.begin(&deployment("gpt-4o", 0), None, AttemptKind::First);
        a.end(AttemptOutcome::Connect, None);
        a.begin(&deployment("gpt-4o", 1), None, AttemptKind::Retry);
        let (list, _) = a.for_event("gpt-4o");
        assert_eq!(
            list.iter().map(|x| x.outcome).collect::<Vec<_>>(),
            [AttemptOutcome::Connect, AttemptOutcome::Cancelled]
        );
        assert_eq!(a.get().map(|d| d.id.clone()).as_deref(), Some("openai/gpt-4o#1"));
    }

    #[test]
    fn past_the_bound_the_rest_are_counted() {
        let a = Attempt::default();
        let d = deployment("gpt-4o", 0);
        for i in 0..MAX_EVENT_ATTEMPTS + 5 {
            a.begin(&d, None, if i == 0 { AttemptKind::First } else { AttemptKind::Retry });
            a.end(AttemptOutcome::ErrorStatus, Some(429));
        }
        let (list, omitted) = a.for_event("gpt-4o");
        assert_eq!(list.len(), MAX_EVENT_ATTEMPTS);
        assert_eq!(omitted, 5);
        let event = tollgate_schemas::UsageEvent {
            attempts: list,
            attempts_omitted: omitted,
            ..serde_json::from_str(include_str!("../../../schemas/fixtures/usage_event_v1.json")).unwrap()
        };
        assert!(tollgate_schemas::limits::check_event(&event).is_ok(), "what the gateway records is in bounds");
    }
}
