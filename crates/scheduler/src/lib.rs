//! Wharf's scheduler core: a pure function of (cluster snapshot, pod) to a
//! placement, or to an explanation when no node fits.
//!
//! **Architecture invariant:** no IO, no clock, no async, no randomness. The
//! control plane converts its objects into [`NodeInfo`] and [`PodInfo`],
//! keeps one [`Snapshot`] patched from watch events, and asks a
//! [`Scheduler`] where each pod goes.
//!
//! Scheduling filters, then scores. Filters are hard and give each failing
//! node one [`FilterReason`] (the first that fails): not ready, cordoned,
//! node selector (pool first), required [`NodeAffinity`] (tiers), pool
//! grant ([`PoolAccess`]), untolerated taint, pool quota, pod slots, cpu,
//! memory, host ports. Scores are soft, each in `0..=100`, weighted by
//! [`ScoreWeights`]: least- or most-allocated, balanced allocation, owner
//! spread over nodes and IDCs, image locality (the share of the pod's image
//! bytes in the node's layer cache), live load (cpu busy and load average
//! per core), machine class, preferred node affinity (only for pods that
//! prefer something) and `PreferNoSchedule` taints; what a node does
//! not report, and images of unknown layers, score a neutral 50. Equal
//! scores go to the smaller node name. A [`Placement`] carries the
//! winner's [`ScoreBreakdown`].
//!
//! Speed: per distinct (selector, tolerations) the snapshot caches which
//! nodes pass the label, taint and state filters as a bitmap; the per-pod
//! pass then reads one compact 48-byte record per candidate node and
//! compares no strings.
//!
//! ```
//! use wharf_scheduler::{
//!     NodeInfo, PodInfo, Resources, Scheduler, SchedulerConfig, Snapshot, POOL_LABEL,
//! };
//! let node = |name: &str, pool: &str| {
//!     NodeInfo::new(name, Resources::new(4000, 8 << 30, 110)).with_label(POOL_LABEL, pool)
//! };
//! let mut snapshot = Snapshot::from_nodes([node("a", "web"), node("b", "web"), node("c", "db")]);
//! let scheduler = Scheduler::new(SchedulerConfig::default());
//! let pod = PodInfo::new(500, 1 << 30).with_selector(POOL_LABEL, "web").with_owner("shop/web");
//! let mut placed = Vec::new();
//! for _ in 0..2 {
//!     let placement = scheduler.schedule(&mut snapshot, &pod).unwrap();
//!     snapshot.assume(placement.node, &pod).unwrap();
//!     placed.push(placement.node_name);
//! }
//! placed.sort();
//! assert_eq!(placed, ["a", "b"]); // replicas spread
//! ```

mod access;
mod affinity;
mod config;
mod error;
mod filter;
mod intern;
mod mask;
mod node;
mod pod;
mod resources;
mod schedule;
mod score;
mod snapshot;
mod taint;

pub use access::{PoolAccess, PoolQuota};
pub use affinity::{
    LabelOperator, LabelRequirement, NodeAffinity, NodeSelectorTerm, PreferredTerm, TIER_LABEL,
};
pub use config::{SchedulerConfig, ScoreWeights, Strategy};
pub use error::SnapshotError;
pub use filter::FilterReason;
pub use node::{
    CLUSTER_KIND_LABEL, HostPort, IDC_LABEL, MACHINE_CLASS_LABEL, NodeInfo, POOL_LABEL, Protocol,
};
pub use pod::PodInfo;
pub use resources::Resources;
pub use schedule::{Placement, ReasonCount, Scheduler, ScoreBreakdown, Unschedulable};
pub use snapshot::{NodeId, Snapshot};
pub use taint::{Taint, TaintEffect, Toleration, TolerationOperator, tolerated};
