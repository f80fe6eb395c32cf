//! Replays fuzz/corpus/ps_demux (plus truncated, bit-flipped and spliced variants) through the
//! same core entry point as the `ps_demux` fuzz target: no panic allowed.

use std::path::Path;

#[test]
fn replay_ps_demux_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/ps_demux");
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .collect();
    assert!(!inputs.is_empty(), "empty corpus");
    inputs.sort();
    let mut seed = 0x1234_5678u32;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for (n, input) in inputs.iter().enumerate() {
        gstmpegps::demux::fuzz_one(input);
        // Truncations.
        for cut in [
            1,
            4,
            13,
            input.len() / 3,
            input.len() / 2,
            input.len().saturating_sub(1),
        ] {
            gstmpegps::demux::fuzz_one(&input[..cut.min(input.len())]);
            gstmpegps::demux::fuzz_one(&input[cut.min(input.len())..]);
        }
        // Bit flips.
        for _ in 0..64 {
            let mut v = input.clone();
            for _ in 0..(1 + rnd() % 8) {
                let i = rnd() as usize % v.len().max(1);
                if let Some(b) = v.get_mut(i) {
                    *b ^= 1 << (rnd() % 8);
                }
            }
            gstmpegps::demux::fuzz_one(&v);
        }
        // Splices with the next input.
        let other = &inputs[(n + 1) % inputs.len()];
        for _ in 0..16 {
            let a = rnd() as usize % (input.len() + 1);
            let b = rnd() as usize % (other.len() + 1);
            let mut v = input[..a].to_vec();
            v.extend_from_slice(&other[b..]);
            gstmpegps::demux::fuzz_one(&v);
        }
    }
}
