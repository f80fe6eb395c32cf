//! psmux element tests with gst_check::Harness: one buffer per access unit, headers,
//! flags, timestamps, ordering across pads, zero copy and statistics.

use gst::prelude::*;

fn init() {
    gst_ipcam_testutil::init_with(|| {
        gstmpegps::plugin_register_static().expect("register mpegps");
    });
}

const SECOND_90K: u64 = 90_000;

/// One PES packet as found in the output.
#[derive(Debug)]
struct Pes {
    stream_id: u8,
    pts: Option<u64>,
    dts: Option<u64>,
    payload: Vec<u8>,
}

/// Start codes and PES packets of one output buffer (a minimal PS reader written for the
/// test, independent of the muxer's writer).
fn parse_ps(data: &[u8]) -> (Vec<u8>, Vec<Pes>) {
    fn ts(b: &[u8]) -> u64 {
        (((b[0] >> 1) & 7) as u64) << 30
            | (b[1] as u64) << 22
            | ((b[2] >> 1) as u64) << 15
            | (b[3] as u64) << 7
            | (b[4] >> 1) as u64
    }
    let mut codes = Vec::new();
    let mut pes = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        assert_eq!(&data[pos..pos + 3], &[0, 0, 1], "start code at {pos}");
        let code = data[pos + 3];
        codes.push(code);
        if code == 0xBA {
            pos += 14 + (data[pos + 13] & 7) as usize;
            continue;
        }
        let len = u16::from_be_bytes([data[pos + 4], data[pos + 5]]) as usize;
        let end = pos + 6 + len;
        assert!(end <= data.len(), "packet 0x{code:02X} overruns the buffer");
        if (0xC0..=0xEF).contains(&code) {
            let flags = data[pos + 7] >> 6;
            let hdr_len = data[pos + 8] as usize;
            let pts = (flags & 2 != 0).then(|| ts(&data[pos + 9..]));
            let dts = (flags == 3).then(|| ts(&data[pos + 14..]));
            pes.push(Pes {
                stream_id: code,
                pts,
                dts,
                payload: data[pos + 9 + hdr_len..end].to_vec(),
            });
        }
        pos = end;
    }
    (codes, pes)
}

fn bytes_of(buffer: &gst::Buffer) -> Vec<u8> {
    buffer.map_readable().unwrap().to_vec()
}

fn h264_caps() -> gst::Caps {
    gst::Caps::builder("video/x-h264")
        .field("stream-format", "byte-stream")
        .field("alignment", "au")
        .build()
}

fn alaw_caps() -> gst::Caps {
    gst::Caps::builder("audio/x-alaw")
        .field("rate", 8000i32)
        .field("channels", 1i32)
        .build()
}

fn fake_au(n: usize, size: usize, key: bool) -> Vec<u8> {
    let mut v = vec![0, 0, 0, 1, if key { 0x65 } else { 0x41 }];
    v.extend((0..size.saturating_sub(5)).map(|i| (i * 31 + n) as u8));
    v
}

fn video_buffer(
    n: usize,
    size: usize,
    key: bool,
    pts_ms: u64,
    dts_ms: u64,
) -> (gst::Buffer, Vec<u8>) {
    let data = fake_au(n, size, key);
    let mut buffer = gst::Buffer::from_slice(data.clone());
    {
        let b = buffer.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(pts_ms));
        b.set_dts(gst::ClockTime::from_mseconds(dts_ms));
        b.set_duration(gst::ClockTime::from_mseconds(40));
        if !key {
            b.set_flags(gst::BufferFlags::DELTA_UNIT);
        }
    }
    (buffer, data)
}

#[test]
fn one_buffer_per_access_unit() {
    init();
    let mut h = gst_check::Harness::with_padnames("psmux", Some("sink_%u"), Some("src"));
    h.set_src_caps(h264_caps());
    h.play();

    let mut sent = Vec::new();
    for i in 0..10usize {
        let key = i % 5 == 0;
        let (buffer, data) = video_buffer(i, 3000 + i * 100, key, i as u64 * 40, i as u64 * 40);
        h.push(buffer).unwrap();
        sent.push((data, key));
    }
    h.push_event(gst::event::Eos::new());

    for (i, (data, key)) in sent.iter().enumerate() {
        let out = h.pull().expect("one output buffer per AU");
        let bytes = bytes_of(&out);
        assert_eq!(
            &bytes[..4],
            &[0, 0, 1, 0xBA],
            "AU {i} starts with a pack header"
        );
        let (codes, pes) = parse_ps(&bytes);
        assert_eq!(
            codes.contains(&0xBC),
            *key,
            "PSM before key frames only (AU {i})"
        );
        assert_eq!(
            codes.contains(&0xBB),
            *key,
            "system header with the PSM (AU {i})"
        );
        assert_eq!(
            out.flags().contains(gst::BufferFlags::DELTA_UNIT),
            !*key,
            "DELTA_UNIT on non-key AU {i}"
        );
        assert_eq!(pes.len(), 1);
        assert_eq!(pes[0].stream_id, 0xE0);
        assert_eq!(&pes[0].payload, data);
        // 90 kHz PTS = running time + 1 s default offset; DTS == PTS is not written.
        assert_eq!(pes[0].pts, Some(SECOND_90K + i as u64 * 3600));
        assert_eq!(pes[0].dts, None);
        assert_eq!(
            out.pts(),
            Some(gst::ClockTime::from_mseconds(i as u64 * 40))
        );
        assert_eq!(out.duration(), Some(gst::ClockTime::from_mseconds(40)));
    }
    assert!(h.try_pull().is_none(), "no extra output");
    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    let s = caps.structure(0).unwrap();
    assert_eq!(s.name(), "video/mpeg");
    assert!(s.get::<bool>("systemstream").unwrap());
    assert_eq!(s.get::<i32>("mpegversion").unwrap(), 2);
}

#[test]
fn b_frames_write_dts_and_stay_positive() {
    init();
    let mut h = gst_check::Harness::with_padnames("psmux", Some("sink_%u"), Some("src"));
    h.set_src_caps(h264_caps());
    h.play();
    // I P B B: decode order with DTS starting before the segment (negative running time).
    let order = [
        (0usize, 80u64, true),
        (1, 200, false),
        (2, 120, false),
        (3, 160, false),
    ];
    for (i, (n, pts, key)) in order.iter().enumerate() {
        let mut buffer = video_buffer(*n, 500, *key, *pts, 0).0;
        // DTS = -80 ms, -40, 0, 40 expressed in a segment starting at 80 ms.
        buffer
            .get_mut()
            .unwrap()
            .set_dts(gst::ClockTime::from_mseconds(i as u64 * 40));
        buffer
            .get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(pts + 80));
        if i == 0 {
            let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
            segment.set_start(gst::ClockTime::from_mseconds(80));
            assert!(h.push_event(gst::event::Segment::new(&segment)));
        }
        h.push(buffer).unwrap();
    }
    for (i, (_, pts, _)) in order.iter().enumerate() {
        let out = h.pull().unwrap();
        let (_, pes) = parse_ps(&bytes_of(&out));
        let dts_rt_ms = i as i64 * 40 - 80;
        let expect_dts = (1000 + dts_rt_ms) as u64 * 90;
        assert_eq!(pes[0].pts, Some((1000 + pts) * 90), "AU {i}");
        assert_eq!(pes[0].dts, Some(expect_dts), "AU {i}");
        assert_eq!(out.pts(), Some(gst::ClockTime::from_mseconds(*pts)));
        // Negative running-time DTS can't be a buffer DTS.
        if dts_rt_ms < 0 {
            assert_eq!(out.dts(), None);
        } else {
            assert_eq!(
                out.dts(),
                Some(gst::ClockTime::from_mseconds(dts_rt_ms as u64))
            );
        }
    }
}

#[test]
fn large_access_unit_is_split_zero_copy() {
    init();
    let mut h = gst_check::Harness::with_padnames("psmux", Some("sink_%u"), Some("src"));
    h.set_src_caps(h264_caps());
    h.play();
    let (buffer, data) = video_buffer(0, 200_000, true, 0, 0);
    let in_ptr = buffer.map_readable().unwrap().as_ptr() as usize;
    h.push(buffer).unwrap();
    let out = h.pull().unwrap();
    // Header, payload, header, payload...: payload memories point into the input buffer.
    // (Checked before mapping the whole buffer, which merges its memories.)
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("copied-frames").unwrap(), 0);
    assert_eq!(out.n_memory(), 8, "{out:?}");
    let mut offset = 0;
    for i in (1..8).step_by(2) {
        let mem = out.peek_memory(i);
        let map = mem.map_readable().unwrap();
        assert_eq!(
            map.as_ptr() as usize,
            in_ptr + offset,
            "memory {i} shares the input"
        );
        offset += map.len();
    }
    let (_, pes) = parse_ps(&bytes_of(&out));
    assert_eq!(pes.len(), 4, "200000 bytes in PES of at most 65522");
    assert!(pes.iter().all(|p| p.payload.len() <= 65522));
    assert!(pes[0].pts.is_some() && pes[1..].iter().all(|p| p.pts.is_none()));
    let joined: Vec<u8> = pes.iter().flat_map(|p| p.payload.clone()).collect();
    assert_eq!(joined, data);
    assert_eq!(offset, data.len());
}

#[test]
fn many_small_pes_fall_back_to_one_copy() {
    init();
    let mut h = gst_check::Harness::with_padnames("psmux", Some("sink_%u"), Some("src"));
    h.element()
        .unwrap()
        .set_property("pes-payload-size", 1000u32);
    h.set_src_caps(h264_caps());
    h.play();
    let (buffer, data) = video_buffer(0, 20_500, true, 0, 0);
    h.push(buffer).unwrap();
    let out = h.pull().unwrap();
    let (_, pes) = parse_ps(&bytes_of(&out));
    assert_eq!(pes.len(), 21);
    let joined: Vec<u8> = pes.iter().flat_map(|p| p.payload.clone()).collect();
    assert_eq!(joined, data);
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("copied-frames").unwrap(), 1);
}

#[test]
fn video_and_audio_in_timestamp_order() {
    init();
    let mux = gst::ElementFactory::make("psmux").build().unwrap();
    let mut hv = gst_check::Harness::with_element(&mux, Some("sink_0"), Some("src"));
    let mut ha = gst_check::Harness::with_element(&mux, Some("sink_1"), None);
    hv.set_src_caps(h264_caps());
    ha.set_src_caps(alaw_caps());
    hv.play();
    ha.play();

    // Video at 0, 40, 80 ms, audio 20 ms frames at 1, 21, .. 81 ms. A non-live aggregator
    // pad holds one buffer and a push blocks until it is consumed, so push in an order
    // where the other pad always has data.
    let audio = |i: u64| {
        let mut b = gst::Buffer::from_slice(vec![0xD5u8; 160]);
        let bm = b.get_mut().unwrap();
        bm.set_pts(gst::ClockTime::from_mseconds(i * 20 + 1));
        bm.set_duration(gst::ClockTime::from_mseconds(20));
        b
    };
    let video = |i: u64| video_buffer(i as usize, 1000, i == 0, i * 40, i * 40).0;
    hv.push(video(0)).unwrap();
    ha.push(audio(0)).unwrap();
    hv.push(video(1)).unwrap();
    ha.push(audio(1)).unwrap();
    ha.push(audio(2)).unwrap();
    hv.push(video(2)).unwrap();
    ha.push(audio(3)).unwrap();
    ha.push(audio(4)).unwrap();
    ha.push_event(gst::event::Eos::new());
    hv.push_event(gst::event::Eos::new());

    let mut order = Vec::new();
    for _ in 0..8 {
        let out = hv.pull().unwrap();
        let bytes = bytes_of(&out);
        assert_eq!(&bytes[..4], &[0, 0, 1, 0xBA]);
        let (codes, pes) = parse_ps(&bytes);
        assert_eq!(pes.len(), 1);
        let p = &pes[0];
        if p.stream_id == 0xC0 {
            assert_eq!(p.payload.len(), 160);
            assert!(!out.flags().contains(gst::BufferFlags::DELTA_UNIT));
        } else {
            assert_eq!(p.stream_id, 0xE0);
        }
        if codes.contains(&0xBC) {
            // The PSM lists both streams: H.264 0x1B on E0 and G.711 A-law 0x90 on C0.
            let psm = bytes.windows(4).position(|w| w == [0, 0, 1, 0xBC]).unwrap();
            let map = &bytes[psm + 12..psm + 20];
            assert!(map.chunks(4).any(|e| e[0] == 0x1B && e[1] == 0xE0));
            assert!(map.chunks(4).any(|e| e[0] == 0x90 && e[1] == 0xC0));
        }
        order.push((p.pts.unwrap(), p.stream_id));
    }
    let pts: Vec<u64> = order.iter().map(|(p, _)| *p).collect();
    let mut sorted = pts.clone();
    sorted.sort();
    assert_eq!(pts, sorted, "output in timestamp order: {order:x?}");
    assert_eq!(order.iter().filter(|(_, s)| *s == 0xC0).count(), 5);

    let stats = mux.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("buffers").unwrap(), 8);
    let streams = stats.get::<gst::Array>("streams").unwrap();
    assert_eq!(streams.len(), 2);
    let audio = streams
        .iter()
        .map(|v| v.get::<gst::Structure>().unwrap())
        .find(|s| s.get::<u32>("stream-id").unwrap() == 0xC0)
        .unwrap();
    assert_eq!(audio.get::<&str>("codec").unwrap(), "alaw");
    assert_eq!(audio.get::<u64>("bytes").unwrap(), 800);
}

#[test]
fn unsupported_caps_are_refused() {
    init();
    let mut h = gst_check::Harness::with_padnames("psmux", Some("sink_%u"), Some("src"));
    h.play();
    let caps = gst::Caps::builder("video/x-h264")
        .field("stream-format", "avc")
        .field("alignment", "au")
        .build();
    let pad = h.element().unwrap().static_pad("sink_0").unwrap();
    assert!(!pad.query_accept_caps(&caps));
}

#[test]
fn audio_only_repeats_psm_every_interval() {
    init();
    let mut h = gst_check::Harness::with_padnames("psmux", Some("sink_%u"), Some("src"));
    h.set_src_caps(
        gst::Caps::builder("audio/x-mulaw")
            .field("rate", 8000i32)
            .field("channels", 1i32)
            .build(),
    );
    h.play();
    let mut psm_at = Vec::new();
    for i in 0..100u64 {
        let mut b = gst::Buffer::from_slice(vec![0xFFu8; 160]);
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(i * 20));
        h.push(b).unwrap();
        let out = h.pull().unwrap();
        assert!(!out.flags().contains(gst::BufferFlags::DELTA_UNIT));
        let bytes = bytes_of(&out);
        let (codes, pes) = parse_ps(&bytes);
        assert_eq!(pes[0].stream_id, 0xC0);
        assert_eq!(pes[0].payload.len(), 160);
        if codes.contains(&0xBC) {
            let psm = bytes.windows(4).position(|w| w == [0, 0, 1, 0xBC]).unwrap();
            assert_eq!(&bytes[psm + 12..psm + 14], &[0x91, 0xC0], "G.711 µ-law");
            psm_at.push(i);
        }
    }
    // Default psm-interval 1000 ms.
    assert_eq!(psm_at, [0, 50]);
}

#[test]
fn gap_events_produce_no_output() {
    init();
    let mut h = gst_check::Harness::with_padnames("psmux", Some("sink_%u"), Some("src"));
    h.set_src_caps(h264_caps());
    h.play();
    assert!(
        h.push_event(
            gst::event::Gap::builder(gst::ClockTime::ZERO)
                .duration(gst::ClockTime::from_mseconds(40))
                .build()
        )
    );
    let (buffer, data) = video_buffer(1, 700, true, 40, 40);
    h.push(buffer).unwrap();
    let out = h.pull().unwrap();
    let (_, pes) = parse_ps(&bytes_of(&out));
    assert_eq!(pes.len(), 1);
    assert_eq!(pes[0].payload, data);
    assert!(h.try_pull().is_none());
}

#[test]
fn fixed_mux_rate_and_timestamp_offset() {
    init();
    let mut h = gst_check::Harness::with_padnames("psmux", Some("sink_%u"), Some("src"));
    let mux = h.element().unwrap();
    mux.set_property("mux-rate", 500_000u32);
    mux.set_property("timestamp-offset", 0u64);
    h.set_src_caps(h264_caps());
    h.play();
    h.push(video_buffer(0, 100, true, 2000, 2000).0).unwrap();
    let bytes = bytes_of(&h.pull().unwrap());
    // program_mux_rate in units of 50 bytes/s: 10000.
    let rate = (bytes[10] as u32) << 14 | (bytes[11] as u32) << 6 | (bytes[12] as u32) >> 2;
    assert_eq!(rate, 10_000);
    // SCR base = 2 s at 90 kHz with no offset: bits 32..0 spread over bytes 4..8.
    let b = &bytes[4..9];
    let scr = ((b[0] as u64 >> 3) & 7) << 30
        | (b[0] as u64 & 3) << 28
        | (b[1] as u64) << 20
        | ((b[2] as u64) >> 3) << 15
        | (b[2] as u64 & 3) << 13
        | (b[3] as u64) << 5
        | (b[4] as u64) >> 3;
    assert_eq!(scr, 180_000);
    let (_, pes) = parse_ps(&bytes);
    assert_eq!(pes[0].pts, Some(180_000));
    // The system header's rate_bound matches the fixed rate.
    let sh = bytes.windows(4).position(|w| w == [0, 0, 1, 0xBB]).unwrap();
    let rb = ((bytes[sh + 6] as u32 & 0x7F) << 15)
        | (bytes[sh + 7] as u32) << 7
        | (bytes[sh + 8] as u32) >> 1;
    assert_eq!(rb, 10_000);
}

/// `appsrc ! psmux name=mux ! appsink`, not live: one sink pad, the direct path's case;
/// playing, with H.264 caps on the source.
fn single_pad_pipeline() -> (gst::Pipeline, gst_app::AppSrc, gst_app::AppSink) {
    init();
    let pipeline = gst::parse::launch(
        "appsrc name=src format=time ! psmux name=mux ! appsink name=sink sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    src.set_caps(Some(&h264_caps()));
    pipeline.set_state(gst::State::Playing).unwrap();
    (pipeline, src, sink)
}

/// Stops `pipeline` and returns the stats of its muxer (named `mux`), read before the stop.
fn stop_with_stats(pipeline: &gst::Pipeline) -> gst::Structure {
    let stats = pipeline
        .by_name("mux")
        .unwrap()
        .property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    stats
}

/// One sink pad, not live (appsrc; the harness answers latency queries as live): once the
/// aggregator has pushed caps and segment (the first frame), frames are muxed and pushed
/// from the upstream thread (the direct path) with the same output as the aggregator's
/// path: order, bytes, headers, times, flags.
#[test]
fn single_pad_direct_path_keeps_output() {
    let (pipeline, src, sink) = single_pad_pipeline();

    let frames = 60usize;
    let mut sent = Vec::new();
    let mut outs = Vec::new();
    for i in 0..frames {
        let key = i % 10 == 0;
        let (buffer, data) = video_buffer(i, 2000 + i * 37, key, i as u64 * 40, i as u64 * 40);
        src.push_buffer(buffer).unwrap();
        sent.push((data, key));
        if i == 0 {
            // The first frame goes through the aggregator, which negotiates the output.
            let sample = sink
                .try_pull_sample(gst::ClockTime::from_seconds(10))
                .expect("first frame");
            outs.push(sample.buffer_owned().unwrap());
        }
    }
    src.end_of_stream().unwrap();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        outs.push(sample.buffer_owned().unwrap());
    }
    assert!(sink.is_eos());
    let stats = stop_with_stats(&pipeline);

    assert_eq!(outs.len(), frames, "one output buffer per AU");
    for (i, ((data, key), out)) in sent.iter().zip(&outs).enumerate() {
        let (codes, pes) = parse_ps(&bytes_of(out));
        assert_eq!(codes[0], 0xBA, "pack header first (AU {i})");
        assert_eq!(
            codes.contains(&0xBC),
            *key,
            "PSM before key frames (AU {i})"
        );
        assert_eq!(pes.len(), 1);
        assert_eq!(&pes[0].payload, data, "AU {i} in order");
        assert_eq!(pes[0].pts, Some(SECOND_90K + i as u64 * 3600));
        assert_eq!(
            out.pts(),
            Some(gst::ClockTime::from_mseconds(i as u64 * 40))
        );
        assert_eq!(out.flags().contains(gst::BufferFlags::DELTA_UNIT), !*key);
    }
    assert_eq!(stats.get::<u64>("buffers").unwrap(), frames as u64);
    assert_eq!(
        stats.get::<u64>("direct-buffers").unwrap(),
        frames as u64 - 1,
        "every frame after the first on the direct path"
    );
}

/// Two sink pads, not live: no direct path (the aggregator orders the pads by time), also
/// while the second pad has not started streaming yet.
#[test]
fn two_pads_stay_on_the_aggregator_path() {
    init();
    let pipeline = gst::parse::launch(
        "appsrc name=v format=time ! psmux name=mux ! appsink name=sink sync=false \
         appsrc name=a format=time ! mux.",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = |name: &str| {
        pipeline
            .by_name(name)
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap()
    };
    let (v, a) = (src("v"), src("a"));
    v.set_caps(Some(&h264_caps()));
    a.set_caps(Some(&alaw_caps()));
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    for i in 0..10u64 {
        v.push_buffer(video_buffer(i as usize, 1000, i == 0, i * 40, i * 40).0)
            .unwrap();
    }
    v.end_of_stream().unwrap();
    for i in 0..20u64 {
        let mut b = gst::Buffer::from_slice(vec![0xD5u8; 160]);
        let bm = b.get_mut().unwrap();
        bm.set_pts(gst::ClockTime::from_mseconds(i * 20 + 1));
        bm.set_duration(gst::ClockTime::from_mseconds(20));
        a.push_buffer(b).unwrap();
    }
    a.end_of_stream().unwrap();
    let mut times = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        let b = sample.buffer().unwrap();
        times.push(b.dts_or_pts().unwrap());
    }
    assert!(sink.is_eos());
    let stats = stop_with_stats(&pipeline);
    assert_eq!(times.len(), 30);
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "in time order: {times:?}"
    );
    assert_eq!(stats.get::<u64>("direct-buffers").unwrap(), 0);
}

/// The direct path after a codec change mid-stream (H.264 to H.265, a new caps event):
/// the change is applied before the next frame (the PSM of the following key frames names
/// H.265) and the direct path resumes. The output buffers, made from the input buffers,
/// keep nothing that described the elementary stream: no input flag but DELTA_UNIT and
/// DISCONT, no offsets, no meta.
#[test]
fn direct_path_follows_a_codec_change_and_drops_input_metadata() {
    let (pipeline, src, sink) = single_pad_pipeline();
    let h265 = gst::Caps::builder("video/x-h265")
        .field("stream-format", "byte-stream")
        .field("alignment", "au")
        .build();
    let frames = 40usize;
    let mut outs = Vec::new();
    for i in 0..frames {
        if i == 20 {
            src.set_caps(Some(&h265));
        }
        let key = i % 10 == 0;
        let (mut buffer, _) = video_buffer(i, 3000, key, i as u64 * 40, i as u64 * 40);
        {
            let b = buffer.get_mut().unwrap();
            b.set_flags(gst::BufferFlags::HEADER | gst::BufferFlags::MARKER);
            b.set_offset(i as u64);
            b.set_offset_end(i as u64 + 1);
            gst::meta::ReferenceTimestampMeta::add(
                b,
                &gst::Caps::new_empty_simple("timestamp/x-test"),
                gst::ClockTime::from_seconds(i as u64),
                None,
            );
        }
        src.push_buffer(buffer).unwrap();
        // The first frame goes through the aggregator (which negotiates), and so may the
        // first after the change (queued behind the new caps); the next are pushed once
        // they are out, so that every other frame takes the direct path.
        if i == 0 || i == 20 {
            while outs.len() <= i {
                outs.push(
                    sink.try_pull_sample(gst::ClockTime::from_seconds(10))
                        .expect("frame out")
                        .buffer_owned()
                        .unwrap(),
                );
            }
        }
    }
    src.end_of_stream().unwrap();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        outs.push(sample.buffer_owned().unwrap());
    }
    let stats = stop_with_stats(&pipeline);

    assert_eq!(outs.len(), frames);
    // PSM elementary stream map entry: stream type, then stream id 0xE0.
    let names = |out: &gst::Buffer, stream_type: u8| {
        bytes_of(out).windows(2).any(|w| w == [stream_type, 0xE0])
    };
    for (i, out) in outs.iter().enumerate() {
        if i % 10 == 0 {
            let (h264, h265) = (names(out, 0x1B), names(out, 0x24));
            assert_eq!((h264, h265), (i < 20, i >= 20), "PSM of key frame {i}");
        }
        // DISCONT is appsrc's first buffer's, TAG_MEMORY GStreamer's own (memory added).
        assert!(
            !out.flags()
                .intersects(gst::BufferFlags::HEADER | gst::BufferFlags::MARKER),
            "frame {i}: no input flag but DELTA_UNIT and DISCONT ({:?})",
            out.flags()
        );
        assert_eq!(
            out.flags().contains(gst::BufferFlags::DELTA_UNIT),
            i % 10 != 0
        );
        assert_eq!((out.offset(), out.offset_end()), (u64::MAX, u64::MAX));
        assert_eq!(
            out.iter_meta::<gst::Meta>().count(),
            0,
            "frame {i}: no meta"
        );
    }
    let direct = stats.get::<u64>("direct-buffers").unwrap();
    // The first frame after the change takes the direct path too when the aggregator
    // has handled the caps before it came.
    assert!(
        direct == frames as u64 - 2 || direct == frames as u64 - 1,
        "the direct path resumes after the change: {direct} of {frames}"
    );
}

/// A serialized event between every two frames (as parsers send tag updates): while the
/// aggregator's thread handles an event, the frame queued behind it must leave before the
/// next frame, which may take the direct path. (The direct path once counted the event as
/// handled while it was still at the head of the aggregator's queue, so a frame went out
/// before the one queued behind the event: output out of order, 1 file in a few hundred.)
#[test]
fn frames_stay_in_order_with_events_between_them() {
    let (pipeline, src, sink) = single_pad_pipeline();
    let frames = 20000usize;
    let pusher = {
        let src = src.clone();
        std::thread::spawn(move || {
            for i in 0..frames {
                if i % 2 == 0 && i > 0 {
                    let mut tags = gst::TagList::new();
                    tags.get_mut()
                        .unwrap()
                        .add::<gst::tags::Bitrate>(&(i as u32), gst::TagMergeMode::Replace);
                    assert!(src.send_event(gst::event::Tag::new(tags)));
                }
                let (buffer, _) = video_buffer(i, 200, i % 25 == 0, i as u64 * 40, i as u64 * 40);
                src.push_buffer(buffer).unwrap();
            }
            src.end_of_stream().unwrap();
        })
    };
    let mut times = Vec::with_capacity(frames);
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        times.push(sample.buffer().unwrap().pts().unwrap().mseconds());
    }
    pusher.join().unwrap();
    assert!(sink.is_eos());
    let stats = stop_with_stats(&pipeline);
    let swapped: Vec<usize> = (1..times.len())
        .filter(|&i| times[i] < times[i - 1])
        .collect();
    assert!(
        swapped.is_empty(),
        "{} of {} frames out before an earlier one (first at {:?}); {stats}",
        swapped.len(),
        times.len(),
        swapped.first().map(|&i| (times[i - 1], times[i]))
    );
    assert_eq!(times.len(), frames);
}
