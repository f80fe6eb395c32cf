use super::*;
use crate::rtp::packetizer::fragments;

/// A fake PS frame: pack start code, then bytes that never look like a start code.
fn ps_frame(n: usize, len: usize) -> Vec<u8> {
    let mut data = vec![0, 0, 1, 0xBA];
    data.extend((0..len.saturating_sub(4)).map(|i| 0x10 + ((i + n) % 200) as u8));
    data.truncate(len);
    data
}

#[derive(Clone, Debug)]
struct Pkt {
    meta: PacketMeta,
    payload: Vec<u8>,
}

/// Packetizes `frames` (lengths) starting at `seq`/`ts`, 3000 ticks apart.
fn packets(frames: &[usize], mut seq: u16, mut ts: u32, capacity: usize) -> Vec<Pkt> {
    let mut out = Vec::new();
    for (n, &len) in frames.iter().enumerate() {
        let frame = ps_frame(n, len);
        for f in fragments(len, capacity) {
            out.push(Pkt {
                meta: PacketMeta {
                    seq,
                    timestamp: ts,
                    ssrc: 0x1234,
                    marker: f.marker,
                    discont: false,
                },
                payload: frame[f.offset..f.offset + f.len].to_vec(),
            });
            seq = seq.wrapping_add(1);
        }
        ts = ts.wrapping_add(3000);
    }
    out
}

type Frames = Vec<Frame<Vec<u8>>>;
type Events = Vec<Event<Vec<u8>>>;

fn run(depay: &mut Depacketizer<Vec<u8>>, pkts: &[Pkt]) -> (Frames, Events) {
    let mut frames = Vec::new();
    let mut others = Vec::new();
    for p in pkts {
        for ev in depay.push(p.meta, &p.payload, p.payload.clone()) {
            match ev {
                Event::Frame(f) => frames.push(f),
                other => others.push(other),
            }
        }
    }
    (frames, others)
}

fn bytes(f: &Frame<Vec<u8>>) -> Vec<u8> {
    f.parts.concat()
}

#[test]
fn reassembles_frames_in_order() {
    let sizes = [5000, 100, 1388, 2777, 1];
    let pkts = packets(&sizes, 100, 1000, 1388);
    let mut d = Depacketizer::default();
    let (frames, others) = run(&mut d, &pkts);
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(frames.len(), sizes.len());
    for (n, (f, &len)) in frames.iter().zip(&sizes).enumerate() {
        assert_eq!(bytes(f), ps_frame(n, len));
        assert_eq!(f.size, len);
        assert_eq!(f.end, FrameEnd::Marker);
        assert_eq!(f.timestamp, 1000 + 3000 * n as u32);
        assert_eq!(f.discont, n == 0, "only the first frame is discont");
    }
    assert_eq!(frames[0].first_seq, 100);
    assert_eq!(frames[0].last_seq, 103);
    let st = d.stats();
    assert_eq!(
        (st.frames, st.packets, st.packets_lost, st.frames_dropped),
        (5, pkts.len() as u64, 0, 0)
    );
}

#[test]
fn frame_ends_on_timestamp_change_without_marker() {
    let mut pkts = packets(&[3000, 3000], 0, 0, 1388);
    for p in &mut pkts {
        p.meta.marker = false;
    }
    let mut d = Depacketizer::default();
    let (frames, _) = run(&mut d, &pkts);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].end, FrameEnd::TimestampChange);
    assert_eq!(bytes(&frames[0]), ps_frame(0, 3000));
    // The last one needs a flush (EOS).
    let flushed: Vec<_> = d.flush();
    assert!(
        matches!(&flushed[..], [Event::Frame(f)] if f.end == FrameEnd::Flush && f.size == 3000)
    );
    assert!(d.flush().is_empty());
}

#[test]
fn loss_in_the_middle_drops_the_frame_and_flags_discont() {
    let mut pkts = packets(&[4000, 4000, 4000], 10, 0, 1388);
    pkts.remove(4); // second packet of the second frame
    let mut d = Depacketizer::default();
    let (frames, others) = run(&mut d, &pkts);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].timestamp, 0);
    assert_eq!(frames[1].timestamp, 6000);
    assert!(frames[1].discont);
    assert_eq!(bytes(&frames[1]), ps_frame(2, 4000));
    assert!(
        others
            .iter()
            .any(|e| matches!(e, Event::Lost { count: 1, seq: 15 }))
    );
    assert!(others.iter().any(|e| matches!(
        e,
        Event::Dropped {
            timestamp: 3000,
            reason: DropReason::Loss,
            ..
        }
    )));
    let st = d.stats();
    assert_eq!((st.frames, st.packets_lost, st.frames_dropped), (2, 1, 1));
}

#[test]
fn lost_marker_packet_drops_that_frame_only() {
    let mut pkts = packets(&[3000, 3000, 3000], 0, 0, 1388);
    pkts.remove(5); // marker packet of the second frame
    let mut d = Depacketizer::default();
    let (frames, others) = run(&mut d, &pkts);
    let ts: Vec<_> = frames.iter().map(|f| f.timestamp).collect();
    assert_eq!(ts, vec![0, 6000]);
    assert!(frames[1].discont);
    assert!(others.iter().any(|e| matches!(
        e,
        Event::Dropped {
            timestamp: 3000,
            ..
        }
    )));
}

#[test]
fn loss_at_the_start_of_a_frame_drops_it() {
    let mut pkts = packets(&[3000, 3000, 3000], 0, 0, 1388);
    pkts.remove(3); // first packet (pack header) of the second frame
    let mut d = Depacketizer::default();
    let (frames, others) = run(&mut d, &pkts);
    let ts: Vec<_> = frames.iter().map(|f| f.timestamp).collect();
    assert_eq!(ts, vec![0, 6000]);
    assert!(others.iter().any(|e| matches!(
        e,
        Event::Dropped {
            timestamp: 3000,
            reason: DropReason::MissingStart,
            ..
        }
    )));
}

#[test]
fn whole_frames_lost_cost_nothing_more() {
    let mut pkts = packets(&[3000, 3000, 3000], 0, 0, 1388);
    pkts.drain(3..6); // all of the second frame
    let mut d = Depacketizer::default();
    let (frames, others) = run(&mut d, &pkts);
    let ts: Vec<_> = frames.iter().map(|f| f.timestamp).collect();
    assert_eq!(ts, vec![0, 6000]);
    assert!(frames[1].discont);
    assert!(!others.iter().any(|e| matches!(e, Event::Dropped { .. })));
    assert_eq!(d.stats().packets_lost, 3);
}

#[test]
fn joining_mid_frame_waits_for_a_frame_start() {
    let pkts = packets(&[3000, 3000], 0, 0, 1388);
    let mut d = Depacketizer::default();
    let (frames, others) = run(&mut d, &pkts[1..]);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].timestamp, 3000);
    assert!(frames[0].discont);
    assert!(matches!(
        others[..],
        [Event::Dropped {
            reason: DropReason::MissingStart,
            ..
        }]
    ));
}

#[test]
fn reordering_within_a_frame_drops_it_and_ignores_the_late_packet() {
    let mut pkts = packets(&[4000, 4000, 4000], 0, 0, 1388);
    pkts.swap(4, 5);
    let mut d = Depacketizer::default();
    let (frames, others) = run(&mut d, &pkts);
    let ts: Vec<_> = frames.iter().map(|f| f.timestamp).collect();
    assert_eq!(ts, vec![0, 6000]);
    assert!(others.iter().any(|e| matches!(e, Event::Late { seq: 4 })));
    assert_eq!(d.stats().packets_late, 1);
}

#[test]
fn duplicates_are_ignored() {
    let mut pkts = packets(&[3000, 3000], 0, 0, 1388);
    let dup = pkts[1].clone();
    pkts.insert(2, dup);
    let last = pkts.last().unwrap().clone();
    pkts.push(last);
    let mut d = Depacketizer::default();
    let (frames, others) = run(&mut d, &pkts);
    assert_eq!(frames.len(), 2);
    assert_eq!(bytes(&frames[0]), ps_frame(0, 3000));
    assert_eq!(bytes(&frames[1]), ps_frame(1, 3000));
    assert!(!frames[1].discont);
    assert_eq!(others.len(), 2);
    assert_eq!(d.stats().packets_late, 2);
}

#[test]
fn sequence_and_timestamp_wrap() {
    let sizes = [3000, 3000, 3000, 3000];
    let pkts = packets(&sizes, 65533, u32::MAX - 4000, 1388);
    let mut d = Depacketizer::default();
    let (frames, others) = run(&mut d, &pkts);
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(frames.len(), 4);
    assert_eq!(frames[1].timestamp, (u32::MAX - 4000).wrapping_add(3000));
    assert_eq!(frames[2].timestamp, 1999);
    assert_eq!(frames[0].first_seq, 65533);
    assert_eq!(frames[1].first_seq, 0);
    for (n, f) in frames.iter().enumerate() {
        assert_eq!(bytes(f), ps_frame(n, 3000));
    }
}

#[test]
fn discont_hint_from_transport_breaks_the_frame() {
    let mut pkts = packets(&[3000, 3000], 0, 0, 1388);
    pkts[1].meta.discont = true;
    let mut d = Depacketizer::default();
    let (frames, _) = run(&mut d, &pkts);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].timestamp, 3000);
}

#[test]
fn packet_lost_notice_breaks_the_pending_frame() {
    let pkts = packets(&[3000, 3000], 0, 0, 1388);
    let mut d = Depacketizer::default();
    let (f1, _) = run(&mut d, &pkts[..2]);
    assert!(f1.is_empty());
    d.packet_lost();
    let (f2, others) = run(&mut d, &pkts[2..]);
    assert_eq!(f2.len(), 1);
    assert_eq!(f2[0].timestamp, 3000);
    assert!(f2[0].discont);
    assert!(matches!(others[..], [Event::Dropped { timestamp: 0, .. }]));
}

#[test]
fn oversized_frames_are_dropped() {
    let pkts = packets(&[5000, 1000, 6000, 1000], 0, 0, 1388);
    let mut d = Depacketizer::new(4096);
    let (frames, others) = run(&mut d, &pkts);
    let ts: Vec<_> = frames.iter().map(|f| f.timestamp).collect();
    assert_eq!(ts, vec![3000, 9000]);
    assert!(frames[0].discont && frames[1].discont);
    let st = d.stats();
    assert_eq!((st.frames_dropped, st.frames_too_large), (2, 2));
    assert!(others.iter().any(|e| matches!(
        e,
        Event::Dropped {
            reason: DropReason::TooLarge,
            size: 5000,
            ..
        }
    )));
}

#[test]
fn ssrc_change_is_a_restart() {
    let mut pkts = packets(&[3000, 3000], 0, 0, 1388);
    for p in &mut pkts[3..] {
        p.meta.ssrc = 99;
        p.meta.seq = p.meta.seq.wrapping_add(30000);
    }
    let mut d = Depacketizer::default();
    let (frames, _) = run(&mut d, &pkts);
    assert_eq!(frames.len(), 2);
    assert!(frames[1].discont);
    assert_eq!(d.last_packet(), Some((99, 30005)));
}

#[test]
fn big_backward_jump_is_a_restart() {
    let mut pkts = packets(&[3000, 3000], 1000, 0, 1388);
    for p in &mut pkts[3..] {
        p.meta.seq = p.meta.seq.wrapping_sub(500);
    }
    let mut d = Depacketizer::default();
    let (frames, _) = run(&mut d, &pkts);
    assert_eq!(frames.len(), 2);
}

#[test]
fn empty_payloads_and_reset() {
    let mut d: Depacketizer<Vec<u8>> = Depacketizer::default();
    let meta = PacketMeta {
        seq: 1,
        timestamp: 5,
        ssrc: 1,
        marker: true,
        discont: false,
    };
    assert!(d.push(meta, &[], Vec::new()).is_empty());
    assert_eq!(d.stats().frames, 0);
    d.reset();
    assert_eq!(d.last_packet(), None);
    assert_eq!(d.pending_timestamp(), None);
}
