//! Node affinity: labels a pod requires (a hard filter) or prefers (a
//! score) on its node, in Kubernetes' shape: a node passes when it matches
//! any required term, and a term matches when all its requirements do.
//! The `wharf.io/tier` annotation is translated into the same terms by the
//! control plane, so tiers and ordinary affinity are one mechanism.

use std::collections::BTreeMap;
use std::fmt;

/// The node label carrying a machine's tier (`core`, `general`, `batch`).
pub const TIER_LABEL: &str = "wharf.io/tier";

/// How a requirement compares a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LabelOperator {
    /// The label is present with one of the values.
    In,
    /// The label is absent or has none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One condition on one node label.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LabelRequirement {
    /// The label key.
    pub key: String,
    /// The comparison.
    pub operator: LabelOperator,
    /// The values `In` and `NotIn` compare with.
    pub values: Vec<String>,
}

impl LabelRequirement {
    /// `key In (values)`.
    pub fn is_in<S: Into<String>>(
        key: impl Into<String>,
        values: impl IntoIterator<Item = S>,
    ) -> Self {
        LabelRequirement {
            key: key.into(),
            operator: LabelOperator::In,
            values: values.into_iter().map(Into::into).collect(),
        }
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            LabelOperator::In => value.is_some_and(|v| self.values.contains(v)),
            LabelOperator::NotIn => !value.is_some_and(|v| self.values.contains(v)),
            LabelOperator::Exists => value.is_some(),
            LabelOperator::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for LabelRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = self.values.join(",");
        match self.operator {
            LabelOperator::In => write!(f, "{} in ({values})", self.key),
            LabelOperator::NotIn => write!(f, "{} notin ({values})", self.key),
            LabelOperator::Exists => write!(f, "{}", self.key),
            LabelOperator::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

/// Requirements that must all hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeSelectorTerm {
    /// Every one must match.
    pub requirements: Vec<LabelRequirement>,
}

impl NodeSelectorTerm {
    /// A term of one requirement.
    pub fn of(requirement: LabelRequirement) -> Self {
        NodeSelectorTerm {
            requirements: vec![requirement],
        }
    }

    /// Whether every requirement holds on `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for NodeSelectorTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(" and "))
    }
}

/// A term a pod prefers, with its weight (`1..=100`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PreferredTerm {
    /// How much a match counts against the other preferred terms.
    pub weight: u32,
    /// The labels preferred.
    pub term: NodeSelectorTerm,
}

/// What a pod requires and prefers of its node's labels.
///
/// ```
/// use std::collections::BTreeMap;
/// use wharf_scheduler::{LabelRequirement, NodeAffinity, NodeSelectorTerm, TIER_LABEL};
/// let affinity = NodeAffinity::default()
///     .with_required(NodeSelectorTerm::of(LabelRequirement::is_in(TIER_LABEL, ["core"])));
/// let core = BTreeMap::from([(TIER_LABEL.to_string(), "core".to_string())]);
/// assert!(affinity.admits(&core));
/// assert!(!affinity.admits(&BTreeMap::new()));
/// assert_eq!(affinity.required_text(), "not in tier core");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeAffinity {
    /// A node must match one of these; none: any node.
    pub required: Vec<NodeSelectorTerm>,
    /// Nodes matching more weight of these score higher.
    pub preferred: Vec<PreferredTerm>,
}

impl NodeAffinity {
    /// The same affinity with one more required term (terms are alternatives).
    pub fn with_required(mut self, term: NodeSelectorTerm) -> Self {
        self.required.push(term);
        self
    }

    /// The same affinity with one more preferred term.
    pub fn with_preferred(mut self, weight: u32, term: NodeSelectorTerm) -> Self {
        self.preferred.push(PreferredTerm { weight, term });
        self
    }

    /// Whether the node's labels pass the required terms.
    pub fn admits(&self, labels: &BTreeMap<String, String>) -> bool {
        self.required.is_empty() || self.required.iter().any(|t| t.matches(labels))
    }

    /// The preferred terms the node matches, as a score in `0..=100` of
    /// their total weight; `None` when the pod prefers nothing.
    pub fn preference_score(&self, labels: &BTreeMap<String, String>) -> Option<u8> {
        let total: u64 = self.preferred.iter().map(|p| u64::from(p.weight)).sum();
        if total == 0 {
            return None;
        }
        let matched: u64 = self
            .preferred
            .iter()
            .filter(|p| p.term.matches(labels))
            .map(|p| u64::from(p.weight))
            .sum();
        Some((matched * 100 / total) as u8)
    }

    /// Why a node failing the required terms is refused: `not in tier
    /// core` for a tier, else `not matching node affinity <terms>`.
    pub fn required_text(&self) -> String {
        if let [term] = self.required.as_slice()
            && let [requirement] = term.requirements.as_slice()
            && requirement.key == TIER_LABEL
            && requirement.operator == LabelOperator::In
        {
            return format!("not in tier {}", requirement.values.join(" or "));
        }
        let terms: Vec<String> = self.required.iter().map(|t| t.to_string()).collect();
        format!("not matching node affinity {}", terms.join(" or "))
    }
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

    fn requirement(key: &str, operator: LabelOperator, values: &[&str]) -> LabelRequirement {
        LabelRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn operators_match_as_kubernetes_defines_them() {
        let node = labels(&[("disk", "ssd")]);
        let cases = [
            (LabelOperator::In, &["ssd", "nvme"][..], true),
            (LabelOperator::In, &["hdd"][..], false),
            (LabelOperator::NotIn, &["hdd"][..], true),
            (LabelOperator::NotIn, &["ssd"][..], false),
            (LabelOperator::Exists, &[][..], true),
            (LabelOperator::DoesNotExist, &[][..], false),
        ];
        for (operator, values, expected) in cases {
            let r = requirement("disk", operator, values);
            assert_eq!(r.matches(&node), expected, "{r}");
        }
        assert!(requirement("gpu", LabelOperator::NotIn, &["a"]).matches(&node));
        assert!(requirement("gpu", LabelOperator::DoesNotExist, &[]).matches(&node));
    }

    #[test]
    fn required_terms_are_alternatives_of_conjunctions() {
        let affinity = NodeAffinity::default()
            .with_required(NodeSelectorTerm {
                requirements: vec![
                    LabelRequirement::is_in(TIER_LABEL, ["core"]),
                    requirement("disk", LabelOperator::Exists, &[]),
                ],
            })
            .with_required(NodeSelectorTerm::of(LabelRequirement::is_in(
                "wharf.io/machine-class",
                ["std-32c32g"],
            )));
        assert!(affinity.admits(&labels(&[(TIER_LABEL, "core"), ("disk", "ssd")])));
        assert!(!affinity.admits(&labels(&[(TIER_LABEL, "core")])));
        assert!(affinity.admits(&labels(&[("wharf.io/machine-class", "std-32c32g")])));
        assert_eq!(
            affinity.required_text(),
            "not matching node affinity wharf.io/tier in (core) and disk \
             or wharf.io/machine-class in (std-32c32g)"
        );
        assert!(NodeAffinity::default().admits(&BTreeMap::new()));
    }

    #[test]
    fn preference_is_the_matched_share_of_the_weight() {
        let affinity = NodeAffinity::default()
            .with_preferred(
                75,
                NodeSelectorTerm::of(LabelRequirement::is_in(TIER_LABEL, ["core"])),
            )
            .with_preferred(
                25,
                NodeSelectorTerm::of(requirement("disk", LabelOperator::Exists, &[])),
            );
        assert_eq!(
            affinity.preference_score(&labels(&[(TIER_LABEL, "core")])),
            Some(75)
        );
        assert_eq!(
            affinity.preference_score(&labels(&[("disk", "x")])),
            Some(25)
        );
        assert_eq!(affinity.preference_score(&BTreeMap::new()), Some(0));
        assert_eq!(
            NodeAffinity::default().preference_score(&BTreeMap::new()),
            None
        );
    }
}
