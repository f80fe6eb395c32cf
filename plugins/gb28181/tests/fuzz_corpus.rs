//! Replays fuzz/corpus/{sip,sdp,manscdp,gb28181_media} through the fuzz targets' entry points, plus
//! truncated, bit-flipped and spliced variants of every file: nothing may panic.

use gst_ipcam_testutil::fuzz::replay;
use gstgb28181::core::fuzz;

#[test]
fn sip_corpus() {
    replay("sip", fuzz::sip);
}

#[test]
fn sdp_corpus() {
    replay("sdp", fuzz::sdp);
}

#[test]
fn manscdp_corpus() {
    replay("manscdp", fuzz::manscdp);
}

#[test]
fn gb28181_media_corpus() {
    replay("gb28181_media", fuzz::media);
}
