//! RTP timestamps → running time, for dumps replayed without arrival times.

/// Extends one stream's 32-bit RTP timestamps (wrap-around, reordering) and converts them to
/// nanoseconds since the stream's first packet, shifted by the time the stream started.
#[derive(Debug, Clone)]
pub struct RtpClock {
    clock_rate: u32,
    start_ns: u64,
    base: Option<i64>,
    last: i64,
}

impl RtpClock {
    /// `start_ns`: running time of the stream's first packet (streams that appear later
    /// start at the running time reached by the others).
    pub fn new(clock_rate: u32, start_ns: u64) -> Option<Self> {
        (clock_rate > 0).then_some(RtpClock {
            clock_rate,
            start_ns,
            base: None,
            last: 0,
        })
    }

    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// Running time in ns of a packet with RTP timestamp `ts`. Timestamps before the first
    /// packet's clamp to the stream start.
    pub fn running_time(&mut self, ts: u32) -> u64 {
        let ext = match self.base {
            None => {
                self.base = Some(ts as i64);
                ts as i64
            }
            Some(_) => self.last + ts.wrapping_sub(self.last as u32) as i32 as i64,
        };
        self.last = ext;
        let base = self.base.unwrap_or(ext);
        let ticks = (ext - base).max(0) as i128;
        let ns = ticks * 1_000_000_000 / self.clock_rate as i128;
        self.start_ns
            .saturating_add(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_reorders() {
        let mut c = RtpClock::new(90000, 1_000).unwrap();
        assert_eq!(c.running_time(u32::MAX - 89_999), 1_000);
        // One second later, across the 32-bit wrap.
        assert_eq!(c.running_time(0), 1_000 + 1_000_000_000);
        assert_eq!(c.running_time(90_000), 1_000 + 2_000_000_000);
        // Older timestamps (B-frame order) keep their place; earlier than the first clamps.
        assert_eq!(c.running_time(45_000), 1_000 + 1_500_000_000);
        assert_eq!(c.running_time(u32::MAX - 200_000), 1_000);
        assert!(RtpClock::new(0, 0).is_none());
    }
}
