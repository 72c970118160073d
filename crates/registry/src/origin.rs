//! Where a tag write came from: the registry instance that first accepted
//! it and when. Replicating registries compare origins to decide conflicts
//! the same way on both sides, and to recognise their own writes coming back.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::RegistryError;

/// Longest instance id accepted.
const MAX_INSTANCE_LEN: usize = 64;

/// The registry instance that first accepted a tag write, and when.
///
/// On the wire it is the `Wharf-Origin` header: `<instance>; at=<millis>`,
/// where `instance` matches `[a-z0-9][a-z0-9-]{0,63}` and `millis` is a unix
/// time in milliseconds.
///
/// Conflict rule: **the later origin time wins; equal times: the greater
/// instance id wins.** It orders origins totally and depends only on the two
/// origins compared, so both sides of a replication pair decide a conflict
/// the same way, whatever order the writes arrive in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// Id of the registry instance that accepted the write.
    pub instance: String,
    /// When it accepted it, in unix milliseconds.
    pub at: u64,
}

/// How far ahead an incoming origin's time may be.
const MAX_CLOCK_AHEAD_MILLIS: u64 = 10 * 60_000;

impl Origin {
    /// The name of the HTTP header that carries an origin.
    pub const HEADER: &'static str = wharf_oci::wire::ORIGIN_HEADER;

    /// An origin after checking the instance id's grammar.
    pub fn new(instance: impl Into<String>, at: u64) -> Result<Origin, RegistryError> {
        let instance = instance.into();
        Origin::check_instance(&instance)?;
        Ok(Origin { instance, at })
    }

    /// Checks an instance id against `[a-z0-9][a-z0-9-]{0,63}`.
    pub fn check_instance(instance: &str) -> Result<(), RegistryError> {
        let bytes = instance.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= MAX_INSTANCE_LEN
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes
                .iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(())
        } else {
            Err(RegistryError::OriginInvalid(format!(
                "instance id {instance:?} does not match [a-z0-9][a-z0-9-]{{0,63}}"
            )))
        }
    }

    /// Checks an origin sent by a client: its instance id, and that its
    /// time is not further ahead of this registry's clock than clocks of
    /// peers plausibly drift. A far-future time would otherwise pin a tag
    /// against every later replicated write.
    pub fn check_incoming(&self, now: u64) -> Result<(), RegistryError> {
        Origin::check_instance(&self.instance)?;
        if self.at > now.saturating_add(MAX_CLOCK_AHEAD_MILLIS) {
            return Err(RegistryError::OriginInvalid(format!(
                "origin time {} of {} is more than {} minutes ahead of this registry's clock",
                self.at,
                self.instance,
                MAX_CLOCK_AHEAD_MILLIS / 60_000
            )));
        }
        Ok(())
    }

    /// Parses a `Wharf-Origin` header value, `<instance>; at=<millis>`.
    /// Anything else (other parameters, spaces inside the instance id,
    /// uppercase, signs, fractions) is refused: the value comes from the
    /// network.
    pub fn parse_header(value: &str) -> Result<Origin, RegistryError> {
        let invalid = |why: &str| RegistryError::OriginInvalid(format!("{value:?}: {why}"));
        let (instance, rest) = value
            .split_once(';')
            .ok_or_else(|| invalid("expected \"<instance>; at=<millis>\""))?;
        Origin::check_instance(instance)
            .map_err(|_| invalid("the instance id must match [a-z0-9][a-z0-9-]{0,63}"))?;
        let millis = rest
            .trim_start_matches(' ')
            .strip_prefix("at=")
            .ok_or_else(|| invalid("expected \"at=<millis>\" after the instance id"))?;
        if millis.is_empty() || !millis.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                "the time must be unix milliseconds in decimal digits",
            ));
        }
        let at = millis
            .parse::<u64>()
            .map_err(|_| invalid("the time is out of range"))?;
        Ok(Origin {
            instance: instance.to_string(),
            at,
        })
    }

    /// The `Wharf-Origin` header value: `<instance>; at=<millis>`.
    pub fn to_header(&self) -> String {
        format!("{}; at={}", self.instance, self.at)
    }

    /// Whether a write from `self` beats one from `other`: `(at, instance)`
    /// compared lexicographically, greater wins. The later origin time wins;
    /// equal times: the greater instance id wins. Deterministic on both
    /// sides; an origin never wins over itself.
    pub fn wins_over(&self, other: &Origin) -> bool {
        (self.at, self.instance.as_str()) > (other.at, other.instance.as_str())
    }

    /// This origin, moved to one millisecond after `previous` unless it is
    /// later already: a write or delete accepted here is stamped so that it
    /// beats what it replaces even when this clock lags the writer's.
    pub(crate) fn after(mut self, previous: &Origin) -> Origin {
        self.at = self.at.max(previous.at.saturating_add(1));
        self
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.instance, self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let origin = Origin::new("dc-east-1", 1_700_000_000_123).unwrap();
        assert_eq!(origin.to_header(), "dc-east-1; at=1700000000123");
        assert_eq!(Origin::parse_header(&origin.to_header()).unwrap(), origin);
        assert_eq!(
            Origin::parse_header("a;at=5").unwrap(),
            Origin::new("a", 5).unwrap()
        );
        let longest = "a".repeat(64);
        assert_eq!(
            Origin::parse_header(&format!("{longest}; at=0"))
                .unwrap()
                .instance,
            longest
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        for value in [
            "",
            "a",
            "a; at=",
            "a; at=x",
            "a; at=-1",
            "a; at=+1",
            "a; at=1.5",
            "a; at=1 ",
            "a; at=1; b=2",
            "a; at=99999999999999999999",
            "a; time=1",
            "a; 1",
            " a; at=1",
            "a ; at=1",
            "a b; at=1",
            "A; at=1",
            "-a; at=1",
            "a_b; at=1",
            "a.b; at=1",
            "a\r\nx-evil: 1; at=1",
            "a\u{e9}; at=1",
            &format!("{}; at=1", "a".repeat(65)),
        ] {
            let err = Origin::parse_header(value).unwrap_err();
            assert!(
                matches!(err, RegistryError::OriginInvalid(_)),
                "{value:?}: {err}"
            );
        }
    }

    #[test]
    fn later_time_then_greater_instance_wins() {
        let a1 = Origin::new("a", 1).unwrap();
        let b1 = Origin::new("b", 1).unwrap();
        let a2 = Origin::new("a", 2).unwrap();
        assert!(a2.wins_over(&b1) && !b1.wins_over(&a2));
        assert!(b1.wins_over(&a1) && !a1.wins_over(&b1));
        assert!(!a1.wins_over(&a1));
        assert!(Origin::new("Bad", 1).is_err());
    }
}
