//! Pod volumes and the containers' mounts of them: the Kubernetes shapes
//! Wharf honours (`emptyDir`, `hostPath`, `configMap`, `secret`,
//! `downwardAPI`, `persistentVolumeClaim`) and their validation. Volume
//! types not declared here (`projected`, `nfs`, ...) are refused by the
//! manifest reader, naming their path.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ObjectError;
use crate::claim::ClaimVolume;
use crate::config_volume::{ConfigMapVolume, DownwardApiVolume, SecretVolume};
use crate::meta::check_name;
use crate::quantity::parse_memory_bytes;

/// Size of a `medium: Memory` emptyDir without a `sizeLimit`: 64 MiB, the
/// size Docker gives `/dev/shm`. Its pages are charged to the memory
/// cgroup of the container that writes them.
pub const DEFAULT_MEMORY_VOLUME_BYTES: u64 = 64 << 20;

/// A volume of a pod: storage its containers mount by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Name, unique in the pod; mounts refer to it.
    pub name: String,
    /// A directory made for the pod and removed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolume>,
    /// A file or directory of the node, under a prefix the administrator allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathVolume>,
    /// The keys of a ConfigMap as files, kept up to date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapVolume>,
    /// The keys of a Secret as files on a tmpfs, kept up to date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretVolume>,
    /// Fields of the pod as files, kept up to date.
    #[serde(
        default,
        rename = "downwardAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub downward_api: Option<DownwardApiVolume>,
    /// A claim's directory on the node the claim is bound to; its data
    /// outlives the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ClaimVolume>,
}

/// `emptyDir`: on the node's disk, or a tmpfs with `medium: Memory`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirVolume {
    /// `""` (disk, the default) or `Memory` (tmpfs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    /// Size of a `Memory` volume (`64Mi`); refused for disk volumes, whose
    /// size Wharf does not enforce.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::quantity::text_or_number"
    )]
    pub size_limit: Option<String>,
}

impl EmptyDirVolume {
    /// Whether the volume is a tmpfs.
    pub fn in_memory(&self) -> bool {
        self.medium.as_deref() == Some("Memory")
    }

    /// The tmpfs size of a `Memory` volume: `sizeLimit`, else
    /// [`DEFAULT_MEMORY_VOLUME_BYTES`].
    pub fn memory_bytes(&self, field: &str) -> Result<u64, ObjectError> {
        match &self.size_limit {
            Some(limit) => parse_memory_bytes(&format!("{field}.sizeLimit"), limit),
            None => Ok(DEFAULT_MEMORY_VOLUME_BYTES),
        }
    }
}

/// `hostPath`: a path of the node, checked against `type` when the pod starts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostPathVolume {
    /// Absolute path, without `.` or `..` components.
    pub path: String,
    /// What must be there ([`HOST_PATH_TYPES`]); unset: anything that exists.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// The `hostPath.type` values Kubernetes defines, all honoured.
pub const HOST_PATH_TYPES: &[&str] = &[
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];

/// A container's mount of a pod volume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    /// The volume's name.
    pub name: String,
    /// Where it appears in the container; absolute.
    pub mount_path: String,
    /// Mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// A path inside the volume to mount instead of its root; relative,
    /// never leaving the volume (made as a directory when missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    /// Only `None` (the default) is honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_propagation: Option<String>,
}

/// Whether `path` is absolute and made of plain components: no `.`, `..`
/// or empty ones (a trailing `/` aside), so what it names is what it says.
pub fn is_plain_absolute(path: &str) -> bool {
    path.strip_prefix('/').is_some_and(|rest| {
        rest.trim_end_matches('/')
            .split('/')
            .all(|c| !matches!(c, "" | "." | ".."))
            || rest.is_empty()
    })
}

/// Whether `path` lies at or under `prefix` (both plain absolute paths),
/// component by component: `/srv/data2` is not under `/srv/data`.
pub fn is_under(path: &str, prefix: &str) -> bool {
    let components = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    let (path, prefix) = (components(path), components(prefix));
    path.starts_with(&prefix)
}

pub(crate) fn check_relative(field: &str, path: &str) -> Result<(), ObjectError> {
    let plain = !path.is_empty()
        && !path.starts_with('/')
        && path
            .trim_end_matches('/')
            .split('/')
            .all(|c| !matches!(c, "" | "." | ".."));
    if plain {
        Ok(())
    } else {
        Err(ObjectError::invalid(
            field,
            format!("{path:?} must be a relative path without '.' or '..' components"),
        ))
    }
}

fn check_absolute(field: &str, path: &str) -> Result<(), ObjectError> {
    if is_plain_absolute(path) && path.len() <= 4096 && !path.contains('\0') {
        Ok(())
    } else {
        Err(ObjectError::invalid(
            field,
            format!("{path:?} must be an absolute path without '.' or '..' components"),
        ))
    }
}

impl Volume {
    /// Checks the volume at `field` (e.g. `spec.volumes[0]`).
    pub fn validate(&self, field: &str) -> Result<(), ObjectError> {
        check_name(&format!("{field}.name"), &self.name)?;
        const SOURCES: &str =
            "emptyDir, hostPath, configMap, secret, downwardAPI or persistentVolumeClaim";
        let sources = [
            self.empty_dir.is_some(),
            self.host_path.is_some(),
            self.config_map.is_some(),
            self.secret.is_some(),
            self.downward_api.is_some(),
            self.persistent_volume_claim.is_some(),
        ];
        match sources.iter().filter(|set| **set).count() {
            0 => {
                return Err(ObjectError::invalid(
                    field,
                    format!("a volume needs a source: {SOURCES} (other types are not supported)"),
                ));
            }
            1 => {}
            _ => {
                return Err(ObjectError::invalid(
                    field,
                    format!("a volume has one source: {SOURCES}"),
                ));
            }
        }
        if let Some(empty) = &self.empty_dir {
            empty.validate(&format!("{field}.emptyDir"))?;
        }
        if let Some(host) = &self.host_path {
            host.validate(&format!("{field}.hostPath"))?;
        }
        if let Some(config_map) = &self.config_map {
            config_map.validate(&format!("{field}.configMap"))?;
        }
        if let Some(secret) = &self.secret {
            secret.validate(&format!("{field}.secret"))?;
        }
        if let Some(downward) = &self.downward_api {
            downward.validate(&format!("{field}.downwardAPI"))?;
        }
        if let Some(claim) = &self.persistent_volume_claim {
            claim.validate(&format!("{field}.persistentVolumeClaim"))?;
        }
        Ok(())
    }

    /// Whether the agent writes the volume's files (configMap, secret,
    /// downwardAPI): containers mount it read-only.
    pub fn is_projected(&self) -> bool {
        self.config_map.is_some() || self.secret.is_some() || self.downward_api.is_some()
    }
}

impl EmptyDirVolume {
    fn validate(&self, field: &str) -> Result<(), ObjectError> {
        match self.medium.as_deref() {
            None | Some("") => {
                if self.size_limit.is_some() {
                    return Err(ObjectError::invalid(
                        format!("{field}.sizeLimit"),
                        "not supported on a disk emptyDir (Wharf does not enforce its size): \
                         use medium: Memory for a bounded volume, or drop sizeLimit",
                    ));
                }
                Ok(())
            }
            Some("Memory") => {
                if self.memory_bytes(field)? == 0 {
                    return Err(ObjectError::invalid(
                        format!("{field}.sizeLimit"),
                        "must be more than 0",
                    ));
                }
                Ok(())
            }
            Some(other) => Err(ObjectError::invalid(
                format!("{field}.medium"),
                format!("{other:?} is not supported: use \"\" (disk) or Memory"),
            )),
        }
    }
}

impl HostPathVolume {
    fn validate(&self, field: &str) -> Result<(), ObjectError> {
        check_absolute(&format!("{field}.path"), &self.path)?;
        if self.path.trim_end_matches('/').is_empty() {
            return Err(ObjectError::invalid(
                format!("{field}.path"),
                "the node's root cannot be a volume",
            ));
        }
        let kind = self.kind.as_deref().unwrap_or_default();
        if !HOST_PATH_TYPES.contains(&kind) {
            return Err(ObjectError::invalid(
                format!("{field}.type"),
                format!(
                    "{kind:?} is not a hostPath type: use one of {}",
                    HOST_PATH_TYPES[1..].join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// Checks a container's mounts at `field` (e.g. `spec.containers[0]`)
/// against the pod's `volumes`.
pub(crate) fn validate_mounts(
    field: &str,
    mounts: &[VolumeMount],
    volumes: &[Volume],
) -> Result<(), ObjectError> {
    let mut paths = BTreeSet::new();
    for (i, mount) in mounts.iter().enumerate() {
        let at = format!("{field}.volumeMounts[{i}]");
        if !volumes.iter().any(|v| v.name == mount.name) {
            return Err(ObjectError::invalid(
                format!("{at}.name"),
                format!("no volume {:?} in the pod's volumes", mount.name),
            ));
        }
        check_absolute(&format!("{at}.mountPath"), &mount.mount_path)?;
        if mount.mount_path.trim_end_matches('/').is_empty() {
            return Err(ObjectError::invalid(
                format!("{at}.mountPath"),
                "a volume cannot replace the container's root",
            ));
        }
        if !paths.insert(mount.mount_path.trim_end_matches('/')) {
            return Err(ObjectError::invalid(
                format!("{at}.mountPath"),
                format!("{} is mounted twice", mount.mount_path),
            ));
        }
        if let Some(sub_path) = &mount.sub_path {
            check_relative(&format!("{at}.subPath"), sub_path)?;
        }
        if let Some(mode) = &mount.mount_propagation
            && mode != "None"
        {
            return Err(ObjectError::invalid(
                format!("{at}.mountPropagation"),
                format!("{mode} is not supported: only None"),
            ));
        }
    }
    Ok(())
}

/// Checks the pod's volumes: each valid, names unique.
pub(crate) fn validate_volumes(field: &str, volumes: &[Volume]) -> Result<(), ObjectError> {
    let mut names = BTreeSet::new();
    for (i, volume) in volumes.iter().enumerate() {
        let at = format!("{field}.volumes[{i}]");
        volume.validate(&at)?;
        if !names.insert(&volume.name) {
            return Err(ObjectError::invalid(
                format!("{at}.name"),
                format!("duplicate volume name {}", volume.name),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_dir(name: &str) -> Volume {
        Volume {
            name: name.into(),
            empty_dir: Some(EmptyDirVolume::default()),
            ..Default::default()
        }
    }

    fn mount(name: &str, path: &str) -> VolumeMount {
        VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            ..Default::default()
        }
    }

    fn field_of(result: Result<(), ObjectError>) -> String {
        match result {
            Err(ObjectError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn plain_paths_and_prefixes() {
        assert!(is_plain_absolute("/srv/data"));
        assert!(is_plain_absolute("/srv/data/"));
        assert!(is_plain_absolute("/"));
        for bad in ["srv", "", "/srv/../etc", "/srv/./x", "/srv//x", "/.."] {
            assert!(!is_plain_absolute(bad), "{bad}");
        }
        assert!(is_under("/srv/data/x", "/srv/data"));
        assert!(is_under("/srv/data", "/srv/data/"));
        assert!(!is_under("/srv/data2", "/srv/data"));
        assert!(!is_under("/srv", "/srv/data"));
        assert!(is_under("/anything", "/"));
    }

    #[test]
    fn volumes_need_one_known_source_and_unique_names() {
        assert!(validate_volumes("spec", &[empty_dir("a"), empty_dir("b")]).is_ok());
        let field = field_of(validate_volumes("spec", &[empty_dir("a"), empty_dir("a")]));
        assert_eq!(field, "spec.volumes[1].name");
        let none = Volume {
            name: "a".into(),
            ..Default::default()
        };
        assert_eq!(
            field_of(validate_volumes("spec", &[none])),
            "spec.volumes[0]"
        );
        let mut disk_limit = empty_dir("a");
        disk_limit.empty_dir.as_mut().unwrap().size_limit = Some("1Gi".into());
        assert_eq!(
            field_of(validate_volumes("spec", &[disk_limit])),
            "spec.volumes[0].emptyDir.sizeLimit"
        );
        let mut memory = empty_dir("a");
        memory.empty_dir = Some(EmptyDirVolume {
            medium: Some("Memory".into()),
            size_limit: Some("16Mi".into()),
        });
        assert!(validate_volumes("spec", std::slice::from_ref(&memory)).is_ok());
        assert_eq!(
            memory.empty_dir.unwrap().memory_bytes("f").unwrap(),
            16 << 20
        );
        let mut odd = empty_dir("a");
        odd.empty_dir.as_mut().unwrap().medium = Some("HugePages".into());
        assert_eq!(
            field_of(validate_volumes("spec", &[odd])),
            "spec.volumes[0].emptyDir.medium"
        );
    }

    #[test]
    fn host_paths_are_plain_absolute_with_a_known_type() {
        let host = |path: &str, kind: Option<&str>| Volume {
            name: "h".into(),
            host_path: Some(HostPathVolume {
                path: path.into(),
                kind: kind.map(str::to_string),
            }),
            ..Default::default()
        };
        assert!(validate_volumes("s", &[host("/srv/data", Some("Directory"))]).is_ok());
        assert!(validate_volumes("s", &[host("/srv/data", None)]).is_ok());
        for bad in ["/srv/../etc", "srv", "/"] {
            assert_eq!(
                field_of(validate_volumes("s", &[host(bad, None)])),
                "s.volumes[0].hostPath.path",
                "{bad}"
            );
        }
        assert_eq!(
            field_of(validate_volumes("s", &[host("/srv", Some("Dir"))])),
            "s.volumes[0].hostPath.type"
        );
    }

    #[test]
    fn mounts_name_a_volume_once_at_an_absolute_path() {
        let volumes = [empty_dir("data")];
        let ok = [mount("data", "/data"), mount("data", "/other")];
        assert!(validate_mounts("c", &ok, &volumes).is_ok());
        let cases = [
            (vec![mount("nope", "/data")], "c.volumeMounts[0].name"),
            (vec![mount("data", "data")], "c.volumeMounts[0].mountPath"),
            (
                vec![mount("data", "/a/../b")],
                "c.volumeMounts[0].mountPath",
            ),
            (vec![mount("data", "/")], "c.volumeMounts[0].mountPath"),
            (
                vec![mount("data", "/d"), mount("data", "/d/")],
                "c.volumeMounts[1].mountPath",
            ),
        ];
        for (mounts, expected) in cases {
            assert_eq!(field_of(validate_mounts("c", &mounts, &volumes)), expected);
        }
        for sub in ["../x", "/abs", "a/../../b", "", "a/./b"] {
            let mut m = mount("data", "/d");
            m.sub_path = Some(sub.into());
            assert_eq!(
                field_of(validate_mounts("c", &[m], &volumes)),
                "c.volumeMounts[0].subPath",
                "{sub}"
            );
        }
        let mut m = mount("data", "/d");
        m.sub_path = Some("logs/app".into());
        m.mount_propagation = Some("None".into());
        assert!(validate_mounts("c", &[m.clone()], &volumes).is_ok());
        m.mount_propagation = Some("Bidirectional".into());
        assert_eq!(
            field_of(validate_mounts("c", &[m], &volumes)),
            "c.volumeMounts[0].mountPropagation"
        );
    }
}
