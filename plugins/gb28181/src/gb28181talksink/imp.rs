//! Element glue around [`crate::platform::Talk`]: the session starts with the first buffer
//! (waiting for the device is interruptible by a state change), each buffer's samples go out
//! as RTP, the device's BYE ends the stream (a message, then buffers are dropped), stop sends
//! BYE.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_ipcam_common::sync::lock;

use crate::core::registrar::RegistrarConfig;
use crate::core::talk::G711;
use crate::endpoint::Endpoint;
use crate::gb28181src::{SipTransportMode, endpoint_key};
use crate::platform::{CallError, Talk, TalkParams};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "gb28181talksink",
        gst::DebugColorFlags::empty(),
        Some("GB/T 28181 voice broadcast to a device"),
    )
});

#[derive(Debug, Clone)]
struct Settings {
    sip_address: String,
    sip_port: u32,
    sip_transport: SipTransportMode,
    server_id: String,
    password: String,
    device_id: String,
    target_id: String,
    source_id: String,
    wait_timeout: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sip_address: "0.0.0.0".into(),
            sip_port: 5060,
            sip_transport: SipTransportMode::Udp,
            server_id: "34020000002000000001".into(),
            password: String::new(),
            device_id: String::new(),
            target_id: String::new(),
            source_id: String::new(),
            wait_timeout: 30,
        }
    }
}

#[derive(Default)]
struct State {
    endpoint: Option<Arc<Endpoint>>,
    talk: Option<Talk>,
    /// The device hung up: buffers are dropped from now on.
    ended: bool,
    /// The law of the negotiated caps.
    law: Option<G711>,
}

#[derive(Default)]
pub struct Gb28181TalkSink {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    flushing: Arc<AtomicBool>,
}

#[glib::object_subclass]
impl ObjectSubclass for Gb28181TalkSink {
    const NAME: &'static str = "GstIpcamGb28181TalkSink";
    type Type = super::Gb28181TalkSink;
    type ParentType = gst_base::BaseSink;
}

impl Gb28181TalkSink {
    fn post(&self, name: &str, f: impl FnOnce(gst::structure::Builder) -> gst::structure::Builder) {
        let s = f(gst::Structure::builder(name)).build();
        let _ = self
            .obj()
            .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
    }

    fn start_talk(&self) -> Result<(), gst::FlowError> {
        let s = lock(&self.settings).clone();
        let Some(ep) = lock(&self.state).endpoint.clone() else {
            return Err(gst::FlowError::Flushing);
        };
        let params = TalkParams {
            source_id: if s.source_id.is_empty() {
                s.server_id.clone()
            } else {
                s.source_id.clone()
            },
            device_id: s.device_id.clone(),
            target_id: if s.target_id.is_empty() {
                s.device_id.clone()
            } else {
                s.target_id.clone()
            },
            media_address: None,
            wait_timeout: Duration::from_secs(u64::from(s.wait_timeout)),
            invite_timeout: Duration::from_secs(10),
        };
        let flushing = self.flushing.clone();
        let talk = match Talk::start(&ep, &params, &move || flushing.load(Ordering::SeqCst)) {
            Ok(t) => t,
            Err(CallError::Cancelled) => return Err(gst::FlowError::Flushing),
            Err(e) => {
                gst::element_imp_error!(self, gst::ResourceError::OpenWrite, ("{e}"));
                return Err(gst::FlowError::Error);
            }
        };
        let want = lock(&self.state).law;
        let law = talk.format.law();
        if want.is_some_and(|w| w != law) {
            talk.hang_up(&ep);
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                (
                    "The device wants {}, the input is {}: put {} in front",
                    law.encoding(),
                    want.map(|w| w.encoding()).unwrap_or("?"),
                    if law == G711::Alaw {
                        "alawenc"
                    } else {
                        "mulawenc"
                    }
                )
            );
            return Err(gst::FlowError::NotNegotiated);
        }
        gst::info!(
            CAT,
            imp = self,
            "Talking to {} at {} ({})",
            s.device_id,
            talk.media_dest,
            talk.format.describe()
        );
        let (call_id, dest, codec) = (
            talk.dialog.call_id.clone(),
            talk.media_dest.to_string(),
            talk.format.describe(),
        );
        self.post("gb28181-talk-started", |b| {
            b.field("device-id", &s.device_id)
                .field("call-id", &call_id)
                .field("destination", &dest)
                .field("codec", &codec)
        });
        lock(&self.state).talk = Some(talk);
        Ok(())
    }
}

impl ObjectImpl for Gb28181TalkSink {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let d = Settings::default();
            vec![
                glib::ParamSpecString::builder("sip-address")
                    .nick("SIP address")
                    .blurb("Local address of the shared SIP endpoint (the one gb28181src uses)")
                    .default_value(Some(d.sip_address.as_str()))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("sip-port")
                    .nick("SIP port")
                    .blurb("Port of the shared SIP endpoint (0 = the one elements of this process asking for any port share; read back the bound port)")
                    .maximum(65535)
                    .default_value(d.sip_port)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("sip-transport", d.sip_transport)
                    .nick("SIP transport")
                    .blurb("SIP over UDP or TCP")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("server-id")
                    .nick("Server ID")
                    .blurb("The platform's ID (when this element opens the endpoint)")
                    .default_value(Some(d.server_id.as_str()))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("password")
                    .nick("Password")
                    .blurb("Devices' password (when this element opens the endpoint); write-only")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("device-id")
                    .nick("Device ID")
                    .blurb("The device to talk to")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("target-id")
                    .nick("Target ID")
                    .blurb("The device's audio output (TargetID; default: device-id)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("source-id")
                    .nick("Source ID")
                    .blurb("Our audio source the device calls (SourceID; default: server-id)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("wait-timeout")
                    .nick("Wait timeout")
                    .blurb("Seconds to wait for the device to register")
                    .default_value(d.wait_timeout)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("talking, packets and bytes sent")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        let string = || {
            value
                .get::<Option<String>>()
                .expect("type checked upstream")
                .unwrap_or_default()
        };
        match pspec.name() {
            "sip-address" => s.sip_address = string(),
            "sip-port" => s.sip_port = value.get().expect("type checked upstream"),
            "sip-transport" => s.sip_transport = value.get().expect("type checked upstream"),
            "server-id" => s.server_id = string(),
            "password" => s.password = string(),
            "device-id" => s.device_id = string(),
            "target-id" => s.target_id = string(),
            "source-id" => s.source_id = string(),
            "wait-timeout" => s.wait_timeout = value.get().expect("type checked upstream"),
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            let st = lock(&self.state);
            let (packets, bytes) = st
                .talk
                .as_ref()
                .map(|t| (t.packets, t.bytes))
                .unwrap_or((0, 0));
            return gst::Structure::builder("application/x-gb28181talksink-stats")
                .field("talking", st.talk.is_some())
                .field("packets", packets)
                .field("bytes", bytes)
                .build()
                .to_value();
        }
        if pspec.name() == "sip-port"
            && let Some(ep) = &lock(&self.state).endpoint
        {
            return u32::from(ep.local_addr().port()).to_value();
        }
        let s = lock(&self.settings);
        match pspec.name() {
            "sip-address" => s.sip_address.to_value(),
            "sip-port" => s.sip_port.to_value(),
            "sip-transport" => s.sip_transport.to_value(),
            "server-id" => s.server_id.to_value(),
            "password" => None::<String>.to_value(),
            "device-id" => s.device_id.to_value(),
            "target-id" => s.target_id.to_value(),
            "source-id" => s.source_id.to_value(),
            "wait-timeout" => s.wait_timeout.to_value(),
            _ => unimplemented!(),
        }
    }
}

impl GstObjectImpl for Gb28181TalkSink {}

impl ElementImpl for Gb28181TalkSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "GB/T 28181 voice broadcast sink",
                "Sink/Network/Audio",
                "Talks to a GB/T 28181 device: Broadcast, the device's INVITE, G.711 over RTP",
                "gst-ipcam developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = g711_caps(None);
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid sink template"),
            ]
        });
        TEMPLATES.as_ref()
    }
}

/// G.711 at 8 kHz mono as talk audio is: `law`, or either law.
pub(crate) fn g711_caps(law: Option<G711>) -> gst::Caps {
    let mut caps = gst::Caps::new_empty();
    let caps_mut = caps.get_mut().expect("new caps");
    for l in [G711::Alaw, G711::Ulaw] {
        if law.is_none_or(|w| w == l) {
            caps_mut.append_structure(
                gst::Structure::builder(match l {
                    G711::Alaw => "audio/x-alaw",
                    G711::Ulaw => "audio/x-mulaw",
                })
                .field("rate", 8000i32)
                .field("channels", 1i32)
                .build(),
            );
        }
    }
    caps
}

impl BaseSinkImpl for Gb28181TalkSink {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = lock(&self.settings).clone();
        if s.device_id.is_empty() {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                ["device-id is not set"]
            ));
        }
        let key = endpoint_key(&s.sip_address, s.sip_port, s.sip_transport);
        let config = RegistrarConfig {
            server_id: s.server_id.clone(),
            realm: s.server_id.chars().take(10).collect(),
            default_password: (!s.password.is_empty()).then(|| s.password.clone()),
            ..RegistrarConfig::default()
        };
        let ep = Endpoint::obtain(&key, config).map_err(|e| {
            gst::error_msg!(
                gst::ResourceError::OpenWrite,
                [
                    "Could not open SIP endpoint {}:{}: {e}",
                    s.sip_address,
                    s.sip_port
                ]
            )
        })?;
        self.flushing.store(false, Ordering::SeqCst);
        let mut st = lock(&self.state);
        st.endpoint = Some(ep);
        st.ended = false;
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let (talk, ep) = {
            let mut st = lock(&self.state);
            (st.talk.take(), st.endpoint.take())
        };
        if let (Some(t), Some(ep)) = (talk, ep) {
            t.hang_up(&ep);
        }
        Ok(())
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.store(true, Ordering::SeqCst);
        // The talk's set-up sleeps on the endpoint's changes: woken, it sees the flag.
        if let Some(ep) = lock(&self.state).endpoint.clone() {
            ep.wake_waiters();
        }
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let law = match caps.structure(0).map(|s| s.name().as_str()) {
            Some("audio/x-alaw") => G711::Alaw,
            Some("audio/x-mulaw") => G711::Ulaw,
            _ => return Err(gst::loggable_error!(CAT, "unsupported caps {caps}")),
        };
        lock(&self.state).law = Some(law);
        Ok(())
    }

    fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        if lock(&self.state).ended {
            return Ok(gst::FlowSuccess::Ok);
        }
        if lock(&self.state).talk.is_none() {
            self.start_talk()?;
        }
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        let mut st = lock(&self.state);
        let Some(talk) = st.talk.as_mut() else {
            return Err(gst::FlowError::Flushing);
        };
        if talk.ended_by_device() {
            let call_id = talk.dialog.call_id.clone();
            st.talk = None;
            st.ended = true;
            drop(st);
            gst::info!(CAT, imp = self, "The device ended the broadcast");
            self.post("gb28181-talk-ended", |b| {
                b.field("call-id", &call_id).field("reason", "bye")
            });
            return Ok(gst::FlowSuccess::Ok);
        }
        if let Err(e) = talk.send(&map) {
            gst::warning!(CAT, imp = self, "Could not send audio: {e}");
        }
        Ok(gst::FlowSuccess::Ok)
    }
}
