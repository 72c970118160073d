//! Where a container's environment comes from besides literal values:
//! `env[].valueFrom` (a ConfigMap or Secret key, a field of the pod, a
//! resource amount of a container) and `envFrom` (every key of a ConfigMap
//! or Secret), as Kubernetes has them.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ObjectError;
use crate::config::check_config_key;
use crate::fieldref::{check_field_path, check_resource_field};
use crate::meta::check_name;
use crate::workload::{Container, PodSpec};

/// The source of one variable's value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    /// A key of a ConfigMap in the pod's project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
    /// A key of a Secret in the pod's project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
    /// A field of the pod (`metadata.name`, `status.podIP`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<ObjectFieldSelector>,
    /// A resource amount of a container (`limits.memory`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_field_ref: Option<ResourceFieldSelector>,
}

/// A key of a named ConfigMap or Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeySelector {
    /// The object's name.
    pub name: String,
    /// The key.
    pub key: String,
    /// When true, a missing object or key leaves the variable unset instead
    /// of keeping the container from starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// A field of the pod, by path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectFieldSelector {
    /// `v1` (the only version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// E.g. `metadata.name`, `metadata.labels['app']`, `status.podIP`.
    pub field_path: String,
}

/// A resource amount of a container, divided by `divisor` and rounded up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceFieldSelector {
    /// The container (for env: the variable's own container when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// `limits.cpu`, `limits.memory`, `requests.cpu` or `requests.memory`.
    pub resource: String,
    /// The unit the value is given in: `1` by default, `1m` for CPU, `1Mi`...
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::quantity::text_or_number"
    )]
    pub divisor: Option<String>,
}

/// Every key of a ConfigMap or Secret as variables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvFromSource {
    /// Put before each key to make the variable's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ObjectRef>,
    /// The Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<ObjectRef>,
}

/// A ConfigMap or Secret by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// The object's name.
    pub name: String,
    /// When true, a missing object is no obstacle to starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// A ConfigMap or Secret a pod uses, by kind and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigRef {
    /// A ConfigMap.
    ConfigMap(String),
    /// A Secret.
    Secret(String),
}

impl std::fmt::Display for ConfigRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigRef::ConfigMap(name) => write!(f, "configmap {name:?}"),
            ConfigRef::Secret(name) => write!(f, "secret {name:?}"),
        }
    }
}

impl PodSpec {
    /// The ConfigMaps and Secrets the pod's containers use, which the node
    /// running it may read: those of their env and of the pod's volumes.
    pub fn config_refs(&self) -> BTreeSet<ConfigRef> {
        let mut refs = BTreeSet::new();
        for volume in &self.volumes {
            if let Some(config_map) = &volume.config_map {
                refs.insert(ConfigRef::ConfigMap(config_map.name.clone()));
            }
            if let Some(secret) = &volume.secret {
                refs.insert(ConfigRef::Secret(secret.secret_name.clone()));
            }
        }
        for container in &self.containers {
            for source in container.env.iter().filter_map(|e| e.value_from.as_ref()) {
                if let Some(key) = &source.config_map_key_ref {
                    refs.insert(ConfigRef::ConfigMap(key.name.clone()));
                }
                if let Some(key) = &source.secret_key_ref {
                    refs.insert(ConfigRef::Secret(key.name.clone()));
                }
            }
            for source in &container.env_from {
                if let Some(object) = &source.config_map_ref {
                    refs.insert(ConfigRef::ConfigMap(object.name.clone()));
                }
                if let Some(object) = &source.secret_ref {
                    refs.insert(ConfigRef::Secret(object.name.clone()));
                }
            }
        }
        refs
    }
}

/// Whether `name` is a name Kubernetes takes from `envFrom` (a C-like
/// identifier that may also hold `-` and `.`); others are skipped.
pub fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b"-._".contains(&b));
    first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// Checks a container's `env` and `envFrom` against the pod's containers.
pub(crate) fn check_env(at: &str, container: &Container, pod: &PodSpec) -> Result<(), ObjectError> {
    for (j, env) in container.env.iter().enumerate() {
        let at = format!("{at}.env[{j}]");
        if env.name.is_empty() || env.name.contains('=') {
            return Err(ObjectError::invalid(
                format!("{at}.name"),
                "must be non-empty without '='",
            ));
        }
        if let Some(source) = &env.value_from {
            if !env.value.is_empty() {
                return Err(ObjectError::invalid(
                    format!("{at}.valueFrom"),
                    "may not be given with a value",
                ));
            }
            check_source(&format!("{at}.valueFrom"), source, container, pod)?;
        }
    }
    for (j, source) in container.env_from.iter().enumerate() {
        let at = format!("{at}.envFrom[{j}]");
        let object = match (&source.config_map_ref, &source.secret_ref) {
            (Some(object), None) | (None, Some(object)) => object,
            _ => {
                return Err(ObjectError::invalid(
                    at,
                    "give exactly one of configMapRef and secretRef",
                ));
            }
        };
        check_name(&format!("{at}.name"), &object.name)?;
        if let Some(prefix) = source.prefix.as_deref().filter(|p| !p.is_empty())
            && !is_env_name(prefix)
        {
            return Err(ObjectError::invalid(
                format!("{at}.prefix"),
                format!("{prefix:?} cannot start a variable name"),
            ));
        }
    }
    Ok(())
}

fn check_source(
    at: &str,
    source: &EnvVarSource,
    container: &Container,
    pod: &PodSpec,
) -> Result<(), ObjectError> {
    let given = [
        source.config_map_key_ref.is_some(),
        source.secret_key_ref.is_some(),
        source.field_ref.is_some(),
        source.resource_field_ref.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(ObjectError::invalid(
            at,
            "give exactly one of configMapKeyRef, secretKeyRef, fieldRef and resourceFieldRef",
        ));
    }
    if let Some((kind, key)) = source
        .config_map_key_ref
        .as_ref()
        .map(|k| ("configMapKeyRef", k))
        .or(source.secret_key_ref.as_ref().map(|k| ("secretKeyRef", k)))
    {
        check_name(&format!("{at}.{kind}.name"), &key.name)?;
        check_config_key(&format!("{at}.{kind}.key"), &key.key)?;
    }
    if let Some(field) = &source.field_ref {
        if field.api_version.as_deref().is_some_and(|v| v != "v1") {
            return Err(ObjectError::invalid(
                format!("{at}.fieldRef.apiVersion"),
                "only v1",
            ));
        }
        check_field_path(&format!("{at}.fieldRef.fieldPath"), &field.field_path)?;
    }
    if let Some(selector) = &source.resource_field_ref {
        let name = selector
            .container_name
            .as_deref()
            .unwrap_or(&container.name);
        if !pod.containers.iter().any(|c| c.name == name) {
            return Err(ObjectError::invalid(
                format!("{at}.resourceFieldRef.containerName"),
                format!("no container {name} in the pod"),
            ));
        }
        check_resource_field(&format!("{at}.resourceFieldRef"), selector)?;
    }
    Ok(())
}
