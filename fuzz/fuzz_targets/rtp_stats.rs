#![no_main]
//! Sequences of RTP/RTCP packets with arrival times through the rtcpstats core.
//! Record format: see `gstrtcpstats::stats::replay_records`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = gstrtcpstats::stats::replay_records(data);
});
