//! Fields of a pod and resource amounts of its containers as the downward
//! API gives them (`fieldRef`, `resourceFieldRef`): one place for env
//! variables and, later, downwardAPI volume files.

use crate::ObjectError;
use crate::env::ResourceFieldSelector;
use crate::meta::check_label;
use crate::quantity::{parse_cpu_millis, parse_memory_bytes};
use crate::workload::{Container, Pod, Resources};

/// The field paths an env variable may name besides
/// `metadata.labels['KEY']` and `metadata.annotations['KEY']`.
/// (`spec.serviceAccountName` is left out: Wharf pods have no service
/// account.)
pub const FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "status.podIP",
    "status.podIPs",
    "status.hostIP",
    "status.hostIPs",
];

/// The divisors Kubernetes allows for CPU and for memory.
const CPU_DIVISORS: &[&str] = &["1m", "1"];
const MEMORY_DIVISORS: &[&str] = &[
    "1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei",
];

/// `KEY` of `PREFIX['KEY']` (or `PREFIX["KEY"]`).
fn subscript<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let rest = path
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    rest.strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
}

/// Checks a `fieldRef.fieldPath` for an env variable.
pub fn check_field_path(field: &str, path: &str) -> Result<(), ObjectError> {
    if FIELD_PATHS.contains(&path) {
        return Ok(());
    }
    for prefix in ["metadata.labels", "metadata.annotations"] {
        if let Some(key) = subscript(path, prefix) {
            return check_label(field, key, "");
        }
    }
    Err(ObjectError::invalid(
        field,
        format!(
            "{path:?} is not supported: use one of {}, metadata.labels['KEY'] or metadata.annotations['KEY']",
            FIELD_PATHS.join(", ")
        ),
    ))
}

/// The value of `path` for `pod`, whose `status.podIP`/`hostIP` must be
/// filled in by the node; a missing label or annotation is empty, as in
/// Kubernetes. `metadata.labels` and `metadata.annotations` alone give
/// every entry as `key="value"` lines (the downwardAPI volume form).
pub fn pod_field(pod: &Pod, path: &str) -> Result<String, ObjectError> {
    let meta = &pod.metadata;
    let status = &pod.status;
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => text(&meta.project),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => text(&pod.spec.node_name),
        // One address each: Wharf pods and nodes are IPv4 only.
        "status.podIP" | "status.podIPs" => text(&status.pod_ip),
        "status.hostIP" | "status.hostIPs" => text(&status.host_ip),
        "metadata.labels" => entries(&meta.labels),
        "metadata.annotations" => entries(&meta.annotations),
        _ => {
            if let Some(key) = subscript(path, "metadata.labels") {
                meta.labels.get(key).cloned().unwrap_or_default()
            } else if let Some(key) = subscript(path, "metadata.annotations") {
                meta.annotations.get(key).cloned().unwrap_or_default()
            } else {
                return Err(ObjectError::invalid(
                    "fieldPath",
                    format!("{path:?} is not supported"),
                ));
            }
        }
    };
    Ok(value)
}

/// `key="value"` lines, as kubelet writes a label or annotation file.
fn entries(map: &std::collections::BTreeMap<String, String>) -> String {
    map.iter().map(|(k, v)| format!("{k}={v:?}\n")).collect()
}

/// Checks a `resourceFieldRef`'s resource and divisor.
pub fn check_resource_field(
    field: &str,
    selector: &ResourceFieldSelector,
) -> Result<(), ObjectError> {
    let divisors = match selector.resource.as_str() {
        "limits.cpu" | "requests.cpu" => CPU_DIVISORS,
        "limits.memory" | "requests.memory" => MEMORY_DIVISORS,
        other => {
            return Err(ObjectError::invalid(
                format!("{field}.resource"),
                format!(
                    "{other:?} is not supported: use limits.cpu, limits.memory, requests.cpu or requests.memory"
                ),
            ));
        }
    };
    match selector.divisor.as_deref() {
        None => Ok(()),
        Some(divisor) if divisors.contains(&divisor) => Ok(()),
        Some(divisor) => Err(ObjectError::invalid(
            format!("{field}.divisor"),
            format!(
                "{divisor:?} is not a divisor for {}: use one of {}",
                selector.resource,
                divisors.join(", ")
            ),
        )),
    }
}

/// The amount `selector` names for `container`, divided by its divisor and
/// rounded up, as kubelet computes it: a missing request is the limit
/// (Kubernetes' defaulting), a missing limit is the node's allocatable
/// amount (`allocatable`).
pub fn resource_field(
    container: &Container,
    selector: &ResourceFieldSelector,
    allocatable: Resources,
) -> Result<String, ObjectError> {
    check_resource_field("resourceFieldRef", selector)?;
    let resources = &container.resources;
    let (limit_cpu, limit_memory) = resources.limits.amounts("limits")?;
    let (request_cpu, request_memory) = resources.requests.amounts("requests")?;
    let limits = &resources.limits;
    let requests = &resources.requests;
    let divisor = selector.divisor.as_deref().unwrap_or("1");
    let (amount, unit) = match selector.resource.as_str() {
        "limits.cpu" => (
            limits
                .cpu
                .as_ref()
                .map_or(allocatable.cpu_millis, |_| limit_cpu),
            parse_cpu_millis("divisor", divisor)?,
        ),
        "requests.cpu" => (
            match (&requests.cpu, &limits.cpu) {
                (Some(_), _) => request_cpu,
                (None, Some(_)) => limit_cpu,
                (None, None) => 0,
            },
            parse_cpu_millis("divisor", divisor)?,
        ),
        "limits.memory" => (
            limits
                .memory
                .as_ref()
                .map_or(allocatable.memory_bytes, |_| limit_memory),
            parse_memory_bytes("divisor", divisor)?,
        ),
        _ => (
            match (&requests.memory, &limits.memory) {
                (Some(_), _) => request_memory,
                (None, Some(_)) => limit_memory,
                (None, None) => 0,
            },
            parse_memory_bytes("divisor", divisor)?,
        ),
    };
    Ok(amount.div_ceil(unit.max(1)).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ObjectMeta, PodStatus, ResourceList, ResourceRequirements};

    fn pod() -> Pod {
        let mut pod = Pod {
            metadata: ObjectMeta {
                name: "web-1".into(),
                project: Some("shop".into()),
                uid: "u-1".into(),
                labels: [("app".to_string(), "web".to_string())].into(),
                annotations: [("team".to_string(), "a b".to_string())].into(),
                ..ObjectMeta::default()
            },
            status: PodStatus {
                pod_ip: Some("10.0.0.5".into()),
                host_ip: Some("192.0.2.1".into()),
                ..PodStatus::default()
            },
            ..Pod::default()
        };
        pod.spec.node_name = Some("n1".into());
        pod
    }

    #[test]
    fn pod_fields_resolve_as_kubernetes_gives_them() {
        let pod = pod();
        for (path, want) in [
            ("metadata.name", "web-1"),
            ("metadata.namespace", "shop"),
            ("metadata.uid", "u-1"),
            ("spec.nodeName", "n1"),
            ("status.podIP", "10.0.0.5"),
            ("status.podIPs", "10.0.0.5"),
            ("status.hostIP", "192.0.2.1"),
            ("status.hostIPs", "192.0.2.1"),
            ("metadata.labels['app']", "web"),
            ("metadata.labels[\"app\"]", "web"),
            ("metadata.labels['missing']", ""),
            ("metadata.annotations['team']", "a b"),
            ("metadata.labels", "app=\"web\"\n"),
        ] {
            assert_eq!(pod_field(&pod, path).unwrap(), want, "{path}");
        }
        assert!(pod_field(&pod, "spec.serviceAccountName").is_err());
        check_field_path("f", "metadata.labels['app.kubernetes.io/name']").unwrap();
        for bad in [
            "metadata.labels",
            "metadata.labels[app]",
            "spec.serviceAccountName",
            "status.phase",
        ] {
            let err = check_field_path("f", bad).unwrap_err().to_string();
            assert!(err.contains("f"), "{bad}: {err}");
        }
    }

    fn selector(resource: &str, divisor: Option<&str>) -> ResourceFieldSelector {
        ResourceFieldSelector {
            container_name: None,
            resource: resource.into(),
            divisor: divisor.map(str::to_string),
        }
    }

    #[test]
    fn resource_fields_divide_and_round_up() {
        let container = Container {
            resources: ResourceRequirements {
                requests: ResourceList {
                    cpu: Some("250m".into()),
                    memory: None,
                },
                limits: ResourceList {
                    cpu: None,
                    memory: Some("129Mi".into()),
                },
            },
            ..Container::default()
        };
        let node = Resources {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            pods: 110,
        };
        let value = |resource: &str, divisor: Option<&str>| {
            resource_field(&container, &selector(resource, divisor), node).unwrap()
        };
        assert_eq!(value("requests.cpu", None), "1", "250m rounds up to 1");
        assert_eq!(value("requests.cpu", Some("1m")), "250");
        assert_eq!(value("limits.cpu", None), "4", "no limit: allocatable");
        assert_eq!(value("limits.memory", Some("1Mi")), "129");
        assert_eq!(value("limits.memory", Some("1Gi")), "1");
        assert_eq!(value("limits.memory", None), (129u64 << 20).to_string());
        assert_eq!(
            value("requests.memory", Some("1Mi")),
            "129",
            "a missing request is the limit"
        );
        assert_eq!(value("limits.memory", Some("1M")), "136");
        for (resource, divisor) in [
            ("limits.cpu", Some("2")),
            ("limits.memory", Some("1m")),
            ("limits.ephemeral-storage", None),
        ] {
            assert!(
                check_resource_field("r", &selector(resource, divisor)).is_err(),
                "{resource} {divisor:?}"
            );
        }
    }
}
