//! Credit leases for hard budgets (docs/design.md §5.4).
//!
//! Budget push-back converges: between a crossing and the moment every gateway hears of it,
//! requests keep being admitted. For a hard budget (`max_budget`) that is not good enough, so a
//! gateway spends only what it was **granted**: per `(scope, window)` it takes a slice of the
//! remaining budget from a [`LeaseStore`] (a conditional write on the ledger database, shared by
//! every gateway), reserves each request's worst-case cost against its slice before calling the
//! provider, and settles the actual cost when the request ends. The store's total of slices
//! granted never exceeds the budget, so neither does the spend of all gateways together —
//! whatever their number, their timing or the lag of the ledger consumers. While a slice lasts,
//! admission makes no remote call.
//!
//! When less than one worst case is left, one request at a time per gateway is admitted on a
//! partial reservation of what is left (as LiteLLM admits a request while spend is below the
//! budget). Only such a request — or one without `max_tokens` whose answer is longer than the
//! configured reserve — can cost more than it reserved, and what it costs beyond is recorded
//! with the store when the lease is handed back. So the spend of all gateways together passes
//! the budget by at most one partially covered request per gateway.
//!
//! A slice is sized to last about two seconds at the rate the previous one was spent (at least
//! four worst cases, at most `1 / (4 × replicas)` of what is left), and idle slices are handed
//! back, so one gateway does not sit on budget another could use. A gateway that dies keeps its
//! unspent slice — a couple of seconds' worth — out of use until the window ends: budget is
//! then under-used, never overspent.
//!
//! This module must never admit a request whose reservation it could not account for: every
//! reservation is released or settled exactly once (see [`Hold`]).

use futures::future::BoxFuture;
use metrics::counter;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tollgate_schemas::NanoUsd;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("budget lease store: {0}")]
    Store(String),
    #[error("budget lease of {0}: too many concurrent writers")]
    Contended(String),
}

/// A request for budget from the shared store.
#[derive(Clone, Debug)]
pub struct GrantRequest<'a> {
    pub scope: &'a str,
    pub window: &'a str,
    /// The budget of `(scope, window)`.
    pub max: NanoUsd,
    /// The largest spend this gateway has seen for `(scope, window)` (published ledger totals
    /// and its own). Counted when the store's row is created, for spend made before the budget
    /// existed, outside any lease.
    pub seen_spent: NanoUsd,
    /// What the request waiting for this grant still misses.
    pub need: NanoUsd,
    /// What the gateway would like, to serve the next requests without asking again.
    pub want: NanoUsd,
    /// A slice never exceeds `left / share` (unless `need` does).
    pub share: i64,
    /// Seconds until the window ends plus a margin; `None` for a budget that never resets.
    pub ttl_secs: Option<i32>,
}

/// Pure decision of a grant, given what the store has granted so far for `(scope, window)`
/// (`None`: nothing yet, the row does not exist). Returns `(amount, new store total)`, or `None`
/// when nothing is left. The amount is less than `need` only when that is all there is.
///
/// What is committed is at least the stored total and at least the spend seen. The two differ
/// only by spend made outside leases (before the budget existed, or through gateways with
/// leases off), which only the spend seen can show; the larger is the safer base.
pub fn decide(granted: Option<NanoUsd>, req: &GrantRequest<'_>) -> Option<(NanoUsd, NanoUsd)> {
    let base = granted.map_or(0, |g| g.0).max(req.seen_spent.0).max(0);
    let left = req.max.0.saturating_sub(base);
    if left <= 0 {
        return None;
    }
    let need = req.need.0.max(0);
    let cap = (left / req.share.max(1)).max(need);
    let amount = req.want.0.max(need).min(cap).min(left);
    if amount <= 0 {
        return None;
    }
    Some((NanoUsd(amount), NanoUsd(base + amount)))
}

/// Where the slices granted per `(scope, window)` are counted. Shared by every gateway.
pub trait LeaseStore: Send + Sync {
    /// Grants part of what is left of the budget: `Ok(None)` when nothing is.
    fn grant<'a>(&'a self, req: GrantRequest<'a>) -> BoxFuture<'a, Result<Option<NanoUsd>, LeaseError>>;
    /// Hands back `amount` granted earlier and not spent. A negative amount records spend
    /// beyond what was granted (a request that cost more than it reserved), so later grants
    /// leave room for it.
    fn give_back<'a>(
        &'a self,
        scope: &'a str,
        window: &'a str,
        amount: NanoUsd,
    ) -> BoxFuture<'a, Result<(), LeaseError>>;
}

// === impl CqlLeases ===

/// Leases in Cassandra or ScyllaDB (`budget_leases`, schemas/cql/006_budget_leases.cql): one row
/// per `(scope, window)` holding the total granted and not handed back, changed only by LWTs.
pub struct CqlLeases {
    session: Arc<Session>,
    select: PreparedStatement,
    insert: PreparedStatement,
    update: PreparedStatement,
}

/// Conditional writes tried per grant before giving up (then the request is refused with 503).
const MAX_ATTEMPTS: usize = 32;

fn store_err(e: impl std::fmt::Display) -> LeaseError {
    LeaseError::Store(e.to_string())
}

impl CqlLeases {
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<CqlLeases, LeaseError> {
        let ks = keyspace;
        let mut select = session
            .prepare(format!(
                "SELECT granted_nano_usd, last_op FROM {ks}.budget_leases WHERE scope_id = ? AND window_id = ?"
            ))
            .await
            .map_err(store_err)?;
        // Serial reads see the outcome of every LWT, committed or in progress.
        select.set_consistency(tollgate_schemas::store::serial_read(&session));
        let insert = session
            .prepare(format!(
                "INSERT INTO {ks}.budget_leases (scope_id, window_id, granted_nano_usd, last_op) \
                 VALUES (?, ?, ?, ?) IF NOT EXISTS USING TTL ?"
            ))
            .await
            .map_err(store_err)?;
        let update = session
            .prepare(format!(
                "UPDATE {ks}.budget_leases USING TTL ? SET granted_nano_usd = ?, last_op = ? \
                 WHERE scope_id = ? AND window_id = ? IF granted_nano_usd = ?"
            ))
            .await
            .map_err(store_err)?;
        Ok(CqlLeases { session, select, insert, update })
    }

    /// The row's total and the id of the write that set it.
    async fn read(&self, scope: &str, window: &str) -> Result<Option<(i64, Option<uuid::Uuid>)>, LeaseError> {
        let result = self.session.execute_unpaged(&self.select, (scope, window)).await.map_err(store_err)?;
        let rows = result.into_rows_result().map_err(store_err)?;
        let row = rows.maybe_first_row::<(Option<i64>, Option<uuid::Uuid>)>().map_err(store_err)?;
        Ok(row.map(|(g, op)| (g.unwrap_or(0), op)))
    }

    async fn read_total(&self, scope: &str, window: &str) -> Result<Option<i64>, LeaseError> {
        Ok(self.read(scope, window).await?.map(|(g, _)| g))
    }

    /// One conditional write, tagged with a fresh id. A write whose outcome is unknown (a
    /// timeout: it may still have been applied) is settled by a serial read of that id, so a
    /// grant is never lost to the store while the gateway believes it failed.
    async fn write(
        &self,
        scope: &str,
        window: &str,
        current: Option<i64>,
        next: i64,
        ttl: i32,
    ) -> Result<bool, LeaseError> {
        let op = uuid::Uuid::new_v4();
        let result = match current {
            None => self.session.execute_unpaged(&self.insert, (scope, window, next, op, ttl)).await,
            Some(cur) => self.session.execute_unpaged(&self.update, (ttl, next, op, scope, window, cur)).await,
        };
        match result {
            Ok(result) => tollgate_schemas::store::lwt_applied(result).map_err(store_err),
            // Logged without the database's message: it can quote the values written.
            Err(_) => {
                tracing::warn!("budget lease write failed; reading whether it was applied");
                Ok(self.read(scope, window).await?.is_some_and(|(_, last)| last == Some(op)))
            }
        }
    }
}

impl LeaseStore for CqlLeases {
    fn grant<'a>(&'a self, req: GrantRequest<'a>) -> BoxFuture<'a, Result<Option<NanoUsd>, LeaseError>> {
        Box::pin(async move {
            for _ in 0..MAX_ATTEMPTS {
                let current = self.read_total(req.scope, req.window).await?;
                let Some((amount, total)) = decide(current.map(NanoUsd), &req) else { return Ok(None) };
                if self.write(req.scope, req.window, current, total.0, req.ttl_secs.unwrap_or(0)).await? {
                    return Ok(Some(amount));
                }
                counter!("tollgate_budget_lease_conflicts_total").increment(1);
            }
            Err(LeaseError::Contended(req.scope.to_owned()))
        })
    }

    fn give_back<'a>(
        &'a self,
        scope: &'a str,
        window: &'a str,
        amount: NanoUsd,
    ) -> BoxFuture<'a, Result<(), LeaseError>> {
        Box::pin(async move {
            for _ in 0..MAX_ATTEMPTS {
                let current = self.read_total(scope, window).await?;
                if current.is_none() && amount.0 >= 0 {
                    return Ok(()); // expired with its window: nothing to hand back to
                }
                let next = current.unwrap_or(0).saturating_sub(amount.0).max(0);
                let ttl = tollgate_schemas::tenancy::window_end(window)
                    .map_or(0, |end| ttl_until(end.timestamp(), chrono::Utc::now().timestamp()));
                if self.write(scope, window, current, next, ttl).await? {
                    return Ok(());
                }
                counter!("tollgate_budget_lease_conflicts_total").increment(1);
            }
            Err(LeaseError::Contended(scope.to_owned()))
        })
    }
}

/// TTL of a lease row: until the window ends, plus a day.
fn ttl_until(end_secs: i64, now_secs: i64) -> i32 {
    i32::try_from(end_secs.saturating_sub(now_secs).max(0).saturating_add(86_400)).unwrap_or(i32::MAX)
}

// === impl LocalLeases ===

/// Leases kept in this process: for a gateway that runs alone (the embedded default, or Kafka
/// without a database). With several such gateways each would lease from the whole budget.
/// Size at which [`LocalLeases`] forgets the windows that have ended.
const LOCAL_PRUNE_AT: usize = 4_096;

#[derive(Default)]
pub struct LocalLeases {
    granted: Mutex<HashMap<(String, String), i64>>,
}

impl LeaseStore for LocalLeases {
    fn grant<'a>(&'a self, req: GrantRequest<'a>) -> BoxFuture<'a, Result<Option<NanoUsd>, LeaseError>> {
        Box::pin(async move {
            let mut map = self.granted.lock().map_err(|_| LeaseError::Store("poisoned".into()))?;
            if map.len() >= LOCAL_PRUNE_AT {
                // Rolling windows would otherwise pile up: forget those that have ended.
                let now = chrono::Utc::now();
                map.retain(|(_, w), _| tollgate_schemas::tenancy::window_end(w).is_none_or(|end| end > now));
            }
            let key = (req.scope.to_owned(), req.window.to_owned());
            let Some((amount, total)) = decide(map.get(&key).copied().map(NanoUsd), &req) else { return Ok(None) };
            map.insert(key, total.0);
            Ok(Some(amount))
        })
    }

    fn give_back<'a>(
        &'a self,
        scope: &'a str,
        window: &'a str,
        amount: NanoUsd,
    ) -> BoxFuture<'a, Result<(), LeaseError>> {
        Box::pin(async move {
            let mut map = self.granted.lock().map_err(|_| LeaseError::Store("poisoned".into()))?;
            if let Some(g) = map.get_mut(&(scope.to_owned(), window.to_owned())) {
                *g = g.saturating_sub(amount.0).max(0);
            } else if amount.0 < 0 {
                map.insert((scope.to_owned(), window.to_owned()), -amount.0);
            }
            Ok(())
        })
    }
}

// === impl Leases ===

/// A grant taking longer than this fails the request (503): hard budgets fail closed, and
/// requests do not queue behind a store that does not answer.
const GRANT_TIMEOUT: Duration = Duration::from_secs(2);
/// After the store said nothing is left, requests that the lease cannot cover are refused
/// without asking it again for this long.
const EXHAUSTED_FOR_MS: i64 = 500;
/// A slice is sized to last about this long at the rate the last one was spent, so that a
/// gateway that dies strands at most a few seconds' worth of spend.
const SLICE_TARGET_MS: i64 = 2_000;

/// This gateway's account of one `(scope, window)`: granted by the store, spent by settled
/// requests, reserved by requests in flight. `granted - used - reserved` is what it may still
/// admit without asking the store.
#[derive(Default)]
struct Account {
    granted: i64,
    used: i64,
    reserved: i64,
    last_grant: i64,
    last_grant_ms: i64,
    last_active_ms: i64,
    /// The budget the last grant was made under: a lower one sends requests to the store.
    max: i64,
    /// Until then (Unix ms), the store has nothing left under a budget of `exhausted_max`:
    /// do not ask it again (unless the budget was raised).
    exhausted_until_ms: i64,
    exhausted_max: i64,
    /// A request admitted on a partial reservation is in flight: no second one until it ends,
    /// so this gateway passes the budget by at most one request's excess.
    partial_in_flight: bool,
    /// Handed back: no reservation may be taken from it any more.
    closed: bool,
}

impl Account {
    fn available(&self) -> i64 {
        self.granted.saturating_sub(self.used).saturating_sub(self.reserved)
    }

    /// Reserves `amount` if it fits, or — when `partial` and no other partial reservation is
    /// in flight — whatever is left, if anything. Returns what was reserved and whether it was
    /// partial.
    fn try_reserve(&mut self, amount: i64, partial: bool, now_ms: i64) -> Option<(i64, bool)> {
        let available = self.available();
        let (take, is_partial) = if available >= amount {
            (amount, false)
        } else if partial && available > 0 && !self.partial_in_flight {
            (available, true)
        } else {
            return None;
        };
        self.reserved = self.reserved.saturating_add(take);
        self.partial_in_flight |= is_partial;
        self.last_active_ms = self.last_active_ms.max(now_ms);
        Some((take, is_partial))
    }

    /// The slice to ask for: what the waiting request misses, and enough for about
    /// [`SLICE_TARGET_MS`] at the rate the previous slice went (doubling while slices last less
    /// than half of that, halving when they last more than twice as long), at least four worst
    /// cases.
    fn want(&self, need: i64, worst: i64, now_ms: i64) -> i64 {
        let lasted = now_ms.saturating_sub(self.last_grant_ms);
        let paced = if self.last_grant == 0 {
            0
        } else if lasted < SLICE_TARGET_MS / 2 {
            self.last_grant.saturating_mul(2)
        } else if lasted > SLICE_TARGET_MS * 2 {
            self.last_grant / 2
        } else {
            self.last_grant
        };
        need.max(worst.saturating_mul(4)).max(paced)
    }
}

struct Entry {
    scope: String,
    window: String,
    /// Window end, Unix ms; `i64::MAX` for all time.
    ends_ms: i64,
    account: Mutex<Account>,
    /// One grant at a time per `(scope, window)`.
    refill: tokio::sync::Mutex<()>,
}

impl Entry {
    fn account(&self) -> std::sync::MutexGuard<'_, Account> {
        // A panic while holding the lock cannot leave the numbers half-changed (each change is
        // one assignment), so a poisoned lock is still consistent.
        self.account.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A request's reservation against one lease. Settled with the actual cost when the request
/// ends; released untouched if it is dropped unsettled (the request never reached a provider).
pub struct Hold {
    entry: Arc<Entry>,
    amount: i64,
    partial: bool,
    done: AtomicBool,
}

impl Hold {
    /// What was reserved (less than the worst case only for a partial reservation).
    pub fn reserved(&self) -> NanoUsd {
        NanoUsd(self.amount)
    }

    /// Whether only part of the worst case was covered (the last request of a budget).
    pub fn partial(&self) -> bool {
        self.partial
    }

    /// Replaces the reservation with the actual cost, at `now_ms` (Unix ms).
    pub fn settle(&self, actual: NanoUsd, now_ms: i64) {
        self.end(actual.0.max(0), Some(now_ms));
    }

    fn end(&self, actual: i64, now_ms: Option<i64>) {
        if !self.done.swap(true, Ordering::AcqRel) {
            let mut a = self.entry.account();
            a.reserved = a.reserved.saturating_sub(self.amount);
            a.used = a.used.saturating_add(actual);
            if self.partial {
                a.partial_in_flight = false;
            }
            // A lease in use is not idle, however long its requests take.
            if let Some(now) = now_ms {
                a.last_active_ms = a.last_active_ms.max(now);
            }
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.end(0, None);
    }
}

/// Why a reservation was refused.
#[derive(Debug)]
pub enum Refusal {
    /// Nothing is left of the budget for this request.
    Exhausted,
    /// The store could not be reached or stayed contended: hard budgets fail closed.
    Unavailable(LeaseError),
}

/// What a reservation is for.
pub struct Slot<'a> {
    pub scope: &'a str,
    pub window: &'a str,
    pub max: NanoUsd,
    pub seen_spent: NanoUsd,
}

/// Every lease this gateway holds.
pub struct Leases {
    store: Arc<dyn LeaseStore>,
    /// By `scope|window`.
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    replicas: u32,
    idle_ms: i64,
}

impl Leases {
    pub fn new(store: Arc<dyn LeaseStore>, replicas: u32, idle: Duration) -> Leases {
        Leases {
            store,
            entries: Mutex::new(HashMap::new()),
            replicas: replicas.max(1),
            idle_ms: i64::try_from(idle.as_millis()).unwrap_or(i64::MAX),
        }
    }

    fn entry(&self, scope: &str, window: &str, now_ms: i64) -> Arc<Entry> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = super::with_window_key(scope, window, |key| entries.get(key).cloned()) {
            return e;
        }
        entries
            .entry(format!("{scope}|{window}"))
            .or_insert_with(|| {
                Arc::new(Entry {
                    scope: scope.to_owned(),
                    window: window.to_owned(),
                    ends_ms: tollgate_schemas::tenancy::window_end(window).map_or(i64::MAX, |t| t.timestamp_millis()),
                    account: Mutex::new(Account { last_active_ms: now_ms, ..Account::default() }),
                    refill: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// Reserves `worst` (the request's worst-case cost) against `slot`'s lease, asking the store
    /// for more when the lease does not cover it.
    pub async fn reserve(&self, slot: &Slot<'_>, worst: NanoUsd, now_ms: i64) -> Result<Hold, Refusal> {
        let worst = worst.0.max(0);
        // An entry handed back meanwhile is replaced by a fresh one: at most twice.
        for _ in 0..3 {
            let entry = self.entry(slot.scope, slot.window, now_ms);
            match self.reserve_on(&entry, slot, worst, now_ms).await {
                Ok(Some((amount, partial))) => {
                    return Ok(Hold { entry, amount, partial, done: AtomicBool::new(false) })
                }
                Ok(None) => continue,
                Err(r) => return Err(r),
            }
        }
        Err(Refusal::Unavailable(LeaseError::Contended(slot.scope.to_owned())))
    }

    /// `Ok(None)`: the entry was closed; take a fresh one.
    async fn reserve_on(
        &self,
        entry: &Entry,
        slot: &Slot<'_>,
        worst: i64,
        now_ms: i64,
    ) -> Result<Option<(i64, bool)>, Refusal> {
        // A budget lowered since the last grant: what this gateway holds was granted under the
        // old one, so the store decides first.
        let lowered = |a: &Account| a.granted > 0 && slot.max.0 < a.max;
        {
            let mut a = entry.account();
            if a.closed {
                return Ok(None);
            }
            if !lowered(&a) {
                if let Some(taken) = a.try_reserve(worst, false, now_ms) {
                    return Ok(Some(taken));
                }
                if now_ms < a.exhausted_until_ms && slot.max.0 <= a.exhausted_max {
                    return a.try_reserve(worst, true, now_ms).map(Some).ok_or(Refusal::Exhausted);
                }
            }
        }
        let _one_grant_at_a_time = entry.refill.lock().await;
        let (need, want) = {
            let mut a = entry.account();
            if a.closed {
                return Ok(None);
            }
            // Another request may have refilled the lease while this one waited.
            if !lowered(&a) {
                if let Some(taken) = a.try_reserve(worst, false, now_ms) {
                    return Ok(Some(taken));
                }
            }
            let need = worst.saturating_sub(a.available().min(worst));
            (need, a.want(need, worst, now_ms))
        };
        let request = GrantRequest {
            scope: slot.scope,
            window: slot.window,
            max: slot.max,
            seen_spent: slot.seen_spent,
            need: NanoUsd(need),
            want: NanoUsd(want),
            share: 4 * i64::from(self.replicas),
            ttl_secs: (entry.ends_ms != i64::MAX).then(|| ttl_until(entry.ends_ms / 1000, now_ms / 1000)),
        };
        let granted = match tokio::time::timeout(GRANT_TIMEOUT, self.store.grant(request)).await {
            Ok(result) => result
                .inspect_err(|_| counter!("tollgate_budget_lease_failures_total", "reason" => "store").increment(1))
                .map_err(Refusal::Unavailable)?,
            Err(_) => {
                counter!("tollgate_budget_lease_failures_total", "reason" => "timeout").increment(1);
                return Err(Refusal::Unavailable(LeaseError::Store(format!(
                    "no answer within {} ms",
                    GRANT_TIMEOUT.as_millis()
                ))));
            }
        };
        let mut a = entry.account();
        match granted {
            Some(amount) => {
                counter!("tollgate_budget_lease_grants_total").increment(1);
                a.granted = a.granted.saturating_add(amount.0);
                a.last_grant = amount.0;
                a.last_grant_ms = now_ms;
                a.max = slot.max.0;
                a.exhausted_until_ms = 0;
            }
            None => {
                counter!("tollgate_budget_lease_failures_total", "reason" => "exhausted").increment(1);
                a.exhausted_until_ms = now_ms.saturating_add(EXHAUSTED_FOR_MS);
                a.exhausted_max = slot.max.0;
                if lowered(&a) {
                    // Under the lowered budget nothing is left: what this gateway still holds
                    // may not be spent either.
                    return Err(Refusal::Exhausted);
                }
            }
        }
        // Full if it fits now; otherwise whatever is left (the last request of the budget).
        match a.try_reserve(worst, true, now_ms) {
            Some(taken) => Ok(Some(taken)),
            None if worst == 0 => Ok(Some((0, false))),
            None => Err(Refusal::Exhausted),
        }
    }

    /// Hands back the unspent part of leases idle for longer than the idle time (no request in
    /// flight), and forgets leases of windows that have ended. Returns how many were handed back.
    pub async fn sweep(&self, now_ms: i64) -> usize {
        self.hand_back(now_ms, self.idle_ms).await
    }

    /// Hands back every lease with nothing in flight (at shutdown).
    pub async fn give_back_all(&self, now_ms: i64) -> usize {
        self.hand_back(now_ms, 0).await
    }

    async fn hand_back(&self, now_ms: i64, idle_ms: i64) -> usize {
        let closed: Vec<(Arc<Entry>, i64)> = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            entries.retain(|_, e| {
                // A grant on its way: leave the entry alone until it has landed.
                let Ok(_no_grant_in_flight) = e.refill.try_lock() else { return true };
                let mut a = e.account();
                let ended = e.ends_ms <= now_ms;
                let idle = now_ms.saturating_sub(a.last_active_ms) >= idle_ms;
                if a.reserved != 0 || !(ended || idle) {
                    return true;
                }
                a.closed = true;
                let unused = a.granted.saturating_sub(a.used);
                a.granted = a.used;
                if !ended && unused != 0 {
                    out.push((e.clone(), unused));
                }
                false
            });
            out
        };
        let n = closed.len();
        for (e, unused) in closed {
            match self.store.give_back(&e.scope, &e.window, NanoUsd(unused)).await {
                Ok(()) => counter!("tollgate_budget_lease_returns_total").increment(1),
                // Not handed back: the slice stays unused until the window ends (never overspent).
                Err(_) => tracing::warn!("could not hand back an idle budget lease"),
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(max: i64, seen: i64, need: i64, want: i64, share: i64) -> GrantRequest<'static> {
        GrantRequest {
            scope: "key/k",
            window: "all",
            max: NanoUsd(max),
            seen_spent: NanoUsd(seen),
            need: NanoUsd(need),
            want: NanoUsd(want),
            share,
            ttl_secs: None,
        }
    }

    proptest! {
        #[test]
        fn a_grant_never_takes_the_total_past_the_budget(
            granted in 0i64..1_000_000, seen in 0i64..1_000_000, max in 0i64..1_000_000,
            need in 0i64..100_000, want in 0i64..1_000_000, share in 1i64..16,
        ) {
            let req = request(max, seen, need, want, share);
            // The larger of the stored total and the spend seen is committed.
            for (stored, base) in [(Some(NanoUsd(granted)), granted.max(seen)), (None, seen)] {
            match decide(stored, &req) {
                None => prop_assert!(base >= max),
                Some((amount, total)) => {
                    let left = max - base;
                    prop_assert!(amount.0 > 0 && amount.0 <= left);
                    prop_assert!(total.0 <= max);
                    prop_assert_eq!(total.0, base + amount.0);
                    // What the request needs, whenever it is there.
                    prop_assert!(amount.0 >= need.min(left));
                }
            }
            }
        }
    }

    fn slot(max: i64) -> Slot<'static> {
        Slot { scope: "key/k", window: "all", max: NanoUsd(max), seen_spent: NanoUsd::ZERO }
    }

    #[tokio::test]
    async fn the_last_request_gets_what_is_left_and_then_nothing_is() {
        let leases = Leases::new(Arc::new(LocalLeases::default()), 1, Duration::from_secs(5));
        let mut served = 0;
        let mut spent = 0;
        while let Ok(hold) = leases.reserve(&slot(100), NanoUsd(30), 0).await {
            served += 1;
            hold.settle(NanoUsd(30), 0);
            spent += 30;
        }
        // 30 + 30 + 30 fit in full; the fourth request got the last 10 and cost 30.
        assert_eq!((served, spent), (4, 120));
        assert!(matches!(leases.reserve(&slot(100), NanoUsd(1), 0).await, Err(Refusal::Exhausted)));
    }

    #[tokio::test]
    async fn a_dropped_hold_gives_its_reservation_back() {
        let leases = Leases::new(Arc::new(LocalLeases::default()), 1, Duration::from_secs(5));
        let first = leases.reserve(&slot(100), NanoUsd(60), 0).await.unwrap();
        assert_eq!(first.reserved(), NanoUsd(60));
        // Only 40 left while the first is in flight: a partial reservation.
        let second = leases.reserve(&slot(100), NanoUsd(60), 0).await.unwrap();
        assert_eq!(second.reserved(), NanoUsd(40));
        drop(second);
        drop(first);
        let again = leases.reserve(&slot(100), NanoUsd(100), 0).await.unwrap();
        assert_eq!(again.reserved(), NanoUsd(100));
    }

    #[tokio::test]
    async fn idle_leases_go_back_to_the_store() {
        let store = Arc::new(LocalLeases::default());
        let a = Leases::new(store.clone(), 2, Duration::from_millis(1_000));
        let b = Leases::new(store.clone(), 2, Duration::from_millis(1_000));
        a.reserve(&slot(1_000), NanoUsd(10), 0).await.unwrap().settle(NanoUsd(7), 0);
        // `a` holds a slice; not idle yet, so nothing goes back.
        assert_eq!(a.sweep(500).await, 0);
        assert_eq!(a.sweep(1_000).await, 1);
        let granted = store.granted.lock().unwrap()[&("key/k".to_owned(), "all".to_owned())];
        assert_eq!(granted, 7, "only what was spent stays granted");
        // All that is left can now go to `b`.
        let hold = b.reserve(&slot(1_000), NanoUsd(993), 2_000).await.unwrap();
        assert_eq!(hold.reserved(), NanoUsd(993));
    }

    /// Counts the grants a store makes.
    #[derive(Default)]
    struct Counting {
        inner: LocalLeases,
        grants: std::sync::atomic::AtomicUsize,
    }

    impl LeaseStore for Counting {
        fn grant<'a>(&'a self, req: GrantRequest<'a>) -> BoxFuture<'a, Result<Option<NanoUsd>, LeaseError>> {
            self.grants.fetch_add(1, Ordering::SeqCst);
            self.inner.grant(req)
        }
        fn give_back<'a>(&'a self, s: &'a str, w: &'a str, a: NanoUsd) -> BoxFuture<'a, Result<(), LeaseError>> {
            self.inner.give_back(s, w, a)
        }
    }

    #[tokio::test]
    async fn spend_seen_beyond_the_leases_leaves_less_to_grant() {
        let store = Arc::new(LocalLeases::default());
        let a = Leases::new(store.clone(), 1, Duration::from_secs(5));
        let b = Leases::new(store.clone(), 1, Duration::from_secs(5));
        // `a` takes a slice: four worst cases, 400, capped at a quarter of the budget: 250.
        let first = a.reserve(&slot(1_000), NanoUsd(100), 0).await.unwrap();
        assert_eq!(first.entry.account().granted, 250);
        // `b` has seen 600 spent — more than all leases together, so some of it was made
        // outside them — and gets only what that leaves.
        let seen = Slot { seen_spent: NanoUsd(600), ..slot(1_000) };
        let mut b_reserved = 0;
        while let Ok(h) = b.reserve(&seen, NanoUsd(100), 0).await {
            b_reserved += h.reserved().0;
            h.settle(h.reserved(), 0);
        }
        assert_eq!(b_reserved, 400);
        // Spend seen below what was granted changes nothing: the stored total counts.
        let low = Slot { seen_spent: NanoUsd(10), ..slot(1_000) };
        assert!(matches!(b.reserve(&low, NanoUsd(100), 0).await, Err(Refusal::Exhausted)));
    }

    #[tokio::test]
    async fn a_lowered_budget_stops_spending_of_slices_granted_under_the_old_one() {
        let leases = Leases::new(Arc::new(LocalLeases::default()), 1, Duration::from_secs(5));
        // Four worst cases asked, a quarter of the budget granted: 250.
        leases.reserve(&slot(1_000), NanoUsd(100), 0).await.unwrap().settle(NanoUsd(10), 0);
        // 240 unspent in the lease; the budget drops to 100, less than was granted.
        assert!(matches!(leases.reserve(&slot(100), NanoUsd(10), 1).await, Err(Refusal::Exhausted)));
        // Raised again: served from the lease.
        assert!(leases.reserve(&slot(1_000), NanoUsd(10), 2).await.is_ok());
    }

    #[tokio::test]
    async fn long_requests_keep_their_lease() {
        let store = Arc::new(Counting::default());
        let leases = Leases::new(store.clone(), 1, Duration::from_secs(5));
        let mut t = 0;
        for _ in 0..5 {
            let hold = leases.reserve(&slot(1_000_000), NanoUsd(10), t).await.unwrap();
            t += 10_000; // each request takes ten seconds
            hold.settle(NanoUsd(1), t);
            leases.sweep(t).await;
        }
        assert_eq!(store.grants.load(Ordering::SeqCst), 1, "one slice served all five");
        // Idle for longer than the idle time: handed back.
        assert_eq!(leases.sweep(t + 5_000).await, 1);
    }

    #[tokio::test]
    async fn an_exhausted_store_is_not_asked_again_at_once() {
        let store = Arc::new(Counting::default());
        let leases = Leases::new(store.clone(), 1, Duration::from_secs(5));
        leases.reserve(&slot(40), NanoUsd(40), 0).await.unwrap().settle(NanoUsd(40), 0);
        for t in 0..10 {
            assert!(matches!(leases.reserve(&slot(40), NanoUsd(40), t).await, Err(Refusal::Exhausted)));
        }
        assert_eq!(store.grants.load(Ordering::SeqCst), 2, "one grant, then one refusal remembered");
        let _ = leases.reserve(&slot(40), NanoUsd(40), EXHAUSTED_FOR_MS + 1).await;
        assert_eq!(store.grants.load(Ordering::SeqCst), 3, "asked again after {EXHAUSTED_FOR_MS} ms");
        // A raised budget is asked for at once.
        assert!(leases.reserve(&slot(80), NanoUsd(40), EXHAUSTED_FOR_MS + 2).await.is_ok());
        assert_eq!(store.grants.load(Ordering::SeqCst), 4);
    }

    /// Several gateways sharing one store, many requests each, each costing anything up to its
    /// worst case, leases handed back now and then: the total spent passes the budget by no
    /// more than what requests cost beyond their reservation (only partially covered requests
    /// can), and by less than one worst case per gateway.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn gateways_sharing_a_store_do_not_overspend() {
        use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
        let store = Arc::new(LocalLeases::default());
        let (max, worst) = (1_000_000i64, 12_000i64);
        let spent = Arc::new(AtomicI64::new(0));
        let excess = Arc::new(AtomicI64::new(0));
        let mut tasks = Vec::new();
        for g in 0..3 {
            let leases = Arc::new(Leases::new(store.clone(), 3, Duration::from_millis(50)));
            for t in 0..16 {
                let (leases, spent, excess) = (leases.clone(), spent.clone(), excess.clone());
                tasks.push(tokio::spawn(async move {
                    let mut n: i64 = g * 31 + t * 7;
                    let mut clock = 0;
                    loop {
                        clock += 1;
                        let Ok(hold) = leases.reserve(&slot(max), NanoUsd(worst), clock).await else { break };
                        n = (n * 1_103_515_245 + 12_345) % 2_147_483_648;
                        // Requests overlap: each stays in flight for a while.
                        for _ in 0..n % 7 {
                            tokio::task::yield_now().await;
                        }
                        // The worst for the budget: a partially covered request costs its
                        // full worst case.
                        let cost = if hold.partial() { worst } else { n % (worst + 1) };
                        spent.fetch_add(cost, SeqCst);
                        excess.fetch_add((cost - hold.reserved().0).max(0), SeqCst);
                        hold.settle(NanoUsd(cost), clock);
                        if clock % 17 == 0 {
                            leases.sweep(clock + 1_000).await;
                        }
                    }
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (spent, excess) = (spent.load(SeqCst), excess.load(SeqCst));
        assert!(spent <= max + excess, "spent {spent} of {max}, excess over reservations {excess}");
        // One partially covered request per gateway at a time, and the excess of each is
        // recorded with the store when its lease goes back.
        assert!(spent <= max + 3 * worst, "spent {spent} of {max}, excess over reservations {excess}");
        assert!(spent > max * 9 / 10, "the budget was used: {spent}");
    }
}
