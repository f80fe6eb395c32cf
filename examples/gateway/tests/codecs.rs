//! Every camera the gateway meets, end to end: H.264, H.265 or no video, with G.711 A-law,
//! G.711 µ-law, AAC or no audio (11 cameras, PS muxed by psmux as gb28181sink sends it),
//! each read back by ffprobe from the gateway's RTSP (the camera's codecs passed through),
//! HLS and MP4 outputs (video passed through, audio as AAC).

mod common;
use common::*;

use gst::prelude::*;
use gst_ipcam_gateway::auth::basic_value;
use gst_ipcam_gateway::config::Config;
use gst_ipcam_gateway::gateway::Gateway;
use gst_ipcam_gateway::http;
use gst_ipcam_gateway::sim::{Clip, SimCamera, SimSettings, wait_until};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The codecs ffprobe decoded at least `min` frames of, sorted, once each (MPEG-TS lists its
/// streams again under their program).
fn decoded(v: &[(String, u64)], min: u64) -> Vec<String> {
    let mut c: Vec<String> = v
        .iter()
        .filter(|(_, n)| *n >= min)
        .map(|(c, _)| c.clone())
        .collect();
    c.sort();
    c.dedup();
    c
}

fn expect(video: Option<&str>, audio: &str) -> Vec<String> {
    let mut c: Vec<String> = video
        .into_iter()
        .chain(Some(audio))
        .map(String::from)
        .collect();
    c.retain(|s| !s.is_empty());
    c.sort();
    c
}

/// The codecs of the newest MP4 recording in `dir`, waiting (at most 10 s) until they are
/// `want`: a recording is finalized (moov written) after the channel is unmounted, by the
/// thread that ran it, so the file can still be growing when the test gets there.
fn last_mp4_codecs(dir: &Path, want: &[String]) -> Vec<String> {
    let mut got = Vec::new();
    wait_until(Duration::from_secs(10), || {
        got = match mp4_files(dir).pop() {
            Some(f) => decoded(&ffprobe_frames(&[], &f.to_string_lossy()), 1),
            None => Vec::new(),
        };
        got == want
    });
    got
}

/// A gateway configuration on loopback with HLS (and recording into `rec_dir`).
fn config(hls_dir: &Path, rec_dir: Option<&Path>) -> Config {
    Config {
        hls: true,
        hls_dir: hls_dir.to_path_buf(),
        record_dir: rec_dir.map(Path::to_path_buf),
        record_segment_s: 2,
        ..loopback_config("127.0.0.1")
    }
}

/// The newest segment of the channel's HLS playlist for which `ok` holds, waiting up to
/// `timeout`.
fn newest_segment(
    hls: SocketAddr,
    id: &str,
    timeout: Duration,
    mut ok: impl FnMut(&str) -> bool,
) -> Option<String> {
    let playlist = format!("/{id}/index.m3u8");
    let auth = basic_value(READER.0, READER.1);
    let mut segment = None;
    wait_until(timeout, || {
        segment = http::request(None, hls, &playlist, &[("Authorization", &auth)])
            .ok()
            .filter(|r| r.status == 200)
            .and_then(|r| {
                String::from_utf8_lossy(&r.body)
                    .lines()
                    .rfind(|l| l.ends_with(".ts"))
                    .map(String::from)
            })
            .filter(|seg| ok(seg));
        segment.is_some()
    });
    segment
}

fn settings(cfg: &Config, id: &str, audio: bool) -> SimSettings {
    SimSettings {
        server_ip: "127.0.0.1".into(),
        server_port: cfg.sip_port,
        server_id: cfg.server_id.clone(),
        device_id: id.to_string(),
        password: cfg.password.clone(),
        audio,
    }
}

#[test]
fn every_codec_combination_through_rtsp_hls_and_mp4() {
    let _serial = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let hls_dir = scratch("hls");
    let rec_dir = scratch("rec");
    let cfg = config(&hls_dir, Some(&rec_dir));
    let mut gw = Gateway::start(cfg.clone()).expect("gateway starts");
    let cfg = gw.config().clone();
    let hls = gw.hls_addr().unwrap();
    let combos: [(Option<&str>, Option<&str>); 11] = [
        (Some("h264"), Some("alaw")),
        (Some("h264"), Some("mulaw")),
        (Some("h264"), Some("aac")),
        (Some("h264"), None),
        (Some("h265"), Some("alaw")),
        (Some("h265"), Some("mulaw")),
        (Some("h265"), Some("aac")),
        (Some("h265"), None),
        (None, Some("alaw")),
        (None, Some("mulaw")),
        (None, Some("aac")),
    ];
    let mut failures = Vec::new();
    for (i, (video, audio)) in combos.into_iter().enumerate() {
        let what = format!("{video:?} + {audio:?}");
        let id = format!("340200000013200001{i:02}");
        let clip = Clip::encode_with(video, audio, 160, 120, 200, 2).expect("clip");
        let cam = SimCamera::start(&clip, &settings(&cfg, &id, audio.is_some())).expect("camera");
        assert!(
            wait_until(Duration::from_secs(10), || gw.channels().contains(&id)),
            "{what}: mounted"
        );
        let video_name = video.map(|v| if v == "h265" { "hevc" } else { "h264" });
        let rtsp_audio = match audio {
            Some("alaw") => "pcm_alaw",
            Some("mulaw") => "pcm_mulaw",
            Some("aac") => "aac",
            _ => "",
        };
        let hls_audio = if audio.is_some() { "aac" } else { "" };

        // RTSP: the camera's own codecs.
        let url = gw.url_with_credentials(&id, READER.0, READER.1);
        let got = decoded(
            &ffprobe_frames(&["-rtsp_transport", "tcp", "-read_intervals", "%+3"], &url),
            5,
        );
        if got != expect(video_name, rtsp_audio) {
            failures.push(format!("{what}: RTSP decoded {got:?}"));
        }

        // HLS: a segment with video as is and AAC.
        let segment = newest_segment(hls, &id, Duration::from_secs(20), |_| true);
        let got = match &segment {
            Some(seg) => decoded(
                &ffprobe_frames(
                    &[],
                    &format!("http://{}:{}@{hls}/{id}/{seg}", READER.0, READER.1),
                ),
                1,
            ),
            None => Vec::new(),
        };
        if got != expect(video_name, hls_audio) {
            let size = segment
                .as_ref()
                .and_then(|seg| std::fs::metadata(hls_dir.join(&id).join(seg)).ok())
                .map(|m| m.len());
            failures.push(format!(
                "{what}: HLS decoded {got:?} (segment {segment:?}, {size:?} bytes)"
            ));
        }

        // MP4: the camera leaves (BYE, unregister), its recording is finalized and plays.
        cam.stop();
        assert!(
            wait_until(Duration::from_secs(10), || !gw.channels().contains(&id)),
            "{what}: unmounted"
        );
        let got = last_mp4_codecs(&rec_dir.join(&id), &expect(video_name, hls_audio));
        if got != expect(video_name, hls_audio) {
            failures.push(format!("{what}: MP4 decoded {got:?}"));
        }
    }
    gw.stop();
    assert!(failures.is_empty(), "{failures:#?}");
    std::fs::remove_dir_all(&hls_dir).ok();
    std::fs::remove_dir_all(&rec_dir).ok();
}

/// A camera reconfigured mid-session from H.264 + G.711 to H.265 + G.711 (same session, no new
/// INVITE): the gateway follows it live. RTSP readers after the change get H.265, HLS and
/// the recording start new segments/files in H.265, the metrics count the change, and the
/// camera session was never restarted.
#[test]
fn codec_change_mid_session_is_followed_live() {
    let _serial = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let hls_dir = scratch("hls-change");
    let rec_dir = scratch("rec-change");
    let cfg = config(&hls_dir, Some(&rec_dir));
    let mut gw = Gateway::start(cfg.clone()).expect("gateway starts");
    let cfg = gw.config().clone();
    let hls = gw.hls_addr().unwrap();
    let id = "34020000001320000201";
    // 10 s of H.264 (from the camera's start, INVITE or not), then H.265 for ever.
    let first = Clip::encode_with(Some("h264"), Some("alaw"), 160, 120, 200, 10).expect("clip");
    let then = Clip::encode_with(Some("h265"), Some("alaw"), 176, 144, 200, 2).expect("clip");
    let cam =
        SimCamera::start_sequence(&[&first, &then], &settings(&cfg, id, true)).expect("camera");
    let path = |gw: &Gateway| gw.snapshot().paths.into_iter().find(|p| p.name == id);
    // HLS keeps the session up from the start: H.264 first.
    let before = newest_segment(hls, id, Duration::from_secs(20), |_| true)
        .map(|seg| {
            ffprobe_frames(
                &[],
                &format!("http://{}:{}@{hls}/{id}/{seg}", READER.0, READER.1),
            )
        })
        .unwrap_or_default();
    assert!(
        frames_of(&before, "h264") >= 1,
        "HLS before the change: {before:?}"
    );
    assert!(
        wait_until(Duration::from_secs(20), || path(&gw)
            .is_some_and(|p| p.stream_changes >= 1)),
        "the change is seen and counted"
    );

    let url = gw.url_with_credentials(id, READER.0, READER.1);
    let rtsp = ffprobe_frames(&["-rtsp_transport", "tcp", "-read_intervals", "%+3"], &url);
    // The newest segment once it is one written after the change: the one being written
    // when the change was counted may still be finished (and listed) afterwards, so the
    // test waits for a listed segment in H.265 (each listed segment probed once).
    let seg_url = |seg: &str| format!("http://{}:{}@{hls}/{id}/{seg}", READER.0, READER.1);
    let mut probed = std::collections::HashSet::new();
    let mut hls_after = Vec::new();
    newest_segment(hls, id, Duration::from_secs(20), |seg| {
        if probed.insert(seg.to_string()) {
            hls_after = ffprobe_frames(&[], &seg_url(seg));
        }
        frames_of(&hls_after, "hevc") >= 1
    });
    let p = path(&gw).expect("path");
    cam.stop();
    assert!(
        wait_until(Duration::from_secs(10), || !gw
            .channels()
            .contains(&id.to_string())),
        "unmounted"
    );
    let files = mp4_files(&rec_dir.join(id));
    let h264_mp4 = files
        .iter()
        .any(|f| frames_of(&ffprobe_frames(&[], &f.to_string_lossy()), "h264") >= 1);
    let last_mp4 = files
        .last()
        .map(|f| ffprobe_frames(&[], &f.to_string_lossy()))
        .unwrap_or_default();
    gw.stop();
    assert_eq!(p.invites, 1, "one camera session throughout");
    assert!(
        frames_of(&rtsp, "hevc") >= 5,
        "RTSP after the change: {rtsp:?}"
    );
    assert_eq!(frames_of(&rtsp, "h264"), 0, "{rtsp:?}");
    assert!(frames_of(&rtsp, "pcm_alaw") >= 5, "{rtsp:?}");
    assert!(
        frames_of(&hls_after, "hevc") >= 1,
        "HLS after the change: {hls_after:?}"
    );
    assert!(h264_mp4, "an H.264 MP4 before the change: {files:?}");
    assert!(frames_of(&last_mp4, "hevc") >= 1, "last MP4: {last_mp4:?}");
    std::fs::remove_dir_all(&hls_dir).ok();
    std::fs::remove_dir_all(&rec_dir).ok();
}

/// A camera whose GOP is 4000 s long (a live encoder that only makes a key frame when
/// asked): the first RTSP viewer joins mid-GOP, so the gateway has no key frame to start
/// with and no video caps (the parser waits for SPS/PPS). It asks the camera for one
/// (GB28181 IFameCmd through the SIP endpoint), gb28181sink passes it to the encoder as a
/// force-key-unit event, and the viewer decodes within seconds. Without the request the
/// viewer gets nothing (503 after the stream wait).
#[test]
fn long_gop_camera_is_asked_for_a_key_frame() {
    let _serial = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let hls_dir = scratch("hls-gop");
    let cfg = Config {
        hls: false,
        ..config(&hls_dir, None)
    };
    let mut gw = Gateway::start(cfg.clone()).expect("gateway starts");
    let cfg = gw.config().clone();
    let id = "34020000001320000301";
    let camera = gst::parse::launch(&format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=160,height=120,framerate=25/1 \
         ! x264enc name=enc tune=zerolatency speed-preset=ultrafast key-int-max=100000 bitrate=200 \
         ! video/x-h264,profile=baseline ! h264parse config-interval=-1 \
         ! video/x-h264,stream-format=byte-stream,alignment=au ! psmux \
         ! gb28181sink server-ip=127.0.0.1 server-port={} server-id={} device-id={id} \
           password={} keepalive-interval=20000",
        cfg.sip_port, cfg.server_id, cfg.password
    ))
    .expect("camera pipeline")
    .downcast::<gst::Pipeline>()
    .unwrap();
    // A viewer joining mid-GOP with no key frame anywhere: the encoder's first (and only)
    // key frame is dropped (the camera would otherwise send it from its GOP cache at INVITE),
    // and 75 frames (3 s) have left the encoder when the viewer comes.
    let frames = Arc::new(AtomicU64::new(0));
    let counter = frames.clone();
    camera
        .by_name("enc")
        .and_then(|e| e.static_pad("src"))
        .expect("encoder src pad")
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let key = info
                .buffer()
                .is_some_and(|b| !b.flags().contains(gst::BufferFlags::DELTA_UNIT));
            if n == 0 && key {
                gst::PadProbeReturn::Drop
            } else {
                gst::PadProbeReturn::Ok
            }
        });
    let bus = camera.bus().unwrap();
    camera.set_state(gst::State::Playing).expect("camera plays");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .channels()
            .contains(&id.to_string())),
        "mounted"
    );
    assert!(
        wait_until(Duration::from_secs(20), || frames.load(Ordering::Relaxed)
            >= 75),
        "the camera encodes"
    );
    let t = Instant::now();
    let url = gw.url_with_credentials(id, READER.0, READER.1);
    let rtsp = ffprobe_frames(&["-rtsp_transport", "tcp", "-read_intervals", "%+2"], &url);
    let took = t.elapsed();
    let requests = gw
        .snapshot()
        .paths
        .into_iter()
        .find(|p| p.name == id)
        .map(|p| p.key_frame_requests)
        .unwrap_or(0);
    let asked = std::iter::from_fn(|| bus.pop())
        .filter_map(|m| match m.view() {
            gst::MessageView::Element(e) => e.structure().map(|s| s.name().to_string()),
            _ => None,
        })
        .filter(|n| n == "gb28181-key-frame-requested")
        .count();
    camera.send_event(gst::event::Eos::new());
    let _ = bus.timed_pop_filtered(gst::ClockTime::from_seconds(2), &[gst::MessageType::Eos]);
    camera.set_state(gst::State::Null).unwrap();
    gw.stop();
    std::fs::remove_dir_all(&hls_dir).ok();
    eprintln!(
        "long GOP: {requests} request(s), {asked} reached the camera, ffprobe done in {took:?}: {rtsp:?}"
    );
    assert!(
        frames_of(&rtsp, "h264") >= 10,
        "decoded after {took:?}: {rtsp:?}"
    );
    assert!(took < Duration::from_secs(12), "{took:?}");
    assert!(requests >= 1, "the gateway asked for a key frame");
    assert!(asked >= 1, "the camera got the request");
}

/// `gb28181sink` settings of a test camera registering with `cfg`'s gateway.
fn sink_props(cfg: &Config, id: &str) -> String {
    format!(
        "gb28181sink name=sink server-ip=127.0.0.1 server-port={} server-id={} device-id={id} \
         password={} keepalive-interval=20000",
        cfg.sip_port, cfg.server_id, cfg.password
    )
}

/// A camera whose PS comes from a file written by another muxer (ffmpeg): the file is cut
/// into frames at each pack that starts a video access unit (a PES with a timestamp), each
/// timestamped with its DTS (else PTS), and sent paced through gb28181sink.
fn file_camera(cfg: &Config, id: &str, ps: &[u8]) -> gst::Pipeline {
    use gstmpegps::demux::scan::{first_pack, scan_pts};
    let mut packs = Vec::new();
    let mut at = first_pack(ps).expect("a pack");
    while let Some(next) = first_pack(&ps[at + 4..]) {
        packs.push(&ps[at..at + 4 + next]);
        at += 4 + next;
    }
    packs.push(&ps[at..]);
    let video_ts = |pack: &[u8]| {
        let mut ts = None;
        scan_pts(pack, |f| {
            if gstmpegps::ps::is_video_stream_id(f.stream_id) {
                ts = Some(f.dts.unwrap_or(f.pts));
            }
            ts.is_none()
        });
        ts
    };
    let mut frames: Vec<(u64, Vec<u8>)> = Vec::new();
    for pack in packs {
        match (video_ts(pack), frames.last_mut()) {
            (None, Some((_, f))) => f.extend_from_slice(pack),
            (Some(ts), _) => frames.push((ts, pack.to_vec())),
            (None, None) => frames.push((0, pack.to_vec())),
        }
    }
    let base = frames.iter().map(|(t, _)| *t).min().unwrap_or(0);
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src is-live=false format=time \
         caps=video/mpeg,systemstream=true,mpegversion=2 ! clocksync ! {}",
        sink_props(cfg, id)
    ))
    .expect("file camera")
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    src.set_max_bytes(64 * 1024 * 1024);
    for (ts, data) in frames {
        let mut b = gst::Buffer::from_mut_slice(data);
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_nseconds((ts - base) * 100_000 / 9));
        src.push_buffer(b).expect("queued");
    }
    src.end_of_stream().expect("eos queued");
    pipeline
}

/// Cameras whose PS was muxed by others: stock GStreamer `mpegpsmux` (H.264 + ADTS AAC, live:
/// given raw AAC it writes broken ADTS headers that ffprobe cannot decode either) and
/// ffmpeg (`-f mpeg` H.265, `-f vob` H.264, video only: ffmpeg's PS muxer takes no G.711 or
/// AAC, stock mpegpsmux no H.265 and no G.711), sent through gb28181sink; read back by
/// ffprobe over RTSP, HLS and (for the first) MP4.
#[test]
fn stock_and_ffmpeg_muxed_cameras() {
    let _serial = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let hls_dir = scratch("hls-stock");
    let rec_dir = scratch("rec-stock");
    let cfg = config(&hls_dir, Some(&rec_dir));
    let mut gw = Gateway::start(cfg.clone()).expect("gateway starts");
    let cfg = gw.config().clone();
    let hls = gw.hls_addr().unwrap();
    let ffmpeg_ps = |format: &str, codec: &str| {
        let out = rec_dir.join(format!("camera.{format}.{codec}.ps"));
        let ok = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc=size=160x120:rate=25")
            .args(["-t", "30", "-c:v", codec, "-g", "25", "-pix_fmt", "yuv420p"])
            .args(["-b:v", "200k", "-f", format])
            .arg(&out)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ffmpeg -f {format} {codec}");
        std::fs::read(&out).expect("ffmpeg's PS")
    };
    let cameras: [(&str, &str, Vec<&str>, Vec<&str>); 3] = [
        (
            "mpegpsmux H.264 + AAC",
            "34020000001320000401",
            vec!["aac", "h264"],
            vec!["aac", "h264"],
        ),
        (
            "ffmpeg -f mpeg H.265",
            "34020000001320000402",
            vec!["hevc"],
            vec!["hevc"],
        ),
        (
            "ffmpeg -f vob H.264",
            "34020000001320000403",
            vec!["h264"],
            vec!["h264"],
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, id, rtsp_codecs, hls_codecs)) in cameras.into_iter().enumerate() {
        let camera = match i {
            0 => gst::parse::launch(&format!(
                "videotestsrc is-live=true pattern=ball ! video/x-raw,width=160,height=120,framerate=25/1 \
                 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate=200 \
                 ! h264parse ! mpegpsmux name=m ! {} \
                 audiotestsrc is-live=true wave=sine ! audio/x-raw,rate=16000,channels=1 \
                 ! avenc_aac bitrate=32000 ! aacparse ! audio/mpeg,stream-format=adts ! m.",
                sink_props(&cfg, id)
            ))
            .expect("mpegpsmux camera")
            .downcast::<gst::Pipeline>()
            .unwrap(),
            1 => file_camera(&cfg, id, &ffmpeg_ps("mpeg", "libx265")),
            _ => file_camera(&cfg, id, &ffmpeg_ps("vob", "libx264")),
        };
        camera.set_state(gst::State::Playing).expect("camera plays");
        assert!(
            wait_until(Duration::from_secs(10), || gw
                .channels()
                .contains(&id.to_string())),
            "{what}: mounted"
        );
        let url = gw.url_with_credentials(id, READER.0, READER.1);
        let got = decoded(
            &ffprobe_frames(&["-rtsp_transport", "tcp", "-read_intervals", "%+3"], &url),
            5,
        );
        if got != rtsp_codecs {
            failures.push(format!("{what}: RTSP decoded {got:?}"));
        }
        let got = newest_segment(hls, id, Duration::from_secs(20), |_| true)
            .map(|seg| {
                decoded(
                    &ffprobe_frames(
                        &[],
                        &format!("http://{}:{}@{hls}/{id}/{seg}", READER.0, READER.1),
                    ),
                    1,
                )
            })
            .unwrap_or_default();
        if got != hls_codecs {
            failures.push(format!("{what}: HLS decoded {got:?}"));
        }
        camera.send_event(gst::event::Eos::new());
        if let Some(bus) = camera.bus() {
            let _ = bus.timed_pop_filtered(
                gst::ClockTime::from_seconds(2),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            );
        }
        camera.set_state(gst::State::Null).unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || !gw
                .channels()
                .contains(&id.to_string())),
            "{what}: unmounted"
        );
        if i == 0 {
            let want: Vec<String> = hls_codecs.iter().map(|c| c.to_string()).collect();
            let got = last_mp4_codecs(&rec_dir.join(id), &want);
            if got != hls_codecs {
                failures.push(format!("{what}: MP4 decoded {got:?}"));
            }
        }
    }
    gw.stop();
    assert!(failures.is_empty(), "{failures:#?}");
    std::fs::remove_dir_all(&hls_dir).ok();
    std::fs::remove_dir_all(&rec_dir).ok();
}

/// A camera that changes its picture size mid-session (H.264 160x120 -> 320x240): an RTSP
/// viewer watching across the change keeps playing (its caps follow, no new session) and
/// decodes both sizes.
#[test]
fn size_change_keeps_rtsp_viewers_playing() {
    let _serial = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let hls_dir = scratch("hls-size");
    let cfg = Config {
        hls: false,
        ..config(&hls_dir, None)
    };
    let mut gw = Gateway::start(cfg.clone()).expect("gateway starts");
    let cfg = gw.config().clone();
    let id = "34020000001320000501";
    let small = Clip::encode_with(Some("h264"), None, 160, 120, 200, 2).expect("clip");
    let large = Clip::encode_with(Some("h264"), None, 320, 240, 300, 2).expect("clip");
    // The small picture until the viewer has had some of it, then the large one.
    let cam =
        SimCamera::start_stepped(&[&small, &large], &settings(&cfg, id, false)).expect("camera");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .channels()
            .contains(&id.to_string())),
        "mounted"
    );
    let url = gw.url_with_credentials(id, READER.0, READER.1);
    let viewer = std::process::Command::new("timeout")
        .args([
            "60",
            "ffmpeg",
            "-hide_banner",
            "-rtsp_transport",
            "tcp",
            "-i",
            &url,
        ])
        .args(["-t", "8", "-vf", "showinfo", "-f", "null", "-"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ffmpeg runs");
    let sent = |gw: &Gateway| {
        gw.snapshot()
            .paths
            .into_iter()
            .find(|p| p.name == id)
            .map_or(0, |p| p.bytes_sent)
    };
    // A second and a half of the small picture sent to the viewer (RTP headers on top).
    let enough = small.bitrate_bps() * 3 / 16;
    assert!(
        wait_until(Duration::from_secs(30), || sent(&gw) > enough),
        "the viewer gets the small picture ({} of {enough} bytes)",
        sent(&gw)
    );
    cam.next_clip();
    let out = viewer.wait_with_output().expect("ffmpeg ends");
    let log = String::from_utf8_lossy(&out.stderr);
    let frames = |size: &str| {
        log.lines()
            .filter(|l| l.contains(&format!(" s:{size} ")))
            .count()
    };
    let (before, after) = (frames("160x120"), frames("320x240"));
    let p = gw.snapshot().paths.into_iter().find(|p| p.name == id);
    cam.stop();
    gw.stop();
    std::fs::remove_dir_all(&hls_dir).ok();
    assert!(
        before >= 10 && after >= 10,
        "one viewer across the change: {before} frames 160x120, {after} frames 320x240"
    );
    let p = p.expect("path");
    assert_eq!(p.invites, 1);
    assert!(p.stream_changes >= 1);
}
