#![no_main]
// GB28181 core: see gstgb28181::core::fuzz::sip for what one input goes through.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gstgb28181::core::fuzz::sip(data);
});
