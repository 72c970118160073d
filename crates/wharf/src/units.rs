//! Human-friendly durations (`200ms`, `90s`, `15m`, `6h`, `30d`) and sizes (`512MiB`, `10GiB`).

use std::time::Duration;

/// Splits `<digits><unit>` into the number and the unit (possibly empty);
/// `None` without leading digits or when the number overflows.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit))
}

/// Parses `<number><unit>` with unit ms, s, m, h or d; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = number_and_unit(text)
        .ok_or_else(|| format!("invalid duration {text:?}: expected e.g. 90s, 15m, 6h, 30d"))?;
    let millis = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {text:?}: use ms, s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_millis(number.saturating_mul(millis)))
}

/// Parses `<number><unit>` with unit B, KiB, MiB, GiB, TiB (or K, M, G, T),
/// or the decimal KB, MB, GB, TB (powers of 1000); a bare number is bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = number_and_unit(text)
        .ok_or_else(|| format!("invalid size {text:?}: expected e.g. 512MiB or 10GiB"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {text:?}: use KiB, MiB, GiB or TiB (or KB, MB, GB, TB)"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("7"), Ok(7));
        assert_eq!(parse_size("500KB"), Ok(500_000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert!(parse_size("1PB").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
