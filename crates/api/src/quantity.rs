//! Kubernetes resource quantities: `500m` or `1.5` CPUs, `128Mi` or `1G` of memory.

use serde::{Deserialize, Deserializer};

use crate::ObjectError;

/// Reads a quantity written as text (`500m`, `1Gi`) or, as Kubernetes
/// also accepts, as a bare number (`cpu: 2`, `cpu: 0.5`,
/// `memory: 1073741824`); it is kept as text either way.
pub(crate) fn text_or_number<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Whole(u64),
        Fraction(f64),
    }
    Ok(
        Option::<Written>::deserialize(deserializer)?.map(|written| match written {
            Written::Text(text) => text,
            Written::Whole(number) => number.to_string(),
            Written::Fraction(number) => number.to_string(),
        }),
    )
}

/// Splits `1.5Gi` into the number and the suffix.
fn split_quantity(text: &str) -> (&str, &str) {
    let at = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    text.split_at(at)
}

/// Multiplies a decimal number by `scale`, exactly enough for quantities.
fn scaled(number: &str, scale: u128, field: &str, text: &str) -> Result<u64, ObjectError> {
    let invalid = || ObjectError::invalid(field, format!("invalid quantity {text:?}"));
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.len() > 9 {
        return Err(invalid());
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| invalid())?
    };
    let fraction_value: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| invalid())?
    };
    let denominator = 10u128.pow(fraction.len() as u32);
    let total = whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(fraction_value * scale / denominator))
        .ok_or_else(invalid)?;
    u64::try_from(total).map_err(|_| invalid())
}

/// CPU in millicores: `250m` → 250, `2` → 2000, `0.5` → 500.
pub fn parse_cpu_millis(field: &str, text: &str) -> Result<u64, ObjectError> {
    let (number, suffix) = split_quantity(text.trim());
    match suffix {
        "m" => scaled(number, 1, field, text),
        "" => scaled(number, 1000, field, text),
        _ => Err(ObjectError::invalid(
            field,
            format!("invalid cpu quantity {text:?}: use e.g. 500m or 2"),
        )),
    }
}

/// Memory in bytes: `128Mi`, `1Gi`, `1G`, `500k`, `1048576`.
pub fn parse_memory_bytes(field: &str, text: &str) -> Result<u64, ObjectError> {
    let (number, suffix) = split_quantity(text.trim());
    let scale: u128 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => {
            return Err(ObjectError::invalid(
                field,
                format!("invalid memory quantity {text:?}: use e.g. 128Mi, 1Gi or 1G"),
            ));
        }
    };
    scaled(number, scale, field, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu() {
        assert_eq!(parse_cpu_millis("c", "250m"), Ok(250));
        assert_eq!(parse_cpu_millis("c", "2"), Ok(2000));
        assert_eq!(parse_cpu_millis("c", "0.5"), Ok(500));
        assert_eq!(parse_cpu_millis("c", ".25"), Ok(250));
        for bad in ["", "m", "-1", "1x", "1.2.3", "1e3"] {
            assert!(parse_cpu_millis("c", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn memory() {
        assert_eq!(parse_memory_bytes("m", "128Mi"), Ok(128 << 20));
        assert_eq!(parse_memory_bytes("m", "1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory_bytes("m", "1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_memory_bytes("m", "42"), Ok(42));
        for bad in ["", "Gi", "1GB", "-5Mi", "99999999999Pi"] {
            assert!(parse_memory_bytes("m", bad).is_err(), "{bad:?}");
        }
    }
}
