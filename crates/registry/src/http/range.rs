//! `Range` (blob GET) and `Content-Range` (chunk PATCH) headers.

use std::ops::Range;

/// A parsed `Range: bytes=...` request for a blob of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ByteRange {
    /// Serve the whole blob (no header, or one we do not honour, such as multiple ranges).
    Whole,
    /// Serve this half-open range.
    Part(Range<u64>),
    /// The range lies outside the blob.
    Unsatisfiable,
}

pub(crate) fn parse_range(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((start, end)) = spec.split_once('-') else {
        return ByteRange::Whole;
    };
    let (start, end) = (start.trim(), end.trim());
    let parsed = match (start.is_empty(), end.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => end
            .parse::<u64>()
            .ok()
            .map(|n| size.saturating_sub(n)..size)
            .filter(|_| size > 0),
        (false, true) => start.parse::<u64>().ok().map(|s| s..size),
        (false, false) => match (start.parse::<u64>(), end.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => Some(s..e.saturating_add(1).min(size)),
            _ => return ByteRange::Whole,
        },
        (true, true) => return ByteRange::Whole,
    };
    match parsed {
        Some(range) if range.start < size && range.start < range.end => ByteRange::Part(range),
        Some(_) | None => ByteRange::Unsatisfiable,
    }
}

/// Parses a chunk's `Content-Range: <start>-<end>` (inclusive); also accepts
/// the `bytes <start>-<end>/<total>` form some clients send.
pub(crate) fn parse_content_range(header: &str) -> Option<(u64, u64)> {
    let value = header.trim();
    let value = value
        .strip_prefix("bytes")
        .map_or(value, |v| v.trim_start_matches([' ', '=']));
    let value = value.split('/').next()?;
    let (start, end) = value.split_once('-')?;
    let (start, end) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    (start <= end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), ByteRange::Whole);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), ByteRange::Part(0..5));
        assert_eq!(parse_range(Some("bytes=5-"), 10), ByteRange::Part(5..10));
        assert_eq!(parse_range(Some("bytes=-3"), 10), ByteRange::Part(7..10));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), ByteRange::Part(8..10));
        assert_eq!(parse_range(Some("bytes=10-"), 10), ByteRange::Unsatisfiable);
        assert_eq!(
            parse_range(Some("bytes=20-30"), 10),
            ByteRange::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), ByteRange::Whole);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), ByteRange::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), ByteRange::Whole);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(parse_content_range("bytes=5-9"), Some((5, 9)));
        assert_eq!(parse_content_range("9-5"), None);
        assert_eq!(parse_content_range("x-y"), None);
    }
}
