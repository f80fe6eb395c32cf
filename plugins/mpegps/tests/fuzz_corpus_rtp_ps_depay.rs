//! Replays the rtp_ps_depay fuzz corpus, plus truncated, bit-flipped and spliced variants,
//! through the fuzz target's entry point; nothing may panic.

use std::path::PathBuf;

use gstmpegps::rtp::replay::{fuzz_depay, replay_length_prefixed};

fn corpus() -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/rtp_ps_depay");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_file()
                && !path
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with('.'))
        })
        .map(|path| {
            let data = std::fs::read(&path).unwrap();
            (path, data)
        })
        .collect();
    files.sort();
    assert!(files.len() >= 3, "corpus too small: {}", files.len());
    files
}

/// Small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn corpus_files_produce_frames() {
    for (path, data) in corpus() {
        let stream = data.get(1..).unwrap_or_default();
        let (frames, stats) = replay_length_prefixed(stream, 1 << 20);
        assert!(
            !frames.is_empty(),
            "{}: no frame ({stats:?})",
            path.display()
        );
    }
}

#[test]
fn corpus_and_variants_do_not_panic() {
    let files = corpus();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for (_, data) in &files {
        fuzz_depay(data);
        for cut in (0..data.len()).step_by(7) {
            fuzz_depay(&data[..cut]);
            fuzz_depay(&data[cut..]);
        }
        for _ in 0..if data.is_empty() { 0 } else { 300 } {
            let mut flipped = data.clone();
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(flipped.len());
                flipped[i] ^= 1 << rng.below(8);
            }
            fuzz_depay(&flipped);
        }
    }
    for _ in 0..300 {
        let (_, a) = &files[rng.below(files.len())];
        let (_, b) = &files[rng.below(files.len())];
        let mut spliced = a[..rng.below(a.len())].to_vec();
        spliced.extend_from_slice(&b[rng.below(b.len())..]);
        fuzz_depay(&spliced);
    }
}
