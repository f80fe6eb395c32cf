//! Replays fuzz/corpus/{rtmp_session,onvif,whep_offer,direct_rtp} through the fuzz targets' entry points
//! (`gst_ipcam_gateway::fuzz`), with truncated, bit-flipped and spliced variants of every
//! file: nothing may panic.

use gst_ipcam_gateway::fuzz;
use gst_ipcam_testutil::fuzz::replay;

#[test]
fn rtmp_session_corpus() {
    replay("rtmp_session", fuzz::rtmp_session);
}

#[test]
fn onvif_corpus() {
    replay("onvif", fuzz::onvif);
}

#[test]
fn whep_offer_corpus() {
    replay("whep_offer", fuzz::whep_offer);
}

#[test]
fn direct_rtp_corpus() {
    replay("direct_rtp", fuzz::direct_rtp);
}
