//! Requests-per-minute, tokens-per-minute and parallel-request limits, enforced in memory.
//!
//! Limits are shared between gateway replicas by division: with `gateway.replicas: N`, each
//! gateway admits `ceil(limit / N)` per minute (and in parallel). No coordination is needed on
//! the request path; the cost is that a client whose traffic is unevenly spread over the
//! replicas gets less than its limit, and the total can exceed the limit by at most N − 1
//! (rounding). docs/limits.md has the figures measured with two gateways.
//!
//! Windows are fixed UTC minutes. Tokens are counted when a request finishes (its actual
//! usage), so a burst of requests admitted in the same instant can pass a tpm limit by what
//! they use; the next request is refused.

use crate::error::{GatewayError, RateLimit, Scope};
use actix_web::http::header::{HeaderName, HeaderValue};
use moka::sync::Cache;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Minute {
    minute: i64,
    requests: u64,
    tokens: u64,
}

impl Minute {
    fn roll(&mut self, minute: i64) {
        if self.minute != minute {
            *self = Minute { minute, requests: 0, tokens: 0 };
        }
    }
}

/// The limits of one scope (a key, a team, a key's model, ...).
#[derive(Clone, Debug)]
pub struct LimitSpec {
    pub scope: Scope,
    /// Unique per scope, e.g. `key/<hash>` or `key/<hash>/model/gpt-4o`.
    pub id: String,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub parallel: Option<u32>,
}

pub struct RateLimiter {
    replicas: u64,
    minutes: Cache<String, Arc<Mutex<Minute>>>,
    in_flight: Cache<String, Arc<AtomicU64>>,
}

/// What a request holds from admission until it ends: its parallel slots, and where its
/// tokens are counted. Dropping it frees the slots.
#[derive(Default)]
pub struct Reservation {
    minutes: Vec<(Arc<Mutex<Minute>>, i64)>,
    slots: Vec<Arc<AtomicU64>>,
    /// `x-ratelimit-*` headers for the response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reservation {
    /// Takes over what `other` holds (its slots, its minutes); its headers are kept only where
    /// this one has none (the narrowest limited scope describes the response).
    pub fn absorb(&mut self, mut other: Reservation) {
        self.minutes.append(&mut other.minutes);
        self.slots.append(&mut other.slots);
        if self.headers.is_empty() {
            self.headers = std::mem::take(&mut other.headers);
        }
    }

    /// Counts the request's tokens in the minute it was admitted in.
    pub fn record_tokens(&self, tokens: u64) {
        for (window, minute) in &self.minutes {
            if let Ok(mut w) = window.lock() {
                if w.minute == *minute {
                    w.tokens = w.tokens.saturating_add(tokens);
                }
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        for slot in &self.slots {
            slot.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn share(limit: u64, replicas: u64) -> u64 {
    limit.div_ceil(replicas).max(1)
}

const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

/// `60s`, `59s`, ...: when the minute's window resets, as OpenAI writes it.
fn reset_value(secs: u64) -> HeaderValue {
    let mut text = secs.to_string();
    text.push('s');
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("60s"))
}

impl RateLimiter {
    pub fn new(replicas: u32) -> RateLimiter {
        RateLimiter {
            replicas: u64::from(replicas.max(1)),
            minutes: Cache::builder().max_capacity(1_000_000).time_to_idle(Duration::from_secs(180)).build(),
            in_flight: Cache::builder().max_capacity(1_000_000).time_to_idle(Duration::from_secs(3_600)).build(),
        }
    }

    /// Admits a request against every spec, or refuses it with the first limit it would pass.
    /// `now_ms` is the wall clock in milliseconds.
    pub fn admit(&self, specs: &[LimitSpec], now_ms: i64) -> Result<Reservation, GatewayError> {
        let minute = now_ms.div_euclid(60_000);
        let reset_secs = u64::try_from(60 - now_ms.rem_euclid(60_000) / 1_000).unwrap_or(60);
        let mut reservation = Reservation::default();
        let mut locked = Vec::new();
        for spec in specs.iter().filter(|s| s.rpm.is_some() || s.tpm.is_some()) {
            let window = self.minutes.get_with_by_ref(&spec.id, || Arc::new(Mutex::new(Minute::default())));
            locked.push((spec, window));
        }
        // Check everything before counting anything, so a refused request counts nowhere.
        for (spec, window) in &locked {
            let Ok(mut w) = window.lock() else { continue };
            w.roll(minute);
            if let Some(rpm) = spec.rpm.map(|l| share(l, self.replicas)) {
                if w.requests >= rpm {
                    return Err(GatewayError::RateLimited {
                        scope: spec.scope,
                        limit: RateLimit::RequestsPerMinute,
                        allowed: rpm,
                        retry_after_secs: reset_secs,
                    });
                }
            }
            if let Some(tpm) = spec.tpm.map(|l| share(l, self.replicas)) {
                if w.tokens >= tpm {
                    return Err(GatewayError::RateLimited {
                        scope: spec.scope,
                        limit: RateLimit::TokensPerMinute,
                        allowed: tpm,
                        retry_after_secs: reset_secs,
                    });
                }
            }
        }
        for spec in specs {
            let Some(max) = spec.parallel.map(|l| share(u64::from(l), self.replicas)) else { continue };
            let slot = self.in_flight.get_with_by_ref(&spec.id, || Arc::new(AtomicU64::new(0)));
            if slot.fetch_add(1, Ordering::AcqRel) >= max {
                slot.fetch_sub(1, Ordering::AcqRel);
                // Slots taken so far are freed when `reservation` drops.
                return Err(GatewayError::RateLimited {
                    scope: spec.scope,
                    limit: RateLimit::ParallelRequests,
                    allowed: max,
                    retry_after_secs: 1,
                });
            }
            reservation.slots.push(slot);
        }
        let (mut requests_done, mut tokens_done) = (false, false);
        let mut reset = None;
        for (spec, window) in locked {
            let Ok(mut w) = window.lock() else { continue };
            w.roll(minute);
            w.requests += 1;
            // The headers describe the first (narrowest: the key comes first) limited scope.
            if let (Some(rpm), false) = (spec.rpm.map(|l| share(l, self.replicas)), requests_done) {
                reservation.headers.extend([
                    (LIMIT_REQUESTS, HeaderValue::from(rpm)),
                    (REMAINING_REQUESTS, HeaderValue::from(rpm.saturating_sub(w.requests))),
                    (RESET_REQUESTS, reset.get_or_insert_with(|| reset_value(reset_secs)).clone()),
                ]);
                requests_done = true;
            }
            if let (Some(tpm), false) = (spec.tpm.map(|l| share(l, self.replicas)), tokens_done) {
                reservation.headers.extend([
                    (LIMIT_TOKENS, HeaderValue::from(tpm)),
                    (REMAINING_TOKENS, HeaderValue::from(tpm.saturating_sub(w.tokens))),
                    (RESET_TOKENS, reset.get_or_insert_with(|| reset_value(reset_secs)).clone()),
                ]);
                tokens_done = true;
            }
            drop(w);
            reservation.minutes.push((window, minute));
        }
        Ok(reservation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rpm: Option<u64>, tpm: Option<u64>, parallel: Option<u32>) -> LimitSpec {
        LimitSpec { scope: Scope::Key, id: "key/k".into(), rpm, tpm, parallel }
    }

    #[test]
    fn rpm_refuses_the_request_after_the_limit_until_the_minute_ends() {
        let limiter = RateLimiter::new(1);
        let specs = [spec(Some(3), None, None)];
        let t = 1_800_000_000_000i64; // a minute boundary
        for _ in 0..3 {
            assert!(limiter.admit(&specs, t + 10).is_ok());
        }
        let err = limiter.admit(&specs, t + 20).err().unwrap();
        assert!(matches!(err, GatewayError::RateLimited { limit: RateLimit::RequestsPerMinute, allowed: 3, .. }));
        assert!(limiter.admit(&specs, t + 60_000).is_ok(), "a new minute");
    }

    #[test]
    fn tpm_counts_tokens_when_requests_finish() {
        let limiter = RateLimiter::new(1);
        let specs = [spec(None, Some(100), None)];
        let t = 1_800_000_000_000i64;
        let r = limiter.admit(&specs, t).unwrap();
        r.record_tokens(100);
        assert!(matches!(
            limiter.admit(&specs, t + 1).err(),
            Some(GatewayError::RateLimited { limit: RateLimit::TokensPerMinute, .. })
        ));
    }

    #[test]
    fn parallel_slots_are_freed_when_requests_end() {
        let limiter = RateLimiter::new(1);
        let specs = [spec(None, None, Some(2))];
        let a = limiter.admit(&specs, 0).unwrap();
        let _b = limiter.admit(&specs, 0).unwrap();
        assert!(limiter.admit(&specs, 0).is_err());
        drop(a);
        assert!(limiter.admit(&specs, 0).is_ok());
    }

    #[test]
    fn replicas_divide_limits_rounding_up() {
        let limiter = RateLimiter::new(2);
        let specs = [spec(Some(5), None, None)];
        let t = 1_800_000_000_000i64;
        let admitted = (0..10).filter(|_| limiter.admit(&specs, t).is_ok()).count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn headers_describe_the_first_limited_scope() {
        let limiter = RateLimiter::new(1);
        let r = limiter.admit(&[spec(Some(10), Some(1000), None)], 1_800_000_000_000).unwrap();
        let get =
            |n: &str| r.headers.iter().find(|(k, _)| k.as_str() == n).map(|(_, v)| v.to_str().unwrap().to_owned());
        assert_eq!(get("x-ratelimit-limit-requests").as_deref(), Some("10"));
        assert_eq!(get("x-ratelimit-remaining-requests").as_deref(), Some("9"));
        assert_eq!(get("x-ratelimit-reset-requests").as_deref(), Some("60s"));
        assert_eq!(get("x-ratelimit-remaining-tokens").as_deref(), Some("1000"));
    }
}
