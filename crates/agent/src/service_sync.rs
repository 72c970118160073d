//! Keeps the node's [`ServiceView`] current: lists every service and
//! endpoints object, then follows their watch, publishing a new view in a
//! `watch` channel after each burst of changes. Readiness reaches the
//! node's rules as fast as the endpoints controller writes it (no polling
//! interval in between). A failed list or a broken watch starts over.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use wharf_api::{Endpoints, Service};

use crate::AgentError;
use crate::api::{NodeApi, ServiceChange};
use crate::service_view::ServiceView;

/// How long to wait before listing again after a failure.
const RETRY: Duration = Duration::from_secs(1);

/// Follows the services of node `node` forever, publishing to `views`.
pub(crate) async fn follow_services(
    api: Arc<dyn NodeApi>,
    node: String,
    views: watch::Sender<Arc<ServiceView>>,
) {
    loop {
        let Err(err) = follow_once(api.as_ref(), &node, &views).await;
        tracing::warn!(error = %err, node, "service watch failed; listing again");
        tokio::time::sleep(RETRY).await;
    }
}

/// One list and the watch after it, until the watch fails.
async fn follow_once(
    api: &dyn NodeApi,
    node: &str,
    views: &watch::Sender<Arc<ServiceView>>,
) -> Result<std::convert::Infallible, AgentError> {
    let (view, revision) = api.node_services(node).await?;
    let mut known = KnownServices::from(view);
    publish(views, &known);
    let mut changes = api.watch_services(node, revision).await?;
    loop {
        let Some(change) = changes.next().await else {
            return Err(AgentError::Unreachable("the service watch ended".into()));
        };
        known.apply(change?);
        // Changes that arrived together (a rollout moving many pods) make
        // one view, not one each.
        while let Some(Some(change)) = changes.next().now_or_never() {
            known.apply(change?);
        }
        publish(views, &known);
    }
}

/// Sends the view if it differs from the one published.
fn publish(views: &watch::Sender<Arc<ServiceView>>, known: &KnownServices) {
    let view = known.view();
    views.send_if_modified(|current| {
        let changed = **current != view;
        if changed {
            *current = Arc::new(view);
        }
        changed
    });
}

type Key = (String, String);

/// Services and endpoints by project and name.
#[derive(Default)]
struct KnownServices {
    services: BTreeMap<Key, Service>,
    endpoints: BTreeMap<Key, Endpoints>,
}

impl From<ServiceView> for KnownServices {
    fn from(view: ServiceView) -> KnownServices {
        KnownServices {
            services: view
                .services
                .into_iter()
                .map(|s| (key(&s.metadata), s))
                .collect(),
            endpoints: view
                .endpoints
                .into_iter()
                .map(|e| (key(&e.metadata), e))
                .collect(),
        }
    }
}

impl KnownServices {
    fn apply(&mut self, change: ServiceChange) {
        match change {
            ServiceChange::Service(service) => {
                self.services.insert(key(&service.metadata), *service);
            }
            ServiceChange::Endpoints(endpoints) => {
                self.endpoints.insert(key(&endpoints.metadata), *endpoints);
            }
            ServiceChange::ServiceDeleted { project, name } => {
                self.services.remove(&(project, name));
            }
            ServiceChange::EndpointsDeleted { project, name } => {
                self.endpoints.remove(&(project, name));
            }
        }
    }

    /// Sorted by project and name, so equal sets give equal views.
    fn view(&self) -> ServiceView {
        ServiceView {
            services: self.services.values().cloned().collect(),
            endpoints: self.endpoints.values().cloned().collect(),
        }
    }
}

fn key(meta: &wharf_api::ObjectMeta) -> Key {
    (meta.project.clone().unwrap_or_default(), meta.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(project: &str, name: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "project": project},
            "spec": {"ports": [{"port": 80}]},
        }))
        .unwrap()
    }

    #[test]
    fn changes_replace_and_remove_by_project_and_name_in_a_sorted_view() {
        let mut known = KnownServices::from(ServiceView {
            services: vec![service("shop", "web"), service("bank", "web")],
            endpoints: Vec::new(),
        });
        let mut changed = service("shop", "web");
        changed.spec.ports[0].port = 8080;
        known.apply(ServiceChange::Service(Box::new(changed.clone())));
        known.apply(ServiceChange::Service(Box::new(service("shop", "api"))));
        known.apply(ServiceChange::ServiceDeleted {
            project: "bank".into(),
            name: "web".into(),
        });
        let endpoints: Endpoints =
            serde_json::from_value(json!({"metadata": {"name": "api", "project": "shop"}}))
                .unwrap();
        known.apply(ServiceChange::Endpoints(Box::new(endpoints)));
        let view = known.view();
        let names: Vec<&str> = view
            .services
            .iter()
            .map(|s| s.metadata.name.as_str())
            .collect();
        assert_eq!(names, ["api", "web"]);
        assert_eq!(view.services[1], changed);
        assert_eq!(view.endpoints.len(), 1);
        known.apply(ServiceChange::EndpointsDeleted {
            project: "shop".into(),
            name: "api".into(),
        });
        assert!(known.view().endpoints.is_empty());
    }
}
