//! The endpoints controller (leader only): keeps each service's
//! `Endpoints` equal to [`Endpoints::compute`] over its project's pods.
//!
//! Work is per project, driven by watches on pods and services (a pod's
//! readiness change reaches the endpoints within one store round trip,
//! with no polling). An endpoints object is written only with its service
//! present in the same transaction, so a service deleted meanwhile never
//! gets endpoints back.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::task::AbortOnDropHandle;
use wharf_api::{Endpoints, Pod, Service};
use wharf_store::Txn;

use crate::ControlError;
use crate::objects::{Change, Object, Objects, encode, key_of, revision_of};
use crate::queue::WorkQueue;

/// Pause before a failed project is reconciled again, or a watch restarted.
const RETRY_AFTER: Duration = Duration::from_millis(300);

/// Keeps the endpoints of every service current.
pub struct EndpointsController {
    objects: Objects,
    queue: WorkQueue<String>,
}

impl EndpointsController {
    /// A controller over `objects`.
    pub fn new(objects: Objects) -> Arc<EndpointsController> {
        Arc::new(EndpointsController {
            objects,
            queue: WorkQueue::new(),
        })
    }

    /// Runs until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let watchers = [
            tokio::spawn(self.clone().watch::<Pod>()),
            tokio::spawn(self.clone().watch::<Service>()),
        ];
        let _abort = watchers.map(AbortOnDropHandle::new);
        loop {
            for project in self.queue.take(16).await {
                if let Err(err) = self.reconcile(&project).await {
                    tracing::debug!(error = %err, project, "endpoints reconcile failed; retrying");
                    let this = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(RETRY_AFTER).await;
                        this.queue.add(project);
                    });
                }
            }
        }
    }

    /// Queues the project of every object of kind `T` there is, then of
    /// every change to one.
    async fn watch<T: Object>(self: Arc<Self>) {
        loop {
            let result: Result<(), ControlError> = async {
                let (objects, revision) = self.objects.list::<T>(None, None).await?;
                for object in objects {
                    self.queue
                        .add(object.metadata().project.clone().unwrap_or_default());
                }
                let mut changes = Box::pin(self.objects.watch::<T>(None, revision + 1).await?);
                while let Some(change) = changes.next().await {
                    let project = match change? {
                        Change::Added(o) | Change::Modified(o) => o.metadata().project.clone(),
                        Change::Deleted { project, .. } => project,
                    };
                    self.queue.add(project.unwrap_or_default());
                }
                Ok(())
            }
            .await;
            if let Err(err) = result {
                tracing::warn!(error = %err, kind = T::KIND, "watch for endpoints ended; restarting");
            }
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }

    /// Brings the endpoints of every service of `project` up to date;
    /// returns how many it wrote.
    pub async fn reconcile(&self, project: &str) -> Result<usize, ControlError> {
        let (services, _) = self.objects.list::<Service>(Some(project), None).await?;
        let (pods, _) = self.objects.list::<Pod>(Some(project), None).await?;
        let mut written = 0;
        for service in &services {
            let wanted = Endpoints::compute(service, &pods);
            let name = &service.metadata.name;
            let stored: Option<Endpoints> = self.objects.get(Some(project), name).await?;
            if stored.as_ref().is_some_and(|s| same(s, &wanted)) {
                continue;
            }
            self.write(project, service, stored, wanted).await?;
            written += 1;
        }
        Ok(written)
    }

    /// Stores `wanted` over `stored`, if the service is still there and the
    /// endpoints unchanged since read.
    async fn write(
        &self,
        project: &str,
        service: &Service,
        stored: Option<Endpoints>,
        mut wanted: Endpoints,
    ) -> Result<(), ControlError> {
        let name = &service.metadata.name;
        let revision = match &stored {
            Some(stored) => {
                wanted.metadata.uid = stored.metadata.uid.clone();
                wanted.metadata.created_at = stored.metadata.created_at;
                wanted.metadata.generation = stored.metadata.generation + 1;
                revision_of(stored)?.unwrap_or(0)
            }
            None => {
                wanted.metadata.uid = uuid::Uuid::new_v4().to_string();
                wanted.metadata.created_at = crate::objects::now_millis();
                wanted.metadata.generation = 1;
                0
            }
        };
        let key = key_of::<Endpoints>(Some(project), name);
        let service_key = key_of::<Service>(Some(project), name);
        let service_revision = revision_of(service)?.unwrap_or(0);
        let txn = Txn::new()
            .when_revision(service_key, service_revision)
            .when_revision(&key, revision)
            .put(key, encode(&wanted));
        if self.objects.store().txn(txn).await?.succeeded {
            Ok(())
        } else {
            Err(ControlError::Conflict(format!(
                "service {project}/{name} or its endpoints changed meanwhile"
            )))
        }
    }
}

/// Whether two endpoints say the same, whatever their bookkeeping.
fn same(a: &Endpoints, b: &Endpoints) -> bool {
    a.subsets == b.subsets && a.metadata.labels == b.metadata.labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_objects::{deployment, objects, pod};
    use wharf_api::{PodCondition, PodPhase, Subnet};

    async fn web_service(objects: &Objects, name: &str) -> Service {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "project": "shop"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        }))
        .unwrap();
        let range = Subnet::parse("10.195.0.0/24").unwrap();
        objects.apply_service(service, range).await.unwrap().0
    }

    async fn set_ready(objects: &Objects, name: &str, ip: &str, ready: bool) {
        objects
            .modify::<Pod>(Some("shop"), name, |pod| {
                pod.status.phase = PodPhase::Running;
                pod.status.pod_ip = Some(ip.into());
                pod.status.conditions = vec![PodCondition {
                    kind: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }];
                true
            })
            .await
            .unwrap();
    }

    async fn ready_ips(objects: &Objects, name: &str) -> Vec<String> {
        let endpoints: Option<Endpoints> = objects.get(Some("shop"), name).await.unwrap();
        endpoints
            .into_iter()
            .flat_map(|e| e.subsets)
            .flat_map(|s| s.addresses)
            .map(|a| a.ip)
            .collect()
    }

    #[tokio::test]
    async fn reconcile_writes_only_changes() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let web = deployment(&objects, "web").await;
        let a = pod(&objects, &web, None).await;
        set_ready(&objects, &a.metadata.name, "10.95.0.2", true).await;
        web_service(&objects, "web").await;
        web_service(&objects, "empty-selector").await;
        objects
            .modify::<Service>(Some("shop"), "empty-selector", |s| {
                s.spec.selector.clear();
                true
            })
            .await
            .unwrap();
        let controller = EndpointsController::new(objects.clone());
        assert_eq!(controller.reconcile("shop").await.unwrap(), 2);
        assert_eq!(ready_ips(&objects, "web").await, ["10.95.0.2"]);
        // A service selecting nothing has endpoints with no address.
        let empty: Endpoints = objects
            .require(Some("shop"), "empty-selector")
            .await
            .unwrap();
        assert!(empty.subsets.is_empty());
        assert_eq!(controller.reconcile("shop").await.unwrap(), 0);
        set_ready(&objects, &a.metadata.name, "10.95.0.2", false).await;
        assert_eq!(controller.reconcile("shop").await.unwrap(), 1);
        assert!(ready_ips(&objects, "web").await.is_empty());
    }

    #[tokio::test]
    async fn follows_readiness_within_a_second_by_watching() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let web = deployment(&objects, "web").await;
        let a = pod(&objects, &web, None).await;
        let b = pod(&objects, &web, None).await;
        set_ready(&objects, &a.metadata.name, "10.95.0.2", true).await;
        set_ready(&objects, &b.metadata.name, "10.95.0.3", false).await;
        web_service(&objects, "web").await;
        let _running = AbortOnDropHandle::new(tokio::spawn(
            EndpointsController::new(objects.clone()).run(),
        ));
        let within_a_second = async |want: &[&str]| {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            loop {
                if ready_ips(&objects, "web").await == want {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "never {want:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        within_a_second(&["10.95.0.2"]).await;
        set_ready(&objects, &b.metadata.name, "10.95.0.3", true).await;
        within_a_second(&["10.95.0.2", "10.95.0.3"]).await;
        set_ready(&objects, &a.metadata.name, "10.95.0.2", false).await;
        within_a_second(&["10.95.0.3"]).await;
        // Deleting the service takes its endpoints along, for good.
        objects.delete_service("shop", "web").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            objects
                .get::<Endpoints>(Some("shop"), "web")
                .await
                .unwrap()
                .is_none()
        );
    }
}
