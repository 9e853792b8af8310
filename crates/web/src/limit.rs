//! Per-client rate limits (SPEC §7: "The public check is rate-limited").
//!
//! A token bucket per client: `per_minute` tokens, refilled evenly over a
//! minute, so a client may burst up to the limit and then goes on at the
//! steady rate. A request that finds too few tokens is refused with the
//! time after which it would succeed (the `Retry-After` of RFC 9110
//! §10.2.3 on a `429`, RFC 6585 §4).
//!
//! Clients are keyed by their IP address, IPv6 by its /64 (one host
//! usually owns a whole /64, so per-address limits would be no limit).
//! Behind a reverse proxy every client shares the proxy's address: put the
//! limit in the proxy there. The table is bounded: when it is full, the
//! buckets that have refilled completely (clients gone quiet) are dropped,
//! and if that frees nothing, the oldest half is.
//!
//! Written here rather than taken from `tower_governor`: it is a few dozen
//! lines, needs no extra crates, and the `429` must carry our JSON error
//! body and work for the pages as well as the API.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most clients tracked at once.
const MAX_CLIENTS: usize = 16_384;

/// A per-client token bucket limiter.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` units per client per minute (and a
    /// burst of as many). `0` refuses everything.
    pub fn per_minute(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `cost` units for `client` now, or says how long to wait.
    pub fn take(&self, client: IpAddr, cost: u32) -> Result<(), Duration> {
        self.take_at(client, cost, Instant::now())
    }

    /// Whether `client` could take one unit now, without taking it.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.apply(client, 1, Instant::now(), false)
    }

    /// [`RateLimiter::take`] at a given instant (for tests).
    pub fn take_at(&self, client: IpAddr, cost: u32, now: Instant) -> Result<(), Duration> {
        self.apply(client, cost, now, true)
    }

    fn apply(&self, client: IpAddr, cost: u32, now: Instant, take: bool) -> Result<(), Duration> {
        let capacity = f64::from(self.per_minute);
        let cost = f64::from(cost);
        if cost > capacity {
            // Could never succeed; tell the client to come back in a minute
            // (with fewer addresses).
            return Err(Duration::from_secs(60));
        }
        let rate = capacity / 60.0; // tokens per second
        // A poisoned lock only means another request panicked while holding
        // it; the counters are still usable.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&key(client)) {
            prune(&mut buckets, now, rate, capacity);
        }
        let bucket = buckets.entry(key(client)).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.at = now;
        if bucket.tokens >= cost {
            if take {
                bucket.tokens -= cost;
            }
            Ok(())
        } else {
            let wait = (cost - bucket.tokens) / rate;
            Err(Duration::from_secs_f64(wait.ceil().max(1.0)))
        }
    }
}

/// The client key: the address, or an IPv6 address's /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

fn prune(buckets: &mut HashMap<IpAddr, Bucket>, now: Instant, rate: f64, capacity: f64) {
    buckets.retain(|_, b| {
        b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < capacity
    });
    if buckets.len() >= MAX_CLIENTS {
        let mut ages: Vec<Instant> = buckets.values().map(|b| b.at).collect();
        ages.sort_unstable();
        if let Some(&cut) = ages.get(ages.len() / 2) {
            buckets.retain(|_, b| b.at > cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn a_burst_up_to_the_limit_then_refusal_with_a_wait() {
        let limiter = RateLimiter::per_minute(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take_at(A, 1, t0), Ok(()));
        }
        assert_eq!(limiter.take_at(A, 1, t0), Err(Duration::from_secs(20)));
        // Another client is not affected.
        assert_eq!(limiter.take_at(B, 1, t0), Ok(()));
        // One token per 20 s comes back.
        assert_eq!(limiter.take_at(A, 1, t0 + Duration::from_secs(20)), Ok(()));
    }

    #[test]
    fn a_cost_above_the_limit_is_never_granted() {
        let limiter = RateLimiter::per_minute(5);
        assert!(limiter.take(A, 6).is_err());
        assert!(limiter.take(A, 5).is_ok());
    }

    #[test]
    fn check_does_not_take() {
        let limiter = RateLimiter::per_minute(1);
        assert!(limiter.check(A).is_ok());
        assert!(limiter.check(A).is_ok());
        assert!(limiter.take(A, 1).is_ok());
        assert!(limiter.check(A).is_err());
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let limiter = RateLimiter::per_minute(1);
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let other_64: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert!(limiter.take(one, 1).is_ok());
        assert!(limiter.take(same_64, 1).is_err());
        assert!(limiter.take(other_64, 1).is_ok());
    }

    #[test]
    fn the_table_stays_bounded() {
        let limiter = RateLimiter::per_minute(10);
        let t0 = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = limiter.take_at(ip, 1, t0);
        }
        let len = limiter.buckets.lock().map(|b| b.len()).unwrap_or(0);
        assert!(len <= MAX_CLIENTS, "{len}");
    }
}
