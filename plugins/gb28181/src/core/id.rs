//! GB28181 identifier validation: the one place that decides whether a device or channel ID
//! from the network may name anything (a registry entry, a mount, a file, a metrics label).
//!
//! GB/T 28181 IDs are 20 decimal digits (`34020000001320000001`). Some deployments use other
//! shapes, so the accepted pattern is a setting ([`IdPolicy::with_pattern`], a regular
//! expression matched against the whole ID); whatever the pattern says, an ID is never longer
//! than [`MAX_ID_LEN`] bytes and never contains anything but ASCII letters, digits, `-` and
//! `_`, so a valid ID is always safe as a single path component, URL path segment and label
//! value (no `/`, `.`, `..`, NUL, spaces or quotes).

use regex::{Regex, RegexBuilder};
use std::fmt;

/// Upper bound on any ID's length, whatever the pattern.
pub const MAX_ID_LEN: usize = 64;

/// The default (strict) pattern: 20 decimal digits.
pub const DEFAULT_PATTERN: &str = "[0-9]{20}";

/// Why an ID was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    Empty,
    TooLong(usize),
    BadCharacter,
    PatternMismatch,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Empty => write!(f, "empty ID"),
            IdError::TooLong(n) => write!(f, "ID of {n} bytes (at most {MAX_ID_LEN})"),
            IdError::BadCharacter => {
                write!(f, "ID with a character other than A-Z a-z 0-9 - _")
            }
            IdError::PatternMismatch => write!(f, "ID does not match the accepted pattern"),
        }
    }
}

impl std::error::Error for IdError {}

/// Which IDs are accepted. Cheap to clone (the compiled pattern is shared).
#[derive(Debug, Clone)]
pub struct IdPolicy {
    pattern: Regex,
    source: String,
}

impl Default for IdPolicy {
    fn default() -> Self {
        IdPolicy::with_pattern(DEFAULT_PATTERN).expect("the default pattern compiles")
    }
}

impl PartialEq for IdPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl IdPolicy {
    /// A policy accepting IDs that match `pattern` as a whole (anchors are added). The
    /// pattern comes from configuration; its compiled size is bounded.
    pub fn with_pattern(pattern: &str) -> Result<IdPolicy, String> {
        let anchored = format!("^(?:{pattern})$");
        let pattern = RegexBuilder::new(&anchored)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("ID pattern {pattern:?}: {e}"))?;
        Ok(IdPolicy {
            pattern,
            source: anchored,
        })
    }

    /// The pattern as given (without the added anchors).
    pub fn pattern(&self) -> &str {
        self.source
            .strip_prefix("^(?:")
            .and_then(|s| s.strip_suffix(")$"))
            .unwrap_or(&self.source)
    }

    /// Checks `id`; `Ok(())` means it may name a registration, a mount, a file or a label.
    pub fn check(&self, id: &str) -> Result<(), IdError> {
        check_shape(id)?;
        if !self.pattern.is_match(id) {
            return Err(IdError::PatternMismatch);
        }
        Ok(())
    }

    pub fn is_valid(&self, id: &str) -> bool {
        self.check(id).is_ok()
    }
}

/// The checks that hold whatever the pattern: non-empty, bounded, `[A-Za-z0-9_-]` only.
pub fn check_shape(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(id.len()));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(IdError::BadCharacter);
    }
    Ok(())
}

/// Whether `id` is a standard 20-digit GB/T 28181 ID (the default policy, without building
/// one: for settings like the platform's own ID).
pub fn is_gb_id(id: &str) -> bool {
    id.len() == 20 && id.bytes().all(|b| b.is_ascii_digit())
}

/// A shortened, printable form of an untrusted ID for log lines (never more than 40 chars,
/// control characters escaped), so a refused ID can be logged without log injection.
pub fn printable(id: &str) -> String {
    let mut out: String = id.chars().take(40).flat_map(char::escape_default).collect();
    if id.chars().count() > 40 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_default() {
        let p = IdPolicy::default();
        assert!(p.is_valid("34020000001320000001"));
        assert_eq!(p.check(""), Err(IdError::Empty));
        assert_eq!(
            p.check("3402000000132000000"),
            Err(IdError::PatternMismatch)
        );
        assert_eq!(
            p.check("340200000013200000011"),
            Err(IdError::PatternMismatch)
        );
        assert_eq!(p.check("../escape"), Err(IdError::BadCharacter));
        assert_eq!(p.check("/tmp/elsewhere"), Err(IdError::BadCharacter));
        assert_eq!(
            p.check("3402000000132000000\u{0}"),
            Err(IdError::BadCharacter)
        );
        assert_eq!(p.check(&"1".repeat(65)), Err(IdError::TooLong(65)));
        assert_eq!(p.pattern(), DEFAULT_PATTERN);
        assert!(is_gb_id("34020000001320000001"));
        assert!(!is_gb_id("3402000000132000000a"));
    }

    #[test]
    fn custom_pattern_cannot_allow_unsafe_characters() {
        let p = IdPolicy::with_pattern(".*").unwrap();
        assert!(p.is_valid("cam-1_front"));
        assert!(p.check("..").is_err());
        assert!(p.check("a/b").is_err());
        assert!(p.check("a b").is_err());
        assert!(IdPolicy::with_pattern("(").is_err());
        // Anchored: a pattern for a prefix does not accept longer IDs.
        let p = IdPolicy::with_pattern("cam[0-9]").unwrap();
        assert!(p.is_valid("cam1"));
        assert!(!p.is_valid("cam12"));
    }

    #[test]
    fn printable_escapes_and_truncates() {
        assert_eq!(printable("a\nb"), "a\\nb");
        assert_eq!(printable(&"x".repeat(50)).chars().count(), 41);
    }
}
