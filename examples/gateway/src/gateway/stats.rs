//! Statistics: bitrates, RTP session figures and the snapshot behind `/metrics`, the console
//! summary and the sessions API.

use super::*;

#[derive(Default)]
pub(super) struct Rates {
    /// Previous (bytes, time) per key, for bitrates.
    prev: HashMap<String, (u64, Instant)>,
    /// Sender octets/packets at the time a session was first seen, per (session, stream).
    baselines: HashMap<(String, u32), (u64, u64)>,
    /// Keys asked for since the last [`Rates::forget_unseen`].
    seen: HashSet<String>,
}

impl Rates {
    fn rate(&mut self, key: &str, bytes: u64, now: Instant) -> u64 {
        let r = match self.prev.get(key) {
            Some((b, t)) if now > *t && bytes >= *b => {
                ((bytes - b) as f64 * 8.0 / (now - *t).as_secs_f64()) as u64
            }
            _ => 0,
        };
        // Keep the window at least 1 s so rates don't jump with frame boundaries.
        match self.prev.get(key) {
            Some((_, t)) if now.duration_since(*t) < Duration::from_secs(1) => {}
            _ => {
                self.prev.insert(key.to_string(), (bytes, now));
            }
        }
        self.seen.insert(key.to_string());
        r
    }

    /// Forgets the keys (ended sessions, unmounted paths) not asked for since the last call.
    fn forget_unseen(&mut self) {
        let seen = std::mem::take(&mut self.seen);
        self.prev.retain(|k, _| seen.contains(k));
    }
}

pub(super) fn u64_field(s: &gst::StructureRef, name: &str) -> u64 {
    s.get::<u64>(name)
        .or_else(|_| s.get::<u32>(name).map(u64::from))
        .unwrap_or(0)
}

/// Per-source statistics structures of an RTPSession object.
/// RTP health of a source as its receiving RTP sessions saw it (remote senders only).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RtpHealth {
    pub packets: u64,
    pub lost: u64,
    pub bytes: u64,
    /// The worst stream's interarrival jitter.
    pub jitter_ms: f64,
}

/// Sums the remote senders' statistics of `sessions` (rtpbin's RTP sessions).
pub(super) fn rtp_health(sessions: impl IntoIterator<Item = glib::Object>) -> RtpHealth {
    let mut h = RtpHealth::default();
    let mut lost = 0i64;
    for session in sessions {
        for s in source_stats(&session) {
            if s.get::<bool>("internal").unwrap_or(true) {
                continue;
            }
            h.packets += u64_field(&s, "packets-received");
            h.bytes += u64_field(&s, "octets-received");
            lost += i64::from(s.get::<i32>("packets-lost").unwrap_or(0));
            let clock = f64::from(s.get::<i32>("clock-rate").unwrap_or(0));
            if clock > 0.0 {
                h.jitter_ms = h
                    .jitter_ms
                    .max(u64_field(&s, "jitter") as f64 * 1000.0 / clock);
            }
        }
    }
    h.lost = lost.max(0) as u64;
    h
}

pub(super) fn source_stats(rtpsession: &glib::Object) -> Vec<gst::Structure> {
    let Some(stats) = rtpsession
        .find_property("stats")
        .and_then(|_| rtpsession.property::<Option<gst::Structure>>("stats"))
    else {
        return Vec::new();
    };
    #[allow(deprecated)]
    let arr = stats.get::<glib::ValueArray>("source-stats");
    #[allow(deprecated)]
    match arr {
        Ok(a) => a
            .iter()
            .filter_map(|v| v.get::<gst::Structure>().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Client address, transport and RTCP port of a stream transport (not in the bindings).
pub(super) fn transport_info(
    client_ip: &str,
    t: &gst_rtsp_server::RTSPStreamTransport,
) -> (String, &'static str, Option<i32>) {
    // SAFETY: the transport outlives the call; the returned struct is owned by it and only
    // read here.
    unsafe {
        let tr = gst_rtsp_server::ffi::gst_rtsp_stream_transport_get_transport(t.to_glib_none().0);
        if tr.is_null() {
            return (client_ip.to_string(), "?", None);
        }
        let lower = (*tr).lower_transport;
        if lower & gst_rtsp_server::gst_rtsp::ffi::GST_RTSP_LOWER_TRANS_TCP != 0 {
            (client_ip.to_string(), "tcp", None)
        } else if lower & gst_rtsp_server::gst_rtsp::ffi::GST_RTSP_LOWER_TRANS_UDP_MCAST != 0 {
            (client_ip.to_string(), "udp-mcast", None)
        } else {
            let p = (*tr).client_port;
            (format!("{client_ip}:{}", p.min), "udp", Some(p.max))
        }
    }
}

/// Collects every figure.
/// Remembers what the session's medias had sent when it started playing.
pub(super) fn record_baselines(sh: &Shared, session: &gst_rtsp_server::RTSPSession) {
    let Some(sid) = session.sessionid().map(|s| s.to_string()) else {
        return;
    };
    let medias: Vec<gst_rtsp_server::RTSPMedia> = session
        .filter(None)
        .iter()
        .filter_map(|sm| sm.media())
        .collect();
    let counters: Vec<Arc<MediaCounters>> = {
        let chans = lock(&sh.channels);
        chans
            .values()
            .flat_map(|c| c.medias.iter())
            .filter(|(m, _)| m.upgrade().is_some_and(|m| medias.contains(&m)))
            .map(|(_, k)| k.clone())
            .collect()
    };
    if let Some(k) = counters.first() {
        lock(&sh.rates)
            .baselines
            .entry((sid, 0))
            .or_insert_with(|| k.get());
    }
}

/// Refreshes the ingests' element statistics, with no gateway lock held (reading them can
/// block while gb28181src is busy, so this runs on a thread of its own).
pub(super) fn refresh_ingest_stats(sh: &Shared) {
    let ingests: Vec<Arc<Ingest>> = lock(&sh.channels)
        .values()
        .filter_map(|c| c.ingest.clone())
        .collect();
    for i in &ingests {
        i.refresh_stats();
    }
}

pub(super) fn snapshot(sh: &Shared) -> Snapshot {
    let now = Instant::now();
    let ep_stats = sh.endpoint.stats();
    let sip = SipCounters {
        auth_failures: ep_stats.registrar.auth_failures,
        auth_rate_limited: ep_stats.registrar.rate_limited,
        forged_requests: ep_stats.registrar.forged_requests,
        invalid_ids: ep_stats.registrar.invalid_ids,
        catalog_items_dropped: ep_stats.catalog_items_dropped,
        events_dropped: ep_stats.events_dropped,
        registers: ep_stats.registrar.registers,
        keepalives: ep_stats.registrar.keepalives,
        keepalives_refused: ep_stats.registrar.keepalives_refused,
        tcp_idle_closed: ep_stats.tcp_idle_closed,
    };
    let devices: Vec<DeviceStat> = sh
        .endpoint
        .devices()
        .into_iter()
        .map(|d| DeviceStat {
            id: d.id,
            online: d.online,
        })
        .collect();
    // Which media serves which channel.
    let mut media_channel: Vec<(gst_rtsp_server::RTSPMedia, String, Arc<MediaCounters>)> =
        Vec::new();
    let mut paths: Vec<PathStat> = Vec::new();
    let mut rates = lock(&sh.rates);
    let refresh_latency = {
        let mut at = lock(&sh.latency_at);
        let due = at.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if due {
            *at = Some(now);
        }
        due
    };
    {
        let chans = lock(&sh.channels);
        if refresh_latency {
            let mut lat = lock(&sh.latency);
            lat.clear();
            for (id, c) in chans.iter() {
                if let Some(l) = c.ingest.as_ref().and_then(|i| i.take_latency()) {
                    lat.insert(id.clone(), l);
                }
            }
        }
        let lat = lock(&sh.latency).clone();
        for (id, c) in chans.iter() {
            let mut p = PathStat {
                name: id.clone(),
                source: if c.pull.is_some() {
                    "rtspSource"
                } else {
                    "gb28181Channel"
                },
                device_id: c.device_id.clone(),
                invites: c.invites_done,
                bytes_received: c.bytes_done,
                packets_received: c.packets_done,
                packets_lost: c.lost_done,
                frames: c.frames_done,
                stream_changes: c.changes_done + c.ingest.as_ref().map_or(0, |i| i.generation()),
                key_frame_requests: c.key_requests_done
                    + c.ingest.as_ref().map_or(0, |i| i.key_frame_requests()),
                hls: c
                    .outputs
                    .as_ref()
                    .is_some_and(|o| o.settings.hls_dir.is_some() && o.is_running()),
                recording: c
                    .outputs
                    .as_ref()
                    .is_some_and(|o| o.settings.record_dir.is_some() && o.is_running()),
                ..Default::default()
            };
            if let Some(st) = c.ingest.as_ref().and_then(|i| i.src_stats()) {
                p.invites += u64_field(&st, "invites");
                p.bytes_received += u64_field(&st, "bytes");
                p.packets_received += u64_field(&st, "packets-received");
                p.packets_lost += u64_field(&st, "packets-lost");
                p.frames += u64_field(&st, "frames");
                p.ready = st.get::<bool>("streaming").unwrap_or(false);
                p.jitter_ms = st.get::<f64>("jitter-ms").ok();
            }
            if let Some((avg, max)) = lat.get(id) {
                p.latency_avg_ms = *avg;
                p.latency_max_ms = *max;
            }
            p.bytes_sent = c.sent_done + sh.direct.path_bytes(id);
            for (m, k) in &c.medias {
                p.bytes_sent += k.get().0;
                if let Some(m) = m.upgrade() {
                    media_channel.push((m, id.clone(), k.clone()));
                }
            }
            p.bitrate_in_bps = rates.rate(&format!("in:{id}"), p.bytes_received, now);
            p.bitrate_out_bps = rates.rate(&format!("out:{id}"), p.bytes_sent, now);
            paths.push(p);
        }
    }
    for pb in super::publish::list(sh) {
        let name = pb.name;
        paths.push(PathStat {
            source: pb.source.as_str(),
            ready: pb.ready,
            bytes_received: pb.bytes_received,
            bytes_sent: pb.bytes_sent,
            bitrate_in_bps: rates.rate(&format!("in:{name}"), pb.bytes_received, now),
            bitrate_out_bps: rates.rate(&format!("out:{name}"), pb.bytes_sent, now),
            hls: pb.hls,
            recording: pb.recording,
            packets_received: pb.rtp.map_or(0, |h| h.packets),
            packets_lost: pb.rtp.map_or(0, |h| h.lost),
            jitter_ms: pb.rtp.map(|h| h.jitter_ms),
            name,
            ..Default::default()
        });
    }
    media_channel.extend(super::publish::medias(sh));

    let mut sessions = Vec::new();
    let mut live: std::collections::HashSet<String> = std::collections::HashSet::new();
    let clients = sh.server.client_filter(None);
    for client in &clients {
        let ip = client_ip(client);
        for session in client.session_filter(None) {
            let sid = session
                .sessionid()
                .map(|s| s.to_string())
                .unwrap_or_default();
            for sm in session.filter(None) {
                let Some(media) = sm.media() else { continue };
                let Some((path, counters)) = media_channel
                    .iter()
                    .find(|(m, _, _)| *m == media)
                    .map(|(_, c, k)| (c.clone(), k.clone()))
                else {
                    continue;
                };
                // What the media sent since this session was first seen.
                let (octets, packets) = counters.get();
                let base = *rates
                    .baselines
                    .entry((sid.clone(), 0))
                    .or_insert((octets, packets));
                let mut x = SessionStat {
                    bytes_sent: octets.saturating_sub(base.0),
                    packets_sent: packets.saturating_sub(base.1),
                    // Never the session ID itself: whoever reads metrics could take it over.
                    id: sh
                        .rtsp_guard
                        .session_number(&sid)
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "-".into()),
                    path: path.clone(),
                    ..Default::default()
                };
                for i in 0..media.n_streams() {
                    let Some(t) = sm.transport(i) else { continue };
                    let (remote, kind, rtcp_port) = transport_info(&ip, &t);
                    x.remote = remote;
                    x.transport = kind.into();
                    let Some(rs) = media.stream(i).and_then(|s| s.rtpsession()) else {
                        continue;
                    };
                    for s in source_stats(&rs) {
                        let internal = s.get::<bool>("internal").unwrap_or(false);
                        if !internal
                            && let Some(port) = rtcp_port
                            && s.get::<String>("rtcp-from").ok().as_deref()
                                == Some(format!("{ip}:{port}").as_str())
                            && s.get::<bool>("have-rb").unwrap_or(false)
                        {
                            let clock = f64::from(
                                media
                                    .stream(i)
                                    .and_then(|st| st.rtpinfo())
                                    .map(|(_, _, clock, _)| clock)
                                    .unwrap_or(90_000)
                                    .max(1),
                            );
                            let lost = s.get::<i32>("rb-packetslost").unwrap_or(0);
                            *x.packets_lost.get_or_insert(0) += i64::from(lost);
                            let j = u64_field(&s, "rb-jitter") as f64 * 1000.0 / clock;
                            x.jitter_ms = Some(x.jitter_ms.unwrap_or(0.0).max(j));
                            let rtt = u64_field(&s, "rb-round-trip") as f64 * 1000.0 / 65536.0;
                            x.round_trip_ms = Some(rtt);
                        }
                    }
                }
                x.bitrate_bps = rates.rate(&format!("sess:{sid}:{path}"), x.bytes_sent, now);
                if let Some(p) = paths.iter_mut().find(|p| p.name == path) {
                    p.readers += 1;
                }
                sessions.push(x);
                live.insert(sid.clone());
            }
        }
    }
    // The direct path's readers.
    for d in sh.direct.sessions() {
        let bytes = d.output.payload_bytes.load(Ordering::Relaxed);
        let key = format!("sess:direct:{}:{}", d.number, d.path);
        if let Some(p) = paths.iter_mut().find(|p| p.name == d.path) {
            p.readers += 1;
        }
        sessions.push(SessionStat {
            id: d.number.to_string(),
            path: d.path.clone(),
            remote: d.remote.clone(),
            transport: "tcp".into(),
            bytes_sent: bytes,
            packets_sent: d.output.packets.load(Ordering::Relaxed),
            frames_discarded: d.output.dropped_frames.load(Ordering::Relaxed),
            bitrate_bps: rates.rate(&key, bytes, now),
            ..Default::default()
        });
    }
    // Forget baselines of sessions that are gone.
    rates
        .baselines
        .retain(|(sid, _), _| live.contains(sid.as_str()));
    rates.forget_unseen();
    drop(rates);
    Snapshot {
        devices,
        paths,
        sessions,
        rtsp_conns: (clients.len() + sh.direct.connections()) as u32,
        rtmp_conns: sh.rtmp_stats.conns.load(Ordering::Relaxed) as u32,
        rtmp_bytes_received: sh.rtmp_stats.bytes_received.load(Ordering::Relaxed),
        sip,
        auth_failures: [Protocol::Rtsp, Protocol::Http, Protocol::Rtmp]
            .iter()
            .map(|p| (p.as_str().to_string(), sh.rtsp_guard.users().failures(*p)))
            .collect(),
        mounts_refused: sh.mounts_refused.load(Ordering::Relaxed),
        store_errors: sh
            .store
            .as_ref()
            .map_or(0, |s| s.stats().errors.load(Ordering::Relaxed)),
        store_dropped: sh
            .store
            .as_ref()
            .map_or(0, |s| s.stats().dropped.load(Ordering::Relaxed)),
        webrtc_sessions: sh
            .webrtc
            .list()
            .into_iter()
            .map(|w| SessionStat {
                id: w.number.to_string(),
                path: w.channel,
                remote: w.remote,
                transport: "webrtc".into(),
                bytes_sent: w.bytes_sent,
                packets_sent: w.packets_sent,
                bitrate_bps: w.bitrate_bps,
                user: w.user,
                ..Default::default()
            })
            .collect(),
        webrtc_bytes_total: sh.webrtc.bytes_total(),
        webrtc_refused: sh.webrtc.refused_full.load(Ordering::Relaxed),
        webrtc_transcodes: sh.webrtc.transcodes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One snapshot per second with 20 new sessions each: the bitrate memory holds only the
    /// keys of the last snapshot, not one per session ever seen.
    #[test]
    fn rates_forget_ended_sessions() {
        let mut r = Rates::default();
        let t0 = Instant::now();
        for round in 0..100u64 {
            let now = t0 + Duration::from_secs(round);
            r.rate("in:34020000001320000001", round * 1000, now);
            for c in 0..20 {
                r.rate(&format!("sess:{round}-{c}:34020000001320000001"), 0, now);
            }
            r.forget_unseen();
            assert_eq!(r.prev.len(), 21, "round {round}");
        }
        // The path's rate survives the sweeps: 1000 bytes a second = 8000 bit/s.
        let now = t0 + Duration::from_secs(100);
        assert_eq!(r.rate("in:34020000001320000001", 100_000, now), 8000);
    }
}
