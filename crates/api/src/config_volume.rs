//! `configMap`, `secret` and `downwardAPI` volumes: the keys of a
//! ConfigMap or Secret, or fields of the pod, as files, chosen with `items`
//! and given `defaultMode` or each item's mode, as Kubernetes projects
//! them. The agent writes them (and rewrites them when they change); this
//! module holds their shape, their checks and the files they make.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ObjectError;
use crate::env::{ObjectFieldSelector, ResourceFieldSelector};
use crate::fieldref::{check_resource_field, pod_field, resource_field};
use crate::meta::{check_label, check_name};
use crate::volume::check_relative;
use crate::workload::{Pod, Resources};

/// Mode of a projected file without `defaultMode` or an item `mode`: 0644,
/// as Kubernetes.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// `configMap` volume: the keys of ConfigMap `name` as files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapVolume {
    /// The ConfigMap, in the pod's project.
    pub name: String,
    /// The keys to project and where; unset: every key at its own name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPath>,
    /// Mode of the files (0644 when unset).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "file_mode"
    )]
    pub default_mode: Option<u32>,
    /// Start the pod (with an empty volume) when the ConfigMap or an item's
    /// key is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// `secret` volume: the keys of Secret `secretName` as files, on a tmpfs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretVolume {
    /// The Secret, in the pod's project.
    pub secret_name: String,
    /// The keys to project and where; unset: every key at its own name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPath>,
    /// Mode of the files (0644 when unset).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "file_mode"
    )]
    pub default_mode: Option<u32>,
    /// Start the pod (with an empty volume) when the Secret or an item's
    /// key is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// `downwardAPI` volume: fields of the pod and resource amounts of its
/// containers as files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DownwardApiVolume {
    /// The files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<DownwardApiFile>,
    /// Mode of the files (0644 when unset).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "file_mode"
    )]
    pub default_mode: Option<u32>,
}

/// One file of a `downwardAPI` volume: a pod field or a resource amount.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DownwardApiFile {
    /// Relative path of the file in the volume, without `..`.
    pub path: String,
    /// A field of the pod: `metadata.name`, `namespace`, `uid`, `labels`,
    /// `annotations` (all, as `key="value"` lines, or one by subscript).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<ObjectFieldSelector>,
    /// A resource amount of container `containerName` (required here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_field_ref: Option<ResourceFieldSelector>,
    /// Mode of this file, instead of the volume's `defaultMode`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "file_mode"
    )]
    pub mode: Option<u32>,
}

/// The pod fields a downwardAPI file may hold besides one label or
/// annotation by subscript (addresses and the node change after the files
/// are written, so Kubernetes keeps them to env).
const VOLUME_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
];

/// One key of the object, written at `path` in the volume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyToPath {
    /// The key.
    pub key: String,
    /// Relative path of the file in the volume, without `..`.
    pub path: String,
    /// Mode of this file, instead of the volume's `defaultMode`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "file_mode"
    )]
    pub mode: Option<u32>,
}

/// A mode as a number, or as YAML 1.1 octal (`0644`, which the YAML 1.2
/// reader sees as a string; kubectl's reader takes it as octal).
fn file_mode<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Number(u32),
        Text(String),
    }
    let Some(mode) = Option::<Mode>::deserialize(de)? else {
        return Ok(None);
    };
    match mode {
        Mode::Number(n) => Ok(Some(n)),
        Mode::Text(text) => {
            let octal = text.strip_prefix("0o").or_else(|| text.strip_prefix('0'));
            octal
                .and_then(|digits| u32::from_str_radix(digits, 8).ok())
                .map(Some)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("{text:?} is not an octal file mode"))
                })
        }
    }
}

/// Which keys a volume projects: the view both volume kinds share.
#[derive(Clone, Copy, Debug)]
pub struct Projection<'a> {
    /// `items`.
    pub items: &'a [KeyToPath],
    /// `defaultMode`.
    pub default_mode: Option<u32>,
    /// `optional`.
    pub optional: bool,
}

impl ConfigMapVolume {
    /// The keys it projects.
    pub fn projection(&self) -> Projection<'_> {
        Projection {
            items: &self.items,
            default_mode: self.default_mode,
            optional: self.optional == Some(true),
        }
    }
}

impl SecretVolume {
    /// The keys it projects.
    pub fn projection(&self) -> Projection<'_> {
        Projection {
            items: &self.items,
            default_mode: self.default_mode,
            optional: self.optional == Some(true),
        }
    }
}

/// A file of a projected volume: relative path, content and mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectedFile {
    /// Relative path in the volume.
    pub path: String,
    /// Content.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

impl Projection<'_> {
    /// The files for an object with `entries` (`None`: it does not exist).
    /// `Err` says what is missing, as kubelet's mount error does.
    pub fn files(
        &self,
        what: &str,
        entries: Option<Vec<(String, Vec<u8>)>>,
    ) -> Result<Vec<ProjectedFile>, String> {
        let default_mode = self.default_mode.unwrap_or(DEFAULT_FILE_MODE);
        let Some(entries) = entries else {
            return if self.optional {
                Ok(Vec::new())
            } else {
                Err(format!("{what} not found"))
            };
        };
        if self.items.is_empty() {
            return Ok(entries
                .into_iter()
                .map(|(path, data)| ProjectedFile {
                    path,
                    data,
                    mode: default_mode,
                })
                .collect());
        }
        let mut files = Vec::new();
        for item in self.items {
            match entries.iter().find(|(key, _)| *key == item.key) {
                Some((_, data)) => files.push(ProjectedFile {
                    path: item.path.clone(),
                    data: data.clone(),
                    mode: item.mode.unwrap_or(default_mode),
                }),
                None if self.optional => {}
                None => return Err(format!("couldn't find key {} in {what}", item.key)),
            }
        }
        Ok(files)
    }

    /// Checks `items` and modes at `field` (e.g. `spec.volumes[0].configMap`).
    pub(crate) fn validate(&self, field: &str) -> Result<(), ObjectError> {
        check_mode(&format!("{field}.defaultMode"), self.default_mode)?;
        let files = self
            .items
            .iter()
            .map(|item| (item.path.as_str(), item.mode));
        check_files(field, files)?;
        for (i, item) in self.items.iter().enumerate() {
            if item.key.is_empty() {
                return Err(ObjectError::invalid(
                    format!("{field}.items[{i}].key"),
                    "must be set",
                ));
            }
        }
        Ok(())
    }
}

/// Checks the paths and modes of a volume's files: relative, not the
/// writer's `..` names, each once.
fn check_files<'a>(
    field: &str,
    files: impl Iterator<Item = (&'a str, Option<u32>)>,
) -> Result<(), ObjectError> {
    let mut paths = BTreeSet::new();
    for (i, (path, mode)) in files.enumerate() {
        let at = format!("{field}.items[{i}]");
        check_relative(&format!("{at}.path"), path)?;
        // `..data` and its timestamped siblings belong to the writer.
        if path.starts_with("..") {
            return Err(ObjectError::invalid(
                format!("{at}.path"),
                "must not start with '..'",
            ));
        }
        if !paths.insert(path.trim_end_matches('/')) {
            return Err(ObjectError::invalid(
                format!("{at}.path"),
                format!("{path} is written twice"),
            ));
        }
        check_mode(&format!("{at}.mode"), mode)?;
    }
    Ok(())
}

impl DownwardApiVolume {
    /// The files for `pod`, with `allocatable` standing in for missing
    /// limits. `Err` says what is wrong.
    pub fn files(&self, pod: &Pod, allocatable: Resources) -> Result<Vec<ProjectedFile>, String> {
        let default_mode = self.default_mode.unwrap_or(DEFAULT_FILE_MODE);
        let mut files = Vec::new();
        for item in &self.items {
            let data = if let Some(field) = &item.field_ref {
                pod_field(pod, &field.field_path).map_err(|e| e.to_string())?
            } else if let Some(selector) = &item.resource_field_ref {
                let name = selector.container_name.as_deref().unwrap_or_default();
                let container = pod
                    .spec
                    .containers
                    .iter()
                    .find(|c| c.name == name)
                    .ok_or_else(|| format!("{}: no container {name:?} in the pod", item.path))?;
                resource_field(container, selector, allocatable).map_err(|e| e.to_string())?
            } else {
                String::new()
            };
            files.push(ProjectedFile {
                path: item.path.clone(),
                data: data.into_bytes(),
                mode: item.mode.unwrap_or(default_mode),
            });
        }
        Ok(files)
    }

    pub(crate) fn validate(&self, field: &str) -> Result<(), ObjectError> {
        check_mode(&format!("{field}.defaultMode"), self.default_mode)?;
        let files = self
            .items
            .iter()
            .map(|item| (item.path.as_str(), item.mode));
        check_files(field, files)?;
        for (i, item) in self.items.iter().enumerate() {
            let at = format!("{field}.items[{i}]");
            match (&item.field_ref, &item.resource_field_ref) {
                (Some(field_ref), None) => {
                    check_volume_field_path(&format!("{at}.fieldRef.fieldPath"), field_ref)?
                }
                (None, Some(selector)) => {
                    let at = format!("{at}.resourceFieldRef");
                    if selector.container_name.is_none() {
                        return Err(ObjectError::invalid(
                            format!("{at}.containerName"),
                            "must be set in a volume",
                        ));
                    }
                    check_resource_field(&at, selector)?;
                }
                _ => {
                    return Err(ObjectError::invalid(
                        at,
                        "needs one of fieldRef or resourceFieldRef",
                    ));
                }
            }
        }
        Ok(())
    }
}

fn check_volume_field_path(field: &str, selector: &ObjectFieldSelector) -> Result<(), ObjectError> {
    let path = selector.field_path.as_str();
    if VOLUME_FIELD_PATHS.contains(&path) {
        return Ok(());
    }
    for prefix in ["metadata.labels", "metadata.annotations"] {
        let key = path
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("['"))
            .and_then(|rest| rest.strip_suffix("']"));
        if let Some(key) = key {
            return check_label(field, key, "");
        }
    }
    Err(ObjectError::invalid(
        field,
        format!(
            "{path:?} is not supported in a volume: use one of {} or metadata.labels['KEY']",
            VOLUME_FIELD_PATHS.join(", ")
        ),
    ))
}

fn check_mode(field: &str, mode: Option<u32>) -> Result<(), ObjectError> {
    match mode {
        Some(mode) if mode > 0o777 => Err(ObjectError::invalid(
            field,
            format!("{mode} is not a file mode: use 0 to 0777 (511)"),
        )),
        _ => Ok(()),
    }
}

impl ConfigMapVolume {
    pub(crate) fn validate(&self, field: &str) -> Result<(), ObjectError> {
        check_name(&format!("{field}.name"), &self.name)?;
        self.projection().validate(field)
    }
}

impl SecretVolume {
    pub(crate) fn validate(&self, field: &str) -> Result<(), ObjectError> {
        check_name(&format!("{field}.secretName"), &self.secret_name)?;
        self.projection().validate(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, path: &str, mode: Option<u32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
        }
    }

    fn entries() -> Option<Vec<(String, Vec<u8>)>> {
        Some(vec![
            ("a".into(), b"1".to_vec()),
            ("b".into(), b"2".to_vec()),
        ])
    }

    #[test]
    fn every_key_or_the_items_with_their_modes() {
        let all = ConfigMapVolume {
            name: "c".into(),
            ..Default::default()
        };
        let files = all
            .projection()
            .files("configmap \"c\"", entries())
            .unwrap();
        let paths: Vec<_> = files.iter().map(|f| (f.path.as_str(), f.mode)).collect();
        assert_eq!(paths, [("a", 0o644), ("b", 0o644)]);

        let some = ConfigMapVolume {
            name: "c".into(),
            items: vec![item("b", "conf/b.txt", Some(0o400))],
            default_mode: Some(0o440),
            ..Default::default()
        };
        let files = some.projection().files("c", entries()).unwrap();
        assert_eq!(
            files,
            [ProjectedFile {
                path: "conf/b.txt".into(),
                data: b"2".to_vec(),
                mode: 0o400
            }]
        );
    }

    #[test]
    fn missing_objects_and_keys_hold_the_pod_unless_optional() {
        let mut volume = SecretVolume {
            secret_name: "s".into(),
            items: vec![item("nope", "x", None)],
            ..Default::default()
        };
        let err = volume.projection().files("secret \"s\"", None).unwrap_err();
        assert_eq!(err, "secret \"s\" not found");
        let err = volume
            .projection()
            .files("secret \"s\"", entries())
            .unwrap_err();
        assert_eq!(err, "couldn't find key nope in secret \"s\"");
        volume.optional = Some(true);
        assert!(volume.projection().files("s", None).unwrap().is_empty());
        assert!(
            volume
                .projection()
                .files("s", entries())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn downward_api_files_hold_the_pods_fields() {
        let mut pod = Pod::default();
        pod.metadata.name = "web-1".into();
        pod.metadata.labels.insert("app".into(), "web".into());
        pod.metadata.labels.insert("tier".into(), "front".into());
        pod.spec.containers.push(crate::Container {
            name: "main".into(),
            ..Default::default()
        });
        let field = |path: &str, field_path: &str| DownwardApiFile {
            path: path.into(),
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: field_path.into(),
            }),
            ..Default::default()
        };
        let memory = DownwardApiFile {
            path: "mem".into(),
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some("main".into()),
                resource: "limits.memory".into(),
                divisor: Some("1Mi".into()),
            }),
            mode: Some(0o400),
            ..Default::default()
        };
        let volume = DownwardApiVolume {
            items: vec![
                field("name", "metadata.name"),
                field("labels", "metadata.labels"),
                field("app", "metadata.labels['app']"),
                memory,
            ],
            default_mode: None,
        };
        assert!(volume.validate("v").is_ok());
        let allocatable = Resources {
            cpu_millis: 1000,
            memory_bytes: 256 << 20,
            ..Default::default()
        };
        let files = volume.files(&pod, allocatable).unwrap();
        let shown: Vec<_> = files
            .iter()
            .map(|f| (f.path.as_str(), String::from_utf8_lossy(&f.data), f.mode))
            .collect();
        assert_eq!(shown[0], ("name", "web-1".into(), 0o644));
        assert_eq!(shown[1].1, "app=\"web\"\ntier=\"front\"\n");
        assert_eq!(shown[2].1, "web");
        assert_eq!(shown[3], ("mem", "256".into(), 0o400));

        let field_of = |volume: DownwardApiVolume| match volume.validate("v") {
            Err(ObjectError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        };
        let one = |item: DownwardApiFile| DownwardApiVolume {
            items: vec![item],
            default_mode: None,
        };
        assert_eq!(
            field_of(one(field("ip", "status.podIP"))),
            "v.items[0].fieldRef.fieldPath"
        );
        assert_eq!(
            field_of(one(field("../x", "metadata.name"))),
            "v.items[0].path"
        );
        let mut no_container = volume.items[3].clone();
        no_container
            .resource_field_ref
            .as_mut()
            .unwrap()
            .container_name = None;
        assert_eq!(
            field_of(one(no_container)),
            "v.items[0].resourceFieldRef.containerName"
        );
        assert_eq!(
            field_of(one(DownwardApiFile {
                path: "x".into(),
                ..Default::default()
            })),
            "v.items[0]"
        );
    }

    #[test]
    fn items_are_relative_paths_and_modes_are_permission_bits() {
        let field_of = |volume: ConfigMapVolume| match volume.validate("v") {
            Err(ObjectError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        };
        let with = |items: Vec<KeyToPath>, default_mode| ConfigMapVolume {
            name: "c".into(),
            items,
            default_mode,
            optional: None,
        };
        assert!(
            with(vec![item("a", "x/a", Some(0o600))], Some(0o400))
                .validate("v")
                .is_ok()
        );
        for bad in ["/etc/a", "../a", "a/../../b", "..data", ""] {
            assert_eq!(
                field_of(with(vec![item("a", bad, None)], None)),
                "v.items[0].path",
                "{bad}"
            );
        }
        assert_eq!(
            field_of(with(vec![item("a", "x", None), item("b", "x", None)], None)),
            "v.items[1].path"
        );
        assert_eq!(
            field_of(with(vec![item("", "x", None)], None)),
            "v.items[0].key"
        );
        assert_eq!(
            field_of(with(vec![item("a", "x", Some(0o1777))], None)),
            "v.items[0].mode"
        );
        assert_eq!(field_of(with(vec![], Some(0o7777))), "v.defaultMode");
        let mut badly_named = with(vec![], None);
        badly_named.name = "Bad_Name".into();
        assert_eq!(field_of(badly_named), "v.name");
    }
}
