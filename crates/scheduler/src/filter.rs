//! Hard constraints. A node that fails gets one reason: the first failing
//! filter in this order: required node (volume affinity), readiness,
//! cordon, node selector (pool first), required node affinity (tiers),
//! pool grant, taints, pod slots, cpu, memory, host ports; a pool quota is
//! checked with the resources, before them.
//!
//! These functions are the reference definition, written plainly over the
//! node's own fields. The scheduler's hot loop caches their label and taint
//! verdicts per distinct (selector, tolerations) and checks the rest inline.

use std::collections::BTreeMap;
use std::fmt;

use crate::{
    HostPort, NodeAffinity, NodeInfo, POOL_LABEL, PodInfo, PoolAccess, Resources, Toleration, taint,
};

/// Why a node cannot take a pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FilterReason {
    /// The pod's volumes live on another node.
    VolumeNodeConflict,
    /// The node's agent does not report it healthy.
    NotReady,
    /// The node is cordoned.
    Unschedulable,
    /// The pod selects pool `.0` (`wharf.io/pool`) and the node is not in it.
    NotInPool(String),
    /// A node selector label other than the pool is missing or different.
    NodeSelectorMismatch,
    /// The node matches none of the pod's required node affinity terms;
    /// the text says which (`not in tier core`).
    NodeAffinityMismatch(String),
    /// The node's pool is managed and the pod's project has no grant on it.
    NoPoolGrant {
        /// The node's pool.
        pool: String,
        /// The pod's project.
        project: String,
    },
    /// Placing the pod in the pool would take its project past its grant's
    /// quota.
    PoolQuotaExceeded {
        /// The node's pool.
        pool: String,
        /// The pod's project.
        project: String,
        /// `cpu`, `memory` or `pods`.
        resource: &'static str,
        /// The quota, as text.
        limit: String,
    },
    /// A `NoSchedule` or `NoExecute` taint with this key is not tolerated.
    UntoleratedTaint(String),
    /// No pod slot left.
    InsufficientPods,
    /// Not enough unrequested cpu.
    InsufficientCpu,
    /// Not enough unrequested memory.
    InsufficientMemory,
    /// A host port the pod binds is already in use.
    HostPortConflict(HostPort),
}

impl fmt::Display for FilterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterReason::VolumeNodeConflict => f.write_str("volume node affinity conflict"),
            FilterReason::NotReady => f.write_str("not ready"),
            FilterReason::Unschedulable => f.write_str("cordoned"),
            FilterReason::NotInPool(pool) => write!(f, "not in pool {pool}"),
            FilterReason::NodeSelectorMismatch => f.write_str("not matching node selector"),
            FilterReason::NodeAffinityMismatch(text) => f.write_str(text),
            FilterReason::NoPoolGrant { pool, project } => {
                write!(f, "pool {pool}: project {project} has no grant")
            }
            FilterReason::PoolQuotaExceeded {
                pool,
                project,
                resource,
                limit,
            } => write!(
                f,
                "pool {pool}: project {project} would exceed its {resource} quota of {limit}"
            ),
            FilterReason::UntoleratedTaint(key) => write!(f, "untolerated taint {key}"),
            FilterReason::InsufficientPods => f.write_str("too many pods"),
            FilterReason::InsufficientCpu => f.write_str("insufficient cpu"),
            FilterReason::InsufficientMemory => f.write_str("insufficient memory"),
            FilterReason::HostPortConflict(port) => write!(f, "host port {port} in use"),
        }
    }
}

/// A failure of the filters that depend only on the node's labels, taints
/// and state, borrowed so the cache can classify thousands of nodes without
/// allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StaticFailure<'a> {
    VolumeNodeConflict,
    NotReady,
    Unschedulable,
    NotInPool(&'a str),
    NodeSelectorMismatch,
    NodeAffinity(&'a NodeAffinity),
    NoPoolGrant { pool: &'a str, project: &'a str },
    UntoleratedTaint(&'a str),
}

impl StaticFailure<'_> {
    /// Whether `reason` is the owned form of this failure.
    pub(crate) fn is(self, reason: &FilterReason) -> bool {
        match (self, reason) {
            (StaticFailure::VolumeNodeConflict, FilterReason::VolumeNodeConflict)
            | (StaticFailure::NotReady, FilterReason::NotReady)
            | (StaticFailure::Unschedulable, FilterReason::Unschedulable)
            | (StaticFailure::NodeSelectorMismatch, FilterReason::NodeSelectorMismatch) => true,
            (StaticFailure::NotInPool(a), FilterReason::NotInPool(b))
            | (StaticFailure::UntoleratedTaint(a), FilterReason::UntoleratedTaint(b)) => a == b,
            // A cache entry holds one affinity, so its reasons hold at most
            // one affinity text: no need to build it again to compare.
            (StaticFailure::NodeAffinity(_), FilterReason::NodeAffinityMismatch(_)) => true,
            (
                StaticFailure::NoPoolGrant { pool, project },
                FilterReason::NoPoolGrant {
                    pool: p,
                    project: q,
                },
            ) => pool == p && project == q,
            _ => false,
        }
    }

    /// The owned form.
    pub(crate) fn to_reason(self) -> FilterReason {
        match self {
            StaticFailure::VolumeNodeConflict => FilterReason::VolumeNodeConflict,
            StaticFailure::NotReady => FilterReason::NotReady,
            StaticFailure::Unschedulable => FilterReason::Unschedulable,
            StaticFailure::NotInPool(pool) => FilterReason::NotInPool(pool.to_owned()),
            StaticFailure::NodeSelectorMismatch => FilterReason::NodeSelectorMismatch,
            StaticFailure::NodeAffinity(affinity) => {
                FilterReason::NodeAffinityMismatch(affinity.required_text())
            }
            StaticFailure::NoPoolGrant { pool, project } => FilterReason::NoPoolGrant {
                pool: pool.to_owned(),
                project: project.to_owned(),
            },
            StaticFailure::UntoleratedTaint(key) => FilterReason::UntoleratedTaint(key.to_owned()),
        }
    }
}

/// What the static filters ask of a node for one pod.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StaticAsk<'a> {
    pub(crate) required_node: Option<&'a str>,
    pub(crate) selector: &'a BTreeMap<String, String>,
    pub(crate) tolerations: &'a [Toleration],
    pub(crate) affinity: &'a NodeAffinity,
    /// The pod's project, checked against `access` (`None`: no pool is
    /// managed, nothing to check).
    pub(crate) project: Option<&'a str>,
    pub(crate) access: &'a PoolAccess,
}

impl<'a> StaticAsk<'a> {
    /// What `pod` asks, with grants from `access`.
    pub(crate) fn of(pod: &'a PodInfo, access: &'a PoolAccess) -> Self {
        StaticAsk {
            required_node: pod.required_node.as_deref(),
            selector: &pod.node_selector,
            tolerations: &pod.tolerations,
            affinity: &pod.affinity,
            project: granted_project(pod.project.as_deref(), access),
            access,
        }
    }
}

/// The project grants are checked for: none while no pool is managed, so
/// the scheduler caches one verdict for all projects then.
pub(crate) fn granted_project<'a>(
    project: Option<&'a str>,
    access: &PoolAccess,
) -> Option<&'a str> {
    (!access.is_empty()).then(|| project.unwrap_or_default())
}

/// The first failing required-node/label/taint/state filter, if any. The
/// required node comes first so that the node a pod must go to is
/// explained by its own state (not ready, full, ...).
pub(crate) fn static_failure<'a>(
    node: &'a NodeInfo,
    ask: StaticAsk<'a>,
) -> Option<StaticFailure<'a>> {
    let StaticAsk {
        required_node,
        selector,
        tolerations,
        affinity,
        project,
        access,
    } = ask;
    if required_node.is_some_and(|name| name != node.name) {
        return Some(StaticFailure::VolumeNodeConflict);
    }
    if !node.ready {
        return Some(StaticFailure::NotReady);
    }
    if !node.schedulable {
        return Some(StaticFailure::Unschedulable);
    }
    if let Some(failure) = selector_failure(&node.labels, selector) {
        return Some(failure);
    }
    if !affinity.admits(&node.labels) {
        return Some(StaticFailure::NodeAffinity(affinity));
    }
    if let (Some(project), Some(pool)) = (project, node.pool())
        && !access.allows(pool, project)
    {
        return Some(StaticFailure::NoPoolGrant { pool, project });
    }
    untolerated_taint(node, tolerations).map(StaticFailure::UntoleratedTaint)
}

/// Pool first, because "not in pool web" tells an operator more than a
/// generic selector mismatch when both apply.
fn selector_failure<'a>(
    labels: &BTreeMap<String, String>,
    selector: &'a BTreeMap<String, String>,
) -> Option<StaticFailure<'a>> {
    if let Some(pool) = selector.get(POOL_LABEL)
        && labels.get(POOL_LABEL) != Some(pool)
    {
        return Some(StaticFailure::NotInPool(pool));
    }
    let mismatch = selector
        .iter()
        .any(|(key, value)| labels.get(key) != Some(value));
    mismatch.then_some(StaticFailure::NodeSelectorMismatch)
}

/// Key of the first untolerated taint that keeps pods off the node.
fn untolerated_taint<'a>(node: &'a NodeInfo, tolerations: &[Toleration]) -> Option<&'a str> {
    node.taints
        .iter()
        .find(|t| t.effect.blocks_scheduling() && !taint::tolerated(tolerations, t))
        .map(|t| t.key.as_str())
}

/// How many `PreferNoSchedule` taints on the node the pod does not tolerate.
pub(crate) fn untolerated_preferences(node: &NodeInfo, tolerations: &[Toleration]) -> u32 {
    let count = node
        .taints
        .iter()
        .filter(|t| !t.effect.blocks_scheduling() && !taint::tolerated(tolerations, t))
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// The first failing resource or host-port filter, given what is still
/// free on the node and which host ports are taken.
pub(crate) fn dynamic_failure(
    free: Resources,
    port_in_use: impl Fn(HostPort) -> bool,
    pod: &PodInfo,
) -> Option<FilterReason> {
    let wanted = pod.requests;
    if wanted.pods > free.pods {
        return Some(FilterReason::InsufficientPods);
    }
    if wanted.cpu_millis > free.cpu_millis {
        return Some(FilterReason::InsufficientCpu);
    }
    if wanted.memory_bytes > free.memory_bytes {
        return Some(FilterReason::InsufficientMemory);
    }
    pod.host_ports
        .iter()
        .find(|&&port| port_in_use(port))
        .map(|&port| FilterReason::HostPortConflict(port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Taint, TaintEffect};

    const NO_AFFINITY: &NodeAffinity = &NodeAffinity {
        required: Vec::new(),
        preferred: Vec::new(),
    };

    fn ask<'a>(
        required_node: Option<&'a str>,
        selector: &'a BTreeMap<String, String>,
        tolerations: &'a [Toleration],
    ) -> StaticAsk<'a> {
        static ACCESS: std::sync::OnceLock<PoolAccess> = std::sync::OnceLock::new();
        StaticAsk {
            required_node,
            selector,
            tolerations,
            affinity: NO_AFFINITY,
            project: None,
            access: ACCESS.get_or_init(PoolAccess::default),
        }
    }

    fn selector(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pool_mismatch_wins_over_other_selector_keys() {
        let node = NodeInfo::new("n", Resources::ZERO)
            .with_label(POOL_LABEL, "db")
            .with_label("disk", "hdd");
        let wanted = selector(&[("disk", "ssd"), (POOL_LABEL, "web")]);
        assert_eq!(
            static_failure(&node, ask(None, &wanted, &[])),
            Some(StaticFailure::NotInPool("web"))
        );
        let wanted = selector(&[("disk", "ssd"), (POOL_LABEL, "db")]);
        assert_eq!(
            static_failure(&node, ask(None, &wanted, &[])),
            Some(StaticFailure::NodeSelectorMismatch)
        );
    }

    #[test]
    fn first_blocking_taint_is_named_and_preferences_counted() {
        let node = NodeInfo::new("n", Resources::ZERO)
            .with_taint(Taint::new("soft", "", TaintEffect::PreferNoSchedule))
            .with_taint(Taint::new("a", "", TaintEffect::NoExecute))
            .with_taint(Taint::new("b", "", TaintEffect::NoSchedule));
        let none = BTreeMap::new();
        assert_eq!(
            static_failure(&node, ask(None, &none, &[])),
            Some(StaticFailure::UntoleratedTaint("a"))
        );
        let tolerate_a = [Toleration::exists("a")];
        assert_eq!(
            static_failure(&node, ask(None, &none, &tolerate_a)),
            Some(StaticFailure::UntoleratedTaint("b"))
        );
        assert_eq!(untolerated_preferences(&node, &[]), 1);
        assert_eq!(
            untolerated_preferences(&node, &[Toleration::exists("soft")]),
            0
        );
    }

    #[test]
    fn readiness_comes_before_cordon_and_selector() {
        let mut node = NodeInfo::new("n", Resources::ZERO);
        node.ready = false;
        node.schedulable = false;
        let wanted = selector(&[(POOL_LABEL, "web")]);
        assert_eq!(
            static_failure(&node, ask(None, &wanted, &[])),
            Some(StaticFailure::NotReady)
        );
        node.ready = true;
        assert_eq!(
            static_failure(&node, ask(None, &wanted, &[])),
            Some(StaticFailure::Unschedulable)
        );
    }

    #[test]
    fn a_required_node_comes_before_every_other_filter() {
        let mut node = NodeInfo::new("n", Resources::ZERO);
        node.ready = false;
        let none = BTreeMap::new();
        assert_eq!(
            static_failure(&node, ask(Some("m"), &none, &[])),
            Some(StaticFailure::VolumeNodeConflict)
        );
        assert_eq!(
            static_failure(&node, ask(Some("n"), &none, &[])),
            Some(StaticFailure::NotReady)
        );
        node.ready = true;
        assert_eq!(static_failure(&node, ask(Some("n"), &none, &[])), None);
    }

    #[test]
    fn resources_are_checked_pods_cpu_memory_then_ports() {
        let pod = PodInfo::new(100, 100).with_host_port(HostPort::tcp(80));
        let taken = |p: HostPort| p == HostPort::tcp(80);
        assert_eq!(
            dynamic_failure(Resources::new(0, 0, 0), taken, &pod),
            Some(FilterReason::InsufficientPods)
        );
        assert_eq!(
            dynamic_failure(Resources::new(99, 0, 1), taken, &pod),
            Some(FilterReason::InsufficientCpu)
        );
        assert_eq!(
            dynamic_failure(Resources::new(100, 99, 1), taken, &pod),
            Some(FilterReason::InsufficientMemory)
        );
        assert_eq!(
            dynamic_failure(Resources::new(100, 100, 1), taken, &pod),
            Some(FilterReason::HostPortConflict(HostPort::tcp(80)))
        );
        assert_eq!(
            dynamic_failure(Resources::new(100, 100, 1), |_| false, &pod),
            None
        );
    }

    #[test]
    fn static_failure_round_trips_to_reason() {
        for failure in [
            StaticFailure::VolumeNodeConflict,
            StaticFailure::NotReady,
            StaticFailure::Unschedulable,
            StaticFailure::NotInPool("web"),
            StaticFailure::NodeSelectorMismatch,
            StaticFailure::NoPoolGrant {
                pool: "core",
                project: "b",
            },
            StaticFailure::UntoleratedTaint("k"),
        ] {
            assert!(failure.is(&failure.to_reason()));
        }
        assert!(!StaticFailure::NotInPool("web").is(&FilterReason::NotInPool("db".into())));
    }

    #[test]
    fn affinity_then_grants_come_after_the_selector_and_before_taints() {
        use crate::{LabelRequirement, NodeSelectorTerm, PoolQuota, TIER_LABEL};
        let node = NodeInfo::new("n", Resources::ZERO)
            .with_label(POOL_LABEL, "core")
            .with_label(TIER_LABEL, "batch")
            .with_taint(Taint::new("k", "", TaintEffect::NoSchedule));
        let none = BTreeMap::new();
        let core = NodeAffinity::default().with_required(NodeSelectorTerm::of(
            LabelRequirement::is_in(TIER_LABEL, ["core"]),
        ));
        let access = PoolAccess::default().with_grant("core", "a", PoolQuota::default());
        let mut wanted = ask(None, &none, &[]);
        wanted.affinity = &core;
        wanted.access = &access;
        wanted.project = Some("b");
        let failure = static_failure(&node, wanted).unwrap();
        assert_eq!(failure.to_reason().to_string(), "not in tier core");
        wanted.affinity = NO_AFFINITY;
        let failure = static_failure(&node, wanted).unwrap();
        assert_eq!(
            failure.to_reason().to_string(),
            "pool core: project b has no grant"
        );
        wanted.project = Some("a");
        assert_eq!(
            static_failure(&node, wanted),
            Some(StaticFailure::UntoleratedTaint("k"))
        );
    }
}
