//! Element tests of rtppspay and rtppsdepay with gst_check::Harness.

use gst::prelude::*;
use gst_check::Harness;

const HIKVISION_RTP: &[u8] =
    include_bytes!("../../../../shared/testdata/ps/hikvision-g711a-first-rtp-packet.bin");
const HIKVISION_PS: &[u8] =
    include_bytes!("../../../../shared/testdata/ps/hikvision-g711a-first-ps-bytes.bin");

fn init() {
    gst_ipcam_testutil::init_with(|| {
        gstmpegps::plugin_register_static().expect("register mpegps");
    });
}

/// A fake PS frame: pack start code then filler that never looks like a start code.
fn ps_frame(n: usize, len: usize) -> Vec<u8> {
    let mut data = vec![0, 0, 1, 0xBA];
    data.extend((0..len.saturating_sub(4)).map(|i| 0x10 + ((i * 7 + n) % 200) as u8));
    data.truncate(len);
    data
}

fn rtp_packet(seq: u16, ts: u32, marker: bool, pt: u8, payload: &[u8]) -> Vec<u8> {
    gst_ipcam_testutil::rtp_packet(pt, marker, seq, ts, 0x1122_3344, payload)
}

/// RTP packets of `frames`, split at `capacity` payload bytes, frames 3600 ticks apart.
fn rtp_frames(frames: &[Vec<u8>], first_seq: u16, capacity: usize, pt: u8) -> Vec<Vec<u8>> {
    let mut seq = first_seq;
    let mut out = Vec::new();
    for (n, frame) in frames.iter().enumerate() {
        let chunks: Vec<_> = frame.chunks(capacity).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            out.push(rtp_packet(
                seq,
                1000 + 3600 * n as u32,
                i + 1 == chunks.len(),
                pt,
                chunk,
            ));
            seq = seq.wrapping_add(1);
        }
    }
    out
}

fn depay_harness(caps: &str) -> Harness {
    let mut h = Harness::new("rtppsdepay");
    h.set_src_caps_str(caps);
    h
}

fn push_packet(h: &mut Harness, packet: Vec<u8>, pts: gst::ClockTime) {
    let mut buffer = gst::Buffer::from_mut_slice(packet);
    buffer.get_mut().unwrap().set_pts(pts);
    h.push(buffer).expect("push");
}

fn pull_all(h: &mut Harness) -> Vec<gst::Buffer> {
    std::iter::from_fn(|| h.try_pull()).collect()
}

fn bytes(buffer: &gst::BufferRef) -> Vec<u8> {
    buffer.map_readable().unwrap().as_slice().to_vec()
}

fn stats(h: &Harness) -> gst::Structure {
    h.element().unwrap().property::<gst::Structure>("stats")
}

#[test]
fn pay_splits_at_mtu_with_marker_on_last_packet() {
    init();
    let mut h = Harness::new("rtppspay");
    h.element().unwrap().set_property("mtu", 400u32);
    h.set_src_caps_str("video/mpeg, systemstream=(boolean)true, mpegversion=(int)2");
    let frames = [
        ps_frame(0, 1000),
        ps_frame(1, 50),
        ps_frame(2, 388),
        ps_frame(3, 389),
    ];
    for (n, frame) in frames.iter().enumerate() {
        let mut buffer = gst::Buffer::from_mut_slice(frame.clone());
        buffer
            .get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(40 * n as u64));
        h.push(buffer).unwrap();
    }

    let caps = h.sinkpad().unwrap().current_caps().expect("caps");
    let s = caps.structure(0).unwrap();
    assert_eq!(s.name(), "application/x-rtp");
    assert_eq!(s.get::<&str>("media").unwrap(), "video");
    assert_eq!(s.get::<&str>("encoding-name").unwrap(), "MP2P");
    assert_eq!(s.get::<i32>("clock-rate").unwrap(), 90000);
    assert_eq!(s.get::<i32>("payload").unwrap(), 96);

    let packets = pull_all(&mut h);
    let per_frame: Vec<usize> = vec![3, 1, 1, 2];
    assert_eq!(packets.len(), per_frame.iter().sum::<usize>());
    let mut it = packets.iter();
    let mut first_ts = None;
    for (n, (frame, count)) in frames.iter().zip(per_frame).enumerate() {
        let mut payload = Vec::new();
        let mut ts = None;
        for i in 0..count {
            let packet = it.next().unwrap();
            assert!(packet.size() <= 400, "packet of {} bytes", packet.size());
            let rtp = gst_rtp::RTPBuffer::from_buffer_readable(packet).unwrap();
            assert_eq!(rtp.is_marker(), i + 1 == count, "frame {n} packet {i}");
            assert_eq!(rtp.payload_type(), 96);
            assert_eq!(*ts.get_or_insert(rtp.timestamp()), rtp.timestamp());
            payload.extend_from_slice(rtp.payload().unwrap());
        }
        assert_eq!(&payload, frame);
        let ts = ts.unwrap();
        let base = *first_ts.get_or_insert(ts);
        assert_eq!(
            ts.wrapping_sub(base),
            3600 * n as u32,
            "40 ms apart at 90 kHz"
        );
    }
}

#[test]
fn pay_uses_dts_without_pts_and_accepts_bytes_segment() {
    init();
    let mut h = Harness::new("rtppspay");
    h.set_src_caps_str("video/mpeg, systemstream=(boolean)true, mpegversion=(int)2");
    // Stock mpegpsmux sends a BYTES segment.
    let mut segment = gst::FormattedSegment::<gst::format::Bytes>::new();
    segment.set_start(gst::format::Bytes::ZERO);
    h.push_event(gst::event::Segment::new(&segment));
    let mut ts = Vec::new();
    for n in 0..2u64 {
        let mut buffer = gst::Buffer::from_mut_slice(ps_frame(n as usize, 100));
        buffer
            .get_mut()
            .unwrap()
            .set_dts(gst::ClockTime::from_mseconds(100 * n));
        h.push(buffer).unwrap();
        let packet = h.pull().unwrap();
        assert_eq!(packet.pts(), Some(gst::ClockTime::from_mseconds(100 * n)));
        ts.push(
            gst_rtp::RTPBuffer::from_buffer_readable(&packet)
                .unwrap()
                .timestamp(),
        );
    }
    assert_eq!(ts[1].wrapping_sub(ts[0]), 9000);
}

#[test]
fn depay_reassembles_and_sets_caps() {
    init();
    for caps in [
        "application/x-rtp, media=(string)video, clock-rate=(int)90000, encoding-name=(string)MP2P, payload=(int)96",
        "application/x-rtp, media=(string)video, clock-rate=(int)90000, encoding-name=(string)PS, payload=(int)100",
    ] {
        let mut h = depay_harness(caps);
        let frames = vec![ps_frame(0, 3000), ps_frame(1, 700), ps_frame(2, 1400)];
        for (i, p) in rtp_frames(&frames, 65534, 1400, 96).into_iter().enumerate() {
            push_packet(&mut h, p, gst::ClockTime::from_mseconds(10 * i as u64));
        }
        let out = pull_all(&mut h);
        assert_eq!(out.len(), 3, "{caps}");
        // Zero copy: a frame of three packets carries their three memories (checked before
        // mapping: mapping a writable multi-memory buffer merges them).
        assert_eq!(out[0].n_memory(), 3);
        for (buffer, frame) in out.iter().zip(&frames) {
            assert_eq!(&bytes(buffer), frame);
        }
        // PTS of each frame is the PTS of its first packet.
        assert_eq!(out[1].pts(), Some(gst::ClockTime::from_mseconds(30)));
        assert!(out[0].flags().contains(gst::BufferFlags::DISCONT));
        assert!(!out[1].flags().contains(gst::BufferFlags::DISCONT));

        let caps = h.sinkpad().unwrap().current_caps().expect("caps");
        let s = caps.structure(0).unwrap();
        assert_eq!(s.name(), "video/mpeg");
        assert!(s.get::<bool>("systemstream").unwrap());
        assert_eq!(s.get::<i32>("mpegversion").unwrap(), 2);
        assert_eq!(s.get::<&str>("alignment").unwrap(), "frame");
    }
}

#[test]
fn depay_drops_frame_with_lost_packet_and_flags_discont() {
    init();
    let mut h = depay_harness(
        "application/x-rtp, media=(string)video, clock-rate=(int)90000, encoding-name=(string)PS",
    );
    let frames = vec![ps_frame(0, 3000), ps_frame(1, 3000), ps_frame(2, 3000)];
    let mut packets = rtp_frames(&frames, 100, 1400, 96);
    packets.remove(4); // middle packet of the second frame
    for (i, p) in packets.into_iter().enumerate() {
        push_packet(&mut h, p, gst::ClockTime::from_mseconds(10 * i as u64));
    }
    let out = pull_all(&mut h);
    assert_eq!(out.len(), 2);
    assert_eq!(bytes(&out[0]), frames[0]);
    assert_eq!(bytes(&out[1]), frames[2]);
    assert!(out[1].flags().contains(gst::BufferFlags::DISCONT));
    let s = stats(&h);
    assert_eq!(s.get::<u64>("packets-lost").unwrap(), 1);
    assert_eq!(s.get::<u64>("frames-dropped").unwrap(), 1);
    assert_eq!(s.get::<u64>("frames-pushed").unwrap(), 2);
}

#[test]
fn depay_many_packets_per_frame_is_one_buffer() {
    init();
    let mut h = depay_harness(
        "application/x-rtp, media=(string)video, clock-rate=(int)90000, encoding-name=(string)MP2P",
    );
    let frames = vec![ps_frame(0, 100_000)];
    for p in rtp_frames(&frames, 7, 1388, 96) {
        push_packet(&mut h, p, gst::ClockTime::ZERO);
    }
    let out = pull_all(&mut h);
    assert_eq!(out.len(), 1);
    assert_eq!(bytes(&out[0]), frames[0]);
}

#[test]
fn depay_drops_oversized_frames() {
    init();
    let mut h = depay_harness(
        "application/x-rtp, media=(string)video, clock-rate=(int)90000, encoding-name=(string)MP2P",
    );
    let element = h.element().unwrap();
    element.set_property("max-frame-size", 2000u32);
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    let frames = vec![ps_frame(0, 1000), ps_frame(1, 2500), ps_frame(2, 2000)];
    for p in rtp_frames(&frames, 0, 1000, 96) {
        push_packet(&mut h, p, gst::ClockTime::ZERO);
    }
    let out = pull_all(&mut h);
    assert_eq!(out.len(), 2);
    assert_eq!(bytes(&out[1]), frames[2]);
    assert!(out[1].flags().contains(gst::BufferFlags::DISCONT));
    assert_eq!(stats(&h).get::<u64>("frames-too-large").unwrap(), 1);
    let warning = bus
        .pop_filtered(&[gst::MessageType::Warning])
        .expect("warning on the bus");
    let gst::MessageView::Warning(warning) = warning.view() else {
        unreachable!()
    };
    assert!(
        warning.error().message().contains("max-frame-size"),
        "{warning:?}"
    );
}

#[test]
fn depay_hikvision_first_packet_flushed_at_eos() {
    init();
    let mut h = depay_harness(
        "application/x-rtp, media=(string)video, clock-rate=(int)90000, encoding-name=(string)PS, payload=(int)96",
    );
    // The camera's first packet has no marker: the frame ends at EOS.
    assert_eq!(HIKVISION_RTP[1] & 0x80, 0);
    push_packet(&mut h, HIKVISION_RTP.to_vec(), gst::ClockTime::ZERO);
    assert!(h.try_pull().is_none());
    h.push_event(gst::event::Eos::new());
    let out = h.pull().expect("frame at EOS");
    assert_eq!(bytes(&out), HIKVISION_PS);
}

#[test]
fn depay_hikvision_first_packet_flushed_by_next_timestamp() {
    init();
    let mut h = depay_harness(
        "application/x-rtp, media=(string)video, clock-rate=(int)90000, encoding-name=(string)PS, payload=(int)96",
    );
    push_packet(&mut h, HIKVISION_RTP.to_vec(), gst::ClockTime::ZERO);
    let mut next = HIKVISION_RTP.to_vec();
    next[3] = 1; // seq 1
    next[7] = 0x10; // timestamp 16
    push_packet(&mut h, next, gst::ClockTime::from_mseconds(1));
    let out = h.pull().expect("first frame");
    assert_eq!(bytes(&out), HIKVISION_PS);
}

#[test]
fn pay_depay_round_trip() {
    init();
    let mut h = Harness::new_parse("rtppspay mtu=300 ! rtppsdepay");
    h.set_src_caps_str("video/mpeg, systemstream=(boolean)true, mpegversion=(int)2");
    let frames: Vec<_> = [1, 288, 289, 5000, 17 * 288 + 1]
        .iter()
        .enumerate()
        .map(|(n, &len)| ps_frame(n, len.max(4)))
        .collect();
    for (n, frame) in frames.iter().enumerate() {
        let mut buffer = gst::Buffer::from_mut_slice(frame.clone());
        buffer
            .get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(40 * n as u64));
        h.push(buffer).unwrap();
    }
    let out = pull_all(&mut h);
    assert_eq!(out.len(), frames.len());
    for (n, (buffer, frame)) in out.iter().zip(&frames).enumerate() {
        assert_eq!(&bytes(buffer), frame);
        assert_eq!(
            buffer.pts(),
            Some(gst::ClockTime::from_mseconds(40 * n as u64))
        );
    }
}

#[test]
fn depay_packet_lost_event_drops_the_pending_frame() {
    init();
    let mut h = depay_harness(
        "application/x-rtp, media=(string)video, clock-rate=(int)90000, encoding-name=(string)MP2P",
    );
    let frames = vec![ps_frame(0, 3000), ps_frame(1, 3000)];
    let mut packets = rtp_frames(&frames, 0, 1400, 96);
    packets.truncate(5); // frame 0 complete, frame 1 without its last packet
    for p in packets {
        push_packet(&mut h, p, gst::ClockTime::ZERO);
    }
    assert_eq!(pull_all(&mut h).len(), 1);
    // rtpjitterbuffer gives up on the last packet of frame 1.
    let lost = gst::Structure::builder("GstRTPPacketLost")
        .field("seqnum", 5u32)
        .field("timestamp", gst::ClockTime::from_mseconds(40))
        .field("duration", gst::ClockTime::from_mseconds(1))
        .build();
    h.push_event(gst::event::CustomDownstream::new(lost));
    // Without the notice, EOS would output the partial frame (senders without markers).
    h.push_event(gst::event::Eos::new());
    assert!(h.try_pull().is_none(), "partial frame output");
    assert_eq!(stats(&h).get::<u64>("frames-dropped").unwrap(), 1);
}

#[test]
fn pay_keeps_packets_within_mtu_with_source_info_csrcs() {
    init();
    let mut h = Harness::new("rtppspay");
    let pay = h.element().unwrap();
    pay.set_property("mtu", 200u32);
    pay.set_property("source-info", true);
    h.set_src_caps_str("video/mpeg, systemstream=(boolean)true, mpegversion=(int)2");
    let frame = ps_frame(0, 1000);
    let mut buffer = gst::Buffer::from_mut_slice(frame.clone());
    {
        let buffer = buffer.get_mut().unwrap();
        buffer.set_pts(gst::ClockTime::ZERO);
        gst_rtp::RTPSourceMeta::add(buffer, Some(7), &[1, 2, 3]);
    }
    h.push(buffer).unwrap();
    let packets = pull_all(&mut h);
    let mut payload = Vec::new();
    for packet in &packets {
        assert!(packet.size() <= 200, "packet of {} bytes", packet.size());
        let rtp = gst_rtp::RTPBuffer::from_buffer_readable(packet).unwrap();
        assert_eq!(rtp.csrc(0), Some(1), "CSRCs written");
        assert_eq!(rtp.csrc_count(), 4, "three CSRCs and the meta's SSRC");
        payload.extend_from_slice(rtp.payload().unwrap());
    }
    assert_eq!(payload, frame);
    // 200 - 12 - 4 * 4 = 172 payload bytes a packet.
    assert_eq!(packets.len(), 1000usize.div_ceil(172));
}
