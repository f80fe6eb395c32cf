//! The one parser of the times the playback and records routes take: Unix seconds
//! (`1709280000`) or GB/T 28181 and wvp's `yyyy-MM-ddTHH:mm:ss`. wvp's form carries no zone;
//! the gateway takes it as UTC (what it writes back, and what the times it puts into an
//! INVITE's `t=` line mean): a camera whose clock is set to local time lists its recordings
//! shifted by its offset, which the caller adds. Answers carry both forms.

use gstgb28181::core::registrar::civil_from_unix;
use gstgb28181::device::is_gb_time;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Latest time accepted (9999-12-31T23:59:59 UTC).
pub const MAX_UNIX: u64 = 253_402_300_799;

/// A time as a request gives it: Unix seconds, as a number or a string, or
/// `yyyy-MM-ddTHH:mm:ss` (UTC).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TimeValue {
    Unix(u64),
    Text(String),
}

impl TimeValue {
    pub fn unix(&self) -> Option<u64> {
        match self {
            TimeValue::Unix(u) => (*u <= MAX_UNIX).then_some(*u),
            TimeValue::Text(t) => parse_time(t),
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of `civil_from_unix`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Unix seconds of `1709280000` or `2024-03-01T08:00:00` (UTC); None for anything else
/// (other shapes, impossible dates, before 1970, after [`MAX_UNIX`]).
pub fn parse_time(t: &str) -> Option<u64> {
    if !t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().ok().filter(|u| *u <= MAX_UNIX);
    }
    if !is_gb_time(t) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| t.get(r).and_then(|s| s.parse::<i64>().ok());
    let (y, mo, d, h, mi, s) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    if y < 1970 || !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return None;
    }
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s;
    u64::try_from(secs).ok()
}

/// `yyyy-MM-ddTHH:mm:ss` (UTC) of Unix seconds.
pub fn gb_time(unix: u64) -> String {
    let (y, m, d, h, mi, s) = civil_from_unix(unix.min(MAX_UNIX) as i64);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms() {
        assert_eq!(parse_time("1709280000"), Some(1_709_280_000));
        assert_eq!(parse_time("2024-03-01T08:00:00"), Some(1_709_280_000));
        assert_eq!(parse_time("1970-01-01T00:00:00"), Some(0));
        assert_eq!(parse_time("2024-02-29T23:59:59"), Some(1_709_251_199));
        assert_eq!(parse_time("9999-12-31T23:59:59"), Some(MAX_UNIX));
        assert_eq!(gb_time(1_709_280_000), "2024-03-01T08:00:00");
        for u in [0, 951_782_400, 1_709_251_199, 4_102_444_800, MAX_UNIX] {
            assert_eq!(parse_time(&gb_time(u)), Some(u), "{u}");
        }
        assert_eq!(TimeValue::Unix(5).unix(), Some(5));
        assert_eq!(TimeValue::Text("5".into()).unix(), Some(5));
        assert_eq!(TimeValue::Unix(MAX_UNIX + 1).unix(), None);
    }

    #[test]
    fn refused() {
        for bad in [
            "",
            "-1",
            "1e9",
            " 1709280000",
            "9999999999999",
            "2023-02-29T00:00:00",
            "2024-13-01T00:00:00",
            "2024-04-31T00:00:00",
            "2024-03-01T24:00:00",
            "2024-03-01T08:60:00",
            "2024-03-01T08:00:60",
            "1969-12-31T23:59:59",
            "2024-03-01 08:00:00",
            "2024-03-01T08:00:00Z",
            "２０２４-03-01T08:00:00",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }
}
