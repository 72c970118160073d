//! Events: what happened to an object, for `wharf describe` and debugging.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;

/// One thing that happened to an object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `v1`.
    #[serde(default = "core_v1")]
    pub api_version: String,
    /// `Event`.
    #[serde(default = "event_kind")]
    pub kind: String,
    /// Name (generated) and project.
    pub metadata: ObjectMeta,
    /// The object it is about.
    pub involved_object: ObjectReference,
    /// Machine-readable reason (`Scheduled`, `FailedScheduling`, ...).
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Component that reported it.
    pub source: String,
    /// How often it happened in a row.
    #[serde(default)]
    pub count: u32,
    /// First occurrence, unix milliseconds.
    #[serde(default)]
    pub first_timestamp: u64,
    /// Last occurrence, unix milliseconds.
    #[serde(default)]
    pub last_timestamp: u64,
}

fn core_v1() -> String {
    "v1".into()
}

fn event_kind() -> String {
    "Event".into()
}

/// An event a node reports about one of its pods (what kubelet records
/// besides status changes, such as skipped `envFrom` keys).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodEventReport {
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Machine-readable reason, e.g. `InvalidEnvironmentVariableNames`.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
}

/// Normal or warning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EventType {
    /// Things going as planned.
    #[default]
    Normal,
    /// Something needs attention.
    Warning,
}

/// Points at an object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    /// Kind.
    pub kind: String,
    /// Project, for project-scoped kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Name.
    pub name: String,
    /// Uid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}
