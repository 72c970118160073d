//! PersistentVolumeClaims: the Kubernetes `v1` shape, limited to what a
//! node-local directory can honour. Wharf's one storage class, `local`,
//! binds a claim to the node of its first pod (as Kubernetes'
//! `WaitForFirstConsumer` local volumes do) and keeps its data in a
//! directory there; every later pod of the claim must run on that node.
//! Capacity is recorded, not enforced: a plain directory has no quota.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ObjectError;
use crate::meta::{ObjectMeta, check_labels, check_name};
use crate::quantity::parse_memory_bytes;

/// Wharf's storage class: a directory on the node the claim is bound to.
pub const LOCAL_STORAGE_CLASS: &str = "local";

/// The annotation naming the node a claim is bound to, as Kubernetes sets it.
pub const ANNOTATION_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// One node may mount the claim, for any number of its pods.
pub const READ_WRITE_ONCE: &str = "ReadWriteOnce";
/// One pod may use the claim at a time.
pub const READ_WRITE_ONCE_POD: &str = "ReadWriteOncePod";

/// A claim on node-local storage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeClaim {
    /// `v1`.
    #[serde(default = "core_v1")]
    pub api_version: String,
    /// `PersistentVolumeClaim`.
    #[serde(default = "claim_kind")]
    pub kind: String,
    /// Name, project, labels, annotations.
    pub metadata: ObjectMeta,
    /// What is asked for.
    #[serde(default)]
    pub spec: ClaimSpec,
    /// Where the claim is bound; set by the cluster.
    #[serde(default)]
    pub status: ClaimStatus,
}

/// The request of a claim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpec {
    /// `ReadWriteOnce` (the default) or `ReadWriteOncePod`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// `requests.storage`: the size asked for (recorded, not enforced).
    #[serde(default)]
    pub resources: ClaimResources,
    /// Unset, empty or `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// `Filesystem` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
    /// Refused: claims are not matched against existing volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub selector: Option<serde_json::Value>,
    /// Refused: a claim starts empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub data_source: Option<serde_json::Value>,
    /// Refused: a claim starts empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub data_source_ref: Option<serde_json::Value>,
    /// Refused: Wharf makes the volume; it cannot name an existing one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<String>,
}

/// `spec.resources` of a claim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimResources {
    /// `storage`: a quantity such as `1Gi`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    /// Refused but for `storage`, which is recorded like the request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

/// Where a claim stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimStatus {
    /// `Pending` until a pod's node is chosen, then `Bound`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The node whose directory holds the claim's data, once bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// `storage`: the size recorded for the claim.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, String>,
    /// Access modes of the bound volume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
}

fn core_v1() -> String {
    "v1".into()
}

fn claim_kind() -> String {
    "PersistentVolumeClaim".into()
}

impl PersistentVolumeClaim {
    /// Checks the name, labels and the spec against what node-local
    /// storage can honour, naming the field that cannot be.
    pub fn validate(&self) -> Result<(), ObjectError> {
        check_name("metadata.name", &self.metadata.name)?;
        check_labels("metadata.labels", &self.metadata.labels)?;
        self.spec.validate()
    }

    /// The claim as a new one: output-only status dropped, so a manifest
    /// exported from a cluster cannot pretend to be bound.
    pub fn normalize(&mut self) {
        self.status = ClaimStatus::default();
        self.metadata.annotations.remove(ANNOTATION_SELECTED_NODE);
    }

    /// The node the claim is bound to, if it is.
    pub fn bound_node(&self) -> Option<&str> {
        self.status.node_name.as_deref()
    }

    /// Whether only one pod at a time may use the claim.
    pub fn one_pod_only(&self) -> bool {
        self.spec
            .access_modes
            .iter()
            .any(|m| m == READ_WRITE_ONCE_POD)
    }

    /// Binds the claim to `node`: phase `Bound`, the node in the status and
    /// in the annotation Kubernetes uses, the request as capacity.
    pub fn bind_to(&mut self, node: &str) {
        self.status.phase = Some("Bound".into());
        self.status.node_name = Some(node.to_string());
        self.status.capacity = self.spec.resources.requests.clone();
        self.status.access_modes = self.spec.access_modes.clone();
        self.metadata
            .annotations
            .insert(ANNOTATION_SELECTED_NODE.into(), node.to_string());
    }

    /// Refuses replacing `self` (the stored claim) by `next` when the spec
    /// differs: a claim's request is fixed once made (Wharf cannot grow or
    /// move a volume).
    pub fn check_replacement(&self, next: &PersistentVolumeClaim) -> Result<(), ObjectError> {
        if self.spec == next.spec {
            return Ok(());
        }
        Err(ObjectError::invalid(
            "spec",
            format!(
                "the spec of PersistentVolumeClaim {} cannot change once made \
                 (delete it and create it again)",
                self.metadata.name
            ),
        ))
    }

    /// `Bound`, `Pending` or `Terminating`, as `get` shows it.
    pub fn phase(&self) -> &str {
        if self.metadata.is_terminating() {
            "Terminating"
        } else {
            self.status.phase.as_deref().unwrap_or("Pending")
        }
    }
}

impl ClaimSpec {
    fn validate(&self) -> Result<(), ObjectError> {
        for (i, mode) in self.access_modes.iter().enumerate() {
            if mode != READ_WRITE_ONCE && mode != READ_WRITE_ONCE_POD {
                return Err(ObjectError::invalid(
                    format!("spec.accessModes[{i}]"),
                    format!(
                        "{mode} is not supported: the storage is a directory on one node; \
                         use ReadWriteOnce or ReadWriteOncePod"
                    ),
                ));
            }
        }
        let storage = self.resources.requests.get("storage").ok_or_else(|| {
            ObjectError::invalid("spec.resources.requests.storage", "required (e.g. 1Gi)")
        })?;
        parse_memory_bytes("spec.resources.requests.storage", storage)?;
        check_only_storage("spec.resources.requests", &self.resources.requests)?;
        check_only_storage("spec.resources.limits", &self.resources.limits)?;
        if let Some(limit) = self.resources.limits.get("storage") {
            parse_memory_bytes("spec.resources.limits.storage", limit)?;
        }
        match self.storage_class_name.as_deref() {
            None | Some("") | Some(LOCAL_STORAGE_CLASS) => {}
            Some(other) => {
                return Err(ObjectError::invalid(
                    "spec.storageClassName",
                    format!(
                        "{other:?} is not a storage class of Wharf: use {LOCAL_STORAGE_CLASS:?} \
                         (a directory on the node of the claim's first pod) or leave it unset"
                    ),
                ));
            }
        }
        if let Some(mode) = &self.volume_mode
            && mode != "Filesystem"
        {
            return Err(ObjectError::invalid(
                "spec.volumeMode",
                format!("{mode} is not supported: only Filesystem"),
            ));
        }
        let refused = [
            ("spec.selector", self.selector.is_some()),
            ("spec.dataSource", self.data_source.is_some()),
            ("spec.dataSourceRef", self.data_source_ref.is_some()),
            (
                "spec.volumeName",
                self.volume_name.as_deref().is_some_and(|v| !v.is_empty()),
            ),
        ];
        if let Some((field, _)) = refused.iter().find(|(_, set)| *set) {
            return Err(ObjectError::invalid(
                *field,
                "not supported: Wharf makes a new, empty local volume for each claim",
            ));
        }
        Ok(())
    }
}

fn check_only_storage(field: &str, list: &BTreeMap<String, String>) -> Result<(), ObjectError> {
    match list.keys().find(|k| *k != "storage") {
        Some(other) => Err(ObjectError::invalid(
            format!("{field}.{other}"),
            "only storage can be asked of a claim",
        )),
        None => Ok(()),
    }
}

/// `persistentVolumeClaim`: a pod volume backed by a claim of its project.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimVolume {
    /// The claim's name, in the pod's project.
    pub claim_name: String,
    /// Mounted read-only in every container.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

impl crate::PodSpec {
    /// The claims the pod's volumes name, each once, in name order.
    pub fn claim_names(&self) -> Vec<&str> {
        let names: std::collections::BTreeSet<&str> = self
            .volumes
            .iter()
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.as_str())
            .collect();
        names.into_iter().collect()
    }
}

impl ClaimVolume {
    pub(crate) fn validate(&self, field: &str) -> Result<(), ObjectError> {
        check_name(&format!("{field}.claimName"), &self.claim_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Manifest, parse_manifests};

    const CLAIM: &str = "apiVersion: v1\nkind: PersistentVolumeClaim\n\
        metadata: {name: data, namespace: shop}\n\
        spec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n";

    fn parse(yaml: &str) -> Result<PersistentVolumeClaim, ObjectError> {
        match parse_manifests(yaml)?.remove(0).manifest {
            Manifest::PersistentVolumeClaim(c) => Ok(*c),
            other => panic!("{other:?}"),
        }
    }

    fn field_of(yaml: &str) -> String {
        match parse(yaml) {
            Err(ObjectError::Parse(text)) => text,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn reads_a_kubernetes_claim_as_is() {
        let exported = format!(
            "{CLAIM}  storageClassName: local\n  volumeMode: Filesystem\n\
             status: {{phase: Bound}}\n"
        );
        let claim = parse(&exported).unwrap();
        assert_eq!(claim.metadata.project.as_deref(), Some("shop"));
        assert_eq!(claim.spec.resources.requests["storage"], "1Gi");
        assert_eq!(claim.phase(), "Pending", "status is the cluster's to set");
        assert!(!claim.one_pod_only());
        let pod_only = parse(&CLAIM.replace("[ReadWriteOnce]", "[ReadWriteOncePod]")).unwrap();
        assert!(pod_only.one_pod_only());
        let mut bound = claim.clone();
        bound.bind_to("n1");
        assert_eq!(bound.phase(), "Bound");
        assert_eq!(bound.bound_node(), Some("n1"));
        assert_eq!(bound.metadata.annotations[ANNOTATION_SELECTED_NODE], "n1");
        assert_eq!(bound.status.capacity["storage"], "1Gi");
    }

    #[test]
    fn refuses_what_a_node_local_directory_cannot_honour() {
        let cases = [
            (
                CLAIM.replace("[ReadWriteOnce]", "[ReadWriteMany]"),
                "spec.accessModes[0]",
            ),
            (
                CLAIM.replace("[ReadWriteOnce]", "[ReadWriteOnce, ReadOnlyMany]"),
                "spec.accessModes[1]",
            ),
            (
                CLAIM.replace("{requests: {storage: 1Gi}}", "{}"),
                "spec.resources.requests.storage",
            ),
            (
                CLAIM.replace("storage: 1Gi", "storage: lots"),
                "spec.resources.requests.storage",
            ),
            (
                format!("{CLAIM}  storageClassName: ebs\n"),
                "spec.storageClassName",
            ),
            (format!("{CLAIM}  volumeMode: Block\n"), "spec.volumeMode"),
            (
                format!("{CLAIM}  selector: {{matchLabels: {{a: b}}}}\n"),
                "spec.selector",
            ),
            (
                format!("{CLAIM}  dataSource: {{kind: PersistentVolumeClaim, name: x}}\n"),
                "spec.dataSource",
            ),
            (
                format!("{CLAIM}  dataSourceRef: {{kind: VolumeSnapshot, name: x}}\n"),
                "spec.dataSourceRef",
            ),
            (format!("{CLAIM}  volumeName: pv-1\n"), "spec.volumeName"),
        ];
        for (yaml, field) in cases {
            let text = field_of(&yaml);
            assert!(text.contains(field), "{field}: {text}");
        }
        for class in ["\"\"", "local"] {
            parse(&format!("{CLAIM}  storageClassName: {class}\n")).unwrap();
        }
    }
}
