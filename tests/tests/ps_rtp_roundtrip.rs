//! Round trips through every element of the mpegps plugin over loopback:
//! psmux → rtppspay → (udpsink | rtpstreampay ! tcpserversink) → … → rtppsdepay → psdemux,
//! decoded by stock avdec_h264. Clean runs must deliver every frame; runs with induced loss,
//! duplication and reordering (a seeded relay: the same packets on every run) must keep
//! running and recover at the next key frame. Every wait is on an event or a count.

use gst::prelude::*;
use gst_ipcam_tests::{
    ImpairStats, Impairment, UdpRelay, by_name, count_appsink, count_buffers, init, launch,
    start_pipeline, udpsrc_port, wait_for_eos, wait_until,
};
use std::sync::atomic::Ordering;
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
         m. ! rtppspay name=pay mtu=1400 ! {network} {sink}",
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

/// Runs the camera to EOS, then the receiver until it has what was sent, and stops it.
fn finish(
    rx: gst::Pipeline,
    cam: gst::Pipeline,
    delivered: impl FnOnce(&gst::Pipeline) -> bool,
) -> Outcome {
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
    let all_in = delivered(&rx);
    // EOS drains the jitterbuffer and the decoders.
    rx.send_event(gst::event::Eos::new());
    let rx_log = wait_for_eos(&rx, Duration::from_secs(10));
    let depay_stats = by_name(&rx, "depay").property::<gst::Structure>("stats");
    rx.set_state(gst::State::Null).unwrap();
    assert!(all_in, "the receiver did not get every packet sent");
    let video_pts = video.lock().unwrap().clone();
    let audio_buffers = audio.lock().unwrap().len();
    Outcome {
        video_pts,
        audio_buffers,
        depay_stats,
        errors: rx_log.errors,
    }
}

/// Receiver on a UDP port it bound itself; the camera sends to it, through a seeded
/// impairment relay if given. Returns once the receiver got every datagram sent.
fn run_udp(impairment: Option<Impairment>) -> (Outcome, Option<ImpairStats>) {
    init();
    let rx = start_pipeline(&receiver(&format!(
        "udpsrc name=udpsrc address=127.0.0.1 port=0 caps=\"{RTP_CAPS}\""
    )));
    let udpsrc = by_name(&rx, "udpsrc");
    let port = udpsrc_port(&udpsrc);
    let received = count_buffers(&udpsrc, "src");
    let relay = impairment.map(|i| UdpRelay::start(port, i));
    let to = relay.as_ref().map_or(port, UdpRelay::port);
    let cam = launch(&camera("", &format!("udpsink host=127.0.0.1 port={to}")));
    let sent = count_buffers(&by_name(&cam, "pay"), "src");
    cam.set_state(gst::State::Playing).unwrap();
    let mut stats = None;
    let outcome = finish(rx, cam, |_| {
        let expected = match relay {
            Some(relay) => {
                let s = relay.finish();
                stats = Some(s);
                s.forwarded
            }
            None => sent.load(Ordering::SeqCst),
        };
        wait_until(Duration::from_secs(10), || {
            received.load(Ordering::SeqCst) >= expected
        })
    });
    (outcome, stats)
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
    let (outcome, _) = run_udp(None);
    assert_clean(&outcome);
}

#[test]
fn tcp_rfc4571_clean_every_frame_arrives() {
    init();
    // The camera listens (TCP active from the platform's point of view), the receiver connects.
    let cam = launch(&camera(
        "rtpstreampay !",
        "tcpserversink name=server host=127.0.0.1 port=0 sync-method=burst-keyframe",
    ));
    let muxed = count_buffers(&by_name(&cam, "m"), "src");
    cam.set_state(gst::State::Playing).unwrap();
    let server = by_name(&cam, "server");
    assert!(wait_until(Duration::from_secs(10), || server
        .property::<i32>("current-port")
        > 0));
    let port = server.property::<i32>("current-port");
    // Join after the first GOP: the receiver must start at a key frame.
    assert!(wait_until(Duration::from_secs(10), || muxed
        .load(Ordering::SeqCst)
        > GOP as usize + 5));
    let rx = start_pipeline(&receiver(&format!(
        "tcpclientsrc host=127.0.0.1 port={port} ! application/x-rtp-stream,media=video,clock-rate=90000,encoding-name=MP2P,payload=96 ! rtpstreamdepay"
    )));
    let outcome = finish(rx, cam, |_| true);
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
    let (outcome, impaired) = run_udp(Some(Impairment {
        drop: 0.03,
        duplicate: 0.03,
        reorder: 0.05,
        spare_first: 0,
        seed: 28181,
        ..Impairment::default()
    }));
    let impaired = impaired.expect("relay stats");
    assert!(
        impaired.dropped > 0 && impaired.duplicated > 0 && impaired.reordered > 0,
        "{impaired:?}"
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
        "the receiver saw the loss (relay {impaired:?}, depay stats {})",
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
        // First to last frame of the stream: FRAMES - 1 intervals; at most the first and
        // the last GOP lost.
        span >= gst::ClockTime::from_mseconds(
            u64::from(FRAMES - 1 - 2 * GOP) * 1000 / u64::from(FPS)
        ),
        "frames arrive until near the end of the stream (span {span})"
    );
    assert!(outcome.audio_buffers > 0, "audio arrives");
}
