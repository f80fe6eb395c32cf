//! GStreamer-free RTP/RTCP receive statistics: per-SSRC sources (RFC 3550 appendix A) and
//! per-peer (network address) RTCP views. Time is always passed in (nanoseconds of arrival,
//! any monotonic origin) so everything here is deterministic and unit-testable.
//!
//! Memory is bounded: at most `MAX_SOURCES` sources, `MAX_PEERS` peers, `MAX_REPORTS`
//! report blocks and `MAX_PEER_SSRCS` SSRCs per peer, `SR_HISTORY` remembered SRs and
//! SDES strings of at most 255 bytes. What does not fit is counted and dropped.

pub mod rtcp;
pub mod source;

use std::net::SocketAddr;

use rtcp::{ReportBlockInfo, RtcpItem, SenderInfo, ntp_middle, walk_compound};
use source::{Jitter, SeqOutcome, SeqState};

pub const MAX_SOURCES: usize = 256;
pub const MAX_PEERS: usize = 256;
pub const MAX_REPORTS: usize = 32;
pub const MAX_PEER_SSRCS: usize = 16;
pub const SR_HISTORY: usize = 64;

/// Clock rate of the static RTP payload types (RFC 3551), for when caps don't tell.
pub fn static_clock_rate(pt: u8) -> Option<u32> {
    match pt {
        0 | 3..=5 | 7..=9 | 12 | 13 | 15 | 18 => Some(8000),
        6 => Some(16000),
        10 | 11 => Some(44100),
        14 | 25 | 26 | 28 | 31..=34 => Some(90000),
        16 => Some(11025),
        17 => Some(22050),
        _ => None,
    }
}

/// A report block as last received, with the round-trip time derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedReport {
    pub block: ReportBlockInfo,
    /// Round-trip time in 1/65536 s (RFC 3550 6.4.1), when it could be computed.
    pub round_trip: Option<u32>,
    pub arrival: u64,
}

/// Last sender report of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedSr {
    pub info: SenderInfo,
    pub arrival: u64,
}

/// Rates measured over the last closed interval.
#[derive(Debug, Clone, Default)]
struct RateMeter {
    start: Option<u64>,
    bytes_prior: u64,
    packets_prior: u64,
    /// bits per second
    bitrate: u64,
    /// packets per second
    packet_rate: f64,
}

impl RateMeter {
    /// `first` is when counting began, for a meter that was never closed before.
    fn close(&mut self, now: u64, bytes: u64, packets: u64, first: Option<u64>) {
        if let Some(start) = self.start.or(first)
            && now > start
        {
            let dt = (now - start) as f64 / 1e9;
            self.bitrate = ((bytes - self.bytes_prior) as f64 * 8.0 / dt) as u64;
            self.packet_rate = (packets - self.packets_prior) as f64 / dt;
        }
        self.start = Some(now);
        self.bytes_prior = bytes;
        self.packets_prior = packets;
    }

    /// Rates of the last interval, or the average since `first` when none was closed yet.
    fn rates(&self, first: Option<u64>, last: Option<u64>, bytes: u64, packets: u64) -> (u64, f64) {
        if self.start.is_some() && (self.bitrate > 0 || self.packet_rate > 0.0) {
            return (self.bitrate, self.packet_rate);
        }
        match (first, last) {
            (Some(f), Some(l)) if l > f => {
                let dt = (l - f) as f64 / 1e9;
                ((bytes as f64 * 8.0 / dt) as u64, packets as f64 / dt)
            }
            _ => (0, 0.0),
        }
    }
}

/// The RTP header fields the statistics need.
#[derive(Debug, Clone, Copy)]
struct RtpHeader {
    seq: u16,
    ts: u32,
    pt: u8,
    payload_len: usize,
    len: usize,
}

/// Everything known about one SSRC.
#[derive(Debug, Clone)]
pub struct Source {
    pub ssrc: u32,
    seq: Option<SeqState>,
    jitter: Jitter,
    pub payload_type: Option<u8>,
    pub clock_rate: Option<u32>,
    /// Every RTP packet of this SSRC, header included (also before validation).
    pub rtp_packets: u64,
    pub rtp_bytes: u64,
    pub first_arrival: Option<u64>,
    pub last_arrival: Option<u64>,
    /// Last RTP or RTCP activity, for the timeout.
    pub last_activity: u64,
    pub rtp_from: Option<SocketAddr>,
    pub rtcp_from: Option<SocketAddr>,
    rates: RateMeter,
    pub sr: Option<ReceivedSr>,
    pub rb: Option<ReceivedReport>,
    pub cname: Option<String>,
    pub name: Option<String>,
    pub tool: Option<String>,
    pub received_bye: bool,
    pub bye_reason: Option<String>,
    pub app_packets: u64,
    pub xr_rrtr_ntp: Option<u64>,
}

impl Source {
    fn new(ssrc: u32, now: u64) -> Self {
        Source {
            ssrc,
            seq: None,
            jitter: Jitter::default(),
            payload_type: None,
            clock_rate: None,
            rtp_packets: 0,
            rtp_bytes: 0,
            first_arrival: None,
            last_arrival: None,
            last_activity: now,
            rtp_from: None,
            rtcp_from: None,
            rates: RateMeter::default(),
            sr: None,
            rb: None,
            cname: None,
            name: None,
            tool: None,
            received_bye: false,
            bye_reason: None,
            app_packets: 0,
            xr_rrtr_ntp: None,
        }
    }

    #[inline]
    fn on_rtp(
        &mut self,
        pkt: &RtpHeader,
        arrival: u64,
        clock_rate: Option<u32>,
        probation: u32,
    ) -> SeqOutcome {
        let RtpHeader {
            seq,
            ts,
            pt,
            payload_len,
            len,
        } = *pkt;
        let state = self
            .seq
            .get_or_insert_with(|| SeqState::new(seq, probation));
        let outcome = state.update(seq, payload_len as u64);
        if let Some(rate) = clock_rate {
            if self.clock_rate != Some(rate) {
                self.jitter.reset();
                self.clock_rate = Some(rate);
            }
            self.jitter.update(arrival, ts, rate);
        }
        self.payload_type = Some(pt);
        self.rtp_packets += 1;
        self.rtp_bytes += len as u64;
        if self.first_arrival.is_none() {
            self.first_arrival = Some(arrival);
        }
        self.last_arrival = Some(arrival);
        self.last_activity = arrival;
        outcome
    }

    pub fn has_rtp(&self) -> bool {
        self.seq.is_some()
    }
    pub fn validated(&self) -> bool {
        self.seq.as_ref().is_some_and(|s| s.is_validated())
    }
    pub fn packets_received(&self) -> u64 {
        self.seq.as_ref().map_or(0, |s| s.received)
    }
    /// Payload octets of the counted packets (RFC 3550 "octets received").
    pub fn octets_received(&self) -> u64 {
        self.seq.as_ref().map_or(0, |s| s.octets)
    }
    pub fn packets_expected(&self) -> i64 {
        self.seq.as_ref().map_or(0, |s| s.expected())
    }
    pub fn packets_lost(&self) -> i64 {
        self.seq.as_ref().map_or(0, |s| s.lost())
    }
    pub fn duplicates(&self) -> u64 {
        self.seq.as_ref().map_or(0, |s| s.duplicates)
    }
    pub fn reordered(&self) -> u64 {
        self.seq.as_ref().map_or(0, |s| s.reordered)
    }
    /// Fraction lost (1/256) of the last closed interval.
    pub fn fraction_lost(&self) -> u8 {
        self.seq.as_ref().map_or(0, |s| s.fraction_lost)
    }
    pub fn ext_highest_seq(&self) -> i64 {
        self.seq.as_ref().map_or(0, |s| s.ext_max_seq())
    }
    pub fn base_seq(&self) -> i64 {
        self.seq.as_ref().map_or(0, |s| s.base_seq())
    }
    /// Interarrival jitter in RTP units (RFC 3550 A.8, floating point).
    pub fn jitter(&self) -> f64 {
        self.jitter.value()
    }
    pub fn jitter_ns(&self) -> u64 {
        match self.clock_rate {
            Some(rate) if rate > 0 => (self.jitter.value() * 1e9 / rate as f64) as u64,
            _ => 0,
        }
    }
    /// (bits per second, packets per second) of RTP, over the last closed interval.
    pub fn rates(&self) -> (u64, f64) {
        self.rates.rates(
            self.first_arrival,
            self.last_arrival,
            self.rtp_bytes,
            self.rtp_packets,
        )
    }
}

/// Everything known about one network peer (sender address of RTP or RTCP).
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    pub rtp_packets: u64,
    pub rtp_bytes: u64,
    pub rtcp_packets: u64,
    pub rtcp_bytes: u64,
    pub rtcp_malformed: u64,
    pub sr_count: u64,
    pub rr_count: u64,
    pub sdes_count: u64,
    pub bye_count: u64,
    pub app_count: u64,
    pub xr_count: u64,
    pub feedback_count: u64,
    pub first_arrival: u64,
    pub last_arrival: u64,
    pub ssrcs: Vec<u32>,
    pub reports: Vec<ReceivedReport>,
    pub cname: Option<String>,
    pub received_bye: bool,
    rates: RateMeter,
}

impl Peer {
    fn new(addr: Option<SocketAddr>, now: u64) -> Self {
        Peer {
            addr,
            rtp_packets: 0,
            rtp_bytes: 0,
            rtcp_packets: 0,
            rtcp_bytes: 0,
            rtcp_malformed: 0,
            sr_count: 0,
            rr_count: 0,
            sdes_count: 0,
            bye_count: 0,
            app_count: 0,
            xr_count: 0,
            feedback_count: 0,
            first_arrival: now,
            last_arrival: now,
            ssrcs: Vec::new(),
            reports: Vec::new(),
            cname: None,
            received_bye: false,
            rates: RateMeter::default(),
        }
    }

    fn add_ssrc(&mut self, ssrc: u32) {
        if !self.ssrcs.contains(&ssrc) && self.ssrcs.len() < MAX_PEER_SSRCS {
            self.ssrcs.push(ssrc);
        }
    }

    /// (bits per second, packets per second) of RTP + RTCP from this peer.
    pub fn rates(&self) -> (u64, f64) {
        self.rates.rates(
            Some(self.first_arrival),
            Some(self.last_arrival),
            self.rtp_bytes + self.rtcp_bytes,
            self.rtp_packets + self.rtcp_packets,
        )
    }

    /// The most recent report block received from this peer.
    pub fn last_report(&self) -> Option<&ReceivedReport> {
        self.reports.iter().max_by_key(|r| r.arrival)
    }
}

/// Something an application may want to be told about at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Bye {
        ssrc: u32,
        reason: Option<String>,
        from: Option<SocketAddr>,
    },
    SourceTimeout {
        ssrc: u32,
    },
    PeerTimeout {
        addr: Option<SocketAddr>,
    },
}

#[derive(Debug, Clone, Copy)]
struct SrRecord {
    ssrc: u32,
    ntp_mid: u32,
    arrival: u64,
}

/// Session-wide counters.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub rtp_packets: u64,
    pub rtp_bytes: u64,
    pub rtp_invalid: u64,
    pub rtcp_packets: u64,
    pub rtcp_bytes: u64,
    pub rtcp_malformed: u64,
    pub sources_dropped: u64,
    pub peers_dropped: u64,
}

#[derive(Debug, Clone)]
pub struct Session {
    probation: u32,
    clock_rate: Option<u32>,
    sources: Vec<Source>,
    last_source: usize,
    peers: Vec<Peer>,
    last_peer: usize,
    sr_history: Vec<SrRecord>,
    sr_next: usize,
    pub counters: Counters,
    rates: RateMeter,
    first_arrival: Option<u64>,
    last_arrival: Option<u64>,
    events: Vec<Event>,
}

impl Default for Session {
    fn default() -> Self {
        Session::new(source::DEFAULT_PROBATION)
    }
}

fn sdes_string(v: &[u8]) -> String {
    String::from_utf8_lossy(&v[..v.len().min(255)]).into_owned()
}

impl Session {
    pub fn new(probation: u32) -> Self {
        Session {
            probation,
            clock_rate: None,
            sources: Vec::new(),
            last_source: 0,
            peers: Vec::new(),
            last_peer: 0,
            sr_history: Vec::new(),
            sr_next: 0,
            counters: Counters::default(),
            rates: RateMeter::default(),
            first_arrival: None,
            last_arrival: None,
            events: Vec::new(),
        }
    }

    /// Clock rate from caps; overrides the static payload type table.
    pub fn set_clock_rate(&mut self, rate: Option<u32>) {
        self.clock_rate = rate.filter(|r| *r > 0);
    }

    pub fn set_probation(&mut self, probation: u32) {
        self.probation = probation;
    }

    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    pub fn source(&self, ssrc: u32) -> Option<&Source> {
        self.sources.iter().find(|s| s.ssrc == ssrc)
    }

    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    pub fn peer(&self, addr: Option<SocketAddr>) -> Option<&Peer> {
        self.peers.iter().find(|p| p.addr == addr)
    }

    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// (bits per second, packets per second) of everything received (RTP and RTCP).
    pub fn rates(&self) -> (u64, f64) {
        self.rates.rates(
            self.first_arrival,
            self.last_arrival,
            self.counters.rtp_bytes + self.counters.rtcp_bytes,
            self.counters.rtp_packets + self.counters.rtcp_packets,
        )
    }

    #[inline]
    fn source_index(&mut self, ssrc: u32, now: u64) -> Option<usize> {
        if let Some(s) = self.sources.get(self.last_source)
            && s.ssrc == ssrc
        {
            return Some(self.last_source);
        }
        let idx = match self.sources.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => i,
            None => {
                if self.sources.len() >= MAX_SOURCES {
                    self.counters.sources_dropped += 1;
                    return None;
                }
                self.sources.push(Source::new(ssrc, now));
                self.sources.len() - 1
            }
        };
        self.last_source = idx;
        Some(idx)
    }

    #[inline]
    fn peer_index(&mut self, addr: Option<SocketAddr>, now: u64) -> Option<usize> {
        if let Some(p) = self.peers.get(self.last_peer)
            && p.addr == addr
        {
            return Some(self.last_peer);
        }
        let idx = match self.peers.iter().position(|p| p.addr == addr) {
            Some(i) => i,
            None => {
                if self.peers.len() >= MAX_PEERS {
                    self.counters.peers_dropped += 1;
                    return None;
                }
                self.peers.push(Peer::new(addr, now));
                self.peers.len() - 1
            }
        };
        self.last_peer = idx;
        Some(idx)
    }

    fn touch(&mut self, arrival: u64) {
        if self.first_arrival.is_none() {
            self.first_arrival = Some(arrival);
        }
        self.last_arrival = Some(arrival);
    }

    /// Accounts one RTP packet. `from` is the sender address when known; per-peer RTP
    /// accounting only happens then. Returns false for packets that aren't RTP.
    #[inline]
    pub fn handle_rtp(&mut self, data: &[u8], arrival: u64, from: Option<SocketAddr>) -> bool {
        let Ok(rtp) = rtp_types::RtpPacket::parse(data) else {
            self.counters.rtp_invalid += 1;
            return false;
        };
        self.counters.rtp_packets += 1;
        self.counters.rtp_bytes += data.len() as u64;
        self.touch(arrival);
        let pt = rtp.payload_type();
        let clock_rate = self.clock_rate.or_else(|| static_clock_rate(pt));
        let probation = self.probation;
        if let Some(idx) = self.source_index(rtp.ssrc(), arrival) {
            let src = &mut self.sources[idx];
            let header = RtpHeader {
                seq: rtp.sequence_number(),
                ts: rtp.timestamp(),
                pt,
                payload_len: rtp.payload_len(),
                len: data.len(),
            };
            src.on_rtp(&header, arrival, clock_rate, probation);
            if from.is_some() {
                src.rtp_from = from;
            }
        }
        if from.is_some()
            && let Some(idx) = self.peer_index(from, arrival)
        {
            let peer = &mut self.peers[idx];
            peer.rtp_packets += 1;
            peer.rtp_bytes += data.len() as u64;
            peer.last_arrival = arrival;
            peer.add_ssrc(rtp.ssrc());
        }
        true
    }

    /// Accounts one (compound) RTCP packet from `from`. `ntp_now` is the receiver's wall
    /// clock as a 64-bit NTP timestamp, used for round-trip times when the SR the report
    /// refers to was not seen here. Malformed packets are counted and otherwise ignored.
    /// Returns false when the packet was malformed.
    pub fn handle_rtcp(
        &mut self,
        data: &[u8],
        arrival: u64,
        ntp_now: Option<u64>,
        from: Option<SocketAddr>,
    ) -> bool {
        self.counters.rtcp_packets += 1;
        self.counters.rtcp_bytes += data.len() as u64;
        self.touch(arrival);
        let peer_idx = self.peer_index(from, arrival);
        if let Some(i) = peer_idx {
            let peer = &mut self.peers[i];
            peer.rtcp_packets += 1;
            peer.rtcp_bytes += data.len() as u64;
            peer.last_arrival = arrival;
        }

        let mut items: Vec<RtcpItemOwned> = Vec::new();
        // Safety net around the third-party parser: a panic there is treated as a
        // malformed packet instead of taking the element down.
        let walked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            walk_compound(data, |item| items.push(RtcpItemOwned::from(item)))
        }));
        let ok = match walked {
            Ok(Ok(0)) => true,
            Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
                self.counters.rtcp_malformed += 1;
                if let Some(i) = peer_idx {
                    self.peers[i].rtcp_malformed += 1;
                }
                false
            }
        };
        for item in items {
            self.apply_rtcp_item(item, arrival, ntp_now, from, peer_idx);
        }
        ok
    }

    fn round_trip(&self, rb: &ReportBlockInfo, arrival: u64, ntp_now: Option<u64>) -> Option<u32> {
        if rb.lsr == 0 {
            return None;
        }
        // Prefer the arrival time of the SR the report refers to, seen on this element:
        // that needs no synchronised clocks.
        if let Some(sr) = self
            .sr_history
            .iter()
            .find(|r| r.ssrc == rb.ssrc && r.ntp_mid == rb.lsr)
            && arrival >= sr.arrival
        {
            let since = ((arrival - sr.arrival) as u128 * 65536 / 1_000_000_000) as u64;
            return Some(since.saturating_sub(rb.dlsr as u64).min(u32::MAX as u64) as u32);
        }
        let now = ntp_middle(ntp_now?);
        let rtt = now.wrapping_sub(rb.lsr).wrapping_sub(rb.dlsr);
        // Above a minute the clocks clearly disagree.
        (rtt < 60 * 65536).then_some(rtt)
    }

    fn apply_rtcp_item(
        &mut self,
        item: RtcpItemOwned,
        arrival: u64,
        ntp_now: Option<u64>,
        from: Option<SocketAddr>,
        peer_idx: Option<usize>,
    ) {
        match item {
            RtcpItemOwned::Sr(info) => {
                let rec = SrRecord {
                    ssrc: info.ssrc,
                    ntp_mid: ntp_middle(info.ntp_time),
                    arrival,
                };
                if self.sr_history.len() < SR_HISTORY {
                    self.sr_history.push(rec);
                } else {
                    self.sr_history[self.sr_next] = rec;
                    self.sr_next = (self.sr_next + 1) % SR_HISTORY;
                }
                if let Some(i) = peer_idx {
                    self.peers[i].sr_count += 1;
                    self.peers[i].add_ssrc(info.ssrc);
                }
                if let Some(s) = self.rtcp_source(info.ssrc, arrival, from) {
                    s.sr = Some(ReceivedSr { info, arrival });
                }
            }
            RtcpItemOwned::Rr { ssrc } => {
                if let Some(i) = peer_idx {
                    self.peers[i].rr_count += 1;
                    self.peers[i].add_ssrc(ssrc);
                }
                self.rtcp_source(ssrc, arrival, from);
            }
            RtcpItemOwned::ReportBlock(block) => {
                let report = ReceivedReport {
                    block,
                    round_trip: self.round_trip(&block, arrival, ntp_now),
                    arrival,
                };
                if let Some(i) = peer_idx {
                    let reports = &mut self.peers[i].reports;
                    if let Some(r) = reports
                        .iter_mut()
                        .find(|r| r.block.reporter == block.reporter && r.block.ssrc == block.ssrc)
                    {
                        *r = report;
                    } else if reports.len() < MAX_REPORTS {
                        reports.push(report);
                    }
                }
                if let Some(s) = self.rtcp_source(block.reporter, arrival, from) {
                    s.rb = Some(report);
                }
            }
            RtcpItemOwned::Sdes { ssrc, kind, value } => {
                if let Some(i) = peer_idx {
                    let peer = &mut self.peers[i];
                    if kind == 1 {
                        peer.sdes_count += 1;
                        peer.add_ssrc(ssrc);
                        peer.cname = Some(value.clone());
                    }
                }
                if let Some(s) = self.rtcp_source(ssrc, arrival, from) {
                    match kind {
                        1 => s.cname = Some(value),
                        2 => s.name = Some(value),
                        6 => s.tool = Some(value),
                        _ => (),
                    }
                }
            }
            RtcpItemOwned::Bye { ssrcs, reason } => {
                if let Some(i) = peer_idx {
                    self.peers[i].bye_count += 1;
                    self.peers[i].received_bye = true;
                }
                for ssrc in ssrcs {
                    if let Some(s) = self.rtcp_source(ssrc, arrival, from) {
                        s.received_bye = true;
                        s.bye_reason = reason.clone();
                    }
                    self.events.push(Event::Bye {
                        ssrc,
                        reason: reason.clone(),
                        from,
                    });
                }
            }
            RtcpItemOwned::App { ssrc } => {
                if let Some(i) = peer_idx {
                    self.peers[i].app_count += 1;
                }
                if let Some(s) = self.rtcp_source(ssrc, arrival, from) {
                    s.app_packets += 1;
                }
            }
            RtcpItemOwned::XrRrtr { ssrc, ntp_time } => {
                if let Some(i) = peer_idx {
                    self.peers[i].xr_count += 1;
                }
                if let Some(s) = self.rtcp_source(ssrc, arrival, from) {
                    s.xr_rrtr_ntp = Some(ntp_time);
                }
            }
            RtcpItemOwned::XrOther => {
                if let Some(i) = peer_idx {
                    self.peers[i].xr_count += 1;
                }
            }
            RtcpItemOwned::Feedback => {
                if let Some(i) = peer_idx {
                    self.peers[i].feedback_count += 1;
                }
            }
            RtcpItemOwned::Unknown => (),
        }
    }

    fn rtcp_source(
        &mut self,
        ssrc: u32,
        arrival: u64,
        from: Option<SocketAddr>,
    ) -> Option<&mut Source> {
        let idx = self.source_index(ssrc, arrival)?;
        let s = &mut self.sources[idx];
        s.last_activity = s.last_activity.max(arrival);
        if from.is_some() {
            s.rtcp_from = from;
        }
        Some(s)
    }

    /// Closes a reporting interval at `now`: fraction lost per source (RFC 3550 A.3) and
    /// bit/packet rates of sources, peers and the session.
    pub fn close_interval(&mut self, now: u64) {
        for s in &mut self.sources {
            if let Some(seq) = s.seq.as_mut() {
                seq.close_interval();
            }
            s.rates
                .close(now, s.rtp_bytes, s.rtp_packets, s.first_arrival);
        }
        for p in &mut self.peers {
            p.rates.close(
                now,
                p.rtp_bytes + p.rtcp_bytes,
                p.rtp_packets + p.rtcp_packets,
                Some(p.first_arrival),
            );
        }
        let c = &self.counters;
        self.rates.close(
            now,
            c.rtp_bytes + c.rtcp_bytes,
            c.rtp_packets + c.rtcp_packets,
            self.first_arrival,
        );
    }

    /// Forgets sources and peers silent for longer than `timeout` ns, with an event each.
    pub fn expire(&mut self, now: u64, timeout: u64) {
        let before = self.sources.len();
        let events = &mut self.events;
        self.sources.retain(|s| {
            let keep = now.saturating_sub(s.last_activity) <= timeout;
            if !keep {
                events.push(Event::SourceTimeout { ssrc: s.ssrc });
            }
            keep
        });
        let peers_before = self.peers.len();
        self.peers.retain(|p| {
            let keep = now.saturating_sub(p.last_arrival) <= timeout;
            if !keep {
                events.push(Event::PeerTimeout { addr: p.addr });
            }
            keep
        });
        if before != self.sources.len() {
            self.last_source = 0;
        }
        if peers_before != self.peers.len() {
            self.last_peer = 0;
        }
    }
}

/// An owned copy of what is kept from an `RtcpItem`, so the compound can be walked before
/// the session is updated.
#[derive(Debug, Clone)]
enum RtcpItemOwned {
    Sr(SenderInfo),
    Rr {
        ssrc: u32,
    },
    ReportBlock(ReportBlockInfo),
    Sdes {
        ssrc: u32,
        kind: u8,
        value: String,
    },
    Bye {
        ssrcs: Vec<u32>,
        reason: Option<String>,
    },
    App {
        ssrc: u32,
    },
    XrRrtr {
        ssrc: u32,
        ntp_time: u64,
    },
    XrOther,
    Feedback,
    Unknown,
}

impl From<RtcpItem<'_>> for RtcpItemOwned {
    fn from(item: RtcpItem<'_>) -> Self {
        match item {
            RtcpItem::Sr(i) => RtcpItemOwned::Sr(i),
            RtcpItem::Rr { ssrc } => RtcpItemOwned::Rr { ssrc },
            RtcpItem::ReportBlock(b) => RtcpItemOwned::ReportBlock(b),
            RtcpItem::Sdes { ssrc, kind, value } => RtcpItemOwned::Sdes {
                ssrc,
                kind,
                value: sdes_string(value),
            },
            RtcpItem::Bye { ssrcs, reason } => RtcpItemOwned::Bye {
                ssrcs,
                reason: reason.map(sdes_string),
            },
            RtcpItem::App { ssrc, .. } => RtcpItemOwned::App { ssrc },
            RtcpItem::XrRrtr { ssrc, ntp_time } => RtcpItemOwned::XrRrtr { ssrc, ntp_time },
            RtcpItem::XrDlrr { .. } | RtcpItem::XrOther { .. } => RtcpItemOwned::XrOther,
            RtcpItem::Feedback { .. } => RtcpItemOwned::Feedback,
            RtcpItem::Unknown { .. } => RtcpItemOwned::Unknown,
        }
    }
}

/// Fuzzing / corpus-replay entry point: a byte string of records
/// `[flags u8][delta_ms u16 be][len u16 be][len bytes]`, flags bit 0 = RTCP, bits 1-2 pick
/// one of three peer addresses (or none), bit 3 closes an interval, bit 4 expires with a
/// 2 s timeout. Everything derived from the session is read back to exercise the getters.
pub fn replay_records(data: &[u8]) -> Session {
    let mut session = Session::default();
    session.set_clock_rate(if data.first().is_some_and(|b| b & 0x80 != 0) {
        Some(90000)
    } else {
        None
    });
    let peers: [Option<SocketAddr>; 4] = [
        None,
        Some(SocketAddr::from(([127, 0, 0, 1], 5000))),
        Some(SocketAddr::from(([10, 0, 0, 2], 6001))),
        Some(SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], 7000))),
    ];
    let mut now: u64 = 0;
    let mut rest = data;
    while rest.len() >= 5 {
        let flags = rest[0];
        let delta = u16::from_be_bytes([rest[1], rest[2]]) as u64;
        let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        rest = &rest[5..];
        let len = len.min(rest.len());
        let (packet, tail) = rest.split_at(len);
        rest = tail;
        now = now.saturating_add(delta * 1_000_000);
        let from = peers[((flags >> 1) & 3) as usize];
        if flags & 1 != 0 {
            session.handle_rtcp(packet, now, Some(now.wrapping_mul(4295)), from);
        } else {
            session.handle_rtp(packet, now, from);
        }
        if flags & 8 != 0 {
            session.close_interval(now);
        }
        if flags & 16 != 0 {
            session.expire(now, 2_000_000_000);
        }
    }
    for s in session.sources() {
        let _ = (
            s.packets_lost(),
            s.packets_expected(),
            s.jitter_ns(),
            s.rates(),
            s.fraction_lost(),
        );
    }
    for p in session.peers() {
        let _ = (p.rates(), p.last_report());
    }
    let _ = session.rates();
    let _ = session.take_events();
    session
}

/// Encodes one record for `replay_records` (corpus generation and tests).
pub fn encode_record(out: &mut Vec<u8>, flags: u8, delta_ms: u16, packet: &[u8]) {
    out.push(flags);
    out.extend_from_slice(&delta_ms.to_be_bytes());
    out.extend_from_slice(&(packet.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(&packet[..packet.len().min(u16::MAX as usize)]);
}

#[cfg(test)]
mod tests;
