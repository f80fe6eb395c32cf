//! The recordings a simulated device lists in RecordInfo answers (`records` property).

use super::*;

/// A recording a (simulated) device lists: start and end as `yyyy-MM-ddTHH:mm:ss`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub start: String,
    pub end: String,
}

/// Recordings a device may list at most, and items in one RecordInfo answer at most.
pub const MAX_RECORDS: usize = 1000;
pub(super) const MAX_RECORDS_PER_ANSWER: usize = 20;

/// Whether `t` is a GB/T 28181 time `yyyy-MM-ddTHH:mm:ss` (digits and separators in place).
pub fn is_gb_time(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

/// `start/end;start/end;...` (times `yyyy-MM-ddTHH:mm:ss`, start before end), at most
/// [`MAX_RECORDS`]. Empty: none.
pub fn parse_records(s: &str) -> Result<Vec<Recording>, String> {
    let mut out = Vec::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        if out.len() >= MAX_RECORDS {
            return Err(format!("at most {MAX_RECORDS} recordings"));
        }
        let (start, end) = part
            .split_once('/')
            .filter(|(a, b)| is_gb_time(a) && is_gb_time(b) && a < b)
            .ok_or_else(|| {
                format!(
                    "{}: not start/end as yyyy-MM-ddTHH:mm:ss",
                    crate::core::id::printable(part)
                )
            })?;
        out.push(Recording {
            start: start.into(),
            end: end.into(),
        });
    }
    Ok(out)
}

/// The recordings of `records` that overlap `[start, end)` (same time format: compared as
/// strings), at most [`MAX_RECORDS_PER_ANSWER`], as RecordInfo items of `channel`.
pub fn records_in(
    records: &[Recording],
    channel: &str,
    start: &str,
    end: &str,
) -> Vec<manscdp::RecordItem> {
    records
        .iter()
        .filter(|r| r.start.as_str() < end && r.end.as_str() > start)
        .take(MAX_RECORDS_PER_ANSWER)
        .map(|r| manscdp::RecordItem {
            device_id: channel.to_string(),
            name: "recording".into(),
            file_path: format!("{}-{}", r.start, r.end).replace([':', '-', 'T'], ""),
            address: "local".into(),
            start_time: r.start.clone(),
            end_time: r.end.clone(),
            secrecy: Some(0),
            record_type: "time".into(),
            file_size: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_and_answer_overlapping_ones_bounded() {
        let r = parse_records(
            " 2024-01-01T00:00:00/2024-01-01T01:00:00; 2024-01-02T00:00:00/2024-01-02T00:10:00;",
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].end, "2024-01-02T00:10:00");
        assert!(parse_records("").unwrap().is_empty());
        for bad in [
            "2024-01-01T01:00:00/2024-01-01T00:00:00",
            "2024-01-01 00:00:00/2024-01-01T01:00:00",
            "2024-01-01T00:00:00",
            "x/y",
        ] {
            assert!(parse_records(bad).is_err(), "{bad}");
        }
        let many = vec!["2024-01-01T00:00:00/2024-01-01T01:00:00"; MAX_RECORDS + 1].join(";");
        assert!(parse_records(&many).is_err());
        let items = records_in(&r, "c", "2024-01-01T00:30:00", "2024-01-01T23:00:00");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].start_time, "2024-01-01T00:00:00");
        assert_eq!(items[0].device_id, "c");
        assert!(records_in(&r, "c", "2023-01-01T00:00:00", "2023-12-31T00:00:00").is_empty());
        let lots =
            parse_records(&vec!["2024-01-01T00:00:00/2024-01-01T01:00:00"; 50].join(";")).unwrap();
        assert_eq!(
            records_in(&lots, "c", "2000-01-01T00:00:00", "2100-01-01T00:00:00").len(),
            MAX_RECORDS_PER_ANSWER
        );
    }
}
