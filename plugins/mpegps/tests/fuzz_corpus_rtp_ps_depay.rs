//! Replays the rtp_ps_depay fuzz corpus and its deterministic variants (truncated,
//! bit-flipped, spliced, repeated: `gst_ipcam_testutil::fuzz`) through the fuzz target's entry
//! point; nothing may panic, and every seed yields frames.

use gstmpegps::rtp::replay::{fuzz_depay, replay_length_prefixed};

#[test]
fn corpus_files_produce_frames() {
    let files = gst_ipcam_testutil::fuzz::corpus("rtp_ps_depay");
    let seeds: Vec<_> = files.iter().filter(|d| !d.is_empty()).collect();
    assert!(seeds.len() >= 3, "corpus too small: {}", seeds.len());
    for data in seeds {
        let stream = data.get(1..).unwrap_or_default();
        let (frames, stats) = replay_length_prefixed(stream, 1 << 20);
        assert!(!frames.is_empty(), "no frame ({stats:?})");
    }
}

#[test]
fn corpus_and_variants_do_not_panic() {
    gst_ipcam_testutil::fuzz::replay("rtp_ps_depay", fuzz_depay);
}
