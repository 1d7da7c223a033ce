//! Sign-in attempts, counted per client address and in total, in fixed one-minute windows: a
//! key guessed through the console is slowed to a handful of tries a minute.

use moka::sync::Cache;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WINDOW_SECS: u64 = 60;

pub struct SignInThrottle {
    per_ip: Cache<IpAddr, Arc<AtomicU32>>,
    per_ip_limit: u32,
    total: AtomicU64,
    total_limit: u32,
}

/// The minute `now_secs` falls in, and the attempts in it, packed in one word.
fn pack(minute: u64, count: u32) -> u64 {
    (minute << 32) | u64::from(count)
}

impl SignInThrottle {
    pub fn new(per_ip_limit: u32, total_limit: u32) -> SignInThrottle {
        SignInThrottle {
            // An address's count lives one window after its first attempt; at most 100,000
            // addresses are tracked (beyond that the total limit still holds).
            per_ip: Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(WINDOW_SECS)).build(),
            per_ip_limit,
            total: AtomicU64::new(0),
            total_limit,
        }
    }

    /// Counts an attempt from `ip` at `now_secs` (Unix time): `Err(retry_after_secs)` when the
    /// address or all addresses together are over their limit.
    pub fn attempt(&self, ip: Option<IpAddr>, now_secs: u64) -> Result<(), u64> {
        let retry = WINDOW_SECS - now_secs % WINDOW_SECS;
        let minute = now_secs / WINDOW_SECS;
        let mut current = self.total.load(Ordering::Relaxed);
        loop {
            let count = if current >> 32 == minute { (current & 0xffff_ffff) as u32 } else { 0 };
            if count >= self.total_limit {
                return Err(retry);
            }
            match self.total.compare_exchange(current, pack(minute, count + 1), Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        if let Some(ip) = ip {
            let count = self.per_ip.get_with(ip, || Arc::new(AtomicU32::new(0)));
            if count.fetch_add(1, Ordering::AcqRel) >= self.per_ip_limit {
                return Err(WINDOW_SECS);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_and_all_together_are_bounded() {
        let t = SignInThrottle::new(3, 5);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let now = 6_000;
        for _ in 0..3 {
            assert!(t.attempt(Some(a), now).is_ok());
        }
        assert!(t.attempt(Some(a), now).is_err(), "a fourth try from one address");
        assert!(t.attempt(Some(b), now).is_ok());
        assert_eq!(t.attempt(Some(b), now + 30), Err(30), "five tries in all this minute");
        assert!(t.attempt(Some(b), now + 60).is_ok(), "a new minute");
    }
}
