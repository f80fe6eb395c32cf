//! Splitting one PS frame into RTP packet payloads.

use super::RTP_HEADER_LEN;

/// Payload bytes available in one packet of `mtu` bytes (RTP header and CSRCs included in
/// the MTU, as GStreamer's `mtu` property counts it). `None` when not even one payload
/// byte fits.
pub fn payload_capacity(mtu: u32, csrc_count: u8) -> Option<usize> {
    let header = RTP_HEADER_LEN + 4 * usize::from(csrc_count);
    usize::try_from(mtu)
        .ok()?
        .checked_sub(header)
        .filter(|capacity| *capacity > 0)
}

/// One packet's share of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Offset of the payload in the frame.
    pub offset: usize,
    /// Payload length, `1..=capacity`.
    pub len: usize,
    /// Set on the last packet of the frame.
    pub marker: bool,
}

/// Iterator over the fragments of a frame; see [`fragments`].
#[derive(Debug, Clone)]
pub struct Fragments {
    frame_len: usize,
    capacity: usize,
    offset: usize,
}

/// Cuts a frame of `frame_len` bytes into packets of at most `capacity` payload bytes, all
/// full but the last, which carries the marker. An empty frame yields no packet.
pub fn fragments(frame_len: usize, capacity: usize) -> Fragments {
    Fragments {
        frame_len,
        capacity: capacity.max(1),
        offset: 0,
    }
}

impl Fragments {
    /// Number of packets the frame needs.
    pub fn packet_count(&self) -> usize {
        self.frame_len.div_ceil(self.capacity)
    }
}

impl Iterator for Fragments {
    type Item = Fragment;

    fn next(&mut self) -> Option<Fragment> {
        let remaining = self.frame_len.checked_sub(self.offset)?;
        if remaining == 0 {
            return None;
        }
        let len = remaining.min(self.capacity);
        let fragment = Fragment {
            offset: self.offset,
            len,
            marker: len == remaining,
        };
        self.offset += len;
        Some(fragment)
    }
}

/// One tick of the 90 kHz RTP clock, in nanoseconds (rounded up).
pub const TICK_NS: u64 = 11_112;

/// The time (ns) a PS frame's RTP timestamp is taken from: its DTS (frames are sent in decode
/// order, so with B-frames the PTS would go backwards), else its PTS; never at or before the
/// previous frame's (`last_ns`), since a DTS that was negative in running time arrives clamped
/// or missing and two frames must not share a timestamp.
pub fn frame_send_time(
    last_ns: Option<u64>,
    dts_ns: Option<u64>,
    pts_ns: Option<u64>,
) -> Option<u64> {
    let t = dts_ns.or(pts_ns)?;
    Some(match last_ns {
        Some(last) if t <= last => last + TICK_NS,
        _ => t,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn send_times_follow_decode_order_and_never_repeat() {
        use super::frame_send_time as f;
        // I P B B with B-frame reordering: DTS wins over PTS.
        assert_eq!(f(None, Some(0), Some(80)), Some(0));
        assert_eq!(
            f(Some(0), Some(40_000_000), Some(200_000_000)),
            Some(40_000_000)
        );
        // Negative DTS clamped away upstream: the PTS of the first frames, then monotonic.
        assert_eq!(f(None, None, Some(0)), Some(0));
        assert_eq!(
            f(Some(120_000_000), Some(0), Some(40_000_000)),
            Some(120_011_112)
        );
        assert_eq!(f(Some(5), None, None), None);
    }

    use super::*;

    #[test]
    fn capacity_counts_header_and_csrcs() {
        assert_eq!(payload_capacity(1400, 0), Some(1388));
        assert_eq!(payload_capacity(1400, 2), Some(1380));
        assert_eq!(payload_capacity(12, 0), None);
        assert_eq!(payload_capacity(13, 0), Some(1));
        assert_eq!(payload_capacity(0, 15), None);
    }

    #[test]
    fn splits_at_capacity_with_marker_on_last() {
        let frags: Vec<_> = fragments(3000, 1388).collect();
        assert_eq!(
            frags,
            vec![
                Fragment {
                    offset: 0,
                    len: 1388,
                    marker: false
                },
                Fragment {
                    offset: 1388,
                    len: 1388,
                    marker: false
                },
                Fragment {
                    offset: 2776,
                    len: 224,
                    marker: true
                },
            ]
        );
        assert_eq!(fragments(3000, 1388).packet_count(), 3);
    }

    #[test]
    fn exact_multiple_and_small_frames() {
        let frags: Vec<_> = fragments(2776, 1388).collect();
        assert_eq!(frags.len(), 2);
        assert!(frags[1].marker && frags[1].len == 1388);
        let one: Vec<_> = fragments(5, 1388).collect();
        assert_eq!(
            one,
            vec![Fragment {
                offset: 0,
                len: 5,
                marker: true
            }]
        );
        assert_eq!(fragments(0, 1388).count(), 0);
        assert_eq!(fragments(0, 1388).packet_count(), 0);
    }

    #[test]
    fn fragments_cover_the_frame_exactly() {
        for len in [1usize, 2, 99, 100, 101, 1000, 4097] {
            for cap in [1usize, 7, 100, 1388] {
                let frags: Vec<_> = fragments(len, cap).collect();
                assert_eq!(frags.len(), fragments(len, cap).packet_count());
                let mut expect = 0;
                for (i, f) in frags.iter().enumerate() {
                    assert_eq!(f.offset, expect);
                    assert!(f.len >= 1 && f.len <= cap);
                    assert_eq!(f.marker, i + 1 == frags.len());
                    expect += f.len;
                }
                assert_eq!(expect, len);
            }
        }
    }
}
