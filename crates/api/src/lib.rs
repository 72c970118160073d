//! Wharf's cluster objects — `Node`, `Deployment`, `Pod`, `Event`, `IpPool`,
//! `ConfigMap`, `Secret`, `PersistentVolumeClaim`, `Service`, `Endpoints` — with
//! Kubernetes-like metadata, validation, label selectors, resource
//! quantities, and reading of Kubernetes `apps/v1` Deployment and `v1`
//! ConfigMap, Secret and PersistentVolumeClaim YAML as is;
//! and replication's endpoints, policies, jobs and tasks ([`replication`]).
//! No IO and no HTTP: the control plane and replication store these, the
//! API serves them, the CLI reads them.
//!
//! ```
//! let yaml = r#"
//! apiVersion: apps/v1
//! kind: Deployment
//! metadata: {name: web, namespace: shop}
//! spec:
//!   replicas: 2
//!   selector: {matchLabels: {app: web}}
//!   template:
//!     metadata: {labels: {app: web}}
//!     spec: {containers: [{name: web, image: "shop/web:1"}]}
//! "#;
//! let parsed = wharf_api::parse_manifests(yaml).unwrap();
//! assert_eq!(parsed.len(), 1);
//! ```

mod alert;
mod autoscaling;
mod claim;
pub mod commit;
pub mod component_commit;
mod config;
mod config_volume;
mod cost;
mod cost_budget;
mod dns;
mod endpoints;
mod env;
mod error;
mod event;
mod falcon;
mod fieldref;
mod glob;
mod inventory;
mod inventory_check;
mod ippool;
mod join;
mod lifecycle;
mod manifest;
mod meta;
mod node;
mod node_init;
mod placement;
mod pool_grant;
pub mod preheat;
mod probe;
mod quantity;
pub mod replication;
pub mod repository;
pub mod rollout;
mod security;
mod service;
mod time;
mod usage;
mod volume;
mod workload;

pub use alert::{
    ALERT_HISTORY_LEN, Alert, AlertAggregation, AlertNotification, AlertReceiver, AlertRule,
    AlertRuleSpec, AlertRuleStatus, AlertState, AlertTransition, Comparison, Delivery,
    DeliveryState, MAX_ALERT_WINDOW_SECONDS, ReceiverSpec, Silence, SilenceSpec,
};
pub use autoscaling::{
    HorizontalPodAutoscaler, HpaBehavior, HpaSpec, HpaStatus, MetricSpec, MetricStatus,
    MetricTarget, MetricValueStatus, ResolvedTarget, ResourceMetric, ResourceMetricStatus,
    ScaleTargetRef, ScalingPolicy, ScalingRules,
};
pub use claim::{
    ANNOTATION_SELECTED_NODE, ClaimResources, ClaimSpec, ClaimStatus, ClaimVolume,
    LOCAL_STORAGE_CLASS, PersistentVolumeClaim, READ_WRITE_ONCE, READ_WRITE_ONCE_POD,
};
pub use config::{ConfigMap, MAX_CONFIG_BYTES, SECRET_TYPE_OPAQUE, Secret, check_config_key};
pub use config_volume::{
    ConfigMapVolume, DEFAULT_FILE_MODE, DownwardApiFile, DownwardApiVolume, KeyToPath,
    ProjectedFile, Projection, SecretVolume,
};
pub use cost::{
    CostGrouping, CostMicros, CostReport, CostRow, MICROS_PER_CENT, NO_GROUP, UNALLOCATED_GROUP,
    apportion_cents, cents_text, cost_rows, parse_time_bound,
};
pub use cost_budget::{
    BudgetCrossing, BudgetMeasure, BudgetPeriod, CostBudget, CostBudgetSpec, CostBudgetStatus,
    DEFAULT_BUDGET_THRESHOLD, FORECAST_LOOKBACK_MINUTES, MAX_BUDGET_AMOUNT, MAX_BUDGET_THRESHOLD,
    budget_forecast, micros_text, new_crossings, threshold_micros,
};
pub use dns::{DnsPolicy, MAX_DNS_NAMESERVERS, MAX_DNS_SEARCHES, PodDnsConfig, PodDnsConfigOption};
pub use endpoints::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
pub use env::{
    ConfigRef, EnvFromSource, EnvVarSource, KeySelector, ObjectFieldSelector, ObjectRef,
    ResourceFieldSelector, is_env_name,
};
pub use error::ObjectError;
pub use event::{Event, EventType, ObjectReference, PodEventReport};
pub use falcon::{CounterType, FalconSample, format_tags, parse_tags};
pub use fieldref::{FIELD_PATHS, check_field_path, pod_field, resource_field};
pub use glob::Glob;
pub use inventory::{
    ANNOTATION_TIER, Cluster, ClusterKind, ClusterSpec, GrantQuota, InitFile, InitProfile,
    LABEL_CLUSTER, LABEL_INSTANCE_ID, LABEL_TIER, MachineClass, MachineClassSpec, Pool,
    PoolAutoscale, PoolGrant, PoolGrantSpec, PoolSpec, PoolStatus, ProviderSpec, QuantityRange,
    Tier,
};
pub use inventory_check::{ANNOTATION_JOIN_POOL, Bounds, INVENTORY_NODE_LABELS, check_price};
pub use ippool::{
    ANNOTATION_FIXED_IP, ANNOTATION_FIXED_IPS, ANNOTATION_IP_POOL, IpClaim, IpPool, IpPoolSpec,
    IpRange, MAX_POOL_ADDRESSES, PoolAddresses, Subnet, parse_ip_pools,
};
pub use join::join_command_line;
pub use lifecycle::{HookKind, Lifecycle, LifecycleHandler, SleepAction};
pub use manifest::{Manifest, ParsedManifest, parse_manifests};
pub use meta::{
    LabelSelector, ObjectMeta, OwnerReference, SelectorRequirement, check_name,
    parse_label_selector,
};
pub use node::{
    ANNOTATION_SCHEDULING_SCORES, CachedLayer, LABEL_ARCH, LABEL_CLUSTER_KIND, LABEL_HOSTNAME,
    LABEL_IDC, LABEL_MACHINE_CLASS, LABEL_OS, LABEL_POOL, Node, NodeImage, NodeSpec, NodeStatus,
    STANDARD_NODE_LABELS, Taint, TaintEffect,
};
pub use node_init::{
    CONDITION_INITIALIZED, InitState, NodeCondition, NodeInitProfile, NodeInitialization,
    TAINT_NOT_INITIALIZED, initialized_condition, set_condition,
};
pub use placement::{
    ANNOTATION_POOL, Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, PreferredSchedulingTerm, TierRequest, named_pool,
};
pub use probe::{
    ExecAction, GrpcAction, HttpGetAction, HttpHeader, Probe, ProbeKind, ProbePort, TcpSocketAction,
};
pub use quantity::{parse_cpu_millis, parse_memory_bytes};
pub use rollout::{
    ANNOTATION_CHANGE_CAUSE, ANNOTATION_RESTARTED_AT, ANNOTATION_REVISION, DeploymentCondition,
    DeploymentRevision, RolloutStrategy,
};
pub use security::{
    ALL_CAPABILITIES, CapabilityChanges, DEFAULT_CAPABILITIES, EffectiveSecurity,
    PodSecurityContext, SeccompProfile, SeccompProfileType, SecurityContext, capability_name,
};
pub use service::{CLUSTER_IP_NONE, ClusterIpRequest, Service, ServicePort, ServiceSpec};
pub use time::{parse_rfc3339, rfc3339};
pub use usage::{ContainerMetrics, ContainerUsage, ContainerUsageSample, PodMetrics, PodUsage};
pub use volume::{
    DEFAULT_MEMORY_VOLUME_BYTES, EmptyDirVolume, HOST_PATH_TYPES, HostPathVolume, Volume,
    VolumeMount, is_plain_absolute, is_under,
};
pub use workload::{
    Container, ContainerPort, ContainerState, ContainerStatus, DEFAULT_GRACE_SECONDS, Deployment,
    DeploymentSpec, DeploymentStatus, DeploymentStrategy, EnvVar, IntOrPercent, Pod, PodCondition,
    PodPhase, PodSpec, PodStatus, PodTemplate, PodTemplateMeta, Protocol, ResourceList,
    ResourceRequirements, Resources, RollingUpdate, Toleration, TolerationOperator,
};
