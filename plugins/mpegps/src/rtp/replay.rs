//! Feeds a byte stream of length-prefixed RTP packets (2-byte big-endian length, as RFC 4571
//! frames them over TCP) through the [`Depacketizer`]. The fuzz target `rtp_ps_depay` and the
//! corpus replay test use it; it checks the depacketizer's invariants as it goes.

use super::depacketizer::{Depacketizer, Event, PacketMeta, Stats};

/// Splits `data` into RFC 4571 frames; a truncated last frame is ignored.
pub fn split_length_prefixed(mut data: &[u8]) -> Vec<&[u8]> {
    let mut packets = Vec::new();
    while let [hi, lo, rest @ ..] = data {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let Some((packet, tail)) = rest.split_at_checked(len) else {
            break;
        };
        packets.push(packet);
        data = tail;
    }
    packets
}

/// Parses one RTP packet into the depacketizer's view of it and its payload.
pub fn parse_packet(packet: &[u8]) -> Option<(PacketMeta, &[u8])> {
    let rtp = rtp_types::RtpPacket::parse(packet).ok()?;
    let meta = PacketMeta {
        seq: rtp.sequence_number(),
        timestamp: rtp.timestamp(),
        ssrc: rtp.ssrc(),
        marker: rtp.marker_bit(),
        discont: false,
    };
    let start = rtp.payload_offset();
    let payload = packet.get(start..start.checked_add(rtp.payload_len())?)?;
    Some((meta, payload))
}

/// Runs every packet of `data` through a depacketizer bounded to `max_frame_size`, then
/// flushes it; returns the output frames' bytes and the statistics. Panics only if an
/// invariant breaks (frame larger than the bound, size not matching the parts).
pub fn replay_length_prefixed(data: &[u8], max_frame_size: usize) -> (Vec<Vec<u8>>, Stats) {
    let mut depay = Depacketizer::<&[u8]>::new(max_frame_size);
    let mut frames = Vec::new();
    let collect = |events: Vec<Event<&[u8]>>, frames: &mut Vec<Vec<u8>>| {
        for event in events {
            if let Event::Frame(frame) = event {
                let bytes = frame.parts.concat();
                assert_eq!(bytes.len(), frame.size);
                assert!(frame.size <= max_frame_size);
                assert!(!bytes.is_empty());
                frames.push(bytes);
            }
        }
    };
    for packet in split_length_prefixed(data) {
        if let Some((meta, payload)) = parse_packet(packet) {
            let events = depay.push(meta, payload, payload);
            collect(events, &mut frames);
        }
    }
    let events = depay.flush();
    collect(events, &mut frames);
    let stats = depay.stats();
    assert_eq!(stats.frames as usize, frames.len());
    (frames, stats)
}

/// The fuzz target's entry point: the first byte picks the frame bound
/// (`(byte + 1) * 256` bytes, so the too-large path is reachable), the rest is a stream of
/// length-prefixed RTP packets.
pub fn fuzz_depay(data: &[u8]) {
    if let [selector, stream @ ..] = data {
        let max_frame_size = (usize::from(*selector) + 1) * 256;
        replay_length_prefixed(stream, max_frame_size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 96 | if marker { 0x80 } else { 0 }];
        p.extend(seq.to_be_bytes());
        p.extend(ts.to_be_bytes());
        p.extend(0x0BEB_DFA1u32.to_be_bytes());
        p.extend(payload);
        p
    }

    fn framed(packets: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in packets {
            out.extend((p.len() as u16).to_be_bytes());
            out.extend(p);
        }
        out
    }

    #[test]
    fn split_ignores_truncated_tail() {
        let data = [0, 2, 1, 2, 0, 1, 9, 0, 5, 1];
        assert_eq!(split_length_prefixed(&data), vec![&[1u8, 2][..], &[9][..]]);
        assert!(split_length_prefixed(&[0]).is_empty());
    }

    #[test]
    fn replays_frames() {
        let data = framed(&[
            rtp(1, 0, false, &[0, 0, 1, 0xBA, 1]),
            rtp(2, 0, true, &[2, 3]),
            rtp(3, 3600, true, &[0, 0, 1, 0xBA, 4]),
            vec![0x40; 12], // version 1: ignored
            rtp(4, 7200, false, &[0, 0, 1, 0xBA, 5]),
        ]);
        let (frames, stats) = replay_length_prefixed(&data, 1 << 20);
        assert_eq!(
            frames,
            vec![
                vec![0, 0, 1, 0xBA, 1, 2, 3],
                vec![0, 0, 1, 0xBA, 4],
                vec![0, 0, 1, 0xBA, 5]
            ]
        );
        assert_eq!(stats.packets, 4);
    }

    #[test]
    fn hikvision_first_packet_parses() {
        let packet = include_bytes!(
            "../../../../../shared/testdata/ps/hikvision-g711a-first-rtp-packet.bin"
        );
        let ps =
            include_bytes!("../../../../../shared/testdata/ps/hikvision-g711a-first-ps-bytes.bin");
        let (meta, payload) = parse_packet(packet).expect("valid RTP");
        assert_eq!(meta.ssrc, 0x0BEB_DFA1);
        assert_eq!(payload, &ps[..]);
    }
}
