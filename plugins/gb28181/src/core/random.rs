//! OS randomness for everything an off-path attacker must not guess: Call-IDs, From/To tags,
//! Via branches, digest cnonces and the registrar's nonce secret (`getrandom`).
//!
//! If the OS source ever fails, values come from std's randomly keyed SipHash over a counter
//! and the clock (still unpredictable from outside, never a constant).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

static FALLBACK: LazyLock<RandomState> = LazyLock::new(RandomState::new);
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn fallback_u64() -> u64 {
    let mut h = FALLBACK.build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    h.write_u64(t);
    h.finish()
}

/// 64 random bits.
pub fn u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| fallback_u64())
}

/// `n` random bytes.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if getrandom::fill(&mut b).is_err() {
        for chunk in b.chunks_mut(8) {
            let r = fallback_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
    b
}

/// 64 random bits as 16 hex digits: From/To tags, cnonces.
pub fn tag() -> String {
    format!("{:016x}", u64())
}

/// 128 random bits as 32 hex digits: the local part of Call-IDs.
pub fn call_id() -> String {
    format!("{:016x}{:016x}", u64(), u64())
}

/// A Via branch: the RFC 3261 magic cookie and 64 random bits.
pub fn branch() -> String {
    format!("z9hG4bK{:016x}", u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn distinct_and_well_formed() {
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(call_id()));
            assert!(seen.insert(tag()));
            let b = branch();
            assert!(b.starts_with("z9hG4bK") && b.len() == 7 + 16);
            assert!(seen.insert(b));
        }
        assert_ne!(bytes::<32>(), bytes::<32>());
        assert_ne!(fallback_u64(), fallback_u64());
    }
}
