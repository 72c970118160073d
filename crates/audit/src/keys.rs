//! The key layout: `/audit/<at_ms as 16 digits>-<seq as 8 hex digits>`.
//!
//! Fixed-width time first makes lexicographic key order time order, so time
//! ranges are key ranges.

/// Every audit key starts with this.
pub(crate) const PREFIX: &str = "/audit/";

/// The key of an event at `at_ms` (at most 16 digits) with sequence number `seq`.
pub(crate) fn event_key(at_ms: u64, seq: u32) -> String {
    format!("{PREFIX}{at_ms:016}-{seq:08x}")
}

/// A key that sorts after every event key before `at_ms` and before every
/// event key at or after it.
pub(crate) fn time_floor(at_ms: u64) -> String {
    format!("{PREFIX}{at_ms:016}")
}

/// The time of an event key; `None` for keys not in the layout.
pub(crate) fn key_time(key: &str) -> Option<u64> {
    let rest = key.strip_prefix(PREFIX)?;
    let (digits, seq) = rest.split_once('-')?;
    let well_formed = digits.len() == 16
        && digits.bytes().all(|b| b.is_ascii_digit())
        && seq.len() == 8
        && seq.bytes().all(|b| b.is_ascii_hexdigit());
    well_formed.then(|| digits.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_by_time() {
        let key = event_key(1_700_000_000_123, 0xab);
        assert_eq!(key, "/audit/0001700000000123-000000ab");
        assert_eq!(key_time(&key), Some(1_700_000_000_123));
        assert!(event_key(9, u32::MAX) < event_key(10, 0));
        assert!(time_floor(10) > event_key(9, u32::MAX));
        assert!(time_floor(10) < event_key(10, 0));
    }

    #[test]
    fn foreign_keys_have_no_time() {
        for key in [
            "/audit/",
            "/audit/123-00000000",
            "/audit/0001700000000123",
            "/audit/0001700000000123-xyz",
            "/other/0001700000000123-000000ab",
        ] {
            assert_eq!(key_time(key), None, "{key}");
        }
    }
}
