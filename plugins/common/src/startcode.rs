//! The MPEG start-code scan (`00 00 01`), shared by the PS demuxer, the H.264/H.265 key-frame
//! checks and the GB28181 media path: one implementation, bounded by the slice it is given.

/// Finds the next `00 00 01` at or after `from`; returns the index of its first 0.
/// Skips ahead three bytes where the third cannot end a start code (the usual case).
pub fn find_start_code(data: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 2 < data.len() {
        let b = data[i + 2];
        if b > 1 {
            i += 3;
        } else if b == 1 {
            if data[i] == 0 && data[i + 1] == 0 {
                return Some(i);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    None
}

/// Every start code in `data`, in order: the index of its `00 00 01` and the byte after it
/// (`None` when the start code ends the slice).
pub fn start_codes(data: &[u8]) -> impl Iterator<Item = (usize, Option<u8>)> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let sc = find_start_code(data, pos)?;
        pos = sc + 3;
        Some((sc, data.get(sc + 3).copied()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious byte-by-byte scan, to check the skipping one against.
    fn naive(data: &[u8]) -> Vec<usize> {
        data.windows(3)
            .enumerate()
            .filter(|(_, w)| w == &[0, 0, 1])
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn finds_what_a_byte_by_byte_scan_finds() {
        let cases: [&[u8]; 7] = [
            &[],
            &[0, 0],
            &[0, 0, 1],
            &[0, 0, 0, 1, 0xBA, 0, 0, 1, 0xE0],
            &[1, 0, 0, 2, 0, 0, 1, 0, 0, 0, 0, 1],
            &[0, 0, 1, 0, 0, 1, 0, 0, 1],
            &[9, 9, 9, 0, 0, 1, 0x67, 0x42],
        ];
        for data in cases {
            let found: Vec<usize> = start_codes(data).map(|(i, _)| i).collect();
            assert_eq!(found, naive(data), "{data:?}");
        }
        // A pseudo-random stream with many zeros.
        let mut x = 0x1234_5678u32;
        let data: Vec<u8> = (0..10_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                [0, 0, 1, (x >> 8) as u8][(x % 4) as usize]
            })
            .collect();
        let found: Vec<usize> = start_codes(&data).map(|(i, _)| i).collect();
        assert_eq!(found, naive(&data));
    }

    #[test]
    fn gives_the_byte_after_the_start_code() {
        let v: Vec<_> = start_codes(&[0, 0, 1, 0xBA, 0, 0, 1]).collect();
        assert_eq!(v, vec![(0, Some(0xBA)), (4, None)]);
        assert_eq!(find_start_code(&[0, 0, 1, 0xBA, 0, 0, 1], 1), Some(4));
    }
}
