use gst_ipcam_common::sync::lock;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;

use crate::core::addr;
use crate::core::sdp::MediaTransport;
use crate::core::talk::G711;
use crate::device::{DeviceAgent, DeviceConfig, DeviceEvent};
use crate::gb28181src::SipTransportMode;
use crate::gb28181talksink::imp::g711_caps;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "gb28181sink",
        gst::DebugColorFlags::empty(),
        Some("GB/T 28181 device-side sink"),
    )
});

const DEFAULT_SERVER_ID: &str = "34020000002000000001";
const DEFAULT_DEVICE_ID: &str = "34020000001320000001";

#[derive(Debug, Clone)]
struct Settings {
    server_ip: String,
    server_port: u32,
    sip_transport: SipTransportMode,
    server_id: String,
    domain: String,
    device_id: String,
    channel_id: String,
    password: String,
    local_ip: String,
    local_port: u32,
    expires: u32,
    keepalive_interval: u32,
    retry_interval: u32,
    talk_transport: super::TalkTransportMode,
    talk_ps: bool,
    device_name: String,
    records: Vec<crate::device::Recording>,
    /// Longitude, latitude reported to a MobilePosition subscriber.
    position: Option<(f64, f64)>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server_ip: "127.0.0.1".into(),
            server_port: 5060,
            sip_transport: SipTransportMode::Udp,
            server_id: DEFAULT_SERVER_ID.into(),
            domain: String::new(),
            device_id: DEFAULT_DEVICE_ID.into(),
            channel_id: String::new(),
            password: String::new(),
            local_ip: String::new(),
            local_port: 0,
            expires: 3600,
            keepalive_interval: 60_000,
            retry_interval: 10_000,
            talk_transport: super::TalkTransportMode::Udp,
            talk_ps: false,
            device_name: "gst-ipcam".into(),
            records: Vec::new(),
            position: None,
        }
    }
}

impl Settings {
    fn domain(&self) -> String {
        if self.domain.is_empty() {
            self.server_id.chars().take(10).collect()
        } else {
            self.domain.clone()
        }
    }

    fn channel(&self) -> String {
        if self.channel_id.is_empty() {
            self.device_id.clone()
        } else {
            self.channel_id.clone()
        }
    }
}

#[derive(Default)]
struct State {
    agent: Option<Arc<DeviceAgent>>,
    /// The law last announced on the `talk` pad.
    talk_law: Option<G711>,
    frames: u64,
    /// Upstream flags delta units (then its flags tell key frames).
    saw_delta: bool,
}

#[derive(Default)]
pub struct Gb28181Sink {
    settings: Mutex<Settings>,
    state: Mutex<State>,
}

#[glib::object_subclass]
impl ObjectSubclass for Gb28181Sink {
    const NAME: &'static str = "GstIpcamGb28181Sink";
    type Type = super::Gb28181Sink;
    type ParentType = gst_base::BaseSink;
}

fn event_structure(e: &DeviceEvent) -> gst::Structure {
    match e {
        DeviceEvent::Registered { expires_s } => gst::Structure::builder("gb28181-registered")
            .field("expires", *expires_s)
            .build(),
        DeviceEvent::RegisterFailed { status } => {
            gst::Structure::builder("gb28181-register-failed")
                .field("status", status.map(u32::from).unwrap_or(0))
                .build()
        }
        DeviceEvent::Unregistered => gst::Structure::new_empty("gb28181-unregistered"),
        DeviceEvent::Disconnected {
            reason,
            retry_in_ms,
        } => gst::Structure::builder("gb28181-disconnected")
            .field("reason", reason)
            .field("retry-in-ms", *retry_in_ms)
            .build(),
        DeviceEvent::Connected { local } => gst::Structure::builder("gb28181-connected")
            .field("local-address", local)
            .build(),
        DeviceEvent::SessionStarted {
            call_id,
            channel,
            kind,
            transport,
            dest,
            ssrc,
            ..
        } => gst::Structure::builder("gb28181-session-started")
            .field("call-id", call_id)
            .field("channel", channel)
            .field("kind", kind)
            .field(
                "transport",
                match transport {
                    MediaTransport::Udp => "udp",
                    MediaTransport::TcpPassive => "tcp-passive",
                    MediaTransport::TcpActive => "tcp-active",
                },
            )
            .field("destination", dest)
            .field("ssrc", *ssrc)
            .build(),
        DeviceEvent::SessionStopped { call_id, reason } => {
            gst::Structure::builder("gb28181-session-stopped")
                .field("call-id", call_id)
                .field("reason", reason)
                .build()
        }
        DeviceEvent::Ptz { command, .. } => gst::Structure::builder("gb28181-ptz")
            .field("command", command)
            .build(),
        DeviceEvent::KeyFrameRequested { .. } => {
            gst::Structure::builder("gb28181-key-frame-requested").build()
        }
        // Many-channel agents only (the sink answers RecordInfo from `records`).
        DeviceEvent::RecordInfoQuery { channel, .. } => {
            gst::Structure::builder("gb28181-record-info-query")
                .field("channel", channel)
                .build()
        }
        DeviceEvent::PlaybackControl {
            method, scale, npt, ..
        } => {
            // Scale and npt only when the request carries them (a PLAY without Scale keeps
            // the speed).
            gst::Structure::builder("gb28181-playback-control")
                .field("method", method)
                .field_if_some("scale", *scale)
                .field_if_some("npt", *npt)
                .build()
        }
        DeviceEvent::TalkStarted {
            call_id,
            codec,
            source,
        } => gst::Structure::builder("gb28181-talk-started")
            .field("call-id", call_id)
            .field("codec", codec)
            .field("source", source)
            .build(),
        DeviceEvent::TalkStopped { call_id, reason } => {
            gst::Structure::builder("gb28181-talk-stopped")
                .field("call-id", call_id)
                .field("reason", reason)
                .build()
        }
        DeviceEvent::Subscribed { event, expires_s } => {
            gst::Structure::builder("gb28181-subscribed")
                .field("event", event)
                .field("expires", *expires_s)
                .build()
        }
        DeviceEvent::Refused {
            method,
            status,
            why,
        } => gst::Structure::builder("gb28181-refused")
            .field("method", method)
            .field("status", u32::from(*status))
            .field("reason", why)
            .build(),
    }
}

impl Gb28181Sink {
    fn talk_pad(&self) -> gst::Pad {
        self.obj().static_pad("talk").expect("talk pad")
    }

    /// Talk audio from the platform, out of the `talk` pad, timestamped with the pipeline's
    /// running time at arrival.
    fn push_talk(&self, law: G711, payload: &[u8]) {
        let obj = self.obj();
        let pad = self.talk_pad();
        let new_law = {
            let mut st = lock(&self.state);
            let changed = st.talk_law != Some(law);
            st.talk_law = Some(law);
            changed
        };
        if new_law {
            pad.push_event(gst::event::Caps::new(&talk_caps(law)));
        }
        let pts = match (obj.clock(), obj.base_time()) {
            (Some(c), Some(b)) => c.time().checked_sub(b),
            _ => None,
        };
        let mut buf = gst::Buffer::from_mut_slice(payload.to_vec());
        {
            let b = buf.get_mut().expect("new buffer");
            b.set_pts(pts);
            b.set_duration(gst::ClockTime::from_nseconds(
                payload.len() as u64 * 1_000_000_000 / 8000,
            ));
        }
        // Not linked is fine: nobody listens.
        let _ = pad.push(buf);
    }
}

fn talk_caps(law: G711) -> gst::Caps {
    g711_caps(Some(law))
}

/// `"longitude,latitude"` within range, or None.
fn parse_position(s: &str) -> Option<(f64, f64)> {
    let (lon, lat) = s.split_once(',')?;
    let (lon, lat) = (
        lon.trim().parse::<f64>().ok()?,
        lat.trim().parse::<f64>().ok()?,
    );
    ((-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat)).then_some((lon, lat))
}

impl ObjectImpl for Gb28181Sink {
    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        let templ = obj.pad_template("talk").expect("talk template");
        obj.add_pad(&gst::Pad::builder_from_template(&templ).build())
            .expect("a new pad");
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let d = Settings::default();
            vec![
                glib::ParamSpecString::builder("server-ip")
                    .nick("Server IP")
                    .blurb("Address of the platform's SIP server: IPv4, IPv6 (::1 or [::1]) or a host name")
                    .default_value(Some(d.server_ip.as_str()))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("server-port")
                    .nick("Server port")
                    .blurb("SIP port of the platform (UDP or TCP, see sip-transport)")
                    .minimum(1)
                    .maximum(65_535)
                    .default_value(d.server_port)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("sip-transport", d.sip_transport)
                    .nick("SIP transport")
                    .blurb("SIP over UDP, or over one TCP connection to the platform (reconnected and registered again when it drops)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("server-id")
                    .nick("Server ID")
                    .blurb("The platform's 20-digit ID")
                    .default_value(Some(DEFAULT_SERVER_ID))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("domain")
                    .nick("Domain")
                    .blurb("SIP domain (default: first 10 digits of server-id)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("device-id")
                    .nick("Device ID")
                    .blurb("Our 20-digit device ID")
                    .default_value(Some(DEFAULT_DEVICE_ID))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("channel-id")
                    .nick("Channel ID")
                    .blurb("ID of our one video channel (default: device-id)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("password")
                    .nick("Password")
                    .blurb("Digest password for REGISTER")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("local-ip")
                    .nick("Local IP")
                    .blurb("Local address for SIP and media, of the server's family (default: the one facing the server)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("local-port")
                    .nick("Local port")
                    .blurb("Local SIP port (0 = any; UDP only, over TCP the OS picks it)")
                    .maximum(65_535)
                    .default_value(d.local_port)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("expires")
                    .nick("Expires")
                    .blurb("Registration lifetime in seconds (refreshed at 80 %)")
                    .minimum(1)
                    .default_value(d.expires)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("keepalive-interval")
                    .nick("Keepalive interval")
                    .blurb("Milliseconds between keepalive MESSAGEs")
                    .minimum(10)
                    .default_value(d.keepalive_interval)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("retry-interval")
                    .nick("Retry interval")
                    .blurb("Milliseconds to wait before registering again after a failure (doubling per failure in a row, up to 32x)")
                    .minimum(10)
                    .default_value(d.retry_interval)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("talk-transport", d.talk_transport)
                    .nick("Talk transport")
                    .blurb("How this device asks for the platform's talk audio (voice broadcast): UDP, or TCP with this device listening (tcp-passive) or connecting (tcp-active)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("talk-ps")
                    .nick("Talk in PS")
                    .blurb("Ask for the platform's talk audio as G.711 in MPEG-PS (PT 96, PS/90000) rather than as G.711 RTP (PT 8)")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("device-name")
                    .nick("Device name")
                    .blurb("Name reported in Catalog and DeviceInfo answers")
                    .default_value(Some(d.device_name.as_str()))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("records")
                    .nick("Recordings")
                    .blurb("Recordings listed in RecordInfo answers, as \"start/end;start/end\" (times yyyy-MM-ddTHH:mm:ss)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("position")
                    .nick("Position")
                    .blurb("\"longitude,latitude\" in degrees, reported to a platform that subscribes to MobilePosition (at once and every interval it asks for); empty: none")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("Registration and session state, frames received")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![
                // send-alarm(priority 1..4, method 1..7, description) -> sent: an alarm
                // MESSAGE to the platform (§9.4).
                glib::subclass::Signal::builder("send-alarm")
                    .action()
                    .param_types([
                        u32::static_type(),
                        u32::static_type(),
                        String::static_type(),
                    ])
                    .return_type::<bool>()
                    .class_handler(|args| {
                        let obj = args[0].get::<super::Gb28181Sink>().ok()?;
                        let priority = args[1].get::<u32>().ok()?;
                        let method = args[2].get::<u32>().ok()?;
                        let description = args[3].get::<String>().ok()?;
                        let agent = lock(&obj.imp().state).agent.clone();
                        let sent = agent.is_some_and(|a| {
                            a.send_alarm(&crate::core::notify::Alarm {
                                priority: Some(priority.clamp(1, 4)),
                                method: Some(method.clamp(1, 7)),
                                description,
                                ..Default::default()
                            })
                            .is_ok()
                        });
                        Some(sent.to_value())
                    })
                    .build(),
            ]
        });
        SIGNALS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        let string = || {
            value
                .get::<Option<String>>()
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        match pspec.name() {
            "server-ip" => s.server_ip = string(),
            "server-port" => s.server_port = value.get().unwrap_or(5060),
            "sip-transport" => s.sip_transport = value.get().unwrap_or_default(),
            "server-id" => s.server_id = string(),
            "domain" => s.domain = string(),
            "device-id" => s.device_id = string(),
            "channel-id" => s.channel_id = string(),
            "password" => s.password = string(),
            "local-ip" => s.local_ip = string(),
            "local-port" => s.local_port = value.get().unwrap_or(0),
            "expires" => s.expires = value.get().unwrap_or(3600),
            "keepalive-interval" => s.keepalive_interval = value.get().unwrap_or(60_000),
            "retry-interval" => s.retry_interval = value.get().unwrap_or(10_000),
            "talk-transport" => s.talk_transport = value.get().unwrap_or_default(),
            "talk-ps" => s.talk_ps = value.get().unwrap_or(false),
            "device-name" => s.device_name = string(),
            "position" => {
                let v = string();
                s.position = parse_position(&v);
                if s.position.is_none() && !v.is_empty() {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "position {v:?} refused: want \"longitude,latitude\""
                    );
                }
                let (pos, agent) = (s.position, lock(&self.state).agent.clone());
                drop(s);
                if let (Some((lon, lat)), Some(a)) = (pos, agent) {
                    a.set_position(lon, lat);
                }
            }
            "records" => match crate::device::parse_records(&string()) {
                Ok(r) => s.records = r,
                Err(e) => {
                    gst::warning!(CAT, imp = self, "records refused: {e}");
                    s.records.clear();
                }
            },
            _ => {}
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            let st = lock(&self.state);
            let (registered, session, connected) = st
                .agent
                .as_ref()
                .map(|a| (a.is_registered(), a.has_session(), a.is_connected()))
                .unwrap_or((false, false, false));
            return gst::Structure::builder("application/x-gb28181sink-stats")
                .field("registered", registered)
                .field("connected", connected)
                .field("streaming", session)
                .field("frames", st.frames)
                .build()
                .to_value();
        }
        let s = lock(&self.settings);
        match pspec.name() {
            "server-ip" => s.server_ip.to_value(),
            "server-port" => s.server_port.to_value(),
            "sip-transport" => s.sip_transport.to_value(),
            "server-id" => s.server_id.to_value(),
            "domain" => s.domain().to_value(),
            "device-id" => s.device_id.to_value(),
            "channel-id" => s.channel().to_value(),
            "password" => None::<String>.to_value(),
            "local-ip" => s.local_ip.to_value(),
            "local-port" => s.local_port.to_value(),
            "expires" => s.expires.to_value(),
            "keepalive-interval" => s.keepalive_interval.to_value(),
            "retry-interval" => s.retry_interval.to_value(),
            "talk-transport" => s.talk_transport.to_value(),
            "talk-ps" => s.talk_ps.to_value(),
            "device-name" => s.device_name.to_value(),
            "position" => s
                .position
                .map(|(lon, lat)| format!("{lon},{lat}"))
                .unwrap_or_default()
                .to_value(),
            "records" => s
                .records
                .iter()
                .map(|r| format!("{}/{}", r.start, r.end))
                .collect::<Vec<_>>()
                .join(";")
                .to_value(),
            _ => None::<String>.to_value(),
        }
    }
}

impl GstObjectImpl for Gb28181Sink {}

impl ElementImpl for Gb28181Sink {
    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        let ret = self.parent_change_state(transition)?;
        if transition == gst::StateChange::ReadyToPaused {
            // What plays the talk pad prerolls on a gap until the platform talks. Not from
            // this thread: a sink downstream blocks the gap's pusher until PLAYING.
            lock(&self.state).talk_law = Some(G711::Alaw);
            self.obj().call_async(|obj| {
                let pad = obj.imp().talk_pad();
                pad.push_event(gst::event::StreamStart::new(&format!(
                    "{}/talk",
                    obj.name()
                )));
                pad.push_event(gst::event::Caps::new(&talk_caps(G711::Alaw)));
                pad.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
                    gst::ClockTime,
                >::new()));
                pad.push_event(gst::event::Gap::builder(gst::ClockTime::ZERO).build());
            });
        }
        Ok(ret)
    }

    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "GB/T 28181 device sink",
                "Sink/Network",
                "Device side of GB/T 28181: registers with a platform and sends the MPEG-PS \
                 stream as RTP (UDP or TCP) when the platform INVITEs",
                "gst-ipcam developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst::Caps::builder("video/mpeg")
                .field("systemstream", true)
                .build();
            let talk = g711_caps(None);
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid sink template"),
                // The platform's voice broadcast (gaps while there is none).
                gst::PadTemplate::new(
                    "talk",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &talk,
                )
                .expect("valid talk template"),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseSinkImpl for Gb28181Sink {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = lock(&self.settings).clone();
        // IP literals (IPv6 with or without brackets) as they are, names resolved.
        let server = addr::parse_ip(&s.server_ip)
            .map(|ip| SocketAddr::new(ip, s.server_port as u16))
            .or_else(|| {
                (s.server_ip.as_str(), s.server_port as u16)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
            })
            .ok_or_else(|| {
                gst::error_msg!(
                    gst::ResourceError::Settings,
                    ["Bad server address {}:{}", s.server_ip, s.server_port]
                )
            })?;
        let local_ip = if s.local_ip.is_empty() {
            // The address facing the server, of its family; none (e.g. no IPv6 on this host)
            // is an error, not a socket of the other family that would send nothing.
            addr::local_ip_towards(server)
                .map_err(|e| {
                    gst::error_msg!(
                        gst::ResourceError::Settings,
                        [
                            "No local {} address reaches the server {server}: {e}",
                            addr::Family::of(server.ip())
                        ]
                    )
                })?
                .to_string()
        } else {
            addr::parse_ip(&s.local_ip)
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| s.local_ip.clone())
        };
        let config = DeviceConfig {
            server,
            server_id: s.server_id.clone(),
            domain: s.domain(),
            device_id: s.device_id.clone(),
            channel_id: s.channel(),
            password: s.password.clone(),
            local_ip,
            local_port: s.local_port as u16,
            expires: s.expires,
            keepalive_interval_ms: u64::from(s.keepalive_interval),
            retry_ms: u64::from(s.retry_interval),
            device_name: s.device_name.clone(),
            records: s.records.clone(),
            transport: s.sip_transport.into(),
        };
        let weak = self.obj().downgrade();
        let agent = DeviceAgent::start(config, move |e| {
            let Some(obj) = weak.upgrade() else { return };
            gst::info!(CAT, obj = obj, "{e:?}");
            match &e {
                DeviceEvent::RegisterFailed { status: Some(st) } => gst::element_warning!(
                    obj,
                    gst::ResourceError::OpenWrite,
                    ("The platform refused the registration: {st}")
                ),
                // Nothing listening there (or the wrong address family of a name): say so.
                DeviceEvent::RegisterFailed { status: None } => gst::element_warning!(
                    obj,
                    gst::ResourceError::OpenWrite,
                    ("No answer to the registration from {server}; retrying")
                ),
                // The platform wants a key frame: ask the encoder upstream (psmux and the
                // parsers pass the force-key-unit event on).
                DeviceEvent::KeyFrameRequested { .. } => {
                    let ev = gst::event::CustomUpstream::new(
                        gst::Structure::builder("GstForceKeyUnit")
                            .field("all-headers", true)
                            .build(),
                    );
                    if let Some(pad) = obj.static_pad("sink") {
                        pad.push_event(ev);
                    }
                }
                _ => {}
            }
            let _ = obj.post_message(
                gst::message::Element::builder(event_structure(&e))
                    .src(&obj)
                    .build(),
            );
        })
        .map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::InvalidInput {
                gst::ResourceError::Settings
            } else {
                gst::ResourceError::OpenWrite
            };
            gst::error_msg!(
                kind,
                [
                    "Could not start SIP ({:?}) to {server}: {e}",
                    s.sip_transport
                ]
            )
        })?;
        gst::info!(
            CAT,
            imp = self,
            "Device {} registering from {} to {server} over {:?}",
            s.device_id,
            agent.local_addr(),
            s.sip_transport
        );
        if let Some((lon, lat)) = s.position {
            agent.set_position(lon, lat);
        }
        agent.set_talk_transport(s.talk_transport.into());
        agent.set_talk_ps(s.talk_ps);
        let weak = self.obj().downgrade();
        agent.set_talk_sink(Some(Arc::new(move |law, payload: &[u8]| {
            if let Some(obj) = weak.upgrade() {
                obj.imp().push_talk(law, payload);
            }
        })));
        let mut st = lock(&self.state);
        st.agent = Some(agent);
        st.frames = 0;
        st.saw_delta = false;
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let agent = lock(&self.state).agent.take();
        if let Some(a) = agent {
            a.stop();
        }
        Ok(())
    }

    fn event(&self, event: gst::Event) -> bool {
        if let gst::EventView::Eos(_) = event.view()
            && let Some(a) = lock(&self.state).agent.clone()
        {
            a.end_of_media();
        }
        self.parent_event(event)
    }

    fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let delta = buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        let (agent, flags_meaningful) = {
            let mut st = lock(&self.state);
            st.frames += 1;
            st.saw_delta |= delta;
            (st.agent.clone(), st.saw_delta)
        };
        let Some(agent) = agent else {
            return Err(gst::FlowError::Flushing);
        };
        let map = buffer.map_readable().map_err(|_| {
            gst::element_imp_error!(self, gst::CoreError::Failed, ["Failed to map buffer"]);
            gst::FlowError::Error
        })?;
        // mpegpsmux flags nothing: then the agent looks for key frames in the data.
        let key = flags_meaningful.then_some(!delta);
        let rtp_ts = buffer
            .pts()
            .or(buffer.dts())
            .map(|t| t.nseconds().wrapping_mul(9) / 100_000)
            .unwrap_or(0) as u32;
        agent.send_frame(&map, key, rtp_ts);
        Ok(gst::FlowSuccess::Ok)
    }
}
