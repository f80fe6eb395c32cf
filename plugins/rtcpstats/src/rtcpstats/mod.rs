//! `rtcpstats`: RTP pass-through that measures RFC 3550 receive statistics.
//!
//! ```text
//! udpsrc port=5000 caps="application/x-rtp,media=video,clock-rate=90000,encoding-name=H264" !
//!   rtcpstats name=s interval=1000 ! rtph264depay ! ...
//! udpsrc port=5001 caps=application/x-rtcp ! s.rtcp_sink  s.rtcp_src ! rtpbin.recv_rtcp_sink_0
//! ```
//!
//! - Pads: `sink`/`src` (RTP, always); `rtcp_sink` (request) which adds `rtcp_src`. Buffers
//!   and buffer lists are pushed on untouched (same buffers, no copy).
//! - Arrival time = buffer running time (DTS, else PTS), else the pipeline clock's running
//!   time. The sender address comes from `GstNetAddressMeta` (udpsrc) when present.
//! - `stats` (read-only): `application/x-rtcpstats` with `sources` (array of
//!   `application/x-rtp-source-stats`, GStreamer rtpsource field names: `packets-received`,
//!   `octets-received`, `packets-lost`, `jitter`, `bitrate`, `have-sr`, `sr-ntptime`,
//!   `rb-fractionlost`, `rb-packetslost`, `rb-jitter`, `rb-round-trip`, ... plus
//!   `packets-duplicated`, `packets-reordered`, `fraction-lost`, `jitter-ns`, `packet-rate`,
//!   `first-arrival`, `last-arrival`), `peers` (array of `application/x-rtcpstats-peer`, one
//!   per sender address: RTP/RTCP counts, bitrate, SR/RR/SDES/BYE/APP/XR counts, `reports`
//!   and the last report's `rb-*` fields), `clients-connected` and session totals.
//! - Bus element messages: the `stats` structure every `interval` ms of arrival time (and
//!   at EOS); `rtcpstats-bye` (ssrc, reason, from) at once on RTCP BYE; `rtcpstats-timeout`
//!   (ssrc) and `rtcpstats-peer-timeout` (from) after `timeout` ms without data. In PLAYING a
//!   clock timer keeps these going when a live stream stops.
//! - `probation` (default 2): sequential packets needed before a source counts (RFC 3550
//!   A.1); the probation packets are then counted too.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct RtcpStats(ObjectSubclass<imp::RtcpStats>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "rtcpstats",
        gst::Rank::NONE,
        RtcpStats::static_type(),
    )
}
