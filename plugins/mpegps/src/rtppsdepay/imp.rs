//! Thin glue around [`crate::rtp::depacketizer`]: RTP payloads go in as sub-buffers of the
//! input, complete frames come out as one buffer sharing those memories (copied once into a
//! single allocation only when a frame has more memories than a `GstBuffer` can hold).

use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_rtp::prelude::*;
use gst_rtp::subclass::prelude::*;

use crate::rtp::{
    self,
    depacketizer::{self, Depacketizer, DropReason, Event, Frame, PacketMeta},
};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtppsdepay",
        gst::DebugColorFlags::empty(),
        Some("RTP MPEG-PS depayloader"),
    )
});

#[derive(Debug, Clone)]
struct Settings {
    max_frame_size: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_frame_size: depacketizer::DEFAULT_MAX_FRAME_SIZE as u32,
        }
    }
}

/// Payloads are sub-buffers of the input packets: they keep the packet's PTS/DTS and share
/// its memory.
type Part = gst::Buffer;

struct State {
    depay: Depacketizer<Part>,
    clock_rate: i32,
}

impl Default for State {
    fn default() -> Self {
        Self {
            depay: Depacketizer::new(Settings::default().max_frame_size as usize),
            clock_rate: rtp::CLOCK_RATE as i32,
        }
    }
}

#[derive(Default)]
pub struct RtpPsDepay {
    settings: Mutex<Settings>,
    state: Mutex<State>,
}

#[glib::object_subclass]
impl ObjectSubclass for RtpPsDepay {
    const NAME: &'static str = "GstIpcamRtpPsDepay";
    type Type = super::RtpPsDepay;
    type ParentType = gst_rtp::RTPBaseDepayload;
}

impl RtpPsDepay {
    fn stats(&self) -> gst::Structure {
        let state = self.state.lock().unwrap();
        let stats = state.depay.stats();
        let mut s = gst::Structure::builder("application/x-rtp-ps-depayload-stats")
            .field("clock-rate", state.clock_rate as u32)
            .field("packets-received", stats.packets)
            .field("packets-lost", stats.packets_lost)
            .field("packets-late", stats.packets_late)
            .field("frames-pushed", stats.frames)
            .field("bytes-pushed", stats.bytes)
            .field("frames-dropped", stats.frames_dropped)
            .field("frames-too-large", stats.frames_too_large)
            .build();
        if let Some((ssrc, seq)) = state.depay.last_packet() {
            s.set("ssrc", ssrc);
            s.set("seqnum", u32::from(seq));
        }
        s
    }

    /// Logs what the core reported and turns its frames into output buffers.
    fn handle_events(&self, events: Vec<Event<Part>>) -> Vec<gst::Buffer> {
        let mut out = Vec::new();
        for event in events {
            match event {
                Event::Frame(frame) => {
                    if let Some(buffer) = self.frame_to_buffer(frame) {
                        out.push(buffer);
                    }
                }
                Event::Dropped {
                    timestamp,
                    reason: DropReason::TooLarge,
                    size,
                } => {
                    let max = self.settings.lock().unwrap().max_frame_size;
                    gst::element_imp_warning!(
                        self,
                        gst::StreamError::Demux,
                        (
                            "Dropped a frame of {} bytes: larger than max-frame-size {}",
                            size,
                            max
                        ),
                        ["RTP time {}", timestamp]
                    );
                }
                Event::Dropped {
                    timestamp,
                    reason,
                    size,
                } => {
                    gst::debug!(
                        CAT,
                        imp = self,
                        "Dropped incomplete frame (RTP time {timestamp}, {size} bytes received): {reason:?}"
                    );
                }
                Event::Lost { count, seq } => {
                    gst::debug!(CAT, imp = self, "{count} packets lost before seq {seq}");
                }
                Event::Late { seq } => {
                    gst::debug!(CAT, imp = self, "Ignoring late or duplicate packet {seq}");
                }
            }
        }
        out
    }

    fn frame_to_buffer(&self, frame: Frame<Part>) -> Option<gst::Buffer> {
        let first = frame.parts.first()?;
        let (pts, dts) = (first.pts(), first.dts());
        let n_memory: usize = frame.parts.iter().map(|p| p.n_memory()).sum();

        let mut buffer = if n_memory <= gst::BufferRef::max_memory() {
            let mut buffer = gst::Buffer::new();
            {
                let buffer = buffer.get_mut().expect("new buffer is writable");
                for part in &frame.parts {
                    for memory in part.iter_memories_owned() {
                        buffer.append_memory(memory);
                    }
                }
            }
            buffer
        } else {
            let mut buffer = gst::Buffer::with_size(frame.size).ok()?;
            {
                let buffer = buffer.get_mut().expect("new buffer is writable");
                let mut map = buffer.map_writable().ok()?;
                let mut offset = 0;
                for part in &frame.parts {
                    let len = part.size();
                    let dest = map.get_mut(offset..offset + len)?;
                    part.copy_to_slice(0, dest).ok()?;
                    offset += len;
                }
            }
            buffer
        };
        {
            let buffer = buffer.get_mut().expect("new buffer is writable");
            buffer.set_pts(pts);
            buffer.set_dts(dts);
            if frame.discont {
                buffer.set_flags(gst::BufferFlags::DISCONT);
            }
        }
        gst::log!(
            CAT,
            imp = self,
            "Frame RTP time {} seq {}..={} {} bytes in {} packets, pts {}, {:?}{}",
            frame.timestamp,
            frame.first_seq,
            frame.last_seq,
            frame.size,
            frame.parts.len(),
            pts.display(),
            frame.end,
            if frame.discont { ", discont" } else { "" }
        );
        Some(buffer)
    }

    fn push_buffers(&self, buffers: Vec<gst::Buffer>) -> Result<gst::FlowSuccess, gst::FlowError> {
        let obj = self.obj();
        for buffer in buffers {
            obj.push(buffer)?;
        }
        Ok(gst::FlowSuccess::Ok)
    }
}

impl ObjectImpl for RtpPsDepay {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecUInt::builder("max-frame-size")
                    .nick("Maximum frame size")
                    .blurb("Largest PS frame to reassemble, in bytes; larger ones are dropped with a warning")
                    .minimum(1)
                    .default_value(Settings::default().max_frame_size)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("Reassembly statistics: packets received, lost and late, frames pushed, dropped and too large")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        match pspec.name() {
            "max-frame-size" => {
                let max_frame_size = value.get::<u32>().expect("type checked upstream");
                self.settings.lock().unwrap().max_frame_size = max_frame_size;
                self.state
                    .lock()
                    .unwrap()
                    .depay
                    .set_max_frame_size(max_frame_size as usize);
            }
            other => unimplemented!("property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "max-frame-size" => self.settings.lock().unwrap().max_frame_size.to_value(),
            "stats" => self.stats().to_value(),
            other => unimplemented!("property {other}"),
        }
    }
}

impl GstObjectImpl for RtpPsDepay {}

impl ElementImpl for RtpPsDepay {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "RTP MPEG-PS depayloader (GB28181)",
                "Codec/Depayloader/Network/RTP",
                "Reassembles MPEG-2 Program Stream frames from RTP packets as GB/T 28181 sends \
                 them, dropping frames broken by packet loss",
                "gst-ipcam developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = gst::Caps::builder("application/x-rtp")
                .field("media", "video")
                .field("clock-rate", rtp::CLOCK_RATE as i32)
                .field("encoding-name", gst::List::new(["MP2P", "PS"]))
                .build();
            let src_caps = gst::Caps::builder("video/mpeg")
                .field("systemstream", true)
                .field("mpegversion", 2i32)
                .field("alignment", "frame")
                .build();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &sink_caps,
                )
                .expect("valid sink template"),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &src_caps,
                )
                .expect("valid src template"),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            let max_frame_size = self.settings.lock().unwrap().max_frame_size as usize;
            *self.state.lock().unwrap() = State {
                depay: Depacketizer::new(max_frame_size),
                ..State::default()
            };
        }
        self.parent_change_state(transition)
    }
}

impl RTPBaseDepayloadImpl for RtpPsDepay {
    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let s = caps
            .structure(0)
            .ok_or_else(|| gst::loggable_error!(CAT, "Empty caps"))?;
        let clock_rate = s.get::<i32>("clock-rate").unwrap_or(rtp::CLOCK_RATE as i32);
        gst::debug!(CAT, imp = self, "Input caps {caps}");
        self.state.lock().unwrap().clock_rate = clock_rate;

        let src_caps = gst::Caps::builder("video/mpeg")
            .field("systemstream", true)
            .field("mpegversion", 2i32)
            .field("alignment", "frame")
            .build();
        if self
            .obj()
            .src_pad()
            .push_event(gst::event::Caps::new(&src_caps))
        {
            Ok(())
        } else {
            Err(gst::loggable_error!(CAT, "Downstream refused {src_caps}"))
        }
    }

    fn handle_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::Eos(_) => {
                let events = self.state.lock().unwrap().depay.flush();
                let buffers = self.handle_events(events);
                if let Err(err) = self.push_buffers(buffers) {
                    gst::debug!(CAT, imp = self, "Pushing the last frame at EOS: {err:?}");
                }
            }
            gst::EventView::FlushStop(_) => {
                self.state.lock().unwrap().depay.reset();
            }
            _ => (),
        }
        self.parent_handle_event(event)
    }

    fn packet_lost(&self, event: &gst::EventRef) -> bool {
        gst::debug!(CAT, imp = self, "Packet lost: {:?}", event.structure());
        self.state.lock().unwrap().depay.packet_lost();
        self.parent_packet_lost(event)
    }

    fn process_rtp_packet(
        &self,
        rtp_buffer: &gst_rtp::RTPBuffer<gst_rtp::rtp_buffer::Readable>,
    ) -> Option<gst::Buffer> {
        let input = rtp_buffer.buffer();
        let meta = PacketMeta {
            seq: rtp_buffer.seq(),
            timestamp: rtp_buffer.timestamp(),
            ssrc: rtp_buffer.ssrc(),
            marker: rtp_buffer.is_marker(),
            discont: input.flags().contains(gst::BufferFlags::DISCONT),
        };
        let payload = match rtp_buffer.payload() {
            Ok(payload) => payload,
            Err(_) => &[],
        };
        let part = if payload.is_empty() {
            None
        } else {
            match rtp_buffer.payload_buffer() {
                Ok(buffer) => Some(buffer),
                Err(err) => {
                    gst::warning!(CAT, imp = self, "No payload buffer: {err}");
                    None
                }
            }
        };
        let (payload, part) = match part {
            Some(buffer) => (payload, buffer),
            None => (&[][..], gst::Buffer::new()),
        };

        let events = self.state.lock().unwrap().depay.push(meta, payload, part);
        let mut buffers = self.handle_events(events);
        // The base class pushes the returned buffer and hands its flow upstream; earlier
        // frames of this packet (a frame closed by the timestamp change) go out first.
        let last = buffers.pop();
        if let Err(err) = self.push_buffers(buffers) {
            gst::debug!(CAT, imp = self, "Push failed: {err:?}");
        }
        last
    }
}
