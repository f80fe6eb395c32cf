#![no_main]
// Placeholder: the target is filled in with its parser's core.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = data;
});
