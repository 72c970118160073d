//! The access policy: what a principal may do in a project, and what a
//! registry token may carry for the scopes asked for.

use wharf_oci::RepositoryName;

use super::Identity;
use super::records::{PROJECTS, member_key};
use crate::AuthError;
use crate::model::{Action, Actions, Member, Principal, Project, Role};
use crate::token::AccessEntry;

/// A `scope` of the Docker token protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `repository:<name>:<actions>`
    Repository {
        /// The repository.
        name: RepositoryName,
        /// Actions asked for.
        actions: Actions,
    },
    /// `registry:catalog:*`
    Catalog,
}

impl Scope {
    /// Parses one scope. Unknown actions are ignored, as distribution does;
    /// unknown types and malformed names are errors.
    pub fn parse(text: &str) -> Result<Scope, AuthError> {
        let invalid = || AuthError::Invalid(format!("invalid scope {text:?}"));
        let (kind, rest) = text.split_once(':').ok_or_else(invalid)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(invalid)?;
        match kind {
            "repository" => Ok(Scope::Repository {
                name: name.parse().map_err(|_| invalid())?,
                actions: actions
                    .split(',')
                    .map(|a| match a {
                        "*" => Actions::all(),
                        other => other
                            .parse::<Action>()
                            .map(Actions::from)
                            .unwrap_or_default(),
                    })
                    .fold(Actions::NONE, Actions::union),
            }),
            "registry" if name == "catalog" => Ok(Scope::Catalog),
            _ => Err(invalid()),
        }
    }
}

impl Identity {
    /// What `principal` may do in `project` (nothing if it does not exist).
    pub async fn actions_on(
        &self,
        principal: &Principal,
        project: &str,
    ) -> Result<Actions, AuthError> {
        match self
            .read::<Project>(&format!("{PROJECTS}{project}"))
            .await?
        {
            Some((project, _)) => self.actions_in(principal, &project).await,
            None => Ok(Actions::NONE),
        }
    }

    pub(super) async fn actions_in(
        &self,
        principal: &Principal,
        project: &Project,
    ) -> Result<Actions, AuthError> {
        let public_pull = |allowed: bool| {
            if allowed && project.public {
                Actions::from(Action::Pull)
            } else {
                Actions::NONE
            }
        };
        Ok(match principal {
            Principal::User { admin: true, .. } => Actions::all(),
            Principal::User { name, .. } => {
                let role = self
                    .read::<Member>(&member_key(&project.name, name))
                    .await?
                    .map(|(m, _)| m.role);
                role.map_or(Actions::NONE, Role::actions)
                    .union(public_pull(true))
            }
            Principal::Robot { permissions, .. } => permissions
                .iter()
                .filter(|p| p.project == project.name)
                .fold(Actions::NONE, |set, p| set.union(p.actions)),
            Principal::Anonymous => public_pull(self.settings().await?.anonymous_pull),
        })
    }

    /// Checks that `principal` may do `action` in `project`. Only system
    /// administrators learn that a project does not exist; others cannot
    /// tell a missing project from one they may not see.
    pub async fn require(
        &self,
        principal: &Principal,
        project: &str,
        action: Action,
    ) -> Result<(), AuthError> {
        let record = self
            .read::<Project>(&format!("{PROJECTS}{project}"))
            .await?;
        let allowed = match &record {
            Some((project, _)) => self.actions_in(principal, project).await?,
            None if principal.is_admin() => {
                return Err(AuthError::NotFound(format!("project {project}")));
            }
            None => Actions::NONE,
        };
        if allowed.contains(action) {
            Ok(())
        } else {
            Err(AuthError::Denied(format!(
                "{} may not {} in project {project}",
                principal.name(),
                action.as_str()
            )))
        }
    }

    /// What `principal` may do to `repository` in the registry: its
    /// actions in the repository's project, except for a node's
    /// credential, which pulls the images of whatever pods land on its
    /// node, and pushes only where a commit it runs was granted
    /// ([`Identity::grant_commit_push`]). The token server and the
    /// registry's own checks (a mount's source) both ask this.
    pub async fn registry_actions(
        &self,
        principal: &Principal,
        repository: &RepositoryName,
    ) -> Result<Actions, AuthError> {
        Ok(match principal.node_agent() {
            Some(node) if self.commit_push_granted(node, repository).await? => {
                Actions::from(Action::Pull).union(Actions::from(Action::Push))
            }
            Some(_) => Actions::from(Action::Pull),
            None => self.actions_on(principal, repository.project()).await?,
        })
    }

    /// What to put in a registry token for the `scopes` asked for: the
    /// intersection of what was asked and what `principal` may do.
    pub async fn grant(
        &self,
        principal: &Principal,
        scopes: &[Scope],
    ) -> Result<Vec<AccessEntry>, AuthError> {
        let mut access = Vec::new();
        for scope in scopes {
            match scope {
                Scope::Repository { name, actions } => {
                    let allowed = self.registry_actions(principal, name).await?;
                    // Registry actions only; "admin" is for the API.
                    let granted = actions
                        .intersect(allowed)
                        .iter()
                        .filter(|a| *a != Action::Admin);
                    access.push(AccessEntry {
                        kind: "repository".into(),
                        name: name.to_string(),
                        actions: granted.map(|a| a.as_str().to_string()).collect(),
                    });
                }
                Scope::Catalog => {
                    let may_list = !matches!(principal, Principal::Anonymous)
                        || self.settings().await?.anonymous_pull;
                    access.push(AccessEntry {
                        kind: "registry".into(),
                        name: "catalog".into(),
                        actions: if may_list {
                            vec!["*".into()]
                        } else {
                            Vec::new()
                        },
                    });
                }
            }
        }
        Ok(access)
    }
}
