//! psmux output checked by independent peers: FFmpeg (ffprobe frame count, full decode)
//! and GStreamer's stock mpegpsdemux. Streams are short (50 frames of 320x240).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gst::prelude::*;

const FRAMES: usize = 50;

fn init() {
    gst_ipcam_testutil::init_with(|| {
        gstmpegps::plugin_register_static().expect("register mpegps");
    });
}

fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "psmux-{}-{}-{}.ps",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        name
    ))
}

/// Runs a launch line to EOS (or fails after 60 s).
fn run(launch: &str) -> gst::Element {
    let pipeline = gst::parse::launch(launch).unwrap_or_else(|e| panic!("{launch}: {e}"));
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("pipeline timed out");
    if let gst::MessageView::Error(e) = msg.view() {
        pipeline.set_state(gst::State::Null).unwrap();
        panic!("{launch}: {} ({:?})", e.error(), e.debug());
    }
    pipeline.set_state(gst::State::Null).unwrap();
    pipeline
}

const VIDEO_RAW: &str =
    "videotestsrc num-buffers=50 ! video/x-raw,width=320,height=240,framerate=25/1";
const H264: &str = "x264enc speed-preset=ultrafast key-int-max=25 bframes=2 ! h264parse";
const H265: &str =
    "x265enc speed-preset=ultrafast key-int-max=25 option-string=log-level=none ! h265parse";
/// 2 s of audio like the video.
const ALAW: &str =
    "audiotestsrc num-buffers=50 samplesperbuffer=320 ! audio/x-raw,rate=8000,channels=1 ! alawenc";
const AAC: &str = "audiotestsrc num-buffers=32 samplesperbuffer=1000 ! audio/x-raw,rate=16000,channels=1 ! voaacenc ! aacparse";

fn mux(video: &str, audio: Option<&str>, name: &str) -> PathBuf {
    let path = scratch(name);
    let audio = audio
        .map(|a| format!(" {a} ! queue ! m."))
        .unwrap_or_default();
    let pipeline = run(&format!(
        "{VIDEO_RAW} ! {video} ! queue ! psmux name=m ! filesink location={}{audio}",
        path.display()
    ));
    // Shown with a failing test's output: which path (direct or aggregator) muxed what.
    if let Some(m) = pipeline
        .downcast_ref::<gst::Bin>()
        .and_then(|b| b.by_name("m"))
    {
        eprintln!(
            "{}: {}",
            path.display(),
            m.property::<gst::Structure>("stats")
        );
    }
    path
}

/// ffprobe's `entries` of `path` as CSV lines, after the options `args`.
fn ffprobe_csv(path: &Path, args: &[&str], entries: &str) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .args(["-show_entries", entries, "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ffprobe_streams(path: &Path) -> Vec<(String, String, String)> {
    ffprobe_csv(
        path,
        &["-count_frames"],
        "stream=codec_type,codec_name,nb_read_frames",
    )
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split(',').collect();
        (
            f.first().unwrap_or(&"").to_string(),
            f.get(1).unwrap_or(&"").to_string(),
            f.get(2).unwrap_or(&"").to_string(),
        )
    })
    .collect()
}

/// Decodes the selected streams with ffmpeg; returns its error output.
fn ffmpeg_decode_errors(path: &Path, map: &str) -> String {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", map, "-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success(), "ffmpeg failed on {}", path.display());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn check_video(path: &Path, codec: &str) {
    let streams = ffprobe_streams(path);
    let video = streams
        .iter()
        .find(|(_, t, _)| t == "video")
        .unwrap_or_else(|| panic!("no video in {streams:?}"));
    assert_eq!(video.0, codec);
    assert_eq!(
        video.2,
        FRAMES.to_string(),
        "decoded video frames: {streams:?}"
    );
    // FFmpeg 5.1 probes a G.711 stream (0x90/0x91, unknown to it) as mp2 and complains
    // while opening the file even when only video is decoded: ignore those lines.
    let errors = ffmpeg_decode_errors(path, "0:v");
    let errors: Vec<&str> = errors
        .lines()
        .filter(|l| !l.starts_with("[mp2 @"))
        .collect();
    assert!(
        errors.is_empty(),
        "video decode errors: {errors:?}; the file's video packets (pts,dts,size,pos), kept at {}: {}",
        path.display(),
        video_packets(path)
    );
}

/// ffprobe's list of the video packets (pts, dts, size, position), for failure reports.
fn video_packets(path: &Path) -> String {
    ffprobe_csv(path, &["-select_streams", "v"], "packet=pts,dts,size,pos")
        .lines()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Audio PES payload bytes of stream `id`, read with a small independent PS walker.
fn audio_bytes(path: &Path, id: u8) -> usize {
    let data = std::fs::read(path).unwrap();
    let mut pos = 0;
    let mut total = 0;
    while pos + 6 <= data.len() {
        assert_eq!(&data[pos..pos + 3], &[0, 0, 1], "start code at {pos}");
        let code = data[pos + 3];
        if code == 0xBA {
            pos += 14 + (data[pos + 13] & 7) as usize;
            continue;
        }
        let len = u16::from_be_bytes([data[pos + 4], data[pos + 5]]) as usize;
        if code == id {
            total += len - 3 - data[pos + 8] as usize;
        }
        pos += 6 + len;
    }
    assert_eq!(pos, data.len());
    total
}

#[test]
fn h264_alaw_decodes_with_ffmpeg() {
    init();
    let path = mux(H264, Some(ALAW), "h264-alaw");
    check_video(&path, "h264");
    // FFmpeg 5.1 doesn't know stream type 0x90 (G.711 A-law): it maps 0xC0 to MPEG audio
    // (mp2), so only the stream's presence is checked there; the bytes are checked here.
    let streams = ffprobe_streams(&path);
    assert!(streams.iter().any(|(_, t, _)| t == "audio"), "{streams:?}");
    assert_eq!(audio_bytes(&path, 0xC0), 50 * 320);
    std::fs::remove_file(path).ok();
}

#[test]
fn h264_aac_decodes_with_ffmpeg() {
    init();
    let path = mux(H264, Some(AAC), "h264-aac");
    check_video(&path, "h264");
    let streams = ffprobe_streams(&path);
    let audio = streams.iter().find(|(_, t, _)| t == "audio").unwrap();
    assert_eq!(audio.0, "aac");
    // 32000 samples in frames of 1024.
    let frames: usize = audio.2.parse().unwrap();
    assert!((31..=33).contains(&frames), "{streams:?}");
    let errors = ffmpeg_decode_errors(&path, "0:a");
    assert!(errors.is_empty(), "audio decode errors: {errors}");
    std::fs::remove_file(path).ok();
}

#[test]
fn h265_alaw_decodes_with_ffmpeg() {
    init();
    let path = mux(H265, Some(ALAW), "h265-alaw");
    check_video(&path, "hevc");
    let streams = ffprobe_streams(&path);
    assert!(streams.iter().any(|(_, t, _)| t == "audio"), "{streams:?}");
    assert_eq!(audio_bytes(&path, 0xC0), 50 * 320);
    std::fs::remove_file(path).ok();
}

#[test]
fn h265_aac_decodes_with_ffmpeg() {
    init();
    let path = mux(H265, Some(AAC), "h265-aac");
    check_video(&path, "hevc");
    let streams = ffprobe_streams(&path);
    assert!(
        streams.iter().any(|(c, t, _)| t == "audio" && c == "aac"),
        "{streams:?}"
    );
    std::fs::remove_file(path).ok();
}

#[test]
fn mpeg4_video_decodes_with_ffmpeg() {
    init();
    let path = mux(
        "avenc_mpeg4 gop-size=25 ! mpeg4videoparse config-interval=-1",
        None,
        "mpeg4",
    );
    check_video(&path, "mpeg4");
    std::fs::remove_file(path).ok();
}

/// Decoded frames through stock mpegpsdemux ! h264parse ! avdec_h264, fed in push mode as
/// a network receiver would. (In pull mode mpegpsdemux 1.22 scans for the first PTS, skips
/// the pack carrying system header + PSM, takes the next frame's PTS as segment start and
/// clips the frames before it; it does the same with mpegpsmux's output.)
#[test]
fn h264_aac_demuxes_with_mpegpsdemux() {
    init();
    let path = mux(H264, Some(AAC), "h264-mpegpsdemux");
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! queue ! mpegpsdemux name=d \
         d.video_e0 ! queue ! h264parse ! avdec_h264 ! fakesink name=v sync=false signal-handoffs=true \
         d.audio_c0 ! queue ! aacparse ! avdec_aac ! fakesink name=a sync=false signal-handoffs=true",
        path.display()
    ))
    .unwrap()
    .downcast::<gst::Bin>()
    .unwrap();
    let count = |name: &str| {
        let counter = std::sync::Arc::new(AtomicUsize::new(0));
        let c = counter.clone();
        pipeline
            .by_name(name)
            .unwrap()
            .connect("handoff", false, move |_| {
                c.fetch_add(1, Ordering::Relaxed);
                None
            });
        counter
    };
    let video = count("v");
    let audio = count("a");
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("timeout");
    pipeline.set_state(gst::State::Null).unwrap();
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("mpegpsdemux: {} ({:?})", e.error(), e.debug());
    }
    assert_eq!(video.load(Ordering::Relaxed), FRAMES);
    assert!(audio.load(Ordering::Relaxed) >= 30);
    std::fs::remove_file(path).ok();
}

/// Live sources: the aggregator runs on its latency deadline and still outputs every frame.
#[test]
fn live_sources_mux_every_frame() {
    init();
    let path = scratch("live");
    let start = std::time::Instant::now();
    run(&format!(
        "videotestsrc is-live=true num-buffers=25 ! video/x-raw,width=320,height=240,framerate=25/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast ! h264parse ! psmux name=m latency=100000000 \
         ! filesink location={} \
         audiotestsrc is-live=true num-buffers=25 samplesperbuffer=320 ! audio/x-raw,rate=8000,channels=1 \
         ! alawenc ! m.",
        path.display()
    ));
    assert!(start.elapsed() < Duration::from_secs(30));
    let streams = ffprobe_streams(&path);
    let video = streams.iter().find(|(_, t, _)| t == "video").unwrap();
    assert_eq!(video.2, "25", "{streams:?}");
    // Audio before the first video key frame is not written (receivers start there); the
    // rest is, whole.
    let audio = audio_bytes(&path, 0xC0);
    assert!(
        audio.is_multiple_of(320) && audio >= 20 * 320,
        "{audio} audio bytes"
    );
    let data = std::fs::read(&path).unwrap();
    assert_eq!(first_pes_stream(&data), Some(0xE0), "starts with video");
    assert_eq!(first_psm_streams(&data), vec![0xC0, 0xE0]);
    std::fs::remove_file(path).ok();
}

/// The stream id of the first PES packet in `data`.
fn first_pes_stream(data: &[u8]) -> Option<u8> {
    data.windows(4)
        .find(|w| w[..3] == [0, 0, 1] && (0xC0..=0xEF).contains(&w[3]))
        .map(|w| w[3])
}

/// The elementary stream ids the first PSM in `data` lists, sorted.
fn first_psm_streams(data: &[u8]) -> Vec<u8> {
    let Some(at) = data.windows(4).position(|w| w == [0, 0, 1, 0xBC]) else {
        return Vec::new();
    };
    let psm = &data[at + 6..];
    let info_len = u16::from_be_bytes([psm[2], psm[3]]) as usize;
    let map = &psm[4 + info_len..];
    let map_len = u16::from_be_bytes([map[0], map[1]]) as usize;
    let mut entries = &map[2..2 + map_len];
    let mut ids = Vec::new();
    while entries.len() >= 4 {
        ids.push(entries[1]);
        let n = u16::from_be_bytes([entries[2], entries[3]]) as usize;
        entries = &entries[(4 + n).min(entries.len())..];
    }
    ids.sort_unstable();
    ids
}

/// An encoder with latency (x264enc's default lookahead) against live G.711: before, psmux
/// wrote ~1 s of audio-only packs whose PSM listed only the audio, so receivers guessed the
/// video codec or dropped that audio; now the stream starts at the first video key frame and
/// its first PSM lists both streams.
#[test]
fn live_stream_starts_at_the_first_video_key_frame() {
    init();
    let path = scratch("live-latency");
    run(&format!(
        "videotestsrc is-live=true num-buffers=50 ! video/x-raw,width=320,height=240,framerate=25/1 \
         ! x264enc speed-preset=ultrafast rc-lookahead=20 ! h264parse ! psmux name=m latency=100000000 \
         ! filesink location={} \
         audiotestsrc is-live=true num-buffers=50 samplesperbuffer=320 ! audio/x-raw,rate=8000,channels=1 \
         ! alawenc ! m.",
        path.display()
    ));
    let data = std::fs::read(&path).unwrap();
    assert_eq!(first_pes_stream(&data), Some(0xE0), "starts with video");
    assert_eq!(first_psm_streams(&data), vec![0xC0, 0xE0]);
    let streams = ffprobe_streams(&path);
    let video = streams.iter().find(|(_, t, _)| t == "video").unwrap();
    assert_eq!(video.2, "50", "{streams:?}");
    std::fs::remove_file(path).ok();
}

/// Live: a sink pad that never gets data must not stall the other one; the aggregator
/// times out on its latency and muxes what it has.
#[test]
fn live_idle_pad_does_not_stall() {
    init();
    let pipeline = gst::parse::launch(
        "videotestsrc is-live=true num-buffers=25 ! video/x-raw,width=320,height=240,framerate=25/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast ! h264parse ! queue \
         ! psmux name=m latency=50000000 ! fakesink name=out signal-handoffs=true \
         appsrc is-live=true format=time caps=audio/x-alaw,rate=8000,channels=1 ! queue ! m.",
    )
    .unwrap()
    .downcast::<gst::Bin>()
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(Vec<u8>, bool)>();
    let tx = std::sync::Mutex::new(tx);
    pipeline
        .by_name("out")
        .unwrap()
        .connect("handoff", false, move |args| {
            let buffer = args[1].get::<gst::Buffer>().unwrap();
            let data = buffer.map_readable().unwrap().to_vec();
            let delta = buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
            let _ = tx.lock().unwrap().send((data, delta));
            None
        });
    pipeline.set_state(gst::State::Playing).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < 25 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(b) => got.push(b),
            Err(_) => break,
        }
    }
    let latency = pipeline.by_name("m").unwrap().property::<u64>("latency");
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(latency, 50_000_000, "live: the user's latency is kept");
    assert_eq!(
        got.len(),
        25,
        "every video frame muxed while the audio pad is idle"
    );
    assert!(got.iter().all(|(d, _)| d.starts_with(&[0, 0, 1, 0xBA])));
    let (first, first_delta) = &got[0];
    assert!(!first_delta);
    assert!(first.windows(4).any(|w| w == [0, 0, 1, 0xBC]));
    assert!(
        got.iter()
            .all(|(d, _)| !d.windows(4).any(|w| w == [0, 0, 1, 0xC0]))
    );
}

/// Not live: psmux deepens its sink queues through the aggregator latency for the run and
/// restores it on stop. (Live pipelines keep the user's latency: see the live tests.)
#[test]
fn non_live_queue_raises_latency_until_stop() {
    init();
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=5 ! video/x-raw,width=320,height=240 ! x264enc \
         ! h264parse ! psmux name=m ! fakesink",
    )
    .unwrap()
    .downcast::<gst::Bin>()
    .unwrap();
    let mux = pipeline.by_name("m").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("timeout");
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)));
    assert_eq!(mux.property::<u64>("latency"), 1_000_000_000);
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(mux.property::<u64>("latency"), 0, "restored on stop");
}
