//! A snapshot of the gateway's figures and its Prometheus text rendering, with
//! MediaMTX-style names (`paths`, `paths_bytes_received`, `paths_bytes_sent`, `rtsp_conns`,
//! `rtsp_sessions`, `rtsp_sessions_bytes_sent`, `webrtc_sessions`, `hls_muxers`) plus `gb28181_*` figures of
//! the GB28181 side. GStreamer-free.

use std::fmt::Write;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceStat {
    pub id: String,
    pub online: bool,
}

/// One channel (RTSP path).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathStat {
    pub name: String,
    /// What feeds the path, as MediaMTX names it: `gb28181Channel`, `rtspPublisher`,
    /// `rtmpPublisher`, `rtspSource` (a pulled camera).
    pub source: &'static str,
    pub device_id: String,
    /// A camera session is up and media flows.
    pub ready: bool,
    /// RTSP sessions playing this path.
    pub readers: u32,
    /// INVITEs sent for this path since start.
    pub invites: u64,
    pub bytes_received: u64,
    pub packets_received: u64,
    pub packets_lost: u64,
    pub frames: u64,
    pub bitrate_in_bps: u64,
    /// RTP bytes the path's payloaders sent (one copy per client).
    pub bytes_sent: u64,
    pub bitrate_out_bps: u64,
    pub hls: bool,
    pub recording: bool,
    /// Frame arrival in gb28181src → hand-over to the RTSP medias (ms), over the last second.
    pub latency_avg_ms: f64,
    pub latency_max_ms: f64,
    /// Codec or format changes of the camera's streams, followed live.
    pub stream_changes: u64,
    /// Key frames asked of the camera (GB28181 IFameCmd) for new viewers.
    pub key_frame_requests: u64,
    /// Interarrival jitter of the source's RTP (pulled cameras), the largest of its streams.
    pub jitter_ms: Option<f64>,
}

/// One RTSP session (one client watching one path).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionStat {
    pub id: String,
    pub path: String,
    pub remote: String,
    /// `tcp`, `udp` or `udp-mcast`.
    pub transport: String,
    pub bytes_sent: u64,
    pub packets_sent: u64,
    pub bitrate_bps: u64,
    /// Frames dropped because the reader fell too far behind (direct RTSP path; 0 else).
    pub frames_discarded: u64,
    /// From the client's RTCP receiver reports (UDP clients), when it sent any.
    pub packets_lost: Option<i64>,
    pub jitter_ms: Option<f64>,
    pub round_trip_ms: Option<f64>,
    /// The user it authenticated as (WebRTC readers; empty when not known).
    pub user: String,
}

/// The SIP endpoint's counters of refused and suspicious requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SipCounters {
    /// Digest checks that failed.
    pub auth_failures: u64,
    /// REGISTERs refused unchecked because their IP was blocked after failed authentications.
    pub auth_rate_limited: u64,
    /// Requests claiming to be a device they did not come from (403 / 481).
    pub forged_requests: u64,
    /// Device IDs refused by the ID pattern.
    pub invalid_ids: u64,
    /// Catalog items dropped (invalid IDs, beyond max-channels-per-device).
    pub catalog_items_dropped: u64,
    /// Endpoint events the gateway did not keep up with.
    pub events_dropped: u64,
    /// REGISTERs and keepalives received, and keepalives refused (device not registered).
    pub registers: u64,
    pub keepalives: u64,
    pub keepalives_refused: u64,
    /// SIP/TCP connections closed for silence (never a message, or a frozen device).
    pub tcp_idle_closed: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub devices: Vec<DeviceStat>,
    pub paths: Vec<PathStat>,
    pub sessions: Vec<SessionStat>,
    /// RTSP connections (clients), playing or not.
    pub rtsp_conns: u32,
    /// RTMP connections (publishers, readers, handshakes), and bytes received from them.
    pub rtmp_conns: u32,
    pub rtmp_bytes_received: u64,
    pub sip: SipCounters,
    /// Failed authentications per protocol (`rtsp`, `http`).
    pub auth_failures: Vec<(String, u64)>,
    /// Channels the gateway refused to mount (bad ID, taken by another device, over a cap).
    pub mounts_refused: u64,
    /// Persistence (`--data-dir`): failed transactions, and writes dropped (queue full, caps).
    pub store_errors: u64,
    pub store_dropped: u64,
    /// WebRTC (WHEP) readers (`transport` = `webrtc`), and their totals: bytes sent by every
    /// reader so far, offers refused because `webrtc_max_sessions` were running.
    pub webrtc_sessions: Vec<SessionStat>,
    pub webrtc_bytes_total: u64,
    pub webrtc_refused: u64,
    /// Channels transcoded (H.265 -> H.264) for WebRTC readers now.
    pub webrtc_transcodes: usize,
}

impl Snapshot {
    pub fn devices_online(&self) -> usize {
        self.devices.iter().filter(|d| d.online).count()
    }
    pub fn streams_active(&self) -> usize {
        self.paths.iter().filter(|p| p.ready).count()
    }
    pub fn bitrate_in_bps(&self) -> u64 {
        self.paths.iter().map(|p| p.bitrate_in_bps).sum()
    }
    pub fn bitrate_out_bps(&self) -> u64 {
        self.sessions
            .iter()
            .chain(&self.webrtc_sessions)
            .map(|s| s.bitrate_bps)
            .sum()
    }

    /// The console's one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "devices {} (online {}) | streams {}/{} | rtsp clients {} (sessions {}) | webrtc {} | in {:.2} Mbit/s | out {:.2} Mbit/s | lost {}",
            self.devices.len(),
            self.devices_online(),
            self.streams_active(),
            self.paths.len(),
            self.rtsp_conns,
            self.sessions.len(),
            self.webrtc_sessions.len(),
            self.bitrate_in_bps() as f64 / 1e6,
            self.bitrate_out_bps() as f64 / 1e6,
            self.paths.iter().map(|p| p.packets_lost).sum::<u64>(),
        )
    }
}

/// Escapes a Prometheus label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition format (version 0.0.4).
pub fn render(s: &Snapshot) -> String {
    let mut o = String::new();
    let help = |o: &mut String, name: &str, kind: &str, text: &str| {
        let _ = writeln!(o, "# HELP {name} {text}\n# TYPE {name} {kind}");
    };
    help(
        &mut o,
        "gb28181_devices",
        "gauge",
        "Registered GB28181 devices",
    );
    let _ = writeln!(o, "gb28181_devices {}", s.devices.len());
    help(
        &mut o,
        "gateway_mounts_refused",
        "counter",
        "Channels refused (bad ID, mounted for another device, over a cap)",
    );
    let _ = writeln!(o, "gateway_mounts_refused {}", s.mounts_refused);
    for (name, text, v) in [
        (
            "gateway_store_errors_total",
            "Database transactions that failed (their writes are lost)",
            s.store_errors,
        ),
        (
            "gateway_store_dropped_total",
            "Database writes dropped (queue full, over a cap)",
            s.store_dropped,
        ),
    ] {
        help(&mut o, name, "counter", text);
        let _ = writeln!(o, "{name} {v}");
    }
    help(
        &mut o,
        "gb28181_devices_online",
        "gauge",
        "Registered devices that are online",
    );
    let _ = writeln!(o, "gb28181_devices_online {}", s.devices_online());
    help(
        &mut o,
        "gb28181_device_online",
        "gauge",
        "1 if the device is online",
    );
    for d in &s.devices {
        let _ = writeln!(
            o,
            "gb28181_device_online{{id=\"{}\"}} {}",
            esc(&d.id),
            u8::from(d.online)
        );
    }
    let sip: [(&str, &str, u64); 10] = [
        (
            "gb28181_auth_failures_total",
            "Failed digest authentications (REGISTER)",
            s.sip.auth_failures,
        ),
        (
            "gb28181_auth_rate_limited_total",
            "REGISTERs refused because their source IP was blocked after failed authentications",
            s.sip.auth_rate_limited,
        ),
        (
            "gb28181_forged_requests_total",
            "Requests refused for claiming to be a device they did not come from",
            s.sip.forged_requests,
        ),
        (
            "gb28181_invalid_ids_total",
            "Device IDs refused by the ID pattern",
            s.sip.invalid_ids,
        ),
        (
            "gb28181_catalog_items_dropped_total",
            "Catalog items dropped (invalid IDs, beyond max-channels-per-device)",
            s.sip.catalog_items_dropped,
        ),
        (
            "gb28181_events_dropped_total",
            "SIP endpoint events dropped because subscribers fell behind",
            s.sip.events_dropped,
        ),
        (
            "gb28181_registers_total",
            "REGISTER requests received",
            s.sip.registers,
        ),
        (
            "gb28181_keepalives_total",
            "Keepalive MESSAGEs received",
            s.sip.keepalives,
        ),
        (
            "gb28181_keepalives_refused_total",
            "Keepalives refused because the device was not registered (it registers again)",
            s.sip.keepalives_refused,
        ),
        (
            "gb28181_sip_tcp_idle_closed_total",
            "SIP/TCP connections closed because they stayed silent (half-open, or never used)",
            s.sip.tcp_idle_closed,
        ),
    ];
    for (name, text, v) in sip {
        help(&mut o, name, "counter", text);
        let _ = writeln!(o, "{name} {v}");
    }
    help(
        &mut o,
        "gb28181_streams_active",
        "gauge",
        "Channels with a camera session",
    );
    let _ = writeln!(o, "gb28181_streams_active {}", s.streams_active());

    let state = |p: &PathStat| if p.ready { "ready" } else { "notReady" };
    help(
        &mut o,
        "gateway_paths",
        "gauge",
        "Paths by what feeds them (gb28181Channel, rtspPublisher, ...)",
    );
    let mut sources: std::collections::BTreeMap<&str, usize> = Default::default();
    for p in &s.paths {
        *sources.entry(p.source).or_default() += 1;
    }
    for (source, n) in sources {
        let _ = writeln!(o, "gateway_paths{{source=\"{source}\"}} {n}");
    }
    help(&mut o, "paths", "gauge", "Paths (one per channel)");
    for p in &s.paths {
        let _ = writeln!(
            o,
            "paths{{name=\"{}\",state=\"{}\"}} 1",
            esc(&p.name),
            state(p)
        );
    }
    type PathMetric = (
        &'static str,
        &'static str,
        &'static str,
        fn(&PathStat) -> u64,
    );
    let per_path: [PathMetric; 11] = [
        (
            "paths_bytes_received",
            "counter",
            "Bytes received from the source (PS of a GB28181 camera, RTP payload of a pulled one)",
            |p| p.bytes_received,
        ),
        (
            "paths_bytes_sent",
            "counter",
            "RTP bytes sent to RTSP clients",
            |p| p.bytes_sent,
        ),
        (
            "paths_readers",
            "gauge",
            "RTSP sessions playing the path",
            |p| u64::from(p.readers),
        ),
        (
            "paths_rtp_packets_received",
            "counter",
            "RTP packets received from the camera",
            |p| p.packets_received,
        ),
        (
            "paths_rtp_packets_lost",
            "counter",
            "RTP packets lost between camera and gateway",
            |p| p.packets_lost,
        ),
        (
            "paths_frames_received",
            "counter",
            "PS frames received",
            |p| p.frames,
        ),
        (
            "paths_bitrate_received",
            "gauge",
            "Bits per second received",
            |p| p.bitrate_in_bps,
        ),
        ("paths_bitrate_sent", "gauge", "Bits per second sent", |p| {
            p.bitrate_out_bps
        }),
        (
            "gb28181_invites",
            "counter",
            "INVITEs sent for the path",
            |p| p.invites,
        ),
        (
            "paths_stream_changes",
            "counter",
            "Codec or format changes of the camera's streams, followed live",
            |p| p.stream_changes,
        ),
        (
            "gb28181_key_frame_requests",
            "counter",
            "Key frames asked of the camera for new viewers (IFameCmd)",
            |p| p.key_frame_requests,
        ),
    ];
    for (name, kind, text, f) in per_path {
        help(&mut o, name, kind, text);
        for p in &s.paths {
            let _ = writeln!(
                o,
                "{name}{{name=\"{}\",state=\"{}\",device=\"{}\"}} {}",
                esc(&p.name),
                state(p),
                esc(&p.device_id),
                f(p)
            );
        }
    }
    help(
        &mut o,
        "paths_ingest_latency_ms",
        "gauge",
        "Frame arrival to hand-over to clients, average over the last second",
    );
    for p in s.paths.iter().filter(|p| p.ready) {
        let _ = writeln!(
            o,
            "paths_ingest_latency_ms{{name=\"{}\"}} {:.3}",
            esc(&p.name),
            p.latency_avg_ms
        );
    }
    help(
        &mut o,
        "paths_ingest_latency_max_ms",
        "gauge",
        "Frame arrival to hand-over to clients, maximum over the last second",
    );
    for p in s.paths.iter().filter(|p| p.ready) {
        let _ = writeln!(
            o,
            "paths_ingest_latency_max_ms{{name=\"{}\"}} {:.3}",
            esc(&p.name),
            p.latency_max_ms
        );
    }
    help(
        &mut o,
        "paths_rtp_jitter_ms",
        "gauge",
        "Interarrival jitter of the source's RTP (pulled cameras)",
    );
    for p in &s.paths {
        if let Some(j) = p.jitter_ms {
            let _ = writeln!(o, "paths_rtp_jitter_ms{{name=\"{}\"}} {j:.3}", esc(&p.name));
        }
    }
    help(&mut o, "hls_muxers", "gauge", "HLS muxers");
    for p in s.paths.iter().filter(|p| p.hls) {
        let _ = writeln!(o, "hls_muxers{{name=\"{}\"}} 1", esc(&p.name));
    }
    help(&mut o, "recorders", "gauge", "Channels being recorded");
    for p in s.paths.iter().filter(|p| p.recording) {
        let _ = writeln!(o, "recorders{{name=\"{}\"}} 1", esc(&p.name));
    }
    help(&mut o, "rtsp_conns_total", "gauge", "RTSP connections");
    let _ = writeln!(o, "rtsp_conns_total {}", s.rtsp_conns);
    help(&mut o, "rtmp_conns", "gauge", "RTMP connections");
    let _ = writeln!(o, "rtmp_conns {}", s.rtmp_conns);
    help(
        &mut o,
        "rtmp_bytes_received",
        "counter",
        "Bytes received from RTMP connections",
    );
    let _ = writeln!(o, "rtmp_bytes_received {}", s.rtmp_bytes_received);
    help(
        &mut o,
        "auth_failures_total",
        "counter",
        "Failed authentications (wrong or unknown credentials, refused source addresses)",
    );
    for (protocol, n) in &s.auth_failures {
        let _ = writeln!(
            o,
            "auth_failures_total{{protocol=\"{}\"}} {n}",
            esc(protocol)
        );
    }
    help(&mut o, "rtsp_sessions", "gauge", "RTSP sessions");
    let lbl = |x: &SessionStat| {
        format!(
            "id=\"{}\",state=\"read\",path=\"{}\",remote=\"{}\",transport=\"{}\"",
            esc(&x.id),
            esc(&x.path),
            esc(&x.remote),
            esc(&x.transport)
        )
    };
    for x in &s.sessions {
        let _ = writeln!(o, "rtsp_sessions{{{}}} 1", lbl(x));
    }
    help(
        &mut o,
        "rtsp_sessions_bytes_sent",
        "counter",
        "RTP bytes sent to the session",
    );
    for x in &s.sessions {
        let _ = writeln!(o, "rtsp_sessions_bytes_sent{{{}}} {}", lbl(x), x.bytes_sent);
    }
    help(
        &mut o,
        "rtsp_sessions_rtp_packets_sent",
        "counter",
        "RTP packets sent to the session",
    );
    for x in &s.sessions {
        let _ = writeln!(
            o,
            "rtsp_sessions_rtp_packets_sent{{{}}} {}",
            lbl(x),
            x.packets_sent
        );
    }
    help(
        &mut o,
        "rtsp_sessions_bitrate_sent",
        "gauge",
        "Bits per second sent to the session",
    );
    for x in &s.sessions {
        let _ = writeln!(
            o,
            "rtsp_sessions_bitrate_sent{{{}}} {}",
            lbl(x),
            x.bitrate_bps
        );
    }
    help(
        &mut o,
        "rtsp_sessions_outbound_frames_discarded",
        "counter",
        "Frames not sent to the session because it fell too far behind (direct RTSP path)",
    );
    for x in &s.sessions {
        let _ = writeln!(
            o,
            "rtsp_sessions_outbound_frames_discarded{{{}}} {}",
            lbl(x),
            x.frames_discarded
        );
    }
    help(
        &mut o,
        "rtsp_sessions_rtp_packets_lost",
        "gauge",
        "Packets lost as the client reports (RTCP)",
    );
    for x in &s.sessions {
        if let Some(v) = x.packets_lost {
            let _ = writeln!(o, "rtsp_sessions_rtp_packets_lost{{{}}} {v}", lbl(x));
        }
    }
    help(
        &mut o,
        "rtsp_sessions_rtp_jitter_ms",
        "gauge",
        "Interarrival jitter as the client reports (RTCP)",
    );
    for x in &s.sessions {
        if let Some(v) = x.jitter_ms {
            let _ = writeln!(o, "rtsp_sessions_rtp_jitter_ms{{{}}} {v:.3}", lbl(x));
        }
    }
    help(
        &mut o,
        "rtsp_sessions_round_trip_ms",
        "gauge",
        "Round trip from the client's RTCP",
    );
    for x in &s.sessions {
        if let Some(v) = x.round_trip_ms {
            let _ = writeln!(o, "rtsp_sessions_round_trip_ms{{{}}} {v:.3}", lbl(x));
        }
    }
    // WebRTC readers, named as MediaMTX names its `webrtc_sessions*`.
    let wlbl = |x: &SessionStat| {
        format!(
            "id=\"{}\",state=\"read\",path=\"{}\",remote=\"{}\",user=\"{}\"",
            esc(&x.id),
            esc(&x.path),
            esc(&x.remote),
            esc(&x.user)
        )
    };
    help(&mut o, "webrtc_sessions", "gauge", "WebRTC (WHEP) readers");
    for x in &s.webrtc_sessions {
        let _ = writeln!(o, "webrtc_sessions{{{}}} 1", wlbl(x));
    }
    help(
        &mut o,
        "webrtc_sessions_bytes_sent",
        "counter",
        "RTP payload bytes sent to the reader",
    );
    for x in &s.webrtc_sessions {
        let _ = writeln!(
            o,
            "webrtc_sessions_bytes_sent{{{}}} {}",
            wlbl(x),
            x.bytes_sent
        );
    }
    help(
        &mut o,
        "webrtc_sessions_bitrate_sent",
        "gauge",
        "Bits per second sent to the reader",
    );
    for x in &s.webrtc_sessions {
        let _ = writeln!(
            o,
            "webrtc_sessions_bitrate_sent{{{}}} {}",
            wlbl(x),
            x.bitrate_bps
        );
    }
    help(
        &mut o,
        "webrtc_bytes_sent_total",
        "counter",
        "RTP payload bytes sent to WebRTC readers, ended ones included",
    );
    let _ = writeln!(o, "webrtc_bytes_sent_total {}", s.webrtc_bytes_total);
    help(
        &mut o,
        "webrtc_sessions_refused_total",
        "counter",
        "WHEP offers refused because webrtc_max_sessions readers were running",
    );
    let _ = writeln!(o, "webrtc_sessions_refused_total {}", s.webrtc_refused);
    help(
        &mut o,
        "webrtc_transcodes",
        "gauge",
        "Channels transcoded from H.265 to H.264 for WebRTC readers",
    );
    let _ = writeln!(o, "webrtc_transcodes {}", s.webrtc_transcodes);
    o
}

/// Reads one sample `name{...labels containing label_part...} value` out of Prometheus text
/// (for tests and tools).
pub fn find_samples(text: &str, name: &str, label_part: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (lhs, v) = l.rsplit_once(' ')?;
            let metric = lhs.split('{').next()?;
            (metric == name && lhs.contains(label_part)).then(|| v.parse::<f64>().ok())?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_reads_back() {
        let s = Snapshot {
            devices: vec![
                DeviceStat {
                    id: "a".into(),
                    online: true,
                },
                DeviceStat {
                    id: "b\"x".into(),
                    online: false,
                },
            ],
            paths: vec![PathStat {
                name: "a".into(),
                device_id: "a".into(),
                ready: true,
                readers: 2,
                invites: 1,
                bytes_received: 1000,
                jitter_ms: Some(2.5),
                ..Default::default()
            }],
            sessions: vec![SessionStat {
                id: "s1".into(),
                path: "a".into(),
                transport: "tcp".into(),
                bytes_sent: 777,
                jitter_ms: Some(1.5),
                ..Default::default()
            }],
            rtsp_conns: 1,
            rtmp_conns: 2,
            rtmp_bytes_received: 1234,
            sip: SipCounters {
                auth_failures: 6,
                forged_requests: 2,
                ..Default::default()
            },
            auth_failures: vec![("rtsp".into(), 3)],
            mounts_refused: 3,
            store_errors: 4,
            store_dropped: 0,
            webrtc_sessions: vec![SessionStat {
                id: "1099511627776".into(),
                path: "a".into(),
                remote: "127.0.0.1:5000".into(),
                transport: "webrtc".into(),
                bytes_sent: 555,
                bitrate_bps: 8000,
                user: "alice".into(),
                ..Default::default()
            }],
            webrtc_bytes_total: 9999,
            webrtc_refused: 2,
            webrtc_transcodes: 0,
        };
        let t = render(&s);
        assert_eq!(
            find_samples(&t, "webrtc_sessions", "user=\"alice\""),
            vec![1.0]
        );
        assert_eq!(
            find_samples(&t, "webrtc_sessions_bytes_sent", "path=\"a\""),
            vec![555.0]
        );
        assert_eq!(
            find_samples(&t, "webrtc_bytes_sent_total", ""),
            vec![9999.0]
        );
        assert_eq!(
            find_samples(&t, "webrtc_sessions_refused_total", ""),
            vec![2.0]
        );
        assert!(s.summary().contains("webrtc 1"), "{}", s.summary());
        assert_eq!(find_samples(&t, "gateway_mounts_refused", ""), vec![3.0]);
        assert_eq!(find_samples(&t, "rtmp_conns", ""), vec![2.0]);
        assert_eq!(find_samples(&t, "rtmp_bytes_received", ""), vec![1234.0]);
        assert_eq!(
            find_samples(&t, "gateway_store_errors_total", ""),
            vec![4.0]
        );
        assert_eq!(
            find_samples(&t, "gb28181_auth_failures_total", ""),
            vec![6.0]
        );
        assert_eq!(
            find_samples(&t, "gb28181_forged_requests_total", ""),
            vec![2.0]
        );
        assert_eq!(
            find_samples(&t, "gb28181_auth_rate_limited_total", ""),
            vec![0.0]
        );
        assert_eq!(find_samples(&t, "gb28181_devices", ""), vec![2.0]);
        assert_eq!(
            find_samples(&t, "auth_failures_total", "protocol=\"rtsp\""),
            vec![3.0]
        );
        assert_eq!(find_samples(&t, "gb28181_devices_online", ""), vec![1.0]);
        assert_eq!(
            find_samples(&t, "paths", "name=\"a\",state=\"ready\""),
            vec![1.0]
        );
        assert_eq!(
            find_samples(&t, "paths_bytes_received", "name=\"a\""),
            vec![1000.0]
        );
        assert_eq!(find_samples(&t, "gb28181_invites", "name=\"a\""), vec![1.0]);
        assert_eq!(
            find_samples(&t, "paths_rtp_jitter_ms", "name=\"a\""),
            vec![2.5]
        );
        assert_eq!(
            find_samples(&t, "rtsp_sessions_bytes_sent", "id=\"s1\""),
            vec![777.0]
        );
        assert_eq!(
            find_samples(&t, "rtsp_sessions_rtp_jitter_ms", "s1"),
            vec![1.5]
        );
        assert!(t.contains("id=\"b\\\"x\""));
        // Every sample line has a value that parses.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                l.rsplit_once(' ')
                    .and_then(|(_, v)| v.parse::<f64>().ok())
                    .is_some(),
                "{l}"
            );
        }
        assert!(s.summary().contains("devices 2 (online 1)"));
    }
}
