//! The node's own health, as Kubernetes' `Ready=False`: the agent is alive
//! (its heartbeat goes on) but its container runtime fails, so pods bound
//! here would not start. Checked on a task of its own, so a runtime that
//! hangs delays no heartbeat; the reason goes out in the node's status at
//! once when it changes, and the control plane taints the node
//! `node.kubernetes.io/not-ready` (new pods go elsewhere, and its pods are
//! evicted after their toleration).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::runtime::Runtime;

/// How often the runtime is checked.
pub(crate) const HEALTH_EVERY: Duration = Duration::from_secs(5);

/// How long a check may take before the runtime counts as failing: a
/// runtime that does not answer in this long would not start pods either.
pub(crate) const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks `runtime` every `every`, publishing `None` while it is healthy
/// and why not otherwise; runs until the task is dropped.
pub(crate) async fn watch_health(
    runtime: Arc<dyn Runtime>,
    reason: watch::Sender<Option<String>>,
    every: Duration,
    timeout: Duration,
) {
    loop {
        let now = match tokio::time::timeout(timeout, runtime.health()).await {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(_) => Some(format!(
                "the container runtime did not answer a health check within {timeout:?}"
            )),
        };
        reason.send_if_modified(|current| {
            if *current == now {
                return false;
            }
            match &now {
                Some(why) => tracing::warn!(reason = %why, "node not ready"),
                None => tracing::info!("node ready again"),
            }
            *current = now;
            true
        });
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use wharf_api::Pod;

    use super::*;
    use crate::runtime::{Progress, Synced};

    /// A runtime whose health is set by the test; `None` hangs.
    struct Flaky(Mutex<Option<Result<(), String>>>);

    #[async_trait]
    impl Runtime for Flaky {
        async fn sync(&self, _pod: &Pod, _progress: Progress<'_>) -> Synced {
            unreachable!("not used")
        }
        async fn remove(&self, _project: &str, _name: &str, _uid: Option<&str>) {}
        async fn pods(&self) -> Vec<(String, String)> {
            Vec::new()
        }
        async fn health(&self) -> Result<(), String> {
            let now = self.0.lock().unwrap().clone();
            match now {
                Some(result) => result,
                None => std::future::pending().await,
            }
        }
    }

    async fn becomes(reasons: &mut watch::Receiver<Option<String>>, want: Option<&str>) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while reasons.borrow_and_update().as_deref() != want {
                reasons.changed().await.unwrap();
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the reason never became {want:?}"));
    }

    #[tokio::test]
    async fn a_failing_or_hanging_runtime_makes_the_node_not_ready_until_it_recovers() {
        let runtime = Arc::new(Flaky(Mutex::new(Some(Ok(())))));
        let (sender, mut reasons) = watch::channel(Some("unchecked".to_string()));
        let every = Duration::from_millis(10);
        let timeout = Duration::from_millis(100);
        let _task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(watch_health(
            runtime.clone(),
            sender,
            every,
            timeout,
        )));
        becomes(&mut reasons, None).await;

        *runtime.0.lock().unwrap() = Some(Err("runc list: exit status 1".into()));
        becomes(&mut reasons, Some("runc list: exit status 1")).await;

        *runtime.0.lock().unwrap() = None;
        let hung = "the container runtime did not answer a health check within 100ms";
        becomes(&mut reasons, Some(hung)).await;

        *runtime.0.lock().unwrap() = Some(Ok(()));
        becomes(&mut reasons, None).await;
    }
}
