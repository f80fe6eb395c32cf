//! Real pipelines: stock x264enc + mpegpsmux as the PS source, rtppspay over UDP and over TCP
//! (RFC 4571 with stock rtpstreampay/rtpstreamdepay), rtppsdepay into stock mpegpsdemux,
//! h264parse and avdec_h264; ffprobe reads the depayloaded PS as an independent check.
//! Network on 127.0.0.1 only, ports bound to 0 and read back, every wait bounded and on an
//! event or a count; loss and reordering from a seeded relay (the same on every run).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;
use gst_ipcam_testutil::{
    Impairment, UdpRelay, assert_no_error, by_name, collect_bytes, count_buffers, expect_eos,
    init_with, launch, pcap_udp, udpsrc_port, wait_until,
};

fn init() {
    init_with(|| gstmpegps::plugin_register_static().expect("register mpegps"));
}

const RTP_CAPS: &str = "application/x-rtp, media=(string)video, clock-rate=(int)90000, encoding-name=(string)MP2P, payload=(int)96";

fn h264_ps_source(frames: u32, live: bool) -> String {
    format!(
        "videotestsrc is-live={live} num-buffers={frames} \
         ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 bitrate=256 ! mpegpsmux"
    )
}

fn depay_stats(pipeline: &gst::Pipeline) -> gst::Structure {
    by_name(pipeline, "depay").property::<gst::Structure>("stats")
}

/// ffprobe's view of a PS file: (codec name, frames read) of every stream, sorted.
fn ffprobe_streams(path: &std::path::Path) -> Vec<(String, usize)> {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames"])
        .args([
            "-show_entries",
            "stream=codec_name,nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut streams: Vec<_> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (codec, frames) = line
                .split_once(',')
                .unwrap_or_else(|| panic!("ffprobe said {text:?}"));
            (
                codec.to_string(),
                frames.trim().parse().expect("frame count"),
            )
        })
        .collect();
    streams.sort();
    streams
}

/// PS from stock mpegpsmux through rtppspay, RFC 4571 over TCP (stock rtpstreampay,
/// tcpclientsink, tcpserversrc, rtpstreamdepay) and rtppsdepay: the depayloaded bytes must
/// equal the payloader's input, stock mpegpsdemux must decode every video frame, and ffprobe
/// must read the streams from the depayloaded bytes. Returns ffprobe's view.
fn tcp_round_trip(source: &str, video_frames: usize) -> Vec<(String, usize)> {
    init();
    let receiver = launch(
        "tcpserversrc name=src host=127.0.0.1 port=0 \
         ! application/x-rtp-stream, media=(string)video, clock-rate=(int)90000, encoding-name=(string)MP2P \
         ! rtpstreamdepay ! rtppsdepay name=depay ! mpegpsdemux ! h264parse ! avdec_h264 \
         ! fakesink name=sink sync=false",
    );
    let received = collect_bytes(&by_name(&receiver, "depay"), "src");
    let decoded = count_buffers(&by_name(&receiver, "sink"), "sink");
    receiver.set_state(gst::State::Playing).unwrap();
    let src = by_name(&receiver, "src");
    assert!(wait_until(Duration::from_secs(5), || src
        .property::<i32>("current-port")
        > 0));
    let port = src.property::<i32>("current-port");

    let sender = launch(&format!(
        "{source} ! rtppspay name=pay ! rtpstreampay ! tcpclientsink host=127.0.0.1 port={port}"
    ));
    let sent = collect_bytes(&by_name(&sender, "pay"), "sink");
    sender.set_state(gst::State::Playing).unwrap();
    expect_eos(&sender, Duration::from_secs(20));
    sender.set_state(gst::State::Null).unwrap();
    expect_eos(&receiver, Duration::from_secs(20));
    receiver.set_state(gst::State::Null).unwrap();

    let sent = sent.lock().unwrap().clone();
    let received = received.lock().unwrap().clone();
    assert!(sent.len() > 10_000, "sent {} bytes", sent.len());
    assert!(
        sent == received,
        "PS bytes differ: sent {}, received {}",
        sent.len(),
        received.len()
    );
    assert_eq!(decoded.load(Ordering::SeqCst), video_frames);
    let stats = depay_stats(&receiver);
    assert_eq!(stats.get::<u64>("packets-lost").unwrap(), 0);
    assert_eq!(stats.get::<u64>("frames-dropped").unwrap(), 0);

    let path = std::env::temp_dir().join(format!(
        "rtpps-tcp-{}-{:?}.mpg",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&path, &received).unwrap();
    let streams = ffprobe_streams(&path);
    let _ = std::fs::remove_file(&path);
    streams
}

#[test]
fn tcp_rfc4571_round_trip_is_byte_exact() {
    const FRAMES: usize = 30;
    let streams = tcp_round_trip(&h264_ps_source(FRAMES as u32, false), FRAMES);
    assert_eq!(streams, vec![("h264".to_string(), FRAMES)]);
}

#[test]
fn tcp_rfc4571_round_trip_with_audio() {
    const FRAMES: usize = 30;
    let source = format!(
        "audiotestsrc num-buffers=20 ! lamemp3enc ! m.  {} name=m",
        h264_ps_source(FRAMES as u32, false)
    );
    let streams = tcp_round_trip(&source, FRAMES);
    // 20 buffers of 1024 samples are about 18 MP3 frames of 1152.
    assert!(
        matches!(&streams[..], [(h264, FRAMES), (mp3, n)] if h264 == "h264" && mp3 == "mp3" && *n >= 15),
        "ffprobe: {streams:?}"
    );
}

/// Sends the sender's RTP to the receiver's `udpsrc name=udpsrc port=0` (through `relay`'s
/// impairment if given) until EOS, waits until the receiver got every datagram sent, then
/// drains it with EOS. `sender` ends in `udpsink name=out` and has `rtppspay name=pay`.
fn udp_run(sender: &str, receiver: &gst::Pipeline, impairment: Option<Impairment>) -> usize {
    let udpsrc = by_name(receiver, "udpsrc");
    let port = udpsrc_port(&udpsrc);
    let received = count_buffers(&udpsrc, "src");
    let relay = impairment.map(|i| UdpRelay::start(port, i));
    let to = relay.as_ref().map_or(port, UdpRelay::port);
    let sender = launch(&format!(
        "{sender} ! udpsink host=127.0.0.1 port={to} sync=false"
    ));
    let sent = count_buffers(&by_name(&sender, "pay"), "src");
    sender.set_state(gst::State::Playing).unwrap();
    expect_eos(&sender, Duration::from_secs(20));
    sender.set_state(gst::State::Null).unwrap();
    let (expected, dropped) = match relay {
        Some(relay) => {
            let stats = relay.finish();
            assert!(
                stats.dropped > 0 && stats.reordered > 0,
                "the relay impaired nothing: {stats:?}"
            );
            (stats.forwarded, stats.dropped)
        }
        None => (sent.load(Ordering::SeqCst), 0),
    };
    assert!(
        wait_until(Duration::from_secs(10), || received.load(Ordering::SeqCst)
            >= expected),
        "received {} of {expected} datagrams",
        received.load(Ordering::SeqCst)
    );
    // EOS after the last datagram: the jitterbuffer and the demuxer drain.
    receiver.send_event(gst::event::Eos::new());
    expect_eos(receiver, Duration::from_secs(10));
    dropped
}

#[test]
fn udp_with_jitterbuffer_decodes_frames() {
    init();
    const FRAMES: usize = 30;
    let receiver = launch(&format!(
        "udpsrc name=udpsrc address=127.0.0.1 port=0 caps=\"{RTP_CAPS}\" \
         ! rtpjitterbuffer latency=100 ! rtppsdepay name=depay ! mpegpsdemux ! h264parse \
         ! avdec_h264 ! fakesink name=sink sync=false"
    ));
    let decoded = count_buffers(&by_name(&receiver, "sink"), "sink");
    receiver.set_state(gst::State::Playing).unwrap();
    udp_run(
        &format!(
            "{} ! rtppspay name=pay",
            h264_ps_source(FRAMES as u32, true)
        ),
        &receiver,
        None,
    );
    assert_no_error(&receiver);
    receiver.set_state(gst::State::Null).unwrap();
    let n = decoded.load(Ordering::SeqCst);
    assert!(n >= FRAMES - 1, "decoded {n} of {FRAMES}");
    assert_eq!(
        depay_stats(&receiver).get::<u64>("frames-dropped").unwrap(),
        0
    );
}

/// Seeded loss and reordering after the first 40 packets (mpegpsdemux cannot recover from a
/// lost first PSM): the receiver keeps going, drops what is broken and keeps producing frames.
fn udp_with_loss(jitterbuffer: bool) {
    init();
    const FRAMES: usize = 60;
    let jb = if jitterbuffer {
        "rtpjitterbuffer latency=60 ! "
    } else {
        ""
    };
    let receiver = launch(&format!(
        "udpsrc name=udpsrc address=127.0.0.1 port=0 caps=\"{RTP_CAPS}\" \
         ! {jb}rtppsdepay name=depay ! mpegpsdemux ! h264parse ! fakesink name=sink sync=false"
    ));
    let depay = by_name(&receiver, "depay");
    let pushed = count_buffers(&depay, "src");
    let parsed = count_buffers(&by_name(&receiver, "sink"), "sink");
    receiver.set_state(gst::State::Playing).unwrap();
    let dropped_by_relay = udp_run(
        &format!(
            "{} ! rtppspay name=pay mtu=500",
            h264_ps_source(FRAMES as u32, true)
        ),
        &receiver,
        Some(Impairment {
            drop: 0.03,
            duplicate: 0.0,
            reorder: 0.03,
            spare_first: 40,
            seed: if jitterbuffer { 2 } else { 1 },
            ..Impairment::default()
        }),
    );
    assert_no_error(&receiver);
    receiver.set_state(gst::State::Null).unwrap();

    let stats = depay_stats(&receiver);
    let lost =
        stats.get::<u64>("packets-lost").unwrap() + stats.get::<u64>("packets-late").unwrap();
    let dropped = stats.get::<u64>("frames-dropped").unwrap();
    let pushed = pushed.load(Ordering::SeqCst);
    let parsed = parsed.load(Ordering::SeqCst);
    eprintln!(
        "jitterbuffer {jitterbuffer}: relay dropped {dropped_by_relay}; {stats}; {pushed} PS frames, {parsed} H.264 AUs"
    );
    assert!(lost > 0 && dropped > 0, "losses not seen: {stats}");
    // Most of the 60 frames (about 3 packets each) survive 6% disruption.
    assert!(pushed >= 30, "only {pushed} of {FRAMES} frames");
    assert!(parsed >= 30, "only {parsed} of {FRAMES} H.264 frames");
}

#[test]
fn udp_loss_and_reordering_without_jitterbuffer() {
    udp_with_loss(false);
}

#[test]
fn udp_loss_and_reordering_with_jitterbuffer() {
    udp_with_loss(true);
}

/// Wireshark's RTP dissector, an independent parser, reads the payloader's packets: PT 96,
/// consecutive sequence numbers, one marker per input frame, one timestamp per frame,
/// nothing above the MTU.
#[test]
fn pay_output_parses_in_tshark() {
    init();
    const MTU: usize = 600;
    let pipeline = launch(&format!(
        "{} ! rtppspay name=pay mtu={MTU} ! fakesink name=sink",
        h264_ps_source(10, false)
    ));
    let frames = count_buffers(&by_name(&pipeline, "pay"), "sink");
    let packets = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let sink = packets.clone();
    by_name(&pipeline, "sink")
        .static_pad("sink")
        .unwrap()
        .add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                let mut sink = sink.lock().unwrap();
                let mut add = |b: &gst::BufferRef| {
                    sink.push(b.map_readable().unwrap().to_vec());
                };
                match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => add(b),
                    Some(gst::PadProbeData::BufferList(list)) => list.iter().for_each(add),
                    _ => (),
                }
                gst::PadProbeReturn::Ok
            },
        );
    pipeline.set_state(gst::State::Playing).unwrap();
    expect_eos(&pipeline, Duration::from_secs(20));
    pipeline.set_state(gst::State::Null).unwrap();
    let packets = packets.lock().unwrap().clone();
    let frames = frames.load(Ordering::SeqCst);
    assert!(packets.len() > frames && frames >= 10);
    assert!(packets.iter().all(|p| p.len() <= MTU));

    let path = std::env::temp_dir().join(format!("rtpps-tshark-{}.pcap", std::process::id()));
    let pcap = pcap_udp(
        15060,
        packets
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u64 * 10_000, p.as_slice())),
    );
    std::fs::write(&path, pcap).unwrap();
    let out = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(&path)
        .args([
            "-d",
            "udp.port==15060,rtp",
            "-T",
            "fields",
            "-E",
            "separator=,",
        ])
        .args([
            "-e",
            "rtp.p_type",
            "-e",
            "rtp.seq",
            "-e",
            "rtp.marker",
            "-e",
            "rtp.timestamp",
        ])
        .output()
        .expect("run tshark");
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<u64>> = text
        .lines()
        .map(|line| {
            line.split(',')
                .map(|f| match f {
                    "True" => 1,
                    "False" => 0,
                    f => f.parse().unwrap_or_else(|_| panic!("tshark row {line:?}")),
                })
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), packets.len(), "tshark: {text}");
    let mut markers = 0;
    for (i, row) in rows.iter().enumerate() {
        let [pt, seq, marker, ts] = row[..] else {
            panic!("tshark row {row:?}");
        };
        assert_eq!(pt, 96);
        if i > 0 {
            assert_eq!(seq, (rows[i - 1][1] + 1) % 65536, "row {i}");
            if rows[i - 1][2] == 0 {
                assert_eq!(
                    ts,
                    rows[i - 1][3],
                    "timestamp changed inside a frame at {i}"
                );
            }
        }
        markers += marker;
    }
    assert_eq!(rows.last().unwrap()[2], 1, "last packet ends a frame");
    assert_eq!(markers as usize, frames);
}

/// With B-frames the presentation order is not the decode order: RTP timestamps taken from
/// the PTS went backwards (39 times in 300 frames); receivers such as ZLMediaKit expect them
/// to follow the order frames are sent in, as its own sender does. They follow the DTS now.
#[test]
fn pay_timestamps_follow_decode_order_with_b_frames() {
    init();
    let pipeline = launch(
        "videotestsrc num-buffers=150 ! video/x-raw,width=320,height=240,framerate=25/1 \
         ! x264enc speed-preset=ultrafast bframes=2 b-adapt=false key-int-max=50 ! h264parse \
         ! psmux ! rtppspay name=pay ! fakesink name=out signal-handoffs=true",
    );
    let stamps = Arc::new(Mutex::new(Vec::<u32>::new()));
    let s = stamps.clone();
    by_name(&pipeline, "out").connect("handoff", false, move |args| {
        let buffer = args[1].get::<gst::Buffer>().unwrap();
        let rtp = gst_rtp::RTPBuffer::from_buffer_readable(&buffer).unwrap();
        if rtp.is_marker() {
            s.lock().unwrap().push(rtp.timestamp());
        }
        None
    });
    pipeline.set_state(gst::State::Playing).unwrap();
    expect_eos(&pipeline, Duration::from_secs(60));
    pipeline.set_state(gst::State::Null).unwrap();
    let stamps = stamps.lock().unwrap();
    assert_eq!(stamps.len(), 150, "one marker per frame");
    let backwards = stamps
        .windows(2)
        .filter(|w| (w[1].wrapping_sub(w[0]) as i32) < 0)
        .count();
    assert_eq!(
        backwards, 0,
        "RTP timestamps went backwards {backwards} times"
    );
}
