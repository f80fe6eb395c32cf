//! RTSP multicast for readers, IPv4 and IPv6, between two network namespaces of the test's
//! own joined by a veth pair (10.99.0.1 / fd00:99::1 for the gateway, .2 / ::2 for the
//! readers; nothing leaves the machine): a simulated camera's channel read over multicast by
//! ffprobe (`-rtsp_transport udp_multicast`, as ffmpeg/VLC users ask) and by gst-launch
//! (`rtspsrc protocols=udp-mcast`) in the readers' namespace; the gateway lists the sessions
//! as `udp-mcast`. (Reader and server in one namespace cannot work: gst-rtsp-server binds a
//! multicast stream's ports on the wildcard address, as a reader must too.)
//!
//! The test runs itself again inside `unshare --net`, where it makes the veth pair and the
//! readers' namespace (`ip netns`; root, as the Makefile's apt steps are).

mod common;
use common::*;

use gst_ipcam_gateway::config::Config;
use gst_ipcam_gateway::gateway::Gateway;
use gst_ipcam_gateway::sim::{Clip, SimCamera, SimSettings, wait_until};
use gst_ipcam_testutil::programs::{ffprobe_frames_args, parse_frames};
use std::process::Command;
use std::time::Duration;

const IN_NETNS: &str = "GST_IPCAM_TEST_READERS_NETNS";

/// Runs test `name` of this binary again in a new network namespace with a veth pair to a
/// second, new namespace for the readers (whose name the test finds in [`IN_NETNS`]).
/// Returns false when already inside.
fn rerun_in_netns(name: &str) -> bool {
    if std::env::var_os(IN_NETNS).is_some() {
        return false;
    }
    let exe = std::env::current_exe().expect("test binary");
    let setup = r#"set -e
ns=gstipcam-readers-$$
ip link set lo up
ip netns add $ns
trap "ip netns del $ns" EXIT
ip link add veth0 type veth peer name veth1
ip link set veth1 netns $ns
ip addr add 10.99.0.1/24 dev veth0
ip -6 addr add fd00:99::1/64 dev veth0 nodad
ip link set veth0 up multicast on
ip route add 224.0.0.0/4 dev veth0
ip -6 route add ff00::/8 dev veth0 table local
ip netns exec $ns sh -c 'ip link set lo up; ip addr add 10.99.0.2/24 dev veth1;
  ip -6 addr add fd00:99::2/64 dev veth1 nodad; ip link set veth1 up multicast on;
  ip route add 224.0.0.0/4 dev veth1; ip -6 route add ff00::/8 dev veth1 table local'
GST_IPCAM_TEST_READERS_NETNS=$ns "$0" "$@""#;
    let out = Command::new("unshare")
        .args(["--net", "--", "sh", "-c", setup])
        .arg(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .output()
        .expect("unshare runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "the test in its namespaces failed");
    assert!(
        text.contains("1 passed"),
        "the test did not run in its namespaces"
    );
    true
}

/// `program args` run in the readers' namespace; its output, once it ended (bounded by
/// `timeout`), while `during` is called every 50 ms.
fn in_readers_ns(program: &[&str], mut during: impl FnMut()) -> std::process::Output {
    let ns = std::env::var(IN_NETNS).expect("in the test's namespace");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns, "timeout", "25"])
        .args(program)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ip netns exec runs");
    while child.try_wait().expect("wait").is_none() {
        during();
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// ffprobe's codec and frame count of `url` (`-rtsp_transport transport`, reading
/// `interval`) in the readers' namespace, `during` called meanwhile.
fn ffprobe_in_readers_ns(
    url: &str,
    transport: &str,
    interval: &str,
    during: impl FnMut(),
) -> std::process::Output {
    let mut program = vec!["ffprobe"];
    program.extend(ffprobe_frames_args(
        &["-rtsp_transport", transport, "-read_intervals", interval],
        url,
    ));
    in_readers_ns(&program, during)
}

fn camera(cfg: &Config, host: &str, id: &str) -> SimCamera {
    let clip = Clip::encode_with(Some("h264"), Some("alaw"), 160, 120, 200, 2).expect("clip");
    SimCamera::start(
        &clip,
        &SimSettings {
            server_ip: host.into(),
            server_port: cfg.sip_port,
            server_id: cfg.server_id.clone(),
            device_id: id.into(),
            password: cfg.password.clone(),
            audio: true,
        },
    )
    .expect("camera")
}

fn multicast_readers_on(listen: &str, cfg: Config, id: &str) {
    let mut gw = Gateway::start(Config {
        public_host: listen.into(),
        listen_address: listen.into(),
        ..cfg
    })
    .expect("gateway starts");
    let cfg = gw.config().clone();
    let cam = camera(&cfg, "127.0.0.1", id);
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .channels()
            .contains(&id.to_string())),
        "channel mounted"
    );
    let url = gw.url_with_credentials(id, READER.0, READER.1);
    let mut transports: Vec<String> = Vec::new();
    let mut seen = |gw: &Gateway| {
        for s in gw.snapshot().sessions {
            if !transports.contains(&s.transport) {
                transports.push(s.transport);
            }
        }
    };
    // ffprobe asks for multicast the way ffmpeg/VLC users do.
    let out = ffprobe_in_readers_ns(&url, "udp_multicast", "%+3", || seen(&gw));
    let probed = parse_frames(&out.stdout);
    assert!(
        frames_of(&probed, "h264") >= 25 && frames_of(&probed, "pcm_alaw") >= 25,
        "{listen}: ffprobe over multicast: {probed:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A GStreamer reader that takes multicast only: 25 frames, then EOS.
    let out = in_readers_ns(
        &[
            "gst-launch-1.0",
            "-q",
            "rtspsrc",
            &format!("location={url}"),
            "protocols=udp-mcast",
            "!",
            "rtph264depay",
            "!",
            "h264parse",
            "!",
            "fakesink",
            "num-buffers=25",
        ],
        || seen(&gw),
    );
    assert!(
        out.status.success(),
        "{listen}: gst-launch over multicast: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        transports.iter().any(|t| t == "udp-mcast"),
        "{listen}: sessions seen {transports:?}"
    );
    cam.stop();
    gw.stop();
}

#[test]
fn multicast_readers_ipv4_and_ipv6() {
    if rerun_in_netns("multicast_readers_ipv4_and_ipv6") {
        return;
    }
    let _serial = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let v4 = Config {
        multicast_ip_range: "224.1.0.0/28".into(),
        ..loopback_config("127.0.0.1")
    };
    multicast_readers_on("10.99.0.1", v4, "34020000001320000701");
    let v6 = Config {
        multicast_ipv6_range: "ff15::8:0/124".into(),
        ..loopback_config("127.0.0.1")
    };
    multicast_readers_on("fd00:99::1", v6, "34020000001320000702");
}

/// Without a range, a reader asking for multicast gets a refusal (461), not a stream, and
/// the gateway keeps serving it over TCP.
#[test]
fn no_multicast_without_a_range() {
    if rerun_in_netns("no_multicast_without_a_range") {
        return;
    }
    let _serial = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let mut gw = Gateway::start(Config {
        public_host: "10.99.0.1".into(),
        listen_address: "10.99.0.1".into(),
        ..loopback_config("127.0.0.1")
    })
    .expect("gateway starts");
    let cfg = gw.config().clone();
    let id = "34020000001320000703";
    let cam = camera(&cfg, "127.0.0.1", id);
    assert!(wait_until(Duration::from_secs(10), || gw
        .channels()
        .contains(&id.to_string())));
    let url = gw.url_with_credentials(id, READER.0, READER.1);
    let probe = |transport: &str| ffprobe_in_readers_ns(&url, transport, "%+2", || {});
    let mc = probe("udp_multicast");
    assert!(!mc.status.success(), "multicast without a range");
    assert!(
        String::from_utf8_lossy(&mc.stderr).contains("461"),
        "{}",
        String::from_utf8_lossy(&mc.stderr)
    );
    let tcp = probe("tcp");
    assert!(
        String::from_utf8_lossy(&tcp.stdout).contains("h264,"),
        "{}",
        String::from_utf8_lossy(&tcp.stderr)
    );
    cam.stop();
    gw.stop();
}

/// A camera's RTSP multicast as a source: the "camera" is a second gateway (the binary, with a
/// simulated camera and a multicast range) in the readers' namespace; this gateway pulls it
/// with `source_protocol = "multicast"` (rtspsrc `udp-mcast`), and ffprobe reads the pulled
/// path over RTSP/TCP. The camera lists the session as `udp-mcast`.
#[test]
fn a_cameras_multicast_stream_is_a_source() {
    if rerun_in_netns("a_cameras_multicast_stream_is_a_source") {
        return;
    }
    let _serial = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let ns = std::env::var(IN_NETNS).expect("in the test's namespace");
    let dir = scratch("mcast-source");
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("camera.toml");
    let user = |u: (&str, &str), permissions: &str| {
        format!(
            "[[users]]\nuser = \"{}\"\npass = \"{}\"\npermissions = [{permissions}]\n",
            u.0,
            gst_ipcam_gateway::auth::hash_sha256(u.1).unwrap()
        )
    };
    std::fs::write(
        &conf,
        user(READER, r#"{action = "read"}, {action = "api"}"#),
    )
    .unwrap();
    let camera_id = "34020000001320000001";
    let mut camera = ChildGuard(
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(gateway_bin())
            .arg("--config")
            .arg(&conf)
            .args([
                "--simulate",
                "1",
                "--sim-width",
                "160",
                "--sim-height",
                "120",
            ])
            .args([
                "--sip-address",
                "127.0.0.1",
                "--listen-address",
                "10.99.0.2",
            ])
            .args([
                "--public-host",
                "10.99.0.2",
                "--rtmp-port",
                "0",
                "--hls-port",
                "0",
            ])
            .args([
                "--multicast-ip-range",
                "224.3.0.0/28",
                "--metrics-address",
                "10.99.0.2",
            ])
            .args(["--summary-interval-s", "0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the camera gateway runs"),
    );
    let camera_api = |path: &str| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                "-u",
                &format!("{}:{}", READER.0, READER.1),
            ])
            .arg(format!("http://10.99.0.2:9998{path}"))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(
        wait_until(Duration::from_secs(20), || camera_api("/v1/channels")
            .contains(camera_id)),
        "the camera gateway serves its simulated camera"
    );
    assert!(
        matches!(camera.0.try_wait(), Ok(None)),
        "camera gateway running"
    );

    let mut cfg = Config {
        listen_address: "127.0.0.1".into(),
        ..loopback_config("127.0.0.1")
    };
    cfg.paths = vec![gst_ipcam_gateway::pull::PathConfig {
        name: "mcast-cam".into(),
        source: format!(
            "rtsp://{}:{}@10.99.0.2:8554/{camera_id}",
            READER.0, READER.1
        ),
        source_protocol: "multicast".into(),
        ..Default::default()
    }];
    let gw = Gateway::start(cfg).expect("gateway starts");
    let v = ffprobe_frames(
        &["-rtsp_transport", "tcp", "-read_intervals", "%+3"],
        &gw.url_with_credentials("mcast-cam", READER.0, READER.1),
    );
    // While the pull runs (closed 10 s after the reader): the camera's session list.
    let seen = camera_api("/v1/sessions");
    assert!(frames_of(&v, "h264") >= 25, "{v:?}");
    assert!(frames_of(&v, "pcm_alaw") >= 25, "{v:?}");
    assert!(seen.contains("udp-mcast"), "camera sessions: {seen}");
    drop(gw);
    drop(camera);
    std::fs::remove_dir_all(&dir).ok();
}
