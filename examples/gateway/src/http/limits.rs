//! Connection admission for the HTTP servers: at most `per_ip` connections from one source
//! (an IPv6 source counts by its /64, as the failed-auth limiter does) and `total` in all.
//! Decided in the accept loop, before any byte is parsed. GStreamer-free, no I/O.

use gst_ipcam_common::sync::lock;
use gstgb28181::core::ratelimit::source_key;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Counts {
    per_source: HashMap<IpAddr, usize>,
    total: usize,
}

/// Counts open connections; [`ConnLimiter::admit`] hands out a [`ConnPermit`] that gives
/// the slot back when dropped, so the table only holds sources with open connections.
#[derive(Debug, Clone)]
pub struct ConnLimiter {
    per_ip: usize,
    total: usize,
    counts: Arc<Mutex<Counts>>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    PerIp,
    Total,
}

/// An admitted connection's slot.
#[derive(Debug)]
pub struct ConnPermit {
    key: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl ConnLimiter {
    pub fn new(per_ip: usize, total: usize) -> ConnLimiter {
        ConnLimiter {
            per_ip: per_ip.max(1),
            total: total.max(1),
            counts: Arc::default(),
        }
    }

    pub fn admit(&self, ip: IpAddr) -> Result<ConnPermit, Refused> {
        let key = source_key(ip);
        let mut c = lock(&self.counts);
        if c.total >= self.total {
            return Err(Refused::Total);
        }
        let n = c.per_source.entry(key).or_insert(0);
        if *n >= self.per_ip {
            return Err(Refused::PerIp);
        }
        *n += 1;
        c.total += 1;
        Ok(ConnPermit {
            key,
            counts: self.counts.clone(),
        })
    }

    /// Open connections in all.
    pub fn open(&self) -> usize {
        lock(&self.counts).total
    }

    /// Sources with at least one open connection.
    pub fn sources(&self) -> usize {
        lock(&self.counts).per_source.len()
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_source.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                c.per_source.remove(&self.key);
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
    fn per_source_and_total_caps() {
        let l = ConnLimiter::new(2, 3);
        let a1 = l.admit(ip("10.0.0.1")).unwrap();
        let _a2 = l.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(l.admit(ip("10.0.0.1")).unwrap_err(), Refused::PerIp);
        let _b = l.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(l.admit(ip("10.0.0.3")).unwrap_err(), Refused::Total);
        drop(a1);
        assert_eq!(l.open(), 2);
        let _a3 = l.admit(ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_slots_come_back() {
        let l = ConnLimiter::new(1, 100);
        let p = l.admit(ip("2001:db8::1")).unwrap();
        assert_eq!(l.admit(ip("2001:db8::2")).unwrap_err(), Refused::PerIp);
        assert!(l.admit(ip("2001:db8:0:1::1")).is_ok());
        drop(p);
        assert_eq!(l.sources(), 0);
        let _q = l.admit(ip("::ffff:10.0.0.9")).unwrap();
        assert_eq!(l.admit(ip("10.0.0.9")).unwrap_err(), Refused::PerIp);
    }
}
