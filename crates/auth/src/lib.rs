//! Identities and access for Wharf, with no HTTP in it: users with argon2
//! password hashes, projects, Harbor's roles, robot accounts, failed-login
//! throttling, and Ed25519-signed short-lived tokens (the Docker registry
//! token scheme's JWTs and the API's own).
//!
//! Access has two layers: a caller must authenticate at all, then the
//! project decides what they may do ([`Identity::actions_on`]).

mod error;
mod identity;
mod model;
mod names;
mod password;
mod ratelimit;
mod token;

pub use error::AuthError;
pub use identity::{
    API_AUDIENCE, CommitGrant, Identity, IdentityConfig, IssuedToken, JoinToken,
    MAX_COMMIT_GRANT_TTL, NodeJoin, Scope,
};
pub use model::{
    Action, Actions, InventoryRole, Member, NODE_ROBOT_PREFIX, Principal, Project,
    ProjectWithUsage, ProxyCache, Robot, RobotPermission, Role, Settings, SystemPermission, User,
};
pub use names::{check_project_name, check_user_name, is_robot_name};
pub use password::{MAX_PASSWORD, MIN_PASSWORD};
pub use ratelimit::LoginLimits;
pub use token::{AccessEntry, Claims, MAX_TOKEN_BYTES, TokenKeys, TokenKind};
