//! Projects and their members.

use wharf_store::{StoreExt, Txn};

use super::records::{MEMBERS, PROJECTS, ROBOTS, encode, member_key};
use super::{Identity, now_millis};
use crate::AuthError;
use crate::model::{Action, Member, Principal, Project, ProxyCache, RobotRecord, Role};
use crate::names::check_new_project_name;

impl Identity {
    /// Creates a project; its creator becomes its project admin.
    pub async fn create_project(
        &self,
        creator: &Principal,
        name: &str,
        public: bool,
        quota_bytes: Option<u64>,
    ) -> Result<Project, AuthError> {
        self.create_project_with(creator, name, public, quota_bytes, None)
            .await
    }

    /// Creates a project as [`Identity::create_project`] does, as a proxy
    /// cache when `proxy_cache` is given (in the same write, so the project
    /// never exists as an ordinary one). The caller checks that the
    /// endpoint exists.
    pub async fn create_project_with(
        &self,
        creator: &Principal,
        name: &str,
        public: bool,
        quota_bytes: Option<u64>,
        proxy_cache: Option<ProxyCache>,
    ) -> Result<Project, AuthError> {
        let Principal::User {
            name: creator_name, ..
        } = creator
        else {
            return Err(AuthError::Denied("only users create projects".into()));
        };
        check_new_project_name(name)?;
        let project = Project {
            name: name.to_string(),
            public,
            quota_bytes,
            allow_privileged: false,
            default_tier: None,
            proxy_cache,
            created_at: now_millis(),
        };
        let member = Member {
            project: name.to_string(),
            user: creator_name.clone(),
            role: Role::ProjectAdmin,
        };
        let key = format!("{PROJECTS}{name}");
        let txn = Txn::new()
            .when_revision(&key, 0)
            .put(&key, encode(&project))
            .put(member_key(name, creator_name), encode(&member));
        if self.store.txn(txn).await?.succeeded {
            Ok(project)
        } else {
            Err(AuthError::Conflict(format!("project {name}")))
        }
    }

    /// One project.
    pub async fn project(&self, name: &str) -> Result<Project, AuthError> {
        Ok(self.project_record(name).await?.0)
    }

    pub(super) async fn project_record(&self, name: &str) -> Result<(Project, u64), AuthError> {
        self.read(&format!("{PROJECTS}{name}"))
            .await?
            .ok_or_else(|| AuthError::NotFound(format!("project {name}")))
    }

    /// The storage quota of a project, if it has one.
    pub async fn project_quota(&self, name: &str) -> Result<Option<u64>, AuthError> {
        Ok(self
            .read::<Project>(&format!("{PROJECTS}{name}"))
            .await?
            .and_then(|(p, _)| p.quota_bytes))
    }

    /// Projects `principal` can see.
    pub async fn list_projects(&self, principal: &Principal) -> Result<Vec<Project>, AuthError> {
        let mut visible = Vec::new();
        for project in self.list::<Project>(PROJECTS).await? {
            if self
                .actions_in(principal, &project)
                .await?
                .contains(Action::Pull)
            {
                visible.push(project);
            }
        }
        Ok(visible)
    }

    /// Changes visibility, quota, whether privileged workloads are allowed
    /// and the default tier (`Some(None)` removes it). The caller checks
    /// the tier's grammar.
    pub async fn update_project(
        &self,
        name: &str,
        public: Option<bool>,
        quota_bytes: Option<Option<u64>>,
        allow_privileged: Option<bool>,
        default_tier: Option<Option<String>>,
    ) -> Result<Project, AuthError> {
        self.update_record(
            &format!("{PROJECTS}{name}"),
            &format!("project {name}"),
            |project: &mut Project| {
                if let Some(public) = public {
                    project.public = public;
                }
                if let Some(quota) = quota_bytes {
                    project.quota_bytes = quota;
                }
                if let Some(allow) = allow_privileged {
                    project.allow_privileged = allow;
                }
                if let Some(tier) = &default_tier {
                    project.default_tier = tier.clone();
                }
            },
        )
        .await
    }

    /// Deletes a project with its members and robots. The caller checks
    /// that no repositories remain.
    pub async fn delete_project(&self, name: &str) -> Result<(), AuthError> {
        let (_, revision) = self.project_record(name).await?;
        let key = format!("{PROJECTS}{name}");
        let mut txn = Txn::new().when_revision(&key, revision).delete(key);
        for member in self.list::<Member>(&format!("{MEMBERS}{name}/")).await? {
            txn = txn.delete(member_key(name, &member.user));
        }
        for robot in self
            .list::<RobotRecord>(&format!("{ROBOTS}robot${name}+"))
            .await?
        {
            txn = txn.delete(format!("{ROBOTS}{}", robot.name));
        }
        if self.store.txn(txn).await?.succeeded {
            Ok(())
        } else {
            Err(AuthError::Conflict(format!(
                "project {name} changed meanwhile; retry"
            )))
        }
    }

    // ----- members -----

    /// Adds a member or changes their role.
    pub async fn set_member(
        &self,
        project: &str,
        user: &str,
        role: Role,
    ) -> Result<Member, AuthError> {
        self.project_record(project).await?;
        self.user_record(user).await?;
        let member = Member {
            project: project.to_string(),
            user: user.to_string(),
            role,
        };
        self.store
            .put(&member_key(project, user), encode(&member))
            .await?;
        Ok(member)
    }

    /// Removes a member.
    pub async fn remove_member(&self, project: &str, user: &str) -> Result<(), AuthError> {
        let key = member_key(project, user);
        let (_, revision) = self
            .read::<Member>(&key)
            .await?
            .ok_or_else(|| AuthError::NotFound(format!("member {user} of project {project}")))?;
        self.store.delete_if(&key, revision).await?;
        Ok(())
    }

    /// Members of a project.
    pub async fn list_members(&self, project: &str) -> Result<Vec<Member>, AuthError> {
        self.project_record(project).await?;
        self.list(&format!("{MEMBERS}{project}/")).await
    }
}
