//! Playback speed that players follow (GB/T 28181 §9.8, MANSRTSP in SIP INFO): a simulated
//! camera that honours Scale and Range, gb28181src scaling the camera's timestamps so that a
//! downstream syncing to the clock plays at the speed asked for, and a device that refuses
//! junk MANSRTSP (400) and keeps serving. All over loopback.

mod common;
use common::*;

use gst::prelude::*;
use gst_ipcam_gateway::sim::{Clip, SimCamera, SimSettings, wait_until};
use gstgb28181::core::mansrtsp::Command;
use gstgb28181::core::media::SsrcPolicy;
use gstgb28181::core::registrar::RegistrarConfig;
use gstgb28181::core::sdp::{MediaTransport, SessionKind};
use gstgb28181::endpoint::{Endpoint, EndpointKey, SipTransport};
use gstgb28181::platform::{self, Call, CallParams, ControlError};
use std::time::{Duration, Instant};

/// The registrar's default password and the platform ID cameras register to.
const PASSWORD: &str = "12345678";
const SERVER_ID: &str = "34020000002000000001";

fn camera(port: u16, id: &str) -> SimCamera {
    // Two seconds in a loop, a key frame a second.
    let clip = Clip::encode("h264", 160, 120, 100, 2).unwrap();
    SimCamera::start(
        &clip,
        &SimSettings {
            server_ip: "127.0.0.1".into(),
            server_port: port,
            server_id: SERVER_ID.into(),
            device_id: id.into(),
            password: PASSWORD.into(),
            audio: false,
        },
    )
    .unwrap()
}

/// The sink's `gb28181-playback-control` messages so far: (method, scale, npt).
fn controls(bus: &gst::Bus, out: &mut Vec<(String, Option<f64>, Option<f64>)>) {
    while let Some(m) = bus.pop_filtered(&[gst::MessageType::Element]) {
        if let Some(s) = m.structure()
            && s.name() == "gb28181-playback-control"
        {
            out.push((
                s.get::<String>("method").unwrap(),
                s.get::<f64>("scale").ok(),
                s.get::<f64>("npt").ok(),
            ));
        }
    }
}

/// gb28181src in a playback session at scale 2 (the `playback-play` signal): the camera's
/// content time advances twice as fast as the wall clock while psdemux's output timestamps
/// (from the PS timestamps gb28181src rewrote) advance with the wall clock; a seek event
/// (position) makes the camera jump, gb28181src marks the jump DISCONT and its output time
/// does not go back; PLAYING -> PAUSED -> PLAYING sends PAUSE and PLAY.
#[test]
fn gb28181src_playback_at_scale_2_follows_the_clock() {
    let _g = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let device = "34020000001320000801";
    let pipeline = gst::parse::launch(&format!(
        "gb28181src name=src sip-address=127.0.0.1 sip-port=0 password={PASSWORD} \
         device-id={device} session-kind=playback start-time=1700000000 end-time=1700003600 \
         wait-timeout=20 ! psdemux ! appsink name=out sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline.by_name("src").unwrap();
    let from_src = record(&src.static_pad("src").unwrap());
    let out = pipeline
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    let played = record(&out.static_pad("sink").unwrap());
    out.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(|s| {
                s.pull_sample()
                    .map(|_| gst::FlowSuccess::Ok)
                    .map_err(|_| gst::FlowError::Eos)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let port = src.property::<u32>("sip-port") as u16;
    let cam = camera(port, device);
    let content = record(&cam.sink().static_pad("sink").unwrap());
    let cam_bus = cam.pipeline().bus().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || snapshot(&played).len() >= 25),
        "playback started: {} frames",
        snapshot(&played).len()
    );

    // Scale 2: the device answers 200, then sends twice as fast.
    assert!(src.emit_by_name::<bool>("playback-play", &[&2.0f64, &-1.0f64]));
    let t0 = Instant::now();
    let stats = src.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<f64>("scale").unwrap(), 2.0, "{stats}");
    assert_plays_at_2x(&content, &played, t0 + Duration::from_millis(1500));

    // A seek event (position 60 s, rate as it is): the camera jumps, the output goes on.
    let before_seek = snapshot(&from_src).len();
    assert!(src.send_event(gst::event::Seek::new(
        2.0,
        gst::SeekFlags::empty(),
        gst::SeekType::Set,
        gst::ClockTime::from_seconds(60),
        gst::SeekType::None,
        gst::ClockTime::NONE,
    )));
    assert!(
        wait_until(Duration::from_secs(10), || snapshot(&content)
            .last()
            .is_some_and(|c| c.1 >= 59_000_000_000)),
        "the camera jumped to 60 s"
    );
    assert!(
        wait_until(Duration::from_secs(10), || snapshot(&from_src)
            [before_seek..]
            .iter()
            .any(|s| s.2)),
        "the jump is a DISCONT buffer"
    );

    // The pipeline pauses and plays again: PAUSE and PLAY reach the camera.
    pipeline.set_state(gst::State::Paused).unwrap();
    let mut seen = vec![];
    assert!(
        wait_until(Duration::from_secs(5), || {
            controls(&cam_bus, &mut seen);
            seen.iter().any(|c| c.0 == "PAUSE")
        }),
        "{seen:?}"
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || {
            controls(&cam_bus, &mut seen);
            seen.last().is_some_and(|c| c.0 == "PLAY")
        }),
        "{seen:?}"
    );
    assert_eq!(seen[0], ("PLAY".to_string(), Some(2.0), None), "{seen:?}");
    assert_eq!(seen[1], ("PLAY".to_string(), None, Some(60.0)), "{seen:?}");
    let n = snapshot(&played).len();
    assert!(
        wait_until(Duration::from_secs(10), || snapshot(&played).len()
            >= n + 25),
        "playing again"
    );
    pipeline.set_state(gst::State::Null).unwrap();
    drop(cam);

    // Output time never went back (psdemux's and gb28181src's).
    for s in [&played, &from_src] {
        let v = snapshot(s);
        assert!(v.windows(2).all(|w| w[1].1 >= w[0].1), "time went back");
    }
}

/// A platform peer in the playback dialog sends MANSRTSP with a huge, NaN, negative or junk
/// Scale, a junk Range, an unknown method, no CSeq or an oversized body: the device answers
/// 400 to each, tells its application nothing, and keeps streaming; a valid PLAY is then
/// answered 200. The platform side refuses to build an invalid request at all.
#[test]
fn device_refuses_junk_mansrtsp_and_keeps_serving() {
    let _g = serial();
    gst_ipcam_gateway::gateway::init().unwrap();
    let key = EndpointKey {
        address: "127.0.0.1".into(),
        port: 0,
        transport: SipTransport::Udp,
    };
    let ep = Endpoint::obtain(&key, RegistrarConfig::default()).unwrap();
    let device = "34020000001320000802";
    let cam = camera(ep.local_addr().port(), device);
    let params = CallParams {
        server_id: SERVER_ID.into(),
        domain: "3402000000".into(),
        device_id: device.into(),
        channel_id: device.into(),
        kind: SessionKind::Playback,
        transport: MediaTransport::Udp,
        media_address: Some("127.0.0.1".parse().unwrap()),
        sdp_address: None,
        ports: vec![0],
        start: 1_700_000_000,
        end: 1_700_003_600,
        download_speed: 1,
        wait_timeout: Duration::from_secs(20),
        buffer_size: 0,
        max_frame_size: 4 * 1024 * 1024,
        ssrc_policy: SsrcPolicy::Dialog,
    };
    let mut call = Call::start(&ep, &params, &|| false, &mut |_| {}).expect("call set up");
    let mut receiver = call.receiver.take().unwrap();
    let mut frames = |n: usize| {
        let mut got = 0;
        let end = Instant::now() + Duration::from_secs(10);
        while got < n && Instant::now() < end {
            if let Ok(Some(_)) = receiver.next_frame(Duration::from_millis(200)) {
                got += 1;
            }
        }
        got
    };
    assert_eq!(frames(10), 10, "streaming");
    let huge = format!(
        "PLAY MANSRTSP/1.0\r\nCSeq: 9\r\nScale: 2{}\r\n\r\n",
        "0".repeat(2000)
    );
    let attacks = [
        "PLAY MANSRTSP/1.0\r\nCSeq: 9\r\nScale: 1e308\r\n\r\n",
        "PLAY MANSRTSP/1.0\r\nCSeq: 9\r\nScale: NaN\r\n\r\n",
        "PLAY MANSRTSP/1.0\r\nCSeq: 9\r\nScale: -2\r\n\r\n",
        "PLAY MANSRTSP/1.0\r\nCSeq: 9\r\nScale: fast\r\n\r\n",
        "PLAY MANSRTSP/1.0\r\nCSeq: 9\r\nRange: npt=-1e9-\r\n\r\n",
        "TEARDOWN MANSRTSP/1.0\r\nCSeq: 9\r\n\r\n",
        "PLAY MANSRTSP/1.0\r\nScale: 2\r\n\r\n",
        huge.as_str(),
    ];
    for body in attacks {
        let info = call.dialog.info(body);
        match platform::send_control(&ep, &info, call.dest, Duration::from_secs(4), &|| false) {
            Err(ControlError::Refused(400)) => {}
            other => panic!("{body:?}: {other:?}"),
        }
    }
    assert_eq!(frames(10), 10, "still streaming after the junk");
    // Refused before anything is sent.
    for bad in [1e308, f64::NAN, -2.0, 3.0] {
        assert!(matches!(
            call.control_info(Command::Play {
                npt: None,
                scale: Some(bad)
            }),
            Err(ControlError::Invalid("scale"))
        ));
    }
    let info = call
        .control_info(Command::Play {
            npt: None,
            scale: Some(4.0),
        })
        .unwrap();
    platform::send_control(&ep, &info, call.dest, Duration::from_secs(4), &|| false)
        .expect("a valid PLAY is answered 200");
    let bus = cam.pipeline().bus().unwrap();
    let mut seen = vec![];
    assert!(
        wait_until(Duration::from_secs(5), || {
            controls(&bus, &mut seen);
            !seen.is_empty()
        }),
        "the valid PLAY reached the camera"
    );
    assert_eq!(
        seen,
        [("PLAY".to_string(), Some(4.0), None)],
        "only the valid one"
    );
    assert_eq!(frames(10), 10, "streaming at 4x");
    call.hang_up(&ep);
    drop(cam);
}
