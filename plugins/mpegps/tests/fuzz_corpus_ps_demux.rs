//! Replays fuzz/corpus/ps_demux and its deterministic variants (truncated, bit-flipped,
//! spliced, repeated: `gst_ipcam_testutil::fuzz`) through the same core entry point as the
//! `ps_demux` fuzz target: no panic allowed.

#[test]
fn replay_ps_demux_corpus() {
    gst_ipcam_testutil::fuzz::replay("ps_demux", gstmpegps::demux::fuzz_one);
}
