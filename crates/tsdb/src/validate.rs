//! What a sample must look like before it is stored.

use wharf_api::{FalconSample, parse_tags};

/// How far ahead of the server's clock a timestamp may be (clock skew).
pub const MAX_FUTURE_SECS: i64 = 600;
/// Longest endpoint, metric name, tag key or tag value.
pub const MAX_NAME_LEN: usize = 255;
/// Most tags on one sample.
pub const MAX_TAGS: usize = 32;

/// Why a sample was refused: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SampleError {
    /// The wire name of the field (`metric`, `tags`, `timestamp` ...).
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SampleError {
    SampleError {
        field,
        reason: reason.into(),
    }
}

/// Checks a name against its charset and length.
fn check_name(
    field: &'static str,
    what: &str,
    name: &str,
    allowed: impl Fn(char) -> bool,
    charset: &str,
) -> Result<(), SampleError> {
    if name.is_empty() {
        return Err(invalid(field, format!("{what} is empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(
            field,
            format!("{what} is longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        return Err(invalid(
            field,
            format!("{what} {name:?} has {bad:?}; allowed: {charset}"),
        ));
    }
    Ok(())
}

fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Checks a metric name: letters, digits, `.`, `_`, `-`.
pub fn check_metric(metric: &str) -> Result<(), SampleError> {
    check_name(
        "metric",
        "metric",
        metric,
        word_char,
        "letters, digits, . _ -",
    )
}

/// Checks a sample for storing at server time `now` (seconds).
pub fn validate(sample: &FalconSample, now: i64) -> Result<(), SampleError> {
    check_name(
        "endpoint",
        "endpoint",
        &sample.endpoint,
        |c| word_char(c) || matches!(c, ':' | '/' | '@'),
        "letters, digits, . _ - : / @",
    )?;
    check_metric(&sample.metric)?;
    let tags = parse_tags(&sample.tags).map_err(|e| invalid("tags", e))?;
    if tags.len() > MAX_TAGS {
        return Err(invalid("tags", format!("more than {MAX_TAGS} tags")));
    }
    for (key, value) in &tags {
        check_name("tags", "tag key", key, word_char, "letters, digits, . _ -")?;
        check_name(
            "tags",
            "tag value",
            value,
            |c| !c.is_control() && !matches!(c, ',' | '='),
            "anything but , = and control characters",
        )?;
    }
    if !sample.value.is_finite() {
        return Err(invalid("value", "must be a finite number"));
    }
    if sample.timestamp <= 0 {
        return Err(invalid("timestamp", "must be seconds since the epoch"));
    }
    if sample.timestamp > now + MAX_FUTURE_SECS {
        return Err(invalid(
            "timestamp",
            format!(
                "{} is more than {MAX_FUTURE_SECS}s ahead of the server's clock ({now})",
                sample.timestamp
            ),
        ));
    }
    if sample.step == 0 {
        return Err(invalid("step", "must be at least 1 second"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_api::CounterType;

    fn sample() -> FalconSample {
        FalconSample {
            endpoint: "node-1".into(),
            metric: "df.bytes.used.percent".into(),
            tags: "mount=/var/lib,fstype=ext4".into(),
            value: 12.5,
            timestamp: 1_000,
            counter_type: CounterType::Gauge,
            step: 10,
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(validate(&sample(), 1_000), Ok(()));
        let field = |change: fn(&mut FalconSample)| {
            let mut s = sample();
            change(&mut s);
            validate(&s, 1_000).unwrap_err().field
        };
        assert_eq!(field(|s| s.metric = "cpu idle".into()), "metric");
        assert_eq!(field(|s| s.endpoint = String::new()), "endpoint");
        assert_eq!(field(|s| s.tags = "novalue".into()), "tags");
        assert_eq!(field(|s| s.tags = "k=a\nb".into()), "tags");
        assert_eq!(field(|s| s.value = f64::NAN), "value");
        assert_eq!(
            field(|s| s.timestamp = 1_000 + MAX_FUTURE_SECS + 1),
            "timestamp"
        );
        assert_eq!(field(|s| s.step = 0), "step");
    }
}
