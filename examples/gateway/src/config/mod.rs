//! Gateway settings: every setting is a field of [`Config`] and its default is in
//! `Config::default()` (nowhere else). The TOML file (`--config FILE`, [`file`]) is read by serde
//! into `Config`, each value checked where it is read (errors as `file:line:col: message`); the
//! flags ([`flags`], clap) are `Option`s of the same names laid over the file. Precedence:
//! defaults < file < flags. GStreamer-free.

pub mod file;
pub mod flags;

use crate::auth::UserConfig;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Everything the gateway can be told. Bounds are checked when a file or flag is read (see
/// [`file`]); a `Config` built in code is taken as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the SIP endpoint (and of the RTSP/HTTP servers).
    pub sip_address: String,
    pub sip_port: u16,
    /// `udp` or `tcp`.
    #[serde(deserialize_with = "file::sip_transport")]
    pub sip_transport: String,
    #[serde(deserialize_with = "file::gb_id")]
    pub server_id: String,
    /// Default device password (empty: only devices listed in `device_passwords`).
    pub password: String,
    /// Per-device passwords `id=pw,id=pw`.
    pub device_passwords: String,
    /// Media transport asked of cameras: `udp`, `tcp-passive`, `tcp-active`.
    #[serde(deserialize_with = "file::media_transport")]
    pub media_transport: String,
    /// Address media is received on (empty: the local address facing the camera).
    #[serde(deserialize_with = "file::opt_ip")]
    pub media_address: String,
    /// Ports media is received on, `min-max` (first free one; empty: any free port).
    #[serde(deserialize_with = "file::port_range")]
    pub media_port_range: String,
    /// Address announced to cameras in the SDP instead of the receiving one (NAT, relays;
    /// empty: the receiving address).
    #[serde(deserialize_with = "file::opt_ip")]
    pub sdp_address: String,
    /// Address the RTSP and HLS servers listen on.
    pub listen_address: String,
    /// Address the metrics server listens on (loopback unless told).
    pub metrics_address: String,
    /// RTSP connections served at once; further ones are closed at once.
    #[serde(deserialize_with = "file::bounded::<_, _, 1, 100_000>")]
    pub max_rtsp_clients: u32,
    /// An RTSP connection without a session is closed after this many seconds.
    #[serde(deserialize_with = "file::bounded::<_, _, 1, 86_400>")]
    pub rtsp_idle_timeout_s: u64,
    /// The gateway answers RTSP itself and plays live paths over TCP (interleaved) straight
    /// from the ingest (no per-reader pipeline); other connections go on to gst-rtsp-server.
    pub rtsp_direct_tcp: bool,
    /// Direct RTSP path: KiB of frames a reader's connection may have waiting; a reader that
    /// falls further behind loses frames up to the next key frame.
    #[serde(deserialize_with = "file::bounded::<_, _, 64, 262_144>")]
    pub rtsp_write_queue_kib: u32,
    /// WebRTC (WHEP) readers at once; further offers get 503.
    #[serde(deserialize_with = "file::bounded::<_, _, 0, 10_000>")]
    pub webrtc_max_sessions: u32,
    /// H.265 channels transcoded to H.264 for browsers at once (WHEP `?transcode=h264`;
    /// each costs a decoder and an encoder); further ones get 503.
    #[serde(deserialize_with = "file::bounded::<_, _, 0, 64>")]
    pub webrtc_max_transcodes: u32,
    /// A WebRTC reader whose peer is not connected this many seconds after the answer (or
    /// disconnected this long) is ended.
    #[serde(deserialize_with = "file::bounded::<_, _, 1, 600>")]
    pub webrtc_connect_timeout_s: u64,
    /// Local addresses WebRTC readers gather ICE candidates on (comma-separated IPs; the
    /// answer carries host candidates of these only, no STUN/TURN). Add the address browsers
    /// reach the gateway at (e.g. its LAN address) to serve them beyond this machine.
    pub webrtc_local_addresses: String,
    /// An RTSP session whose client went silent (no RTCP, no keep-alive) ends after this many
    /// seconds; so does a TCP connection whose peer stops acknowledging (half-open).
    #[serde(deserialize_with = "file::bounded::<_, _, 1, 86_400>")]
    pub rtsp_session_timeout_s: u32,
    /// RTSP multicast for readers (`RTP/AVP;multicast`): the groups given out, an IPv4 and/or
    /// an IPv6 multicast range in CIDR form (empty: none; both empty: no multicast).
    #[serde(deserialize_with = "file::multicast_range")]
    pub multicast_ip_range: String,
    #[serde(deserialize_with = "file::multicast_range")]
    pub multicast_ipv6_range: String,
    /// RTP port of the multicast groups (RTCP on the next one).
    #[serde(deserialize_with = "file::bounded::<_, _, 1024, 65_534>")]
    pub multicast_rtp_port: u16,
    /// TTL (IPv6: hop limit) of multicast packets (1: this network only).
    #[serde(deserialize_with = "file::bounded::<_, _, 1, 255>")]
    pub multicast_ttl: u8,
    /// Readers and publishers (`[[users]]` tables of the config file; none: nobody is let in).
    #[serde(skip_serializing, deserialize_with = "file::users")]
    pub users: Vec<UserConfig>,
    /// Pulled cameras (`[[paths]]` tables of the config file, see [`crate::pull`]).
    #[serde(skip_serializing, deserialize_with = "crate::pull::paths")]
    pub paths: Vec<crate::pull::PathConfig>,
    /// Paths pushed to external RTMP servers (`[[push]]` tables of the config file, see
    /// [`crate::push`]; never served back: their URLs hold stream keys).
    #[serde(skip_serializing, deserialize_with = "crate::push::pushes")]
    pub push: Vec<crate::push::PushConfig>,
    /// Host printed in URLs.
    pub public_host: String,
    pub rtsp_port: u16,
    /// Address of the RTMP server (publishers and readers).
    pub rtmp_address: String,
    /// RTMP port (0: no RTMP server).
    pub rtmp_port: u16,
    pub metrics_port: u16,
    pub hls_port: u16,
    /// HLS per channel (needs an always-on session with the camera).
    pub hls: bool,
    /// Empty: a private directory (`$XDG_RUNTIME_DIR/gst-ipcam-hls` or a fresh one in the
    /// temp dir); a given one is created 0700, and refused if it is a symlink or shared.
    pub hls_dir: PathBuf,
    /// HTTP limits: the whole request head within this time (also the keep-alive idle time).
    #[serde(deserialize_with = "file::bounded::<_, _, 1, 600>")]
    pub http_header_timeout_s: u64,
    /// HTTP limits: handler and response each within this time.
    #[serde(deserialize_with = "file::bounded::<_, _, 1, 3600>")]
    pub http_request_timeout_s: u64,
    /// HTTP limits: open connections per source address (IPv6: per /64) and in all.
    #[serde(deserialize_with = "file::bounded::<_, _, 1, 100_000>")]
    pub http_max_connections_per_ip: u32,
    #[serde(deserialize_with = "file::bounded::<_, _, 1, 1_000_000>")]
    pub http_max_connections: u32,
    /// Record each channel to MP4 segments there (empty: no recording).
    #[serde(
        serialize_with = "file::ser_opt_path",
        deserialize_with = "file::opt_path"
    )]
    pub record_dir: Option<PathBuf>,
    #[serde(deserialize_with = "file::bounded::<_, _, 1, 86_400>")]
    pub record_segment_s: u64,
    /// Built-in simulated cameras.
    #[serde(deserialize_with = "file::bounded::<_, _, 0, 10_000>")]
    pub simulate: u32,
    /// Codec of the simulated cameras: `h264` or `h265`.
    #[serde(deserialize_with = "file::sim_codec")]
    pub sim_codec: String,
    #[serde(deserialize_with = "file::bounded::<_, _, 16, 4096>")]
    pub sim_width: u32,
    #[serde(deserialize_with = "file::bounded::<_, _, 16, 4096>")]
    pub sim_height: u32,
    #[serde(deserialize_with = "file::bounded::<_, _, 10, 100_000>")]
    pub sim_bitrate_kbps: u32,
    /// First simulated device id; the others count up from it.
    #[serde(deserialize_with = "file::gb_id")]
    pub sim_first_id: String,
    /// Seconds between console summaries (0: none).
    #[serde(deserialize_with = "file::bounded::<_, _, 0, 86_400>")]
    pub summary_interval_s: u64,
    /// Seconds gb28181src waits for a device / for media.
    #[serde(deserialize_with = "file::bounded::<_, _, 0, 3600>")]
    pub wait_timeout_s: u32,
    #[serde(deserialize_with = "file::bounded::<_, _, 1, 3600>")]
    pub stream_timeout_s: u32,
    /// Seconds between the keepalives a device is expected to send (GB28181: 60).
    #[serde(deserialize_with = "file::bounded::<_, _, 1, 3600>")]
    pub keepalive_interval_s: u32,
    /// Keepalives missed in a row before a device is offline (GB28181 platforms: 3).
    #[serde(deserialize_with = "file::bounded::<_, _, 1, 100>")]
    pub max_missed_keepalives: u32,
    /// Device and channel IDs accepted (a regular expression over the whole ID, see
    /// `gstgb28181::core::id`); checked when set.
    #[serde(deserialize_with = "file::id_pattern")]
    pub id_pattern: String,
    /// Catalog channels mounted per device at most (a Catalog beyond it is cut, with a warning).
    #[serde(deserialize_with = "file::bounded::<_, _, 1, 1_000_000>")]
    pub max_channels_per_device: usize,
    /// Registrations accepted at once, and devices with mounted channels at most.
    #[serde(deserialize_with = "file::bounded::<_, _, 1, 1_000_000>")]
    pub max_devices: usize,
    /// Where state that survives a restart is kept (empty: nothing is kept).
    pub data_dir: PathBuf,
    /// A new viewer who finds no key frame, or one older than this, makes the gateway ask the
    /// camera for one (GB28181 IFameCmd), at most once per this interval per channel; 0: never.
    #[serde(deserialize_with = "file::bounded::<_, _, 0, 3600>")]
    pub key_frame_request_after_s: u32,
    /// Playback/download sessions of camera recordings (API) at once at most.
    #[serde(deserialize_with = "file::bounded::<_, _, 0, 256>")]
    pub max_playbacks: usize,
    /// Paths published (RTSP ANNOUNCE/RECORD, RTMP) at once at most.
    #[serde(deserialize_with = "file::bounded::<_, _, 0, 10_000>")]
    pub max_publishers: usize,
    /// Subscribe to every device's Catalog changes / alarms / positions when it registers
    /// (GB28181 SUBSCRIBE, renewed until it unregisters).
    pub subscribe_catalog: bool,
    pub subscribe_alarm: bool,
    pub subscribe_mobile_position: bool,
    /// Seconds between position reports asked for.
    #[serde(deserialize_with = "file::bounded::<_, _, 1, 3600>")]
    pub mobile_position_interval_s: u32,
    /// Expires asked for in subscriptions (refreshed at three quarters).
    #[serde(deserialize_with = "file::bounded::<_, _, 60, 86_400>")]
    pub subscription_expires_s: u32,
    /// Camera media only with the SSRC the camera answered, from one address (off: by
    /// dialog, what cameras need: another SSRC from the camera's own IP is taken and said).
    pub strict_ssrc: bool,
    /// Upper platforms the gateway registers with as a lower platform (GB28181 cascade,
    /// `[[cascade]]` tables of the file only; none: no cascade).
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::cascade::settings::uppers"
    )]
    pub cascade: Vec<crate::cascade::CascadeConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sip_address: "0.0.0.0".into(),
            sip_port: 5060,
            sip_transport: "udp".into(),
            server_id: "34020000002000000001".into(),
            password: "12345678".into(),
            device_passwords: String::new(),
            media_transport: "udp".into(),
            media_address: String::new(),
            media_port_range: String::new(),
            sdp_address: String::new(),
            listen_address: "0.0.0.0".into(),
            metrics_address: "127.0.0.1".into(),
            max_rtsp_clients: 256,
            rtsp_idle_timeout_s: 30,
            rtsp_direct_tcp: true,
            rtsp_write_queue_kib: 4096,
            webrtc_max_sessions: 64,
            webrtc_max_transcodes: 2,
            webrtc_connect_timeout_s: 10,
            webrtc_local_addresses: "127.0.0.1".into(),
            rtsp_session_timeout_s: 60,
            multicast_ip_range: String::new(),
            multicast_ipv6_range: String::new(),
            multicast_rtp_port: 8002,
            multicast_ttl: 1,
            users: Vec::new(),
            paths: Vec::new(),
            push: Vec::new(),
            public_host: "127.0.0.1".into(),
            rtsp_port: 8554,
            rtmp_address: "0.0.0.0".into(),
            rtmp_port: 1935,
            metrics_port: 9998,
            hls_port: 8888,
            hls: false,
            hls_dir: PathBuf::new(),
            http_header_timeout_s: 10,
            http_request_timeout_s: 30,
            http_max_connections_per_ip: 32,
            http_max_connections: 1024,
            record_dir: None,
            record_segment_s: 60,
            simulate: 1,
            sim_codec: "h264".into(),
            sim_width: 640,
            sim_height: 360,
            sim_bitrate_kbps: 1000,
            sim_first_id: "34020000001320000001".into(),
            summary_interval_s: 5,
            wait_timeout_s: 10,
            stream_timeout_s: 10,
            keepalive_interval_s: 60,
            max_missed_keepalives: 3,
            id_pattern: gstgb28181::core::id::DEFAULT_PATTERN.into(),
            max_channels_per_device: 1024,
            max_devices: 10_000,
            data_dir: PathBuf::new(),
            key_frame_request_after_s: 2,
            subscribe_catalog: true,
            subscribe_alarm: true,
            subscribe_mobile_position: false,
            mobile_position_interval_s: 5,
            subscription_expires_s: 3600,
            strict_ssrc: false,
            max_playbacks: 16,
            cascade: Vec::new(),
            max_publishers: 64,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadError {
    /// The file, as `file:line:col: message` where the error has a place.
    File(String),
    /// A flag's value, as `--flag: message`.
    Flag(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::File(m) | LoadError::Flag(m) => f.write_str(m),
        }
    }
}

impl Config {
    /// Defaults, then the file if any, then the flags given.
    pub fn load(file: Option<&Path>, flags: &flags::Settings) -> Result<Config, LoadError> {
        let mut table = toml::Table::new();
        if let Some(path) = file {
            let text = file::read(path).map_err(LoadError::File)?;
            Config::from_toml(&text)
                .map_err(|e| LoadError::File(format!("{}:{e}", path.display())))?;
            table = text
                .parse()
                .map_err(|e: toml::de::Error| LoadError::File(e.message().to_string()))?;
        }
        for (key, value) in flags.to_table().map_err(LoadError::Flag)? {
            // Each flag alone first, so that an error names it.
            let alone = toml::Table::from_iter([(key.clone(), value.clone())]);
            alone.try_into::<Config>().map_err(|e| {
                LoadError::Flag(format!("--{}: {}", key.replace('_', "-"), e.message()))
            })?;
            table.insert(key, value);
        }
        table
            .try_into::<Config>()
            .map_err(|e| LoadError::Flag(e.message().to_string()))
    }

    /// What `load` cannot see alone: the user table (hashes, networks, path patterns).
    pub fn check(&self) -> Result<(), String> {
        self.id_policy()?;
        crate::auth::Users::from_config(&self.users, crate::auth::REALM)
            .map(drop)
            .map_err(|e| format!("users: {e}"))
    }

    /// The settings as TOML, passwords hidden and users counted (for `--check-config`).
    pub fn to_toml_redacted(&self) -> String {
        let mut t = toml::Table::try_from(self).unwrap_or_default();
        for k in ["password", "device_passwords"] {
            if t.get(k)
                .and_then(|v| v.as_str())
                .is_some_and(|s| !s.is_empty())
            {
                t.insert(k.into(), "<hidden>".into());
            }
        }
        format!(
            "{}# {} user(s)\n# {} pulled path(s)\n",
            toml::to_string(&t).unwrap_or_default(),
            self.users.len(),
            self.paths.len()
        )
    }

    /// Settings a running gateway takes on reload (`POST /v1/config/reload`, SIGHUP).
    pub const RELOADABLE: [&'static str; 3] = ["users", "password", "device_passwords"];

    /// The settings that differ between `self` (running) and `new` and that only a restart
    /// applies (every one but [`Config::RELOADABLE`]), sorted.
    pub fn restart_needed(&self, new: &Config) -> Vec<String> {
        let old = toml::Table::try_from(self).unwrap_or_default();
        let new = toml::Table::try_from(new).unwrap_or_default();
        let mut keys: Vec<String> = old
            .keys()
            .chain(new.keys())
            .filter(|k| !Config::RELOADABLE.contains(&k.as_str()))
            .filter(|k| old.get(*k) != new.get(*k))
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The ID policy of `id_pattern`.
    pub fn id_policy(&self) -> Result<gstgb28181::core::id::IdPolicy, String> {
        gstgb28181::core::id::IdPolicy::with_pattern(&self.id_pattern)
            .map_err(|e| format!("id-pattern: {e}"))
    }

    /// Per-device passwords as a map.
    pub fn device_password_map(&self) -> HashMap<String, String> {
        self.device_passwords
            .split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .filter(|(k, _)| !k.is_empty())
            .collect()
    }

    /// The id of simulated camera `i` (0-based): the first id's serial counted up.
    pub fn sim_device_id(&self, i: u32) -> String {
        sim_device_id(&self.sim_first_id, i)
    }
}

/// `first` with its last 6 digits (the serial) advanced by `i`, wrapping inside 6 digits.
pub fn sim_device_id(first: &str, i: u32) -> String {
    let at = first.len().saturating_sub(6);
    if !first.is_char_boundary(at) {
        return format!("{first}{i}");
    }
    let (head, serial) = first.split_at(at);
    let n = serial.parse::<u32>().unwrap_or(0);
    format!("{head}{:06}", (n + i) % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(a: &[&str]) -> flags::Settings {
        flags::parse_from(std::iter::once("gw").chain(a.iter().copied()))
            .unwrap()
            .settings
    }

    #[test]
    fn restart_needed_lists_changed_settings_but_the_reloadable_ones() {
        let old = Config::default();
        let mut new = old.clone();
        new.password = "other".into();
        new.device_passwords = "34020000001320000001=x".into();
        new.users = vec![UserConfig::with_password("u", "pw", &[]).unwrap()];
        assert!(old.restart_needed(&new).is_empty());
        new.rtsp_port = 9554;
        new.hls = !old.hls;
        assert_eq!(old.restart_needed(&new), vec!["hls", "rtsp_port"]);
    }

    #[test]
    fn defaults_then_file_then_flags() {
        let dir = std::env::temp_dir().join(format!("gw-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("gw.toml");
        std::fs::write(
            &f,
            "sip_port = 5070\nrtsp_port = 9554\nhls = true\npassword = \"secret\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&f),
            &flags(&["--rtsp-port=8555", "--simulate", "3", "--data-dir", "/d"]),
        )
        .unwrap();
        assert_eq!(c.sip_port, 5070);
        assert_eq!(c.rtsp_port, 8555);
        assert!(c.hls);
        assert_eq!(c.password, "secret");
        assert_eq!(c.simulate, 3);
        assert_eq!(c.data_dir, Path::new("/d"));
        assert_eq!(c.hls_port, Config::default().hls_port);
        assert_eq!(Config::load(None, &flags(&[])), Ok(Config::default()));
        // A flag's value is checked as the file's is, and named.
        assert_eq!(
            Config::load(Some(&f), &flags(&["--max-devices", "0"])),
            Err(LoadError::Flag(
                "--max-devices: 0 is not within 1 to 1000000".into()
            ))
        );
        for bad in [
            &["--server-id", "123"][..],
            &["--id-pattern", "("],
            &["--sip-transport", "sctp"],
            &["--sim-width", "8"],
        ] {
            assert!(
                matches!(Config::load(None, &flags(bad)), Err(LoadError::Flag(_))),
                "{bad:?}"
            );
        }
        let c = Config::load(
            None,
            &flags(&["--id-pattern", "[0-9]{18}", "--max-devices=3"]),
        );
        assert_eq!(
            c.map(|c| (c.id_pattern, c.max_devices)).ok(),
            Some(("[0-9]{18}".into(), 3))
        );
        // The file's errors name the file, line and column.
        std::fs::write(&f, "sip_port = 5070\nnope = 1\n").unwrap();
        let e = Config::load(Some(&f), &flags(&[])).unwrap_err();
        let LoadError::File(m) = e else {
            panic!("{e:?}")
        };
        assert!(
            m.starts_with(&format!("{}:2:1: unknown field `nope`", f.display())),
            "{m}"
        );
        assert!(matches!(
            Config::load(Some(&dir.join("missing.toml")), &flags(&[])),
            Err(LoadError::File(_))
        ));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn redacted_settings() {
        let c = Config::from_toml("password = \"s3cret\"\nsip_port = 5070\n").unwrap();
        let t = c.to_toml_redacted();
        assert!(!t.contains("s3cret"), "{t}");
        assert!(t.contains("password = \"<hidden>\""), "{t}");
        assert!(t.contains("device_passwords = \"\""), "{t}");
        assert!(t.contains("sip_port = 5070\n"), "{t}");
        assert!(t.ends_with("# 0 user(s)\n# 0 pulled path(s)\n"), "{t}");
    }

    #[test]
    fn device_ids_and_passwords() {
        assert_eq!(
            sim_device_id("34020000001320000001", 9),
            "34020000001320000010"
        );
        assert_eq!(
            sim_device_id("34020000001320999999", 1),
            "34020000001320000000"
        );
        let c = Config::from_toml("device_passwords = \"a=1, b=2,bad\"").unwrap();
        let m = c.device_password_map();
        assert_eq!(m.get("a").map(String::as_str), Some("1"));
        assert_eq!(m.get("b").map(String::as_str), Some("2"));
        assert_eq!(m.len(), 2);
    }

    /// The sample config: its `# key = value` lines are exactly the defaults, every setting is
    /// there, and it loads.
    #[test]
    fn sample_config_documents_every_default() {
        let sample = include_str!("../../gateway.toml");
        assert!(Config::from_toml(sample).is_ok());
        let commented: String = sample
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                })
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(Config::from_toml(&commented), Ok(Config::default()));
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        let given: toml::Table = commented.parse().unwrap();
        for k in defaults.keys() {
            assert!(given.contains_key(k), "{k} is missing from gateway.toml");
        }
    }
}
