//! Object metadata, names, labels and label selectors.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ObjectError;

/// Metadata every object carries, Kubernetes style.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Name, unique per kind and project.
    pub name: String,
    /// The project (Kubernetes' namespace; `namespace` is accepted on input).
    #[serde(default, alias = "namespace", skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Labels, for selection.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations, for tools (`wharf.io/ip-pool`, `wharf.io/fixed-ip`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Unique id assigned at creation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The store revision of this version, for optimistic concurrency:
    /// an update naming it fails if the object changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Creation time, unix milliseconds; `creationTimestamp` (RFC 3339) on
    /// the wire, as Kubernetes writes it. Stores of older versions hold
    /// `createdAt` in milliseconds, which still reads.
    #[serde(
        rename = "creationTimestamp",
        alias = "createdAt",
        default,
        with = "crate::time::millis",
        skip_serializing_if = "is_zero"
    )]
    #[schemars(with = "Option<String>")]
    pub created_at: u64,
    /// When deletion was asked (unix milliseconds; `deletionTimestamp`,
    /// RFC 3339, on the wire): the object stays, `Terminating`, until
    /// whoever holds it confirms it is gone (a pod's node agent).
    #[serde(
        default,
        with = "crate::time::optional_millis",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub deletion_timestamp: Option<u64>,
    /// Seconds the holder was given to stop gracefully once deletion was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<u64>,
    /// Incremented on every change of the spec.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    /// The objects this one belongs to (a pod to its deployment).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl ObjectMeta {
    /// Whether deletion was asked and the object only waits to be confirmed gone.
    pub fn is_terminating(&self) -> bool {
        self.deletion_timestamp.is_some()
    }
}

/// A reference from an object to its owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    /// Owner kind.
    pub kind: String,
    /// Owner name.
    pub name: String,
    /// Owner uid.
    pub uid: String,
}

/// Checks a DNS-1123 label: 1-63 lowercase letters, digits and `-`,
/// starting and ending with a letter or digit.
pub fn check_name(field: &str, name: &str) -> Result<(), ObjectError> {
    let bytes = name.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let valid = !bytes.is_empty()
        && bytes.len() <= 63
        && alnum(bytes[0])
        && alnum(bytes[bytes.len() - 1])
        && bytes.iter().all(|&b| alnum(b) || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(ObjectError::invalid(
            field,
            format!(
                "{name:?} is not a valid name: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"
            ),
        ))
    }
}

fn is_label_segment(text: &str, max: usize) -> bool {
    let bytes = text.as_bytes();
    let edge = |b: u8| b.is_ascii_alphanumeric();
    !bytes.is_empty()
        && bytes.len() <= max
        && edge(bytes[0])
        && edge(bytes[bytes.len() - 1])
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Checks a label key (`[prefix/]name`) and value, Kubernetes rules.
pub(crate) fn check_label(field: &str, key: &str, value: &str) -> Result<(), ObjectError> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        p.len() <= 253
            && p.split('.')
                .all(|part| is_label_segment(part, 63) && !part.contains('_'))
    });
    if !prefix_ok || !is_label_segment(name, 63) {
        return Err(ObjectError::invalid(
            field,
            format!("invalid label key {key:?}"),
        ));
    }
    if !(value.is_empty() || is_label_segment(value, 63)) {
        return Err(ObjectError::invalid(
            field,
            format!("invalid label value {value:?} for {key}"),
        ));
    }
    Ok(())
}

/// Checks every label of a map.
pub(crate) fn check_labels(
    field: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), ObjectError> {
    labels
        .iter()
        .try_for_each(|(k, v)| check_label(field, k, v))
}

/// Selects objects by their labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must all be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Further requirements, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SelectorRequirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: SelectorOperator,
    /// Values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Selector operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorOperator {
    /// The label's value is one of the values.
    In,
    /// The label is absent or its value is none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector. An empty selector matches everything.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    SelectorOperator::In => value.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

/// Parses the query form of a selector: `app=web,tier!=db,env in (a,b),
/// region notin (x),gpu,!legacy`.
pub fn parse_label_selector(text: &str) -> Result<LabelSelector, ObjectError> {
    let invalid = |why: &str| ObjectError::invalid("labelSelector", format!("{why} in {text:?}"));
    let mut selector = LabelSelector::default();
    for term in split_terms(text) {
        let term = term.trim();
        if term.is_empty() {
            continue;
        }
        let requirement = if let Some(key) = term.strip_prefix('!') {
            SelectorRequirement {
                key: key.trim().into(),
                operator: SelectorOperator::DoesNotExist,
                values: vec![],
            }
        } else if let Some((key, value)) = term.split_once("!=") {
            SelectorRequirement {
                key: key.trim().into(),
                operator: SelectorOperator::NotIn,
                values: vec![value.trim().into()],
            }
        } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            selector
                .match_labels
                .insert(key.trim().into(), value.trim().into());
            continue;
        } else if let Some((key, rest)) = split_set_operator(term) {
            let (operator, list) = rest;
            let values = list
                .strip_prefix('(')
                .and_then(|l| l.strip_suffix(')'))
                .ok_or_else(|| invalid("expected (a,b,...) after in/notin"))?
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            SelectorRequirement {
                key: key.into(),
                operator,
                values,
            }
        } else {
            SelectorRequirement {
                key: term.into(),
                operator: SelectorOperator::Exists,
                values: vec![],
            }
        };
        check_label("labelSelector", &requirement.key, "").map_err(|_| invalid("bad key"))?;
        selector.match_expressions.push(requirement);
    }
    for (key, value) in &selector.match_labels {
        check_label("labelSelector", key, value)?;
    }
    Ok(selector)
}

/// Splits on commas outside parentheses.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn split_set_operator(term: &str) -> Option<(&str, (SelectorOperator, &str))> {
    for (word, operator) in [
        (" notin ", SelectorOperator::NotIn),
        (" in ", SelectorOperator::In),
    ] {
        if let Some((key, rest)) = term.split_once(word) {
            return Some((key.trim(), (operator, rest.trim())));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn metadata_uses_kubernetes_names_and_reads_older_stores() {
        let meta = ObjectMeta {
            name: "web".into(),
            created_at: 951_782_400_123,
            deletion_timestamp: Some(951_782_460_000),
            deletion_grace_period_seconds: Some(30),
            ..ObjectMeta::default()
        };
        let json = serde_json::to_value(&meta).unwrap();
        assert_eq!(json["creationTimestamp"], "2000-02-29T00:00:00Z");
        assert_eq!(json["deletionTimestamp"], "2000-02-29T00:01:00Z");
        assert_eq!(json["deletionGracePeriodSeconds"], 30);
        assert!(json.get("createdAt").is_none(), "{json}");
        let back: ObjectMeta = serde_json::from_value(json).unwrap();
        assert_eq!(back.created_at, 951_782_400_000);
        assert_eq!(back.deletion_timestamp, Some(951_782_460_000));
        assert!(back.is_terminating());

        // What earlier versions stored: milliseconds under `createdAt`.
        let old: ObjectMeta =
            serde_json::from_str(r#"{"name":"web","createdAt":951782400123}"#).unwrap();
        assert_eq!(old.created_at, 951_782_400_123);
        assert!(!old.is_terminating());
        // kubectl writes `creationTimestamp: null` in objects it makes.
        let new: ObjectMeta =
            serde_norway::from_str("name: web\ncreationTimestamp: null\n").unwrap();
        assert_eq!(new.created_at, 0);
        let new: ObjectMeta =
            serde_norway::from_str("name: web\ncreationTimestamp: \"2000-02-29T00:00:00Z\"\n")
                .unwrap();
        assert_eq!(new.created_at, 951_782_400_000);
        assert!(
            serde_json::from_str::<ObjectMeta>(r#"{"name":"w","creationTimestamp":"soon"}"#)
                .is_err()
        );
    }

    #[test]
    fn names_and_labels() {
        assert!(check_name("n", "web-1").is_ok());
        for bad in ["", "Web", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(check_name("n", bad).is_err(), "{bad:?}");
        }
        assert!(check_label("l", "wharf.io/pool", "web").is_ok());
        assert!(check_label("l", "app", "").is_ok());
        assert!(check_label("l", "bad key", "x").is_err());
        assert!(check_label("l", "app", "-x").is_err());
    }

    #[test]
    fn selectors_parse_and_match() {
        let selector =
            parse_label_selector("app=web, tier!=db,env in (prod, staging),gpu,!legacy").unwrap();
        assert!(selector.matches(&labels(&[("app", "web"), ("env", "prod"), ("gpu", "1")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("env", "dev"), ("gpu", "1")])));
        assert!(!selector.matches(&labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("gpu", "1"),
            ("legacy", "y")
        ])));
        assert!(!selector.matches(&labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("gpu", "1"),
            ("tier", "db")
        ])));
        assert!(LabelSelector::default().matches(&labels(&[])));
        assert!(parse_label_selector("env in prod").is_err());
        assert!(parse_label_selector("bad key=1").is_err());
    }
}
