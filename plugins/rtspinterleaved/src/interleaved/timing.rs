//! Output times: RTP timestamps → running time, for dumps replayed without arrival times;
//! arrival times kept monotonic for live input.

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

/// Upstream (arrival) times made fit for live users: every packet gets a time and times never
/// go backwards.
///
/// A source stamping arrival times (`do-timestamp`) of a non-live byte stream (tcpclientsrc)
/// already reads data in PAUSED, while the pipeline starts: its first buffers carry no time
/// (no clock yet), or the clock's absolute time instead of a running time (clock set, base
/// time not yet). Both become the element's running time now; a time before the previous
/// output is raised to it. Other input times (an application's own) are kept.
#[derive(Debug, Clone, Default)]
pub struct ArrivalTimes {
    last: Option<u64>,
    corrections: u64,
}

/// How close to the clock's time an input time must be to count as stamped without a base
/// time (the time between stamping upstream and reaching the element).
pub const STAMPED_WITHOUT_BASE_TIME: u64 = 1_000_000_000;

impl ArrivalTimes {
    /// Output time (ns) of a packet completed in an input buffer with time `input`.
    /// `running`: the element's running time now (its start time while not PLAYING);
    /// `absolute`: its clock's time now, if it has a clock.
    pub fn next(
        &mut self,
        input: Option<u64>,
        running: Option<u64>,
        absolute: Option<u64>,
    ) -> Option<u64> {
        let stamped_without_base_time = |t: u64| match (running, absolute) {
            (Some(running), Some(absolute)) => {
                t > running && t <= absolute && absolute - t <= STAMPED_WITHOUT_BASE_TIME
            }
            _ => false,
        };
        let candidate = match input {
            Some(t) if stamped_without_base_time(t) => running,
            Some(t) => Some(t),
            None => running.or(self.last),
        };
        let out = match (candidate, self.last) {
            (Some(t), Some(last)) => Some(t.max(last)),
            (t, _) => t,
        };
        if out != input {
            self.corrections += 1;
        }
        self.last = out;
        out
    }

    /// Input buffers whose time was replaced or raised.
    pub fn corrections(&self) -> u64 {
        self.corrections
    }

    /// After a flush: running time starts again.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn arrival_times_while_starting_and_backwards() {
        let clock = 3_600_000 * MS;
        let mut a = ArrivalTimes::default();
        // PAUSED (running time 0): no clock yet, then the clock without base time.
        assert_eq!(a.next(None, Some(0), None), Some(0));
        assert_eq!(a.next(Some(clock - 2 * MS), Some(0), Some(clock)), Some(0));
        // PLAYING: real arrival times pass untouched.
        let base = clock + 5 * MS;
        assert_eq!(
            a.next(Some(30 * MS), Some(31 * MS), Some(base + 31 * MS)),
            Some(30 * MS)
        );
        // The source got its base time after this element did.
        assert_eq!(
            a.next(Some(base + 39 * MS), Some(40 * MS), Some(base + 40 * MS)),
            Some(40 * MS)
        );
        // A later buffer stamped earlier keeps its predecessor's time.
        assert_eq!(
            a.next(Some(35 * MS), Some(50 * MS), Some(base + 50 * MS)),
            Some(40 * MS)
        );
        assert_eq!(
            a.next(None, Some(80 * MS), Some(base + 80 * MS)),
            Some(80 * MS)
        );
        assert_eq!(a.corrections(), 5);
        // An application's own times, even ahead of the running time, are kept.
        let mut own = ArrivalTimes::default();
        assert_eq!(
            own.next(Some(10_000 * MS), Some(0), Some(clock)),
            Some(10_000 * MS)
        );
        assert_eq!(own.next(None, None, None), Some(10_000 * MS));
        assert_eq!(own.next(Some(9_000 * MS), None, None), Some(10_000 * MS));
        own.reset();
        assert_eq!(own.next(Some(9_000 * MS), None, None), Some(9_000 * MS));
        assert_eq!(ArrivalTimes::default().next(None, None, None), None);
    }

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
