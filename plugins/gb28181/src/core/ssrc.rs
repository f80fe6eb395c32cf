//! GB/T 28181 SSRC strings: 10 decimal digits, `0` live / `1` playback or download, digits
//! 4..8 of the SIP domain (5 digits), then a 4-digit serial. Example: domain 3402000000,
//! live, serial 1 → `0200000001`.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsrcKind {
    Live,
    /// Playback and download.
    History,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssrc {
    pub kind: SsrcKind,
    /// The 5 domain digits.
    pub domain_part: String,
    pub serial: u16,
}

impl Ssrc {
    /// Builds an SSRC for `domain` (a 10-digit SIP domain or a 20-digit ID; digits 4..8 are
    /// used) and `serial` (taken modulo 10000). None when the domain is too short or not digits.
    pub fn new(kind: SsrcKind, domain: &str, serial: u32) -> Option<Ssrc> {
        let part = domain.get(3..8)?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Ssrc {
            kind,
            domain_part: part.to_string(),
            serial: (serial % 10_000) as u16,
        })
    }

    pub fn parse(s: &str) -> Option<Ssrc> {
        let s = s.trim();
        if s.len() != 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let kind = match &s[..1] {
            "0" => SsrcKind::Live,
            "1" => SsrcKind::History,
            _ => return None,
        };
        Some(Ssrc {
            kind,
            domain_part: s[1..6].to_string(),
            serial: s[6..].parse().ok()?,
        })
    }

    /// The numeric RTP SSRC (the decimal string read as a number, as platforms do).
    pub fn value(&self) -> u32 {
        self.to_string().parse().unwrap_or(0)
    }
}

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = match self.kind {
            SsrcKind::Live => 0,
            SsrcKind::History => 1,
        };
        write!(f, "{k}{}{:04}", self.domain_part, self.serial)
    }
}

/// Hands out SSRCs with increasing serials (wrapping at 10000).
#[derive(Debug, Clone)]
pub struct SsrcAllocator {
    domain: String,
    next: u32,
}

impl SsrcAllocator {
    pub fn new(domain: &str) -> Self {
        SsrcAllocator {
            domain: domain.to_string(),
            next: 1,
        }
    }

    pub fn allocate(&mut self, kind: SsrcKind) -> Option<Ssrc> {
        let s = Ssrc::new(kind, &self.domain, self.next)?;
        self.next = (self.next % 9_999) + 1;
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_ssrc() {
        let s = Ssrc::new(SsrcKind::Live, "3402000000", 1).unwrap();
        assert_eq!(s.to_string(), "0200000001");
        assert_eq!(Ssrc::parse("0200000001"), Some(s.clone()));
        assert_eq!(s.value(), 200_000_001);
        let h = Ssrc::new(SsrcKind::History, "34020000002000000001", 12345).unwrap();
        assert_eq!(h.to_string(), "1200002345");
        assert!(Ssrc::parse("2200000001").is_none());
        assert!(Ssrc::parse("020000001").is_none());
        assert!(Ssrc::new(SsrcKind::Live, "34", 1).is_none());
        let mut a = SsrcAllocator::new("3402000000");
        assert_eq!(a.allocate(SsrcKind::Live).unwrap().serial, 1);
        assert_eq!(
            a.allocate(SsrcKind::History).unwrap().to_string(),
            "1200000002"
        );
    }
}
