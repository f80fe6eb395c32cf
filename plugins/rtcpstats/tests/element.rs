//! Element tests: pass-through, stats structure, bus messages and the RTCP path (crafted
//! with rtcp-types builders and from a real rtpsession).

use gst::prelude::*;
use gst_check::Harness;
use gst_net::gio;
use rtcp_types::prelude::*;
use rtcp_types::{
    App, Bye, Compound, ReceiverReport, ReportBlock, Sdes, SdesChunk, SdesItem, SenderReport,
};

fn init() {
    gst_ipcam_testutil::init_with(|| {
        gstrtcpstats::plugin_register_static().expect("register rtcpstats");
    });
}

const MS: u64 = 1_000_000;

fn rtp_buffer(seq: u16, ts: u32, ssrc: u32, pts_ns: u64) -> gst::Buffer {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.resize(12 + 100, 0x55);
    let mut buf = gst::Buffer::from_mut_slice(p);
    buf.get_mut()
        .unwrap()
        .set_pts(gst::ClockTime::from_nseconds(pts_ns));
    buf
}

fn rtcp_buffer(b: impl RtcpPacketWriter, pts_ns: u64, from: Option<(&str, u16)>) -> gst::Buffer {
    let mut data = vec![0; b.calculate_size().unwrap()];
    b.write_into(&mut data).unwrap();
    let mut buf = gst::Buffer::from_mut_slice(data);
    {
        let b = buf.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_nseconds(pts_ns));
        if let Some((ip, port)) = from {
            let addr = gio::InetSocketAddress::from_string(ip, port as u32).unwrap();
            gst_net::NetAddressMeta::add(b, &addr);
        }
    }
    buf
}

fn rtp_harness(props: &[(&str, u32)]) -> (Harness, gst::Bus) {
    init();
    let mut h = Harness::new("rtcpstats");
    let element = h.element().unwrap();
    for (k, v) in props {
        element.set_property(k, *v);
    }
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    h.set_src_caps_str(
        "application/x-rtp,media=video,clock-rate=90000,encoding-name=H264,payload=96",
    );
    h.play();
    (h, bus)
}

fn element_messages(bus: &gst::Bus, name: &str) -> Vec<gst::Structure> {
    let mut out = Vec::new();
    while let Some(msg) = bus.pop() {
        if let gst::MessageView::Element(e) = msg.view()
            && let Some(s) = e.structure()
            && s.name() == name
        {
            out.push(s.to_owned());
        }
    }
    out
}

fn first_source(stats: &gst::Structure) -> gst::Structure {
    let sources = stats.get::<gst::Array>("sources").unwrap();
    sources.as_slice()[0].get::<gst::Structure>().unwrap()
}

#[test]
fn buffers_pass_through_unchanged() {
    let (mut h, _bus) = rtp_harness(&[]);
    for i in 0..50u16 {
        let buf = rtp_buffer(i, i as u32 * 3000, 0xAA, i as u64 * 33 * MS);
        let ptr = buf.as_ptr();
        let bytes = buf.map_readable().unwrap().to_vec();
        h.push(buf).unwrap();
        let out = h.pull().unwrap();
        assert_eq!(out.as_ptr(), ptr, "same buffer, no copy");
        assert_eq!(out.map_readable().unwrap().as_slice(), &bytes[..]);
    }
    // Not RTP: still passed through, counted as invalid.
    let junk = gst::Buffer::from_slice([1u8, 2, 3]);
    let ptr = junk.as_ptr();
    h.push(junk).unwrap();
    assert_eq!(h.pull().unwrap().as_ptr(), ptr);
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("rtp-invalid").unwrap(), 1);
    assert_eq!(stats.get::<u64>("rtp-packets").unwrap(), 50);
}

#[test]
fn buffer_lists_pass_through_and_count() {
    let (mut h, _bus) = rtp_harness(&[]);
    let mut list = gst::BufferList::new();
    let mut ptrs = Vec::new();
    {
        let l = list.get_mut().unwrap();
        for i in 0..10u16 {
            let b = rtp_buffer(1000 + i, i as u32 * 3000, 0xDD, i as u64 * 33 * MS);
            ptrs.push(b.as_ptr());
            l.add(b);
        }
    }
    h.srcpad().unwrap().push_list(list).unwrap();
    for p in ptrs {
        assert_eq!(h.pull().unwrap().as_ptr(), p);
    }
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    let s = first_source(&stats);
    assert_eq!(s.get::<u64>("packets-received").unwrap(), 10);
    assert_eq!(s.get::<i32>("seqnum-base").unwrap(), 1000);
}

#[test]
fn stats_structure_uses_rtpsource_field_names() {
    let (mut h, _bus) = rtp_harness(&[]);
    for i in 0..30u16 {
        if i == 10 || i == 11 {
            continue;
        }
        h.push(rtp_buffer(i, i as u32 * 3000, 0xBB, i as u64 * 33 * MS))
            .unwrap();
    }
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    assert_eq!(stats.name(), "application/x-rtcpstats");
    for f in [
        "sources",
        "peers",
        "clients-connected",
        "rtp-packets",
        "bitrate",
    ] {
        assert!(stats.has_field(f), "session field {f}");
    }
    let s = first_source(&stats);
    assert_eq!(s.name(), "application/x-rtp-source-stats");
    for f in [
        "ssrc",
        "packets-received",
        "octets-received",
        "bitrate",
        "packets-lost",
        "jitter",
        "have-sr",
        "have-rb",
        "clock-rate",
        "seqnum-base",
        "packets-duplicated",
        "packets-reordered",
        "fraction-lost",
        "jitter-ns",
        "packet-rate",
        "first-arrival",
        "last-arrival",
    ] {
        assert!(s.has_field(f), "source field {f} in {s}");
    }
    assert_eq!(s.get::<u32>("ssrc").unwrap(), 0xBB);
    assert_eq!(s.get::<u64>("packets-received").unwrap(), 28);
    assert_eq!(s.get::<u64>("octets-received").unwrap(), 2800);
    assert_eq!(s.get::<i32>("packets-lost").unwrap(), 2);
    assert_eq!(s.get::<i32>("clock-rate").unwrap(), 90000);
    assert_eq!(s.get::<u64>("last-arrival").unwrap(), 29 * 33 * MS);
}

#[test]
fn element_message_every_interval() {
    let (mut h, bus) = rtp_harness(&[("interval", 1000)]);
    // 3.5 s of 25 fps.
    for i in 0..88u16 {
        h.push(rtp_buffer(i, i as u32 * 3600, 0xCC, i as u64 * 40 * MS))
            .unwrap();
        let _ = h.pull().unwrap();
    }
    let msgs = element_messages(&bus, "application/x-rtcpstats");
    assert_eq!(msgs.len(), 3, "one message per second of stream time");
    let received: Vec<u64> = msgs
        .iter()
        .map(|m| first_source(m).get::<u64>("packets-received").unwrap())
        .collect();
    // The packet arriving at exactly 1 s closes the first interval and is in it.
    assert_eq!(received, vec![26, 51, 76]);
    // 25 packets of 112 bytes per second.
    let bitrate = first_source(&msgs[1]).get::<u64>("bitrate").unwrap();
    assert_eq!(bitrate, 25 * 112 * 8);
    // interval=0: no messages.
    let (mut h, bus) = rtp_harness(&[("interval", 0)]);
    for i in 0..88u16 {
        h.push(rtp_buffer(i, i as u32 * 3600, 0xCC, i as u64 * 40 * MS))
            .unwrap();
    }
    assert!(element_messages(&bus, "application/x-rtcpstats").is_empty());
}

#[test]
fn timeout_message_for_silent_source() {
    let (mut h, bus) = rtp_harness(&[("interval", 0), ("timeout", 2000)]);
    for i in 0..10u16 {
        h.push(rtp_buffer(i, 0, 0x01, i as u64 * 100 * MS)).unwrap();
    }
    for i in 0..40u16 {
        h.push(rtp_buffer(i, 0, 0x02, 1000 * MS + i as u64 * 100 * MS))
            .unwrap();
    }
    let msgs = element_messages(&bus, "rtcpstats-timeout");
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].get::<u32>("ssrc").unwrap(), 0x01);
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    assert_eq!(stats.get::<gst::Array>("sources").unwrap().len(), 1);
}

#[test]
fn rtcp_pads_sr_rr_sdes_bye_per_peer() {
    init();
    let mut h = Harness::with_padnames("rtcpstats", Some("rtcp_sink"), Some("rtcp_src"));
    let element = h.element().unwrap();
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    h.set_src_caps_str("application/x-rtcp");
    h.play();

    let ntp: u64 = 0xE8A0_0000_4000_0000;
    let sr = Compound::builder()
        .add_packet(
            SenderReport::builder(0x5EED)
                .ntp_timestamp(ntp)
                .rtp_timestamp(1234)
                .packet_count(100)
                .octet_count(10000),
        )
        .add_packet(Sdes::builder().add_chunk(
            SdesChunk::builder(0x5EED).add_item(SdesItem::builder(SdesItem::CNAME, "server@host")),
        ));
    let buf = rtcp_buffer(sr, 1000 * MS, Some(("127.0.0.1", 5001)));
    let ptr = buf.as_ptr();
    h.push(buf).unwrap();
    assert_eq!(h.pull().unwrap().as_ptr(), ptr, "RTCP passes through too");

    // Two clients report on it; RR arrives 100 ms after the SR with DLSR 60 ms: RTT 40 ms.
    let lsr = (ntp >> 16) as u32;
    for (port, ssrc, lost) in [(6000u16, 0xC1u32, 5u32), (6002, 0xC2, 9)] {
        let rr = Compound::builder()
            .add_packet(
                ReceiverReport::builder(ssrc).add_report_block(
                    ReportBlock::builder(0x5EED)
                        .fraction_lost(12)
                        .cumulative_lost(lost)
                        .extended_sequence_number(1000)
                        .interarrival_jitter(45)
                        .last_sender_report_timestamp(lsr)
                        .delay_since_last_sender_report_timestamp(65536 * 60 / 1000),
                ),
            )
            .add_packet(Sdes::builder().add_chunk(
                SdesChunk::builder(ssrc).add_item(SdesItem::builder(SdesItem::CNAME, "client")),
            ))
            .add_packet(App::builder(ssrc, "ABCD").data(&[0, 0, 0, 0]));
        h.push(rtcp_buffer(rr, 1100 * MS, Some(("127.0.0.1", port))))
            .unwrap();
        let _ = h.pull().unwrap();
    }
    // A malformed packet is ignored and counted.
    let mut bad = gst::Buffer::from_slice([0x81u8, 201, 0, 7, 1, 2]);
    bad.get_mut()
        .unwrap()
        .set_pts(gst::ClockTime::from_nseconds(1150 * MS));
    h.push(bad).unwrap();
    let _ = h.pull().unwrap();

    let stats = element.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("rtcp-malformed").unwrap(), 1);
    assert_eq!(stats.get::<u32>("clients-connected").unwrap(), 3);
    let peers = stats.get::<gst::Array>("peers").unwrap();
    let peer = |addr: &str| {
        peers
            .iter()
            .map(|v| v.get::<gst::Structure>().unwrap())
            .find(|p| p.get::<String>("address").unwrap() == addr)
            .unwrap_or_else(|| panic!("peer {addr} in {stats}"))
    };
    let client = peer("127.0.0.1:6002");
    assert_eq!(client.get::<u64>("rr-count").unwrap(), 1);
    assert_eq!(client.get::<u64>("app-count").unwrap(), 1);
    assert_eq!(client.get::<i32>("rb-packetslost").unwrap(), 9);
    assert_eq!(client.get::<u32>("rb-fractionlost").unwrap(), 12);
    assert_eq!(client.get::<u32>("rb-jitter").unwrap(), 45);
    assert_eq!(client.get::<String>("cname").unwrap(), "client");
    let rtt = client.get::<u32>("rb-round-trip").unwrap();
    let expected = 65536 * 40 / 1000;
    assert!(
        (rtt as i64 - expected as i64).abs() <= 1,
        "{rtt} vs {expected}"
    );
    assert!(client.get::<u64>("rtcp-bytes").unwrap() > 0);
    assert_eq!(
        peer("127.0.0.1:6000").get::<i32>("rb-packetslost").unwrap(),
        5
    );
    let server = peer("127.0.0.1:5001");
    assert_eq!(server.get::<u64>("sr-count").unwrap(), 1);

    let sources = stats.get::<gst::Array>("sources").unwrap();
    let sender = sources
        .iter()
        .map(|v| v.get::<gst::Structure>().unwrap())
        .find(|s| s.get::<u32>("ssrc").unwrap() == 0x5EED)
        .unwrap();
    assert!(sender.get::<bool>("have-sr").unwrap());
    assert_eq!(sender.get::<u64>("sr-ntptime").unwrap(), ntp);
    assert_eq!(sender.get::<u32>("sr-packet-count").unwrap(), 100);
    assert_eq!(sender.get::<String>("cname").unwrap(), "server@host");
    assert_eq!(sender.get::<String>("rtcp-from").unwrap(), "127.0.0.1:5001");

    // BYE posts a message at once.
    let bye = Bye::builder().add_source(0xC1).reason("leaving");
    let rr = Compound::builder()
        .add_packet(ReceiverReport::builder(0xC1))
        .add_packet(bye);
    h.push(rtcp_buffer(rr, 1200 * MS, Some(("127.0.0.1", 6000))))
        .unwrap();
    let msgs = element_messages(&bus, "rtcpstats-bye");
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].get::<u32>("ssrc").unwrap(), 0xC1);
    assert_eq!(msgs[0].get::<String>("reason").unwrap(), "leaving");
    assert_eq!(msgs[0].get::<String>("from").unwrap(), "127.0.0.1:6000");
    let stats = element.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u32>("clients-connected").unwrap(), 2);
}

/// Real RTCP: an rtpsession sender streams to an rtpsession receiver; rtcpstats sees the
/// sender's SRs (in-process) and the receiver's RRs over UDP (with the sender address).
#[test]
fn rtcp_from_real_rtpsession() {
    init();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    drop(socket);
    let desc = format!(
        "rtpsession name=tx rtcp-min-interval=100000000 \
         rtpsession name=rx rtcp-min-interval=100000000 \
         rtcpstats name=st interval=200 \
         audiotestsrc is-live=true samplesperbuffer=160 ! alawenc ! rtppcmapay ssrc=1234 ! tx.send_rtp_sink \
         tx.send_rtp_src ! rx.recv_rtp_sink \
         rx.recv_rtp_src ! st.sink  st.src ! fakesink sync=false async=false \
         tx.send_rtcp_src ! tee name=t  t. ! queue ! rx.recv_rtcp_sink \
         t. ! queue ! funnel name=f ! st.rtcp_sink  st.rtcp_src ! fakesink sync=false async=false \
         rx.send_rtcp_src ! udpsink host=127.0.0.1 port={port} sync=false async=false \
         udpsrc address=127.0.0.1 port={port} caps=application/x-rtcp ! f."
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let st = pipeline.by_name("st").unwrap();
    pipeline.by_name("tx").unwrap().set_property(
        "sdes",
        gst::Structure::builder("application/x-rtp-source-sdes")
            .field("cname", "tx@test")
            .build(),
    );
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut found = None;
    let mut error = None;
    while std::time::Instant::now() < deadline {
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100))
            && let gst::MessageView::Error(e) = msg.view()
        {
            error = Some(format!("{e:?}"));
            break;
        }
        let stats = st.property::<gst::Structure>("stats");
        let peers = stats.get::<gst::Array>("peers").unwrap();
        let rr_peer = peers
            .iter()
            .map(|v| v.get::<gst::Structure>().unwrap())
            .find(|p| {
                p.get::<String>("address")
                    .unwrap()
                    .starts_with("127.0.0.1:")
                    && p.get::<bool>("have-rb").unwrap()
                    && p.get::<bool>("have-rb-round-trip").unwrap_or(false)
            });
        if let Some(p) = rr_peer {
            found = Some((stats.clone(), p));
            break;
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(error.is_none(), "pipeline error: {error:?}");
    let (stats, peer) = found.expect("RR with round-trip from the receiving rtpsession");
    assert_eq!(peer.get::<u32>("rb-ssrc").unwrap(), 1234);
    assert!(peer.get::<u64>("rr-count").unwrap() >= 1);
    // Same process, no network: the round trip is well under 100 ms.
    assert!(
        peer.get::<u32>("rb-round-trip").unwrap() < 65536 / 10,
        "{peer}"
    );
    let sources = stats.get::<gst::Array>("sources").unwrap();
    let tx = sources
        .iter()
        .map(|v| v.get::<gst::Structure>().unwrap())
        .find(|s| s.get::<u32>("ssrc").unwrap() == 1234)
        .expect("sender source");
    assert!(tx.get::<bool>("have-sr").unwrap(), "{tx}");
    assert!(tx.get::<u64>("sr-ntptime").unwrap() > 0);
    assert_eq!(tx.get::<String>("cname").unwrap(), "tx@test");
    assert!(tx.get::<u64>("packets-received").unwrap() > 10);
    assert_eq!(tx.get::<i32>("packets-lost").unwrap(), 0);
    assert_eq!(tx.get::<i32>("clock-rate").unwrap(), 8000);
}

/// A live stream that stops: the clock timer keeps interval messages coming and fires the
/// source timeout although no more data arrives.
#[test]
fn live_stream_stall_times_out() {
    init();
    let pipeline = gst::parse::launch(
        "appsrc name=src is-live=true do-timestamp=true format=time \
           caps=application/x-rtp,media=audio,clock-rate=8000,encoding-name=PCMA,payload=8 ! \
         rtcpstats name=st interval=200 timeout=1000 ! fakesink sync=false async=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let appsrc = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let start = std::time::Instant::now();
    for i in 0..10u16 {
        let p = gst_ipcam_testutil::rtp_packet(8, false, i, i as u32 * 160, 0x77, &[0xD5; 160]);
        appsrc.push_buffer(gst::Buffer::from_slice(p)).unwrap();
        // Pacing a live stream (20 ms packets, as a camera sends them), not synchronisation:
        // the timeout under test is measured in real time from the last packet.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let stalled_at = std::time::Instant::now();
    let mut timeout = None;
    let mut stats_after_stall = 0;
    while timeout.is_none() && start.elapsed() < std::time::Duration::from_secs(5) {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(50)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                if s.name() == "rtcpstats-timeout" {
                    timeout = Some((s.get::<u32>("ssrc").unwrap(), stalled_at.elapsed()));
                } else if s.name() == "application/x-rtcpstats"
                    && stalled_at.elapsed().as_millis() > 120
                {
                    stats_after_stall += 1;
                }
            }
            gst::MessageView::Error(e) => panic!("{e:?}"),
            _ => (),
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let (ssrc, after) = timeout.expect("timeout message after the stream stopped");
    assert_eq!(ssrc, 0x77);
    // Timeout counted from the last packet (pushed 20 ms before the stall mark).
    assert!(after >= std::time::Duration::from_millis(900), "{after:?}");
    assert!(stats_after_stall >= 1);
}
