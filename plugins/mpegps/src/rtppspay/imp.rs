//! Thin glue around [`crate::rtp::packetizer`]: one input buffer is one PS frame, cut into
//! MTU-sized packets that share the input's memory (no payload copy), pushed as one list.

use gst_ipcam_common::sync::lock;
use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::subclass::prelude::*;
use gst_rtp::prelude::*;
use gst_rtp::subclass::prelude::*;

use crate::rtp::{self, packetizer};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtppspay",
        gst::DebugColorFlags::empty(),
        Some("RTP MPEG-PS payloader"),
    )
});

#[derive(Default)]
pub struct RtpPsPay {
    /// Send time (ns) of the previous frame, for monotonic RTP timestamps.
    last_send_ns: Mutex<Option<u64>>,
}

#[glib::object_subclass]
impl ObjectSubclass for RtpPsPay {
    const NAME: &'static str = "GstIpcamRtpPsPay";
    type Type = super::RtpPsPay;
    type ParentType = gst_rtp::RTPBasePayload;
}

impl ObjectImpl for RtpPsPay {
    fn constructed(&self) {
        self.parent_constructed();
        self.obj()
            .set_options("video", true, "MP2P", rtp::CLOCK_RATE);
    }
}

impl GstObjectImpl for RtpPsPay {}

impl ElementImpl for RtpPsPay {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "RTP MPEG-PS payloader (GB28181)",
                "Codec/Payloader/Network/RTP",
                "Payload-encodes MPEG-2 Program Stream frames into RTP packets as GB/T 28181 \
                 does (PT 96, 90 kHz, marker on the last packet of a frame)",
                "gst-ipcam developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = gst::Caps::builder("video/mpeg")
                .field("systemstream", true)
                .field("mpegversion", gst::List::new([1i32, 2]))
                .build();
            let src_caps = gst::Caps::builder("application/x-rtp")
                .field("media", "video")
                .field("payload", gst::IntRange::new(96i32, 127))
                .field("clock-rate", rtp::CLOCK_RATE as i32)
                .field("encoding-name", "MP2P")
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
}

impl RTPBasePayloadImpl for RtpPsPay {
    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        gst::debug!(CAT, imp = self, "Input caps {caps}");
        self.obj()
            .set_outcaps(None)
            .map_err(|_| gst::loggable_error!(CAT, "Failed to negotiate output caps"))
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::FlushStop(_) = event.view() {
            *lock(&self.last_send_ns) = None;
        }
        // Stock mpegpsmux sends a BYTES segment; the base class needs TIME to turn PTS into
        // RTP time. Buffers keep their PTS, so a plain TIME segment from 0 is equivalent.
        if let gst::EventView::Segment(segment) = event.view()
            && segment.segment().format() != gst::Format::Time
        {
            gst::debug!(
                CAT,
                imp = self,
                "Replacing {:?} segment with a TIME segment",
                segment.segment().format()
            );
            let time_segment = gst::FormattedSegment::<gst::ClockTime>::new();
            let replacement = gst::event::Segment::builder(&time_segment)
                .seqnum(event.seqnum())
                .build();
            return self.parent_sink_event(replacement);
        }
        self.parent_sink_event(event)
    }

    fn handle_buffer(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let obj = self.obj();
        let frame_len = buffer.size();
        let mtu = obj.mtu();
        // With source-info, allocate_output_buffer() adds the input's sources as CSRCs to
        // every packet: leave room for them.
        let csrc_count = obj.source_count(&buffer).min(15) as u8;
        let Some(capacity) = packetizer::payload_capacity(mtu, csrc_count) else {
            gst::element_imp_error!(
                self,
                gst::LibraryError::Settings,
                ["mtu {} leaves no room for payload", mtu]
            );
            return Err(gst::FlowError::Error);
        };
        if frame_len == 0 {
            gst::debug!(CAT, imp = self, "Dropping empty buffer");
            return Ok(gst::FlowSuccess::Ok);
        }

        // The RTP timestamp (from the output PTS) follows the frame's DTS: one PS frame per
        // access unit in decode order, so with B-frames a PTS would go backwards; receivers
        // (ZLMediaKit, NVRs) expect it to follow sending order. The PS headers inside keep the
        // real PTS/DTS. Without a DTS, the PTS.
        let pts = {
            let mut last = lock(&self.last_send_ns);
            let t = packetizer::frame_send_time(
                *last,
                buffer.dts().map(gst::ClockTime::nseconds),
                buffer.pts().map(gst::ClockTime::nseconds),
            );
            if t.is_some() {
                *last = t;
            }
            t.map(gst::ClockTime::from_nseconds)
        };
        let dts = buffer.dts();
        let fragments = packetizer::fragments(frame_len, capacity);
        gst::log!(
            CAT,
            imp = self,
            "Frame of {frame_len} bytes, pts {}, into {} packets",
            pts.display(),
            fragments.packet_count()
        );

        let mut list = gst::BufferList::new_sized(fragments.packet_count());
        {
            let list = list.get_mut().expect("new list is writable");
            for fragment in fragments {
                let mut packet = obj.allocate_output_buffer(0, 0, 0);
                {
                    let packet = packet.get_mut().expect("new buffer is writable");
                    {
                        let mut rtp = gst_rtp::RTPBuffer::from_buffer_writable(packet)
                            .map_err(|_| gst::FlowError::Error)?;
                        rtp.set_marker(fragment.marker);
                    }
                    packet.set_pts(pts);
                    packet.set_dts(dts);
                }
                let payload = buffer
                    .copy_region(
                        gst::BufferCopyFlags::MEMORY,
                        fragment.offset..fragment.offset + fragment.len,
                    )
                    .map_err(|_| gst::FlowError::Error)?;
                packet.append(payload);
                list.add(packet);
            }
        }
        obj.push_list(list)
    }
}
