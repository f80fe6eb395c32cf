//! Round trips through every element of the mpegps plugin over loopback:
//! psmux → rtppspay → (udpsink | rtpstreampay ! tcpserversink) → … → rtppsdepay → psdemux,
//! decoded by stock avdec_h264. Clean runs must deliver every frame; runs with induced loss,
//! duplication and reordering (stock netsim) must keep running and recover at the next key frame.

use gst::prelude::*;
use gst_ipcam_tests::{
    count_appsink, free_tcp_port, free_udp_port, init, start_pipeline, wait_for_eos,
};
use std::time::Duration;

const FRAMES: u32 = 100;
const FPS: u32 = 50;
/// A key frame every 10 frames, so a loss costs at most 10 frames.
const GOP: u32 = 10;

fn camera(network: &str, sink: &str) -> String {
    format!(
        "videotestsrc is-live=true num-buffers={FRAMES} \
         ! video/x-raw,width=320,height=240,framerate={FPS}/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={GOP} bitrate=800 \
         ! h264parse ! psmux name=m \
         audiotestsrc is-live=true samplesperbuffer=320 num-buffers={audio} \
         ! audio/x-raw,rate=8000,channels=1 ! alawenc ! m. \
         m. ! rtppspay mtu=1400 ! {network} {sink}",
        audio = FRAMES * 8000 / FPS / 320,
    )
}

fn receiver(source: &str) -> String {
    format!(
        "{source} ! rtpjitterbuffer latency=100 ! rtppsdepay name=depay ! psdemux name=d \
         d.video_e0 ! queue ! h264parse ! avdec_h264 ! appsink name=video sync=false \
         d.audio_c0 ! queue ! alawdec ! appsink name=audio sync=false"
    )
}

const RTP_CAPS: &str =
    "application/x-rtp,media=video,clock-rate=90000,encoding-name=MP2P,payload=96";

struct Outcome {
    video_pts: Vec<Option<gst::ClockTime>>,
    audio_buffers: usize,
    depay_stats: gst::Structure,
    errors: Vec<String>,
}

/// Starts the receiver, runs the camera to EOS, lets the receiver drain and stops it.
fn run(receiver_desc: &str, camera_desc: &str, receiver_first: bool) -> Outcome {
    init();
    let (rx, cam);
    if receiver_first {
        rx = start_pipeline(receiver_desc);
        std::thread::sleep(Duration::from_millis(300));
        cam = start_pipeline(camera_desc);
    } else {
        cam = start_pipeline(camera_desc);
        std::thread::sleep(Duration::from_millis(300));
        rx = start_pipeline(receiver_desc);
    }
    let video = count_appsink(&rx, "video");
    let audio = count_appsink(&rx, "audio");

    let cam_log = wait_for_eos(&cam, Duration::from_secs(30));
    assert!(
        cam_log.errors.is_empty(),
        "camera errors: {:?}",
        cam_log.errors
    );
    assert!(cam_log.eos, "camera did not finish");
    cam.set_state(gst::State::Null).unwrap();

    // Let the jitterbuffer and the decoder drain, then stop the receiver with EOS.
    std::thread::sleep(Duration::from_millis(800));
    rx.send_event(gst::event::Eos::new());
    let rx_log = wait_for_eos(&rx, Duration::from_secs(10));
    let depay_stats = rx
        .by_name("depay")
        .expect("depay")
        .property::<gst::Structure>("stats");
    rx.set_state(gst::State::Null).unwrap();

    let video_pts = video.lock().unwrap().clone();
    let audio_buffers = audio.lock().unwrap().len();
    Outcome {
        video_pts,
        audio_buffers,
        depay_stats,
        errors: rx_log.errors,
    }
}

fn assert_clean(outcome: &Outcome) {
    assert!(
        outcome.errors.is_empty(),
        "receiver errors: {:?}",
        outcome.errors
    );
    assert_eq!(
        outcome.video_pts.len(),
        FRAMES as usize,
        "every frame decodes on a clean loopback (depay stats {})",
        outcome.depay_stats
    );
    assert!(outcome.audio_buffers > 0, "audio arrives");
    let pts: Vec<_> = outcome
        .video_pts
        .iter()
        .map(|p| p.expect("video PTS"))
        .collect();
    assert!(pts.windows(2).all(|w| w[0] < w[1]), "video PTS increase");
}

#[test]
fn udp_clean_every_frame_arrives() {
    let port = free_udp_port();
    let outcome = run(
        &receiver(&format!(
            "udpsrc address=127.0.0.1 port={port} caps=\"{RTP_CAPS}\""
        )),
        &camera("", &format!("udpsink host=127.0.0.1 port={port}")),
        true,
    );
    assert_clean(&outcome);
}

#[test]
fn tcp_rfc4571_clean_every_frame_arrives() {
    let port = free_tcp_port();
    // The camera listens (TCP active from the platform's point of view), the receiver connects.
    let outcome = run(
        &receiver(&format!(
            "tcpclientsrc host=127.0.0.1 port={port} ! application/x-rtp-stream,media=video,clock-rate=90000,encoding-name=MP2P,payload=96 ! rtpstreamdepay"
        )),
        &camera(
            "rtpstreampay !",
            &format!("tcpserversink host=127.0.0.1 port={port} sync-method=burst-keyframe"),
        ),
        false,
    );
    assert!(
        outcome.errors.is_empty(),
        "receiver errors: {:?}",
        outcome.errors
    );
    // The receiver joins a moment after the camera started: it must start on a key frame and
    // then get every frame that follows.
    assert!(
        outcome.video_pts.len() >= (FRAMES as usize) * 6 / 10,
        "got {} of {FRAMES} frames over TCP",
        outcome.video_pts.len()
    );
}

#[test]
fn udp_with_loss_duplication_and_reordering_recovers() {
    let port = free_udp_port();
    let outcome = run(
        &receiver(&format!(
            "udpsrc address=127.0.0.1 port={port} caps=\"{RTP_CAPS}\""
        )),
        &camera(
            "netsim drop-probability=0.03 duplicate-probability=0.03 delay-probability=0.1 min-delay=1 max-delay=30 allow-reordering=true !",
            &format!("udpsink host=127.0.0.1 port={port}"),
        ),
        true,
    );
    assert!(
        outcome.errors.is_empty(),
        "receiver errors: {:?}",
        outcome.errors
    );
    let got = outcome.video_pts.len();
    assert!(got < FRAMES as usize + 1, "no frame invented: {got}");
    // The loss really happened and was seen: otherwise this test proves nothing.
    let lost = outcome.depay_stats.get::<u64>("packets-lost").unwrap_or(0)
        + outcome
            .depay_stats
            .get::<u64>("frames-dropped")
            .unwrap_or(0);
    assert!(
        lost > 0,
        "netsim induced loss (depay stats {})",
        outcome.depay_stats
    );
    assert!(
        got >= (FRAMES as usize) / 3,
        "most frames survive 3% packet loss: {got} of {FRAMES} (depay stats {})",
        outcome.depay_stats
    );
    // Recovery: frames keep coming up to the end of the stream.
    let last = outcome
        .video_pts
        .iter()
        .flatten()
        .max()
        .copied()
        .expect("some PTS");
    let first = outcome
        .video_pts
        .iter()
        .flatten()
        .min()
        .copied()
        .expect("some PTS");
    let span = last - first;
    assert!(
        span >= gst::ClockTime::from_mseconds(u64::from(FRAMES - 2 * GOP) * 1000 / u64::from(FPS)),
        "frames arrive until near the end of the stream (span {span})"
    );
    assert!(outcome.audio_buffers > 0, "audio arrives");
}
