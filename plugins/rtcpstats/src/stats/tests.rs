use super::*;
use rtcp_types::prelude::*;
use rtcp_types::{
    App, Bye, Compound, ReceiverReferenceTime, ReceiverReport, ReportBlock, Sdes, SdesChunk,
    SdesItem, SenderReport, Xr,
};

fn rtp(seq: u16, ts: u32, ssrc: u32, payload: usize) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.resize(12 + payload, 0xAB);
    p
}

fn write(b: impl RtcpPacketWriter) -> Vec<u8> {
    let mut out = vec![0; b.calculate_size().unwrap()];
    b.write_into(&mut out).unwrap();
    out
}

const MS: u64 = 1_000_000;

fn peer(port: u16) -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], port)))
}

#[test]
fn rtp_counts_per_ssrc() {
    let mut s = Session::default();
    s.set_clock_rate(Some(90000));
    for i in 0..10u16 {
        if i == 4 {
            continue;
        }
        assert!(s.handle_rtp(&rtp(i, i as u32 * 3000, 1, 100), i as u64 * 33 * MS, None));
        assert!(s.handle_rtp(&rtp(500 + i, 0, 2, 50), i as u64 * 33 * MS, None));
    }
    assert!(!s.handle_rtp(&[0x80, 96, 0], 0, None));
    assert_eq!(s.counters.rtp_invalid, 1);
    let a = s.source(1).unwrap();
    assert_eq!(a.packets_received(), 9);
    assert_eq!(a.octets_received(), 900);
    assert_eq!(a.packets_expected(), 10);
    assert_eq!(a.packets_lost(), 1);
    assert_eq!(a.rtp_bytes, 9 * 112);
    let b = s.source(2).unwrap();
    assert_eq!(b.packets_lost(), 1);
    assert_eq!(b.base_seq(), 500);
    // No peers without addresses on RTP.
    assert!(s.peers().is_empty());
}

#[test]
fn interval_fraction_and_rates() {
    let mut s = Session::default();
    s.close_interval(0);
    for i in 0..100u16 {
        if i % 10 == 5 {
            continue;
        }
        s.handle_rtp(&rtp(i, 0, 7, 988), i as u64 * 10 * MS, peer(4000));
    }
    s.close_interval(1000 * MS);
    let src = s.source(7).unwrap();
    assert_eq!(src.fraction_lost(), ((10i64 << 8) / 100) as u8);
    // 90 packets of 1000 bytes in one second.
    assert_eq!(src.rates().0, 90 * 1000 * 8);
    assert!((src.rates().1 - 90.0).abs() < 1e-9);
    let p = s.peer(peer(4000)).unwrap();
    assert_eq!(p.rtp_packets, 90);
    assert_eq!(p.ssrcs, vec![7]);
    assert_eq!(p.rates().0, 90 * 1000 * 8);
}

#[test]
fn sender_report_then_receiver_report_gives_round_trip() {
    let mut s = Session::default();
    let ntp: u64 = 0xE000_0000_8000_0000;
    let sr = write(
        Compound::builder()
            .add_packet(
                SenderReport::builder(0x1111)
                    .ntp_timestamp(ntp)
                    .rtp_timestamp(90000)
                    .packet_count(42)
                    .octet_count(4200),
            )
            .add_packet(
                Sdes::builder().add_chunk(
                    SdesChunk::builder(0x1111)
                        .add_item(SdesItem::builder(SdesItem::CNAME, "cam@10.0.0.1"))
                        .add_item(SdesItem::builder(SdesItem::NAME, "Camera"))
                        .add_item(SdesItem::builder(SdesItem::TOOL, "tool 1.0")),
                ),
            ),
    );
    assert!(s.handle_rtcp(&sr, 1000 * MS, None, peer(5001)));
    let src = s.source(0x1111).unwrap();
    let got = src.sr.unwrap();
    assert_eq!(got.info.ntp_time, ntp);
    assert_eq!(got.info.rtp_time, 90000);
    assert_eq!(got.info.packet_count, 42);
    assert_eq!(got.info.octet_count, 4200);
    assert_eq!(src.cname.as_deref(), Some("cam@10.0.0.1"));
    assert_eq!(src.name.as_deref(), Some("Camera"));
    assert_eq!(src.tool.as_deref(), Some("tool 1.0"));
    assert_eq!(src.rtcp_from, peer(5001));

    // The client answers 250 ms later, having held the SR for 200 ms (DLSR): RTT 50 ms.
    let lsr = rtcp::ntp_middle(ntp);
    let dlsr = 65536 / 5; // 200 ms
    let rr = write(
        Compound::builder().add_packet(
            ReceiverReport::builder(0x2222).add_report_block(
                ReportBlock::builder(0x1111)
                    .fraction_lost(25)
                    .cumulative_lost(0xFF_FFFE) // -2 in 24 bits
                    .extended_sequence_number(70000)
                    .interarrival_jitter(33)
                    .last_sender_report_timestamp(lsr)
                    .delay_since_last_sender_report_timestamp(dlsr),
            ),
        ),
    );
    assert!(s.handle_rtcp(&rr, 1250 * MS, None, peer(6002)));
    let client = s.peer(peer(6002)).unwrap();
    assert_eq!(client.rr_count, 1);
    let rep = client.last_report().unwrap();
    assert_eq!(rep.block.reporter, 0x2222);
    assert_eq!(rep.block.ssrc, 0x1111);
    assert_eq!(rep.block.fraction_lost, 25);
    assert_eq!(rep.block.packets_lost, -2);
    assert_eq!(rep.block.ext_highest_seq, 70000);
    assert_eq!(rep.block.jitter, 33);
    let rtt = rep.round_trip.unwrap();
    let expected = (250 * 65536 / 1000) - dlsr;
    assert!(
        (rtt as i64 - expected as i64).abs() <= 1,
        "{rtt} vs {expected}"
    );
    // The reporter's source carries the block too (GStreamer's rb-* fields).
    assert_eq!(s.source(0x2222).unwrap().rb.unwrap().round_trip, Some(rtt));
}

#[test]
fn round_trip_from_wall_clock_when_sr_unseen() {
    let mut s = Session::default();
    let now_ntp: u64 = 0x0000_1234_5678_0000 << 16 >> 16 | (0xE100_0000u64 << 32);
    let lsr = rtcp::ntp_middle(now_ntp).wrapping_sub(65536); // SR sent one second ago
    let rr = write(
        ReceiverReport::builder(9).add_report_block(
            ReportBlock::builder(3)
                .last_sender_report_timestamp(lsr)
                .delay_since_last_sender_report_timestamp(65536 / 2),
        ),
    );
    s.handle_rtcp(&rr, 0, Some(now_ntp), peer(1));
    let rep = s.peer(peer(1)).unwrap().last_report().unwrap();
    assert_eq!(rep.round_trip, Some(65536 / 2));
    // No LSR: no RTT.
    let rr = write(ReceiverReport::builder(9).add_report_block(ReportBlock::builder(4)));
    s.handle_rtcp(&rr, 0, Some(now_ntp), peer(1));
    let p = s.peer(peer(1)).unwrap();
    let r4 = p.reports.iter().find(|r| r.block.ssrc == 4).unwrap();
    assert_eq!(r4.round_trip, None);
}

#[test]
fn bye_app_xr() {
    let mut s = Session::default();
    let pkt = write(
        Compound::builder()
            .add_packet(ReceiverReport::builder(0x33))
            .add_packet(App::builder(0x33, "TEST").subtype(3).data(&[1, 2, 3, 4]))
            .add_packet(
                Xr::builder()
                    .sender_ssrc(0x33)
                    .add_block(ReceiverReferenceTime::builder().ntp_timestamp(0xABCD)),
            )
            .add_packet(Bye::builder().add_source(0x33).reason("shutting down")),
    );
    assert!(s.handle_rtcp(&pkt, 5 * MS, None, peer(7000)));
    let src = s.source(0x33).unwrap();
    assert!(src.received_bye);
    assert_eq!(src.bye_reason.as_deref(), Some("shutting down"));
    assert_eq!(src.app_packets, 1);
    assert_eq!(src.xr_rrtr_ntp, Some(0xABCD));
    let p = s.peer(peer(7000)).unwrap();
    assert_eq!(
        (p.rr_count, p.app_count, p.xr_count, p.bye_count),
        (1, 1, 1, 1)
    );
    assert!(p.received_bye);
    assert_eq!(
        s.take_events(),
        vec![Event::Bye {
            ssrc: 0x33,
            reason: Some("shutting down".into()),
            from: peer(7000)
        }]
    );
    assert!(!s.has_events());
}

#[test]
fn malformed_rtcp_is_counted_and_ignored() {
    let mut s = Session::default();
    let good = write(ReceiverReport::builder(1));
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80],
        vec![0x40, 201, 0, 1, 0, 0, 0, 1], // version 1
        {
            let mut v = good.clone();
            v[3] = 9; // length beyond the data
            v
        },
        {
            let mut v = good.clone();
            v.extend_from_slice(&[0, 0]); // trailing garbage
            v
        },
        vec![0x81, 201, 0, 1, 0, 0, 0, 1], // one report block announced, none present
    ];
    for c in &cases {
        assert!(!s.handle_rtcp(c, 0, None, peer(1)), "{c:?}");
    }
    assert_eq!(s.counters.rtcp_malformed, cases.len() as u64);
    assert_eq!(s.peer(peer(1)).unwrap().rtcp_malformed, cases.len() as u64);
    assert!(s.sources().is_empty());
    assert!(s.handle_rtcp(&good, 0, None, peer(1)));
    assert_eq!(s.counters.rtcp_malformed, cases.len() as u64);
}

#[test]
fn timeouts_expire_sources_and_peers() {
    let mut s = Session::default();
    s.handle_rtp(&rtp(1, 0, 10, 10), 0, peer(1));
    s.handle_rtp(&rtp(1, 0, 11, 10), 0, peer(2));
    s.handle_rtp(&rtp(2, 0, 11, 10), 3000 * MS, peer(2));
    s.expire(3000 * MS, 2000 * MS);
    assert!(s.source(10).is_none());
    assert!(s.source(11).is_some());
    assert!(s.peer(peer(1)).is_none());
    let ev = s.take_events();
    assert!(ev.contains(&Event::SourceTimeout { ssrc: 10 }));
    assert!(ev.contains(&Event::PeerTimeout { addr: peer(1) }));
    // The cache must not point at a removed source.
    s.handle_rtp(&rtp(3, 0, 11, 10), 3001 * MS, peer(2));
    assert_eq!(s.source(11).unwrap().rtp_packets, 3);
}

#[test]
fn source_and_peer_limits() {
    let mut s = Session::default();
    for ssrc in 0..(MAX_SOURCES as u32 + 10) {
        s.handle_rtp(
            &rtp(0, 0, ssrc, 1),
            0,
            Some(SocketAddr::from((
                [10, 0, (ssrc >> 8) as u8, ssrc as u8],
                1,
            ))),
        );
    }
    assert_eq!(s.sources().len(), MAX_SOURCES);
    assert_eq!(s.counters.sources_dropped, 10);
    assert_eq!(s.peers().len(), MAX_PEERS);
    assert_eq!(s.counters.peers_dropped, 10);
}

#[test]
fn replay_records_roundtrip() {
    let mut rec = Vec::new();
    for i in 0..20u16 {
        encode_record(&mut rec, 0x02 | 0x80, 20, &rtp(i, i as u32 * 1800, 5, 20));
    }
    encode_record(&mut rec, 0x03 | 0x08, 1, &write(ReceiverReport::builder(5)));
    let s = replay_records(&rec);
    assert_eq!(s.source(5).unwrap().packets_received(), 20);
    assert_eq!(s.counters.rtcp_packets, 1);
}

#[test]
fn app_with_oversized_padding_is_malformed_not_a_panic() {
    let mut s = Session::default();
    // APP, padding bit set, length 3 words (16 bytes), last byte claims 200 bytes of padding.
    let mut app = vec![
        0xA0, 204, 0, 3, 0, 0, 0, 1, b'T', b'E', b'S', b'T', 0, 0, 0, 200,
    ];
    assert!(!s.handle_rtcp(&app, 0, None, None));
    assert_eq!(s.counters.rtcp_malformed, 1);
    // Padding of exactly the data part is fine.
    app[15] = 4;
    assert!(s.handle_rtcp(&app, 0, None, None));
    assert_eq!(s.peer(None).unwrap().app_count, 1);
}

#[test]
fn sdes_priv_with_oversized_prefix_is_not_a_panic() {
    let mut s = Session::default();
    // SDES, one chunk: PRIV item of length 2 whose prefix claims 9 bytes, then CNAME "ab".
    let sdes = vec![
        0x81, 202, 0, 4, 0, 0, 0, 9, 8, 2, 9, b'x', 1, 2, b'a', b'b', 0, 0, 0, 0,
    ];
    assert!(s.handle_rtcp(&sdes, 0, None, None));
    assert_eq!(s.source(9).unwrap().cname.as_deref(), Some("ab"));
}
