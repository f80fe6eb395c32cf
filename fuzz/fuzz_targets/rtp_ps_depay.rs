#![no_main]
// Sequences of RTP packets (first byte: frame-size bound selector, then 2-byte big-endian
// length-prefixed packets, RFC 4571 style) through the PS-over-RTP depacketizer core.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gstmpegps::rtp::replay::fuzz_depay(data);
});
