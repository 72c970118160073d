//! Robot accounts: per-project credentials for automation, with
//! permissions in one or more projects and an optional expiry.

use std::time::Duration;

use wharf_store::StoreExt;

use super::records::{ROBOTS, encode};
use super::{Identity, IssuedToken, now_millis};
use crate::AuthError;
use crate::model::{
    Principal, Robot, RobotPermission, RobotRecord, SystemPermission, effective_uid, new_uid,
};
use crate::names::robot_name;
use crate::password::hash_blocking;

impl Identity {
    /// Creates robot `short` in `project` with `permissions`; returns it and
    /// its secret, which is not stored and cannot be shown again.
    pub async fn create_robot(
        &self,
        creator: &Principal,
        project: &str,
        short: &str,
        permissions: Vec<RobotPermission>,
        expires_in: Option<Duration>,
    ) -> Result<(Robot, String), AuthError> {
        if permissions.is_empty() || permissions.iter().any(|p| p.actions.is_empty()) {
            return Err(AuthError::Invalid(
                "a robot needs at least one action in each project".into(),
            ));
        }
        for permission in &permissions {
            self.project_record(&permission.project).await?;
        }
        let grants = (permissions, Vec::new());
        self.store_robot(creator, project, short, grants, expires_in)
            .await
    }

    /// Creates robot `short` in `project` that only reads the cluster's
    /// metrics (`metrics:read`, no project actions); returns it and its
    /// secret. Only system administrators should hand this out: it reads
    /// every node's and project's metrics.
    pub async fn create_metrics_robot(
        &self,
        creator: &Principal,
        project: &str,
        short: &str,
        expires_in: Option<Duration>,
    ) -> Result<(Robot, String), AuthError> {
        self.project_record(project).await?;
        let grants = (Vec::new(), vec![SystemPermission::MetricsRead]);
        self.store_robot(creator, project, short, grants, expires_in)
            .await
    }

    /// Creates node `node`'s credential: robot `robot$node+<node>` holding
    /// only [`SystemPermission::Node`]; returns it and its secret. A node
    /// that has one must be decommissioned (the robot deleted) before it
    /// joins again.
    pub async fn create_node_robot(
        &self,
        creator: &Principal,
        node: &str,
    ) -> Result<(Robot, String), AuthError> {
        let grants = (Vec::new(), vec![SystemPermission::Node]);
        self.store_robot(creator, "node", node, grants, None)
            .await
            .map_err(|err| match err {
                AuthError::Conflict(_) => AuthError::Conflict(format!(
                    "node {node} already has a credential: decommission it before it joins again"
                )),
                other => other,
            })
    }

    async fn store_robot(
        &self,
        creator: &Principal,
        project: &str,
        short: &str,
        (permissions, system_permissions): (Vec<RobotPermission>, Vec<SystemPermission>),
        expires_in: Option<Duration>,
    ) -> Result<(Robot, String), AuthError> {
        let name = robot_name(project, short)?;
        let secret = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
        };
        let record = RobotRecord {
            name: name.clone(),
            uid: new_uid(),
            secret_hash: hash_blocking(secret.clone()).await?,
            permissions,
            system_permissions,
            expires_at: expires_in.map(|d| now_millis() + d.as_millis() as u64),
            disabled: false,
            epoch: 0,
            created_by: creator.name().to_string(),
            created_at: now_millis(),
        };
        match self
            .store
            .create(&format!("{ROBOTS}{name}"), encode(&record))
            .await?
        {
            Some(_) => Ok((Robot::from(&record), secret)),
            None => Err(AuthError::Conflict(format!("robot {name}"))),
        }
    }

    /// An API token for robot `name` as it is now (refused when disabled
    /// or expired): for a `metrics:read` robot, the long-lived token
    /// Prometheus sends, handed out by administrators without the secret.
    pub async fn robot_api_token(&self, name: &str) -> Result<IssuedToken, AuthError> {
        let (record, _) = self.robot_record(name).await?;
        self.issue_api_token(&robot_principal(&record)?).await
    }

    pub(super) async fn robot_record(&self, name: &str) -> Result<(RobotRecord, u64), AuthError> {
        self.read(&format!("{ROBOTS}{name}"))
            .await?
            .ok_or_else(|| AuthError::NotFound(format!("robot {name}")))
    }

    /// One robot.
    pub async fn robot(&self, name: &str) -> Result<Robot, AuthError> {
        Ok(Robot::from(&self.robot_record(name).await?.0))
    }

    /// Robots of a project.
    pub async fn list_robots(&self, project: &str) -> Result<Vec<Robot>, AuthError> {
        self.project_record(project).await?;
        let records = self
            .list::<RobotRecord>(&format!("{ROBOTS}robot${project}+"))
            .await?;
        Ok(records.iter().map(Robot::from).collect())
    }

    /// Disables or re-enables a robot. Disabling cuts off its tokens at once
    /// on this server (within a second on others), and they stay dead after
    /// it is enabled again: the robot logs in anew.
    pub async fn set_robot_disabled(&self, name: &str, disabled: bool) -> Result<Robot, AuthError> {
        let record = self
            .update_record(
                &format!("{ROBOTS}{name}"),
                &format!("robot {name}"),
                |record: &mut RobotRecord| {
                    if record.disabled != disabled {
                        record.disabled = disabled;
                        record.epoch += 1;
                    }
                },
            )
            .await?;
        self.accounts_changed();
        Ok(Robot::from(&record))
    }

    /// Deletes a robot; its tokens stop working.
    pub async fn delete_robot(&self, name: &str) -> Result<(), AuthError> {
        let (_, revision) = self.robot_record(name).await?;
        self.store
            .delete_if(&format!("{ROBOTS}{name}"), revision)
            .await?;
        self.accounts_changed();
        Ok(())
    }
}

pub(super) fn robot_principal(record: &RobotRecord) -> Result<Principal, AuthError> {
    if record.disabled {
        return Err(AuthError::Unauthenticated(format!(
            "robot {} is disabled",
            record.name
        )));
    }
    if record.expires_at.is_some_and(|at| at <= now_millis()) {
        return Err(AuthError::Unauthenticated(format!(
            "robot {} has expired",
            record.name
        )));
    }
    Ok(Principal::Robot {
        name: record.name.clone(),
        uid: effective_uid(&record.uid, record.created_at),
        permissions: record.permissions.clone(),
        system_permissions: record.system_permissions.clone(),
    })
}
