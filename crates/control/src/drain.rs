//! Draining a node: cordon it, then move its pods off as the orchestration
//! rules allow, as `kubectl drain` does.
//!
//! ```text
//! a pod no controller owns, without force --> refused, nothing changed
//! cordon (spec.unschedulable)
//!   --> each pod of a Deployment, one at a time: graceful deletion (its
//!       terminationGracePeriod; the agent runs preStop) --> the Deployment
//!       makes its replacement at once (a Terminating pod is no replica),
//!       placed elsewhere since the node is cordoned --> wait until the old
//!       pod is gone and the Deployment is fully available again --> next
//!   --> pods no controller owns (force only): graceful deletion, waited for
//! ```
//!
//! One pod at a time keeps every Deployment within one unavailable
//! replica whatever its `maxUnavailable`, and with `maxSurge` the
//! replacement runs before the old pod has stopped. Wharf has no
//! DaemonSets, so no pod is left in place.

use std::time::Duration;

use tokio::time::Instant;
use wharf_api::{Deployment, Node, Pod};

use crate::ControlError;
use crate::deployments::deployment_of;
use crate::objects::Objects;
use crate::termination::PodDeletion;

/// How a drain goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainOptions {
    /// Also evict pods no controller owns (they are not replaced).
    pub force: bool,
    /// Give up (the node stays cordoned) after this long.
    pub timeout: Duration,
    /// How often the store is read while waiting.
    pub poll: Duration,
}

impl Default for DrainOptions {
    fn default() -> DrainOptions {
        DrainOptions {
            force: false,
            timeout: Duration::from_secs(300),
            poll: Duration::from_millis(200),
        }
    }
}

/// One pod a drain moved off its node.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EvictedPod {
    /// `project/name`.
    pub pod: String,
    /// Its Deployment, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Milliseconds from the eviction until it was gone (and its
    /// Deployment available again).
    pub millis: u64,
}

/// Why a drain did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// Pods no controller owns, and no force: nothing was changed.
    #[error(
        "node {node} runs pods no controller owns ({}): they would not be replaced; drain with --force to delete them",
        pods.join(", ")
    )]
    Unowned {
        /// The node.
        node: String,
        /// `project/name` of each.
        pods: Vec<String>,
    },
    /// The timeout passed; the node stays cordoned.
    #[error(
        "drain of node {node} timed out after {}s with {} still there: {}",
        timeout.as_secs(), remaining.len(), remaining.join(", ")
    )]
    Timeout {
        /// The node.
        node: String,
        /// The timeout.
        timeout: Duration,
        /// Pods still on it.
        remaining: Vec<String>,
        /// What was evicted before.
        evicted: Vec<EvictedPod>,
    },
    /// The store or an object failed.
    #[error(transparent)]
    Control(#[from] ControlError),
}

fn full_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.project.as_deref().unwrap_or_default(),
        pod.metadata.name
    )
}

/// Pods of `node` in the order a drain evicts them: Deployments' first
/// (they are replaced), then the ones no controller owns.
pub fn eviction_order(node: &str, pods: Vec<Pod>) -> Vec<Pod> {
    let mut on_node: Vec<Pod> = pods
        .into_iter()
        .filter(|p| p.spec.node_name.as_deref() == Some(node))
        .collect();
    on_node.sort_by_key(|p| (deployment_of(p).is_none(), full_name(p)));
    on_node
}

impl Objects {
    /// Drains `node` (see the module docs); `progress` hears each pod as it
    /// goes. Returns the pods evicted, in order.
    pub async fn drain_node(
        &self,
        node: &str,
        options: DrainOptions,
        mut progress: impl FnMut(&EvictedPod),
    ) -> Result<Vec<EvictedPod>, DrainError> {
        self.require::<Node>(None, node).await?;
        let (pods, _) = self.list::<Pod>(None, None).await?;
        let pods = eviction_order(node, pods);
        let unowned: Vec<String> = pods
            .iter()
            .filter(|p| deployment_of(p).is_none())
            .map(full_name)
            .collect();
        if !unowned.is_empty() && !options.force {
            return Err(DrainError::Unowned {
                node: node.into(),
                pods: unowned,
            });
        }
        self.modify::<Node>(None, node, |n| {
            let change = !n.spec.unschedulable;
            n.spec.unschedulable = true;
            change
        })
        .await?;
        let deadline = Instant::now() + options.timeout;
        let mut evicted = Vec::new();
        for pod in &pods {
            let started = Instant::now();
            let moved = self.evict_and_wait(pod, deadline, options.poll).await?;
            if !moved {
                let remaining = self.pods_on(node).await?;
                return Err(DrainError::Timeout {
                    node: node.into(),
                    timeout: options.timeout,
                    remaining,
                    evicted,
                });
            }
            let done = EvictedPod {
                pod: full_name(pod),
                deployment: deployment_of(pod),
                millis: started.elapsed().as_millis() as u64,
            };
            progress(&done);
            evicted.push(done);
        }
        Ok(evicted)
    }

    /// `project/name` of the pods bound to `node`.
    async fn pods_on(&self, node: &str) -> Result<Vec<String>, ControlError> {
        let (pods, _) = self.list::<Pod>(None, None).await?;
        Ok(eviction_order(node, pods).iter().map(full_name).collect())
    }

    /// Deletes `pod` gracefully and waits until it is gone and its
    /// Deployment (if any) is available again; `false` if `deadline` passed.
    async fn evict_and_wait(
        &self,
        pod: &Pod,
        deadline: Instant,
        poll: Duration,
    ) -> Result<bool, ControlError> {
        let project = pod.metadata.project.as_deref().unwrap_or_default();
        let name = &pod.metadata.name;
        match self
            .request_pod_deletion(project, name, PodDeletion::Graceful(None))
            .await
        {
            Ok(_) | Err(ControlError::NotFound { .. }) => {}
            Err(err) => return Err(err),
        }
        let owner = deployment_of(pod);
        loop {
            let gone = self
                .get::<Pod>(Some(project), name)
                .await?
                .is_none_or(|p| p.metadata.uid != pod.metadata.uid);
            if gone && self.available_again(project, owner.as_deref()).await? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Whether Deployment `project/name` has all its replicas available
    /// (or is gone); true when there is none.
    async fn available_again(
        &self,
        project: &str,
        deployment: Option<&str>,
    ) -> Result<bool, ControlError> {
        let Some(name) = deployment else {
            return Ok(true);
        };
        Ok(self
            .get::<Deployment>(Some(project), name)
            .await?
            .is_none_or(|d| d.status.available_replicas >= d.spec.replicas))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_objects::{deployment, node, objects, pod, pod_exists};

    fn quick(timeout_ms: u64) -> DrainOptions {
        DrainOptions {
            force: false,
            timeout: Duration::from_millis(timeout_ms),
            poll: Duration::from_millis(10),
        }
    }

    /// Plays the agent and the deployment controller: confirms each
    /// Terminating pod stopped and marks its Deployment available.
    async fn confirm_terminating(objects: Objects) {
        loop {
            let (pods, _) = objects.list::<Pod>(None, None).await.unwrap();
            for p in pods.iter().filter(|p| p.metadata.is_terminating()) {
                let project = p.metadata.project.clone().unwrap();
                objects
                    .confirm_pod_stopped(&project, &p.metadata.name, &p.metadata.uid)
                    .await
                    .unwrap();
                let owner = deployment_of(p).unwrap();
                objects
                    .modify::<Deployment>(Some(&project), &owner, |d| {
                        d.status.available_replicas = d.spec.replicas;
                        true
                    })
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn evicts_deployment_pods_one_at_a_time_after_cordoning() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        node(&objects, "n1", true).await;
        node(&objects, "n2", true).await;
        let web = deployment(&objects, "web").await;
        let api = deployment(&objects, "api").await;
        let a = pod(&objects, &web, Some("n1")).await;
        let b = pod(&objects, &api, Some("n1")).await;
        let elsewhere = pod(&objects, &web, Some("n2")).await;
        let helper = tokio::spawn(confirm_terminating(objects.clone()));
        let mut heard = Vec::new();
        let evicted = objects
            .drain_node("n1", quick(5000), |e| heard.push(e.pod.clone()))
            .await
            .unwrap();
        helper.abort();
        let names: Vec<String> = evicted.iter().map(|e| e.pod.clone()).collect();
        let mut expected = vec![
            format!("shop/{}", a.metadata.name),
            format!("shop/{}", b.metadata.name),
        ];
        expected.sort();
        assert_eq!(names, expected);
        assert_eq!(heard, expected, "progress hears each pod as it goes");
        assert!(!pod_exists(&objects, &a.metadata.name).await);
        assert!(!pod_exists(&objects, &b.metadata.name).await);
        assert!(pod_exists(&objects, &elsewhere.metadata.name).await);
        let n1: Node = objects.require(None, "n1").await.unwrap();
        assert!(n1.spec.unschedulable, "a drained node stays cordoned");
        let n2: Node = objects.require(None, "n2").await.unwrap();
        assert!(!n2.spec.unschedulable);
    }

    #[tokio::test]
    async fn bare_pods_are_refused_without_force_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        node(&objects, "n1", true).await;
        let web = deployment(&objects, "web").await;
        let mut bare = pod(&objects, &web, Some("n1")).await;
        bare.metadata.owner_references.clear();
        let bare = objects.update(bare).await.unwrap();
        let err = objects
            .drain_node("n1", quick(1000), |_| {})
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("shop/{}", bare.metadata.name)) && text.contains("--force"),
            "{text}"
        );
        let n1: Node = objects.require(None, "n1").await.unwrap();
        assert!(!n1.spec.unschedulable, "a refused drain does not cordon");
        let kept: Pod = objects
            .require(Some("shop"), &bare.metadata.name)
            .await
            .unwrap();
        assert!(!kept.metadata.is_terminating());

        // With force the bare pod is deleted gracefully (its grace period).
        let mut forced = quick(200);
        forced.force = true;
        let err = objects.drain_node("n1", forced, |_| {}).await.unwrap_err();
        let DrainError::Timeout { remaining, .. } = err else {
            panic!("no agent confirms, so the drain times out: {err}");
        };
        assert_eq!(remaining, vec![format!("shop/{}", bare.metadata.name)]);
        let terminating: Pod = objects
            .require(Some("shop"), &bare.metadata.name)
            .await
            .unwrap();
        assert_eq!(
            terminating.metadata.deletion_grace_period_seconds,
            Some(7),
            "the pod's own terminationGracePeriodSeconds"
        );
    }

    #[tokio::test]
    async fn waits_for_the_deployment_to_be_available_again() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        node(&objects, "n1", true).await;
        let web = deployment(&objects, "web").await;
        let a = pod(&objects, &web, Some("n1")).await;
        // The pod goes, but its replacement never becomes available.
        let confirmer = objects.clone();
        let name = a.metadata.name.clone();
        let uid = a.metadata.uid.clone();
        let helper = tokio::spawn(async move {
            loop {
                let _ = confirmer.confirm_pod_stopped("shop", &name, &uid).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let err = objects
            .drain_node("n1", quick(300), |_| {})
            .await
            .unwrap_err();
        helper.abort();
        assert!(matches!(err, DrainError::Timeout { .. }), "{err}");
        assert!(!pod_exists(&objects, &a.metadata.name).await);
    }

    #[tokio::test]
    async fn unknown_node_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let err = objects
            .drain_node("ghost", quick(100), |_| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("ghost"), "{err}");
    }
}
