//! RFC 3339 timestamps as Kubernetes writes them in object metadata
//! (`2025-01-02T03:04:05Z`, to the second, UTC), without a date library.
//! Wharf keeps times as unix milliseconds; these convert at the edges.

/// Unix milliseconds as RFC 3339 in UTC, to the second: `2025-01-02T03:04:05Z`.
///
/// ```
/// assert_eq!(wharf_api::rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
/// ```
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, time) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        time / 3600,
        time % 3600 / 60,
        time % 60
    )
}

/// Reads an RFC 3339 time (`Z` or a `±hh:mm` offset, optional fraction)
/// into unix milliseconds; `None` if it is not one or is before 1970.
///
/// ```
/// assert_eq!(wharf_api::parse_rfc3339("2000-02-29T01:00:00+01:00"), Some(951_782_400_000));
/// ```
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u64> {
        let part = text.get(range)?;
        (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())).then(|| part.parse().ok())?
    };
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') || bytes[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // A leap second (:60) counts as the next second's start, as most readers do.
    if second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if end == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &fraction[..end.min(3)]);
        millis = padded.parse::<u64>().ok()?;
        rest = &fraction[end..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (hours, minutes) = rest[1..].split_once(':')?;
            if hours.len() != 2 || minutes.len() != 2 {
                return None;
            }
            let (hours, minutes): (i64, i64) = (hours.parse().ok()?, minutes.parse().ok()?);
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let days = days_from_civil(year, month, day)?;
    let secs = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64 - offset_secs;
    u64::try_from(secs).ok().map(|secs| secs * 1000 + millis)
}

/// The calendar date `days` after 1970-01-01 (Howard Hinnant's algorithm,
/// restricted to dates after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The first days (since 1970-01-01) of the calendar month holding day
/// `days` and of the month after it.
pub(crate) fn month_bounds(days: u64) -> (u64, u64) {
    let (year, month, day) = civil_from_days(days);
    let start = days - (day - 1);
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let end = days_from_civil(next_year, next_month, 1).map_or(start + 31, |d| d as u64);
    (start, end)
}

/// Days since 1970-01-01 of a calendar date (the inverse of
/// [`civil_from_days`]); `None` before the epoch.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<i64> {
    let year = year as i64 - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = month as i64;
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day as i64 - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    (days >= 0).then_some(days)
}

/// Serde for a creation time kept as unix milliseconds: written as RFC 3339
/// (`creationTimestamp`); read from RFC 3339, `null` (as kubectl writes in
/// a new object), or the milliseconds older Wharf versions stored (`createdAt`).
pub(crate) mod millis {
    use serde::Serializer;
    use serde::de::{self, Deserializer, Visitor};

    /// Writes the time as RFC 3339.
    pub fn serialize<S: Serializer>(unix_ms: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::rfc3339(*unix_ms))
    }

    /// Reads RFC 3339, milliseconds or null (0: unknown).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_any(TimeVisitor)
    }

    struct TimeVisitor;

    impl<'de> Visitor<'de> for TimeVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 time such as 2025-01-02T03:04:05Z")
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
            Ok(value)
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
            u64::try_from(value).map_err(|_| E::custom("a time before 1970"))
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<u64, E> {
            super::parse_rfc3339(value)
                .ok_or_else(|| E::custom(format!("{value:?} is not an RFC 3339 time")))
        }

        fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
            Ok(0)
        }

        fn visit_none<E: de::Error>(self) -> Result<u64, E> {
            Ok(0)
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<u64, D::Error> {
            deserializer.deserialize_any(TimeVisitor)
        }
    }
}

/// [`millis`] for an optional time (`deletionTimestamp`).
pub(crate) mod optional_millis {
    use serde::{Deserializer, Serializer};

    /// Writes the time as RFC 3339 (callers skip `None`).
    pub fn serialize<S: Serializer>(
        unix_ms: &Option<u64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match unix_ms {
            Some(ms) => super::millis::serialize(ms, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Reads RFC 3339 or milliseconds; null is `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        super::millis::deserialize(deserializer).map(|ms| (ms != 0).then_some(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_reads_back() {
        for (ms, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400_000, "2000-02-29T00:00:00Z"),
            (1_795_305_600_000, "2026-11-22T00:00:00Z"),
            (4_102_444_799_000, "2099-12-31T23:59:59Z"),
        ] {
            assert_eq!(rfc3339(ms), text);
            assert_eq!(parse_rfc3339(text), Some(ms), "{text}");
        }
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01Z");
    }

    #[test]
    fn reads_fractions_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.123456789Z"), Some(1_123));
        assert_eq!(parse_rfc3339("1970-01-01T02:00:00+02:00"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00-01:00"), Some(3_600_000));
        for bad in [
            "",
            "yesterday",
            "1970-01-01",
            "1970-13-01T00:00:00Z",
            "1970-01-01T00:00:00",
            "1970-01-01T00:00:00.Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
