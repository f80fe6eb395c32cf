//! The RTMP handshake, server side, in its simple form (RTMP 1.0 spec §5.2): C0+C1 in,
//! S0+S1+S2 out, C2 in. S1's version field is zero, which tells clients (ffmpeg, OBS's
//! librtmp) not to expect the digest variant. GStreamer-free.

pub const VERSION: u8 = 3;
pub const PACKET: usize = 1536;

/// S0+S1+S2 for the client's C0+C1 (1 + 1536 bytes). `random` fills S1; `time_ms` is its
/// epoch field.
pub fn answer(c0c1: &[u8], random: &[u8], time_ms: u32) -> Result<Vec<u8>, String> {
    if c0c1.len() != 1 + PACKET {
        return Err("short C0+C1".into());
    }
    if c0c1[0] != VERSION {
        return Err(format!("RTMP version {} (only 3)", c0c1[0]));
    }
    let mut out = Vec::with_capacity(1 + 2 * PACKET);
    out.push(VERSION);
    out.extend_from_slice(&time_ms.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend((0..PACKET - 8).map(|i| random.get(i % random.len().max(1)).copied().unwrap_or(0)));
    // S2 echoes C1.
    out.extend_from_slice(&c0c1[1..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_echoes_c1() {
        let mut c = vec![3];
        c.extend((0..PACKET).map(|i| i as u8));
        let a = answer(&c, &[7; 16], 9).unwrap();
        assert_eq!(a.len(), 1 + 2 * PACKET);
        assert_eq!(&a[1..5], &9u32.to_be_bytes());
        assert_eq!(&a[5..9], &[0; 4]);
        assert_eq!(&a[1 + PACKET..], &c[1..]);
        c[0] = 6;
        assert!(answer(&c, &[], 0).is_err());
        assert!(answer(&c[..10], &[], 0).is_err());
    }
}
