//! `securityContext` at pod and container level, as Kubernetes writes it,
//! and the effective settings of one container after the container's
//! context overrides the pod's.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ObjectError;

/// The capabilities a container gets when nothing is said: containerd's
/// default set, what ordinary images expect root to be able to do without
/// administering the host.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every Linux capability (kernel 5.9 and later), in number order: what a
/// privileged container gets, and the names `add`/`drop` accept.
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Pod-level `securityContext`: defaults for every container, and the
/// groups of the pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContext {
    /// User id of the containers' processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<u32>,
    /// Primary group id of the containers' processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<u32>,
    /// Refuse to start a container whose user is root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    /// Groups added to every container's process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supplemental_groups: Vec<u32>,
    /// A group added to every container's process, and owning its volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_group: Option<u32>,
    /// The seccomp profile of every container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
}

/// Container-level `securityContext`: overrides the pod's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    /// User id of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<u32>,
    /// Primary group id of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<u32>,
    /// Refuse to start when the user is root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    /// Mount the root filesystem read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    /// `false` sets no_new_privs: setuid binaries and file capabilities
    /// grant nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    /// Capabilities dropped from, then added to, the default set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<CapabilityChanges>,
    /// Every capability, no seccomp filter, writable `/sys`, every device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    /// The seccomp profile (overrides the pod's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
}

/// `capabilities`: names with or without `CAP_`; `drop: [ALL]` empties the set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CapabilityChanges {
    /// Capabilities added after dropping.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Capabilities removed from the default set (`ALL` for every one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

/// `seccompProfile`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeccompProfile {
    /// Which profile.
    #[serde(rename = "type")]
    pub kind: SeccompProfileType,
    /// A profile file on the node (refused: Wharf ships none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localhost_profile: Option<String>,
}

/// The kinds of seccomp profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SeccompProfileType {
    /// Wharf's default filter (docs/workloads.md lists what it blocks).
    #[default]
    RuntimeDefault,
    /// No filter; needs the project's `allowPrivileged`.
    Unconfined,
    /// A profile file on the node; refused.
    Localhost,
}

/// What one container runs with once the container's context has
/// overridden the pod's (the agent's input, and what `describe pod` shows).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveSecurity {
    /// User id, when set; else the image's `USER`.
    pub run_as_user: Option<u32>,
    /// Primary group id, when set; else the image's (or the user's).
    pub run_as_group: Option<u32>,
    /// Whether a root user stops the container from starting.
    pub run_as_non_root: bool,
    /// Extra groups: `supplementalGroups`, then `fsGroup`.
    pub supplemental_groups: Vec<u32>,
    /// The group that owns the pod's volumes.
    pub fs_group: Option<u32>,
    /// Read-only root filesystem.
    pub read_only_root_filesystem: bool,
    /// `allowPrivilegeEscalation`; unset keeps Wharf's default (allowed).
    pub allow_privilege_escalation: Option<bool>,
    /// Privileged container.
    pub privileged: bool,
    /// The capability set (bounding, effective and permitted), `CAP_` names.
    pub capabilities: Vec<String>,
    /// The seccomp profile (`Unconfined` when privileged).
    pub seccomp: SeccompProfileType,
    /// Shares the node's PID namespace.
    pub host_pid: bool,
    /// Shares the node's IPC namespace.
    pub host_ipc: bool,
    /// Shares the node's network (and, as in Kubernetes, UTS) namespace.
    #[serde(default)]
    pub host_network: bool,
}

impl EffectiveSecurity {
    /// Whether no_new_privs is set: only when escalation is explicitly
    /// refused (Kubernetes' default allows it, and so does Wharf's).
    pub fn no_new_privileges(&self) -> bool {
        self.allow_privilege_escalation == Some(false) && !self.privileged
    }
}

/// `name` as the kernel's `CAP_` name, if it is a capability.
pub fn capability_name(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    ALL_CAPABILITIES.iter().copied().find(|c| *c == full)
}

/// Whether `name` means every capability.
fn is_all(name: &str) -> bool {
    name.eq_ignore_ascii_case("ALL") || name.eq_ignore_ascii_case("CAP_ALL")
}

impl CapabilityChanges {
    /// The default set, less `drop`, plus `add`, in [`ALL_CAPABILITIES`]
    /// order. Names are checked by [`CapabilityChanges::validate`].
    pub fn apply_to_default(&self) -> Vec<String> {
        let drop_all = self.drop.iter().any(|d| is_all(d));
        let dropped: Vec<_> = self
            .drop
            .iter()
            .filter_map(|d| capability_name(d))
            .collect();
        let add_all = self.add.iter().any(|a| is_all(a));
        let added: Vec<_> = self.add.iter().filter_map(|a| capability_name(a)).collect();
        ALL_CAPABILITIES
            .iter()
            .filter(|cap| {
                let kept =
                    DEFAULT_CAPABILITIES.contains(cap) && !drop_all && !dropped.contains(cap);
                kept || add_all || added.contains(cap)
            })
            .map(|cap| cap.to_string())
            .collect()
    }

    /// Refuses unknown names, naming the field.
    pub fn validate(&self, field: &str) -> Result<(), ObjectError> {
        for (list, names) in [("add", &self.add), ("drop", &self.drop)] {
            for (i, name) in names.iter().enumerate() {
                if !is_all(name) && capability_name(name).is_none() {
                    return Err(ObjectError::invalid(
                        format!("{field}.{list}[{i}]"),
                        format!("unknown capability {name:?}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The added capabilities outside the default set, as written.
    fn beyond_default(&self) -> Vec<&str> {
        self.add
            .iter()
            .filter(|a| {
                is_all(a) || capability_name(a).is_some_and(|c| !DEFAULT_CAPABILITIES.contains(&c))
            })
            .map(String::as_str)
            .collect()
    }
}

impl SeccompProfile {
    fn validate(&self, field: &str) -> Result<(), ObjectError> {
        if self.kind == SeccompProfileType::Localhost || self.localhost_profile.is_some() {
            return Err(ObjectError::invalid(
                format!("{field}.type"),
                "Localhost profiles are not supported: use RuntimeDefault, or Unconfined where the project allows privileged",
            ));
        }
        Ok(())
    }
}

/// The resolved settings of a container with context `container` in a pod
/// with context `pod` and host namespaces `host_pid`/`host_ipc`.
pub(crate) fn effective(
    pod: &PodSecurityContext,
    container: &SecurityContext,
    host_pid: bool,
    host_ipc: bool,
) -> EffectiveSecurity {
    let privileged = container.privileged == Some(true);
    let capabilities = if privileged {
        ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    } else {
        container
            .capabilities
            .clone()
            .unwrap_or_default()
            .apply_to_default()
    };
    let seccomp = if privileged {
        SeccompProfileType::Unconfined
    } else {
        container
            .seccomp_profile
            .as_ref()
            .or(pod.seccomp_profile.as_ref())
            .map_or(SeccompProfileType::RuntimeDefault, |p| p.kind)
    };
    let mut supplemental_groups = pod.supplemental_groups.clone();
    supplemental_groups.extend(pod.fs_group);
    EffectiveSecurity {
        run_as_user: container.run_as_user.or(pod.run_as_user),
        run_as_group: container.run_as_group.or(pod.run_as_group),
        run_as_non_root: container.run_as_non_root.or(pod.run_as_non_root) == Some(true),
        supplemental_groups,
        fs_group: pod.fs_group,
        read_only_root_filesystem: container.read_only_root_filesystem == Some(true),
        allow_privilege_escalation: container.allow_privilege_escalation,
        privileged,
        capabilities,
        seccomp,
        host_pid,
        host_ipc,
        host_network: false,
    }
}

/// Checks a pod's and its containers' contexts; `field` is the pod spec's path.
pub(crate) fn validate(
    field: &str,
    pod: &PodSecurityContext,
    containers: &[(String, SecurityContext)],
) -> Result<(), ObjectError> {
    if let Some(profile) = &pod.seccomp_profile {
        profile.validate(&format!("{field}.securityContext.seccompProfile"))?;
    }
    for (at, context) in containers {
        let at = format!("{at}.securityContext");
        if let Some(profile) = &context.seccomp_profile {
            profile.validate(&format!("{at}.seccompProfile"))?;
        }
        if let Some(changes) = &context.capabilities {
            changes.validate(&format!("{at}.capabilities"))?;
        }
        if context.privileged == Some(true) && context.allow_privilege_escalation == Some(false) {
            return Err(ObjectError::invalid(
                format!("{at}.allowPrivilegeEscalation"),
                "cannot be false when privileged is true",
            ));
        }
    }
    Ok(())
}

/// Paths of the settings that need the project's `allowPrivileged`.
pub(crate) fn privileged_settings(
    field: &str,
    pod: &PodSecurityContext,
    containers: &[(String, SecurityContext)],
) -> Vec<String> {
    let unconfined = |p: &Option<SeccompProfile>| {
        p.as_ref()
            .is_some_and(|p| p.kind == SeccompProfileType::Unconfined)
    };
    let mut found = Vec::new();
    if unconfined(&pod.seccomp_profile) {
        found.push(format!("{field}.securityContext.seccompProfile.type"));
    }
    for (at, context) in containers {
        let at = format!("{at}.securityContext");
        if context.privileged == Some(true) {
            found.push(format!("{at}.privileged"));
        }
        if let Some(changes) = &context.capabilities {
            for name in changes.beyond_default() {
                found.push(format!("{at}.capabilities.add ({name})"));
            }
        }
        if unconfined(&context.seccomp_profile) {
            found.push(format!("{at}.seccompProfile.type"));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(add: &[&str], drop: &[&str]) -> CapabilityChanges {
        CapabilityChanges {
            add: add.iter().map(|s| s.to_string()).collect(),
            drop: drop.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_default_set_has_containerds_members() {
        assert_eq!(DEFAULT_CAPABILITIES.len(), 14);
        assert!(
            DEFAULT_CAPABILITIES
                .iter()
                .all(|c| ALL_CAPABILITIES.contains(c))
        );
        let set = changes(&[], &[]).apply_to_default();
        assert_eq!(set.len(), 14);
    }

    #[test]
    fn drop_then_add_with_or_without_the_prefix() {
        assert_eq!(
            changes(&["NET_BIND_SERVICE"], &["ALL"]).apply_to_default(),
            ["CAP_NET_BIND_SERVICE"]
        );
        let set = changes(&["cap_sys_admin"], &["NET_RAW", "CAP_MKNOD"]).apply_to_default();
        assert!(set.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(!set.contains(&"CAP_NET_RAW".to_string()));
        assert!(!set.contains(&"CAP_MKNOD".to_string()));
        assert_eq!(set.len(), 13);
        assert_eq!(
            changes(&["ALL"], &[]).apply_to_default().len(),
            ALL_CAPABILITIES.len()
        );
    }

    #[test]
    fn unknown_capabilities_are_refused_by_path() {
        let err = changes(&["NET_BIND_SERVICE", "FLY"], &[])
            .validate("c.capabilities")
            .unwrap_err();
        assert!(
            matches!(&err, ObjectError::Invalid { field, .. } if field == "c.capabilities.add[1]"),
            "{err}"
        );
        assert!(changes(&["KILL"], &["all"]).validate("c").is_ok());
    }

    #[test]
    fn the_container_overrides_the_pod() {
        let pod = PodSecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(3000),
            run_as_non_root: Some(true),
            supplemental_groups: vec![4000],
            fs_group: Some(2000),
            seccomp_profile: Some(SeccompProfile {
                kind: SeccompProfileType::Unconfined,
                localhost_profile: None,
            }),
        };
        let container = SecurityContext {
            run_as_user: Some(1001),
            run_as_non_root: Some(false),
            seccomp_profile: Some(SeccompProfile {
                kind: SeccompProfileType::RuntimeDefault,
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        };
        let e = effective(&pod, &container, false, true);
        assert_eq!(e.run_as_user, Some(1001));
        assert_eq!(e.run_as_group, Some(3000));
        assert!(!e.run_as_non_root);
        assert_eq!(e.supplemental_groups, [4000, 2000]);
        assert_eq!(e.fs_group, Some(2000));
        assert_eq!(e.seccomp, SeccompProfileType::RuntimeDefault);
        assert!(e.host_ipc && !e.host_pid);
        assert!(!e.no_new_privileges());
        let e = effective(&pod, &SecurityContext::default(), false, false);
        assert_eq!(e.run_as_user, Some(1000));
        assert!(e.run_as_non_root);
        assert_eq!(e.seccomp, SeccompProfileType::Unconfined);
    }

    #[test]
    fn privileged_means_every_capability_and_no_filter() {
        let container = SecurityContext {
            privileged: Some(true),
            ..SecurityContext::default()
        };
        let e = effective(&PodSecurityContext::default(), &container, false, false);
        assert_eq!(e.capabilities.len(), ALL_CAPABILITIES.len());
        assert_eq!(e.seccomp, SeccompProfileType::Unconfined);
        let nnp = SecurityContext {
            allow_privilege_escalation: Some(false),
            ..SecurityContext::default()
        };
        assert!(effective(&PodSecurityContext::default(), &nnp, false, false).no_new_privileges());
    }

    #[test]
    fn settings_needing_allow_privileged_are_named() {
        let pod = PodSecurityContext {
            seccomp_profile: Some(SeccompProfile {
                kind: SeccompProfileType::Unconfined,
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        };
        let container = SecurityContext {
            privileged: Some(true),
            capabilities: Some(changes(&["NET_BIND_SERVICE", "SYS_ADMIN"], &["ALL"])),
            ..SecurityContext::default()
        };
        let found = privileged_settings("s", &pod, &[("s.containers[0]".into(), container)]);
        assert_eq!(
            found,
            [
                "s.securityContext.seccompProfile.type",
                "s.containers[0].securityContext.privileged",
                "s.containers[0].securityContext.capabilities.add (SYS_ADMIN)",
            ]
        );
        let plain = SecurityContext {
            capabilities: Some(changes(&["KILL"], &["ALL"])),
            ..SecurityContext::default()
        };
        assert!(
            privileged_settings("s", &PodSecurityContext::default(), &[("c".into(), plain)])
                .is_empty()
        );
    }

    #[test]
    fn localhost_profiles_are_refused() {
        let pod = PodSecurityContext {
            seccomp_profile: Some(SeccompProfile {
                kind: SeccompProfileType::Localhost,
                localhost_profile: Some("p.json".into()),
            }),
            ..PodSecurityContext::default()
        };
        let err = validate("s", &pod, &[]).unwrap_err();
        assert!(
            matches!(&err, ObjectError::Invalid { field, .. } if field == "s.securityContext.seccompProfile.type")
        );
    }
}
