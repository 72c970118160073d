//! The component flow's pod commits: `wharf commit POD` run by the leader
//! on behalf of the user who started the flow, with that user's rights as
//! they are now (a user disabled or removed since commits nothing).

use std::sync::{Arc, OnceLock, Weak};

use async_trait::async_trait;
use wharf_api::Pod;
use wharf_api::commit::CommitProgress;
use wharf_api::commit::{CommitRequest, CommitResult};
use wharf_auth::Principal;
use wharf_control::{CommitFailure, MeasuredChanges, PodCommitter};

use crate::AppState;
use crate::api::ApiCaller;
use crate::api::commit::{check_pod, commit_pod};

/// Commits through this server's own commit path ([`commit_pod`]). It is
/// made before the state it needs, which holds the control plane that holds
/// it; [`ServerPodCommitter::attach`] closes the loop with a weak reference,
/// so the two do not keep each other alive.
#[derive(Default)]
pub(crate) struct ServerPodCommitter {
    state: OnceLock<Weak<AppState>>,
}

impl ServerPodCommitter {
    /// Gives the committer the server's state, once it exists.
    pub(crate) fn attach(&self, state: &Arc<AppState>) {
        let _ = self.state.set(Arc::downgrade(state));
    }

    /// The server's state and the flow's user as the caller of a commit.
    async fn caller(
        &self,
        on_behalf_of: &str,
    ) -> Result<(Arc<AppState>, ApiCaller), CommitFailure> {
        let state = self
            .state
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| Self::failure("check", "the server is shutting down"))?;
        let user = state.identity.user(on_behalf_of).await.map_err(|e| {
            Self::failure(
                "check",
                format!("the flow commits on behalf of {on_behalf_of}: {e}"),
            )
        })?;
        if user.disabled {
            return Err(Self::failure(
                "check",
                format!("user {on_behalf_of}, who started the flow, is disabled"),
            ));
        }
        let caller = ApiCaller {
            principal: Principal::User {
                name: user.name,
                uid: user.uid,
                admin: user.admin,
            },
            source: None,
        };
        Ok((state, caller))
    }

    fn request(container: &str, image: &str, on_behalf_of: &str) -> CommitRequest {
        CommitRequest {
            container: Some(container.to_string()),
            image: image.to_string(),
            pause: true,
            compression: Default::default(),
            author: Some(on_behalf_of.to_string()),
            message: Some("wharf commit deployment".into()),
            changes: Vec::new(),
            check_only: false,
        }
    }

    fn failure(step: &str, message: impl Into<String>) -> CommitFailure {
        CommitFailure {
            step: step.into(),
            message: message.into(),
        }
    }
}

#[async_trait]
impl PodCommitter for ServerPodCommitter {
    async fn check(
        &self,
        pod: &Pod,
        container: &str,
        image: &str,
        on_behalf_of: &str,
    ) -> Result<MeasuredChanges, CommitFailure> {
        let (state, caller) = self.caller(on_behalf_of).await?;
        let project = pod.metadata.project.as_deref().unwrap_or_default();
        let request = Self::request(container, image, on_behalf_of);
        match check_pod(&state, &caller, project, &pod.metadata.name, &request).await {
            Ok(CommitProgress::Measured {
                bytes,
                quota_remaining_bytes,
                ..
            }) => Ok(MeasuredChanges {
                bytes,
                quota_remaining_bytes,
            }),
            Ok(other) => Err(Self::failure(
                "check",
                format!("the node answered the check with {other:?}"),
            )),
            Err(failure) => Err(Self::failure(&failure.step, failure.message)),
        }
    }

    async fn commit(
        &self,
        pod: &Pod,
        container: &str,
        image: &str,
        on_behalf_of: &str,
    ) -> Result<CommitResult, CommitFailure> {
        let (state, caller) = self.caller(on_behalf_of).await?;
        let project = pod.metadata.project.as_deref().unwrap_or_default();
        let request = Self::request(container, image, on_behalf_of);
        commit_pod(
            &state,
            &caller,
            project,
            &pod.metadata.name,
            &request,
            &|_| {},
        )
        .await
        .map_err(|failure| Self::failure(&failure.step, failure.message))
    }
}
