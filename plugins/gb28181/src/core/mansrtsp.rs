//! MANSRTSP (GB/T 28181-2016 §9.8, Annex B): the RTSP-like bodies a platform sends in SIP INFO
//! within a playback dialog to pause, resume, seek (`Range: npt=<s>-`) or change the speed
//! (`Scale: <x>`) of a camera's recording.
//!
//! We write `PLAY MANSRTSP/1.0` as the standard does and read `RTSP/1.0` too (wvp-GB28181-pro
//! writes that). Everything read is bounded and validated: the body size, the number of
//! lines, the CSeq, the scale (one of [`SCALES`], the speeds wvp offers and cameras
//! implement) and the position (finite, 0 to [`MAX_NPT_S`]).

use std::fmt;

/// The speeds accepted: what wvp-GB28181-pro offers (0.25, 0.5, 1, 2, 4, 8) and cameras play.
pub const SCALES: [f64; 6] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0];
/// Farthest position (seconds from the start of the range) a seek may ask for: 7 days.
pub const MAX_NPT_S: f64 = 7.0 * 86_400.0;
/// Largest body read.
pub const MAX_BODY: usize = 1024;
/// Most lines read (request line and headers).
const MAX_LINES: usize = 16;

/// Whether `scale` is a speed we ask for and accept.
pub fn valid_scale(scale: f64) -> bool {
    SCALES.contains(&scale)
}

/// Whether `npt` is a position we ask for and accept (seconds from the start).
pub fn valid_npt(npt: f64) -> bool {
    npt.is_finite() && (0.0..=MAX_NPT_S).contains(&npt)
}

/// What a MANSRTSP request asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Command {
    /// Play (resume) at `scale` (None: as it was) from `npt` seconds (None: where it is).
    Play {
        npt: Option<f64>,
        scale: Option<f64>,
    },
    Pause,
}

/// One MANSRTSP request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    pub cseq: u32,
    pub command: Command,
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    TooLarge(usize),
    NotText,
    BadRequestLine,
    UnknownMethod(String),
    NoCSeq,
    BadHeader(&'static str),
    TooManyLines,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TooLarge(n) => write!(f, "body of {n} bytes (at most {MAX_BODY})"),
            Error::NotText => f.write_str("body is not UTF-8 text"),
            Error::BadRequestLine => f.write_str("not a MANSRTSP/1.0 or RTSP/1.0 request line"),
            Error::UnknownMethod(m) => write!(f, "method {m:?} (PLAY or PAUSE)"),
            Error::NoCSeq => f.write_str("no CSeq"),
            Error::BadHeader(h) => write!(f, "malformed or out-of-range {h}"),
            Error::TooManyLines => write!(f, "more than {MAX_LINES} lines"),
        }
    }
}

impl std::error::Error for Error {}

impl Request {
    pub fn play(cseq: u32, npt: Option<f64>, scale: Option<f64>) -> Request {
        Request {
            cseq,
            command: Command::Play { npt, scale },
        }
    }

    pub fn pause(cseq: u32) -> Request {
        Request {
            cseq,
            command: Command::Pause,
        }
    }

    /// The body to send. A scale or position out of range is left out (callers validate
    /// with [`valid_scale`] / [`valid_npt`] first and refuse such requests).
    pub fn to_body(&self) -> String {
        let cseq = self.cseq;
        match self.command {
            Command::Pause => {
                format!("PAUSE MANSRTSP/1.0\r\nCSeq: {cseq}\r\nPauseTime: now\r\n\r\n")
            }
            Command::Play { npt, scale } => {
                let mut s = format!("PLAY MANSRTSP/1.0\r\nCSeq: {cseq}\r\n");
                match npt.filter(|t| valid_npt(*t)) {
                    Some(t) => s.push_str(&format!("Range: npt={t}-\r\n")),
                    None => s.push_str("Range: npt=now-\r\n"),
                }
                if let Some(x) = scale.filter(|x| valid_scale(*x)) {
                    s.push_str(&format!("Scale: {x:.6}\r\n"));
                }
                s.push_str("\r\n");
                s
            }
        }
    }

    /// Parses and validates a body (device side).
    pub fn parse(body: &[u8]) -> Result<Request, Error> {
        if body.len() > MAX_BODY {
            return Err(Error::TooLarge(body.len()));
        }
        let text = std::str::from_utf8(body).map_err(|_| Error::NotText)?;
        let mut lines = text.lines();
        let (method, version) = lines
            .next()
            .and_then(|l| l.trim().split_once(' '))
            .ok_or(Error::BadRequestLine)?;
        let version = version.trim();
        if !version.eq_ignore_ascii_case("MANSRTSP/1.0")
            && !version.eq_ignore_ascii_case("RTSP/1.0")
        {
            return Err(Error::BadRequestLine);
        }
        let mut cseq = None;
        let mut npt = None;
        let mut scale = None;
        for (n, line) in lines.enumerate() {
            if n >= MAX_LINES {
                return Err(Error::TooManyLines);
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "cseq" => cseq = Some(v.parse::<u32>().map_err(|_| Error::BadHeader("CSeq"))?),
                "scale" => {
                    let x = v.parse::<f64>().ok().filter(|x| valid_scale(*x));
                    scale = Some(x.ok_or(Error::BadHeader("Scale"))?);
                }
                "range" => npt = parse_range(v).map_err(|_| Error::BadHeader("Range"))?,
                _ => {}
            }
        }
        let cseq = cseq.ok_or(Error::NoCSeq)?;
        let command = match method.trim() {
            m if m.eq_ignore_ascii_case("PLAY") => Command::Play { npt, scale },
            m if m.eq_ignore_ascii_case("PAUSE") => Command::Pause,
            m => return Err(Error::UnknownMethod(m.chars().take(16).collect())),
        };
        Ok(Request { cseq, command })
    }
}

/// `npt=<s>-[<e>]` → Some(s); `npt=now-` → None.
fn parse_range(v: &str) -> Result<Option<f64>, ()> {
    let r = v.strip_prefix("npt=").ok_or(())?;
    let start = r.split('-').next().unwrap_or_default().trim();
    if start.eq_ignore_ascii_case("now") {
        return Ok(None);
    }
    let t = start.parse::<f64>().map_err(|_| ())?;
    valid_npt(t).then_some(Some(t)).ok_or(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let body = Request::play(3, Some(120.0), Some(2.0)).to_body();
        assert!(
            body.starts_with("PLAY MANSRTSP/1.0\r\nCSeq: 3\r\n"),
            "{body}"
        );
        assert!(body.contains("Range: npt=120-\r\n"), "{body}");
        assert!(body.contains("Scale: 2.000000\r\n"), "{body}");
        assert_eq!(
            Request::parse(body.as_bytes()),
            Ok(Request::play(3, Some(120.0), Some(2.0)))
        );
        let body = Request::pause(4).to_body();
        assert_eq!(Request::parse(body.as_bytes()), Ok(Request::pause(4)));
        let body = Request::play(5, None, None).to_body();
        assert!(body.contains("Range: npt=now-"), "{body}");
        assert_eq!(
            Request::parse(body.as_bytes()),
            Ok(Request::play(5, None, None))
        );
    }

    #[test]
    fn reads_what_wvp_writes() {
        let wvp = b"PLAY RTSP/1.0\r\nCSeq: 512345678\r\nScale: 0.500000\r\n";
        assert_eq!(
            Request::parse(wvp),
            Ok(Request::play(512_345_678, None, Some(0.5)))
        );
        let seek = b"PLAY RTSP/1.0\r\nCSeq: 7\r\nRange: npt=30-\r\n";
        assert_eq!(Request::parse(seek), Ok(Request::play(7, Some(30.0), None)));
        let ranged = b"PLAY MANSRTSP/1.0\r\nCSeq: 7\r\nRange: npt=30.5-60\r\n";
        assert_eq!(
            Request::parse(ranged),
            Ok(Request::play(7, Some(30.5), None))
        );
    }

    #[test]
    fn refuses_junk() {
        let bad = |b: &[u8]| Request::parse(b).unwrap_err();
        for scale in ["1e308", "NaN", "inf", "-2", "0", "3", "junk", ""] {
            let b = format!("PLAY MANSRTSP/1.0\r\nCSeq: 1\r\nScale: {scale}\r\n");
            assert_eq!(bad(b.as_bytes()), Error::BadHeader("Scale"), "{scale}");
        }
        for range in ["npt=-5-", "npt=NaN-", "npt=1e300-", "clock=2020-", "npt=x-"] {
            let b = format!("PLAY MANSRTSP/1.0\r\nCSeq: 1\r\nRange: {range}\r\n");
            assert_eq!(bad(b.as_bytes()), Error::BadHeader("Range"), "{range}");
        }
        assert_eq!(bad(b"PLAY HTTP/1.1\r\nCSeq: 1\r\n"), Error::BadRequestLine);
        assert_eq!(bad(b""), Error::BadRequestLine);
        assert_eq!(bad(b"PLAY MANSRTSP/1.0\r\n"), Error::NoCSeq);
        assert_eq!(
            bad(b"PLAY MANSRTSP/1.0\r\nCSeq: 99999999999\r\n"),
            Error::BadHeader("CSeq")
        );
        assert!(matches!(
            bad(b"TEARDOWN MANSRTSP/1.0\r\nCSeq: 1\r\n"),
            Error::UnknownMethod(_)
        ));
        assert_eq!(bad(&[0xFF; 10]), Error::NotText);
        assert_eq!(
            bad(&vec![b'a'; MAX_BODY + 1]),
            Error::TooLarge(MAX_BODY + 1)
        );
        let many = format!("PLAY MANSRTSP/1.0\r\nCSeq: 1\r\n{}", "X: y\r\n".repeat(40));
        assert_eq!(bad(many.as_bytes()), Error::TooManyLines);
    }

    #[test]
    fn builder_leaves_out_invalid_values() {
        let body = Request::play(1, Some(f64::NAN), Some(1e308)).to_body();
        assert!(!body.contains("Scale"), "{body}");
        assert!(body.contains("npt=now-"), "{body}");
    }
}
