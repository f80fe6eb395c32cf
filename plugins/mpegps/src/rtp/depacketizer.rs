//! Reassembly of PS frames from RTP packets.
//!
//! A frame is every packet of one RTP timestamp; it ends with the marker bit, or, for
//! senders that never set it, when the timestamp changes (or on [`Depacketizer::flush`]).
//! Packets are expected in sequence order (behind `rtpjitterbuffer`, or as UDP/TCP deliver
//! them); the depacketizer keeps its own sequence tracking and
//!
//! - drops duplicates and late (reordered) packets, which arrive after their frame moved on;
//! - on a sequence gap drops the frame the gap falls into: the frame in progress, or, when
//!   the gap comes before a new timestamp, the new frame unless its first payload opens with
//!   a PS start code (so whole frames lost between two good ones cost nothing more);
//! - flags the next frame it outputs after any loss or drop as discontinuous;
//! - bounds a frame to `max_frame_size` bytes and [`MAX_PACKETS_PER_FRAME`] packets,
//!   dropping larger ones.
//!
//! Payloads are opaque handles `T` (sub-buffers in the element, byte vectors in tests), so
//! the caller can assemble the output without copying.

use super::starts_with_ps_start_code;

/// Default bound on one reassembled frame.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 4 * 1024 * 1024;
/// Bound on the packets of one frame, so tiny payloads cannot pile up handles.
pub const MAX_PACKETS_PER_FRAME: usize = 16 * 1024;
/// Packets this far behind the highest sequence number are late or duplicates; further
/// back is taken as a sender restart (RFC 3550 A.1 uses 100 as well).
pub const MAX_MISORDER: i16 = 100;

/// What the caller knows about one RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMeta {
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub marker: bool,
    /// The transport already saw a discontinuity before this packet (DISCONT flag set by
    /// the base class or the jitter buffer).
    pub discont: bool,
}

/// Why a frame was not output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Packets were lost inside or at the end of the frame (or its marker was lost).
    Loss,
    /// The frame's first packets were lost: it does not start with a PS start code.
    MissingStart,
    /// The frame grew beyond `max_frame_size` or [`MAX_PACKETS_PER_FRAME`].
    TooLarge,
}

/// How a frame ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameEnd {
    Marker,
    TimestampChange,
    Flush,
}

/// One reassembled PS frame.
#[derive(Debug)]
pub struct Frame<T> {
    pub timestamp: u32,
    /// Payloads in sequence order; empty payloads are not kept.
    pub parts: Vec<T>,
    /// Sum of the payload lengths.
    pub size: usize,
    /// Something was lost or dropped since the previous output frame.
    pub discont: bool,
    pub first_seq: u16,
    pub last_seq: u16,
    pub end: FrameEnd,
}

/// What one call produced, in order.
#[derive(Debug)]
pub enum Event<T> {
    Frame(Frame<T>),
    Dropped {
        timestamp: u32,
        reason: DropReason,
        /// Bytes received for the frame before it was given up (as far as counted).
        size: usize,
    },
    /// Sequence gap before this packet.
    Lost {
        count: u32,
        seq: u16,
    },
    /// Duplicate or reordered packet that came too late; ignored.
    Late {
        seq: u16,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub packets: u64,
    pub frames: u64,
    pub bytes: u64,
    pub packets_lost: u64,
    pub packets_late: u64,
    pub frames_dropped: u64,
    pub frames_too_large: u64,
}

#[derive(Debug)]
struct Pending<T> {
    timestamp: u32,
    parts: Vec<T>,
    size: usize,
    first_seq: u16,
    last_seq: u16,
    broken: Option<DropReason>,
    /// A gap came before the frame's first payload: it must open with a start code.
    check_start: bool,
}

#[derive(Debug)]
pub struct Depacketizer<T> {
    max_frame_size: usize,
    last: Option<(u32, u16)>,
    pending: Option<Pending<T>>,
    discont_next: bool,
    stats: Stats,
}

impl<T> Default for Depacketizer<T> {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl<T> Depacketizer<T> {
    pub fn new(max_frame_size: usize) -> Self {
        Self {
            max_frame_size,
            last: None,
            pending: None,
            // The first frame after start is a discontinuity for downstream.
            discont_next: true,
            stats: Stats::default(),
        }
    }

    pub fn set_max_frame_size(&mut self, max_frame_size: usize) {
        self.max_frame_size = max_frame_size;
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Last accepted (SSRC, sequence number).
    pub fn last_packet(&self) -> Option<(u32, u16)> {
        self.last
    }

    /// Timestamp of the frame in progress.
    pub fn pending_timestamp(&self) -> Option<u32> {
        self.pending.as_ref().map(|p| p.timestamp)
    }

    /// Forgets the sequence state and the frame in progress (flush, restart).
    pub fn reset(&mut self) {
        self.last = None;
        self.pending = None;
        self.discont_next = true;
    }

    /// Takes one packet; `payload` is its payload bytes (for lengths and the start-code
    /// check), `handle` what the output frame will carry for it.
    pub fn push(&mut self, meta: PacketMeta, payload: &[u8], handle: T) -> Vec<Event<T>> {
        let mut events = Vec::new();
        self.stats.packets += 1;

        let mut gap = meta.discont;
        match self.last {
            None => gap = true,
            Some((ssrc, _)) if ssrc != meta.ssrc => gap = true,
            Some((_, last_seq)) => {
                let delta = meta.seq.wrapping_sub(last_seq) as i16;
                if delta <= 0 && delta > -MAX_MISORDER {
                    self.stats.packets_late += 1;
                    events.push(Event::Late { seq: meta.seq });
                    return events;
                }
                if delta > 1 {
                    let count = u32::from(delta.unsigned_abs()) - 1;
                    self.stats.packets_lost += u64::from(count);
                    events.push(Event::Lost {
                        count,
                        seq: meta.seq,
                    });
                    gap = true;
                } else if delta < 0 {
                    // Big jump backwards: the sender restarted.
                    gap = true;
                }
            }
        }
        self.last = Some((meta.ssrc, meta.seq));
        if gap {
            self.discont_next = true;
        }

        if let Some(mut pending) = self
            .pending
            .take_if(|pending| pending.timestamp != meta.timestamp)
        {
            // Whatever was lost right before this packet may be that frame's tail.
            if gap {
                pending.broken.get_or_insert(DropReason::Loss);
            }
            self.finish(pending, FrameEnd::TimestampChange, &mut events);
        }

        let max_frame_size = self.max_frame_size;
        let continues = self.pending.is_some();
        let pending = self.pending.get_or_insert_with(|| Pending {
            timestamp: meta.timestamp,
            parts: Vec::new(),
            size: 0,
            first_seq: meta.seq,
            last_seq: meta.seq,
            broken: None,
            check_start: gap,
        });
        if continues && gap {
            pending.broken.get_or_insert(DropReason::Loss);
        }
        pending.last_seq = meta.seq;

        if !payload.is_empty() && std::mem::take(&mut pending.check_start) {
            // Packets lost before this frame's first payload may have been its head.
            if !starts_with_ps_start_code(payload) {
                pending.broken.get_or_insert(DropReason::MissingStart);
            }
        }
        if pending.broken.is_none() && !payload.is_empty() {
            if pending.size.saturating_add(payload.len()) > max_frame_size
                || pending.parts.len() >= MAX_PACKETS_PER_FRAME
            {
                pending.broken = Some(DropReason::TooLarge);
            } else {
                pending.parts.push(handle);
            }
        }
        // Count bytes even when dropping, for the drop report.
        pending.size = pending.size.saturating_add(payload.len());
        if pending.broken.is_some() {
            // Release what was kept as soon as the frame is known to be lost.
            pending.parts = Vec::new();
        }

        if meta.marker
            && let Some(pending) = self.pending.take()
        {
            self.finish(pending, FrameEnd::Marker, &mut events);
        }
        events
    }

    /// A packet was reported lost (jitter buffer `GstRTPPacketLost`): the frame in progress
    /// cannot be complete.
    pub fn packet_lost(&mut self) {
        self.discont_next = true;
        if let Some(pending) = &mut self.pending {
            pending.broken.get_or_insert(DropReason::Loss);
            pending.parts = Vec::new();
        }
    }

    /// Ends the frame in progress (EOS, or a sender known to be done with it). A frame that
    /// saw no loss is output even without its marker, for senders that never set it.
    pub fn flush(&mut self) -> Vec<Event<T>> {
        let mut events = Vec::new();
        if let Some(pending) = self.pending.take() {
            self.finish(pending, FrameEnd::Flush, &mut events);
        }
        events
    }

    fn finish(&mut self, pending: Pending<T>, end: FrameEnd, events: &mut Vec<Event<T>>) {
        match pending.broken {
            Some(reason) => {
                self.stats.frames_dropped += 1;
                if reason == DropReason::TooLarge {
                    self.stats.frames_too_large += 1;
                }
                self.discont_next = true;
                events.push(Event::Dropped {
                    timestamp: pending.timestamp,
                    reason,
                    size: pending.size,
                });
            }
            None if pending.size == 0 => {
                // Only empty payloads: nothing to output, nothing lost.
            }
            None => {
                self.stats.frames += 1;
                self.stats.bytes += pending.size as u64;
                events.push(Event::Frame(Frame {
                    timestamp: pending.timestamp,
                    parts: pending.parts,
                    size: pending.size,
                    discont: std::mem::take(&mut self.discont_next),
                    first_seq: pending.first_seq,
                    last_seq: pending.last_seq,
                    end,
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests;
