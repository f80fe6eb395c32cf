//! Replays the fuzz corpus (fuzz/corpus/rtsp_interleaved) and its deterministic variants
//! (truncated, bit-flipped, spliced, repeated: `gst_ipcam_testutil::fuzz`) through the fuzz
//! target's entry point, also with the first byte (chunking and mode) replaced: no panic.

use gstrtspinterleaved::interleaved::fuzz_one;

#[test]
fn corpus_and_variants_replay() {
    gst_ipcam_testutil::fuzz::replay("rtsp_interleaved", fuzz_one);
}

/// The same bytes in other chunkings and modes (the entry point reads them from byte 0).
#[test]
fn other_chunkings_and_modes() {
    for input in gst_ipcam_testutil::fuzz::corpus("rtsp_interleaved") {
        for ctl in [0x01u8, 0x1f, 0x25] {
            for cut in (0..input.len()).step_by(97).chain([input.len()]) {
                let mut v = input[..cut].to_vec();
                if let Some(first) = v.first_mut() {
                    *first = ctl;
                }
                fuzz_one(&v);
            }
        }
    }
}
