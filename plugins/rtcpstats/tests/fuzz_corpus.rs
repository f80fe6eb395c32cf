//! Replays fuzz/corpus/rtp_stats and its deterministic variants (truncated, bit-flipped,
//! spliced, repeated: `gst_ipcam_testutil::fuzz`) through the same core entry point as the
//! fuzz target: no panic allowed. The seeds themselves must find their sources.

use gstrtcpstats::stats::replay_records;

#[test]
fn corpus_and_variants_do_not_panic() {
    let sources: usize = gst_ipcam_testutil::fuzz::corpus("rtp_stats")
        .iter()
        .map(|d| replay_records(d).sources().len())
        .sum();
    assert!(sources >= 3, "the seeds' sources: {sources}");
    gst_ipcam_testutil::fuzz::replay("rtp_stats", |d| {
        let _ = replay_records(d);
    });
}
