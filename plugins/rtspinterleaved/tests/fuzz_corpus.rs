//! Replays the fuzz corpus (fuzz/corpus/rtsp_interleaved) and truncated, bit-flipped and
//! spliced variants of it through the fuzz target's entry point: no panic allowed.

use std::path::Path;

use gstrtspinterleaved::interleaved::fuzz_one;

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/rtsp_interleaved");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let inputs: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(inputs.len() >= 3, "corpus too small");
    inputs
}

#[test]
fn corpus_replays() {
    for input in corpus() {
        fuzz_one(&input);
    }
}

#[test]
fn truncated_variants() {
    for input in corpus() {
        for cut in (0..input.len())
            .step_by(97)
            .chain([input.len().saturating_sub(1)])
        {
            fuzz_one(&input[..cut]);
            // Same bytes, other chunkings and modes.
            for ctl in [0x01u8, 0x1f, 0x25] {
                let mut v = input[..cut].to_vec();
                if let Some(first) = v.first_mut() {
                    *first = ctl;
                }
                fuzz_one(&v);
            }
        }
    }
}

#[test]
fn bit_flipped_variants() {
    let mut x: u32 = 0x1234_5678;
    for input in corpus() {
        for _ in 0..200 {
            let mut v = input.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let pos = x as usize % v.len().max(1);
                if let Some(b) = v.get_mut(pos) {
                    *b ^= 1 << (x >> 29);
                }
            }
            fuzz_one(&v);
        }
    }
}

#[test]
fn spliced_variants() {
    let inputs = corpus();
    for a in &inputs {
        for b in &inputs {
            for frac in [3, 2] {
                let mut v = a[..a.len() / frac].to_vec();
                v.extend_from_slice(&b[b.len() / frac..]);
                fuzz_one(&v);
                let mut w = b[..b.len() / frac].to_vec();
                w.extend_from_slice(&a[1..]);
                fuzz_one(&w);
            }
        }
    }
}
