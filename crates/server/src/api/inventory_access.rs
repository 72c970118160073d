//! Who may do what to the inventory (clusters, pools, machine classes,
//! grants, the nodes in them): one check, [`authorize_inventory`], that
//! every inventory route and the node operation routes go through.
//!
//! | role           | read | operate nodes | manage |
//! |----------------|------|---------------|--------|
//! | `viewer`       | yes  |               |        |
//! | `poolOperator` | yes  | yes           |        |
//! | `clusterAdmin` | yes  | yes           | yes    |
//!
//! System administrators may do everything without a role.

use wharf_auth::{AuthError, Identity, InventoryRole, Principal};

/// What a caller asks to do to the inventory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InventoryAction {
    /// Read clusters, pools, classes, grants and cost.
    Read,
    /// Cordon, uncordon, drain, print join commands, decommission nodes.
    Operate,
    /// Create, change and delete clusters, pools, classes and grants.
    Manage,
}

impl InventoryAction {
    /// `read`, `operate` or `manage`.
    pub fn as_str(self) -> &'static str {
        match self {
            InventoryAction::Read => "read",
            InventoryAction::Operate => "operate",
            InventoryAction::Manage => "manage",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            InventoryAction::Read => "reading the inventory",
            InventoryAction::Operate => "operating nodes",
            InventoryAction::Manage => "managing clusters, pools and machine classes",
        }
    }

    /// The roles allowed it, weakest first.
    fn roles(self) -> &'static [InventoryRole] {
        use InventoryRole::*;
        match self {
            InventoryAction::Read => &[Viewer, PoolOperator, ClusterAdmin],
            InventoryAction::Operate => &[PoolOperator, ClusterAdmin],
            InventoryAction::Manage => &[ClusterAdmin],
        }
    }
}

/// Allows `action` to system administrators and to users whose inventory
/// role covers it (read from the account, so a role change applies to
/// the next request).
pub(crate) async fn authorize_inventory(
    identity: &Identity,
    principal: &Principal,
    action: InventoryAction,
) -> Result<(), AuthError> {
    if principal.is_admin() {
        return Ok(());
    }
    if let Principal::User { name, .. } = principal {
        let role = identity.user(name).await?.inventory_role;
        if role.is_some_and(|r| action.roles().contains(&r)) {
            return Ok(());
        }
    }
    let roles: Vec<&str> = action.roles().iter().map(|r| r.as_str()).collect();
    Err(AuthError::Denied(format!(
        "{} needs the inventory role {} (set by a system administrator with \
         `wharf user set-role`)",
        action.describe(),
        roles.join(" or ")
    )))
}
