#![no_main]
//! Feeds arbitrary bytes through the psdemux core, split into chunks at data-derived points,
//! with discontinuities and frame-aligned flushes, checking frame ranges stay in bounds.
use gstmpegps::demux::fuzz_one;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_one(data);
});
