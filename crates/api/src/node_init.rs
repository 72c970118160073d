//! A node's initialization by its pool's [`InitProfile`]: what the agent
//! reports of a run ([`NodeInitialization`]), the Kubernetes-style
//! `Initialized` condition the control plane derives from it, and the
//! taint that keeps pods off the node until the pool's current profile has
//! run there.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use wharf_oci::{Digest, DigestAlgorithm};

use crate::inventory::InitProfile;

/// The taint a node of a pool with an init profile carries until the
/// profile (the pool's current one) has run on it.
pub const TAINT_NOT_INITIALIZED: &str = "wharf.io/not-initialized";
/// The node condition saying whether the pool's init profile has run.
pub const CONDITION_INITIALIZED: &str = "Initialized";

impl InitProfile {
    /// `sha256:<hex>` of the profile's canonical JSON (fields in their
    /// fixed order, sysctls sorted): what tells an agent the profile changed.
    ///
    /// ```
    /// let profile = wharf_api::InitProfile::default();
    /// assert!(profile.hash().starts_with("sha256:"));
    /// ```
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Digest::of(DigestAlgorithm::Sha256, &json).to_string()
    }
}

/// What `GET /api/v1/nodes/{node}/init` answers: the node's pool's
/// profile and its hash (both absent for a node without one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeInitProfile {
    /// The node's pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The profile to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<InitProfile>,
    /// [`InitProfile::hash`] of `profile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

impl NodeInitProfile {
    /// The answer for a node of `pool` (if any) whose profile is `profile`.
    pub fn new(pool: Option<String>, profile: Option<InitProfile>) -> NodeInitProfile {
        let hash = profile.as_ref().map(InitProfile::hash);
        NodeInitProfile {
            pool,
            profile,
            hash,
        }
    }
}

/// Where a run of an init profile is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum InitState {
    /// Not started yet.
    #[default]
    Pending,
    /// Running a step.
    Running,
    /// Every step done.
    Succeeded,
    /// A step failed; the message says which and why.
    Failed,
}

/// A run of an init profile on a node, as its agent reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeInitialization {
    /// The hash of the profile run ([`InitProfile::hash`]).
    pub profile_hash: String,
    /// Where the run is.
    pub state: InitState,
    /// The step running or failed (`packages`, `kernelModules`, `sysctls`,
    /// `files`, `script`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// What happened: the failure, or a note such as a simulated node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the run started.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::optional_millis"
    )]
    #[schemars(with = "Option<String>")]
    pub started_at: Option<u64>,
    /// When it succeeded or failed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::optional_millis"
    )]
    #[schemars(with = "Option<String>")]
    pub finished_at: Option<u64>,
}

/// One condition of a node, as Kubernetes writes them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeCondition {
    /// `Initialized`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True` or `False`.
    pub status: String,
    /// Why, in one word (`Succeeded`, `Running`, `Failed`, `Pending`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Detail.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When `status` last changed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::optional_millis"
    )]
    #[schemars(with = "Option<String>")]
    pub last_transition_time: Option<u64>,
}

/// The `Initialized` condition of a node whose pool's profile hashes to
/// `current`, given the agent's report `run`; `None` when the pool has no
/// profile. It is `True` only for a successful run of the current profile.
pub fn initialized_condition(
    current: Option<&str>,
    run: Option<&NodeInitialization>,
) -> Option<NodeCondition> {
    let current = current?;
    let short = current.get(7..19).unwrap_or(current);
    let (ok, reason, message) = match run {
        Some(run) if run.profile_hash == current => match run.state {
            InitState::Succeeded => (
                true,
                "Succeeded",
                run.message
                    .clone()
                    .unwrap_or_else(|| format!("init profile {short} applied")),
            ),
            InitState::Failed => (
                false,
                "Failed",
                run.message.clone().unwrap_or_else(|| "failed".into()),
            ),
            InitState::Running => (
                false,
                "Running",
                format!(
                    "running init profile {short}, step {}",
                    run.step.as_deref().unwrap_or("-")
                ),
            ),
            InitState::Pending => (false, "Pending", format!("init profile {short} to run")),
        },
        Some(_) => (
            false,
            "ProfileChanged",
            format!("the pool's init profile changed to {short}; waiting for the agent to run it"),
        ),
        None => (
            false,
            "Pending",
            format!("waiting for the agent to run init profile {short}"),
        ),
    };
    Some(NodeCondition {
        kind: CONDITION_INITIALIZED.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: None,
    })
}

/// Replaces `kind`'s condition in `conditions` with `new` (or removes it
/// when `None`), keeping its transition time while its status stays the
/// same and stamping `now` when it changes.
pub fn set_condition(
    conditions: &mut Vec<NodeCondition>,
    kind: &str,
    new: Option<NodeCondition>,
    now: u64,
) {
    let old = conditions.iter().position(|c| c.kind == kind);
    let since = old
        .map(|at| &conditions[at])
        .filter(|c| new.as_ref().is_some_and(|n| n.status == c.status))
        .and_then(|c| c.last_transition_time);
    if let Some(at) = old {
        conditions.remove(at);
    }
    if let Some(mut new) = new {
        new.last_transition_time = Some(since.unwrap_or(now));
        conditions.push(new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(hash: &str, state: InitState) -> NodeInitialization {
        NodeInitialization {
            profile_hash: hash.into(),
            state,
            ..NodeInitialization::default()
        }
    }

    #[test]
    fn the_hash_follows_the_content_only() {
        let mut profile = InitProfile::default();
        profile
            .sysctls
            .insert("net.ipv4.ip_default_ttl".into(), "77".into());
        profile
            .sysctls
            .insert("net.core.somaxconn".into(), "1024".into());
        let same: InitProfile = serde_json::from_value(serde_json::json!({
            "sysctls": {"net.ipv4.ip_default_ttl": "77", "net.core.somaxconn": "1024"}
        }))
        .unwrap();
        assert_eq!(profile.hash(), same.hash());
        assert_eq!(profile.hash().len(), "sha256:".len() + 64);
        profile.script = Some("true".into());
        assert_ne!(profile.hash(), same.hash());
    }

    #[test]
    fn only_a_successful_run_of_the_current_profile_is_initialized() {
        assert_eq!(initialized_condition(None, None), None);
        let current = "sha256:aaaaaaaaaaaaaaaa";
        let of = |r: Option<NodeInitialization>| {
            let c = initialized_condition(Some(current), r.as_ref()).unwrap();
            (c.status, c.reason)
        };
        let is = |status: &str, reason: &str| (status.to_string(), reason.to_string());
        assert_eq!(of(None), is("False", "Pending"));
        assert_eq!(
            of(Some(run(current, InitState::Running))),
            is("False", "Running")
        );
        assert_eq!(
            of(Some(run(current, InitState::Failed))),
            is("False", "Failed")
        );
        assert_eq!(
            of(Some(run(current, InitState::Succeeded))),
            is("True", "Succeeded")
        );
        let old = run("sha256:bbbb", InitState::Succeeded);
        assert_eq!(of(Some(old)), is("False", "ProfileChanged"));
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let mut conditions = Vec::new();
        let current = Some("sha256:aaaa");
        let running = run("sha256:aaaa", InitState::Running);
        let done = run("sha256:aaaa", InitState::Succeeded);
        let at = |c: &[NodeCondition]| c[0].last_transition_time;
        set_condition(
            &mut conditions,
            CONDITION_INITIALIZED,
            initialized_condition(current, None),
            1000,
        );
        let pending = initialized_condition(current, Some(&running));
        set_condition(&mut conditions, CONDITION_INITIALIZED, pending, 2000);
        assert_eq!(at(&conditions), Some(1000), "still False");
        assert_eq!(conditions[0].reason, "Running");
        let ok = initialized_condition(current, Some(&done));
        set_condition(&mut conditions, CONDITION_INITIALIZED, ok, 3000);
        assert_eq!(at(&conditions), Some(3000));
        assert_eq!(conditions.len(), 1);
        set_condition(&mut conditions, CONDITION_INITIALIZED, None, 4000);
        assert!(conditions.is_empty());
    }
}
