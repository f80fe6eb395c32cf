//! Gateway settings: defaults, a TOML config file (`--config FILE`) and command-line flags
//! (`--key value` or `--key=value`, the same keys as the file with `-` or `_`). Flags win over
//! the file. GStreamer-free.

use crate::auth::UserConfig;
use std::collections::HashMap;
use std::path::PathBuf;

/// Everything the gateway can be told.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address of the SIP endpoint (and of the RTSP/HTTP servers).
    pub sip_address: String,
    pub sip_port: u16,
    /// `udp` or `tcp`.
    pub sip_transport: String,
    pub server_id: String,
    /// Default device password (empty: only devices listed in `device_passwords`).
    pub password: String,
    /// Per-device passwords `id=pw,id=pw`.
    pub device_passwords: String,
    /// Media transport asked of cameras: `udp`, `tcp-passive`, `tcp-active`.
    pub media_transport: String,
    /// Address the RTSP and HLS servers listen on.
    pub listen_address: String,
    /// Address the metrics server listens on (loopback unless told).
    pub metrics_address: String,
    /// RTSP connections served at once; further ones are closed at once.
    pub max_rtsp_clients: u32,
    /// An RTSP connection without a session is closed after this many seconds.
    pub rtsp_idle_timeout_s: u64,
    /// Readers and publishers (`[[users]]` tables of the config file; none: nobody is let in).
    pub users: Vec<UserConfig>,
    /// Host printed in URLs.
    pub public_host: String,
    pub rtsp_port: u16,
    pub metrics_port: u16,
    pub hls_port: u16,
    /// HLS per channel (needs an always-on session with the camera).
    pub hls: bool,
    /// Empty: a private directory (`$XDG_RUNTIME_DIR/gst-ipcam-hls` or a fresh one in the
    /// temp dir); a given one is created 0700, and refused if it is a symlink or shared.
    pub hls_dir: PathBuf,
    /// HTTP limits: the whole request head within this time (also the keep-alive idle time).
    pub http_header_timeout_s: u64,
    /// HTTP limits: handler and response each within this time.
    pub http_request_timeout_s: u64,
    /// HTTP limits: open connections per source address (IPv6: per /64) and in all.
    pub http_max_connections_per_ip: u32,
    pub http_max_connections: u32,
    /// Record each channel to MP4 segments there (empty: no recording).
    pub record_dir: Option<PathBuf>,
    pub record_segment_s: u64,
    /// Built-in simulated cameras.
    pub simulate: u32,
    /// Codec of the simulated cameras: `h264` or `h265`.
    pub sim_codec: String,
    pub sim_width: u32,
    pub sim_height: u32,
    pub sim_bitrate_kbps: u32,
    /// First simulated device id; the others count up from it.
    pub sim_first_id: String,
    /// Seconds between console summaries (0: none).
    pub summary_interval_s: u64,
    /// Seconds gb28181src waits for a device / for media.
    pub wait_timeout_s: u32,
    pub stream_timeout_s: u32,
    /// Device and channel IDs accepted (a regular expression over the whole ID, see
    /// `gstgb28181::core::id`); checked when set.
    pub id_pattern: String,
    /// Catalog channels mounted per device at most (a Catalog beyond it is cut, with a warning).
    pub max_channels_per_device: usize,
    /// Registrations accepted at once, and devices with mounted channels at most.
    pub max_devices: usize,
    /// Devices, channels and registrations kept across restarts in `<data_dir>/gateway.db`
    /// (created 0700); empty: nothing persists.
    pub data_dir: PathBuf,
    /// A new viewer who finds no key frame, or one older than this, makes the gateway ask the
    /// camera for one (GB28181 IFameCmd), at most once per this interval per channel; 0: never.
    pub key_frame_request_after_s: u32,
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
            listen_address: "0.0.0.0".into(),
            metrics_address: "127.0.0.1".into(),
            max_rtsp_clients: 256,
            rtsp_idle_timeout_s: 30,
            users: Vec::new(),
            public_host: "127.0.0.1".into(),
            rtsp_port: 8554,
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
            id_pattern: gstgb28181::core::id::DEFAULT_PATTERN.into(),
            max_channels_per_device: 1024,
            max_devices: 10_000,
            data_dir: PathBuf::new(),
            key_frame_request_after_s: 2,
        }
    }
}

pub const USAGE: &str = "\
Options (also keys of the TOML file given with --config FILE; flags win):
  --sip-address A        SIP endpoint address (0.0.0.0)
  --sip-port N           SIP port (5060)
  --sip-transport T      udp | tcp (udp)
  --server-id ID         the platform's 20-digit id (34020000002000000001)
  --password PW          default device password (12345678)
  --device-passwords L   per-device passwords id=pw,id=pw
  --media-transport T    udp | tcp-passive | tcp-active (udp)
  --listen-address A     address of the RTSP/HLS servers (0.0.0.0)
  --metrics-address A    address of the /metrics server (127.0.0.1)
  --max-rtsp-clients N   RTSP connections at once, more are closed (256)
  --rtsp-idle-timeout-s N  close RTSP connections without a session after N s (30)
  --public-host H        host printed in URLs (127.0.0.1)
  --rtsp-port N          RTSP port (8554)
  --metrics-port N       Prometheus /metrics port (9998)
  --hls-port N           HLS HTTP port (8888)
  --hls true|false       HLS for every channel (false)
  --hls-dir DIR          where playlists and segments go (a private 0700 directory)
  --http-header-timeout-s N / --http-request-timeout-s N  HTTP deadlines (10 / 30)
  --http-max-connections-per-ip N / --http-max-connections N  HTTP caps (32 / 1024)
  --record-dir DIR       record every channel to MP4 segments there
  --record-segment-s N   segment length (60)
  --simulate N           built-in simulated cameras (1)
  --sim-codec C          h264 | h265 (h264)
  --sim-width/--sim-height/--sim-bitrate-kbps  simulated camera video (640x360, 1000)
  --sim-first-id ID      first simulated device id (34020000001320000001)
  --summary-interval-s N console summary period, 0 = off (5)
  --wait-timeout-s N / --stream-timeout-s N  gb28181src timeouts (10 / 10)
  --id-pattern RE        device/channel IDs accepted, a regular expression ([0-9]{20})
  --max-channels-per-device N  channels mounted per device at most (1024)
  --max-devices N        registrations and mounted devices at most (10000)
  --data-dir DIR         keep devices, channels, registrations in DIR/gateway.db (none)
Users (config file only; without any, nobody may read):
  [[users]]  user = \"demo\"  pass = \"argon2:...\"  (from --hash-password)  digest_ha1 = \"...\"
             tokens = [\"sha256:...\"]  ips = [\"10.0.0.0/8\"]
             permissions = [{action = \"read\", path = \"\"}]  (read publish playback api metrics;
             path empty = all, exact name, or ~regex; user \"any\" without pass = anonymous)";

impl Config {
    /// Applies one setting. Keys use `-` or `_`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let key = key.replace('_', "-");
        let num = |v: &str| -> Result<u64, String> {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("{key}: not a number: {v}"))
        };
        let port = |v: &str| -> Result<u16, String> {
            v.trim()
                .parse::<u16>()
                .map_err(|_| format!("{key}: not a port: {v}"))
        };
        let boolean = |v: &str| -> Result<bool, String> {
            match v.trim() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(format!("{key}: not a boolean: {v}")),
            }
        };
        let v = value.to_string();
        match key.as_str() {
            "sip-address" => self.sip_address = v,
            "sip-port" => self.sip_port = port(value)?,
            "sip-transport" => match value {
                "udp" | "tcp" => self.sip_transport = v,
                _ => return Err(format!("sip-transport: udp or tcp, not {value}")),
            },
            "server-id" => {
                if value.len() != 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("server-id: 20 digits expected, not {value}"));
                }
                self.server_id = v
            }
            "password" => self.password = v,
            "device-passwords" => self.device_passwords = v,
            "media-transport" => match value {
                "udp" | "tcp-passive" | "tcp-active" => self.media_transport = v,
                _ => {
                    return Err(format!(
                        "media-transport: udp, tcp-passive or tcp-active, not {value}"
                    ));
                }
            },
            "listen-address" => self.listen_address = v,
            "metrics-address" => self.metrics_address = v,
            "max-rtsp-clients" => self.max_rtsp_clients = num(value)?.clamp(1, 100_000) as u32,
            "rtsp-idle-timeout-s" => self.rtsp_idle_timeout_s = num(value)?.clamp(1, 86_400),
            "users" => return Err("users: only as [[users]] tables in the config file".into()),
            "public-host" => self.public_host = v,
            "rtsp-port" => self.rtsp_port = port(value)?,
            "metrics-port" => self.metrics_port = port(value)?,
            "hls-port" => self.hls_port = port(value)?,
            "hls" => self.hls = boolean(value)?,
            "hls-dir" => self.hls_dir = PathBuf::from(value),
            "http-header-timeout-s" => self.http_header_timeout_s = num(value)?.clamp(1, 600),
            "http-request-timeout-s" => self.http_request_timeout_s = num(value)?.clamp(1, 3600),
            "http-max-connections-per-ip" => {
                self.http_max_connections_per_ip = num(value)?.clamp(1, 100_000) as u32
            }
            "http-max-connections" => {
                self.http_max_connections = num(value)?.clamp(1, 1_000_000) as u32
            }
            "record-dir" => {
                self.record_dir = (!value.is_empty()).then(|| PathBuf::from(value));
            }
            "record-segment-s" => self.record_segment_s = num(value)?.max(1),
            "simulate" => self.simulate = num(value)?.min(10_000) as u32,
            "sim-codec" => match value {
                "h264" | "h265" => self.sim_codec = v,
                _ => return Err(format!("sim-codec: h264 or h265, not {value}")),
            },
            "sim-width" => self.sim_width = num(value)?.clamp(16, 4096) as u32,
            "sim-height" => self.sim_height = num(value)?.clamp(16, 4096) as u32,
            "sim-bitrate-kbps" => self.sim_bitrate_kbps = num(value)?.clamp(10, 100_000) as u32,
            "sim-first-id" => {
                if value.len() != 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("sim-first-id: 20 digits expected, not {value}"));
                }
                self.sim_first_id = v
            }
            "summary-interval-s" => self.summary_interval_s = num(value)?,
            "wait-timeout-s" => self.wait_timeout_s = num(value)?.min(3600) as u32,
            "stream-timeout-s" => self.stream_timeout_s = num(value)?.clamp(1, 3600) as u32,
            "id-pattern" => {
                gstgb28181::core::id::IdPolicy::with_pattern(value)
                    .map_err(|e| format!("id-pattern: {e}"))?;
                self.id_pattern = v
            }
            "max-channels-per-device" => {
                self.max_channels_per_device = num(value)?.clamp(1, 1_000_000) as usize
            }
            "max-devices" => self.max_devices = num(value)?.clamp(1, 1_000_000) as usize,
            "data-dir" => self.data_dir = PathBuf::from(value),
            "key-frame-request-after-s" => {
                self.key_frame_request_after_s = num(value)?.min(3600) as u32
            }
            _ => return Err(format!("unknown setting {key}")),
        }
        Ok(())
    }

    /// Applies a TOML document (flat keys; strings, integers and booleans; `[[users]]`).
    pub fn apply_toml(&mut self, text: &str) -> Result<(), String> {
        let table: toml::Table = text.parse().map_err(|e| format!("config: {e}"))?;
        for (k, v) in table {
            if k == "users" {
                self.users = v
                    .try_into::<Vec<UserConfig>>()
                    .map_err(|e| format!("config: users: {e}"))?;
                if self.users.len() > crate::auth::MAX_USERS {
                    return Err(format!("config: users: at most {}", crate::auth::MAX_USERS));
                }
                continue;
            }
            let s = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => return Err(format!("config: {k}: unsupported value {other}")),
            };
            self.set(&k, &s)?;
        }
        Ok(())
    }

    /// Defaults, then the `--config` file if any, then the other flags.
    pub fn from_args(args: &[String]) -> Result<Config, String> {
        let mut flags: Vec<(String, String)> = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(flag) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a}"));
            };
            let (k, v) = match flag.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => {
                    let v = it.next().ok_or_else(|| format!("--{flag} needs a value"))?;
                    (flag.to_string(), v.clone())
                }
            };
            flags.push((k, v));
        }
        let mut c = Config::default();
        for (k, v) in &flags {
            if k == "config" {
                let text = std::fs::read_to_string(v).map_err(|e| format!("config {v}: {e}"))?;
                c.apply_toml(&text)?;
            }
        }
        for (k, v) in &flags {
            if k != "config" {
                c.set(k, v)?;
            }
        }
        Ok(c)
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

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("gw-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("gw.toml");
        std::fs::write(
            &f,
            "sip_port = 5070\nrtsp-port = 9554\nhls = true\npassword = \"secret\"\n",
        )
        .unwrap();
        let c = Config::from_args(&args(&[
            "--config",
            f.to_str().unwrap(),
            "--rtsp-port=8555",
            "--simulate",
            "3",
        ]))
        .unwrap();
        assert_eq!(c.sip_port, 5070);
        assert_eq!(c.rtsp_port, 8555);
        assert!(c.hls);
        assert_eq!(c.password, "secret");
        assert_eq!(c.simulate, 3);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn users_tables() {
        let mut c = Config::default();
        c.apply_toml(
            r#"
rtsp-port = 8555
[[users]]
user = "demo"
pass = "sha256:0123456789abcdef:0000000000000000000000000000000000000000000000000000000000000000"
ips = ["127.0.0.1", "::1/128"]
permissions = [{action = "read", path = ""}, {action = "metrics"}]
[[users]]
user = "any"
permissions = [{action = "read", path = "~^3402"}]
"#,
        )
        .unwrap();
        assert_eq!(c.rtsp_port, 8555);
        assert_eq!(c.users.len(), 2);
        assert_eq!(c.users[0].user, "demo");
        assert_eq!(
            c.users[0].permissions[1].action,
            crate::auth::Action::Metrics
        );
        assert!(crate::auth::Users::from_config(&c.users, "gst-ipcam").is_ok());
        // Unknown keys and actions are errors.
        assert!(
            Config::default()
                .apply_toml("[[users]]\nuser = \"a\"\npassword = \"x\"\n")
                .is_err()
        );
        assert!(
            Config::default()
                .apply_toml("[[users]]\nuser = \"a\"\npermissions = [{action = \"write\"}]\n")
                .is_err()
        );
        assert!(Config::default().set("users", "x").is_err());
        assert_eq!(Config::default().metrics_address, "127.0.0.1");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Config::from_args(&args(&["--sip-port", "70000"])).is_err());
        assert!(Config::from_args(&args(&["--nope", "1"])).is_err());
        assert!(Config::from_args(&args(&["--server-id", "123"])).is_err());
        assert!(Config::from_args(&args(&["--simulate"])).is_err());
        assert!(Config::from_args(&args(&["stray"])).is_err());
        assert!(Config::from_args(&args(&["--id-pattern", "("])).is_err());
        let c = Config::from_args(&args(&["--id-pattern", "cam-[0-9]+"])).unwrap();
        assert!(c.id_policy().unwrap().is_valid("cam-12"));
        assert!(!c.id_policy().unwrap().is_valid("34020000001320000001"));
        assert!(Config::from_args(&args(&["--id-pattern", "[0-9"])).is_err());
        let c = Config::from_args(&args(&["--id-pattern", "[0-9]{18}", "--max-devices=3"]));
        assert_eq!(
            c.map(|c| (c.id_pattern, c.max_devices)).ok(),
            Some(("[0-9]{18}".into(), 3))
        );
    }

    /// Garbage settings and files are refused, never a panic.
    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"=\"'[]{}.,-_ \n#0123456789abcdefsimulateportsip\xff";
        for _ in 0..2000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let mut c = Config::default();
            let _ = c.apply_toml(&text);
            let _ = c.set(&text, &text);
            let _ = c.set("sip-port", &text);
            let _ = sim_device_id(&text, next() as u32);
        }
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
        let mut c = Config::default();
        c.set("device_passwords", "a=1, b=2,bad").unwrap();
        let m = c.device_password_map();
        assert_eq!(m.get("a").map(String::as_str), Some("1"));
        assert_eq!(m.get("b").map(String::as_str), Some("2"));
        assert_eq!(m.len(), 2);
    }
}
