//! `rtcpstats`: pass-through RTP (and optional RTCP) element that measures RFC 3550
//! receive statistics per SSRC and per sender address. Thin glue over `crate::stats`.

use gst_ipcam_common::sync::lock;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_net::gio;

use crate::stats::{Event, Peer, Session, Source, source::DEFAULT_PROBATION};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtcpstats",
        gst::DebugColorFlags::empty(),
        Some("RTP/RTCP receive statistics"),
    )
});

const DEFAULT_INTERVAL_MS: u32 = 1000;
const DEFAULT_TIMEOUT_MS: u32 = 10000;
/// How often timeouts are checked when no statistics interval is set.
const EXPIRE_CHECK_NS: u64 = 1_000_000_000;
/// Seconds between the NTP (1900) and Unix (1970) epochs.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

#[derive(Debug, Clone, Copy)]
struct Settings {
    interval_ms: u32,
    timeout_ms: u32,
    probation: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            interval_ms: DEFAULT_INTERVAL_MS,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            probation: DEFAULT_PROBATION,
        }
    }
}

struct State {
    session: Session,
    rtp_segment: gst::FormattedSegment<gst::ClockTime>,
    rtcp_segment: gst::FormattedSegment<gst::ClockTime>,
    /// Copies of the settings so the per-packet path never takes the settings lock.
    interval_ns: u64,
    timeout_ns: u64,
    next_tick: Option<u64>,
    /// Last sender address seen and its conversion; the ref keeps the pointer unique.
    last_addr: Option<(gio::SocketAddress, Option<SocketAddr>)>,
    /// Fallback time origin for buffers without timestamps and no clock.
    epoch: Instant,
    /// Arrival time of the last RTP or RTCP buffer, to tell a stalled stream.
    last_data: Option<u64>,
}

impl State {
    fn new(settings: &Settings) -> Self {
        State {
            session: Session::new(settings.probation),
            rtp_segment: gst::FormattedSegment::new(),
            rtcp_segment: gst::FormattedSegment::new(),
            interval_ns: settings.interval_ms as u64 * 1_000_000,
            timeout_ns: settings.timeout_ms as u64 * 1_000_000,
            next_tick: None,
            last_addr: None,
            epoch: Instant::now(),
            last_data: None,
        }
    }

    /// Housekeeping period: the statistics interval, or the timeout check period.
    fn period(&self) -> u64 {
        if self.interval_ns > 0 {
            self.interval_ns
        } else {
            EXPIRE_CHECK_NS
        }
    }
}

pub struct RtcpStats {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    rtcp_pads: Mutex<Option<(gst::Pad, gst::Pad)>>,
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// Clock timer that keeps messages and timeouts going when data stops (PLAYING only).
    timer: Mutex<Option<gst::PeriodicClockId>>,
}

/// What a chain call has to post once the state lock is released.
#[derive(Default)]
struct Pending {
    stats: Option<gst::Structure>,
    events: Vec<Event>,
}

impl RtcpStats {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn settings(&self) -> Settings {
        *lock(&self.settings)
    }

    /// Arrival time of a buffer: its running time, else the pipeline clock's running
    /// time (live sources without timestamps), else time since the element started.
    fn arrival(&self, state: &State, buffer: &gst::BufferRef, rtcp: bool) -> u64 {
        let segment = if rtcp {
            &state.rtcp_segment
        } else {
            &state.rtp_segment
        };
        if let Some(ts) = buffer.dts_or_pts()
            && let Some(rt) = segment.to_running_time(ts)
        {
            return rt.nseconds();
        }
        if let Some(rt) = self.obj().current_running_time() {
            return rt.nseconds();
        }
        state.epoch.elapsed().as_nanos() as u64
    }

    /// Sender address from GstNetAddressMeta (udpsrc), converted once per address object.
    fn sender(state: &mut State, buffer: &gst::BufferRef) -> Option<SocketAddr> {
        let meta = buffer.meta::<gst_net::NetAddressMeta>()?;
        let addr = meta.addr();
        if let Some((cached, conv)) = &state.last_addr
            && cached.as_ptr() == addr.as_ptr()
        {
            return *conv;
        }
        let conv = addr
            .downcast_ref::<gio::InetSocketAddress>()
            .map(|a| SocketAddr::from(a.clone()));
        state.last_addr = Some((addr, conv));
        conv
    }

    fn ntp_now() -> Option<u64> {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
        let secs = d.as_secs() + NTP_UNIX_OFFSET;
        let frac = ((d.subsec_nanos() as u64) << 32) / 1_000_000_000;
        Some((secs << 32) | frac)
    }

    /// Interval statistics and timeouts, driven by arrival times (so deterministic for
    /// timestamped input); evaluated on every packet with a single comparison.
    #[inline]
    fn housekeeping(&self, state: &mut State, now: u64, pending: &mut Pending) {
        let period = state.period();
        match state.next_tick {
            None => {
                // First packet: open the first interval.
                state.next_tick = Some(now.saturating_add(period));
                state.session.close_interval(now);
            }
            Some(next) if now >= next => {
                // Skip missed ticks instead of firing them all at once.
                state.next_tick = Some(now.max(next).saturating_add(period));
                state.session.close_interval(now);
                if state.timeout_ns > 0 {
                    state.session.expire(now, state.timeout_ns);
                }
                if state.interval_ns > 0 {
                    pending.stats = Some(stats_structure(&state.session));
                }
            }
            Some(_) => (),
        }
        if state.session.has_events() {
            pending.events.extend(state.session.take_events());
        }
    }

    /// Clock timer callback with the current running time. Acts only while no data has
    /// arrived for half a period (a stalled live stream): data drives housekeeping
    /// otherwise, and non-live streams run ahead of the clock so never trigger this.
    fn on_timer(&self, running: u64) {
        let mut pending = Pending::default();
        {
            let mut state = self.state();
            let grace = state.period() / 2;
            let (Some(next), Some(last)) = (state.next_tick, state.last_data) else {
                return;
            };
            if running.saturating_add(grace) < next || last.saturating_add(grace) > running {
                return;
            }
            gst::log!(
                CAT,
                imp = self,
                "no data since {last} ns, tick at {running} ns"
            );
            self.housekeeping(&mut state, running.max(next), &mut pending);
        }
        self.post_pending(pending);
    }

    fn start_timer(&self) {
        let obj = self.obj();
        let Some(clock) = obj.clock() else {
            return;
        };
        let period = gst::ClockTime::from_nseconds(self.state().period());
        let id = clock.new_periodic_id(clock.time() + period, period);
        let weak = obj.downgrade();
        let res = id.wait_async(move |clock, _time, _id| {
            if let Some(obj) = weak.upgrade()
                && let Some(base) = obj.base_time()
            {
                let running = clock.time().saturating_sub(base);
                obj.imp().on_timer(running.nseconds());
            }
        });
        if let Err(e) = res {
            gst::warning!(CAT, imp = self, "no housekeeping timer: {e:?}");
            return;
        }
        if let Some(old) = lock(&self.timer).replace(id) {
            old.unschedule();
        }
    }

    fn stop_timer(&self) {
        let id = lock(&self.timer).take();
        if let Some(id) = id {
            id.unschedule();
        }
    }

    fn post_pending(&self, pending: Pending) {
        let obj = self.obj();
        if let Some(s) = pending.stats {
            let _ = obj.post_message(gst::message::Element::builder(s).src(&*obj).build());
        }
        for ev in pending.events {
            let s = match ev {
                Event::Bye { ssrc, reason, from } => {
                    gst::info!(
                        CAT,
                        imp = self,
                        "BYE from SSRC {ssrc:#010x} ({from:?}): {reason:?}"
                    );
                    gst::Structure::builder("rtcpstats-bye")
                        .field("ssrc", ssrc)
                        .field("reason", reason.unwrap_or_default())
                        .field("from", addr_string(from))
                        .build()
                }
                Event::SourceTimeout { ssrc } => {
                    gst::info!(CAT, imp = self, "SSRC {ssrc:#010x} timed out");
                    gst::Structure::builder("rtcpstats-timeout")
                        .field("ssrc", ssrc)
                        .build()
                }
                Event::PeerTimeout { addr } => {
                    gst::info!(CAT, imp = self, "peer {addr:?} timed out");
                    gst::Structure::builder("rtcpstats-peer-timeout")
                        .field("from", addr_string(addr))
                        .build()
                }
            };
            let _ = obj.post_message(gst::message::Element::builder(s).src(&*obj).build());
        }
    }

    /// Accounts one RTP buffer; the caller holds the state lock.
    #[inline]
    fn account_rtp(&self, state: &mut State, buffer: &gst::BufferRef, pending: &mut Pending) {
        let arrival = self.arrival(state, buffer, false);
        state.last_data = Some(arrival);
        let from = Self::sender(state, buffer);
        match buffer.map_readable() {
            Ok(map) => {
                if !state.session.handle_rtp(&map, arrival, from) {
                    gst::debug!(CAT, imp = self, "not an RTP packet ({} bytes)", map.len());
                }
            }
            Err(_) => gst::warning!(CAT, imp = self, "unreadable buffer"),
        }
        self.housekeeping(state, arrival, pending);
    }

    fn rtp_chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut pending = Pending::default();
        self.account_rtp(&mut self.state(), &buffer, &mut pending);
        if pending.stats.is_some() || !pending.events.is_empty() {
            self.post_pending(pending);
        }
        self.srcpad.push(buffer)
    }

    /// Buffer lists (payloaders, rtpbin): one lock for the whole list, pushed on as a list.
    fn rtp_chain_list(&self, list: gst::BufferList) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut pending = Pending::default();
        {
            let mut state = self.state();
            for buffer in list.iter() {
                self.account_rtp(&mut state, buffer, &mut pending);
            }
        }
        if pending.stats.is_some() || !pending.events.is_empty() {
            self.post_pending(pending);
        }
        self.srcpad.push_list(list)
    }

    fn rtcp_chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut pending = Pending::default();
        {
            let mut state = self.state();
            let arrival = self.arrival(&state, &buffer, true);
            state.last_data = Some(arrival);
            let from = Self::sender(&mut state, &buffer);
            if let Ok(map) = buffer.map_readable() {
                if !state
                    .session
                    .handle_rtcp(&map, arrival, Self::ntp_now(), from)
                {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "ignoring malformed RTCP packet of {} bytes from {from:?}",
                        map.len()
                    );
                } else {
                    gst::log!(CAT, imp = self, "RTCP of {} bytes from {from:?}", map.len());
                }
            }
            self.housekeeping(&mut state, arrival, &mut pending);
        }
        self.post_pending(pending);
        let srcpad = lock(&self.rtcp_pads).as_ref().map(|(_, src)| src.clone());
        match srcpad {
            Some(src) => src.push(buffer),
            None => Ok(gst::FlowSuccess::Ok),
        }
    }

    fn rtcp_chain_list(&self, list: gst::BufferList) -> Result<gst::FlowSuccess, gst::FlowError> {
        for buffer in list.iter_owned() {
            self.rtcp_chain(buffer)?;
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn paired_pad(&self, pad: &gst::Pad) -> Option<gst::Pad> {
        if pad == &self.sinkpad {
            return Some(self.srcpad.clone());
        }
        if pad == &self.srcpad {
            return Some(self.sinkpad.clone());
        }
        let pads = lock(&self.rtcp_pads);
        let (sink, src) = pads.as_ref()?;
        if pad == sink {
            Some(src.clone())
        } else if pad == src {
            Some(sink.clone())
        } else {
            None
        }
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        let rtcp = pad != &self.sinkpad;
        let mut final_stats = None;
        match event.view() {
            gst::EventView::Caps(c) if !rtcp => {
                let rate = c
                    .caps()
                    .structure(0)
                    .and_then(|s| s.get::<i32>("clock-rate").ok())
                    .filter(|r| *r > 0)
                    .map(|r| r as u32);
                gst::debug!(CAT, imp = self, "clock rate from caps: {rate:?}");
                self.state().session.set_clock_rate(rate);
            }
            gst::EventView::Segment(s) => {
                if let Ok(seg) = s.segment().clone().downcast::<gst::ClockTime>() {
                    let mut state = self.state();
                    if rtcp {
                        state.rtcp_segment = seg;
                    } else {
                        state.rtp_segment = seg;
                    }
                }
            }
            gst::EventView::FlushStop(_) => {
                let mut state = self.state();
                if rtcp {
                    state.rtcp_segment = gst::FormattedSegment::new();
                } else {
                    state.rtp_segment = gst::FormattedSegment::new();
                }
            }
            gst::EventView::Eos(_) if !rtcp => {
                let state = self.state();
                if state.interval_ns > 0 {
                    final_stats = Some(stats_structure(&state.session));
                }
            }
            _ => (),
        }
        if let Some(s) = final_stats {
            self.post_pending(Pending {
                stats: Some(s),
                events: Vec::new(),
            });
        }
        match self.paired_pad(pad) {
            Some(out) => out.push_event(event),
            None => true,
        }
    }

    fn src_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        match self.paired_pad(pad) {
            Some(out) => out.push_event(event),
            None => false,
        }
    }

    fn query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        match self.paired_pad(pad) {
            Some(other) => other.peer_query(query),
            None => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    fn iterate_links(&self, pad: &gst::Pad) -> gst::Iterator<gst::Pad> {
        gst::Iterator::from_vec(self.paired_pad(pad).into_iter().collect())
    }
}

fn addr_string(addr: Option<SocketAddr>) -> String {
    addr.map(|a| a.to_string()).unwrap_or_default()
}

fn clamp_i32(v: i64) -> i32 {
    v.clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

/// Per-SSRC structure with GStreamer's rtpsource field names where they exist.
fn source_structure(s: &Source) -> gst::Structure {
    let (bitrate, packet_rate) = s.rates();
    let mut b = gst::Structure::builder("application/x-rtp-source-stats")
        .field("ssrc", s.ssrc)
        .field("validated", s.validated())
        .field("received-bye", s.received_bye)
        .field("is-sender", s.has_rtp() || s.sr.is_some())
        .field("seqnum-base", clamp_i32(s.base_seq()))
        .field("clock-rate", s.clock_rate.map_or(-1, |r| r as i32))
        .field("payload-type", s.payload_type.map_or(-1, |p| p as i32))
        .field("rtp-from", addr_string(s.rtp_from))
        .field("rtcp-from", addr_string(s.rtcp_from))
        .field("packets-received", s.packets_received())
        .field("octets-received", s.octets_received())
        .field("bytes-received", s.rtp_bytes)
        .field("packets-expected", s.packets_expected())
        .field("packets-lost", clamp_i32(s.packets_lost()))
        .field("packets-duplicated", s.duplicates())
        .field("packets-reordered", s.reordered())
        .field("fraction-lost", s.fraction_lost() as u32)
        .field("ext-highest-seq", s.ext_highest_seq())
        .field("jitter", s.jitter() as u32)
        .field("jitter-ns", s.jitter_ns())
        .field("bitrate", bitrate)
        .field("packet-rate", packet_rate)
        .field("first-arrival", s.first_arrival.unwrap_or(0))
        .field("last-arrival", s.last_arrival.unwrap_or(0))
        .field("have-sr", s.sr.is_some())
        .field("have-rb", s.rb.is_some())
        .field("app-packets", s.app_packets);
    if let Some(sr) = &s.sr {
        b = b
            .field("sr-ntptime", sr.info.ntp_time)
            .field("sr-rtptime", sr.info.rtp_time)
            .field("sr-octet-count", sr.info.octet_count)
            .field("sr-packet-count", sr.info.packet_count);
    }
    if let Some(rb) = &s.rb {
        b = report_fields(b, rb);
    }
    for (name, v) in [("cname", &s.cname), ("name", &s.name), ("tool", &s.tool)] {
        if let Some(v) = v {
            b = b.field(name, v.as_str());
        }
    }
    if let Some(r) = &s.bye_reason {
        b = b.field("bye-reason", r.as_str());
    }
    if let Some(ntp) = s.xr_rrtr_ntp {
        b = b.field("xr-rrtr-ntptime", ntp);
    }
    b.build()
}

fn report_fields(
    b: gst::structure::Builder,
    rb: &crate::stats::ReceivedReport,
) -> gst::structure::Builder {
    b.field("rb-ssrc", rb.block.ssrc)
        .field("rb-sender-ssrc", rb.block.reporter)
        .field("rb-fractionlost", rb.block.fraction_lost as u32)
        .field("rb-packetslost", rb.block.packets_lost)
        .field("rb-exthighestseq", rb.block.ext_highest_seq)
        .field("rb-jitter", rb.block.jitter)
        .field("rb-lsr", rb.block.lsr)
        .field("rb-dlsr", rb.block.dlsr)
        .field("rb-round-trip", rb.round_trip.unwrap_or(0))
        .field("have-rb-round-trip", rb.round_trip.is_some())
}

fn peer_structure(p: &Peer) -> gst::Structure {
    let (bitrate, packet_rate) = p.rates();
    let reports = gst::Array::new(p.reports.iter().map(|r| {
        report_fields(gst::Structure::builder("application/x-rtcpstats-report"), r)
            .field("arrival", r.arrival)
            .build()
    }));
    let mut b = gst::Structure::builder("application/x-rtcpstats-peer")
        .field("address", addr_string(p.addr))
        .field("ssrcs", gst::Array::new(p.ssrcs.iter().copied()))
        .field("rtp-packets", p.rtp_packets)
        .field("rtp-bytes", p.rtp_bytes)
        .field("rtcp-packets", p.rtcp_packets)
        .field("rtcp-bytes", p.rtcp_bytes)
        .field("rtcp-malformed", p.rtcp_malformed)
        .field("sr-count", p.sr_count)
        .field("rr-count", p.rr_count)
        .field("sdes-count", p.sdes_count)
        .field("bye-count", p.bye_count)
        .field("app-count", p.app_count)
        .field("xr-count", p.xr_count)
        .field("feedback-count", p.feedback_count)
        .field("received-bye", p.received_bye)
        .field("bitrate", bitrate)
        .field("packet-rate", packet_rate)
        .field("first-arrival", p.first_arrival)
        .field("last-arrival", p.last_arrival)
        .field("have-rb", p.last_report().is_some())
        .field("reports", reports);
    if let Some(rb) = p.last_report() {
        b = report_fields(b, rb);
    }
    if let Some(c) = &p.cname {
        b = b.field("cname", c.as_str());
    }
    b.build()
}

fn stats_structure(session: &Session) -> gst::Structure {
    let c = &session.counters;
    let (bitrate, packet_rate) = session.rates();
    let clients = session
        .peers()
        .iter()
        .filter(|p| p.addr.is_some() && p.rtcp_packets > 0 && !p.received_bye)
        .count() as u32;
    gst::Structure::builder("application/x-rtcpstats")
        .field(
            "sources",
            gst::Array::new(session.sources().iter().map(source_structure)),
        )
        .field(
            "peers",
            gst::Array::new(session.peers().iter().map(peer_structure)),
        )
        .field("clients-connected", clients)
        .field("rtp-packets", c.rtp_packets)
        .field("rtp-bytes", c.rtp_bytes)
        .field("rtp-invalid", c.rtp_invalid)
        .field("rtcp-packets", c.rtcp_packets)
        .field("rtcp-bytes", c.rtcp_bytes)
        .field("rtcp-malformed", c.rtcp_malformed)
        .field("sources-dropped", c.sources_dropped)
        .field("peers-dropped", c.peers_dropped)
        .field("bitrate", bitrate)
        .field("packet-rate", packet_rate)
        .build()
}

#[glib::object_subclass]
impl ObjectSubclass for RtcpStats {
    const NAME: &'static str = "GstIpcamRtcpStats";
    type Type = super::RtcpStats;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let sinkpad = make_pad(&klass.pad_template("sink").expect("template exists"));
        let srcpad = make_pad(&klass.pad_template("src").expect("template exists"));
        let settings = Settings::default();
        RtcpStats {
            sinkpad,
            srcpad,
            rtcp_pads: Mutex::new(None),
            state: Mutex::new(State::new(&settings)),
            settings: Mutex::new(settings),
            timer: Mutex::new(None),
        }
    }
}

fn make_pad(templ: &gst::PadTemplate) -> gst::Pad {
    let name = templ.name_template();
    let builder = gst::Pad::builder_from_template(templ).name(name.to_string());
    let builder = if templ.direction() == gst::PadDirection::Sink {
        let is_rtcp = name.starts_with("rtcp");
        builder
            .chain_function(move |_pad, parent, buffer| {
                RtcpStats::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| {
                        if is_rtcp {
                            imp.rtcp_chain(buffer)
                        } else {
                            imp.rtp_chain(buffer)
                        }
                    },
                )
            })
            .chain_list_function(move |_pad, parent, list| {
                RtcpStats::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| {
                        if is_rtcp {
                            imp.rtcp_chain_list(list)
                        } else {
                            imp.rtp_chain_list(list)
                        }
                    },
                )
            })
            .event_function(|pad, parent, event| {
                RtcpStats::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
    } else {
        builder.event_function(|pad, parent, event| {
            RtcpStats::catch_panic_pad_function(parent, || false, |imp| imp.src_event(pad, event))
        })
    };
    builder
        .query_function(|pad, parent, query| {
            RtcpStats::catch_panic_pad_function(parent, || false, |imp| imp.query(pad, query))
        })
        .iterate_internal_links_function(|pad, parent| {
            RtcpStats::catch_panic_pad_function(
                parent,
                || gst::Iterator::from_vec(vec![]),
                |imp| imp.iterate_links(pad),
            )
        })
        .build()
}

impl ObjectImpl for RtcpStats {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecUInt::builder("interval")
                    .nick("Interval")
                    .blurb(
                        "Milliseconds between statistics element messages and loss-fraction \
                         intervals, in stream arrival time (0 = no messages)",
                    )
                    .default_value(DEFAULT_INTERVAL_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("timeout")
                    .nick("Timeout")
                    .blurb(
                        "Milliseconds without RTP or RTCP after which a source or peer is \
                         dropped with an rtcpstats-timeout message (0 = never)",
                    )
                    .default_value(DEFAULT_TIMEOUT_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("probation")
                    .nick("Probation")
                    .blurb("Sequential packets needed to validate a new source (RFC 3550 A.1)")
                    .default_value(DEFAULT_PROBATION)
                    .maximum(100)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("Per-SSRC `sources` and per-sender `peers` statistics")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = lock(&self.settings);
        match pspec.name() {
            "interval" => settings.interval_ms = value.get().expect("type checked upstream"),
            "timeout" => settings.timeout_ms = value.get().expect("type checked upstream"),
            "probation" => settings.probation = value.get().expect("type checked upstream"),
            _ => unimplemented!(),
        }
        let s = *settings;
        drop(settings);
        let mut state = self.state();
        state.interval_ns = s.interval_ms as u64 * 1_000_000;
        state.timeout_ns = s.timeout_ms as u64 * 1_000_000;
        state.session.set_probation(s.probation);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "interval" => self.settings().interval_ms.to_value(),
            "timeout" => self.settings().timeout_ms.to_value(),
            "probation" => self.settings().probation.to_value(),
            "stats" => stats_structure(&self.state().session).to_value(),
            _ => unimplemented!(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).expect("fresh pad");
        obj.add_pad(&self.srcpad).expect("fresh pad");
    }
}

impl GstObjectImpl for RtcpStats {}

impl ElementImpl for RtcpStats {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "RTP/RTCP receive statistics",
                "Network/RTP/Analyzer",
                "Passes RTP (and RTCP on request pads) through untouched while measuring \
                 RFC 3550 receive statistics per SSRC and RTCP reports per sender address",
                "gst-ipcam developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let rtp = gst::Caps::builder("application/x-rtp").build();
            let rtcp = gst::Caps::builder("application/x-rtcp").build();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &rtp,
                )
                .expect("valid template"),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &rtp,
                )
                .expect("valid template"),
                gst::PadTemplate::new(
                    "rtcp_sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Request,
                    &rtcp,
                )
                .expect("valid template"),
                gst::PadTemplate::new(
                    "rtcp_src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Sometimes,
                    &rtcp,
                )
                .expect("valid template"),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn request_new_pad(
        &self,
        templ: &gst::PadTemplate,
        _name: Option<&str>,
        _caps: Option<&gst::Caps>,
    ) -> Option<gst::Pad> {
        if templ.name_template() != "rtcp_sink" {
            return None;
        }
        let (sink, src) = {
            let mut pads = lock(&self.rtcp_pads);
            if pads.is_some() {
                gst::warning!(CAT, imp = self, "rtcp_sink already requested");
                return None;
            }
            let sink = make_pad(templ);
            let src = make_pad(&self.obj().pad_template("rtcp_src")?);
            *pads = Some((sink.clone(), src.clone()));
            (sink, src)
        };
        let obj = self.obj();
        for pad in [&src, &sink] {
            if let Err(e) = pad.set_active(obj.current_state() > gst::State::Ready) {
                gst::warning!(CAT, imp = self, "could not activate {}: {e}", pad.name());
            }
        }
        obj.add_pad(&src).ok()?;
        obj.add_pad(&sink).ok()?;
        Some(sink)
    }

    fn release_pad(&self, pad: &gst::Pad) {
        let pads = {
            let mut pads = lock(&self.rtcp_pads);
            match pads.as_ref() {
                Some((sink, _)) if sink == pad => pads.take(),
                _ => None,
            }
        };
        if let Some((sink, src)) = pads {
            let obj = self.obj();
            let _ = sink.set_active(false);
            let _ = src.set_active(false);
            let _ = obj.remove_pad(&src);
            let _ = obj.remove_pad(&sink);
        }
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        match transition {
            gst::StateChange::ReadyToPaused => {
                let settings = self.settings();
                *self.state() = State::new(&settings);
            }
            gst::StateChange::PlayingToPaused => self.stop_timer(),
            _ => (),
        }
        let ret = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToPlaying {
            self.start_timer();
        }
        Ok(ret)
    }
}
