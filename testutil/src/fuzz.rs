//! Fuzz corpora replayed in ordinary tests: the seeds committed in `fuzz/corpus/<target>` and
//! deterministic variants of them, through the same entry point the cargo-fuzz target calls
//! (so a target that no longer builds, or an input that panics, fails `make test` even where
//! cargo-fuzz is not installed).

use std::path::PathBuf;

/// The committed seeds of fuzz target `target` (`fuzz/corpus/<target>`), sorted by name.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let data: Vec<_> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!data.is_empty(), "{target}: empty corpus");
    data
}

/// Small deterministic PRNG (xorshift) so variants are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Every file, then truncations, bit flips, delimiter replacements, splices with the other
/// files and repetitions of it: the same on every run (seeded).
pub fn variants(files: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        out.push(f.clone());
        // Truncations: every length for small files, a sample otherwise.
        let step = (f.len() / 256).max(1);
        for cut in (0..f.len()).step_by(step) {
            out.push(f[..cut].to_vec());
        }
        // Bit flips, single and multiple.
        for _ in 0..200 {
            let mut v = f.clone();
            for _ in 0..=rng.below(4) {
                if v.is_empty() {
                    break;
                }
                let p = rng.below(v.len());
                v[p] ^= 1 << rng.below(8);
            }
            out.push(v);
        }
        // Byte replacements with interesting values (delimiters, digits, high bytes).
        for _ in 0..100 {
            let mut v = f.clone();
            if !v.is_empty() {
                let p = rng.below(v.len());
                v[p] = *b"\r\n:;,=<>\"\\ 0 9\xff\x80\x00&"
                    .get(rng.below(19))
                    .unwrap_or(&0);
            }
            out.push(v);
        }
        // Splices with the other files.
        for g in files.iter().skip(i + 1) {
            let a = rng.below(f.len() + 1);
            let b = rng.below(g.len() + 1);
            let mut v = f[..a].to_vec();
            v.extend_from_slice(&g[b..]);
            out.push(v);
        }
        // Repetition (header bombs, long bodies).
        out.push(f.repeat(40));
    }
    out
}

/// Runs fuzz target `target`'s entry point `run` over its corpus and the [`variants`].
pub fn replay(target: &str, run: fn(&[u8])) {
    let files = corpus(target);
    let all = variants(&files);
    for v in &all {
        run(v);
    }
    eprintln!("{target}: {} inputs from {} files", all.len(), files.len());
}
