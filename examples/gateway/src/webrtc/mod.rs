//! WebRTC readers over WHEP (`POST /<channel>/whep` with an SDP offer → `201` with the
//! answer and the session's `Location`; `DELETE` that location ends it). No trickle ICE:
//! the answer carries every candidate. The offer checks are GStreamer-free ([`offer`]); a
//! viewer is a `webrtcbin` fed from the channel's ingest ([`session`]); [`Sessions`] bounds
//! and ends them (DELETE, kick, ICE failure or a peer that never connects or goes away,
//! the channel going away).

pub mod offer;
pub mod routes;
pub mod session;
pub mod transcode;

use crate::factory::ChannelHooks;
use crate::ingest;
use gst_ipcam_common::sync::lock;
use gst_webrtc::WebRTCPeerConnectionState as Pc;
use session::Session;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// WebRTC session numbers (what the API lists and kicks) start here, apart from RTSP's.
pub const FIRST_NUMBER: u64 = 1 << 40;

/// Limits of the WebRTC readers.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_sessions: usize,
    /// Channels transcoded (H.265 -> H.264) for browsers at once at most.
    pub max_transcodes: usize,
    /// Readers from one IP address at most (the HTTP per-address connection cap).
    pub max_per_ip: usize,
    /// A peer not connected this long after the answer, or disconnected this long, ends.
    pub connect_timeout: Duration,
    /// How long a viewer waits for the camera's streams.
    pub stream_timeout: Duration,
    /// The addresses ICE candidates are gathered on.
    pub local_addresses: Vec<std::net::IpAddr>,
}

/// `webrtc_local_addresses`: comma-separated IP addresses, at least one, at most 16.
pub fn parse_local_addresses(s: &str) -> Result<Vec<std::net::IpAddr>, String> {
    let v: Vec<std::net::IpAddr> = s
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            gstgb28181::core::addr::parse_ip(a)
                .ok_or_else(|| format!("webrtc_local_addresses: {a:?} is not an IP address"))
        })
        .collect::<Result<_, _>>()?;
    if v.is_empty() || v.len() > 16 {
        return Err("webrtc_local_addresses: 1 to 16 IP addresses".into());
    }
    Ok(v)
}

/// One listed WebRTC reader.
#[derive(Debug, Clone)]
pub struct Info {
    pub number: u64,
    pub channel: String,
    pub remote: String,
    pub user: String,
    pub bytes_sent: u64,
    pub packets_sent: u64,
    pub bitrate_bps: u64,
    pub connected: bool,
}

struct Entry {
    number: u64,
    /// The secret part of the session's `Location`.
    token: String,
    remote: String,
    user: String,
    session: Arc<Session>,
    /// (when, bytes) of the previous rate sample, and the rate then.
    rate: Mutex<(Instant, u64, u64)>,
}

/// The WebRTC readers of the gateway.
pub struct Sessions {
    settings: Settings,
    entries: Mutex<HashMap<u64, Arc<Entry>>>,
    /// Offers being answered (their pipelines exist): they count against the cap too.
    pending: Mutex<usize>,
    next_number: AtomicU64,
    /// Offers refused because `max_sessions` readers were running.
    pub refused_full: AtomicU64,
    /// Bytes sent by readers that ended.
    bytes_done: AtomicU64,
    started_total: AtomicU64,
    transcoders: transcode::Transcoders,
}

/// Why a WHEP request failed: HTTP status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhepError {
    pub status: u16,
    pub message: String,
}

impl WhepError {
    pub fn new(status: u16, message: impl Into<String>) -> WhepError {
        WhepError {
            status,
            message: message.into(),
        }
    }
}

/// A slot taken in [`Sessions::pending`] until the offer is answered or refused.
struct Reserved<'a>(&'a Mutex<usize>);

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let mut p = lock(self.0);
        *p = p.saturating_sub(1);
    }
}

/// The address part of `ip:port` (as the sessions keep it).
fn remote_ip(remote: &str) -> Option<std::net::IpAddr> {
    remote.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

fn random_token() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        return String::new();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Sessions {
    pub fn new(settings: Settings) -> Arc<Sessions> {
        Arc::new(Sessions {
            entries: Mutex::new(HashMap::new()),
            pending: Mutex::new(0),
            next_number: AtomicU64::new(FIRST_NUMBER),
            refused_full: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            started_total: AtomicU64::new(0),
            transcoders: transcode::Transcoders::new(settings.max_transcodes),
            settings,
        })
    }

    /// Answers a WHEP offer for `channel` (blocking: waits for the camera's streams and
    /// ICE gathering). Returns the answer and the session's `/<channel>/whep/<token>`.
    /// `transcode`: an H.265 channel is sent as H.264 from its shared transcoder (video
    /// only) instead of being refused.
    pub fn offer(
        self: &Arc<Self>,
        hooks: Arc<dyn ChannelHooks>,
        channel: &str,
        body: &[u8],
        remote: String,
        user: String,
        transcode: bool,
    ) -> Result<(String, String), WhepError> {
        let parsed =
            offer::parse_offer(body).map_err(|r| WhepError::new(r.status(), r.message()))?;
        let full = || {
            self.refused_full.fetch_add(1, Ordering::Relaxed);
            WhepError::new(
                503,
                format!(
                    "{} WebRTC readers already (webrtc_max_sessions)",
                    self.settings.max_sessions
                ),
            )
        };
        let ip = remote_ip(&remote);
        let per_ip = |entries: &HashMap<u64, Arc<Entry>>| {
            entries
                .values()
                .filter(|e| remote_ip(&e.remote) == ip)
                .count()
        };
        let per_ip_full = || {
            self.refused_full.fetch_add(1, Ordering::Relaxed);
            WhepError::new(
                429,
                format!(
                    "{} WebRTC readers from this address already (http_max_connections_per_ip)",
                    self.settings.max_per_ip
                ),
            )
        };
        {
            let entries = lock(&self.entries);
            let mut pending = lock(&self.pending);
            if entries.len() + *pending >= self.settings.max_sessions {
                return Err(full());
            }
            if per_ip(&entries) >= self.settings.max_per_ip {
                return Err(per_ip_full());
            }
            *pending += 1;
        }
        let _reserved = Reserved(&self.pending);
        let ingest = hooks
            .ingest(channel)
            .map_err(|e| WhepError::new(404, format!("channel {channel}: {e}")))?;
        ingest.hold();
        let streams = match ingest.wait_streams(self.settings.stream_timeout) {
            Ok(s) => s,
            Err(e) => {
                ingest.release();
                hooks.maybe_stop(channel);
                return Err(WhepError::new(503, e));
            }
        };
        let h265 = streams
            .video
            .as_ref()
            .is_some_and(|c| session::codec_of(c) == offer::Codec::H265);
        let mut transcoder = None;
        let streams = if transcode && h265 {
            let video = streams.video.clone().unwrap_or_else(gst::Caps::new_empty);
            match self.transcoders.get(channel, &ingest, &hooks, &video) {
                Ok(t) => transcoder = Some(t),
                Err((status, message)) => {
                    ingest.release();
                    hooks.maybe_stop(channel);
                    return Err(WhepError::new(status, message));
                }
            }
            ingest::Streams {
                video: Some(transcode::output_caps()),
                audio: streams.audio.clone(),
                generation: streams.generation,
            }
        } else {
            streams
        };
        let profile = streams
            .video
            .as_ref()
            .and_then(|c| c.structure(0)?.get::<String>("profile").ok())
            .and_then(|p| offer::profile_idc(&p));
        let plan = offer::plan(
            &parsed,
            streams.video.as_ref().map(|c| session::codec_of(c)),
            streams.audio.as_ref().map(|c| session::codec_of(c)),
            profile,
        );
        let plan = match plan {
            Ok(p) => p,
            Err(r) => {
                ingest.release();
                hooks.maybe_stop(channel);
                return Err(WhepError::new(r.status(), r.message()));
            }
        };
        let (session, answer) = Session::start(
            &self.settings.local_addresses,
            channel,
            ingest,
            hooks,
            &streams,
            &plan,
            body,
            transcoder,
        )
        .map_err(|e| WhepError::new(500, e))?;
        let token = random_token();
        if token.is_empty() {
            return Err(WhepError::new(500, "no randomness"));
        }
        let number = self.next_number.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            number,
            token: token.clone(),
            remote,
            user,
            session,
            rate: Mutex::new((Instant::now(), 0, 0)),
        });
        {
            let mut entries = lock(&self.entries);
            // Checked again: others may have started meanwhile.
            let refused = if entries.len() >= self.settings.max_sessions {
                Some(full())
            } else if per_ip(&entries) >= self.settings.max_per_ip {
                Some(per_ip_full())
            } else {
                None
            };
            if let Some(e) = refused {
                drop(entries);
                entry.session.end();
                return Err(e);
            }
            entries.insert(number, entry.clone());
        }
        self.started_total.fetch_add(1, Ordering::Relaxed);
        let weak = Arc::downgrade(self);
        let timeout = self.settings.connect_timeout;
        let spawned = std::thread::Builder::new()
            .name(format!("whep-{number}"))
            .spawn(move || watch(weak, entry, timeout));
        if spawned.is_err() {
            self.end(number);
            return Err(WhepError::new(503, "no thread for the session"));
        }
        Ok((answer, format!("/{channel}/whep/{token}")))
    }

    fn end(&self, number: u64) -> bool {
        let e = lock(&self.entries).remove(&number);
        match e {
            Some(e) => {
                e.session.end();
                self.bytes_done
                    .fetch_add(e.session.counters.get().0, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Ends the session whose location is `/<channel>/whep/<token>`.
    pub fn delete(&self, channel: &str, token: &str) -> bool {
        let number = lock(&self.entries)
            .values()
            .find(|e| e.session.channel == channel && e.token == token && !token.is_empty())
            .map(|e| e.number);
        number.is_some_and(|n| self.end(n))
    }

    /// Ends the session listed as `number` (the API's kick).
    pub fn kick(&self, number: u64) -> bool {
        self.end(number)
    }

    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Channels transcoded for browsers now.
    pub fn transcodes(&self) -> usize {
        self.transcoders.len()
    }

    /// Sessions started since the gateway started.
    pub fn started_total(&self) -> u64 {
        self.started_total.load(Ordering::Relaxed)
    }

    /// Bytes sent by every WebRTC reader, ended ones included.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_done.load(Ordering::Relaxed)
            + lock(&self.entries)
                .values()
                .map(|e| e.session.counters.get().0)
                .sum::<u64>()
    }

    /// The readers now, with their rates (updated at most once a second).
    pub fn list(&self) -> Vec<Info> {
        let now = Instant::now();
        let mut out: Vec<Info> = lock(&self.entries)
            .values()
            .map(|e| {
                let (bytes, packets) = e.session.counters.get();
                let mut r = lock(&e.rate);
                let dt = now.saturating_duration_since(r.0);
                if dt >= Duration::from_secs(1) {
                    r.2 = ((bytes.saturating_sub(r.1)) as f64 * 8.0 / dt.as_secs_f64()) as u64;
                    r.0 = now;
                    r.1 = bytes;
                }
                Info {
                    number: e.number,
                    channel: e.session.channel.clone(),
                    remote: e.remote.clone(),
                    user: e.user.clone(),
                    bytes_sent: bytes,
                    packets_sent: packets,
                    bitrate_bps: r.2,
                    connected: e.session.connection_state() == Pc::Connected,
                }
            })
            .collect();
        out.sort_by_key(|i| i.number);
        out
    }

    /// Ends every session (the gateway stops).
    pub fn end_all(&self) {
        let numbers: Vec<u64> = lock(&self.entries).keys().copied().collect();
        for n in numbers {
            self.end(n);
        }
    }
}

/// A connected peer may be silent (no RTCP) for the connect timeout plus this.
pub const PEER_SILENCE_MARGIN: Duration = Duration::from_secs(3);

/// Ends the session when its pipeline ends (the channel went away), when ICE fails, when
/// the peer is not connected for `timeout` (never connected, or disconnected), or when it
/// sent no RTCP for `timeout` + [`PEER_SILENCE_MARGIN`] (gone without DELETE).
fn watch(sessions: Weak<Sessions>, entry: Arc<Entry>, timeout: Duration) {
    let mut unconnected_since = Some(Instant::now());
    loop {
        let over = entry.session.pipeline_over(Duration::from_millis(250));
        if entry.session.is_ended() {
            return;
        }
        let state = entry.session.connection_state();
        let now = Instant::now();
        let why = match state {
            _ if over => Some("the stream ended"),
            Pc::Failed => Some("ICE/DTLS failed"),
            Pc::Closed => Some("closed"),
            Pc::Connected => {
                unconnected_since = None;
                // Connected but silent: the peer went away without a word.
                let heard = entry.session.last_rtcp().unwrap_or(entry.session.started);
                (now.saturating_duration_since(heard) >= timeout + PEER_SILENCE_MARGIN)
                    .then_some("no RTCP from the peer")
            }
            _ => {
                let since = *unconnected_since.get_or_insert(now);
                (now.duration_since(since) >= timeout).then_some("peer not connected in time")
            }
        };
        if let Some(why) = why {
            let Some(s) = sessions.upgrade() else {
                entry.session.end();
                return;
            };
            eprintln!(
                "[gateway] WebRTC reader {} of {} ({}) ended: {why}",
                entry.number, entry.session.channel, entry.remote
            );
            s.end(entry.number);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_addresses_are_ips() {
        let v = super::parse_local_addresses("127.0.0.1, ::1,[::1]").unwrap();
        assert_eq!(v.len(), 3);
        for bad in ["", "localhost", "127.0.0.1,x", "1.2.3.4.5"] {
            assert!(super::parse_local_addresses(bad).is_err(), "{bad}");
        }
        let many = vec!["127.0.0.1"; 17].join(",");
        assert!(super::parse_local_addresses(&many).is_err());
    }
}
