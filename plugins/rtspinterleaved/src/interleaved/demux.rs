//! The core entry point: bytes in, RTP/RTCP packets per channel and RTSP messages out.

use super::framer::{Data, Event, Framer};
use super::message::RtspMessage;
use super::session::{ChannelRole, Session};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PacketKind {
    Rtp,
    Rtcp,
}

/// What the demuxer found, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An RTP or RTCP packet for the pad `rtp_<channel>` / `rtcp_<channel>`: the channel it
    /// arrived on for RTP, the stream's RTCP channel for RTCP (also when a server sends RTCP
    /// on the RTP channel).
    Packet {
        kind: PacketKind,
        channel: u8,
        /// The channel the frame arrived on.
        arrival_channel: u8,
        data: Data,
    },
    Message(Box<RtspMessage>),
    /// Sync was lost; the next packet of every stream follows a gap.
    Resync,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    pub frames: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Stats {
    /// Non-empty `$` frames output.
    pub frames: u64,
    /// Payload bytes of those frames.
    pub bytes: u64,
    pub rtp_packets: u64,
    pub rtcp_packets: u64,
    pub rtsp_messages: u64,
    pub resyncs: u64,
    pub skipped_bytes: u64,
    pub zero_length_frames: u64,
    /// Frames on channels no SETUP announced (when SETUPs were seen); dropped.
    pub unknown_channel_frames: u64,
    /// Per arrival channel.
    pub channels: Vec<ChannelStats>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            frames: 0,
            bytes: 0,
            rtp_packets: 0,
            rtcp_packets: 0,
            rtsp_messages: 0,
            resyncs: 0,
            skipped_bytes: 0,
            zero_length_frames: 0,
            unknown_channel_frames: 0,
            channels: vec![ChannelStats::default(); 256],
        }
    }
}

#[derive(Debug, Default)]
pub struct Demuxer {
    framer: Framer,
    session: Session,
    stats: Stats,
}

fn rtcp_pt_on_rtp_channel(b: u8) -> bool {
    (200..=204).contains(&b)
}

fn rtcp_pt_on_rtcp_channel(b: u8) -> bool {
    (192..=223).contains(&b)
}

impl Demuxer {
    /// `max_text`: largest RTSP message accepted (longer text is garbage).
    pub fn new(max_text: usize) -> Self {
        Demuxer {
            framer: Framer::new(max_text),
            session: Session::default(),
            stats: Stats::default(),
        }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.resyncs = self.framer.resyncs;
        s.skipped_bytes = self.framer.skipped_bytes;
        s
    }

    /// Bytes held over, waiting for the rest of an item.
    pub fn pending_bytes(&self) -> usize {
        self.framer.carry_len()
    }

    /// Size of the carry-over buffer including already consumed bytes not yet released.
    pub fn buffered_bytes(&self) -> usize {
        self.framer.carry_capacity_used()
    }

    /// Processes one chunk; `Data::Input` ranges in `out` refer to `input`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<Output>) {
        self.framer.begin();
        self.run(input, out);
    }

    /// See [`Framer::set_strict`].
    pub fn set_strict(&mut self, strict: bool) {
        self.framer.set_strict(strict);
    }

    /// End of stream or discontinuity: outputs the items still held (owned data); what
    /// cannot complete is skipped as garbage (complete items after it still go out). Returns
    /// the number of bytes dropped.
    pub fn finish(&mut self, out: &mut Vec<Output>) -> usize {
        let before = self.framer.skipped_bytes;
        self.framer.begin_eos();
        self.run(&[], out);
        self.framer.discard_carry();
        (self.framer.skipped_bytes - before) as usize
    }

    fn run(&mut self, input: &[u8], out: &mut Vec<Output>) {
        while let Some(event) = self.framer.next(input) {
            match event {
                Event::Frame { channel, data } => {
                    let bytes = data.bytes(input);
                    let second = bytes.get(1).copied().unwrap_or(0);
                    let info = self.session.channel(channel).copied();
                    let (kind, pad_channel) = match info {
                        Some(info) => {
                            let rtcp = match info.role {
                                ChannelRole::Rtp => rtcp_pt_on_rtp_channel(second),
                                ChannelRole::Rtcp => true,
                            };
                            if rtcp {
                                (PacketKind::Rtcp, info.rtcp_channel)
                            } else {
                                (PacketKind::Rtp, info.rtp_channel)
                            }
                        }
                        None if self.session.has_mapping() => {
                            self.stats.unknown_channel_frames += 1;
                            continue;
                        }
                        None => {
                            // No SETUP seen: RTP on even channels, RTCP on the odd one after.
                            let odd = channel % 2 == 1;
                            let rtcp = if odd {
                                rtcp_pt_on_rtcp_channel(second)
                            } else {
                                rtcp_pt_on_rtp_channel(second)
                            };
                            if rtcp {
                                (PacketKind::Rtcp, if odd { channel } else { channel + 1 })
                            } else {
                                (PacketKind::Rtp, channel)
                            }
                        }
                    };
                    let len = data.len() as u64;
                    self.stats.frames += 1;
                    self.stats.bytes += len;
                    let ch = &mut self.stats.channels[channel as usize];
                    ch.frames += 1;
                    ch.bytes += len;
                    match kind {
                        PacketKind::Rtp => self.stats.rtp_packets += 1,
                        PacketKind::Rtcp => self.stats.rtcp_packets += 1,
                    }
                    out.push(Output::Packet {
                        kind,
                        channel: pad_channel,
                        arrival_channel: channel,
                        data,
                    });
                }
                Event::ZeroLengthFrame { .. } => self.stats.zero_length_frames += 1,
                Event::Message(msg) => {
                    self.stats.rtsp_messages += 1;
                    for channel in self.session.handle(&msg) {
                        self.framer.set_channel_known(channel);
                    }
                    out.push(Output::Message(msg));
                }
                Event::Resync => out.push(Output::Resync),
            }
        }
    }
}
