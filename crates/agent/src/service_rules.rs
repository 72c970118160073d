//! The node's service rules follow its [`ServiceView`]: each new view
//! becomes [`service_forwards`], written by a [`ServiceRules`] only when
//! they changed. The first view after the agent starts is always written,
//! so a table a previous run left (stale endpoints, deleted services) is
//! replaced whole. A failed write is logged and tried again; rules already
//! in the kernel keep forwarding meanwhile.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use wharf_net::NetError;
use wharf_net::services::{NftServices, ServiceForward};

use crate::service_forwards::service_forwards;
use crate::service_view::ServiceView;

/// How long a failed write waits before it is tried again (sooner if the
/// view changes).
pub(crate) const RULES_RETRY: Duration = Duration::from_secs(1);

/// Writes a node's service rules: [`NftServices`] for real, a fake in
/// tests.
#[async_trait]
pub trait ServiceRules: Send + Sync {
    /// Makes the node's service rules exactly `forwards`, atomically.
    async fn apply(&self, forwards: &[ServiceForward]) -> Result<(), NetError>;
}

#[async_trait]
impl ServiceRules for NftServices {
    async fn apply(&self, forwards: &[ServiceForward]) -> Result<(), NetError> {
        NftServices::apply(self, forwards).await
    }
}

/// Writes the rules of each view `views` publishes after the current one,
/// until the sender goes, and then publishes that view to `applied`: what
/// the node's name server answers from, so that a name resolves only once
/// its address is forwarded (a connection to a cluster IP without rules
/// leaves the node untranslated, and its tracking entry can outlive the
/// rules' arrival). The current value is skipped: it is the empty view
/// from before the first list, and writing it would drop a previous run's
/// rules before the real ones are known.
pub(crate) async fn keep_service_rules(
    mut views: watch::Receiver<Arc<ServiceView>>,
    rules: Arc<dyn ServiceRules>,
    retry: Duration,
    applied: watch::Sender<Arc<ServiceView>>,
) {
    let mut written: Option<Vec<ServiceForward>> = None;
    while views.changed().await.is_ok() {
        loop {
            let view = views.borrow_and_update().clone();
            let forwards = service_forwards(&view.services, &view.endpoints);
            if written.as_ref() == Some(&forwards) {
                applied.send_replace(view);
                break;
            }
            match rules.apply(&forwards).await {
                Ok(()) => {
                    tracing::debug!(forwards = %describe(&forwards), "service rules written");
                    written = Some(forwards);
                    applied.send_replace(view);
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "writing the service rules failed; trying again");
                    // A newer view is tried at once, the same one after `retry`.
                    let _ = tokio::time::timeout(retry, views.changed()).await;
                }
            }
        }
    }
}

/// `project/name:port -> ip:port ip:port; ...`, for the debug log.
fn describe(forwards: &[ServiceForward]) -> String {
    let forward = |f: &ServiceForward| {
        let endpoints: Vec<String> = f
            .endpoints
            .iter()
            .map(|(ip, port)| format!("{ip}:{port}"))
            .collect();
        format!("{} -> {}", f.name, endpoints.join(" "))
    };
    forwards.iter().map(forward).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    /// Records what it is asked to write; fails while `failing` is above 0.
    #[derive(Default)]
    struct Recorded {
        writes: Mutex<Vec<Vec<ServiceForward>>>,
        failing: Mutex<usize>,
    }

    #[async_trait]
    impl ServiceRules for Recorded {
        async fn apply(&self, forwards: &[ServiceForward]) -> Result<(), NetError> {
            let mut failing = self.failing.lock().unwrap();
            if *failing > 0 {
                *failing -= 1;
                return Err(NetError::InvalidConfig("nft: busy".into()));
            }
            self.writes.lock().unwrap().push(forwards.to_vec());
            Ok(())
        }
    }

    fn view(ready: &[&str]) -> Arc<ServiceView> {
        let addresses: Vec<_> = ready.iter().map(|ip| json!({"ip": ip})).collect();
        Arc::new(ServiceView {
            services: vec![
                serde_json::from_value(json!({
                    "metadata": {"name": "web", "project": "shop"},
                    "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
                }))
                .unwrap(),
            ],
            endpoints: vec![
                serde_json::from_value(json!({
                    "metadata": {"name": "web", "project": "shop"},
                    "subsets": [{"addresses": addresses, "ports": [{"port": 8080, "protocol": "TCP"}]}],
                }))
                .unwrap(),
            ],
        })
    }

    async fn writes_become(rules: &Recorded, count: usize) -> Vec<Vec<ServiceForward>> {
        for _ in 0..500 {
            if rules.writes.lock().unwrap().len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        rules.writes.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn rules_are_written_from_the_first_list_on_and_only_when_they_change() {
        let (sender, views) = watch::channel(Arc::default());
        let (applied, resolvable) = watch::channel(Arc::default());
        let rules = Arc::new(Recorded::default());
        *rules.failing.lock().unwrap() = 2;
        let task = tokio::spawn(keep_service_rules(
            views,
            rules.clone(),
            Duration::from_millis(100),
            applied,
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            rules.writes.lock().unwrap().is_empty(),
            "the empty view before the first list is not written"
        );
        // The first writes fail, and are tried again; until one succeeds
        // the name server does not see the view.
        let first = view(&["10.95.0.2", "10.95.0.3"]);
        sender.send_replace(first.clone());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(resolvable.borrow().services.is_empty(), "not yet written");
        let writes = writes_become(&rules, 1).await;
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0][0].endpoints.len(), 2);
        assert_eq!(*resolvable.borrow(), first, "resolvable once written");
        // The same forwards again (another object changed): nothing written.
        sender.send_replace(view(&["10.95.0.3", "10.95.0.2"]));
        // One endpoint unready: written.
        sender.send_replace(view(&["10.95.0.3"]));
        let writes = writes_become(&rules, 2).await;
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert_eq!(
            writes[1][0].endpoints,
            [("10.95.0.3".parse().unwrap(), 8080)]
        );
        assert_eq!(*resolvable.borrow(), view(&["10.95.0.3"]));
        drop(sender);
        task.await.unwrap();
    }
}
