//! RTCP compound packet inspection with rtcp-types: what one packet tells about its
//! sender (SR, SDES, BYE, APP, XR) and about the sources it reports on (report blocks).

use rtcp_types::prelude::*;
use rtcp_types::{Compound, Packet, ReceiverReferenceTime, XrBlockParserExt};

/// A report block (from an SR or RR) with the cumulative loss sign-extended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlockInfo {
    /// SSRC of the reporter (sender of the SR/RR).
    pub reporter: u32,
    /// SSRC reported on.
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed in the packet).
    pub packets_lost: i32,
    pub ext_highest_seq: u32,
    pub jitter: u32,
    pub lsr: u32,
    pub dlsr: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    pub ssrc: u32,
    pub ntp_time: u64,
    pub rtp_time: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

/// One item of interest in a compound RTCP packet, in packet order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpItem<'a> {
    Sr(SenderInfo),
    Rr {
        ssrc: u32,
    },
    ReportBlock(ReportBlockInfo),
    Sdes {
        ssrc: u32,
        kind: u8,
        value: &'a [u8],
    },
    Bye {
        ssrcs: Vec<u32>,
        reason: Option<&'a [u8]>,
    },
    App {
        ssrc: u32,
        name: [u8; 4],
        subtype: u8,
        len: usize,
    },
    XrRrtr {
        ssrc: u32,
        ntp_time: u64,
    },
    XrDlrr {
        reporter: u32,
        ssrc: u32,
        lrr: u32,
        dlrr: u32,
    },
    XrOther {
        ssrc: u32,
        block_type: u8,
    },
    Feedback {
        pt: u8,
    },
    Unknown {
        pt: u8,
    },
}

/// Sign-extends the 24-bit cumulative-lost field.
pub fn sign_extend_24(v: u32) -> i32 {
    ((v << 8) as i32) >> 8
}

/// Middle 32 bits of a 64-bit NTP timestamp (the LSR / LRR form).
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Walks a compound RTCP packet and calls `f` for each item. Returns the number of
/// packets that failed to parse (the rest of the compound is skipped), or Err when the
/// compound itself is malformed (nothing reported).
pub fn walk_compound(
    data: &[u8],
    mut f: impl FnMut(RtcpItem<'_>),
) -> Result<u32, rtcp_types::RtcpParseError> {
    let compound = Compound::parse(data)?;
    let mut bad = 0;
    for packet in compound {
        let packet = match packet {
            Ok(p) => p,
            Err(_) => {
                bad += 1;
                break;
            }
        };
        match packet {
            Packet::Sr(sr) => {
                f(RtcpItem::Sr(SenderInfo {
                    ssrc: sr.ssrc(),
                    ntp_time: sr.ntp_timestamp(),
                    rtp_time: sr.rtp_timestamp(),
                    packet_count: sr.packet_count(),
                    octet_count: sr.octet_count(),
                }));
                for rb in sr.report_blocks() {
                    f(RtcpItem::ReportBlock(block_info(sr.ssrc(), &rb)));
                }
            }
            Packet::Rr(rr) => {
                f(RtcpItem::Rr { ssrc: rr.ssrc() });
                for rb in rr.report_blocks() {
                    f(RtcpItem::ReportBlock(block_info(rr.ssrc(), &rb)));
                }
            }
            Packet::Sdes(sdes) => {
                for chunk in sdes.chunks() {
                    for item in chunk.items() {
                        // PRIV items are skipped: rtcp-types 0.3 `value()` panics when the
                        // prefix length exceeds the item (found by fuzzing).
                        if item.type_() == rtcp_types::SdesItem::PRIV {
                            continue;
                        }
                        f(RtcpItem::Sdes {
                            ssrc: chunk.ssrc(),
                            kind: item.type_(),
                            value: item.value(),
                        });
                    }
                }
            }
            Packet::Bye(bye) => {
                let ssrcs = bye.ssrcs().collect();
                f(RtcpItem::Bye {
                    ssrcs,
                    reason: bye.reason(),
                });
            }
            Packet::App(app) => {
                // Not `app.data()`: rtcp-types 0.3 panics there when the padding count
                // exceeds the packet (found by fuzzing).
                let pad = app.padding().unwrap_or(0) as usize;
                let Some(len) = app.length().checked_sub(12 + pad) else {
                    bad += 1;
                    break;
                };
                f(RtcpItem::App {
                    ssrc: app.ssrc(),
                    name: app.name(),
                    subtype: app.subtype(),
                    len,
                })
            }
            Packet::Xr(xr) => {
                let ssrc = xr.sender_ssrc();
                for block in xr.block_iter() {
                    match block.block_type() {
                        4 => {
                            if let Ok(rrtr) = block.parse_into::<ReceiverReferenceTime>() {
                                f(RtcpItem::XrRrtr {
                                    ssrc,
                                    ntp_time: rrtr.ntp_timestamp(),
                                });
                            }
                        }
                        5 => {
                            if let Ok(dlrr) =
                                block.parse_into::<rtcp_types::DelaySinceLastReceiverReport>()
                            {
                                for b in dlrr.block_iter() {
                                    f(RtcpItem::XrDlrr {
                                        reporter: ssrc,
                                        ssrc: b.ssrc(),
                                        lrr: b.last_receiver_report(),
                                        dlrr: b.delay_since_last_receiver_report_timestamp(),
                                    });
                                }
                            }
                        }
                        t => f(RtcpItem::XrOther {
                            ssrc,
                            block_type: t,
                        }),
                    }
                }
            }
            Packet::TransportFeedback(p) => f(RtcpItem::Feedback { pt: p.type_() }),
            Packet::PayloadFeedback(p) => f(RtcpItem::Feedback { pt: p.type_() }),
            Packet::Unknown(p) => f(RtcpItem::Unknown { pt: p.type_() }),
        }
    }
    Ok(bad)
}

fn block_info(reporter: u32, rb: &rtcp_types::ReportBlock<'_>) -> ReportBlockInfo {
    ReportBlockInfo {
        reporter,
        ssrc: rb.ssrc(),
        fraction_lost: rb.fraction_lost(),
        packets_lost: sign_extend_24(rb.cumulative_lost()),
        ext_highest_seq: rb.extended_sequence_number(),
        jitter: rb.interarrival_jitter(),
        lsr: rb.last_sender_report_timestamp(),
        dlsr: rb.delay_since_last_sender_report_timestamp(),
    }
}
