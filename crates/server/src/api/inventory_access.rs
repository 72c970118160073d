//! Who may do what to the inventory (clusters, pools, machine classes,
//! grants, the nodes in them): one check, [`authorize_inventory`], that
//! every inventory route and the node lifecycle routes go through.

use wharf_auth::{AuthError, Principal};

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
}

/// Allows `action` to system administrators.
pub(crate) fn authorize_inventory(
    principal: &Principal,
    action: InventoryAction,
) -> Result<(), AuthError> {
    if principal.is_admin() {
        return Ok(());
    }
    Err(AuthError::Denied(format!(
        "{} is for system administrators",
        action.describe()
    )))
}
