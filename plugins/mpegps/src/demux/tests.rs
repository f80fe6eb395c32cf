//! Core tests over hand-built PS byte vectors, one per GB28181 quirk.

use super::*;

fn ts_bytes(marker: u8, ts: u64) -> [u8; 5] {
    [
        (marker << 4) | (((ts >> 30) as u8 & 7) << 1) | 1,
        (ts >> 22) as u8,
        (((ts >> 15) as u8) << 1) | 1,
        (ts >> 7) as u8,
        ((ts as u8) << 1) | 1,
    ]
}

fn pack(stuffing: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 1, 0xBA, 0x44, 0, 4, 0, 4, 1, 0x01, 0x89, 0xC3];
    v.push(0xF8 | stuffing.len() as u8);
    v.extend_from_slice(stuffing);
    v
}

fn mpeg1_pack() -> Vec<u8> {
    vec![0, 0, 1, 0xBA, 0x21, 0, 1, 0, 1, 0x80, 0x1B, 0x83]
}

fn psm(entries: &[(u8, u8, &[u8])]) -> Vec<u8> {
    let mut map = Vec::new();
    for (st, id, desc) in entries {
        map.extend_from_slice(&[*st, *id]);
        map.extend_from_slice(&(desc.len() as u16).to_be_bytes());
        map.extend_from_slice(desc);
    }
    let mut body = vec![0xE0, 0xFF, 0, 0];
    body.extend_from_slice(&(map.len() as u16).to_be_bytes());
    body.extend_from_slice(&map);
    body.extend_from_slice(&[0, 0, 0, 0]); // CRC (not checked)
    let mut v = vec![0, 0, 1, 0xBC];
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.extend_from_slice(&body);
    v
}

fn pes(sid: u8, pts: Option<u64>, payload: &[u8], unbounded: bool) -> Vec<u8> {
    let mut hdr = vec![0x80, 0, 0];
    if let Some(p) = pts {
        hdr[1] = 0x80;
        hdr[2] = 5;
        hdr.extend_from_slice(&ts_bytes(2, p));
    }
    let len = if unbounded {
        0
    } else {
        hdr.len() + payload.len()
    };
    let mut v = vec![0, 0, 1, sid];
    v.extend_from_slice(&(len as u16).to_be_bytes());
    v.extend_from_slice(&hdr);
    v.extend_from_slice(payload);
    v
}

const H264_IDR: &[u8] = &[
    0, 0, 0, 1, 0x67, 0x42, 0, 0x1E, 0, 0, 0, 1, 0x68, 0xCE, 0x38, 0x80, 0, 0, 0, 1, 0x65, 0x88,
    0x84, 0x21, 0xA0,
];
const H264_P: &[u8] = &[0, 0, 0, 1, 0x41, 0x9A, 0x02, 0x03, 0x04];
const H265_IDR: &[u8] = &[
    0, 0, 0, 1, 0x40, 0x01, 0x0C, 0x01, 0, 0, 0, 1, 0x42, 0x01, 0x01, 0x01, 0, 0, 0, 1, 0x44, 0x01,
    0xC1, 0, 0, 0, 1, 0x26, 0x01, 0xAF, 0x12,
];
const ADTS: &[u8] = &[0xFF, 0xF1, 0x50, 0x80, 0x02, 0x1F, 0xFC, 0x21, 0x10];
const ALAW: &[u8] = &[0xD5, 0xD5, 0x55, 0x54, 0xD4, 0xD5, 0x55, 0x55];

fn run_chunks(data: &[u8], chunk: usize) -> (Vec<Event>, Demuxer) {
    let mut d = Demuxer::new(Config::default());
    let mut ev = Vec::new();
    for c in data.chunks(chunk.max(1)) {
        d.push(c, &mut ev);
    }
    d.finish(&mut ev);
    (ev, d)
}

fn run(data: &[u8]) -> Vec<Event> {
    run_chunks(data, data.len().max(1)).0
}

fn frames(ev: &[Event]) -> Vec<&Frame> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Frame(f) => Some(f),
            _ => None,
        })
        .collect()
}

fn frame_bytes(data: &[u8], f: &Frame) -> Vec<u8> {
    let mut v = Vec::new();
    for r in &f.ranges {
        v.extend_from_slice(&data[r.offset as usize..r.offset as usize + r.len]);
    }
    v
}

fn added(ev: &[Event]) -> Vec<(u8, Codec)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::StreamAdded {
                stream_id, codec, ..
            }
            | Event::StreamChanged {
                stream_id, codec, ..
            } => Some((*stream_id, *codec)),
            _ => None,
        })
        .collect()
}

fn camera_stream(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        let pts = 90_000 + i as u64 * 3600;
        v.extend(pack(&[]));
        if i == 0 {
            v.extend(psm(&[(0x1B, 0xE0, &[]), (0x90, 0xC0, &[])]));
            v.extend(pes(0xE0, Some(pts), H264_IDR, false));
        } else {
            v.extend(pes(0xE0, Some(pts), H264_P, false));
        }
        v.extend(pes(0xC0, Some(pts), ALAW, false));
    }
    v
}

#[test]
fn regular_stream_any_chunking() {
    let data = camera_stream(5);
    for chunk in [1, 2, 3, 7, 64, data.len()] {
        let (ev, d) = run_chunks(&data, chunk);
        let f = frames(&ev);
        let video: Vec<_> = f.iter().filter(|f| f.stream_id == 0xE0).collect();
        let audio: Vec<_> = f.iter().filter(|f| f.stream_id == 0xC0).collect();
        assert_eq!(video.len(), 5, "chunk {chunk}");
        assert_eq!(audio.len(), 5, "chunk {chunk}");
        assert!(video[0].key && !video[1].key);
        assert_eq!(frame_bytes(&data, video[0]), H264_IDR);
        assert_eq!(frame_bytes(&data, video[1]), H264_P);
        assert_eq!(frame_bytes(&data, audio[2]), ALAW);
        assert_eq!(video[1].pts.unwrap() - video[0].pts.unwrap(), 3600);
        assert_eq!(
            added(&ev),
            vec![(0xE0, Codec::H264), (0xC0, Codec::G711Alaw)]
        );
        let st = d.stats();
        assert_eq!(st.packs, 5);
        assert_eq!(st.pes_packets, 10);
        assert_eq!(st.resyncs, 0);
    }
}

#[test]
fn vendor_pack_stuffing() {
    let mut data = pack(&[0x00, 0x00, 0xA0, 0x05, 0x01, 0x02]);
    data.extend(pes(0xE0, Some(1000), H264_IDR, false));
    for chunk in 1..=data.len() {
        let (ev, _) = run_chunks(&data, chunk);
        let f = frames(&ev);
        assert_eq!(f.len(), 1, "chunk {chunk}");
        assert_eq!(frame_bytes(&data, f[0]), H264_IDR);
    }
}

#[test]
fn psm_with_bad_descriptor_lengths() {
    // Descriptor length claims 200 bytes: clamp, keep the stream.
    let mut p = psm(&[(0x1B, 0xE0, &[0x42, 0xC8, 1, 2]), (0x90, 0xC0, &[])]);
    // Corrupt the ES map length too.
    let map_len_pos = 6 + 4;
    p[map_len_pos] = 0xFF;
    let mut data = pack(&[]);
    data.extend(p);
    data.extend(pes(0xE0, Some(1000), H264_IDR, false));
    let ev = run(&data);
    assert_eq!(frames(&ev).len(), 1);
    assert_eq!(added(&ev)[0], (0xE0, Codec::H264));
}

#[test]
fn no_psm_guesses_codecs() {
    let mut data = Vec::new();
    data.extend(pack(&[]));
    data.extend(pes(0xE0, Some(0), H265_IDR, false));
    data.extend(pes(0xC0, Some(0), ADTS, false));
    data.extend(pes(0xC1, Some(0), ALAW, false));
    data.extend(pack(&[]));
    data.extend(pes(0xE1, Some(0), &[0, 0, 1, 0xB3, 0x14, 0, 0xF0], false));
    data.extend(pes(
        0xE2,
        Some(0),
        &[0, 0, 1, 0xB0, 0x01, 0, 0, 1, 0xB6, 0x10],
        false,
    ));
    data.extend(pes(0xE3, Some(0), H264_IDR, false));
    data.extend(pes(0xC2, Some(0), &[0xFF, 0xFD, 0x94, 0x00, 1, 2], false));
    data.extend(pack(&[]));
    let ev = run(&data);
    let a = added(&ev);
    assert!(a.contains(&(0xE0, Codec::H265)), "{a:?}");
    assert!(a.contains(&(0xC0, Codec::Aac)));
    assert!(a.contains(&(0xC1, Codec::G711Alaw)));
    assert!(a.contains(&(0xE1, Codec::Mpeg2Video)));
    assert!(a.contains(&(0xE2, Codec::Mpeg4Video)));
    assert!(a.contains(&(0xE3, Codec::H264)));
    assert!(a.contains(&(0xC2, Codec::MpegAudio)));
    let aac = ev.iter().find_map(|e| match e {
        Event::StreamAdded {
            stream_id: 0xC0,
            audio,
            ..
        } => Some(*audio),
        _ => None,
    });
    assert_eq!(aac.unwrap().rate, Some(44100));
    assert_eq!(aac.unwrap().channels, Some(2));
}

/// Streams joined mid-GOP without a PSM start with a P-slice, which no probe tells with
/// confidence: the NAL header syntax still tells H.265 from H.264 from MPEG-4 (H.265 was
/// announced as H.264 before, and changed at the next key frame).
#[test]
fn no_psm_mid_gop_guesses_codec_from_nal_syntax() {
    // H.265 TRAIL_R (type 1, tid 1), H.265 TRAIL_N after an AUD-less start, H.264 P-slice
    // (nal_ref_idc 2, first_mb 0), H.264 non-reference P-slice, MPEG-4 P-VOP.
    let cases: [(&[u8], Codec); 5] = [
        (&[0, 0, 0, 1, 0x02, 0x01, 0xD0, 0x1A, 0x22], Codec::H265),
        (&[0, 0, 1, 0x00, 0x01, 0xE0, 0x44, 0x10], Codec::H265),
        (&[0, 0, 0, 1, 0x41, 0x9A, 0x02, 0x03], Codec::H264),
        (&[0, 0, 0, 1, 0x01, 0x9E, 0x04, 0x05], Codec::H264),
        (&[0, 0, 1, 0xB6, 0x50, 0x12, 0x34], Codec::Mpeg4Video),
    ];
    for (payload, want) in cases {
        let mut data = Vec::new();
        data.extend(pack(&[]));
        data.extend(pes(0xE0, Some(0), payload, false));
        data.extend(pack(&[]));
        let a = added(&run(&data));
        assert_eq!(a, vec![(0xE0, want)], "{payload:02x?}");
    }
    // A PSM still wins over a guess (cameras that label correctly but send odd NALs).
    let mut data = Vec::new();
    data.extend(pack(&[]));
    data.extend(psm(&[(0x1B, 0xE0, &[])]));
    data.extend(pes(0xE0, Some(0), &[0, 0, 0, 1, 0x02, 0x01, 0xD0], false));
    data.extend(pack(&[]));
    assert_eq!(added(&run(&data)), vec![(0xE0, Codec::H264)]);
}

#[test]
fn psm_change_changes_codec() {
    let mut data = camera_stream(2);
    data.extend(pack(&[]));
    data.extend(psm(&[(0x24, 0xE0, &[]), (0x91, 0xC0, &[])]));
    data.extend(pes(0xE0, Some(200_000), H265_IDR, false));
    data.extend(pes(0xC0, Some(200_000), ALAW, false));
    data.extend(pack(&[]));
    let ev = run(&data);
    let a = added(&ev);
    assert!(a.contains(&(0xE0, Codec::H265)));
    assert!(a.contains(&(0xC0, Codec::G711Mulaw)));
    let f = frames(&ev);
    assert_eq!(
        f.iter().filter(|f| f.codec == Codec::H265).count(),
        1,
        "{ev:?}"
    );
}

#[test]
fn unbounded_video_pes() {
    let mut data = Vec::new();
    for i in 0..3u64 {
        data.extend(pack(&[]));
        data.extend(pes(
            0xE0,
            Some(i * 3600),
            if i == 0 { H264_IDR } else { H264_P },
            true,
        ));
    }
    data.extend(pack(&[]));
    for chunk in [1, 5, data.len()] {
        let (ev, _) = run_chunks(&data, chunk);
        let f = frames(&ev);
        assert_eq!(f.len(), 3, "chunk {chunk}");
        assert_eq!(frame_bytes(&data, f[0]), H264_IDR, "chunk {chunk} {f:?}");
        assert_eq!(frame_bytes(&data, f[2]), H264_P, "chunk {chunk}");
    }
}

#[test]
fn private_and_padding_streams_skipped() {
    let mut data = pack(&[]);
    data.extend(pes(0xE0, Some(0), H264_IDR, false));
    for sid in [0xBD, 0xBE, 0xBF] {
        let mut v = vec![0, 0, 1, sid, 0, 8];
        v.extend_from_slice(&[0, 0, 1, 0xE0, 0, 0, 1, 0xBA]); // start codes inside: skipped
        data.extend(v);
    }
    data.extend(pes(0xE0, Some(3600), H264_P, false));
    data.extend(pack(&[]));
    let ev = run(&data);
    assert_eq!(frames(&ev).len(), 2);
    assert!(!ev.iter().any(|e| matches!(e, Event::Resync { .. })));
}

#[test]
fn mislabelled_codecs_trust_payload() {
    let mut data = pack(&[]);
    data.extend(psm(&[(0x1B, 0xE0, &[]), (0x90, 0xC0, &[])]));
    data.extend(pes(0xE0, Some(0), H265_IDR, false));
    data.extend(pes(0xC0, Some(0), ADTS, false));
    data.extend(pack(&[]));
    let ev = run(&data);
    let f = frames(&ev);
    assert_eq!(
        f.iter().find(|f| f.stream_id == 0xE0).unwrap().codec,
        Codec::H265
    );
    assert_eq!(
        f.iter().find(|f| f.stream_id == 0xC0).unwrap().codec,
        Codec::Aac
    );
}

#[test]
fn back_to_back_start_codes_and_mpeg1_packs() {
    let mut data = vec![0, 0, 1, 0xBA];
    data.extend(pes(0xE0, Some(0), H264_IDR, false));
    data.extend(mpeg1_pack());
    // MPEG-1 PES header: stuffing, STD buffer, PTS.
    let mut p = vec![0, 0, 1, 0xE0, 0, 0, 0xFF, 0x40, 0x20];
    p.extend_from_slice(&ts_bytes(2, 3600));
    p.extend_from_slice(H264_P);
    let l = (p.len() - 6) as u16;
    p[4..6].copy_from_slice(&l.to_be_bytes());
    data.extend(p);
    data.extend(vec![0, 0, 1, 0xBA]);
    data.extend(pack(&[]));
    let ev = run(&data);
    let f = frames(&ev);
    assert_eq!(f.len(), 2, "{ev:?}");
    assert_eq!(f[1].pts.unwrap() - f[0].pts.unwrap(), 3600);
    assert_eq!(frame_bytes(&data, f[1]), H264_P);
}

#[test]
fn resync_after_garbage_drops_until_key_frame() {
    let good = camera_stream(3);
    let mut data = b"garbage prefix \x00\x00\x01\xE0 more".to_vec();
    data.extend(&good);
    // Corrupt stream: cut in the middle of the 2nd video PES, then continue with P then IDR.
    let cut = good.len() / 2;
    data.extend(&good[..cut]);
    data.extend(b"\x12\x34junk");
    let mut tail = Vec::new();
    tail.extend(pack(&[]));
    tail.extend(pes(0xE0, Some(900_000), H264_P, false));
    tail.extend(pes(0xC0, Some(900_000), ALAW, false));
    tail.extend(pack(&[]));
    tail.extend(pes(0xE0, Some(903_600), H264_IDR, false));
    tail.extend(pack(&[]));
    data.extend(&tail);
    let (ev, d) = run_chunks(&data, 100);
    assert!(d.stats().resyncs >= 1);
    let f = frames(&ev);
    let v: Vec<_> = f.iter().filter(|f| f.stream_id == 0xE0).collect();
    // 3 good + first IDR of the cut copy (+ maybe its P) ... then the P after junk is dropped.
    let after: Vec<_> = v
        .iter()
        .filter(|f| f.pts.unwrap() >= 900_000 + (1 << 33))
        .collect();
    assert_eq!(after.len(), 1, "{v:?}");
    assert!(after[0].key && after[0].discont);
}

#[test]
fn pts_wrap_is_continuous() {
    let mut data = Vec::new();
    let start = (1u64 << 33) - 3600;
    for i in 0..3u64 {
        data.extend(pack(&[]));
        let pts = (start + i * 3600) % (1 << 33);
        data.extend(pes(
            0xE0,
            Some(pts),
            if i == 0 { H264_IDR } else { H264_P },
            false,
        ));
    }
    data.extend(pack(&[]));
    let ev = run(&data);
    let f = frames(&ev);
    assert_eq!(f.len(), 3);
    assert_eq!(f[1].pts.unwrap() - f[0].pts.unwrap(), 3600);
    assert_eq!(f[2].pts.unwrap() - f[1].pts.unwrap(), 3600);
}

#[test]
fn too_large_frames_dropped() {
    let mut data = pack(&[]);
    let mut big = H264_IDR.to_vec();
    big.resize(3000, 0x55);
    data.extend(pes(0xE0, Some(0), &big, false));
    data.extend(pack(&[]));
    data.extend(pes(0xE0, Some(3600), H264_IDR, false));
    data.extend(pack(&[]));
    let mut d = Demuxer::new(Config {
        max_frame_size: 1000,
    });
    let mut ev = Vec::new();
    d.push(&data, &mut ev);
    d.finish(&mut ev);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::Dropped {
            reason: DropReason::TooLarge,
            bytes: 3000,
            ..
        }
    )));
    assert_eq!(frames(&ev).len(), 1);
    assert_eq!(d.stats().streams[0].dropped_bytes, 3000);
}

#[test]
fn multi_pes_au_and_frame_alignment() {
    let mut unit = pack(&[]);
    unit.extend(pes(0xE0, Some(0), &H264_IDR[..10], false));
    unit.extend(pes(0xE0, None, &H264_IDR[10..], false));
    let mut d = Demuxer::new(Config::default());
    let mut ev = Vec::new();
    d.push(&unit, &mut ev);
    assert!(frames(&ev).is_empty());
    d.end_of_unit(&mut ev);
    let f = frames(&ev);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].ranges.len(), 2);
    assert_eq!(frame_bytes(&unit, f[0]), H264_IDR);
    assert_eq!(d.oldest_needed_offset(), unit.len() as u64);
}

#[test]
fn unaligned_pes_split_into_access_units() {
    // ffmpeg style: one PES holds the tail of AU 0 and the start of AU 1.
    let mut es = H264_IDR.to_vec();
    es.extend_from_slice(H264_P);
    let split = 20;
    let mut data = pack(&[]);
    data.extend(pes(0xE0, Some(0), &es[..split], false));
    data.extend(pes(0xE0, Some(3600), &es[split..], false));
    data.extend(pack(&[]));
    let ev = run(&data);
    let f = frames(&ev);
    assert_eq!(f.len(), 2, "{ev:?}");
    assert_eq!(frame_bytes(&data, f[0]), H264_IDR);
    assert_eq!(frame_bytes(&data, f[1]), H264_P);
    assert_eq!(f[1].pts.unwrap() - f[0].pts.unwrap(), 3600);
}

#[test]
fn late_audio_stream_appears() {
    let mut data = Vec::new();
    for i in 0..4u64 {
        data.extend(pack(&[]));
        data.extend(pes(
            0xE0,
            Some(i * 3600),
            if i == 0 { H264_IDR } else { H264_P },
            false,
        ));
        if i == 3 {
            data.extend(pes(0xC0, Some(i * 3600), ALAW, false));
        }
    }
    data.extend(pack(&[]));
    let ev = run(&data);
    assert!(added(&ev).contains(&(0xC0, Codec::G711Alaw)));
    assert_eq!(
        frames(&ev).iter().filter(|f| f.stream_id == 0xC0).count(),
        1
    );
}

#[test]
fn hikvision_capture() {
    let data =
        include_bytes!("../../../../../shared/testdata/ps/hikvision-g711a-first-ps-bytes.bin");
    let ev = run(data);
    let a = added(&ev);
    assert_eq!(a, vec![(0xE0, Codec::H264), (0xC0, Codec::G711Alaw)]);
    let f = frames(&ev);
    assert_eq!(f.len(), 1);
    let b = frame_bytes(data, f[0]);
    assert!(b.windows(5).any(|w| w == [0, 0, 0, 1, 0x67]));
    assert!(b.windows(5).any(|w| w == [0, 0, 0, 1, 0x68]));
    assert!(f[0].key);
}

#[test]
fn scan_finds_timestamps() {
    let data = camera_stream(4);
    let first = scan::first_pts(&data).unwrap();
    let last = scan::last_pts(&data).unwrap();
    assert_eq!(first.pts, 90_000);
    assert_eq!(last.pts, 90_000 + 3 * 3600);
    let second_pack = data
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == [0, 0, 1, 0xBA])
        .nth(1)
        .map(|(i, _)| i)
        .unwrap();
    assert_eq!(
        scan::first_pack(&data[5..]).map(|p| p + 5),
        Some(second_pack)
    );
    assert_eq!(scan::pts_diff((1 << 33) - 10, 5), 15);
}

#[test]
fn discont_drops_video_until_key_frame() {
    let mut d = Demuxer::new(Config::default());
    let mut ev = Vec::new();
    let mut a = pack(&[]);
    a.extend(pes(0xE0, Some(0), H264_IDR, false));
    a.extend(pes(0xE0, Some(3600), &H264_P[..6], false));
    d.push(&a, &mut ev);
    d.discont(&mut ev); // the rest of the P frame was lost
    let mut b = pack(&[]);
    b.extend(pes(0xE0, Some(7200), H264_P, false));
    b.extend(pack(&[]));
    b.extend(pes(0xE0, Some(10800), H264_IDR, false));
    b.extend(pack(&[]));
    d.push(&b, &mut ev);
    d.finish(&mut ev);
    let f = frames(&ev);
    assert_eq!(f.len(), 2, "{ev:?}");
    assert!(f[1].key && f[1].discont);
    assert_eq!(f[1].pts.unwrap() - f[0].pts.unwrap(), 10800);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::Dropped {
            reason: DropReason::WaitingForKeyFrame,
            ..
        }
    )));
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::Dropped {
            reason: DropReason::Partial,
            ..
        }
    )));
}

#[test]
fn repeated_pts_on_continuation_pes_is_one_au() {
    // mpegpsmux writes the frame's PTS on every PES of a large frame.
    let mut data = Vec::new();
    for i in 0..20u64 {
        let es = if i == 0 { H264_IDR } else { H264_P };
        data.extend(pack(&[]));
        data.extend(pes(0xE0, Some(i * 3600), &es[..6], false));
        data.extend(pes(0xE0, Some(i * 3600), &es[6..], false));
    }
    data.extend(pack(&[]));
    let ev = run(&data);
    let f = frames(&ev);
    assert_eq!(f.len(), 20);
    assert_eq!(frame_bytes(&data, f[0]), H264_IDR);
    assert!(f[1..].iter().all(|f| f.size == H264_P.len()));
}

#[test]
fn unbounded_pes_flushed_at_frame_end() {
    let mut d = Demuxer::new(Config::default());
    let mut all = Vec::new();
    for i in 0..3u64 {
        let mut unit = pack(&[]);
        unit.extend(pes(
            0xE0,
            Some(i * 3600),
            if i == 0 { H264_IDR } else { H264_P },
            true,
        ));
        let base = all.len();
        all.extend_from_slice(&unit);
        let mut ev = Vec::new();
        d.push(&unit, &mut ev);
        d.end_of_unit(&mut ev);
        let f = frames(&ev);
        assert_eq!(f.len(), 1, "unit {i}: {ev:?}");
        assert!(f[0].ranges[0].offset as usize >= base);
        assert_eq!(
            frame_bytes(&all, f[0]),
            if i == 0 { H264_IDR } else { H264_P }
        );
    }
}

fn changed(ev: &[Event]) -> Vec<(u8, Codec)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::StreamChanged {
                stream_id, codec, ..
            } => Some((*stream_id, *codec)),
            _ => None,
        })
        .collect()
}

/// A camera whose G.711 µ-law audio comes before its first map (written with the key frame):
/// the audio waits for the map and is announced once, as µ-law (announcing the default A-law
/// first made every viewer built in between fail when the map corrected it).
#[test]
fn audio_before_the_first_map_waits_for_it() {
    let mut data = Vec::new();
    for i in 0..5u64 {
        data.extend(pack(&[]));
        data.extend(pes(0xC0, Some(i * 3600), ALAW, false));
    }
    data.extend(pack(&[]));
    data.extend(psm(&[(0x1B, 0xE0, &[]), (0x91, 0xC0, &[])]));
    data.extend(pes(0xE0, Some(5 * 3600), H264_IDR, false));
    data.extend(pes(0xC0, Some(5 * 3600), ALAW, false));
    data.extend(pack(&[]));
    let ev = run(&data);
    assert_eq!(
        added(&ev),
        vec![(0xE0, Codec::H264), (0xC0, Codec::G711Mulaw)]
    );
    assert_eq!(changed(&ev), vec![]);
    let audio: Vec<_> = frames(&ev)
        .into_iter()
        .filter(|f| f.stream_id == 0xC0)
        .collect();
    assert_eq!(audio.len(), 1, "only the audio after the map");
    assert!(audio.iter().all(|f| f.codec == Codec::G711Mulaw));
    let waited = ev
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Dropped {
                    stream_id: 0xC0,
                    reason: DropReason::WaitingForPsm,
                    ..
                }
            )
        })
        .count();
    assert_eq!(waited, 5);
}

/// A muxer that never writes a map: audio waits a bounded number of PES, then is G.711
/// A-law (the GB28181 default).
#[test]
fn audio_without_any_map_waits_a_bounded_time() {
    let n = u64::from(AUDIO_PSM_WAIT_PES) + 3;
    let mut data = Vec::new();
    for i in 0..n {
        data.extend(pack(&[]));
        data.extend(pes(0xC0, Some(i * 1800), ALAW, false));
    }
    data.extend(pack(&[]));
    let ev = run(&data);
    assert_eq!(added(&ev), vec![(0xC0, Codec::G711Alaw)]);
    let audio = frames(&ev).len() as u64;
    assert_eq!(audio, n - u64::from(AUDIO_PSM_WAIT_PES));
}

/// No map, but video: the first key frame without a map ends the audio's wait.
#[test]
fn a_key_frame_without_a_map_ends_the_audio_wait() {
    let mut data = Vec::new();
    for i in 0..3u64 {
        data.extend(pack(&[]));
        data.extend(pes(0xC0, Some(i * 3600), ALAW, false));
    }
    for i in 3..6u64 {
        data.extend(pack(&[]));
        data.extend(pes(
            0xE0,
            Some(i * 3600),
            if i == 3 { H264_IDR } else { H264_P },
            false,
        ));
        data.extend(pes(0xC0, Some(i * 3600), ALAW, false));
    }
    data.extend(pack(&[]));
    let ev = run(&data);
    assert_eq!(
        added(&ev),
        vec![(0xE0, Codec::H264), (0xC0, Codec::G711Alaw)]
    );
    let audio = frames(&ev).iter().filter(|f| f.stream_id == 0xC0).count();
    assert!((2..=3).contains(&audio), "{audio} audio frames");
}
