//! psmux → file → psdemux for every video/audio pairing GB28181 platforms accept, decoded by
//! stock decoders: each encoded video frame comes back, audio comes back. Also the pull-mode
//! paths (duration) of psdemux on our own files.

use gst::prelude::*;
use gst_ipcam_tests::{count_appsink, init, scratch_dir, start_pipeline, wait_for_eos};
use std::time::Duration;

const FRAMES: u32 = 50;

fn mux_to_file(video_enc: &str, audio_enc: &str, path: &std::path::Path) {
    let desc = format!(
        "videotestsrc num-buffers={FRAMES} ! video/x-raw,width=320,height=240,framerate=25/1 \
         ! {video_enc} ! psmux name=m ! filesink location={} \
         audiotestsrc num-buffers=40 samplesperbuffer=400 ! audio/x-raw,rate=8000,channels=1 \
         ! {audio_enc} ! m.",
        path.display()
    );
    let p = start_pipeline(&desc);
    let log = wait_for_eos(&p, Duration::from_secs(60));
    p.set_state(gst::State::Null).unwrap();
    assert!(log.errors.is_empty(), "{desc}: {:?}", log.errors);
    assert!(log.eos, "{desc}: no EOS");
}

fn demux_count(
    path: &std::path::Path,
    video_dec: &str,
    audio_dec: &str,
) -> (usize, usize, gst::ClockTime) {
    let desc = format!(
        "filesrc location={} ! psdemux name=d \
         d.video_e0 ! queue ! {video_dec} ! appsink name=video sync=false \
         d.audio_c0 ! queue ! {audio_dec} ! appsink name=audio sync=false",
        path.display()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let video = count_appsink(&pipeline, "video");
    let audio = count_appsink(&pipeline, "audio");
    pipeline.set_state(gst::State::Paused).unwrap();
    let _ = pipeline.state(gst::ClockTime::from_seconds(10));
    let duration = pipeline
        .query_duration::<gst::ClockTime>()
        .unwrap_or(gst::ClockTime::ZERO);
    pipeline.set_state(gst::State::Playing).unwrap();
    let log = wait_for_eos(&pipeline, Duration::from_secs(60));
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(log.errors.is_empty(), "{desc}: {:?}", log.errors);
    assert!(log.eos, "{desc}: no EOS");
    let v = video.lock().unwrap().len();
    let a = audio.lock().unwrap().len();
    (v, a, duration)
}

fn round_trip(name: &str, video_enc: &str, audio_enc: &str, video_dec: &str, audio_dec: &str) {
    init();
    let dir = scratch_dir(name);
    let file = dir.join("out.ps");
    mux_to_file(video_enc, audio_enc, &file);
    let (v, a, duration) = demux_count(&file, video_dec, audio_dec);
    assert_eq!(v, FRAMES as usize, "{name}: every video frame decodes");
    assert!(a > 0, "{name}: audio decodes");
    // 50 frames at 25 fps: 2 s.
    assert!(
        duration >= gst::ClockTime::from_mseconds(1800)
            && duration <= gst::ClockTime::from_mseconds(2200),
        "{name}: duration {duration}"
    );
}

const H264: &str = "x264enc speed-preset=ultrafast key-int-max=25 ! h264parse";
const H265: &str = "x265enc speed-preset=ultrafast key-int-max=25 ! h265parse";
const ALAW: &str = "alawenc";
const AAC: &str = "avenc_aac ! aacparse ! audio/mpeg,stream-format=adts";

#[test]
fn h264_alaw() {
    round_trip("h264_alaw", H264, ALAW, "h264parse ! avdec_h264", "alawdec");
}

#[test]
fn h264_aac() {
    round_trip(
        "h264_aac",
        H264,
        AAC,
        "h264parse ! avdec_h264",
        "aacparse ! avdec_aac",
    );
}

#[test]
fn h265_alaw() {
    round_trip("h265_alaw", H265, ALAW, "h265parse ! avdec_h265", "alawdec");
}

#[test]
fn h265_aac() {
    round_trip(
        "h265_aac",
        H265,
        AAC,
        "h265parse ! avdec_h265",
        "aacparse ! avdec_aac",
    );
}
