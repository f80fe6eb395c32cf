//! Playback timing that players follow. A camera asked for `Scale: 2` sends its recording
//! twice as fast but keeps the recording's timestamps (PS SCR/PTS/DTS, RTP), so a player
//! that syncs to those plays at 1× and falls behind (wvp-GB28181-pro users see exactly
//! that). [`Scaler`] maps the camera's content time to output time, dividing its progress
//! by the scale, continuous across speed changes; [`retime_ps`] writes the mapped times
//! into the PS frame itself, so every downstream (demuxer, muxer, player) sees them.
//!
//! Rules, all with the arrival time passed in (`now`, ns in the output time base):
//! - the first frame is anchored at its arrival; a speed change re-anchors at the last
//!   frame, so output time never jumps at a change;
//! - content that jumps (a seek: more than [`MAX_JUMP_TICKS`] ahead or [`MAX_BACK_TICKS`]
//!   back) is re-anchored at the arrival and reported as a discontinuity;
//! - playback follows the clock: output later than the arrival by more than
//!   [`LATE_LIMIT_NS`] (after a pause, or a camera that ignores Scale and keeps sending at
//!   1×) or earlier by more than [`EARLY_LIMIT_NS`] (a seek by a few seconds) is
//!   re-anchored at the arrival. A download keeps true timestamps: scale 1, no clock;
//! - output time never goes back.

use gst_ipcam_common::startcode::find_start_code;
use gstmpegps::demux::headers::{self, Parse};
use gstmpegps::demux::scan::{self, pts_diff};
use gstmpegps::mux::headers::{write_pack_header, write_timestamp};
use gstmpegps::ps;

/// PS/RTP clock.
const HZ: f64 = 90_000.0;
/// Content that moves forward by more than this between two frames jumped (a seek). At 8×
/// cameras send only key frames, a second or two apart.
pub const MAX_JUMP_TICKS: i64 = 5 * 90_000;
/// Content that moves back by more than this jumped (B-frames move PTS back a little).
pub const MAX_BACK_TICKS: i64 = 90_000;
/// Output later than the arrival by more than this is re-anchored at the arrival.
pub const LATE_LIMIT_NS: u64 = 500_000_000;
/// Output earlier than the arrival by more than this is re-anchored at the arrival (the
/// camera's first GOP comes in a burst: up to a second or two).
pub const EARLY_LIMIT_NS: u64 = 2_000_000_000;

/// The timing of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTiming {
    /// Output time of the frame (ns).
    pub pts_ns: u64,
    /// The content jumped: the frame starts a new stretch.
    pub discont: bool,
}

/// Maps a camera's content time (90 kHz, 33 bits) to output time (ns) at a scale.
#[derive(Debug, Clone)]
pub struct Scaler {
    scale: f64,
    follow_clock: bool,
    /// (content ticks, unwrapped; output ns) that map to each other.
    anchor: Option<(i64, u64)>,
    /// The current frame's reference timestamp: (33-bit value, unwrapped).
    reference: Option<(u64, i64)>,
    last_out: u64,
}

impl Scaler {
    /// Playback: follows the clock, scale 1 until [`Scaler::set_scale`].
    pub fn playback() -> Scaler {
        Scaler::new(true)
    }

    /// Download: true timestamps (scale 1, not held to the clock: it comes faster).
    pub fn download() -> Scaler {
        Scaler::new(false)
    }

    fn new(follow_clock: bool) -> Scaler {
        Scaler {
            scale: 1.0,
            follow_clock,
            anchor: None,
            reference: None,
            last_out: 0,
        }
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// From the next frame on, content time advances `scale` times faster than output time.
    /// Ignored for a download and for values that are not finite and positive.
    pub fn set_scale(&mut self, scale: f64) {
        if !self.follow_clock || !scale.is_finite() || scale <= 0.0 {
            return;
        }
        if let Some((_, ext)) = self.reference {
            self.anchor = Some((ext, self.last_out));
        }
        self.scale = scale;
    }

    /// Times a frame whose first timestamp (DTS, else PTS, else SCR) is `ts` and that
    /// arrived at `now_ns`. A frame without timestamp keeps the previous frame's time.
    pub fn frame(&mut self, ts: Option<u64>, now_ns: u64) -> FrameTiming {
        let Some(ts) = ts else {
            let pts_ns = if self.anchor.is_some() {
                self.last_out
            } else {
                now_ns
            };
            self.last_out = pts_ns;
            return FrameTiming {
                pts_ns,
                discont: false,
            };
        };
        let (ext, jumped) = match self.reference {
            Some((raw, prev)) => {
                let d = pts_diff(raw, ts);
                (prev + d, !(-MAX_BACK_TICKS..=MAX_JUMP_TICKS).contains(&d))
            }
            None => (0, false),
        };
        self.reference = Some((ts, ext));
        let mut discont = false;
        if self.anchor.is_none() {
            self.anchor = Some((ext, now_ns));
        } else if jumped {
            self.anchor = Some((ext, now_ns.max(self.last_out)));
            discont = true;
        }
        let mut out = self.map_ext(ext);
        if self.follow_clock {
            if out.saturating_add(LATE_LIMIT_NS) < now_ns {
                self.anchor = Some((ext, now_ns));
                out = now_ns;
            } else if out > now_ns.saturating_add(EARLY_LIMIT_NS) {
                self.anchor = Some((ext, now_ns.max(self.last_out)));
                out = self.map_ext(ext);
                discont = true;
            }
        }
        let out = out.max(self.last_out);
        self.last_out = out;
        FrameTiming {
            pts_ns: out,
            discont,
        }
    }

    /// Output time (90 kHz, 33 bits) of another timestamp of the current frame (its PTS,
    /// DTS, the pack's SCR), relative to the frame's reference.
    pub fn map_ticks(&self, ts: u64) -> u64 {
        let Some((raw, ext)) = self.reference else {
            return ts;
        };
        let ns = self.map_ext(ext + pts_diff(raw, ts));
        ((ns as f64 * HZ / 1e9) as u64) % ps::PTS_MODULO
    }

    fn map_ext(&self, ext: i64) -> u64 {
        let Some((ain, aout)) = self.anchor else {
            return 0;
        };
        let d_ns = (ext - ain) as f64 * 1e9 / HZ / self.scale;
        (aout as f64 + d_ns).max(0.0) as u64
    }
}

/// The reference timestamp of a PS frame for [`Scaler::frame`]: its first PES DTS or PTS
/// (video first), else its first pack's SCR.
pub fn frame_timestamp(frame: &[u8]) -> Option<u64> {
    if let Some(f) = scan::first_pts(frame) {
        return Some(f.dts.unwrap_or(f.pts));
    }
    let p = scan::first_pack(frame)?;
    read_scr(frame.get(p..)?)
}

/// The 33-bit SCR base of the MPEG-2 pack header at `pack[0]` (`00 00 01 BA`).
fn read_scr(pack: &[u8]) -> Option<u64> {
    let b = pack.get(4..9)?;
    if b[0] >> 6 != 1 {
        return None;
    }
    let b = |i: usize| u64::from(b[i]);
    Some(
        ((b(0) >> 3) & 7) << 30
            | (b(0) & 3) << 28
            | b(1) << 20
            | (b(2) >> 3) << 15
            | (b(2) & 3) << 13
            | b(3) << 5
            | b(4) >> 3,
    )
}

/// Rewrites, in place, the SCR of every MPEG-2 pack header and the PTS/DTS of every MPEG-2
/// PES header of audio/video in `frame`, each through `map`; returns how many. Payloads are
/// skipped by their length, other PS packets by theirs; nothing outside `frame` is touched
/// and a malformed frame is left as it is from where it stops parsing.
pub fn retime_ps(frame: &mut [u8], map: impl Fn(u64) -> u64) -> usize {
    let mut n = 0;
    let mut i = 0;
    while let Some(sc) = find_start_code(frame, i) {
        let Some(&id) = frame.get(sc + 3) else { break };
        i = sc + 3;
        if id == ps::PACK_START {
            if let Parse::Ok(len) = headers::pack_header_len(&frame[sc..])
                && let Some(scr) = read_scr(&frame[sc..])
            {
                let mut v = Vec::with_capacity(14);
                // Only the SCR bytes are copied back: the mux rate stays the camera's.
                write_pack_header(&mut v, map(scr), 1);
                frame[sc + 4..sc + 10].copy_from_slice(&v[4..10]);
                n += 1;
                i = sc + len;
            }
        } else if ps::is_video_stream_id(id) || ps::is_audio_stream_id(id) {
            let Parse::Ok(h) = headers::parse_pes_header(&frame[sc..]) else {
                continue;
            };
            if frame[sc + 6] & 0xC0 == 0x80 {
                for (present, at) in [(h.pts.is_some(), sc + 9), (h.dts.is_some(), sc + 14)] {
                    if present && let Some(ts) = headers::read_timestamp(&frame[at..]) {
                        let mut v = Vec::with_capacity(5);
                        write_timestamp(&mut v, frame[at] >> 4, map(ts));
                        frame[at..at + 5].copy_from_slice(&v);
                        n += 1;
                    }
                }
            }
            i = sc + h.header_len + h.payload_len.unwrap_or(0);
        } else if id >= 0xBB {
            // System header, PSM, private streams, padding: a 16-bit length follows.
            let Some(len) = frame.get(sc + 4..sc + 6) else {
                break;
            };
            i = sc + 6 + usize::from(u16::from_be_bytes([len[0], len[1]]));
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstmpegps::mux::headers::write_pes_header;

    const S: u64 = 1_000_000_000;
    /// Ticks of `ms`.
    fn t(ms: u64) -> u64 {
        ms * 90
    }

    #[test]
    fn scale_divides_content_progress() {
        let mut s = Scaler::playback();
        assert_eq!(s.frame(Some(t(1000)), 10 * S).pts_ns, 10 * S);
        s.set_scale(2.0);
        // 2 s of content in 1 s of arrivals: 1 s of output.
        for k in 1..=50 {
            let f = s.frame(Some(t(1000 + 40 * k)), 10 * S + k * 20_000_000);
            assert_eq!(f.pts_ns, 10 * S + k * 20_000_000, "frame {k}");
            assert!(!f.discont);
        }
        // Back to 1×: continuous from where it was.
        s.set_scale(1.0);
        let f = s.frame(Some(t(3000 + 40)), 11 * S + 40_000_000);
        assert_eq!(f.pts_ns, 11 * S + 40_000_000);
        // Half speed: 1 s of content takes 2 s.
        s.set_scale(0.5);
        let f = s.frame(Some(t(4040)), 13 * S + 40_000_000);
        assert_eq!(f.pts_ns, 13 * S + 40_000_000);
    }

    #[test]
    fn seek_is_discont_and_time_never_goes_back() {
        let mut s = Scaler::playback();
        s.frame(Some(t(60_000)), S);
        s.frame(Some(t(60_040)), S + 40_000_000);
        // Seek back to 10 s: new anchor at the arrival.
        let f = s.frame(Some(t(10_000)), S + 80_000_000);
        assert_eq!(f.pts_ns, S + 80_000_000);
        assert!(f.discont);
        // Seek forward an hour, the frame arrives "early" by the clock: not before the last.
        let f = s.frame(Some(t(3_610_000)), S + 60_000_000);
        assert!(f.discont);
        assert_eq!(f.pts_ns, S + 80_000_000);
        let f = s.frame(Some(t(3_610_040)), S + 120_000_000);
        assert_eq!(f.pts_ns, S + 120_000_000);
    }

    #[test]
    fn follows_the_clock_after_a_pause_or_a_camera_that_ignores_scale() {
        let mut s = Scaler::playback();
        s.frame(Some(t(0)), S);
        // Paused for 10 s: the next frame is late and starts at its arrival (no discont:
        // the content goes on).
        let f = s.frame(Some(t(40)), 11 * S);
        assert_eq!(
            f,
            FrameTiming {
                pts_ns: 11 * S,
                discont: false
            }
        );
        // Scale 2 asked, but the camera keeps 1×: output follows arrivals within the limit.
        s.set_scale(2.0);
        for k in 1..=100u64 {
            let f = s.frame(Some(t(40 + 40 * k)), 11 * S + k * 40_000_000);
            let lag = 11 * S + k * 40_000_000 - f.pts_ns;
            assert!(lag <= LATE_LIMIT_NS, "frame {k}: {lag}");
        }
        // A small seek forward (3 s) at 1×: re-anchored instead of 3 s early.
        s.set_scale(1.0);
        let last = s.frame(Some(t(4040)), 15 * S).pts_ns;
        let f = s.frame(Some(t(7040)), 15 * S + 40_000_000);
        assert!(f.discont);
        assert!(f.pts_ns >= last && f.pts_ns <= 15 * S + 40_000_000, "{f:?}");
    }

    #[test]
    fn download_keeps_true_timestamps_and_wraps() {
        let mut s = Scaler::download();
        s.set_scale(4.0);
        assert_eq!(s.scale(), 1.0);
        let start = ps::PTS_MODULO - t(1000);
        s.frame(Some(start), S);
        // 4 s of content arrive in 1 s: output advances 4 s, across the 33-bit wrap.
        let f = s.frame(Some(t(3000)), 2 * S);
        assert_eq!(f.pts_ns, 5 * S);
        assert!(!f.discont);
        assert_eq!(s.map_ticks(t(3000)), t(5000));
        assert_eq!(s.map_ticks(t(2960)), t(4960));
    }

    #[test]
    fn frame_without_timestamp_keeps_the_last_time() {
        let mut s = Scaler::playback();
        assert_eq!(s.frame(None, 7).pts_ns, 7);
        s.frame(Some(0), S);
        assert_eq!(s.frame(None, 2 * S).pts_ns, S);
    }

    fn ps_frame(scr: u64, pts: u64, dts: Option<u64>, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        write_pack_header(&mut f, scr, 1000);
        // A system header to skip by its length.
        f.extend_from_slice(&[0, 0, 1, 0xBB, 0, 2, 0xAA, 0xBB]);
        write_pes_header(&mut f, 0xE0, payload.len(), Some(pts), dts, true);
        f.extend_from_slice(payload);
        write_pes_header(&mut f, 0xC0, 3, Some(pts + 10), None, true);
        f.extend_from_slice(&[0, 0, 1]);
        f
    }

    #[test]
    fn retime_rewrites_scr_pts_dts_only() {
        // The payload holds bytes that look like a PES start code: skipped by length.
        let payload = [0, 0, 1, 0xE0, 0, 5, 0x80, 0x80, 5, 0x21, 0, 1, 0, 1];
        let mut f = ps_frame(t(1000), t(1100), Some(t(1050)), &payload);
        let orig = f.clone();
        assert_eq!(frame_timestamp(&f), Some(t(1050)));
        let n = retime_ps(&mut f, |ts| ts + 7);
        assert_eq!(n, 4, "SCR, video PTS and DTS, audio PTS");
        assert_eq!(frame_timestamp(&f), Some(t(1050) + 7));
        let found: Vec<_> = {
            let mut v = vec![];
            scan::scan_pts(&f, |p| {
                v.push((p.stream_id, p.pts, p.dts));
                true
            });
            v
        };
        assert_eq!(found[0], (0xE0, t(1100) + 7, Some(t(1050) + 7)));
        assert_eq!(found.last(), Some(&(0xC0, t(1100) + 17, None)));
        assert_eq!(read_scr(&f), Some(t(1000) + 7));
        // Mux rate, stuffing, system header and payload bytes untouched.
        assert_eq!(f[10..14], orig[10..14]);
        let pos = orig
            .windows(payload.len())
            .position(|w| w == payload)
            .unwrap();
        assert_eq!(f[pos..pos + payload.len()], payload);
        assert_eq!(f.len(), orig.len());
    }

    #[test]
    fn retime_survives_junk() {
        let f = ps_frame(5, 6, None, &[9; 20]);
        for cut in 0..f.len() {
            let mut g = f[..cut].to_vec();
            retime_ps(&mut g, |ts| ts + 1);
        }
        let mut junk: Vec<u8> = (0..2000u32).map(|i| (i * 7919 % 251) as u8).collect();
        for k in (0..junk.len()).step_by(97) {
            junk[k..(k + 4).min(2000)].copy_from_slice(&[0, 0, 1, 0xE0][..(2000 - k).min(4)]);
        }
        retime_ps(&mut junk, |ts| ts.wrapping_mul(3));
        assert_eq!(frame_timestamp(&[]), None);
    }
}
