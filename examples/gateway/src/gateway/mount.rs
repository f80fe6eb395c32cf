//! Mounting: endpoint events become mount jobs, applied in order by one worker thread;
//! channels mounted on the RTSP server (and HLS/recording started), unmounted with their device.

use super::*;

/// What the endpoint reported, applied by the mount worker (never on the endpoint's thread).
pub(super) enum MountJob {
    Registered(String),
    /// A registration restored from the data dir, with its stored channels.
    Restored {
        device: String,
        channels: Vec<String>,
    },
    Online(String),
    /// Keepalives missed: its channels stay mounted (viewers' streams end by the stream
    /// timeout when its media stops), it comes back with its next keepalive or REGISTER.
    Offline(String),
    Unregistered(String),
    Catalog {
        device: String,
        channels: Vec<String>,
        /// Items beyond the per-device cap, not queued.
        cut: usize,
    },
}

/// Jobs waiting for the mount worker at most; beyond, events are dropped with a warning.
pub(super) const MOUNT_QUEUE: usize = 1024;

/// The endpoint's subscriber: hands the event to the mount worker and returns at once.
pub(super) fn on_endpoint_event(sh: &Shared, tx: &SyncSender<MountJob>, ev: &EndpointEvent) {
    if let Some(store) = &sh.store
        && let Some(w) = store_write(sh, ev)
        && !store.send(w)
    {
        // The first, then every 100th (all counted in gateway_store_dropped_total).
        let dropped = store.stats().dropped.load(Ordering::Relaxed);
        if dropped % 100 == 1 {
            warn(&format!(
                "store queue full ({}): an event of device {} not stored ({dropped} so far)",
                crate::store::worker::QUEUE,
                printable(ev.device_id())
            ));
        }
    }
    let job = match ev {
        EndpointEvent::Registrar(RegEvent::Registered {
            device_id,
            refresh: false,
            ..
        }) => MountJob::Registered(device_id.clone()),
        EndpointEvent::Registrar(RegEvent::Unregistered { device_id, .. }) => {
            MountJob::Unregistered(device_id.clone())
        }
        EndpointEvent::Registrar(RegEvent::Online { device_id }) => {
            MountJob::Online(device_id.clone())
        }
        EndpointEvent::Registrar(RegEvent::Offline { device_id }) => {
            MountJob::Offline(device_id.clone())
        }
        EndpointEvent::Catalog {
            device_id, items, ..
        } => {
            // More than the cap can never mount: don't queue it.
            let cap = sh.cfg.max_channels_per_device;
            let named = items.iter().filter(|i| !i.device_id.is_empty());
            MountJob::Catalog {
                device: device_id.clone(),
                channels: named
                    .clone()
                    .take(cap)
                    .map(|i| i.device_id.clone())
                    .collect(),
                cut: named.count().saturating_sub(cap),
            }
        }
        // Refused or suspicious requests: IDs and sources (printable, never trusted text).
        e if gstgb28181::messages::is_security_event(e) => {
            warn(&gstgb28181::messages::describe(e));
            return;
        }
        _ => return,
    };
    if let Err(TrySendError::Full(_)) = tx.try_send(job) {
        warn(&format!(
            "mount queue full ({MOUNT_QUEUE}): dropped an event of device {}",
            printable(ev.device_id())
        ));
    }
}

/// The mount worker: mounts, catalog queries and unmounts, in the order the endpoint told.
pub(super) fn mount_worker(weak: Weak<Shared>, rx: Receiver<MountJob>) {
    while let Ok(job) = rx.recv() {
        let Some(sh) = weak.upgrade() else { return };
        if sh.stopping.load(Ordering::SeqCst) {
            return;
        }
        match job {
            MountJob::Registered(device) => {
                println!("[gateway] device {} registered", printable(&device));
                if let Err(e) = mount(&sh, &device, &device) {
                    sh.mounts_refused.fetch_add(1, Ordering::Relaxed);
                    warn(&e);
                    continue;
                }
                let _ = sh.endpoint.query(&device, "Catalog");
                if sh.store.is_some()
                    && let Ok(sn) = sh.endpoint.query(&device, "DeviceInfo")
                {
                    let mut q = lock(&sh.device_info_queries);
                    // Unanswered queries are forgotten in bulk.
                    if q.len() >= DEVICE_INFO_QUERIES {
                        q.clear();
                    }
                    q.insert(sn, device.clone());
                }
            }
            MountJob::Restored { device, channels } => {
                println!(
                    "[gateway] device {} restored from the data dir ({} channels), waiting for its keepalive",
                    printable(&device),
                    channels.len()
                );
                if let Err(e) = mount(&sh, &device, &device) {
                    sh.mounts_refused.fetch_add(1, Ordering::Relaxed);
                    warn(&e);
                    continue;
                }
                mount_catalog(&sh, &device, &channels, 0);
            }
            MountJob::Online(device) => {
                println!("[gateway] device {} online", printable(&device));
            }
            MountJob::Offline(device) => {
                println!(
                    "[gateway] device {} offline: {} keepalives missed",
                    printable(&device),
                    sh.cfg.max_missed_keepalives
                );
            }
            MountJob::Unregistered(device) => {
                println!("[gateway] device {} unregistered", printable(&device));
                unmount_device(&sh, &device);
            }
            MountJob::Catalog {
                device,
                channels,
                cut,
            } => mount_catalog(&sh, &device, &channels, cut),
        }
    }
}

/// Mounts the channels of a device's catalog (`cut`: items beyond the cap, not queued).
pub(super) fn mount_catalog(sh: &Arc<Shared>, device: &str, channels: &[String], cut: usize) {
    let mut refused = cut;
    let mut first =
        (cut > 0).then(|| format!("{cut} items beyond max-channels-per-device not even queued"));
    sh.mounts_refused.fetch_add(cut as u64, Ordering::Relaxed);
    for ch in channels {
        if let Err(e) = mount(sh, device, ch) {
            sh.mounts_refused.fetch_add(1, Ordering::Relaxed);
            refused += 1;
            first.get_or_insert(e);
        }
    }
    if let Some(e) = first {
        warn(&format!(
            "catalog of device {}: {refused} of {} channels refused, first: {e}",
            printable(device),
            channels.len() + cut
        ));
    }
}

pub(super) fn src_properties(cfg: &Config, device: &str, channel: &str) -> Vec<(String, String)> {
    [
        ("sip-address", cfg.sip_address.clone()),
        ("sip-port", cfg.sip_port.to_string()),
        ("sip-transport", cfg.sip_transport.clone()),
        ("server-id", cfg.server_id.clone()),
        ("password", cfg.password.clone()),
        ("device-passwords", cfg.device_passwords.clone()),
        ("device-id", device.to_string()),
        ("channel-id", channel.to_string()),
        ("transport", cfg.media_transport.clone()),
        ("media-address", cfg.media_address.clone()),
        ("media-port-range", cfg.media_port_range.clone()),
        ("sdp-address", cfg.sdp_address.clone()),
        ("wait-timeout", cfg.wait_timeout_s.to_string()),
        ("stream-timeout", cfg.stream_timeout_s.to_string()),
        ("strict-ssrc", cfg.strict_ssrc.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Mounts `channel` of `device` (RTSP, and HLS/recording if configured). Refused, with the
/// reason: an ID the gateway's policy refuses, a channel already mounted for another device
/// (it keeps its session), a device at its channel cap, a new device beyond the device cap.
/// Ok(false): already mounted for this device.
pub(super) fn mount(sh: &Arc<Shared>, device: &str, channel: &str) -> Result<bool, String> {
    if sh.stopping.load(Ordering::SeqCst) {
        return Ok(false);
    }
    sh.ids
        .check(device)
        .map_err(|e| format!("device {}: {e}", printable(device)))?;
    sh.ids
        .check(channel)
        .map_err(|e| format!("channel {}: {e}", printable(channel)))?;
    if super::publish::is_published(sh, channel) {
        return Err(format!("channel {channel}: a publisher has that path"));
    }
    let generation = {
        let mut chans = lock(&sh.channels);
        if let Some(c) = chans.get(channel) {
            if c.device_id != device {
                return Err(format!(
                    "channel {channel} of device {} is already mounted for device {}",
                    device, c.device_id
                ));
            }
            return Ok(false);
        }
        let mut per_device = lock(&sh.device_channels);
        let n = per_device.get(device).copied().unwrap_or(0);
        if n >= sh.cfg.max_channels_per_device {
            return Err(format!(
                "device {device} has {n} channels mounted (max-channels-per-device)"
            ));
        }
        if n == 0 && per_device.len() >= sh.cfg.max_devices {
            return Err(format!(
                "{} devices mounted (max-devices): device {device} not mounted",
                per_device.len()
            ));
        }
        *per_device.entry(device.to_string()).or_insert(0) += 1;
        let generation = sh.generations.fetch_add(1, Ordering::Relaxed);
        chans.insert(
            channel.to_string(),
            Channel {
                device_id: device.to_string(),
                generation,
                ..Default::default()
            },
        );
        generation
    };
    println!(
        "[gateway] channel {channel} of device {device}: rtsp://{}:{}/{channel}",
        sh.cfg.public_host, sh.rtsp_port
    );
    serve_path(sh, channel, generation, true, true);
    Ok(true)
}

/// Mounts a path on the RTSP server and starts its HLS/recording (when the gateway has them
/// and `hls`/`record` allow), kept running for as long as this mount (`generation`) lasts.
pub(super) fn serve_path(
    sh: &Arc<Shared>,
    channel: &str,
    generation: u64,
    hls: bool,
    record: bool,
) {
    let hooks: Arc<dyn ChannelHooks> = Arc::new(Hooks {
        shared: Arc::downgrade(sh),
    });
    let factory = ChannelFactory::new(
        channel,
        hooks,
        Duration::from_secs(u64::from(sh.cfg.wait_timeout_s.max(1)) + 5),
    );
    add_mount(sh, channel, factory);
    let hls = hls && sh.cfg.hls;
    let record_dir = sh.cfg.record_dir.clone().filter(|_| record);
    if hls || record_dir.is_some() {
        let s = OutputSettings {
            channel: channel.to_string(),
            hls_dir: hls.then(|| sh.cfg.hls_dir.clone()),
            record_dir,
            segment_s: sh.cfg.record_segment_s,
        };
        if hls {
            println!(
                "[gateway]   HLS: http://{}:{}/{channel}/index.m3u8",
                sh.cfg.public_host, sh.cfg.hls_port
            );
        }
        // HLS and recording keep the camera session up, restarted with it.
        let weak = Arc::downgrade(sh);
        let r = std::thread::Builder::new()
            .name(format!("outputs-{channel}"))
            .spawn(move || run_outputs(weak, s, generation));
        if let Err(e) = r {
            warn(&format!("channel {channel}: outputs thread: {e}"));
        }
    }
}
/// Moves a finished ingest's figures into the channel's totals.
/// Mounts `factory` at `/<path>` on the RTSP server, with the transports the gateway offers
/// (multicast too when a range is configured). Every mount goes through here.
pub(super) fn add_mount(sh: &Shared, path: &str, factory: ChannelFactory) {
    if let Some(pool) = &sh.multicast_pool {
        factory.set_address_pool(Some(pool));
        factory.set_protocols(
            gst_rtsp_server::gst_rtsp::RTSPLowerTrans::TCP
                | gst_rtsp_server::gst_rtsp::RTSPLowerTrans::UDP
                | gst_rtsp_server::gst_rtsp::RTSPLowerTrans::UDP_MCAST,
        );
    }
    if let Some(m) = sh.server.mount_points() {
        m.add_factory(&format!("/{path}"), factory);
    }
}

pub(super) fn retire_stats(c: &mut Channel, ingest: &Ingest) {
    if let Some(st) = ingest.src_stats() {
        c.invites_done += u64_field(&st, "invites");
        c.bytes_done += u64_field(&st, "bytes");
        c.packets_done += u64_field(&st, "packets-received");
        c.lost_done += u64_field(&st, "packets-lost");
        c.frames_done += u64_field(&st, "frames");
    }
    c.changes_done += ingest.generation();
    c.key_requests_done += ingest.key_frame_requests();
    if let Some(p) = &c.pull {
        p.ended(ingest);
    }
}

/// The factories' view of the gateway.
pub(super) struct Hooks {
    pub(super) shared: Weak<Shared>,
}

impl ChannelHooks for Hooks {
    fn ingest(&self, channel: &str) -> Result<Arc<Ingest>, String> {
        let sh = self.shared.upgrade().ok_or("gateway stopped")?;
        if sh.stopping.load(Ordering::SeqCst) {
            return Err("gateway stopping".into());
        }
        let mut chans = lock(&sh.channels);
        let c = chans.get_mut(channel).ok_or("channel not mounted")?;
        if let Some(i) = &c.ingest {
            if !i.is_failed() {
                return Ok(i.clone());
            }
            let old = c.ingest.take();
            if let Some(old) = old {
                retire_stats(c, &old);
                old.stop();
            }
        }
        if let Some(p) = c.pull.clone() {
            // Not under the lock: the start may wait out the source's back-off.
            drop(chans);
            let i = p.start_ingest(channel)?;
            let mut chans = lock(&sh.channels);
            let c = chans.get_mut(channel).ok_or("path not mounted")?;
            if let Some(running) = c.ingest.as_ref().filter(|r| !r.is_failed()) {
                // Another reader started one meanwhile.
                let running = running.clone();
                drop(chans);
                i.stop();
                return Ok(running);
            }
            if let Some(old) = c.ingest.replace(i.clone()) {
                retire_stats(c, &old);
                old.stop();
            }
            return Ok(i);
        }
        let i = Ingest::start(channel, &src_properties(&sh.cfg, &c.device_id, channel))?;
        let (endpoint, device, chan) = (
            Arc::downgrade(&sh.endpoint),
            c.device_id.clone(),
            channel.to_string(),
        );
        i.set_key_frame_requests(crate::ingest::KeyFrameRequests {
            after: Duration::from_secs(u64::from(sh.cfg.key_frame_request_after_s)),
            send: Box::new(move || {
                let ep = endpoint.upgrade().ok_or("gateway stopped")?;
                ep.force_key_frame(&device, &chan)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }),
        });
        c.ingest = Some(i.clone());
        Ok(i)
    }

    fn media_configured(
        &self,
        channel: &str,
        media: &gst_rtsp_server::RTSPMedia,
        counters: Arc<MediaCounters>,
    ) {
        let Some(sh) = self.shared.upgrade() else {
            return;
        };
        if let Some(c) = lock(&sh.channels).get_mut(channel) {
            c.sent_done += retire_gone_medias(&mut c.medias);
            c.medias.push((media.downgrade(), counters));
        }
    }

    fn maybe_stop(&self, channel: &str) {
        let Some(sh) = self.shared.upgrade() else {
            return;
        };
        // A pulled path still running stays open for its close delay.
        let later = lock(&sh.channels).get(channel).and_then(|c| {
            let p = c.pull.as_ref()?;
            let i = c.ingest.as_ref()?;
            (i.is_unused() && !i.is_failed() && !p.close_after().is_zero()).then(|| p.clone())
        });
        match later {
            Some(p) => pull::close_later(&sh, channel, &p),
            None => stop_if_unused(&sh, channel),
        }
    }
}

/// Stops the channel's ingest if nobody uses it (or it failed).
pub(super) fn stop_if_unused(sh: &Shared, channel: &str) {
    let stop = {
        let mut chans = lock(&sh.channels);
        let Some(c) = chans.get_mut(channel) else {
            return;
        };
        match &c.ingest {
            // Decided under the ingest's own lock: a reader that got this ingest a moment
            // ago and holds it now keeps it; checking `is_unused` and stopping later let
            // such a reader subscribe to an ingest being stopped (no data, then EOS).
            Some(i) if i.retire_if_unused() => {
                let i = c.ingest.take();
                if let Some(i) = &i {
                    retire_stats(c, i);
                }
                i
            }
            _ => None,
        }
    };
    if let Some(i) = stop {
        i.stop();
    }
}

pub(super) fn unmount_device(sh: &Shared, device: &str) {
    type Gone = (String, Option<ChannelOutputs>, Option<Arc<Ingest>>);
    let gone: Vec<Gone> = {
        let mut chans = lock(&sh.channels);
        let ids: Vec<String> = chans
            .iter()
            .filter(|(_, c)| c.device_id == device)
            .map(|(k, _)| k.clone())
            .collect();
        lock(&sh.device_channels).remove(device);
        ids.into_iter()
            .filter_map(|id| chans.remove(&id).map(|c| (id, c.outputs, c.ingest)))
            .collect()
    };
    for (id, outputs, ingest) in gone {
        if let Some(o) = outputs {
            o.stop();
        }
        if let Some(i) = ingest {
            i.stop();
        }
        if let Some(m) = sh.server.mount_points() {
            m.remove_factory(&format!("/{id}"));
        }
    }
}
