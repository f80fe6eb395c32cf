//! Helpers shared by the gb28181 tests: one-time init, one test at a time with no endpoint
//! left over from an earlier test, the port a `sip-port=0` endpoint bound, a SIP peer of its
//! own over UDP or TCP (IPv4 or IPv6, the server's family) and the requests a device sends.
//! Every wait is bounded.
#![allow(dead_code)]

use gst::prelude::*;
use gstgb28181::core::client::{ClientAction, RegisterClient, RegisterClientConfig};
use gstgb28181::core::manscdp::{self, Charset};
use gstgb28181::core::random;
use gstgb28181::core::sip::{Message, StreamFramer};
use gstgb28181::endpoint::SipTransport;
use gstgb28181::endpoint::{Endpoint, endpoints};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

const SERVER: &str = "34020000002000000001";

/// `gst::init()` and the plugins under test (gb28181, mpegps), once per process.
pub fn init() {
    gst_ipcam_testutil::init_with(|| {
        gstgb28181::plugin_register_static().unwrap();
        gstmpegps::plugin_register_static().unwrap();
    });
}

/// One test at a time (real-time pipelines, x264 and floods on 2 cores), starting with no SIP
/// endpoint in the process: endpoints outlive their elements and are shared by key (address,
/// port, transport), so a test binding `sip-port=0` would otherwise get an endpoint an earlier
/// (maybe failed) test left, with that test's settings and devices.
pub fn serial() -> MutexGuard<'static, ()> {
    let g = gst_ipcam_testutil::programs::serial();
    for ep in endpoints() {
        ep.shutdown();
    }
    g
}

/// The port the gb28181src `name` of `pipeline` bound (with `sip-port=0`: the port the OS
/// gave), read back once the element is at least READY.
pub fn sip_port(pipeline: &gst::Pipeline, name: &str) -> u16 {
    let port = gst_ipcam_testutil::by_name(pipeline, name).property::<u32>("sip-port");
    assert!(port > 0, "gb28181src {name} did not bind a SIP port");
    u16::try_from(port).expect("a port")
}

/// The running endpoint bound to local `port` with transport `t`.
pub fn endpoint_on(port: u16, t: SipTransport) -> Arc<Endpoint> {
    endpoints()
        .into_iter()
        .find(|e| e.local_addr().port() == port && e.transport() == t)
        .unwrap_or_else(|| panic!("no {t:?} endpoint on port {port}"))
}

/// A SIP peer over UDP (a socket of its own) or TCP (a connection of its own).
pub enum Conn {
    Udp {
        sock: UdpSocket,
        server: SocketAddr,
    },
    Tcp {
        stream: TcpStream,
        framer: StreamFramer,
        queue: VecDeque<Message>,
    },
}

impl Conn {
    pub fn open(t: SipTransport, server: SocketAddr) -> Conn {
        match t {
            // Loopback of the server's family.
            SipTransport::Udp => Conn::Udp {
                sock: UdpSocket::bind(if server.is_ipv6() {
                    "[::1]:0"
                } else {
                    "127.0.0.1:0"
                })
                .unwrap(),
                server,
            },
            SipTransport::Tcp => {
                let stream = TcpStream::connect(server).unwrap();
                stream.set_nodelay(true).unwrap();
                Conn::Tcp {
                    stream,
                    framer: StreamFramer::new(),
                    queue: VecDeque::new(),
                }
            }
        }
    }

    pub fn transport(&self) -> SipTransport {
        match self {
            Conn::Udp { .. } => SipTransport::Udp,
            Conn::Tcp { .. } => SipTransport::Tcp,
        }
    }

    pub fn local(&self) -> SocketAddr {
        match self {
            Conn::Udp { sock, .. } => sock.local_addr().unwrap(),
            Conn::Tcp { stream, .. } => stream.local_addr().unwrap(),
        }
    }

    pub fn send(&mut self, m: &Message) {
        match self {
            Conn::Udp { sock, server } => {
                sock.send_to(&m.to_bytes(), *server).unwrap();
            }
            Conn::Tcp { stream, .. } => stream.write_all(&m.to_bytes()).unwrap(),
        }
    }

    /// The next message within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65_536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self {
                Conn::Udp { sock, .. } => {
                    sock.set_read_timeout(Some(left)).unwrap();
                    if let Ok((n, _)) = sock.recv_from(&mut buf) {
                        return Message::parse(&buf[..n]).ok();
                    }
                }
                Conn::Tcp {
                    stream,
                    framer,
                    queue,
                } => {
                    if let Some(m) = queue.pop_front() {
                        return Some(m);
                    }
                    stream.set_read_timeout(Some(left)).unwrap();
                    match stream.read(&mut buf) {
                        Ok(0) => return None,
                        Ok(n) => queue.extend(framer.push(&buf[..n]).into_iter().flatten()),
                        Err(_) => {}
                    }
                }
            }
        }
    }

    /// Sends `req` and returns the status of its final response.
    pub fn request(&mut self, req: &Message, timeout: Duration) -> Option<u16> {
        self.send(req);
        let deadline = Instant::now() + timeout;
        while let Some(m) = self.recv(deadline.saturating_duration_since(Instant::now())) {
            if !m.is_request()
                && m.call_id() == req.call_id()
                && m.status().is_some_and(|s| s >= 200)
            {
                return m.status();
            }
        }
        None
    }

    /// Registers `device` with the core client; the final status.
    pub fn register(&mut self, device: &str, password: &str) -> Option<u16> {
        let local = self.local();
        let mut client = RegisterClient::new(RegisterClientConfig {
            device_id: device.into(),
            local_host: local.ip().to_string(),
            local_port: local.port(),
            transport: self.transport().as_str().into(),
            password: password.into(),
            ..Default::default()
        });
        let mut actions = client.start(0);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            for a in actions.drain(..) {
                match a {
                    ClientAction::Send(m) => self.send(&m),
                    ClientAction::Registered { .. } => return Some(200),
                    ClientAction::Failed { status } => return status,
                    ClientAction::Unregistered => {}
                }
            }
            if let Some(m) = self.recv(Duration::from_millis(500))
                && !m.is_request()
            {
                actions = client.on_response(&m, 0);
            }
        }
        None
    }
}

pub fn request_to_server(method: &str, from_id: &str) -> Message {
    let mut m = Message::request(method, &format!("sip:{SERVER}@3402000000"));
    m.add_header(
        "Via",
        format!(
            "SIP/2.0/UDP 127.0.0.1:5060;rport;branch={}",
            random::branch()
        ),
    )
    .add_header(
        "From",
        format!("<sip:{from_id}@3402000000>;tag={}", random::tag()),
    )
    .add_header("To", format!("<sip:{SERVER}@3402000000>"))
    .add_header("Call-ID", random::call_id())
    .add_header("CSeq", format!("20 {method}"))
    .add_header("Max-Forwards", "70");
    m
}

pub fn manscdp_message(from_id: &str, body: &str) -> Message {
    let mut m = request_to_server("MESSAGE", from_id);
    m.set_body(
        "Application/MANSCDP+xml",
        manscdp::encode_body(body, Charset::Gb2312),
    );
    m
}

pub fn keepalive(from_id: &str, body_id: &str) -> Message {
    manscdp_message(from_id, &manscdp::build_keepalive(1, body_id))
}

/// A UDP endpoint on 127.0.0.1, a port the OS gives, default registrar settings (devices'
/// password 12345678).
pub fn udp_endpoint() -> Arc<Endpoint> {
    let key = gstgb28181::endpoint::EndpointKey {
        address: "127.0.0.1".into(),
        port: 0,
        transport: SipTransport::Udp,
    };
    Endpoint::obtain(
        &key,
        gstgb28181::core::registrar::RegistrarConfig::default(),
    )
    .unwrap()
}

/// Device 34020000001320000001 (the device agent of gb28181sink, without GStreamer) over
/// UDP to `server`, with its events on the returned channel.
pub fn device_agent(
    server: SocketAddr,
) -> (
    Arc<gstgb28181::device::DeviceAgent>,
    std::sync::mpsc::Receiver<gstgb28181::device::DeviceEvent>,
) {
    use gstgb28181::device::{DeviceAgent, DeviceConfig};
    let (tx, rx) = std::sync::mpsc::channel();
    let agent = DeviceAgent::start(
        DeviceConfig {
            password: "12345678".into(),
            device_name: "test device".into(),
            ..device_config(server)
        },
        move |e| {
            let _ = tx.send(e);
        },
    )
    .unwrap();
    (agent, rx)
}

/// The next event on `rx` matching `pred`, within 5 s.
pub fn next_matching<E: std::fmt::Debug>(
    rx: &std::sync::mpsc::Receiver<E>,
    pred: impl Fn(&E) -> bool,
) -> E {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let e = rx.recv_timeout(left).expect("the awaited event within 5 s");
        if pred(&e) {
            return e;
        }
    }
}

/// A PS frame: pack header, then one video PES carrying `nal` (Annex B).
pub fn ps_frame(nal: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, 1, 0xBA, 0x44, 0, 4, 0, 4, 1, 1, 0x89, 0xC3, 0xF8];
    let pes_len = 3 + 4 + nal.len();
    f.extend([
        0,
        0,
        1,
        0xE0,
        (pes_len >> 8) as u8,
        pes_len as u8,
        0x80,
        0,
        0,
    ]);
    f.extend([0, 0, 0, 1]);
    f.extend(nal);
    f
}

/// Device 34020000001320000001 over UDP from 127.0.0.1 (any port) to `server`: password `x`,
/// 1 h registrations, 60 s keepalives, 1 s retries, no recordings.
pub fn device_config(server: SocketAddr) -> gstgb28181::device::DeviceConfig {
    gstgb28181::device::DeviceConfig {
        server,
        server_id: SERVER.into(),
        domain: "3402000000".into(),
        device_id: "34020000001320000001".into(),
        channel_id: "34020000001320000001".into(),
        password: "x".into(),
        local_ip: "127.0.0.1".into(),
        local_port: 0,
        expires: 3600,
        keepalive_interval_ms: 60_000,
        retry_ms: 1000,
        device_name: "test".into(),
        transport: gstgb28181::device::SipTransport::Udp,
        records: Vec::new(),
    }
}
