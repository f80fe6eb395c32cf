//! Failed-authentication limiting per source IP with growing back-off: the one limiter used by
//! the SIP registrar (digest REGISTER) and the gateway's RTSP/HTTP authentication.
//!
//! Keyed by IP address, never by IP:port (an attacker picks a new source port per try). IPv6
//! sources are keyed by their /64 prefix (one host usually owns a whole /64). Each source gets
//! [`LimiterConfig::free_failures`] failures; every failure after that blocks it for
//! `base_block_ms * 2^(n-1)` up to `max_block_ms`. A success clears the source. At most
//! `max_tracked` sources are remembered: when full, expired entries are dropped first, then the
//! entry whose last failure is oldest. Time is passed in (Unix or monotonic milliseconds).

use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimiterConfig {
    /// Failures allowed before the first block.
    pub free_failures: u32,
    /// First block duration; doubles with every further failure.
    pub base_block_ms: u64,
    pub max_block_ms: u64,
    /// A source with no failure for this long is forgotten (its count starts again).
    pub forget_after_ms: u64,
    pub max_tracked: usize,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            free_failures: 5,
            base_block_ms: 1_000,
            max_block_ms: 15 * 60_000,
            forget_after_ms: 60 * 60_000,
            max_tracked: 16_384,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure_ms: u64,
    blocked_until_ms: u64,
}

/// What the limiter says about a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Blocked for this many more milliseconds.
    Blocked(u64),
}

#[derive(Debug, Clone)]
pub struct FailureLimiter {
    config: LimiterConfig,
    entries: HashMap<IpAddr, Entry>,
    /// Requests refused because their source was blocked.
    pub refused: u64,
}

/// The key a source is tracked under: the address itself, or an IPv6 address's /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl FailureLimiter {
    pub fn new(config: LimiterConfig) -> Self {
        FailureLimiter {
            config,
            entries: HashMap::new(),
            refused: 0,
        }
    }

    pub fn config(&self) -> &LimiterConfig {
        &self.config
    }

    /// Whether `ip` may try now. Counts a refusal when it may not.
    pub fn check(&mut self, ip: IpAddr, now_ms: u64) -> Verdict {
        let v = self.peek(ip, now_ms);
        if v != Verdict::Allowed {
            self.refused += 1;
        }
        v
    }

    /// Like [`FailureLimiter::check`] without counting.
    pub fn peek(&self, ip: IpAddr, now_ms: u64) -> Verdict {
        match self.entries.get(&source_key(ip)) {
            Some(e) if e.blocked_until_ms > now_ms => Verdict::Blocked(e.blocked_until_ms - now_ms),
            _ => Verdict::Allowed,
        }
    }

    /// Records a failed authentication from `ip`; returns the verdict for its next try.
    pub fn record_failure(&mut self, ip: IpAddr, now_ms: u64) -> Verdict {
        let key = source_key(ip);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.config.max_tracked {
            self.make_room(now_ms);
        }
        let forget = self.config.forget_after_ms;
        let e = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            last_failure_ms: now_ms,
            blocked_until_ms: 0,
        });
        if now_ms.saturating_sub(e.last_failure_ms) >= forget {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure_ms = now_ms;
        if e.failures > self.config.free_failures {
            let n = e.failures - self.config.free_failures - 1;
            let block = self
                .config
                .base_block_ms
                .saturating_mul(1u64 << n.min(40))
                .min(self.config.max_block_ms);
            e.blocked_until_ms = now_ms.saturating_add(block);
        }
        if e.blocked_until_ms > now_ms {
            Verdict::Blocked(e.blocked_until_ms - now_ms)
        } else {
            Verdict::Allowed
        }
    }

    /// A successful authentication clears the source's record.
    pub fn record_success(&mut self, ip: IpAddr) {
        self.entries.remove(&source_key(ip));
    }

    /// Forgets sources that are neither blocked nor recently failing.
    pub fn prune(&mut self, now_ms: u64) {
        let forget = self.config.forget_after_ms;
        self.entries.retain(|_, e| {
            e.blocked_until_ms > now_ms || now_ms.saturating_sub(e.last_failure_ms) < forget
        });
    }

    /// Sources tracked now (bounded by `max_tracked`).
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }

    fn make_room(&mut self, now_ms: u64) {
        self.prune(now_ms);
        while self.entries.len() >= self.config.max_tracked.max(1) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_failure_ms)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => {
                    self.entries.remove(&k);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_after_free_failures_with_growing_backoff() {
        let mut l = FailureLimiter::new(LimiterConfig {
            free_failures: 3,
            base_block_ms: 1000,
            max_block_ms: 5000,
            ..LimiterConfig::default()
        });
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(l.record_failure(a, 0), Verdict::Allowed);
        }
        assert_eq!(l.record_failure(a, 0), Verdict::Blocked(1000));
        assert_eq!(l.check(a, 500), Verdict::Blocked(500));
        assert_eq!(l.check(a, 1000), Verdict::Allowed);
        assert_eq!(l.record_failure(a, 1000), Verdict::Blocked(2000));
        assert_eq!(l.record_failure(a, 3000), Verdict::Blocked(4000));
        assert_eq!(l.record_failure(a, 7000), Verdict::Blocked(5000));
        assert_eq!(l.refused, 1);
        // Another address is not affected; a success clears.
        assert_eq!(l.check(ip("192.0.2.2"), 7000), Verdict::Allowed);
        l.record_success(a);
        assert_eq!(l.check(a, 7001), Verdict::Allowed);
    }

    #[test]
    fn ports_do_not_matter_and_ipv6_counts_per_64() {
        let mut l = FailureLimiter::new(LimiterConfig {
            free_failures: 1,
            ..LimiterConfig::default()
        });
        l.record_failure(ip("2001:db8:1:2::1"), 0);
        assert!(matches!(
            l.record_failure(ip("2001:db8:1:2::ffff"), 0),
            Verdict::Blocked(_)
        ));
        assert_eq!(l.check(ip("2001:db8:1:3::1"), 0), Verdict::Allowed);
        assert_eq!(
            source_key(ip("::ffff:192.0.2.9")),
            ip("192.0.2.9"),
            "v4-mapped counts as the v4 address"
        );
    }

    #[test]
    fn tracking_is_bounded() {
        let mut l = FailureLimiter::new(LimiterConfig {
            max_tracked: 100,
            ..LimiterConfig::default()
        });
        for i in 0..10_000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.record_failure(a, u64::from(i));
        }
        assert!(l.tracked() <= 100);
        // The newest are kept.
        let last = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + 9_999));
        assert!(l.entries.contains_key(&last));
        l.prune(u64::MAX / 2);
        assert_eq!(l.tracked(), 0);
    }
}
