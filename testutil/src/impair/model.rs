//! The impairment model, without I/O and without a clock (time is passed in): seeded loss
//! (independent or in bursts, Gilbert model), duplication, reordering, delay with jitter and a
//! bandwidth cap with a bounded queue. The same seed and input give the same output on every
//! run, so a test can assert "loss > 0" and mean it.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// What to do to a packet stream (one direction).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Mean share of packets lost (0..1).
    pub drop: f64,
    /// Mean length of a loss burst in packets (≤ 1: independent losses). The share lost stays
    /// `drop`; longer bursts mean fewer, longer gaps (the two-state Gilbert model).
    pub burst: f64,
    pub duplicate: f64,
    /// Probability that a packet is held back and sent after the next one.
    pub reorder: f64,
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra delay, uniform in 0..jitter per packet (may reorder datagrams, like netem).
    pub jitter: Duration,
    /// Bandwidth cap in bits per second (0: none); packets wait in a queue of `queue_bytes`,
    /// beyond it they are dropped (tail drop, counted apart from `drop`).
    pub rate_bps: u64,
    pub queue_bytes: usize,
    /// The first packets pass untouched (stream headers a receiver cannot do without).
    pub spare_first: usize,
    pub seed: u64,
}

impl Default for Impairment {
    fn default() -> Self {
        Impairment {
            drop: 0.0,
            burst: 1.0,
            duplicate: 0.0,
            reorder: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            rate_bps: 0,
            queue_bytes: 256 * 1024,
            spare_first: 0,
            seed: 1,
        }
    }
}

impl Impairment {
    /// No impairment at all (a plain relay).
    pub fn none() -> Self {
        Impairment::default()
    }

    /// Independent loss of `share` of the packets.
    pub fn loss(share: f64, seed: u64) -> Self {
        Impairment {
            drop: share,
            seed,
            ..Impairment::default()
        }
    }

    /// Loss of `share` of the packets in bursts of `burst` packets on average.
    pub fn burst_loss(share: f64, burst: f64, seed: u64) -> Self {
        Impairment {
            drop: share,
            burst,
            seed,
            ..Impairment::default()
        }
    }
}

/// What an [`Impairer`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImpairStats {
    pub received: usize,
    pub forwarded: usize,
    pub dropped: usize,
    /// Dropped because the bandwidth cap's queue was full.
    pub queue_dropped: usize,
    pub duplicated: usize,
    pub reordered: usize,
    /// Loss bursts started (a burst of one is an independent loss).
    pub bursts: usize,
}

/// Applies an [`Impairment`] to a packet sequence.
#[derive(Debug)]
pub struct Impairer {
    config: Impairment,
    rng: SmallRng,
    held: Option<Vec<u8>>,
    /// Gilbert model: in the lossy state.
    in_burst: bool,
    /// When the bandwidth-capped link is free again (time since the start).
    link_free_at: Duration,
    pub stats: ImpairStats,
}

impl Impairer {
    pub fn new(config: Impairment) -> Self {
        Impairer {
            config,
            rng: SmallRng::seed_from_u64(config.seed),
            held: None,
            in_burst: false,
            link_free_at: Duration::ZERO,
            stats: ImpairStats::default(),
        }
    }

    pub fn config(&self) -> &Impairment {
        &self.config
    }

    /// Changes the impairment from the next packet on. The random sequence goes on, unless
    /// the seed changes: a new seed starts its own sequence, so a fault switched on mid-stream
    /// drops the same packets (counted from the switch) on every run.
    pub fn set_config(&mut self, config: Impairment) {
        if config.seed != self.config.seed {
            self.rng = SmallRng::seed_from_u64(config.seed);
            self.in_burst = false;
        }
        self.config = config;
    }

    /// Whether the next packet is lost (Gilbert model with mean burst length `burst`).
    fn lose(&mut self, draw: f64) -> bool {
        let (share, burst) = (self.config.drop, self.config.burst.max(1.0));
        if share <= 0.0 {
            self.in_burst = false;
            return false;
        }
        if share >= 1.0 {
            return true;
        }
        // Leave a burst with 1/burst; enter one so that the stationary loss share is `share`.
        let leave = 1.0 / burst;
        let enter = (share * leave / (1.0 - share)).min(1.0);
        if self.in_burst {
            self.in_burst = draw >= leave;
        } else if draw < enter {
            self.in_burst = true;
            self.stats.bursts += 1;
        }
        self.in_burst
    }

    /// The packets to send for `packet`, in order (loss, duplication, reordering; no time).
    pub fn process(&mut self, packet: Vec<u8>) -> Vec<Vec<u8>> {
        self.stats.received += 1;
        // Four draws per packet whatever happens: the decisions depend on the index only.
        let (d, u, r, _j) = (
            self.rng.random::<f64>(),
            self.rng.random::<f64>(),
            self.rng.random::<f64>(),
            self.rng.random::<f64>(),
        );
        if self.stats.received <= self.config.spare_first {
            self.stats.forwarded += 1;
            return vec![packet];
        }
        if self.lose(d) {
            self.stats.dropped += 1;
            return Vec::new();
        }
        if self.held.is_none() && r < self.config.reorder {
            self.stats.reordered += 1;
            self.held = Some(packet);
            return Vec::new();
        }
        let mut out = Vec::with_capacity(3);
        if u < self.config.duplicate {
            self.stats.duplicated += 1;
            out.push(packet.clone());
        }
        out.push(packet);
        out.extend(self.held.take());
        self.stats.forwarded += out.len();
        out
    }

    /// The packets to send for `packet` arriving at `now` (time since any fixed start), each
    /// with the time it is due: [`Impairer::process`], then delay, jitter and the bandwidth cap.
    pub fn process_at(&mut self, now: Duration, packet: Vec<u8>) -> Vec<(Duration, Vec<u8>)> {
        let jitter_draw = self.peek_jitter();
        let out = self.process(packet);
        self.schedule(now, jitter_draw, out)
    }

    /// A packet is held back for reordering.
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// The packet held back for reordering, if any (when the sender pauses or at the end).
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        let held = self.held.take();
        self.stats.forwarded += held.is_some() as usize;
        held
    }

    /// [`Impairer::flush`] with its due time.
    pub fn flush_at(&mut self, now: Duration) -> Vec<(Duration, Vec<u8>)> {
        let out: Vec<Vec<u8>> = self.flush().into_iter().collect();
        self.schedule(now, 0.0, out)
    }

    /// A jitter draw from a copy of the generator, so `process` keeps its four draws a packet.
    fn peek_jitter(&self) -> f64 {
        let mut rng = self.rng.clone();
        for _ in 0..3 {
            rng.random::<f64>();
        }
        rng.random::<f64>()
    }

    fn schedule(
        &mut self,
        now: Duration,
        jitter_draw: f64,
        packets: Vec<Vec<u8>>,
    ) -> Vec<(Duration, Vec<u8>)> {
        let base = now + self.config.delay + self.config.jitter.mul_f64(jitter_draw);
        let mut out = Vec::with_capacity(packets.len());
        for p in packets {
            if self.config.rate_bps == 0 {
                out.push((base, p));
                continue;
            }
            // Bytes waiting for the link at `now`, at the cap's rate.
            let backlog = self.link_free_at.saturating_sub(now);
            let queued = (backlog.as_secs_f64() * self.config.rate_bps as f64 / 8.0) as usize;
            if queued + p.len() > self.config.queue_bytes {
                self.stats.queue_dropped += 1;
                self.stats.forwarded -= 1;
                continue;
            }
            let start = self.link_free_at.max(now);
            let wire = Duration::from_secs_f64(p.len() as f64 * 8.0 / self.config.rate_bps as f64);
            self.link_free_at = start + wire;
            out.push((base.max(self.link_free_at), p));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: Impairment, n: u16) -> (Vec<Vec<u8>>, ImpairStats) {
        let mut i = Impairer::new(config);
        let mut out: Vec<Vec<u8>> = (0..n)
            .flat_map(|n| i.process(n.to_be_bytes().to_vec()))
            .collect();
        out.extend(i.flush());
        (out, i.stats)
    }

    #[test]
    fn impairment_is_seeded() {
        let config = Impairment {
            drop: 0.05,
            duplicate: 0.05,
            reorder: 0.05,
            spare_first: 10,
            seed: 7,
            ..Impairment::default()
        };
        let (a, stats) = run(config, 1000);
        assert_eq!(a, run(config, 1000).0);
        assert!(stats.dropped > 0 && stats.duplicated > 0 && stats.reordered > 0);
        assert_eq!(a.len(), stats.forwarded);
        assert_eq!(
            stats.forwarded,
            stats.received - stats.dropped + stats.duplicated
        );
        let other = run(Impairment { seed: 8, ..config }, 1000).0;
        assert_ne!(a, other, "another seed, other decisions");
    }

    #[test]
    fn burst_loss_keeps_the_share_in_fewer_longer_gaps() {
        let n = 20_000;
        let (_, indep) = run(Impairment::loss(0.05, 3), n);
        let (_, burst) = run(Impairment::burst_loss(0.05, 8.0, 3), n);
        for s in [indep, burst] {
            let share = s.dropped as f64 / n as f64;
            assert!((0.035..0.065).contains(&share), "{s:?}");
        }
        let mean = |s: ImpairStats| s.dropped as f64 / s.bursts as f64;
        assert!(mean(indep) < 1.2, "{indep:?}");
        assert!((5.0..11.0).contains(&mean(burst)), "{burst:?}");
    }

    #[test]
    fn delay_jitter_and_rate_cap_schedule_packets() {
        let mut i = Impairer::new(Impairment {
            delay: Duration::from_millis(50),
            jitter: Duration::from_millis(10),
            seed: 5,
            ..Impairment::default()
        });
        for k in 0..100u64 {
            let now = Duration::from_millis(k);
            for (due, _) in i.process_at(now, vec![0; 100]) {
                let extra = due - now;
                assert!(extra >= Duration::from_millis(50) && extra <= Duration::from_millis(60));
            }
        }
        // 1 Mbit/s, 1250-byte packets: one every 10 ms on the wire; a 5-packet queue.
        let mut i = Impairer::new(Impairment {
            rate_bps: 1_000_000,
            queue_bytes: 5 * 1250,
            ..Impairment::default()
        });
        let dues: Vec<Duration> = (0..20)
            .flat_map(|_| i.process_at(Duration::ZERO, vec![0; 1250]))
            .map(|(d, _)| d)
            .collect();
        assert_eq!(dues.len(), 5, "a burst beyond the queue is tail-dropped");
        assert_eq!(i.stats.queue_dropped, 15);
        assert_eq!(dues[4], Duration::from_millis(50));
        // Later the queue has drained: packets pass again.
        assert_eq!(i.process_at(Duration::from_secs(1), vec![0; 1250]).len(), 1);
    }
}
