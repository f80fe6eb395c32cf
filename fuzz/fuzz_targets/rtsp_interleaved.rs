#![no_main]
//! Arbitrary bytes, cut into arbitrary chunks, through the rtspinterleavedparse core.
//! The first byte picks the chunking and the mode; see `fuzz_one` in the plugin crate.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gstrtspinterleaved::interleaved::fuzz_one(data);
});
