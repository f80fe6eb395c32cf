#![no_main]
// GB28181 media over TCP: see gstgb28181::core::fuzz::media for what one input goes through.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gstgb28181::core::fuzz::media(data);
});
