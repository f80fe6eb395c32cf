//! MPEG-PS over RTP as GB/T 28181 carries it: one PS frame (pack header, optional system
//! header and PSM, then the PES packets of one access unit or one audio PES) per RTP
//! timestamp, cut into MTU-sized packets, the marker bit on the last packet of the frame.
//! Payload type 96 (dynamic), 90 kHz clock.
//!
//! GStreamer-free: [`packetizer`] splits a frame into packet payloads, [`depacketizer`]
//! reassembles frames from packets and survives loss, reordering and duplicates,
//! [`replay`] feeds raw RTP packets (length-prefixed, RFC 4571 style) through the
//! depacketizer for the fuzz target and tests.

pub mod depacketizer;
pub mod packetizer;
pub mod replay;

/// RTP clock rate of PS over RTP (the MPEG system clock divided by 300).
pub const CLOCK_RATE: u32 = 90_000;
/// The payload type GB/T 28181 uses for PS (`a=rtpmap:96 PS/90000`).
pub const DEFAULT_PAYLOAD_TYPE: u8 = 96;
/// Fixed RTP header length without CSRCs and extensions.
pub const RTP_HEADER_LEN: usize = 12;

/// Whether `payload` begins with an MPEG-PS start code that can open a frame: a pack header,
/// system header, PSM, end code or a PES packet (`00 00 01 xx`, xx >= 0xB9). Video
/// elementary-stream start codes (H.264/H.265 NAL headers, MPEG slices) are all below 0xB9,
/// so a packet that continues a frame almost never looks like this.
pub fn starts_with_ps_start_code(payload: &[u8]) -> bool {
    matches!(payload, [0, 0, 1, id, ..] if *id >= 0xB9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_codes() {
        assert!(starts_with_ps_start_code(&[0, 0, 1, 0xBA, 0x44]));
        assert!(starts_with_ps_start_code(&[0, 0, 1, 0xC0]));
        assert!(starts_with_ps_start_code(&[0, 0, 1, 0xE0]));
        assert!(!starts_with_ps_start_code(&[0, 0, 1, 0x65]));
        assert!(!starts_with_ps_start_code(&[0, 0, 1]));
        assert!(!starts_with_ps_start_code(&[]));
        assert!(!starts_with_ps_start_code(&[0, 1, 1, 0xBA]));
    }
}
