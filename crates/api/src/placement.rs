//! Where a pod asks to run, beyond `nodeSelector`: Kubernetes' node
//! affinity (`spec.affinity.nodeAffinity`, required and preferred terms),
//! the `wharf.io/tier` annotation (a tier required or preferred), and the
//! `wharf.io/pool` annotation (a pool, as the node selector names it).
//! The control plane turns these into the scheduler's terms.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::inventory::{ANNOTATION_TIER, Tier};
use crate::{LABEL_POOL, ObjectError};

/// The annotation naming the pool a Deployment's pods run in, as the
/// `wharf.io/pool` node selector does.
pub const ANNOTATION_POOL: &str = "wharf.io/pool";

/// Kubernetes' pod `affinity`: only `nodeAffinity` is honoured (pod
/// affinity and anti-affinity are reported as ignored fields).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Affinity {
    /// Labels the pod's node must or should have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeAffinity>,
}

/// Required and preferred node terms.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeAffinity {
    /// The node must match one of the terms.
    #[serde(
        default,
        rename = "requiredDuringSchedulingIgnoredDuringExecution",
        skip_serializing_if = "Option::is_none"
    )]
    pub required: Option<NodeSelector>,
    /// Nodes matching more weight score higher.
    #[serde(
        default,
        rename = "preferredDuringSchedulingIgnoredDuringExecution",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub preferred: Vec<PreferredSchedulingTerm>,
}

/// Alternatives: a node matches when it matches one term.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector {
    /// The terms.
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

/// Requirements that must all hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorTerm {
    /// Conditions on node labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<NodeSelectorRequirement>,
}

/// A condition on one node label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeSelectorRequirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// The values `In` and `NotIn` compare with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A preferred term and its weight (1 to 100).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PreferredSchedulingTerm {
    /// How much a match counts.
    pub weight: u32,
    /// The labels preferred.
    pub preference: NodeSelectorTerm,
}

impl Affinity {
    /// Checks operators, values and weights; the error names the field.
    pub fn validate(&self, field: &str) -> Result<(), ObjectError> {
        let Some(node) = &self.node_affinity else {
            return Ok(());
        };
        let field = format!("{field}.nodeAffinity");
        if let Some(required) = &node.required {
            let at = format!("{field}.requiredDuringSchedulingIgnoredDuringExecution");
            if required.node_selector_terms.is_empty() {
                return Err(ObjectError::invalid(
                    format!("{at}.nodeSelectorTerms"),
                    "at least one term is required",
                ));
            }
            for (i, term) in required.node_selector_terms.iter().enumerate() {
                term.validate(&format!("{at}.nodeSelectorTerms[{i}]"))?;
            }
        }
        for (i, preferred) in node.preferred.iter().enumerate() {
            let at = format!("{field}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            if !(1..=100).contains(&preferred.weight) {
                return Err(ObjectError::invalid(
                    format!("{at}.weight"),
                    "must be from 1 to 100",
                ));
            }
            preferred.preference.validate(&format!("{at}.preference"))?;
        }
        Ok(())
    }
}

impl NodeSelectorTerm {
    fn validate(&self, field: &str) -> Result<(), ObjectError> {
        for (i, requirement) in self.match_expressions.iter().enumerate() {
            let at = format!("{field}.matchExpressions[{i}]");
            let needs_values = match requirement.operator.as_str() {
                "In" | "NotIn" => true,
                "Exists" | "DoesNotExist" => false,
                other => {
                    return Err(ObjectError::invalid(
                        format!("{at}.operator"),
                        format!("{other} is not supported: use In, NotIn, Exists or DoesNotExist"),
                    ));
                }
            };
            if needs_values == requirement.values.is_empty() {
                let wanted = if needs_values {
                    "are required"
                } else {
                    "must be empty"
                };
                return Err(ObjectError::invalid(
                    format!("{at}.values"),
                    format!("values {wanted} with {}", requirement.operator),
                ));
            }
        }
        Ok(())
    }
}

/// What the `wharf.io/tier` annotation asks: `core` requires nodes of tier
/// core, `core;preferred` prefers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierRequest {
    /// The tier.
    pub tier: Tier,
    /// Preferred (placed elsewhere when it has no room) rather than required.
    pub preferred: bool,
}

impl TierRequest {
    /// The request in `annotations`, if any.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use wharf_api::{TierRequest, Tier};
    /// let asked = BTreeMap::from([("wharf.io/tier".to_string(), "core;preferred".to_string())]);
    /// let request = TierRequest::from_annotations(&asked).unwrap().unwrap();
    /// assert_eq!(request, TierRequest { tier: Tier::Core, preferred: true });
    /// ```
    pub fn from_annotations(
        annotations: &BTreeMap<String, String>,
    ) -> Result<Option<TierRequest>, ObjectError> {
        let Some(value) = annotations.get(ANNOTATION_TIER) else {
            return Ok(None);
        };
        TierRequest::parse(value, &format!("annotations[{ANNOTATION_TIER}]")).map(Some)
    }

    /// Reads `core`, `general` or `batch`, optionally followed by
    /// `;preferred` (a project's default tier is written so too); the
    /// error names `field`.
    ///
    /// ```
    /// use wharf_api::{TierRequest, Tier};
    /// let request = TierRequest::parse("batch", "defaultTier").unwrap();
    /// assert_eq!(request, TierRequest { tier: Tier::Batch, preferred: false });
    /// assert!(TierRequest::parse("gold", "defaultTier").unwrap_err().to_string().contains("defaultTier"));
    /// ```
    pub fn parse(value: &str, field: &str) -> Result<TierRequest, ObjectError> {
        let invalid = || {
            ObjectError::invalid(
                field,
                format!(
                    "{value:?} is not a tier: use core, general or batch, \
                     optionally followed by ;preferred"
                ),
            )
        };
        let (tier, preferred) = match value.split_once(';') {
            Some((tier, "preferred")) => (tier, true),
            Some(_) => return Err(invalid()),
            None => (value, false),
        };
        let tier = match tier.trim() {
            "core" => Tier::Core,
            "general" => Tier::General,
            "batch" => Tier::Batch,
            _ => return Err(invalid()),
        };
        Ok(TierRequest { tier, preferred })
    }
}

/// The pool a pod names: its `wharf.io/pool` node selector, else its
/// `wharf.io/pool` annotation.
pub fn named_pool<'a>(
    node_selector: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
) -> Option<&'a str> {
    node_selector
        .get(LABEL_POOL)
        .or_else(|| annotations.get(ANNOTATION_POOL))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(ANNOTATION_TIER.to_string(), value.to_string())])
    }

    #[test]
    fn tier_annotations_read_required_and_preferred() {
        let required = TierRequest::from_annotations(&annotations("batch")).unwrap();
        assert_eq!(
            required,
            Some(TierRequest {
                tier: Tier::Batch,
                preferred: false
            })
        );
        assert_eq!(
            TierRequest::from_annotations(&BTreeMap::new()).unwrap(),
            None
        );
        for bad in ["gold", "core;maybe", "core;"] {
            let err = TierRequest::from_annotations(&annotations(bad)).unwrap_err();
            assert!(err.to_string().contains("is not a tier"), "{err}");
        }
    }

    #[test]
    fn node_affinity_reads_kubernetes_yaml_and_checks_it() {
        let affinity: Affinity = serde_json::from_value(serde_json::json!({
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "wharf.io/machine-class", "operator": "In", "values": ["std-32c32g"]}
                    ]}]
                },
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 50, "preference": {"matchExpressions": [
                        {"key": "wharf.io/tier", "operator": "Exists"}
                    ]}}
                ]
            }
        }))
        .unwrap();
        affinity.validate("spec").unwrap();
        let mut bad = affinity.clone();
        let node = bad.node_affinity.as_mut().unwrap();
        node.preferred[0].weight = 0;
        assert!(
            bad.validate("spec")
                .unwrap_err()
                .to_string()
                .contains("weight")
        );
        // The first required requirement, changed by `change`, and the refusal.
        let refusal = |change: fn(&mut NodeSelectorRequirement)| {
            let mut bad = affinity.clone();
            let required = bad.node_affinity.as_mut().and_then(|n| n.required.as_mut());
            change(&mut required.unwrap().node_selector_terms[0].match_expressions[0]);
            bad.validate("spec").unwrap_err().to_string()
        };
        let err = refusal(|r| r.operator = "Gt".into());
        assert!(err.contains("Gt is not supported"), "{err}");
        let err = refusal(|r| r.values.clear());
        assert!(err.contains("values are required"), "{err}");
    }

    #[test]
    fn the_pool_comes_from_the_selector_first() {
        let selector = BTreeMap::from([(LABEL_POOL.to_string(), "core".to_string())]);
        let annotated = BTreeMap::from([(ANNOTATION_POOL.to_string(), "batch".to_string())]);
        assert_eq!(named_pool(&selector, &annotated), Some("core"));
        assert_eq!(named_pool(&BTreeMap::new(), &annotated), Some("batch"));
        assert_eq!(named_pool(&BTreeMap::new(), &BTreeMap::new()), None);
    }
}
