//! Where a muxed stream starts. GB28181 receivers (ZLMediaKit, wvp, NVRs) start decoding at
//! the first video key frame and drop what comes before it, and a PSM written before the video
//! encoder's first output lists only the audio. So when a video stream is expected, nothing
//! is written before its first key frame: audio and delta frames before it are dropped, and
//! the first PSM lists every stream. If no key frame comes within [`START_WAIT`] of stream
//! time (a camera whose video is broken), the stream starts without it.

/// How long audio waits for the first video key frame (90 kHz ticks: 3 s).
pub const START_WAIT: u64 = 3 * 90_000;

#[derive(Debug, Default, Clone)]
pub struct StartGate {
    started: bool,
    first_pts: Option<u64>,
    /// Frames dropped before the start.
    pub dropped: u64,
}

impl StartGate {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_started(&self) -> bool {
        self.started
    }

    /// Whether this frame is written. `video_expected`: a video stream exists or is being
    /// negotiated. `pts` in 90 kHz ticks (unwrapped is not needed: differences under 2^32).
    pub fn admit(
        &mut self,
        is_video: bool,
        key: bool,
        video_expected: bool,
        pts: Option<u64>,
    ) -> bool {
        if self.started {
            return true;
        }
        let waited = match (self.first_pts, pts) {
            (Some(first), Some(now)) => now.wrapping_sub(first) % (1 << 33) >= START_WAIT,
            _ => false,
        };
        if pts.is_some() && self.first_pts.is_none() {
            self.first_pts = pts;
        }
        if (is_video && key) || !video_expected || (waited && !is_video) {
            self.started = true;
            return true;
        }
        self.dropped += 1;
        false
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_first_video_key_frame() {
        let mut g = StartGate::new();
        assert!(!g.admit(false, false, true, Some(0)));
        assert!(!g.admit(true, false, true, Some(3600)));
        assert!(!g.admit(false, false, true, Some(7200)));
        assert!(g.admit(true, true, true, Some(10_800)));
        assert!(g.admit(false, false, true, Some(10_800)));
        assert!(g.admit(true, false, true, Some(14_400)));
        assert_eq!(g.dropped, 3);
    }

    #[test]
    fn audio_only_starts_at_once_and_broken_video_does_not_block_audio_forever() {
        let mut g = StartGate::new();
        assert!(g.admit(false, false, false, Some(0)));
        let mut g = StartGate::new();
        assert!(!g.admit(false, false, true, Some(0)));
        assert!(!g.admit(false, false, true, Some(START_WAIT - 1)));
        assert!(g.admit(false, false, true, Some(START_WAIT)));
        // Across the 33-bit wrap.
        let mut g = StartGate::new();
        assert!(!g.admit(false, false, true, Some((1 << 33) - 10)));
        assert!(g.admit(false, false, true, Some(START_WAIT)));
    }
}
