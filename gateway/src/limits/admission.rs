//! Admission: may this request go to a provider now? Budgets at every level (key, team, user,
//! organization, customer, and per model), then rate limits, then — for hard budgets — a
//! reservation of the request's worst-case cost against this gateway's credit leases
//! ([`crate::limits::leases`]). Runs on every model route, after authentication and before the provider
//! is called; makes no remote call except when a lease must be refilled.

use crate::config::{BudgetSettings, WhenStale};
use crate::error::{GatewayError, Scope};
use crate::limits::budget_view::BudgetView;
use crate::limits::leases::{Hold, Leases, Refusal, Slot};
use crate::limits::ratelimit::{LimitSpec, RateLimiter, Reservation};
use crate::tenancy::auth::{Party, Principal};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;
use tollgate_schemas::tenancy::{budget_window, BudgetDuration};
use tollgate_schemas::NanoUsd;

/// A budget the request counts against: its ledger scope, window length and the window the
/// request is admitted in (its spend is counted there, see `UsageEvent::occurred_at`), and for
/// a hard budget who refuses in its name.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BudgetSlot {
    scope_id: String,
    duration: Option<BudgetDuration>,
    window: String,
    hard: Option<HardBudget>,
}

/// A hard budget as admission saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HardBudget {
    scope: Scope,
    max: NanoUsd,
    /// The spend of its window in this gateway's view.
    spent: NanoUsd,
}

/// An admitted request: what it holds (parallel slots, budget reservations) and where its
/// spend is counted.
pub struct Admitted {
    pub reservation: Reservation,
    budgets: Vec<BudgetSlot>,
    view: Arc<BudgetView>,
    holds: Vec<Hold>,
}

impl Admitted {
    /// The event's `budget_windows`: every budgeted scope with its duration.
    pub fn budget_windows(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for b in &self.budgets {
            let d = b.duration.map_or_else(|| "all".to_owned(), |d| d.to_string());
            let entry = out.entry(b.scope_id.clone()).or_default();
            if !entry.contains(&d) {
                entry.push(d);
            }
        }
        out
    }

    /// Counts what the request used, at once, in this gateway's view (in the windows it was
    /// admitted in), limits and leases.
    pub fn settle(&self, cost: NanoUsd, tokens: u64) {
        self.reservation.record_tokens(tokens);
        // The lease was in use until now.
        let now_ms = Utc::now().timestamp_millis();
        for h in &self.holds {
            h.settle(cost, now_ms);
        }
        for b in &self.budgets {
            self.view.add_local(&b.scope_id, &b.window, cost);
        }
    }

    /// Whether a hard budget applies (then the request reserves its worst case).
    pub fn has_hard_budget(&self) -> bool {
        self.budgets.iter().any(|b| b.hard.is_some())
    }

    /// Reserves `worst` (the request's worst-case cost) against the lease of every hard budget
    /// it counts against. On a refusal, what was reserved is released (the holds are dropped).
    pub async fn reserve(&mut self, leases: &Leases, worst: NanoUsd, now: DateTime<Utc>) -> Result<(), GatewayError> {
        if worst.0 <= 0 {
            return Ok(());
        }
        let now_ms = now.timestamp_millis();
        for b in &self.budgets {
            let Some(HardBudget { scope, max, spent }) = b.hard else { continue };
            let slot = Slot { scope: &b.scope_id, window: &b.window, max, seen_spent: spent };
            match leases.reserve(&slot, worst, now_ms).await {
                Ok(hold) => self.holds.push(hold),
                Err(Refusal::Exhausted) => {
                    metrics::counter!("tollgate_budget_lease_refusals_total").increment(1);
                    return Err(GatewayError::BudgetExceeded {
                        scope,
                        spent,
                        max,
                        resets_at: b.duration.map(|d| d.window_end(now)),
                        committed: spent < max,
                    });
                }
                // Logged without the store's message: it can quote the values written.
                Err(Refusal::Unavailable(_)) => {
                    tracing::warn!("budget lease unavailable; refusing (hard budgets fail closed)");
                    return Err(GatewayError::BudgetLeaseUnavailable);
                }
            }
        }
        Ok(())
    }
}

impl Admitted {
    /// Refuses a batch that can cost up to `max_cost` when any hard budget it counts against
    /// has less than that left in this gateway's view (docs/design.md §2.13, "Budgets").
    pub fn check_headroom(&self, max_cost: NanoUsd) -> Result<(), GatewayError> {
        for b in &self.budgets {
            let Some(HardBudget { scope, max, spent }) = b.hard else { continue };
            let left = NanoUsd(max.0.saturating_sub(spent.0).max(0));
            if max_cost > left {
                return Err(GatewayError::BatchOverBudget { scope, max_cost, left, max, held: false });
            }
        }
        Ok(())
    }

    /// Reserves the whole of `amount` (a batch's most possible cost) against the lease of every
    /// hard budget it counts against, and hands the reservations over: they are the batch's
    /// hold until it is billed. A budget that can cover only part of it refuses the batch
    /// (nothing stays reserved then); so does one whose lease store is unavailable.
    pub async fn hold_whole(
        &mut self,
        leases: &Leases,
        amount: NanoUsd,
        now: DateTime<Utc>,
    ) -> Result<Vec<Hold>, GatewayError> {
        let mut holds = Vec::new();
        if amount.0 <= 0 {
            return Ok(holds);
        }
        let now_ms = now.timestamp_millis();
        for b in &self.budgets {
            let Some(HardBudget { scope, max, spent }) = b.hard else { continue };
            let slot = Slot { scope: &b.scope_id, window: &b.window, max, seen_spent: spent };
            let refused = || GatewayError::BatchOverBudget {
                scope,
                max_cost: amount,
                left: NanoUsd(max.0.saturating_sub(spent.0).max(0)),
                max,
                held: true,
            };
            match leases.reserve(&slot, amount, now_ms).await {
                Ok(hold) if !hold.partial() => holds.push(hold),
                // Only part of it: released as the hold drops.
                Ok(_) | Err(Refusal::Exhausted) => {
                    metrics::counter!("tollgate_budget_lease_refusals_total").increment(1);
                    return Err(refused());
                }
                Err(Refusal::Unavailable(_)) => {
                    tracing::warn!("budget lease unavailable; refusing a batch (hard budgets fail closed)");
                    return Err(GatewayError::BudgetLeaseUnavailable);
                }
            }
        }
        Ok(holds)
    }

    /// The reservations taken by [`Admitted::reserve`], handed over (to a batch's hold).
    pub fn take_holds(&mut self) -> Vec<Hold> {
        std::mem::take(&mut self.holds)
    }
}

/// The hard budgets `principal` counts against for `model`, with no refusal and no rate limit:
/// to hold again, after a restart, what a batch admitted earlier still holds
/// (`batches::hold::hold_recovered`).
pub fn budgets_of(principal: &Principal, model: &str, view: &Arc<BudgetView>, now: DateTime<Utc>) -> Admitted {
    let mut budgets = Vec::new();
    for party in &principal.parties {
        let mut specs = Vec::new();
        // Never refuses when told not to.
        let _ = check_party(party, model, view, now, false, &mut budgets, &mut specs);
    }
    Admitted { reservation: Reservation::default(), budgets, view: view.clone(), holds: Vec::new() }
}

/// The `budget_windows` of an event charged to `principal` for `model` without an admission
/// of its own (a batch's lines, billed when the batch ends): every budgeted scope of its
/// parties with its duration, as [`Admitted::budget_windows`] lists them.
pub fn budget_windows_of(principal: &Principal, model: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for party in &principal.parties {
        let l = &party.limits;
        let d = l.budget_duration.map_or_else(|| "all".to_owned(), |d| d.to_string());
        let mut add = |scope_id: String| {
            let entry = out.entry(scope_id).or_default();
            if !entry.contains(&d) {
                entry.push(d.clone());
            }
        };
        if l.max_budget.is_some() || l.soft_budget.is_some() {
            add(party.scope_id.clone());
        }
        if l.model_max_budget.contains_key(model) {
            add(format!("{}/model/{model}", party.scope_id));
        }
    }
    out
}

/// Checks budgets and limits for a request to `model`.
pub fn admit(
    principal: &Principal,
    model: &str,
    view: &Arc<BudgetView>,
    limiter: &RateLimiter,
    settings: &BudgetSettings,
    now: DateTime<Utc>,
) -> Result<Admitted, GatewayError> {
    let mut budgets = Vec::new();
    let mut specs = Vec::new();
    for party in &principal.parties {
        check_party(party, model, view, now, true, &mut budgets, &mut specs)?;
    }
    check_freshness(&budgets, view, settings, now)?;
    let reservation = limiter.admit(&specs, now.timestamp_millis())?;
    Ok(Admitted { reservation, budgets, view: view.clone(), holds: Vec::new() })
}

impl Admitted {
    /// Admits one more party (the request's customer, resolved after the key's own limits so
    /// that a flood of customer ids is rate limited before it costs database reads).
    pub fn admit_party(
        &mut self,
        party: &Party,
        model: &str,
        limiter: &RateLimiter,
        settings: &BudgetSettings,
        now: DateTime<Utc>,
    ) -> Result<(), GatewayError> {
        let mut budgets = Vec::new();
        let mut specs = Vec::new();
        check_party(party, model, &self.view, now, true, &mut budgets, &mut specs)?;
        check_freshness(&budgets, &self.view, settings, now)?;
        self.reservation.absorb(limiter.admit(&specs, now.timestamp_millis())?);
        self.budgets.extend(budgets);
        Ok(())
    }
}

/// The budgets of one party (refused when one is spent, if `refuse`) and its rate-limit specs.
fn check_party(
    party: &Party,
    model: &str,
    view: &BudgetView,
    now: DateTime<Utc>,
    refuse: bool,
    budgets: &mut Vec<BudgetSlot>,
    specs: &mut Vec<LimitSpec>,
) -> Result<(), GatewayError> {
    let l = &party.limits;
    let duration = l.budget_duration;
    let mut check = |scope: Scope, scope_id: String, max: Option<NanoUsd>| {
        let window = budget_window(duration, now);
        let mut hard_budget = None;
        if let Some(max) = max {
            let spent = view.spent(&scope_id, &window);
            crate::observability::usage::budget_checked(scope, &scope_id, spent, max);
            if refuse && spent >= max {
                return Err(GatewayError::BudgetExceeded {
                    scope,
                    spent,
                    max,
                    resets_at: duration.map(|d| d.window_end(now)),
                    committed: false,
                });
            }
            hard_budget = Some(HardBudget { scope, max, spent });
        }
        budgets.push(BudgetSlot { scope_id, duration, window, hard: hard_budget });
        Ok(())
    };
    if l.max_budget.is_some() || l.soft_budget.is_some() {
        check(party.scope, party.scope_id.clone(), l.max_budget)?;
    }
    if let Some(max) = l.model_max_budget.get(model) {
        check(Scope::Model, format!("{}/model/{model}", party.scope_id), Some(*max))?;
    }
    if l.rpm_limit.is_some() || l.tpm_limit.is_some() || l.max_parallel_requests.is_some() {
        specs.push(LimitSpec {
            scope: party.scope,
            id: party.scope_id.clone(),
            rpm: l.rpm_limit,
            tpm: l.tpm_limit,
            parallel: l.max_parallel_requests,
        });
    }
    let (model_rpm, model_tpm) = (l.model_rpm_limit.get(model).copied(), l.model_tpm_limit.get(model).copied());
    if model_rpm.is_some() || model_tpm.is_some() {
        specs.push(LimitSpec {
            scope: Scope::Model,
            id: format!("{}/model/{model}", party.scope_id),
            rpm: model_rpm,
            tpm: model_tpm,
            parallel: None,
        });
    }
    Ok(())
}

/// Hard budgets are refused when the budget view is older than its bound (policy
/// `fail_closed`).
fn check_freshness(
    budgets: &[BudgetSlot],
    view: &BudgetView,
    settings: &BudgetSettings,
    now: DateTime<Utc>,
) -> Result<(), GatewayError> {
    let hard = budgets.iter().any(|b| b.hard.is_some());
    if hard && settings.when_stale == WhenStale::FailClosed {
        let bound_ms = i64::try_from(settings.max_staleness_secs.saturating_mul(1_000)).unwrap_or(i64::MAX);
        if view.age_ms(now).is_none_or(|age| age > bound_ms) {
            metrics::counter!("tollgate_budget_view_stale_refusals_total").increment(1);
            return Err(GatewayError::BudgetViewStale { bound_secs: settings.max_staleness_secs });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_schemas::tenancy::{BudgetState, KeyRecord, Limits};

    fn principal(parties: Vec<Party>) -> Principal {
        Principal { parties, ..Principal::of_key(KeyRecord::default()) }
    }

    fn party(scope: Scope, id: &str, limits: Limits) -> Party {
        Party { scope, scope_id: id.into(), limits }
    }

    fn fresh_view() -> Arc<BudgetView> {
        let view = Arc::new(BudgetView::new());
        view.apply(&BudgetState::Heartbeat { consumer: "c".into(), at_ms: Utc::now().timestamp_millis(), lag: None });
        view.set_caught_up();
        view
    }

    fn open_settings() -> BudgetSettings {
        BudgetSettings { when_stale: WhenStale::FailOpen, ..BudgetSettings::default() }
    }

    #[test]
    fn each_level_refuses_with_its_own_scope() {
        let view = fresh_view();
        let limiter = RateLimiter::new(1);
        let budget = |n| Limits { max_budget: Some(NanoUsd(n)), ..Limits::default() };
        let p = principal(vec![
            party(Scope::Key, "key/k", budget(100)),
            party(Scope::Team, "team/t", budget(50)),
            party(Scope::Customer, "customer/c", budget(10)),
        ]);
        let now = Utc::now();
        let admitted = admit(&p, "m", &view, &limiter, &open_settings(), now).unwrap();
        assert_eq!(admitted.budget_windows().len(), 3);
        admitted.settle(NanoUsd(10), 5);
        let err = admit(&p, "m", &view, &limiter, &open_settings(), now).err().unwrap();
        assert!(matches!(err, GatewayError::BudgetExceeded { scope: Scope::Customer, .. }), "{err:?}");
        admitted.settle(NanoUsd(40), 5);
        let p2 = principal(p.parties[..2].to_vec());
        let err = admit(&p2, "m", &view, &limiter, &open_settings(), now).err().unwrap();
        assert!(matches!(err, GatewayError::BudgetExceeded { scope: Scope::Team, .. }), "{err:?}");
    }

    #[test]
    fn model_budgets_apply_to_their_model_only() {
        let view = fresh_view();
        let limiter = RateLimiter::new(1);
        let limits = Limits {
            model_max_budget: [("gpt-4o".to_owned(), NanoUsd(5))].into_iter().collect(),
            budget_duration: Some(BudgetDuration::Months(1)),
            ..Limits::default()
        };
        let p = principal(vec![party(Scope::Key, "key/k", limits)]);
        let now = Utc::now();
        let a = admit(&p, "gpt-4o", &view, &limiter, &open_settings(), now).unwrap();
        assert_eq!(a.budget_windows().get("key/k/model/gpt-4o"), Some(&vec!["1mo".to_owned()]));
        a.settle(NanoUsd(5), 1);
        assert!(matches!(
            admit(&p, "gpt-4o", &view, &limiter, &open_settings(), now).err(),
            Some(GatewayError::BudgetExceeded { scope: Scope::Model, .. })
        ));
        assert!(admit(&p, "gpt-4o-mini", &view, &limiter, &open_settings(), now).is_ok());
    }

    #[test]
    fn budget_windows_without_admission_are_those_an_admission_lists() {
        let monthly = Limits {
            soft_budget: Some(NanoUsd(7)),
            model_max_budget: [("gpt-4o".to_owned(), NanoUsd(5))].into_iter().collect(),
            budget_duration: Some(BudgetDuration::Months(1)),
            ..Limits::default()
        };
        let p = principal(vec![
            party(Scope::Key, "key/k", monthly),
            party(Scope::Team, "team/t", Limits { max_budget: Some(NanoUsd(100)), ..Limits::default() }),
            party(Scope::User, "user/u", Limits { rpm_limit: Some(5), ..Limits::default() }),
        ]);
        let (view, limiter) = (fresh_view(), RateLimiter::new(1));
        for model in ["gpt-4o", "gpt-4o-mini"] {
            let admitted = admit(&p, model, &view, &limiter, &open_settings(), Utc::now()).unwrap();
            assert_eq!(budget_windows_of(&p, model), admitted.budget_windows(), "{model}");
        }
        assert_eq!(budget_windows_of(&p, "gpt-4o").len(), 3);
    }

    /// A lease store that cannot be reached.
    struct Unreachable;

    impl crate::limits::leases::LeaseStore for Unreachable {
        fn grant<'a>(
            &'a self,
            _: crate::limits::leases::GrantRequest<'a>,
        ) -> futures::future::BoxFuture<'a, Result<Option<NanoUsd>, crate::limits::leases::LeaseError>> {
            Box::pin(async { Err(crate::limits::leases::LeaseError::Store("connection refused".into())) })
        }
        fn give_back<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: NanoUsd,
        ) -> futures::future::BoxFuture<'a, Result<(), crate::limits::leases::LeaseError>> {
            Box::pin(async { Err(crate::limits::leases::LeaseError::Store("connection refused".into())) })
        }
    }

    #[tokio::test]
    async fn hard_budgets_reserve_the_worst_case_and_fail_closed_without_a_lease_store() {
        let view = fresh_view();
        let limiter = RateLimiter::new(1);
        let hard = Limits { max_budget: Some(NanoUsd(100)), ..Limits::default() };
        let p = principal(vec![party(Scope::Key, "key/k", hard), party(Scope::Team, "team/t", Limits::default())]);
        let now = Utc::now();
        let leases =
            Leases::new(Arc::new(crate::limits::leases::LocalLeases::default()), 1, std::time::Duration::from_secs(5));
        let mut first = admit(&p, "m", &view, &limiter, &open_settings(), now).unwrap();
        assert!(first.has_hard_budget());
        first.reserve(&leases, NanoUsd(60), now).await.unwrap();
        // 40 left while the first is in flight: the second gets it (partial), the third nothing.
        let mut second = admit(&p, "m", &view, &limiter, &open_settings(), now).unwrap();
        second.reserve(&leases, NanoUsd(60), now).await.unwrap();
        let mut third = admit(&p, "m", &view, &limiter, &open_settings(), now).unwrap();
        let err = third.reserve(&leases, NanoUsd(60), now).await.err().unwrap();
        assert!(matches!(err, GatewayError::BudgetExceeded { scope: Scope::Key, committed: true, .. }), "{err:?}");
        assert!(err.to_string().contains("committed to requests in flight"), "{err}");
        // The first ends cheaper than its worst case: the rest is free again.
        first.settle(NanoUsd(10), 1);
        drop(second);
        third.reserve(&leases, NanoUsd(60), now).await.unwrap();

        let unreachable = Leases::new(Arc::new(Unreachable), 1, std::time::Duration::from_secs(5));
        let mut a = admit(&p, "m", &view, &limiter, &open_settings(), now).unwrap();
        assert!(matches!(
            a.reserve(&unreachable, NanoUsd(1), now).await.err(),
            Some(GatewayError::BudgetLeaseUnavailable)
        ));
        // No hard budget, nothing to reserve.
        let soft = principal(vec![party(Scope::Key, "key/s", Limits::default())]);
        let a = admit(&soft, "m", &view, &limiter, &open_settings(), now).unwrap();
        assert!(!a.has_hard_budget());
    }

    #[tokio::test]
    async fn a_batch_holds_its_whole_maximum_or_nothing() {
        let (view, limiter) = (fresh_view(), RateLimiter::new(1));
        let hard = Limits { max_budget: Some(NanoUsd(100)), ..Limits::default() };
        let p = principal(vec![party(Scope::Key, "key/k", hard), party(Scope::Team, "team/t", Limits::default())]);
        let now = Utc::now();
        let leases =
            Leases::new(Arc::new(crate::limits::leases::LocalLeases::default()), 1, std::time::Duration::from_secs(5));
        let admit_one = || admit(&p, "m", &view, &limiter, &open_settings(), now).unwrap();
        // Over what the view says is left: refused naming the scope, before any lease.
        let err = admit_one().check_headroom(NanoUsd(101)).err().unwrap();
        assert!(
            matches!(err, GatewayError::BatchOverBudget { scope: Scope::Key, left: NanoUsd(100), held: false, .. }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "budget exceeded for this API key: this batch can cost up to 0.000000101 USD and 0.000000100 USD is left of its 0.000000100 USD budget");
        let mut batch = admit_one();
        batch.check_headroom(NanoUsd(80)).unwrap();
        let held = batch.hold_whole(&leases, NanoUsd(80), now).await.unwrap();
        assert_eq!(held.iter().map(|h| h.reserved().0).collect::<Vec<_>>(), vec![80]);
        // A second batch of 30 does not fit what the first holds: refused whole, nothing kept.
        let err = admit_one().hold_whole(&leases, NanoUsd(30), now).await.err().unwrap();
        assert!(matches!(err, GatewayError::BatchOverBudget { scope: Scope::Key, held: true, .. }), "{err:?}");
        let mut request = admit_one();
        request.reserve(&leases, NanoUsd(20), now).await.unwrap();
        assert!(request.holds.iter().all(|h| !h.partial()), "the refused batch kept nothing reserved");
        // The first batch billed at 10: the rest of its hold is free for another.
        for h in &held {
            h.settle(NanoUsd(10), now.timestamp_millis());
        }
        assert_eq!(admit_one().hold_whole(&leases, NanoUsd(70), now).await.unwrap().len(), 1);
        // Without a hard budget nothing is held.
        let soft = principal(vec![party(Scope::Key, "key/s", Limits::default())]);
        let mut a = admit(&soft, "m", &view, &limiter, &open_settings(), now).unwrap();
        assert!(a.hold_whole(&leases, NanoUsd(1_000), now).await.unwrap().is_empty());
        assert!(!budgets_of(&soft, "m", &view, now).has_hard_budget());
        // A spent budget is still listed to hold again, not refused.
        admit_one().settle(NanoUsd(100), 1);
        assert!(admit(&p, "m", &view, &limiter, &open_settings(), now).is_err());
        assert!(budgets_of(&p, "m", &view, now).has_hard_budget());
    }

    #[test]
    fn a_stale_view_fails_closed_for_hard_budgets_only() {
        let view = Arc::new(BudgetView::new());
        let limiter = RateLimiter::new(1);
        let closed = BudgetSettings { when_stale: WhenStale::FailClosed, ..BudgetSettings::default() };
        let hard =
            principal(vec![party(Scope::Key, "key/k", Limits { max_budget: Some(NanoUsd(100)), ..Limits::default() })]);
        let none = principal(vec![party(Scope::Key, "key/j", Limits::default())]);
        assert!(matches!(
            admit(&hard, "m", &view, &limiter, &closed, Utc::now()).err(),
            Some(GatewayError::BudgetViewStale { .. })
        ));
        assert!(admit(&none, "m", &view, &limiter, &closed, Utc::now()).is_ok());
        assert!(admit(&hard, "m", &view, &limiter, &open_settings(), Utc::now()).is_ok());
    }
}
