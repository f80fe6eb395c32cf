//! Element behaviour through appsrc → rtspinterleavedparse → appsinks: caps sources
//! (caps property, request-caps signal, static payload types), timestamp modes, zero copy,
//! bus messages and statistics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_ipcam_testutil::wait_until;

fn init() {
    gst_ipcam_testutil::init_with(|| {
        gstrtspinterleaved::plugin_register_static().expect("register rtspinterleaved");
    });
}

fn rtp(pt: u8, seq: u16, ts: u32, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&7u32.to_be_bytes());
    p.extend(std::iter::repeat_n(0xab, payload_len));
    p
}

fn frame(channel: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b'$', channel];
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[derive(Default)]
struct Collected {
    caps: BTreeMap<String, gst::Caps>,
    buffers: BTreeMap<String, Vec<gst::Buffer>>,
    messages: Vec<gst::Structure>,
    stats: Option<gst::Structure>,
}

/// Pushes `inputs` through appsrc ! rtspinterleavedparse (configured by `setup`) and
/// collects what every pad outputs.
fn run(inputs: Vec<gst::Buffer>, setup: impl FnOnce(&gst::Element)) -> Collected {
    init();
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder()
        .format(gst::Format::Bytes)
        .build();
    let parse = gst::ElementFactory::make("rtspinterleavedparse")
        .build()
        .unwrap();
    setup(&parse);
    pipeline.add_many([src.upcast_ref(), &parse]).unwrap();
    src.link(&parse).unwrap();
    let out: Arc<Mutex<Collected>> = Default::default();
    let weak = pipeline.downgrade();
    let out2 = out.clone();
    parse.connect_pad_added(move |_, pad| {
        let pipeline = weak.upgrade().unwrap();
        let name = pad.name().to_string();
        let sink = gst_app::AppSink::builder().sync(false).build();
        // Pads appear one after the other in one streaming thread: no preroll wait per sink.
        sink.set_property("async", false);
        let out3 = out2.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let mut o = out3.lock().unwrap();
                    if let Some(c) = sample.caps() {
                        o.caps.insert(name.clone(), c.to_owned());
                    }
                    o.buffers
                        .entry(name.clone())
                        .or_default()
                        .push(sample.buffer_owned().unwrap());
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.add(&sink).unwrap();
        sink.sync_state_with_parent().unwrap();
        pad.link(&sink.static_pad("sink").unwrap()).unwrap();
    });
    pipeline.set_state(gst::State::Playing).unwrap();
    for b in inputs {
        src.push_buffer(b).unwrap();
    }
    src.end_of_stream().unwrap();
    let bus = pipeline.bus().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "timed out");
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{} {:?}", e.error(), e.debug()),
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure() {
                    out.lock().unwrap().messages.push(s.to_owned());
                }
            }
            _ => {}
        }
    }
    out.lock().unwrap().stats = Some(parse.property::<gst::Structure>("stats"));
    pipeline.set_state(gst::State::Null).unwrap();
    std::mem::take(&mut *out.lock().unwrap())
}

#[test]
fn caps_from_property_signal_and_static_payload_type() {
    init();
    let mut data = Vec::new();
    for i in 0..10u16 {
        data.extend(frame(0, &rtp(96, i, i as u32 * 3000, 100)));
        data.extend(frame(2, &rtp(97, i, i as u32 * 320, 50)));
        data.extend(frame(4, &rtp(8, i, i as u32 * 160, 160)));
    }
    let asked = Arc::new(Mutex::new(Vec::new()));
    let asked2 = asked.clone();
    let got = run(vec![gst::Buffer::from_mut_slice(data)], |p| {
        p.set_property(
            "caps",
            gst::Caps::builder("application/x-rtp")
                .field("media", "video")
                .field("clock-rate", 90000i32)
                .field("encoding-name", "H264")
                .build(),
        );
        p.connect("request-caps", false, move |args| {
            let channel = args[1].get::<u32>().unwrap();
            asked2.lock().unwrap().push(channel);
            // NULL caps: "don't know", the element falls back to the caps property.
            let caps = (channel == 2).then(|| {
                gst::Caps::builder("application/x-rtp")
                    .field("media", "audio")
                    .field("clock-rate", 16000i32)
                    .field("encoding-name", "L16")
                    .field("payload", 97i32)
                    .build()
            });
            Some(caps.to_value())
        });
    });
    let mut asked = asked.lock().unwrap().clone();
    asked.sort();
    assert_eq!(asked, vec![0, 2, 4]);
    let v = got.caps["rtp_0"].structure(0).unwrap();
    assert_eq!(v.get::<&str>("encoding-name").unwrap(), "H264");
    assert_eq!(v.get::<i32>("payload").unwrap(), 96, "payload filled in");
    let a = got.caps["rtp_2"].structure(0).unwrap();
    assert_eq!(a.get::<&str>("encoding-name").unwrap(), "L16");
    // The caps property wins over the static table only for channels the app did not answer.
    let s = got.caps["rtp_4"].structure(0).unwrap();
    assert_eq!(s.get::<&str>("encoding-name").unwrap(), "H264");
    for pad in ["rtp_0", "rtp_2", "rtp_4"] {
        assert_eq!(got.buffers[pad].len(), 10);
    }
    // RTP-time mode (no upstream times): 10 frames of 3000 ticks at 90 kHz.
    let pts: Vec<_> = got.buffers["rtp_0"]
        .iter()
        .map(|b| b.pts().unwrap())
        .collect();
    assert_eq!(pts[0], gst::ClockTime::ZERO);
    assert_eq!(
        pts[9],
        gst::ClockTime::from_nseconds(9 * 3000 * 1_000_000_000 / 90000)
    );
    let a_pts = got.buffers["rtp_2"][9].pts().unwrap();
    assert_eq!(
        a_pts,
        gst::ClockTime::from_nseconds(9 * 320 * 1_000_000_000 / 16000)
    );
    assert!(
        got.buffers["rtp_0"][0]
            .flags()
            .contains(gst::BufferFlags::DISCONT)
    );
    assert!(
        !got.buffers["rtp_0"][1]
            .flags()
            .contains(gst::BufferFlags::DISCONT)
    );
}

#[test]
fn static_payload_type_without_any_caps() {
    init();
    let data: Vec<u8> = (0..5u16)
        .flat_map(|i| frame(0, &rtp(0, i, i as u32 * 160, 160)))
        .collect();
    let got = run(vec![gst::Buffer::from_mut_slice(data)], |_| {});
    let s = got.caps["rtp_0"].structure(0).unwrap();
    assert_eq!(s.get::<&str>("encoding-name").unwrap(), "PCMU");
    assert_eq!(s.get::<i32>("clock-rate").unwrap(), 8000);
}

#[test]
fn upstream_times_and_zero_copy() {
    init();
    // Two input buffers with times of their own (kept); the second frame is split across
    // them.
    let f1 = frame(0, &rtp(96, 1, 0, 200));
    let f2 = frame(0, &rtp(96, 2, 9000, 300));
    let f3 = frame(
        1,
        &[
            0x80, 200, 0, 6, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    let mut first = f1.clone();
    first.extend_from_slice(&f2[..100]);
    let mut second = f2[100..].to_vec();
    second.extend_from_slice(&f3);
    let mut b1 = gst::Buffer::from_mut_slice(first);
    b1.get_mut()
        .unwrap()
        .set_pts(gst::ClockTime::from_seconds(10));
    let mut b2 = gst::Buffer::from_mut_slice(second);
    b2.get_mut()
        .unwrap()
        .set_pts(gst::ClockTime::from_seconds(11));
    let input_ptr = {
        let m = b1.map_readable().unwrap();
        m.as_ptr() as usize..m.as_ptr() as usize + m.len()
    };
    let keep = b1.clone();
    let got = run(vec![b1, b2], |p| {
        p.set_property_from_str("mode", "upstream")
    });
    let rtp0 = &got.buffers["rtp_0"];
    assert_eq!(rtp0.len(), 2);
    assert_eq!(rtp0[0].pts(), Some(gst::ClockTime::from_seconds(10)));
    // Completed in the second buffer: that arrival time.
    assert_eq!(rtp0[1].pts(), Some(gst::ClockTime::from_seconds(11)));
    assert_eq!(rtp0[1].map_readable().unwrap().as_slice(), &f2[4..]);
    // The first packet lies in one input buffer: it shares that memory.
    let m = rtp0[0].map_readable().unwrap();
    let p = m.as_ptr() as usize;
    assert!(input_ptr.contains(&p), "output copied instead of shared");
    assert_eq!(p - input_ptr.start, 4);
    drop(keep);
    // RTCP on its own pad.
    assert_eq!(got.buffers["rtcp_1"].len(), 1);
    assert_eq!(
        got.caps["rtcp_1"].structure(0).unwrap().name(),
        "application/x-rtcp"
    );
}

#[test]
fn rtsp_messages_and_stats() {
    init();
    let mut data = b"OPTIONS rtsp://127.0.0.1/x RTSP/1.0\r\nCSeq: 1\r\n\r\n".to_vec();
    data.extend(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: DESCRIBE, SETUP\r\n\r\n");
    data.extend(frame(0, &rtp(96, 1, 0, 10)));
    data.extend(frame(0, &[]));
    data.extend(b"\x01\x02garbage\x03");
    data.extend(frame(0, &rtp(96, 2, 0, 10)));
    // Split the text across buffers.
    let (a, b) = data.split_at(30);
    let got = run(
        vec![
            gst::Buffer::from_slice(a.to_vec()),
            gst::Buffer::from_slice(b.to_vec()),
        ],
        |_| {},
    );
    let msgs: Vec<_> = got
        .messages
        .iter()
        .filter(|m| m.name() == "rtsp-message")
        .collect();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].get::<&str>("kind").unwrap(), "request");
    assert_eq!(msgs[0].get::<&str>("method").unwrap(), "OPTIONS");
    assert_eq!(msgs[0].get::<u32>("cseq").unwrap(), 1);
    assert_eq!(msgs[1].get::<u32>("status").unwrap(), 200);
    let h = msgs[1].get::<gst::Structure>("headers").unwrap();
    assert_eq!(h.get::<&str>("public").unwrap(), "DESCRIBE, SETUP");
    let st = got.stats.unwrap();
    assert_eq!(st.get::<u64>("frames").unwrap(), 2);
    assert_eq!(st.get::<u64>("rtsp-messages").unwrap(), 2);
    assert_eq!(st.get::<u64>("resyncs").unwrap(), 1);
    assert_eq!(st.get::<u64>("skipped-bytes").unwrap(), 10);
    assert_eq!(st.get::<u64>("zero-length-frames").unwrap(), 1);
    let channels = st.get::<gst::Array>("channels").unwrap();
    let ch0 = channels.first().unwrap().get::<gst::Structure>().unwrap();
    assert_eq!(ch0.get::<u32>("channel").unwrap(), 0);
    assert_eq!(ch0.get::<u64>("frames").unwrap(), 2);
    assert_eq!(got.buffers["rtp_0"].len(), 2);
    // Garbage between frames loses nothing: no DISCONT (it would make depayloaders drop
    // the frame being reassembled).
    assert!(
        !got.buffers["rtp_0"][1]
            .flags()
            .contains(gst::BufferFlags::DISCONT)
    );
}

/// appsrc (bytes) ! rtspinterleavedparse mode=upstream ! appsink on a test clock, PLAYING.
struct ClockedPipeline {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    parse: gst::Element,
    clock: gst_check::TestClock,
    out: Arc<Mutex<Vec<gst::Buffer>>>,
}

impl ClockedPipeline {
    fn new() -> Self {
        init();
        let clock = gst_check::TestClock::new();
        clock.set_time(gst::ClockTime::from_seconds(100));
        let pipeline = gst::Pipeline::new();
        pipeline.use_clock(Some(&clock));
        let src = gst_app::AppSrc::builder()
            .format(gst::Format::Bytes)
            .build();
        let parse = gst::ElementFactory::make("rtspinterleavedparse")
            .property_from_str("mode", "upstream")
            .build()
            .unwrap();
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .async_(false)
            .build();
        pipeline
            .add_many([src.upcast_ref(), &parse, sink.upcast_ref()])
            .unwrap();
        src.link(&parse).unwrap();
        let sinkpad = sink.static_pad("sink").unwrap();
        parse.connect_pad_added(move |_, pad| {
            pad.link(&sinkpad).unwrap();
        });
        let out: Arc<Mutex<Vec<gst::Buffer>>> = Default::default();
        let out2 = out.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    out2.lock().unwrap().push(sample.buffer_owned().unwrap());
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.set_state(gst::State::Playing).unwrap();
        let (res, state, _) = pipeline.state(gst::ClockTime::from_seconds(10));
        res.unwrap();
        assert_eq!(state, gst::State::Playing);
        ClockedPipeline {
            pipeline,
            src,
            parse,
            clock,
            out,
        }
    }

    /// Sets the running time to `running` and pushes one frame per time in `times`,
    /// returning once all of them are out.
    fn push_at(&self, running: gst::ClockTime, times: &[Option<gst::ClockTime>]) {
        self.clock
            .set_time(self.pipeline.base_time().unwrap() + running);
        let expected = self.out.lock().unwrap().len() + times.len();
        for (i, t) in times.iter().enumerate() {
            let seq = expected as u16 + i as u16;
            let mut b = gst::Buffer::from_mut_slice(frame(0, &rtp(96, seq, 0, 10)));
            b.get_mut().unwrap().set_pts(*t);
            self.src.push_buffer(b).unwrap();
        }
        assert!(
            wait_until(Duration::from_secs(10), || {
                self.out.lock().unwrap().len() >= expected
            }),
            "timed out"
        );
    }

    fn times(&self) -> Vec<Option<gst::ClockTime>> {
        self.out.lock().unwrap().iter().map(|b| b.pts()).collect()
    }
}

impl Drop for ClockedPipeline {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// What a non-live byte source with do-timestamp (tcpclientsrc) stamps on data read while the
/// pipeline starts (no time before it has a clock, the clock's absolute time before the base
/// time is set) and a time stamped earlier than its predecessor's all come out as arrival
/// times: present, never later than now, never backwards.
#[test]
fn upstream_times_are_complete_monotonic_and_not_ahead() {
    let ms = gst::ClockTime::from_mseconds;
    let p = ClockedPipeline::new();
    let absolute_clock_time = p.pipeline.base_time().unwrap() + ms(1000);
    p.push_at(
        ms(1000),
        &[
            Some(ms(500)),
            None,
            Some(absolute_clock_time),
            Some(ms(400)),
            Some(ms(800)),
        ],
    );
    p.push_at(ms(2000), &[Some(ms(1500)), None]);
    assert_eq!(
        p.times(),
        [500, 1000, 1000, 1000, 1000, 1500, 2000]
            .map(|t| Some(ms(t)))
            .to_vec()
    );
    let stats = p.parse.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("timestamp-corrections").unwrap(), 5);
}

/// A server for the live tests: sends `bursts` of 5 frames (RTP times 10 s apart, so RTP time
/// can't pass for arrival time), the first at once if `first_at_once`, every other one on a
/// message of `go` (the previous burst is out) and 30 ms later (pacing the data, not
/// waiting for the pipeline): a burst is stamped at least 30 ms after the previous one.
fn burst_server(
    bursts: u16,
    first_at_once: bool,
) -> (
    u16,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        for burst in 0..bursts {
            if burst > 0 || !first_at_once {
                go_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            }
            if burst > 0 {
                // After `go`: every byte of the previous burst was stamped before now.
                std::thread::sleep(Duration::from_millis(30));
            }
            let mut data = Vec::new();
            for i in 0..5 {
                let seq = burst * 5 + i;
                data.extend(frame(0, &rtp(96, seq, seq as u32 * 900_000, 700)));
            }
            s.write_all(&data).unwrap();
        }
    });
    (port, go, server)
}

/// tcpclientsrc do-timestamp=true ! rtspinterleavedparse mode=upstream ! appsink; pulls
/// `count` buffers, sending `go` after each 5 (a burst is out: the server may send the next).
fn pull_live_times(
    port: u16,
    count: usize,
    go: &std::sync::mpsc::Sender<()>,
    go_when_playing: bool,
) -> (Vec<Option<gst::ClockTime>>, gst::ClockTime) {
    init();
    let pipeline = gst::parse::launch(&format!(
        "tcpclientsrc host=127.0.0.1 port={port} do-timestamp=true \
         ! rtspinterleavedparse mode=upstream name=p p.rtp_0 ! appsink name=sink sync=false async=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    if go_when_playing {
        let (res, state, _) = pipeline.state(gst::ClockTime::from_seconds(10));
        res.unwrap();
        assert_eq!(state, gst::State::Playing);
        go.send(()).unwrap();
    }
    let mut pts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pts.len() < count && Instant::now() < deadline {
        if let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
            let b = s.buffer().unwrap();
            assert_eq!(b.size(), 12 + 700);
            pts.push(b.pts());
            if pts.len() % 5 == 0 {
                let _ = go.send(());
            }
        }
    }
    let now = pipeline.current_running_time().unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(pts.len(), count);
    (pts, now)
}

#[test]
fn live_tcp_input_keeps_arrival_times() {
    let (port, go, server) = burst_server(4, false);
    let (pts, _) = pull_live_times(port, 20, &go, true);
    server.join().unwrap();
    let pts: Vec<_> = pts.into_iter().map(|p| p.expect("arrival time")).collect();
    assert!(pts.windows(2).all(|w| w[0] <= w[1]), "{pts:?}");
    // Arrival times, not RTP times (190 s from first to last): the last burst left at least
    // 90 ms after the first.
    let spread = pts[19] - pts[0];
    assert!(
        spread >= gst::ClockTime::from_mseconds(90) && spread < gst::ClockTime::from_seconds(30),
        "spread {spread}"
    );
}

/// Data already there while the pipeline starts: the times tcpclientsrc stamps then (none,
/// or the clock's absolute time) must not reach the output (they did about 1 run in 15).
#[test]
fn live_tcp_input_before_playing_gets_monotonic_times() {
    let (port, go, server) = burst_server(2, true);
    let (pts, now) = pull_live_times(port, 10, &go, false);
    server.join().unwrap();
    let pts: Vec<_> = pts.into_iter().map(|p| p.expect("arrival time")).collect();
    assert!(pts.windows(2).all(|w| w[0] <= w[1]), "{pts:?}");
    assert!(pts[9] <= now, "{pts:?} later than the running time {now}");
}
