//! The command line (clap derive). Each setting is an `Option` named as its [`Config`] field
//! (`--sip-port` = `sip_port`): given flags are laid over the file through `Config`'s own
//! `Deserialize` (the same checks as the file's), and `--help` shows each default read from
//! `Config::default()`, so no default is written twice.

use super::Config;
use clap::{CommandFactory, FromArgMatches};
use serde::Serialize;
use std::ffi::OsString;
use std::path::PathBuf;

/// GB28181 cameras to RTSP, HLS and MP4 recordings.
#[derive(clap::Parser, Debug, Default)]
#[command(
    name = "gst-ipcam-gateway",
    version,
    args_override_self = true,
    about = "GB28181 cameras to RTSP, HLS and MP4 recordings",
    after_help = "Every setting is also a key of the config file (with `_`: sip_port = 5060); \
                  flags win over the file. Users are [[users]] tables of the file only."
)]
pub struct Cli {
    /// TOML config file (keys as the flags, with `_`)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Load and check the configuration (file and flags), print the result and exit: 0 valid, 2
    /// not; nothing is started
    #[arg(long)]
    pub check_config: bool,
    /// Read a password (or token) on stdin and print the `pass` (and with --user, `digest_ha1`)
    /// values of a [[users]] table
    #[arg(long, conflicts_with_all = ["config", "check_config"])]
    pub hash_password: bool,
    /// The user name for --hash-password
    #[arg(long, value_name = "NAME", requires = "hash_password")]
    pub user: Option<String>,
    #[command(flatten)]
    pub settings: Settings,
}

/// One flag per setting of [`Config`] (except `users`), same names.
#[derive(clap::Args, Serialize, Debug, Default, Clone)]
pub struct Settings {
    /// SIP endpoint address
    #[arg(long, value_name = "ADDR")]
    pub sip_address: Option<String>,
    /// SIP port
    #[arg(long, value_name = "PORT")]
    pub sip_port: Option<u16>,
    /// SIP transport: udp or tcp
    #[arg(long, value_name = "T")]
    pub sip_transport: Option<String>,
    /// The platform's 20-digit ID
    #[arg(long, value_name = "ID")]
    pub server_id: Option<String>,
    /// Default device password (empty: only devices of --device-passwords)
    #[arg(long, value_name = "PW")]
    pub password: Option<String>,
    /// Per-device passwords, id=pw,id=pw
    #[arg(long, value_name = "LIST")]
    pub device_passwords: Option<String>,
    /// Media transport asked of cameras: udp, tcp-passive or tcp-active
    #[arg(long, value_name = "T")]
    pub media_transport: Option<String>,
    /// Address media is received on (none: the local address facing the camera)
    #[arg(long, value_name = "IP")]
    pub media_address: Option<String>,
    /// Ports media is received on, "min-max" (none: any free port)
    #[arg(long, value_name = "MIN-MAX")]
    pub media_port_range: Option<String>,
    /// Address announced to cameras in the SDP instead of the receiving one (NAT, relays)
    #[arg(long, value_name = "IP")]
    pub sdp_address: Option<String>,
    /// Address of the RTSP and HLS servers
    #[arg(long, value_name = "ADDR")]
    pub listen_address: Option<String>,
    /// Address of the /metrics server
    #[arg(long, value_name = "ADDR")]
    pub metrics_address: Option<String>,
    /// RTSP connections at once (1-100000); more are closed
    #[arg(long, value_name = "N")]
    pub max_rtsp_clients: Option<u32>,
    /// Close an RTSP connection without a session after S quiet seconds (1-86400)
    #[arg(long, value_name = "S")]
    pub rtsp_idle_timeout_s: Option<u64>,
    /// Answer RTSP in the gateway and play live paths over TCP without a pipeline per reader
    /// (other connections go on to gst-rtsp-server)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub rtsp_direct_tcp: Option<bool>,
    /// Direct RTSP path: KiB a reader may fall behind (64-262144) before it loses frames
    #[arg(long, value_name = "KIB")]
    pub rtsp_write_queue_kib: Option<u32>,
    /// WebRTC (WHEP) readers at once (0-10000); more offers get 503
    #[arg(long, value_name = "N")]
    pub webrtc_max_sessions: Option<u32>,
    /// H.265 channels transcoded to H.264 for browsers at once (0-64); more get 503
    #[arg(long, value_name = "N")]
    pub webrtc_max_transcodes: Option<u32>,
    /// End a WebRTC reader not connected (or disconnected) for S seconds (1-600)
    #[arg(long, value_name = "S")]
    pub webrtc_connect_timeout_s: Option<u64>,
    /// Local addresses WebRTC gathers ICE candidates on (comma-separated IPs)
    #[arg(long, value_name = "IPS")]
    pub webrtc_local_addresses: Option<String>,
    /// End an RTSP session whose client went silent, or whose TCP connection stops acknowledging, after S seconds (1-86400)
    #[arg(long, value_name = "S")]
    pub rtsp_session_timeout_s: Option<u32>,
    /// Offer RTSP multicast to readers with groups from this IPv4 range, e.g. 224.1.0.0/24 (empty: none)
    #[arg(long, value_name = "CIDR")]
    pub multicast_ip_range: Option<String>,
    /// ... and from this IPv6 range, e.g. ff15::8:0/120 (empty: none)
    #[arg(long, value_name = "CIDR")]
    pub multicast_ipv6_range: Option<String>,
    /// RTP port of the multicast groups; RTCP on the next one (1024-65534)
    #[arg(long, value_name = "PORT")]
    pub multicast_rtp_port: Option<u16>,
    /// TTL / hop limit of multicast packets (1-255; 1: this network only)
    #[arg(long, value_name = "N")]
    pub multicast_ttl: Option<u8>,
    /// Host printed in URLs
    #[arg(long, value_name = "HOST")]
    pub public_host: Option<String>,
    /// RTSP port
    #[arg(long, value_name = "PORT")]
    pub rtsp_port: Option<u16>,
    /// Address of the RTMP server
    #[arg(long, value_name = "ADDR")]
    pub rtmp_address: Option<String>,
    /// RTMP port (0: off)
    #[arg(long, value_name = "PORT")]
    pub rtmp_port: Option<u16>,
    /// Prometheus /metrics port
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<u16>,
    /// HLS HTTP port
    #[arg(long, value_name = "PORT")]
    pub hls_port: Option<u16>,
    /// HLS for every channel (keeps the camera sessions up)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub hls: Option<bool>,
    /// Where playlists and segments go (none: a private 0700 directory)
    #[arg(long, value_name = "DIR")]
    pub hls_dir: Option<PathBuf>,
    /// HTTP: the request head within S seconds, also the keep-alive idle time (1-600)
    #[arg(long, value_name = "S")]
    pub http_header_timeout_s: Option<u64>,
    /// HTTP: handler and response each within S seconds (1-3600)
    #[arg(long, value_name = "S")]
    pub http_request_timeout_s: Option<u64>,
    /// HTTP: open connections per source address (IPv6: per /64)
    #[arg(long, value_name = "N")]
    pub http_max_connections_per_ip: Option<u32>,
    /// HTTP: open connections in all
    #[arg(long, value_name = "N")]
    pub http_max_connections: Option<u32>,
    /// Record every channel to MP4 segments there (none: no recording)
    #[arg(long, value_name = "DIR")]
    pub record_dir: Option<PathBuf>,
    /// Length of a recorded segment in seconds
    #[arg(long, value_name = "S")]
    pub record_segment_s: Option<u64>,
    /// Built-in simulated cameras (0-10000)
    #[arg(long, value_name = "N")]
    pub simulate: Option<u32>,
    /// Codec of the simulated cameras: h264 or h265
    #[arg(long, value_name = "C")]
    pub sim_codec: Option<String>,
    /// Width of the simulated cameras' video (16-4096)
    #[arg(long, value_name = "PX")]
    pub sim_width: Option<u32>,
    /// Height of the simulated cameras' video (16-4096)
    #[arg(long, value_name = "PX")]
    pub sim_height: Option<u32>,
    /// Bitrate of the simulated cameras' video
    #[arg(long, value_name = "KBPS")]
    pub sim_bitrate_kbps: Option<u32>,
    /// First simulated device ID; the others count up from it
    #[arg(long, value_name = "ID")]
    pub sim_first_id: Option<String>,
    /// Seconds between console summaries (0: none)
    #[arg(long, value_name = "S")]
    pub summary_interval_s: Option<u64>,
    /// Seconds gb28181src waits for a device (0-3600)
    #[arg(long, value_name = "S")]
    pub wait_timeout_s: Option<u32>,
    /// Seconds gb28181src waits for media (1-3600)
    #[arg(long, value_name = "S")]
    pub stream_timeout_s: Option<u32>,
    /// Seconds between a device's expected keepalives (1-3600)
    #[arg(long, value_name = "S")]
    pub keepalive_interval_s: Option<u32>,
    /// Keepalives missed in a row before a device is offline (1-100)
    #[arg(long, value_name = "N")]
    pub max_missed_keepalives: Option<u32>,
    /// Device and channel IDs accepted, a regular expression over the whole ID
    #[arg(long, value_name = "RE")]
    pub id_pattern: Option<String>,
    /// Catalog channels mounted per device at most
    #[arg(long, value_name = "N")]
    pub max_channels_per_device: Option<usize>,
    /// Registrations accepted at once, and devices with mounted channels at most
    #[arg(long, value_name = "N")]
    pub max_devices: Option<usize>,
    /// Where state that survives a restart is kept (none: nothing is kept)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Ask the camera for a key frame (IFameCmd) when a new viewer finds none or one older than
    /// this many seconds; at most once per interval per channel (0: never; 0-3600)
    #[arg(long, value_name = "S")]
    pub key_frame_request_after_s: Option<u32>,
    /// Playback/download sessions of camera recordings (API) at once at most (0-256)
    #[arg(long, value_name = "N")]
    pub max_playbacks: Option<usize>,
    /// Paths published (RTSP ANNOUNCE/RECORD, RTMP) at once at most (0-10000)
    #[arg(long, value_name = "N")]
    pub max_publishers: Option<usize>,
    /// Subscribe to every device's Catalog changes when it registers
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub subscribe_catalog: Option<bool>,
    /// Subscribe to every device's alarms when it registers
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub subscribe_alarm: Option<bool>,
    /// Subscribe to every device's position (MobilePosition) when it registers
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub subscribe_mobile_position: Option<bool>,
    /// Seconds between position reports asked for (1-3600)
    #[arg(long, value_name = "S")]
    pub mobile_position_interval_s: Option<u32>,
    /// Expires of subscriptions in seconds, refreshed at three quarters (60-86400)
    #[arg(long, value_name = "S")]
    pub subscription_expires_s: Option<u32>,
    /// Camera media only with the SSRC the camera answered, from one address (default: by
    /// dialog, another SSRC from the camera's own IP is taken)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub strict_ssrc: Option<bool>,
}

impl Settings {
    /// The flags given, as `key = value` of the config file.
    pub fn to_table(&self) -> Result<toml::Table, String> {
        toml::Table::try_from(self).map_err(|e| format!("flags: {e}"))
    }
}

/// The clap command, each setting's help ending with its default from `Config::default()`.
pub fn command() -> clap::Command {
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    let mut cmd = Cli::command();
    let ids: Vec<String> = cmd
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    for id in ids {
        let Some(v) = defaults.get(&id) else { continue };
        let shown = match v {
            toml::Value::String(s) if s.is_empty() => "none".to_string(),
            toml::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        cmd = cmd.mut_arg(id, |a| {
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            a.help(format!("{help} [default: {shown}]"))
        });
    }
    cmd
}

/// Parses a command line (the program name first).
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        parse_from(std::iter::once("gst-ipcam-gateway").chain(args.iter().copied()))
    }

    /// Every setting of `Config` has its flag and every flag is a setting.
    #[test]
    fn one_flag_per_setting() {
        let mut keys: Vec<String> = toml::Table::try_from(Config::default())
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        let cmd = command();
        let mut flags: Vec<String> = cmd
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|id| {
                !["config", "check_config", "hash_password", "user"].contains(&id.as_str())
            })
            .filter(|id| !["help", "version"].contains(&id.as_str()))
            .collect();
        flags.sort();
        assert_eq!(keys, flags);
        for a in cmd.get_arguments() {
            if keys.contains(&a.get_id().to_string()) {
                assert_eq!(
                    a.get_long().map(|l| l.replace('-', "_")),
                    Some(a.get_id().to_string())
                );
            }
        }
    }

    #[test]
    fn help_shows_the_defaults() {
        let help = command().render_help().to_string();
        assert!(help.contains("--sip-port <PORT>"), "{help}");
        assert!(help.contains("SIP port [default: 5060]"), "{help}");
        assert!(help.contains("[default: 34020000002000000001]"), "{help}");
        assert!(help.contains("[default: [0-9]{20}]"), "{help}");
        assert!(help.contains("nothing is kept) [default: none]"), "{help}");
        assert!(help.contains("[default: false]"), "{help}");
    }

    #[test]
    fn only_given_flags_are_set() {
        let c = cli(&["--sip-port", "5070", "--hls", "yes", "--record-dir=/r"]).unwrap();
        let t = c.settings.to_table().unwrap();
        assert_eq!(t.len(), 3, "{t:?}");
        assert_eq!(t["sip_port"].as_integer(), Some(5070));
        assert_eq!(t["hls"].as_bool(), Some(true));
        assert_eq!(t["record_dir"].as_str(), Some("/r"));
        assert!(cli(&[]).unwrap().settings.to_table().unwrap().is_empty());
        // A flag given twice: the last one wins (scripts append overrides).
        let c = cli(&["--sip-port", "1", "--sip-port=2"]).unwrap();
        assert_eq!(c.settings.sip_port, Some(2));
        let c = cli(&["--hls", "--hls-port", "1"]).unwrap();
        assert_eq!(c.settings.hls, Some(true));
        assert_eq!(cli(&["--hls", "off"]).unwrap().settings.hls, Some(false));
    }

    #[test]
    fn bad_flags_are_refused() {
        for args in [
            &["--bogus"][..],
            &["--sip-port", "abc"],
            &["--sip-port", "70000"],
            &["--simulate"],
            &["stray"],
            &["--hls", "maybe"],
            &["--user", "u"],
            &["--hash-password", "--config", "x"],
        ] {
            let e = cli(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
        assert_eq!(cli(&["--help"]).unwrap_err().exit_code(), 0);
        let c = cli(&["--hash-password", "--user", "alice"]).unwrap();
        assert!(c.hash_password);
        assert_eq!(c.user.as_deref(), Some("alice"));
    }
}
