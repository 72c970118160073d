//! Who may do what: roles, actions and the records kept in the `Store`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::AuthError;

/// Something a caller may do in a project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Read images.
    Pull,
    /// Write images.
    Push,
    /// Delete images and tags.
    Delete,
    /// Manage members, robots and project settings.
    Admin,
}

impl Action {
    /// Every action, in a stable order.
    pub const ALL: [Action; 4] = [Action::Pull, Action::Push, Action::Delete, Action::Admin];

    /// The action's name in scopes and tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl FromStr for Action {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pull" => Ok(Action::Pull),
            "push" => Ok(Action::Push),
            "delete" => Ok(Action::Delete),
            "admin" => Ok(Action::Admin),
            other => Err(AuthError::Invalid(format!(
                "unknown action {other:?}: use pull, push, delete or admin"
            ))),
        }
    }
}

/// A set of actions.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Actions(u8);

impl Actions {
    /// No action at all.
    pub const NONE: Actions = Actions(0);

    /// Every action.
    pub fn all() -> Actions {
        Action::ALL.into_iter().collect()
    }

    /// Whether `action` is in the set.
    pub fn contains(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    /// Whether every action of `other` is in the set.
    pub fn covers(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }

    /// Actions in both sets.
    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    /// Actions in either set.
    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The actions in a stable order.
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }

    /// Parses a comma-separated list such as `pull,push` (`*` means all).
    pub fn parse_list(text: &str) -> Result<Actions, AuthError> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .try_fold(Actions::NONE, |set, item| {
                Ok(set.union(match item {
                    "*" => Actions::all(),
                    name => Actions::from(name.parse::<Action>()?),
                }))
            })
    }
}

impl From<Action> for Actions {
    fn from(action: Action) -> Actions {
        Actions(action.bit())
    }
}

impl FromIterator<Action> for Actions {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Actions {
        iter.into_iter()
            .fold(Actions::NONE, |set, a| set.union(a.into()))
    }
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Action::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl Serialize for Actions {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Actions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<Action>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

/// A member's role in a project, as Harbor defines them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// Pull, push, delete, and manage members and settings.
    ProjectAdmin,
    /// Pull, push, delete.
    Maintainer,
    /// Pull, push.
    Developer,
    /// Pull.
    Guest,
}

impl Role {
    /// What the role allows.
    pub fn actions(self) -> Actions {
        match self {
            Role::ProjectAdmin => Actions::all(),
            Role::Maintainer => [Action::Pull, Action::Push, Action::Delete]
                .into_iter()
                .collect(),
            Role::Developer => [Action::Pull, Action::Push].into_iter().collect(),
            Role::Guest => Action::Pull.into(),
        }
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ProjectAdmin => "projectAdmin",
            Role::Maintainer => "maintainer",
            Role::Developer => "developer",
            Role::Guest => "guest",
        }
    }
}

impl FromStr for Role {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "projectadmin" | "admin" => Ok(Role::ProjectAdmin),
            "maintainer" => Ok(Role::Maintainer),
            "developer" => Ok(Role::Developer),
            "guest" => Ok(Role::Guest),
            _ => Err(AuthError::Invalid(format!(
                "unknown role {s:?}: use projectAdmin, maintainer, developer or guest"
            ))),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A local user.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct UserRecord {
    pub name: String,
    /// The account's identity, never reused: tokens are bound to it, so that
    /// a new account under a deleted one's name does not inherit its tokens.
    /// Empty in records written before uids existed (see [`effective_uid`]).
    #[serde(default)]
    pub uid: String,
    pub password_hash: String,
    pub admin: bool,
    pub disabled: bool,
    /// Bumped on password change and disabling; tokens carry the epoch they
    /// were issued in and die when it moves.
    pub epoch: u64,
    pub created_at: u64,
    /// What the user may do to the inventory, besides any administrator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory_role: Option<InventoryRole>,
}

/// A user's cluster-wide role over the inventory (clusters, pools,
/// machine classes, grants and the nodes in them). System administrators
/// may do everything without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InventoryRole {
    /// Manages clusters, pools, machine classes and grants, and operates
    /// nodes.
    ClusterAdmin,
    /// Cordons, uncordons, drains, joins and decommissions nodes.
    PoolOperator,
    /// Reads the inventory and cost.
    Viewer,
}

impl InventoryRole {
    /// `clusterAdmin`, `poolOperator` or `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            InventoryRole::ClusterAdmin => "clusterAdmin",
            InventoryRole::PoolOperator => "poolOperator",
            InventoryRole::Viewer => "viewer",
        }
    }
}

/// A project: the namespace of the repositories under `<name>/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// Name, the first path component of its repositories.
    pub name: String,
    /// Any logged-in user may pull (and anonymous users, if allowed).
    pub public: bool,
    /// Storage quota in bytes, if limited.
    pub quota_bytes: Option<u64>,
    /// Whether its workloads may be privileged: `privileged`, host
    /// namespaces, capabilities beyond the default set, seccomp
    /// `Unconfined`. Only system administrators change it.
    #[serde(default)]
    pub allow_privileged: bool,
    /// The tier its Deployments get when they name none (the grammar of
    /// the `wharf.io/tier` annotation: `core`, `batch;preferred`);
    /// project admins set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_tier: Option<String>,
    /// Set when the project is a pull-through cache of another registry;
    /// fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_cache: Option<ProxyCache>,
    /// Creation time, unix milliseconds.
    pub created_at: u64,
}

/// How a proxy cache project reaches its upstream: `PROJECT/<path>` is
/// pulled from `<path>` at the replication endpoint `endpoint`, whose
/// credentials it uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyCache {
    /// The replication endpoint (kind `wharf` or `registry`).
    pub endpoint: String,
    /// Seconds a cached tag is served before it is checked again with the
    /// upstream.
    pub ttl_secs: u64,
}

impl ProxyCache {
    /// A tag is revalidated after an hour unless the project says otherwise.
    pub const DEFAULT_TTL_SECS: u64 = 3600;
}

/// A project with the storage its repositories use, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectWithUsage {
    /// The project.
    #[serde(flatten)]
    pub project: Project,
    /// Bytes stored in its repositories.
    pub usage_bytes: u64,
}

/// A user's membership in a project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The project.
    pub project: String,
    /// The user.
    pub user: String,
    /// The role.
    pub role: Role,
}

/// What a robot account may do in one project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotPermission {
    /// The project.
    pub project: String,
    /// Allowed actions.
    pub actions: Actions,
}

/// How node credentials' robot names start: `node` is a reserved project
/// name, so no project's robot can take one.
pub const NODE_ROBOT_PREFIX: &str = "robot$node+";

/// A right outside any project that a robot account may hold instead of
/// project actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SystemPermission {
    /// Read the cluster's metrics (`GET /metrics`) and nothing else: the
    /// long-lived credential a Prometheus scrape uses.
    #[serde(rename = "metrics:read")]
    MetricsRead,
    /// Act as the node agent of the node the robot is named for
    /// (`robot$node+<node>`): the per-node credential a join hands out,
    /// revoked by deleting the robot. Never granted by `robot create`.
    #[serde(rename = "node")]
    Node,
}

impl SystemPermission {
    /// The permission's name, as the CLI and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            SystemPermission::MetricsRead => "metrics:read",
            SystemPermission::Node => "node",
        }
    }
}

impl FromStr for SystemPermission {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "metrics:read" => Ok(SystemPermission::MetricsRead),
            other => Err(AuthError::Invalid(format!(
                "unknown permission {other:?}: use metrics:read"
            ))),
        }
    }
}

impl fmt::Display for SystemPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A robot account as stored (its secret only as a hash).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RobotRecord {
    pub name: String,
    /// As [`UserRecord::uid`].
    #[serde(default)]
    pub uid: String,
    pub secret_hash: String,
    pub permissions: Vec<RobotPermission>,
    /// Rights outside projects; a robot holding any has no project actions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system_permissions: Vec<SystemPermission>,
    /// Expiry, unix milliseconds; `None` never expires.
    pub expires_at: Option<u64>,
    pub disabled: bool,
    pub epoch: u64,
    pub created_by: String,
    pub created_at: u64,
}

/// A robot account as shown to people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Robot {
    /// Full name, `robot$<project>+<name>`.
    pub name: String,
    /// The account's identity: a robot created again under the same name
    /// has another one.
    #[serde(default)]
    pub uid: String,
    /// Per-project permissions.
    pub permissions: Vec<RobotPermission>,
    /// Rights outside projects (`metrics:read`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system_permissions: Vec<SystemPermission>,
    /// Expiry, unix milliseconds.
    pub expires_at: Option<u64>,
    /// Whether it was disabled.
    pub disabled: bool,
    /// Who created it.
    pub created_by: String,
    /// Creation time, unix milliseconds.
    pub created_at: u64,
}

impl From<&RobotRecord> for Robot {
    fn from(record: &RobotRecord) -> Robot {
        Robot {
            name: record.name.clone(),
            uid: effective_uid(&record.uid, record.created_at),
            permissions: record.permissions.clone(),
            system_permissions: record.system_permissions.clone(),
            expires_at: record.expires_at,
            disabled: record.disabled,
            created_by: record.created_by.clone(),
            created_at: record.created_at,
        }
    }
}

/// A user as shown to people (never with the password hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Login name.
    pub name: String,
    /// The account's identity: a user created again under the same name has
    /// another one.
    #[serde(default)]
    pub uid: String,
    /// System administrator.
    pub admin: bool,
    /// Disabled users cannot log in and their tokens stop working.
    pub disabled: bool,
    /// Creation time, unix milliseconds.
    pub created_at: u64,
    /// The user's role over the inventory, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory_role: Option<InventoryRole>,
}

impl From<&UserRecord> for User {
    fn from(record: &UserRecord) -> User {
        User {
            name: record.name.clone(),
            uid: effective_uid(&record.uid, record.created_at),
            admin: record.admin,
            disabled: record.disabled,
            created_at: record.created_at,
            inventory_role: record.inventory_role,
        }
    }
}

/// System-wide settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Anonymous callers may pull from public projects.
    #[serde(default)]
    pub anonymous_pull: bool,
    /// Node directories under which pods may mount `hostPath` volumes
    /// (absolute, without symlinks); none: every hostPath is refused.
    #[serde(default)]
    pub host_path_prefixes: Vec<String>,
}

/// The authenticated caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// No credentials.
    Anonymous,
    /// A local user.
    User {
        /// Login name.
        name: String,
        /// The account's identity ([`User::uid`]).
        uid: String,
        /// System administrator.
        admin: bool,
    },
    /// A robot account.
    Robot {
        /// Full robot name.
        name: String,
        /// The account's identity ([`Robot::uid`]).
        uid: String,
        /// What it may do where.
        permissions: Vec<RobotPermission>,
        /// Rights outside projects.
        system_permissions: Vec<SystemPermission>,
    },
}

impl Principal {
    /// The name shown in audit records (`anonymous` for no one).
    pub fn name(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::User { name, .. } | Principal::Robot { name, .. } => name,
        }
    }

    /// Whether this is a system administrator.
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::User { admin: true, .. })
    }

    /// Whether this caller may read the cluster's metrics (`GET /metrics`):
    /// administrators and `metrics:read` robots.
    pub fn may_read_metrics(&self) -> bool {
        self.is_admin() || self.only_reads_metrics()
    }

    /// Whether this is a `metrics:read` robot, which may do nothing else.
    pub fn only_reads_metrics(&self) -> bool {
        matches!(self, Principal::Robot { system_permissions, .. }
            if system_permissions.contains(&SystemPermission::MetricsRead))
    }

    /// The node a node credential acts for: a `robot$node+<node>` robot
    /// holding [`SystemPermission::Node`].
    ///
    /// ```
    /// # use wharf_auth::{Principal, SystemPermission};
    /// let agent = Principal::Robot {
    ///     name: "robot$node+n1".into(),
    ///     uid: "u".into(),
    ///     permissions: vec![],
    ///     system_permissions: vec![SystemPermission::Node],
    /// };
    /// assert_eq!(agent.node_agent(), Some("n1"));
    /// ```
    pub fn node_agent(&self) -> Option<&str> {
        match self {
            Principal::Robot {
                name,
                system_permissions,
                ..
            } if system_permissions.contains(&SystemPermission::Node) => {
                name.strip_prefix(NODE_ROBOT_PREFIX)
            }
            _ => None,
        }
    }

    /// The account's identity (empty for anonymous callers).
    pub fn uid(&self) -> &str {
        match self {
            Principal::Anonymous => "",
            Principal::User { uid, .. } | Principal::Robot { uid, .. } => uid,
        }
    }
}

/// A fresh account identity: 128 random bits, so that replicas need no
/// coordination and a uid is never handed out twice in practice.
pub(crate) fn new_uid() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The uid of an account record: the stored one, or for records created
/// before uids existed one derived from the creation time. That one is
/// stable for the record's life and differs from every generated uid (it
/// has a prefix), and any account created since has a generated uid, so it
/// still tells the account apart from later ones of the same name.
pub(crate) fn effective_uid(stored: &str, created_at: u64) -> String {
    if stored.is_empty() {
        format!("legacy-{created_at}")
    } else {
        stored.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_harbor_grants() {
        assert_eq!(Role::Guest.actions(), Action::Pull.into());
        assert!(
            Role::Developer
                .actions()
                .covers(Actions::parse_list("pull,push").unwrap())
        );
        assert!(!Role::Developer.actions().contains(Action::Delete));
        assert!(Role::Maintainer.actions().contains(Action::Delete));
        assert!(!Role::Maintainer.actions().contains(Action::Admin));
        assert_eq!(Role::ProjectAdmin.actions(), Actions::all());
        assert_eq!("project-admin".parse::<Role>().unwrap(), Role::ProjectAdmin);
        assert!("owner".parse::<Role>().is_err());
    }

    #[test]
    fn action_lists_parse_and_print() {
        let set = Actions::parse_list("push, pull").unwrap();
        assert_eq!(set.to_string(), "pull,push");
        assert_eq!(Actions::parse_list("*").unwrap(), Actions::all());
        assert!(Actions::parse_list("pull,fly").is_err());
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"["pull","push"]"#);
        assert_eq!(serde_json::from_str::<Actions>(&json).unwrap(), set);
        assert_eq!(set.intersect(Action::Pull.into()), Action::Pull.into());
    }
}
