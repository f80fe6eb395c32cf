//! psdemux element tests: stock mpegpsmux, ffmpeg and camera-captured PS as input; pull-mode
//! duration and seeking; live frame-aligned input; bad input.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;

fn init() {
    gst_ipcam_testutil::init_with(|| {
        gstmpegps::plugin_register_static().expect("register mpegps");
    });
}

fn scratch(name: &str) -> PathBuf {
    // Cargo's scratch dir for integration tests (under the target dir), one folder per run.
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("psdemux-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata")
        .join(rel)
}

/// Runs a launch line to EOS (bounded by a timeout); panics on error.
fn run_launch(line: &str) {
    let p = gst::parse::launch(line).unwrap();
    run_to_eos(&p, 60);
}

fn run_to_eos(p: &gst::Element, secs: u64) {
    p.set_state(gst::State::Playing).unwrap();
    let bus = p.bus().unwrap();
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(secs),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    p.set_state(gst::State::Null).unwrap();
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => {}
        Some(gst::MessageView::Error(e)) => {
            panic!("pipeline error: {} ({:?})", e.error(), e.debug())
        }
        _ => panic!("pipeline timed out"),
    }
}

#[derive(Debug, Clone)]
struct Out {
    pad: String,
    caps: Option<gst::Caps>,
    pts: Option<gst::ClockTime>,
    delta: bool,
}

/// `filesrc ! [queue !] psdemux`, every src pad into a fakesink; returns the buffers seen.
fn demux_file(path: &Path, push_mode: bool) -> Vec<Out> {
    init();
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("filesrc")
        .property("location", path.to_str().unwrap())
        .build()
        .unwrap();
    let demux = gst::ElementFactory::make("psdemux").build().unwrap();
    pipeline.add_many([&src, &demux]).unwrap();
    if push_mode {
        let q = gst::ElementFactory::make("queue").build().unwrap();
        pipeline.add(&q).unwrap();
        gst::Element::link_many([&src, &q, &demux]).unwrap();
    } else {
        src.link(&demux).unwrap();
    }
    let outs = Arc::new(Mutex::new(Vec::new()));
    let pipeline_weak = pipeline.downgrade();
    let outs2 = outs.clone();
    demux.connect_pad_added(move |_, pad| {
        let Some(pipeline) = pipeline_weak.upgrade() else {
            return;
        };
        let sink = gst::ElementFactory::make("fakesink")
            .property("signal-handoffs", true)
            .property("sync", false)
            .property("async", false)
            .build()
            .unwrap();
        let outs = outs2.clone();
        let name = pad.name().to_string();
        sink.connect("handoff", false, move |args| {
            let buf = args[1].get::<gst::Buffer>().unwrap();
            let spad = args[2].get::<gst::Pad>().unwrap();
            outs.lock().unwrap().push(Out {
                pad: name.clone(),
                caps: spad.current_caps(),
                pts: buf.pts(),
                delta: buf.flags().contains(gst::BufferFlags::DELTA_UNIT),
            });
            None
        });
        pipeline.add(&sink).unwrap();
        sink.sync_state_with_parent().unwrap();
        pad.link(&sink.static_pad("sink").unwrap()).unwrap();
    });
    run_to_eos(pipeline.upcast_ref(), 60);
    outs.lock().unwrap().clone()
}

fn ffprobe_video_frames(path: &Path) -> usize {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_end_matches(',')
        .parse()
        .unwrap()
}

fn ffmpeg(args: &[&str], out: &Path) {
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .arg(out)
        .status()
        .expect("ffmpeg");
    assert!(st.success());
}

fn video(outs: &[Out]) -> Vec<&Out> {
    outs.iter()
        .filter(|o| o.pad.starts_with("video_"))
        .collect()
}

fn caps_name(o: &Out) -> String {
    o.caps
        .as_ref()
        .and_then(|c| c.structure(0).map(|s| s.name().to_string()))
        .unwrap_or_default()
}

fn mpegpsmux_file(name: &str, extra: &str, buffers: u32) -> PathBuf {
    init();
    let path = scratch(name);
    run_launch(&format!(
        "videotestsrc num-buffers={buffers} ! video/x-raw,width=320,height=240,framerate=30/1 ! \
         x264enc speed-preset=ultrafast {extra} ! mpegpsmux ! filesink location={}",
        path.display()
    ));
    path
}

#[test]
fn reads_mpegpsmux_output_and_decodes() {
    let path = mpegpsmux_file("gst.ps", "", 60);
    for push in [false, true] {
        let outs = demux_file(&path, push);
        let v = video(&outs);
        assert_eq!(v.len(), 60, "push mode {push}");
        assert_eq!(caps_name(v[0]), "video/x-h264");
        assert!(!v[0].delta);
        assert!(v[1..].iter().all(|o| o.delta));
        // Timestamps increase by ~1/30 s in decode order on average.
        let last = v.iter().filter_map(|o| o.pts).max().unwrap();
        assert!(last > gst::ClockTime::from_mseconds(1800), "{last}");
    }
    // h264parse + avdec_h264 decode all 60 access units.
    let decoded = Arc::new(Mutex::new(0usize));
    let p = gst::parse::launch(&format!(
        "filesrc location={} ! psdemux ! h264parse ! avdec_h264 ! fakesink name=s signal-handoffs=true",
        path.display()
    ))
    .unwrap();
    let sink = p.downcast_ref::<gst::Bin>().unwrap().by_name("s").unwrap();
    let d = decoded.clone();
    sink.connect("handoff", false, move |_| {
        *d.lock().unwrap() += 1;
        None
    });
    run_to_eos(&p, 60);
    assert_eq!(*decoded.lock().unwrap(), 60);
}

#[test]
fn reads_ffmpeg_program_streams() {
    init();
    let h264 = scratch("ff264.mpg");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-c:a",
            "mp2",
            "-f",
            "mpeg",
        ],
        &h264,
    );
    let m2v = scratch("ffm2.vob");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "2",
            "-c:v",
            "mpeg2video",
            "-c:a",
            "mp2",
            "-f",
            "vob",
        ],
        &m2v,
    );
    let h264vob = scratch("ff264.vob");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-f",
            "vob",
        ],
        &h264vob,
    );
    // No PSM in these (MPEG-1 packs): the codec is guessed from the payload.
    let m4v = scratch("ffm4v.mpg");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-t",
            "2",
            "-c:v",
            "mpeg4",
            "-f",
            "mpeg",
        ],
        &m4v,
    );
    let h265 = scratch("ff265.mpg");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-t",
            "2",
            "-c:v",
            "libx265",
            "-x265-params",
            "log-level=error",
            "-f",
            "mpeg",
        ],
        &h265,
    );
    for (path, caps) in [
        (&h264, "video/x-h264"),
        (&m2v, "video/mpeg"),
        (&h264vob, "video/x-h264"),
        (&m4v, "video/mpeg"),
        (&h265, "video/x-h265"),
    ] {
        let expected = ffprobe_video_frames(path);
        let outs = demux_file(path, false);
        let v = video(&outs);
        assert_eq!(v.len(), expected, "{}", path.display());
        assert_eq!(caps_name(v[0]), caps);
        if path == &m4v {
            let c = v[0].caps.as_ref().unwrap();
            assert_eq!(
                c.structure(0).unwrap().get::<i32>("mpegversion").unwrap(),
                4
            );
        }
        assert!(!v[0].delta);
        if path == &h264 || path == &m2v {
            let audio: Vec<_> = outs
                .iter()
                .filter(|o| o.pad.starts_with("audio_"))
                .collect();
            assert!(!audio.is_empty());
            assert_eq!(caps_name(audio[0]), "audio/mpeg");
        }
    }
}

#[test]
fn reads_hikvision_capture() {
    let path = testdata("ps/hikvision-g711a-first-ps-bytes.bin");
    for push in [false, true] {
        init();
        let pipeline = gst::parse::launch(&format!(
            "filesrc location={} ! {} psdemux name=d",
            path.display(),
            if push { "queue !" } else { "" }
        ))
        .unwrap();
        let bin = pipeline.downcast_ref::<gst::Bin>().unwrap();
        let demux = bin.by_name("d").unwrap();
        let pads = Arc::new(Mutex::new(Vec::new()));
        let first = Arc::new(Mutex::new(None::<Vec<u8>>));
        let (pads2, first2) = (pads.clone(), first.clone());
        let bin_weak = bin.downgrade();
        demux.connect_pad_added(move |_, pad| {
            pads2
                .lock()
                .unwrap()
                .push((pad.name().to_string(), pad.current_caps().unwrap()));
            let bin = bin_weak.upgrade().unwrap();
            let sink = gst::ElementFactory::make("fakesink")
                .property("signal-handoffs", true)
                .property("async", false)
                .build()
                .unwrap();
            if pad.name() == "video_e0" {
                let first = first2.clone();
                sink.connect("handoff", false, move |args| {
                    let buf = args[1].get::<gst::Buffer>().unwrap();
                    let mut f = first.lock().unwrap();
                    if f.is_none() {
                        *f = Some(buf.map_readable().unwrap().to_vec());
                    }
                    None
                });
            }
            bin.add(&sink).unwrap();
            sink.sync_state_with_parent().unwrap();
            pad.link(&sink.static_pad("sink").unwrap()).unwrap();
        });
        run_to_eos(&pipeline, 20);
        let pads = pads.lock().unwrap();
        let caps: Vec<(String, String)> = pads
            .iter()
            .map(|(n, c)| (n.clone(), c.structure(0).unwrap().name().to_string()))
            .collect();
        assert!(
            caps.contains(&("video_e0".into(), "video/x-h264".into())),
            "{caps:?}"
        );
        assert!(
            caps.contains(&("audio_c0".into(), "audio/x-alaw".into())),
            "{caps:?}"
        );
        let (_, alaw) = pads.iter().find(|(n, _)| n == "audio_c0").unwrap();
        let s = alaw.structure(0).unwrap();
        assert_eq!(s.get::<i32>("rate").unwrap(), 8000);
        assert_eq!(s.get::<i32>("channels").unwrap(), 1);
        let first = first.lock().unwrap().clone().expect("no video buffer");
        assert!(
            first.windows(5).any(|w| w == [0, 0, 0, 1, 0x67]),
            "SPS missing"
        );
        assert!(
            first.windows(5).any(|w| w == [0, 0, 0, 1, 0x68]),
            "PPS missing"
        );
    }
}

#[test]
fn pull_mode_duration_and_seek() {
    let path = mpegpsmux_file("seek.ps", "key-int-max=15", 120);
    init();
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! psdemux name=d d.video_e0 ! fakesink name=s signal-handoffs=true sync=false",
        path.display()
    ))
    .unwrap();
    let bin = pipeline.downcast_ref::<gst::Bin>().unwrap();
    let sink = bin.by_name("s").unwrap();
    let (tx, rx) = mpsc::channel::<(Option<gst::ClockTime>, bool)>();
    let tx = Mutex::new(tx);
    sink.connect("handoff", false, move |args| {
        let buf = args[1].get::<gst::Buffer>().unwrap();
        let _ = tx.lock().unwrap().send((
            buf.pts(),
            buf.flags().contains(gst::BufferFlags::DELTA_UNIT),
        ));
        None
    });
    pipeline.set_state(gst::State::Paused).unwrap();
    let (res, _, _) = pipeline.state(gst::ClockTime::from_seconds(10));
    res.unwrap();
    let dur = pipeline
        .query_duration::<gst::ClockTime>()
        .expect("duration");
    // 120 frames at 30 fps: ~4 s (the last PTS is one frame before the end).
    assert!(
        dur >= gst::ClockTime::from_mseconds(3700) && dur <= gst::ClockTime::from_mseconds(4200),
        "{dur}"
    );
    let mut q = gst::query::Seeking::new(gst::Format::Time);
    assert!(pipeline.query(&mut q));
    assert!(q.result().0);
    while rx.try_recv().is_ok() {}
    let target = gst::ClockTime::from_seconds(2);
    pipeline
        .seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT, target)
        .unwrap();
    let (res, _, _) = pipeline.state(gst::ClockTime::from_seconds(10));
    res.unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let (pts, delta) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("no buffer after seek");
    let pts = pts.unwrap();
    assert!(!delta, "first buffer after seek is not a key frame");
    // KEY_UNIT: snapped to the key frame at or before the target (one every 0.5 s; one is
    // right at 2 s).
    assert_eq!(pts, target, "first buffer at {pts}, target {target}");
    let vpad = bin.by_name("d").unwrap().static_pad("video_e0").unwrap();
    let pos = vpad.query_position::<gst::ClockTime>().expect("position");
    assert!(pos >= target, "{pos}");
    // Between key frames: the one before (2.5 s) comes first.
    pipeline.set_state(gst::State::Paused).unwrap();
    let _ = pipeline.state(gst::ClockTime::from_seconds(10));
    pipeline
        .seek_simple(
            gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
            gst::ClockTime::from_mseconds(2700),
        )
        .unwrap();
    let _ = pipeline.state(gst::ClockTime::from_seconds(10));
    while rx.try_recv().is_ok() {}
    pipeline.set_state(gst::State::Playing).unwrap();
    let (pts, delta) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("no buffer after the second seek");
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(!delta);
    assert_eq!(pts, Some(gst::ClockTime::from_mseconds(2500)));
}

#[test]
fn bad_input_keeps_running() {
    let path = mpegpsmux_file("clean.ps", "key-int-max=10", 60);
    let clean = std::fs::read(&path).unwrap();
    let mut bad = b"\x00\x00\x01garbage\x00\x00\x01\xe0\x00\x10 prefix".to_vec();
    bad.extend_from_slice(&clean[..clean.len() / 3]);
    // Splice: jump into the middle of a packet, flip bits, truncate the end.
    bad.extend_from_slice(&clean[clean.len() / 2 + 777..]);
    let mut state = 12345u32;
    for _ in 0..40 {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let i = (state as usize >> 4) % bad.len();
        bad[i] ^= 1 << (state % 8);
    }
    bad.truncate(bad.len() - 1000);
    let bad_path = scratch("bad.ps");
    std::fs::write(&bad_path, &bad).unwrap();
    for push in [false, true] {
        let outs = demux_file(&bad_path, push);
        let v = video(&outs);
        assert!(v.len() > 15, "only {} video frames", v.len());
    }
}

/// A minimal live camera-style PS frame: pack + PES with H.264.
fn ps_frame(pts: u64, es: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 1, 0xBA, 0x44, 0, 4, 0, 4, 1, 0x01, 0x89, 0xC3, 0xF8];
    let ts = [
        0x21 | (((pts >> 30) as u8 & 7) << 1),
        (pts >> 22) as u8,
        (((pts >> 15) as u8) << 1) | 1,
        (pts >> 7) as u8,
        ((pts as u8) << 1) | 1,
    ];
    let len = 3 + 5 + es.len();
    v.extend_from_slice(&[0, 0, 1, 0xE0, (len >> 8) as u8, len as u8, 0x80, 0x80, 5]);
    v.extend_from_slice(&ts);
    v.extend_from_slice(es);
    v
}

/// A psdemux harness fed frame-aligned PS (as from rtppsdepay), its video pad linked to a
/// collector whose buffers arrive on the returned channel (keep the pad alive).
fn frame_aligned_harness(
    max_frame_size: Option<u32>,
) -> (gst_check::Harness, mpsc::Receiver<gst::Buffer>, gst::Pad) {
    let mut h = gst_check::Harness::with_padnames("psdemux", Some("sink"), None);
    if let Some(max) = max_frame_size {
        h.element().unwrap().set_property("max-frame-size", max);
    }
    h.set_src_caps_str(
        "video/mpeg, systemstream=(boolean)true, mpegversion=(int)2, alignment=(string)frame",
    );
    let (tx, rx) = mpsc::channel::<gst::Buffer>();
    let collector = gst::Pad::builder(gst::PadDirection::Sink)
        .name("collector")
        .chain_function(move |_, _, buf| {
            let _ = tx.send(buf);
            Ok(gst::FlowSuccess::Ok)
        })
        .event_function(|_, _, _| true)
        .query_function(|_, _, q| match q.view_mut() {
            gst::QueryViewMut::AcceptCaps(q) => {
                q.set_result(true);
                true
            }
            _ => false,
        })
        .build();
    collector.set_active(true).unwrap();
    let c2 = collector.clone();
    h.element().unwrap().connect_pad_added(move |_, pad| {
        if pad.name().starts_with("video_") {
            pad.link(&c2).unwrap();
        }
    });
    (h, rx, collector)
}

#[test]
fn frame_aligned_live_input_has_no_latency() {
    init();
    let (mut h, rx, _collector) = frame_aligned_harness(None);
    let idr: &[u8] = &[
        0, 0, 0, 1, 0x67, 0x42, 0, 0x1E, 0, 0, 0, 1, 0x68, 0xCE, 0x38, 0x80, 0, 0, 0, 1, 0x65,
        0x88, 0x84, 0x21, 0xA0,
    ];
    let p: &[u8] = &[0, 0, 0, 1, 0x41, 0x9A, 0x02, 0x03, 0x04];
    for i in 0..5u64 {
        let es = if i == 0 { idr } else { p };
        let mut buf = gst::Buffer::from_mut_slice(ps_frame(90_000 + i * 3600, es));
        buf.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(i * 40));
        h.push(buf).unwrap();
        // The AU of this frame is out before the next frame arrives.
        let out = rx
            .try_recv()
            .expect("AU not pushed at the end of its input frame");
        assert_eq!(out.map_readable().unwrap().as_slice(), es);
        assert_eq!(out.flags().contains(gst::BufferFlags::DELTA_UNIT), i != 0);
        assert_eq!(out.pts(), Some(gst::ClockTime::from_mseconds(i * 40)));
    }
    // An audio stream appearing late gets its own pad (stock mpegpsdemux drops it).
    let mut late = ps_frame(90_000 + 5 * 3600, p);
    let alaw = [0xD5u8; 160];
    let len = 3 + alaw.len();
    late.extend_from_slice(&[0, 0, 1, 0xC0, (len >> 8) as u8, len as u8, 0x80, 0, 0]);
    late.extend_from_slice(&alaw);
    h.push(gst::Buffer::from_mut_slice(late)).unwrap();
    let demux = h.element().unwrap();
    let audio_pad = demux
        .static_pad("audio_c0")
        .expect("no pad for the late audio stream");
    let caps = audio_pad.current_caps().unwrap();
    assert_eq!(caps.structure(0).unwrap().name(), "audio/x-alaw");
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("packs").unwrap(), 6);
    assert_eq!(stats.get::<u64>("pes-packets").unwrap(), 7);
    let streams = stats.get::<gst::Array>("streams").unwrap();
    let s0 = streams
        .iter()
        .map(|v| v.get::<gst::Structure>().unwrap())
        .find(|s| s.get::<u32>("stream-id").unwrap() == 0xE0)
        .unwrap();
    assert_eq!(s0.get::<&str>("codec").unwrap(), "h264");
    assert_eq!(s0.get::<u64>("frames").unwrap(), 6);
}

/// A PSM mapping E0 to `video_type` and C0 to G.711 A-law.
fn psm(video_type: u8) -> Vec<u8> {
    let map = [video_type, 0xE0, 0, 0, 0x90, 0xC0, 0, 0];
    let mut body = vec![0xE0, 0xFF, 0, 0, 0, map.len() as u8];
    body.extend_from_slice(&map);
    body.extend_from_slice(&[0, 0, 0, 0]);
    let mut v = vec![0, 0, 1, 0xBC, 0, body.len() as u8];
    v.extend_from_slice(&body);
    v
}

#[test]
fn live_discont_psm_change_and_frame_limit() {
    init();
    let (mut h, rx, _collector) = frame_aligned_harness(Some(2048));
    let h264_idr: &[u8] = &[
        0, 0, 0, 1, 0x67, 0x42, 0, 0x1E, 0, 0, 0, 1, 0x68, 0xCE, 0x38, 0x80, 0, 0, 0, 1, 0x65,
        0x88, 0x84, 0x21, 0xA0,
    ];
    let h264_p: &[u8] = &[0, 0, 0, 1, 0x41, 0x9A, 0x02, 0x03, 0x04];
    let h265_idr: &[u8] = &[
        0, 0, 0, 1, 0x40, 0x01, 0x0C, 0x01, 0, 0, 0, 1, 0x42, 0x01, 0x01, 0x01, 0, 0, 0, 1, 0x44,
        0x01, 0xC1, 0, 0, 0, 1, 0x26, 0x01, 0xAF, 0x12,
    ];
    let frame_with_psm = |pts: u64, vt: u8, es: &[u8]| {
        let f = ps_frame(pts, es);
        // Insert the PSM right after the 14-byte pack header.
        let mut v = f[..14].to_vec();
        v.extend(psm(vt));
        v.extend_from_slice(&f[14..]);
        v
    };
    let push = |h: &mut gst_check::Harness, data: Vec<u8>, discont: bool| {
        let mut buf = gst::Buffer::from_mut_slice(data);
        if discont {
            buf.get_mut().unwrap().set_flags(gst::BufferFlags::DISCONT);
        }
        h.push(buf).unwrap();
    };
    push(&mut h, frame_with_psm(0, 0x1B, h264_idr), false);
    push(&mut h, ps_frame(3600, h264_p), false);
    assert_eq!(rx.try_iter().count(), 2);
    // Loss: a P frame after a discontinuity is dropped, the next key frame is flagged DISCONT.
    push(&mut h, ps_frame(10800, h264_p), true);
    assert!(rx.try_recv().is_err());
    push(&mut h, ps_frame(14400, h264_idr), false);
    let b = rx.try_recv().expect("key frame after loss");
    assert!(b.flags().contains(gst::BufferFlags::DISCONT));
    assert!(!b.flags().contains(gst::BufferFlags::DELTA_UNIT));
    // A new PSM switching the stream to H.265 changes the caps.
    push(&mut h, frame_with_psm(18000, 0x24, h265_idr), false);
    let b = rx.try_recv().expect("H.265 frame");
    assert_eq!(b.map_readable().unwrap().as_slice(), h265_idr);
    let demux = h.element().unwrap();
    let caps = demux
        .static_pad("video_e0")
        .unwrap()
        .current_caps()
        .unwrap();
    assert_eq!(caps.structure(0).unwrap().name(), "video/x-h265");
    // A frame above max-frame-size is dropped and counted.
    let mut big = h265_idr.to_vec();
    big.resize(3000, 0x55);
    let mut unit = ps_frame(21600, &big[..1500]);
    let cont = ps_frame(21600, &big[1500..]);
    unit.extend_from_slice(&cont[14..]);
    // Second PES of the frame: no PTS of its own would be more usual; same PTS works too.
    push(&mut h, unit, false);
    assert!(rx.try_recv().is_err());
    let stats = demux.property::<gst::Structure>("stats");
    let streams = stats.get::<gst::Array>("streams").unwrap();
    let video = streams
        .iter()
        .map(|v| v.get::<gst::Structure>().unwrap())
        .find(|s| s.get::<u32>("stream-id").unwrap() == 0xE0)
        .unwrap();
    assert_eq!(video.get::<&str>("codec").unwrap(), "h265");
    assert!(video.get::<u64>("dropped-bytes").unwrap() >= 3000);
}

/// A PS file whose PSM lists G.711 audio that never carries data (as many cameras write it):
/// `psdemux` announces the audio pad and keeps it fed with GAP events, so a sink linked to it
/// prerolls and the pipeline plays to EOS instead of hanging in PAUSED.
#[test]
fn announced_but_silent_stream_gets_gaps_and_prerolls() {
    use gstmpegps::mux::writer::{Frame, PsWriter, WriterConfig};
    use gstmpegps::ps::Codec;

    init();
    let mut writer = PsWriter::new(WriterConfig::default());
    let video = writer.add_stream(Codec::H264).expect("video id");
    writer.add_stream(Codec::G711Alaw).expect("audio id");
    let mut file = Vec::new();
    // 5 s at 25 fps, a key frame (IDR NAL) every 25 frames, P slices otherwise.
    for i in 0..125u64 {
        let key = i % 25 == 0;
        let mut au = vec![0, 0, 0, 1, 0x09, 0xF0];
        au.extend_from_slice(&[0, 0, 0, 1, if key { 0x65 } else { 0x41 }]);
        au.extend(std::iter::repeat_n(0x5A, 500));
        let pts = 90_000 + i * 3600;
        let packet = writer
            .write_frame(&Frame {
                stream_id: video,
                len: au.len(),
                pts: Some(pts),
                dts: Some(pts),
                key,
            })
            .expect("write frame");
        file.extend(packet.to_contiguous(&au).expect("whole packet"));
    }
    let dir = std::env::temp_dir().join(format!("psdemux-gap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("silent-audio.ps");
    std::fs::write(&path, &file).unwrap();

    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! psdemux name=d \
         d.video_e0 ! queue ! fakesink name=v sync=false \
         d.audio_c0 ! queue ! fakesink name=a sync=false",
        path.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let gaps = Arc::new(Mutex::new(0u32));
    let audio_sink_pad = pipeline.by_name("a").unwrap().static_pad("sink").unwrap();
    let gaps2 = gaps.clone();
    audio_sink_pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        if let Some(gst::PadProbeData::Event(ev)) = &info.data
            && ev.type_() == gst::EventType::Gap
        {
            *gaps2.lock().unwrap() += 1;
        }
        gst::PadProbeReturn::Ok
    });
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(20),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    pipeline.set_state(gst::State::Null).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let msg = msg.expect("pipeline finishes instead of hanging in preroll");
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    assert!(
        *gaps.lock().unwrap() >= 3,
        "GAP events on the silent audio pad"
    );
}

/// A live G.711 PS frame (pack + audio PES with PTS), as a camera's first packs before its
/// first video frame.
fn ps_audio_frame(pts: u64) -> Vec<u8> {
    let mut v = ps_frame(pts, &[]);
    // Turn the empty video PES into an audio one carrying 160 A-law bytes.
    v[17] = 0xC0;
    let len = 3 + 5 + 160;
    v[18] = (len >> 8) as u8;
    v[19] = len as u8;
    v.extend_from_slice(&[0xD5; 160]);
    v
}

/// A camera whose audio comes before its video (an encoder with latency; G.711 is sent at
/// once), read live one PS frame per buffer as gb28181src delivers it, with only the video pad
/// linked (`... ! psdemux name=d d.video_e0 ! ...`): the audio pad is created first and is not
/// linked; its NOT_LINKED must not stop the element before the video pad exists (stock
/// mpegpsdemux plays such a line). Old behaviour: the first push returned not-linked.
#[test]
fn only_video_linked_plays_when_audio_comes_first() {
    init();
    let (mut h, rx, _collector) = frame_aligned_harness(None);
    for i in 0..10u64 {
        let mut frame = ps_audio_frame(90_000 + i * 1800);
        if i == 0 {
            // The map comes with the first pack (without one the audio would wait for it,
            // and its pad would not exist yet).
            let map = psm(0x1B);
            frame.splice(14..14, map);
        }
        let mut buf = gst::Buffer::from_mut_slice(frame);
        buf.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(i * 20));
        assert_eq!(
            h.push(buf),
            Ok(gst::FlowSuccess::Ok),
            "audio frame {i} before any video"
        );
    }
    assert!(h.element().unwrap().static_pad("audio_c0").is_some());
    let idr: &[u8] = &[
        0, 0, 0, 1, 0x67, 0x42, 0, 0x1E, 0, 0, 0, 1, 0x68, 0xCE, 0x38, 0x80, 0, 0, 0, 1, 0x65,
        0x88, 0x84, 0x21, 0xA0,
    ];
    let mut first = psm(0x1B);
    first.extend_from_slice(&ps_frame(90_000 + 18_000, idr));
    let mut frames = vec![first];
    for i in 1..100u64 {
        let mut f = ps_frame(
            90_000 + 18_000 + i * 3600,
            &[0, 0, 0, 1, 0x41, 0x9A, i as u8],
        );
        f.extend_from_slice(&ps_audio_frame(90_000 + 18_000 + i * 3600)[14..]);
        frames.push(f);
    }
    for (i, f) in frames.into_iter().enumerate() {
        assert_eq!(
            h.push(gst::Buffer::from_mut_slice(f)),
            Ok(gst::FlowSuccess::Ok),
            "frame {i} with the video linked"
        );
    }
    // Every video frame reached the only linked branch (4 s of stream time: past discovery).
    assert_eq!(rx.try_iter().count(), 100);
}

/// Nothing linked at all still stops the element with not-linked once the streams are
/// known, as with every demuxer (the pipeline does not run forever for nobody).
#[test]
fn nothing_linked_still_stops() {
    let path = mpegpsmux_file("nothing-linked.ps", "key-int-max=30", 150);
    let p = gst::parse::launch(&format!(
        "filesrc location={} ! queue ! psdemux name=d",
        path.display()
    ))
    .unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let msg = p.bus().unwrap().timed_pop_filtered(
        gst::ClockTime::from_seconds(30),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    p.set_state(gst::State::Null).unwrap();
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Error(e)) => {
            assert!(format!("{:?}", e.debug()).contains("not-linked"), "{e:?}")
        }
        other => panic!("expected a not-linked error, got {other:?}"),
    }
}
