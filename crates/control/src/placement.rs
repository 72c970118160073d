//! A pod's placement wishes in the scheduler core's terms: Kubernetes node
//! affinity and the `wharf.io/tier` annotation become one
//! [`NodeAffinity`], the `wharf.io/pool` annotation a pool node selector;
//! and the pool grants the scheduler enforces, read from the store.

use std::collections::BTreeMap;

use wharf_api::{
    GrantQuota, LABEL_POOL, LABEL_TIER, Pod, Pool, PoolGrant, Tier, TierRequest, named_pool,
    parse_cpu_millis, parse_memory_bytes,
};
use wharf_scheduler::{
    LabelOperator, LabelRequirement, NodeAffinity, NodeSelectorTerm, PoolAccess, PoolQuota,
};

/// The weight of a preferred tier: the most a preferred term may have.
const TIER_WEIGHT: u32 = 100;

/// The pod's node affinity with its tier annotation folded in: a required
/// tier joins every required term (they are alternatives, and the tier
/// must hold in each), a preferred tier is one more preferred term.
pub(crate) fn node_affinity(pod: &Pod) -> NodeAffinity {
    let mut affinity = kubernetes_affinity(pod);
    let Ok(Some(request)) = TierRequest::from_annotations(&pod.metadata.annotations) else {
        return affinity;
    };
    let tier = LabelRequirement::is_in(LABEL_TIER, [request.tier.as_str()]);
    if request.preferred {
        return affinity.with_preferred(TIER_WEIGHT, NodeSelectorTerm::of(tier));
    }
    if affinity.required.is_empty() {
        affinity.required.push(NodeSelectorTerm::default());
    }
    for term in &mut affinity.required {
        term.requirements.push(tier.clone());
    }
    affinity
}

/// The tier the pod prefers (not requires), if any.
pub(crate) fn preferred_tier(pod: &Pod) -> Option<Tier> {
    TierRequest::from_annotations(&pod.metadata.annotations)
        .ok()
        .flatten()
        .filter(|request| request.preferred)
        .map(|request| request.tier)
}

/// The pod's node selector with the pool its annotation names, when the
/// selector names none.
pub(crate) fn node_selector(pod: &Pod) -> BTreeMap<String, String> {
    let mut selector = pod.spec.node_selector.clone();
    if let Some(pool) = named_pool(&pod.spec.node_selector, &pod.metadata.annotations) {
        selector
            .entry(LABEL_POOL.to_string())
            .or_insert_with(|| pool.to_string());
    }
    selector
}

fn kubernetes_affinity(pod: &Pod) -> NodeAffinity {
    let Some(node) = pod
        .spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
    else {
        return NodeAffinity::default();
    };
    let mut affinity = NodeAffinity::default();
    for term in node.required.iter().flat_map(|r| &r.node_selector_terms) {
        affinity = affinity.with_required(term_of(term));
    }
    for preferred in &node.preferred {
        affinity = affinity.with_preferred(preferred.weight, term_of(&preferred.preference));
    }
    affinity
}

fn term_of(term: &wharf_api::NodeSelectorTerm) -> NodeSelectorTerm {
    let requirements = term
        .match_expressions
        .iter()
        .map(|r| LabelRequirement {
            key: r.key.clone(),
            operator: match r.operator.as_str() {
                "NotIn" => LabelOperator::NotIn,
                "Exists" => LabelOperator::Exists,
                "DoesNotExist" => LabelOperator::DoesNotExist,
                // Validation admits only the four; a stored oddity
                // matches as In, which fails safe (nothing matches).
                _ => LabelOperator::In,
            },
            values: r.values.clone(),
        })
        .collect();
    NodeSelectorTerm { requirements }
}

/// The managed pools (those with a `Pool` object) and the grants on them.
pub fn pool_access<'a>(
    pools: impl IntoIterator<Item = &'a Pool>,
    grants: impl IntoIterator<Item = &'a PoolGrant>,
) -> PoolAccess {
    let mut access = PoolAccess::default();
    for pool in pools {
        access = access.with_pool(pool.metadata.name.clone());
    }
    for grant in grants {
        let quota = grant.spec.quota.as_ref().map(quota_of).unwrap_or_default();
        access = access.with_grant(grant.spec.pool.clone(), grant.spec.project.clone(), quota);
    }
    access
}

/// A grant's quota in the scheduler's units; a value that does not parse
/// (validation refuses those) is left unlimited rather than blocking all.
fn quota_of(quota: &GrantQuota) -> PoolQuota {
    PoolQuota {
        cpu_millis: quota
            .cpu
            .as_deref()
            .and_then(|cpu| parse_cpu_millis("quota.cpu", cpu).ok()),
        memory_bytes: quota
            .memory
            .as_deref()
            .and_then(|memory| parse_memory_bytes("quota.memory", memory).ok()),
        pods: quota.pods,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotations: &[(&str, &str)], affinity: Option<serde_json::Value>) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.annotations = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        pod.spec.affinity = affinity.map(|a| serde_json::from_value(a).unwrap());
        pod
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_required_tier_joins_every_kubernetes_term() {
        let affinity = node_affinity(&pod(
            &[("wharf.io/tier", "core")],
            Some(serde_json::json!({"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "disk", "operator": "Exists"}]},
                    {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a"]}]}
                ]}
            }})),
        ));
        assert!(affinity.admits(&labels(&[("disk", "x"), (LABEL_TIER, "core")])));
        assert!(affinity.admits(&labels(&[("gpu", "a"), (LABEL_TIER, "core")])));
        assert!(!affinity.admits(&labels(&[("disk", "x"), (LABEL_TIER, "batch")])));
        let tier_only = node_affinity(&pod(&[("wharf.io/tier", "batch")], None));
        assert_eq!(tier_only.required_text(), "not in tier batch");
        assert_eq!(
            preferred_tier(&pod(&[("wharf.io/tier", "batch")], None)),
            None
        );
    }

    #[test]
    fn a_preferred_tier_is_a_preferred_term() {
        let pod = pod(&[("wharf.io/tier", "core;preferred")], None);
        let affinity = node_affinity(&pod);
        assert!(affinity.required.is_empty());
        assert_eq!(
            affinity.preference_score(&labels(&[(LABEL_TIER, "core")])),
            Some(100)
        );
        assert_eq!(preferred_tier(&pod), Some(Tier::Core));
    }

    #[test]
    fn the_pool_annotation_selects_the_pool_unless_the_selector_does() {
        let mut annotated = pod(&[("wharf.io/pool", "batch")], None);
        assert_eq!(node_selector(&annotated)[LABEL_POOL], "batch");
        annotated
            .spec
            .node_selector
            .insert(LABEL_POOL.into(), "core".into());
        assert_eq!(node_selector(&annotated)[LABEL_POOL], "core");
    }

    #[test]
    fn grants_become_the_schedulers_access_with_quotas() {
        let pool = |name: &str| {
            let mut pool = Pool::default();
            pool.metadata.name = name.into();
            pool
        };
        let mut grant = PoolGrant::default();
        grant.spec.pool = "core".into();
        grant.spec.project = "a".into();
        grant.spec.quota = Some(GrantQuota {
            cpu: Some("4".into()),
            memory: Some("1Gi".into()),
            pods: Some(3),
        });
        let access = pool_access(&[pool("core"), pool("batch")], &[grant]);
        assert!(access.allows("core", "a"));
        assert!(!access.allows("batch", "a"));
        assert!(access.allows("elsewhere", "a"));
        let expected = PoolAccess::default().with_pool("batch").with_grant(
            "core",
            "a",
            PoolQuota {
                cpu_millis: Some(4000),
                memory_bytes: Some(1 << 30),
                pods: Some(3),
            },
        );
        assert_eq!(access, expected);
    }
}
