//! Per-SSRC receive statistics of RFC 3550 appendix A (A.1 sequence validation, A.3 loss,
//! A.8 jitter), plus duplicate/reorder detection over a 128-packet window.
//!
//! Pure state machine: no GStreamer, time passed in as nanoseconds of arrival.

/// RFC 3550 A.1 constants.
pub const MAX_DROPOUT: u16 = 3000;
pub const MAX_MISORDER: u16 = 100;
pub const DEFAULT_PROBATION: u32 = 2;
const RTP_SEQ_MOD: i64 = 1 << 16;

/// What `SeqState::update` decided about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOutcome {
    /// Counted, in order (or after a gap).
    InOrder,
    /// Counted, already seen (same sequence number inside the window).
    Duplicate,
    /// Counted, arrived after a higher sequence number.
    Reordered,
    /// Source still on probation: not counted yet.
    Probation,
    /// A large jump: not counted, waiting for a second packet to confirm a restart.
    BadSeq,
    /// A large jump confirmed by the next packet: the statistics restarted.
    Restarted,
}

/// Sequence-number bookkeeping of RFC 3550 A.1 with two extensions:
/// - packets of the probation run are counted once the source is validated (so
///   `received` matches the packets on the wire, and `base_seq` is the first one);
/// - a bitmap over the last 128 sequence numbers tells duplicates from late packets.
#[derive(Debug, Clone)]
pub struct SeqState {
    max_seq: u16,
    /// Wrap count, in units of 2^16 (the RFC's `cycles`).
    cycles: i64,
    /// Extended first sequence number (may be -1 when the probation run started at 65535).
    base_seq: i64,
    bad_seq: u32,
    probation: u32,
    min_sequential: u32,
    /// Packets and octets seen during the current probation run.
    probation_packets: u64,
    probation_octets: u64,
    pub received: u64,
    pub octets: u64,
    pub duplicates: u64,
    pub reordered: u64,
    expected_prior: i64,
    received_prior: u64,
    pub fraction_lost: u8,
    /// Bit i set: extended sequence number (max - i) was received.
    window: u128,
}

impl SeqState {
    pub fn new(seq: u16, probation: u32) -> Self {
        let min_sequential = probation.max(1);
        let mut s = SeqState {
            max_seq: seq.wrapping_sub(1),
            cycles: 0,
            base_seq: seq as i64,
            bad_seq: RTP_SEQ_MOD as u32 + 1,
            probation: min_sequential,
            min_sequential,
            probation_packets: 0,
            probation_octets: 0,
            received: 0,
            octets: 0,
            duplicates: 0,
            reordered: 0,
            expected_prior: 0,
            received_prior: 0,
            fraction_lost: 0,
            window: 0,
        };
        s.init_seq(seq);
        s.max_seq = seq.wrapping_sub(1);
        s.probation = min_sequential;
        s
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = seq as i64;
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD as u32 + 1;
        self.cycles = 0;
        self.received = 0;
        self.octets = 0;
        self.duplicates = 0;
        self.reordered = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
        self.window = 1;
    }

    pub fn is_validated(&self) -> bool {
        self.probation == 0
    }

    /// RFC 3550 A.1 `update_seq`, counting `octets` of payload when the packet is counted.
    pub fn update(&mut self, seq: u16, octets: u64) -> SeqOutcome {
        let udelta = seq.wrapping_sub(self.max_seq);

        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                self.probation_packets += 1;
                self.probation_octets += octets;
                if self.probation == 0 {
                    let run = self.probation_packets;
                    let run_octets = self.probation_octets;
                    self.init_seq(seq);
                    // Count the whole validated run, starting at its first packet.
                    self.base_seq = seq as i64 - (run as i64 - 1);
                    self.received = run;
                    self.octets = run_octets;
                    self.window = if run >= 128 {
                        u128::MAX
                    } else {
                        (1u128 << run) - 1
                    };
                    return SeqOutcome::InOrder;
                }
            } else {
                self.probation = self.min_sequential - 1;
                self.max_seq = seq;
                self.probation_packets = 1;
                self.probation_octets = octets;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received = 1;
                    self.octets = octets;
                    return SeqOutcome::InOrder;
                }
            }
            return SeqOutcome::Probation;
        }

        let outcome;
        if udelta < MAX_DROPOUT {
            if udelta == 0 {
                outcome = SeqOutcome::Duplicate;
            } else {
                if seq < self.max_seq {
                    self.cycles += 1;
                }
                self.max_seq = seq;
                self.window = if udelta >= 128 {
                    0
                } else {
                    self.window << udelta
                };
                self.window |= 1;
                outcome = SeqOutcome::InOrder;
            }
        } else if udelta <= (RTP_SEQ_MOD as u32 - MAX_MISORDER as u32) as u16 {
            if seq as u32 == self.bad_seq {
                // Two sequential packets after a big jump: the source restarted.
                self.init_seq(seq);
                self.received = 1;
                self.octets = octets;
                return SeqOutcome::Restarted;
            }
            self.bad_seq = (seq as u32 + 1) & (RTP_SEQ_MOD as u32 - 1);
            return SeqOutcome::BadSeq;
        } else {
            let back = self.max_seq.wrapping_sub(seq) as u32;
            if back < 128 {
                let bit = 1u128 << back;
                if self.window & bit != 0 {
                    outcome = SeqOutcome::Duplicate;
                } else {
                    self.window |= bit;
                    outcome = SeqOutcome::Reordered;
                }
            } else {
                outcome = SeqOutcome::Reordered;
            }
        }
        match outcome {
            SeqOutcome::Duplicate => self.duplicates += 1,
            SeqOutcome::Reordered => self.reordered += 1,
            _ => (),
        }
        self.received += 1;
        self.octets += octets;
        outcome
    }

    /// Extended highest sequence number received.
    pub fn ext_max_seq(&self) -> i64 {
        self.cycles * RTP_SEQ_MOD + self.max_seq as i64
    }

    /// First extended sequence number counted.
    pub fn base_seq(&self) -> i64 {
        self.base_seq
    }

    pub fn expected(&self) -> i64 {
        if !self.is_validated() {
            return 0;
        }
        self.ext_max_seq() - self.base_seq + 1
    }

    /// Cumulative lost; negative when duplicates outnumber losses.
    pub fn lost(&self) -> i64 {
        if !self.is_validated() {
            return 0;
        }
        self.expected() - self.received as i64
    }

    /// Closes a reporting interval (RFC 3550 A.3) and returns the fraction lost in it (1/256).
    pub fn close_interval(&mut self) -> u8 {
        let expected = self.expected();
        let expected_interval = expected - self.expected_prior;
        self.expected_prior = expected;
        let received_interval = self.received as i64 - self.received_prior as i64;
        self.received_prior = self.received;
        let lost_interval = expected_interval - received_interval;
        self.fraction_lost = if expected_interval <= 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval).min(255) as u8
        };
        self.fraction_lost
    }
}

/// Interarrival jitter of RFC 3550 A.8 in RTP timestamp units (floating point form).
#[derive(Debug, Clone, Default)]
pub struct Jitter {
    transit: Option<u32>,
    jitter: f64,
}

/// Arrival time in nanoseconds converted to RTP timestamp units (truncated to 32 bits).
#[inline]
pub fn arrival_in_rtp_units(arrival_ns: u64, clock_rate: u32) -> u32 {
    // floor(arrival * rate / 1e9) without 128-bit division (per-packet path):
    // whole seconds and the sub-second rest separately; rest * rate < 2^62.
    let secs = arrival_ns / 1_000_000_000;
    let rest = arrival_ns % 1_000_000_000;
    secs.wrapping_mul(clock_rate as u64)
        .wrapping_add(rest * clock_rate as u64 / 1_000_000_000) as u32
}

impl Jitter {
    #[inline]
    pub fn update(&mut self, arrival_ns: u64, rtp_ts: u32, clock_rate: u32) {
        let arrival = arrival_in_rtp_units(arrival_ns, clock_rate);
        let transit = arrival.wrapping_sub(rtp_ts);
        if let Some(prev) = self.transit {
            let d = (transit.wrapping_sub(prev) as i32).unsigned_abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.transit = Some(transit);
    }

    /// Current estimate in RTP units.
    pub fn value(&self) -> f64 {
        self.jitter
    }

    pub fn reset(&mut self) {
        *self = Jitter::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validated(seq: u16) -> SeqState {
        let mut s = SeqState::new(seq, 2);
        assert_eq!(s.update(seq, 10), SeqOutcome::Probation);
        assert_eq!(s.update(seq.wrapping_add(1), 10), SeqOutcome::InOrder);
        s
    }

    #[test]
    fn probation_counts_the_run_once_validated() {
        let mut s = SeqState::new(100, 2);
        assert_eq!(s.update(100, 10), SeqOutcome::Probation);
        assert_eq!(s.received, 0);
        assert_eq!(s.expected(), 0);
        assert_eq!(s.update(101, 10), SeqOutcome::InOrder);
        assert!(s.is_validated());
        assert_eq!(s.received, 2);
        assert_eq!(s.octets, 20);
        assert_eq!(s.base_seq(), 100);
        assert_eq!(s.expected(), 2);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn probation_restarts_on_a_gap() {
        let mut s = SeqState::new(100, 3);
        assert_eq!(s.update(100, 1), SeqOutcome::Probation);
        assert_eq!(s.update(105, 1), SeqOutcome::Probation);
        assert_eq!(s.update(106, 1), SeqOutcome::Probation);
        assert_eq!(s.update(107, 1), SeqOutcome::InOrder);
        assert_eq!(s.base_seq(), 105);
        assert_eq!(s.received, 3);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn probation_one_validates_at_once() {
        let mut s = SeqState::new(7, 1);
        assert_eq!(s.update(7, 5), SeqOutcome::InOrder);
        assert_eq!(s.received, 1);
        assert_eq!(s.expected(), 1);
        let mut s = SeqState::new(7, 0);
        assert_eq!(s.update(7, 5), SeqOutcome::InOrder);
        assert_eq!(s.received, 1);
    }

    #[test]
    fn sequence_wrap_extends_the_highest_number() {
        let mut s = validated(65533);
        for seq in [65535u16, 0, 1, 2] {
            assert_eq!(s.update(seq, 1), SeqOutcome::InOrder);
        }
        assert_eq!(s.ext_max_seq(), 65536 + 2);
        assert_eq!(s.base_seq(), 65533);
        assert_eq!(s.expected(), 6);
        assert_eq!(s.received, 6);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn probation_run_across_wrap() {
        let mut s = SeqState::new(65535, 2);
        s.update(65535, 1);
        assert_eq!(s.update(0, 1), SeqOutcome::InOrder);
        assert_eq!(s.base_seq(), -1);
        s.update(1, 1);
        assert_eq!(s.expected(), 3);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn loss_duplicates_and_reordering() {
        let mut s = validated(0); // 0, 1
        assert_eq!(s.update(3, 1), SeqOutcome::InOrder); // 2 missing so far
        assert_eq!(s.update(2, 1), SeqOutcome::Reordered);
        assert_eq!(s.update(2, 1), SeqOutcome::Duplicate);
        assert_eq!(s.update(3, 1), SeqOutcome::Duplicate);
        assert_eq!(s.update(6, 1), SeqOutcome::InOrder); // 4, 5 lost
        assert_eq!(s.reordered, 1);
        assert_eq!(s.duplicates, 2);
        assert_eq!(s.expected(), 7);
        assert_eq!(s.received, 7);
        assert_eq!(s.lost(), 0);
        s.update(7, 1);
        s.update(7, 1);
        s.update(7, 1);
        // 4 and 5 lost, but 4 duplicates: cumulative lost goes negative.
        assert_eq!(s.expected(), 8);
        assert_eq!(s.received, 10);
        assert_eq!(s.lost(), -2);
    }

    #[test]
    fn fraction_lost_per_interval() {
        let mut s = validated(0);
        assert_eq!(s.close_interval(), 0);
        // Next interval: 2..=9 expected (8), 6 received (2 lost) -> 2*256/8 = 64.
        for seq in [2u16, 3, 5, 6, 8, 9] {
            s.update(seq, 1);
        }
        assert_eq!(s.close_interval(), 64);
        // Interval with only duplicates: lost_interval negative -> 0.
        s.update(9, 1);
        assert_eq!(s.close_interval(), 0);
        // Empty interval.
        assert_eq!(s.close_interval(), 0);
        // Cumulative stays right.
        assert_eq!(s.lost(), 2 - 1);
    }

    #[test]
    fn large_jump_needs_confirmation_then_restarts() {
        let mut s = validated(10);
        assert_eq!(s.update(12, 1), SeqOutcome::InOrder);
        assert_eq!(s.update(20000, 1), SeqOutcome::BadSeq);
        assert_eq!(s.received, 3);
        assert_eq!(s.update(13, 1), SeqOutcome::InOrder);
        assert_eq!(s.update(30000, 1), SeqOutcome::BadSeq);
        assert_eq!(s.update(30001, 1), SeqOutcome::Restarted);
        assert_eq!(s.base_seq(), 30001);
        assert_eq!(s.received, 1);
        assert_eq!(s.update(30002, 1), SeqOutcome::InOrder);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn old_packets_beyond_misorder_are_jumps() {
        let mut s = validated(1000);
        for seq in 1002..1300u16 {
            s.update(seq, 1);
        }
        // More than MAX_MISORDER behind: treated as a jump (RFC 3550 A.1), not counted.
        assert_eq!(s.update(1299 - 150, 1), SeqOutcome::BadSeq);
        assert_eq!(s.update(1299 - 99, 1), SeqOutcome::Duplicate);
        assert_eq!(s.update(1299 - 120, 1), SeqOutcome::BadSeq);
    }

    #[test]
    fn arrival_conversion_is_exact_floor() {
        for (ns, rate) in [
            (0u64, 90000u32),
            (999_999_999, 90000),
            (1_000_000_000, 8000),
            (123_456_789_012_345, 90000),
            (u64::MAX, 90000),
            (u64::MAX, 48000),
            (7_777_777_777, 44100),
        ] {
            let exact = ((ns as u128 * rate as u128) / 1_000_000_000) as u32;
            assert_eq!(arrival_in_rtp_units(ns, rate), exact, "{ns} @ {rate}");
        }
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let mut j = Jitter::default();
        // 8 kHz clock, 20 ms packets (160 units), arrivals alternate +0/+1 ms.
        let mut expected = 0f64;
        let mut prev_transit: Option<i64> = None;
        for i in 0..50u64 {
            let ts = (i * 160) as u32;
            let arrival_ns = i * 20_000_000 + if i % 2 == 1 { 1_000_000 } else { 0 };
            j.update(arrival_ns, ts, 8000);
            let transit = (arrival_ns * 8000 / 1_000_000_000) as i64 - ts as i64;
            if let Some(p) = prev_transit {
                expected += ((transit - p).abs() as f64 - expected) / 16.0;
            }
            prev_transit = Some(transit);
        }
        assert_eq!(j.value(), expected);
        // Alternating 8-unit offsets converge towards 8.
        assert!(j.value() > 7.0 && j.value() <= 8.0, "{}", j.value());
    }

    #[test]
    fn jitter_zero_for_constant_transit_and_timestamp_wrap() {
        let mut j = Jitter::default();
        for i in 0..10u64 {
            let ts = (u32::MAX - 3000).wrapping_add((i * 3000) as u32);
            j.update(1_000_000_000 + i * 33_333_333, ts, 90000);
        }
        assert!(j.value() < 1.0, "{}", j.value());
    }
}
