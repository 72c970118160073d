//! The control plane: cluster objects kept in the `Store` with optimistic
//! concurrency, and the controllers that act on them — the deployment
//! controller (replicas into pods, rolling templates out and keeping
//! revisions), the scheduling loop (pending pods onto
//! nodes, bound by compare-and-swap with each node's allocation), node
//! lifecycle (heartbeat leases into readiness; pods of dead nodes evicted
//! after their tolerations, rate-limited per zone), ConfigMaps and Secrets
//! (Secret data sealed at rest), PersistentVolumeClaims bound to the node
//! of their first pod, graceful pod deletion confirmed by nodes,
//! garbage collection by owner references, horizontal pod autoscaling, pool autoscaling (machines
//! made and removed in cloud pools through `wharf-provider`), IP pools with addresses
//! claimed by compare-and-swap, events, and leader election
//! so that several servers on one etcd run one set of controllers.
//!
//! Controllers are reconcile loops driven by watches, idempotent and safe
//! to restart: all their state is rebuilt from the store.

mod alerting;
mod autoscalers;
mod claims;
mod cluster;
mod component_commit;
mod config;
pub mod cost;
mod deployments;
mod drain;
mod endpoints;
mod error;
mod events;
mod eviction;
mod eviction_view;
mod garbage;
mod grants;
mod hpa_controller;
pub mod hpa_replicas;
mod image_layers;
mod inventory;
mod ipam;
mod leader;
mod nodes;
mod objects;
mod placement;
mod pod_metrics;
mod pod_status;
mod pods;
mod pool_autoscaler;
mod pool_capacity;
mod pool_membership;
mod queue;
mod revisions;
mod rollout;
mod rollout_status;
mod scheduling;
mod services;
mod termination;
#[cfg(test)]
mod test_objects;

pub use claims::{ClaimDeletion, uses_claim};
pub use cluster::{ControlPlane, Running};
pub use component_commit::{
    CommitFailure, CommitFlowController, FlowTiming, MeasuredChanges, PodCommitter, SpecStore,
    commit_index_key, default_commit_tag, pinned_deployment,
};
pub use config::{ConfigObjects, SealedSecret, used_on_node};
pub use deployments::{
    Clock, DeploymentController, TEMPLATE_HASH_LABEL, deployment_of, pod_for, template_hash,
};
pub use drain::{DrainError, DrainOptions, EvictedPod, eviction_order};
pub use endpoints::EndpointsController;
pub use error::ControlError;
pub use events::{CLUSTER_EVENTS, EventRecorder};
pub use eviction::{
    EvictionConfig, NodeEviction, TAINT_NOT_READY, TAINT_UNREACHABLE, ZoneState, condition_taint,
    eviction_deadline, zone_rate, zone_state,
};
pub use garbage::{GarbageCollector, Sweep};
pub use grants::{apply_pool_grant, check_pool_grant, create_pool_grant};
pub use hpa_controller::{DEFAULT_HPA_SYNC_PERIOD, HpaController, ScaleReport, ScaleReporter};
pub use image_layers::{ImageLayers, Layer};
pub use inventory::InventoryWrite;
pub use ipam::{IP_ALLOCATIONS, IpReconciler, POD_IPS, ip_allocation_key, pod_ip_key};
pub use leader::{Candidate, current_leader, run_as_leader};
pub use nodes::{HEARTBEATS, NodeLifecycle, NodeRegistration};
pub use objects::{Change, Object, Objects, decode, encode, key_of, prefix_of, revision_of};
pub use placement::pool_access;
pub use pod_metrics::PodMetricsStore;
pub use pod_status::{StatusEvent, record_pod_event, report_pod_status, status_events};
pub use pods::{ALLOCATIONS, Allocation, BindOutcome, allocation_key};
pub use pool_autoscaler::{
    DEFAULT_POOL_SCAN_INTERVAL, DEFAULT_SCALE_DOWN_DELAY, JoinCommands, PROVIDER_SECRETS_PROJECT,
    PoolAutoscaler, PoolScaleAction, PoolScaleReport, PoolScaleReporter, ProviderFactory,
};
pub use queue::WorkQueue;
pub use revisions::{revisions_of, undo};
pub use rollout_status::{
    NEW_REPLICA_SET_AVAILABLE, PROGRESS_DEADLINE_EXCEEDED, REPLICA_SET_UPDATED,
};
pub use scheduling::{SchedulingLoop, SchedulingReport, SchedulingReporter, node_info, pod_info};
pub use services::{DEFAULT_SERVICE_RANGE, SERVICE_IPS, service_ip_key};
pub use termination::{DEFAULT_GRACE_SECONDS, DeletionOutcome, PodDeletion, grace_seconds};
