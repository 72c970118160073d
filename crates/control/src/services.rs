//! Services in the store, with their cluster IPs claimed by
//! compare-and-swap.
//!
//! ```text
//! /cluster/services/<project>/<name>     Service
//! /cluster/serviceips/<ip>               who holds a cluster IP
//! /cluster/endpoints/<project>/<name>    Endpoints (see `endpoints`)
//! ```
//!
//! As with pod addresses (`ipam`), a new service and its address key are
//! created in one transaction guarded by "both absent": two services can
//! never hold one address, and a refused service leaves no address held.
//! Deleting a service deletes its address key and endpoints in the same
//! transaction.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use wharf_api::{ClusterIpRequest, Endpoints, ObjectError, Service, Subnet};
use wharf_store::{StoreExt, Txn};

use crate::ControlError;
use crate::objects::{Objects, encode, key_of, revision_of};

/// Key prefix of the cluster IPs held.
pub const SERVICE_IPS: &str = "/cluster/serviceips/";

/// The service range when the server is given none.
pub const DEFAULT_SERVICE_RANGE: &str = "10.96.0.0/16";

/// Allocations retried at most this often (each retry means another
/// service took the address first).
const CLAIM_ATTEMPTS: usize = 64;

/// Key of `ip`'s holder.
pub fn service_ip_key(ip: Ipv4Addr) -> String {
    format!("{SERVICE_IPS}{ip}")
}

/// Who holds a cluster IP.
#[derive(Debug, Serialize, Deserialize)]
struct ServiceIpHolder {
    project: String,
    service: String,
}

impl Objects {
    /// Creates a service, allocating its cluster IP from `range` unless it
    /// asks for one (which must be free and in range) or is headless; or
    /// replaces the spec, labels and annotations of an existing one, whose
    /// cluster IP cannot change. `true` if it was created.
    pub async fn apply_service(
        &self,
        service: Service,
        range: Subnet,
    ) -> Result<(Service, bool), ControlError> {
        service.validate()?;
        let project = service.metadata.project.clone().ok_or_else(|| {
            ControlError::Invalid(ObjectError::Invalid {
                field: "metadata.namespace".into(),
                message: "a service belongs to a project".into(),
            })
        })?;
        for _ in 0..CLAIM_ATTEMPTS {
            let name = &service.metadata.name;
            match self.get::<Service>(Some(&project), name).await? {
                Some(current) => return self.replace_service(current, &service).await,
                None => {
                    if let Some(created) = self.create_service(&project, &service, range).await? {
                        return Ok((created, true));
                    }
                }
            }
        }
        Err(ControlError::Conflict(format!(
            "creating service {project}/{} kept losing races; try again",
            service.metadata.name
        )))
    }

    /// One attempt at storing a new service with its address; `None` when
    /// the service appeared or the address was taken meanwhile.
    async fn create_service(
        &self,
        project: &str,
        service: &Service,
        range: Subnet,
    ) -> Result<Option<Service>, ControlError> {
        let mut created = service.clone();
        let meta = &mut created.metadata;
        meta.uid = uuid::Uuid::new_v4().to_string();
        meta.created_at = crate::objects::now_millis();
        meta.generation = 1;
        meta.resource_version = None;
        meta.deletion_timestamp = None;
        let key = key_of::<Service>(Some(project), &service.metadata.name);
        let mut txn = Txn::new().when_revision(&key, 0);
        let ip = match service.spec.cluster_ip_request()? {
            ClusterIpRequest::Headless => None,
            ClusterIpRequest::Fixed(ip) => Some(self.check_requested_ip(ip, range).await?),
            ClusterIpRequest::Allocate => Some(self.free_service_ip(range).await?),
        };
        if let Some(ip) = ip {
            created.spec.cluster_ip = Some(ip.to_string());
            let holder = ServiceIpHolder {
                project: project.to_string(),
                service: service.metadata.name.clone(),
            };
            let ip_key = service_ip_key(ip);
            let value = serde_json::to_vec(&holder).expect("holders serialize");
            txn = txn.when_revision(&ip_key, 0).put(ip_key, value);
        }
        let response = self.store().txn(txn.put(key, encode(&created))).await?;
        if !response.succeeded {
            return Ok(None);
        }
        let stored: Service = self.require(Some(project), &service.metadata.name).await?;
        Ok(Some(stored))
    }

    /// An address a manifest asks for: in range, not the range's network
    /// or broadcast address, and free.
    async fn check_requested_ip(
        &self,
        ip: Ipv4Addr,
        range: Subnet,
    ) -> Result<Ipv4Addr, ControlError> {
        if !usable(range, ip) {
            return Err(ControlError::Invalid(ObjectError::Invalid {
                field: "spec.clusterIP".into(),
                message: format!("{ip} is not an address of the service range {range}"),
            }));
        }
        if let Some(kv) = self.store().get(&service_ip_key(ip)).await? {
            let holder: ServiceIpHolder = serde_json::from_slice(&kv.value).map_err(|e| {
                ControlError::Internal(format!("corrupt service IP at {}: {e}", kv.key))
            })?;
            return Err(ControlError::Conflict(format!(
                "cluster IP {ip} is held by service {}/{}",
                holder.project, holder.service
            )));
        }
        Ok(ip)
    }

    /// A free address of `range`, picked at random so that concurrent
    /// allocations rarely race for one.
    async fn free_service_ip(&self, range: Subnet) -> Result<Ipv4Addr, ControlError> {
        let held: BTreeSet<Ipv4Addr> = self
            .store()
            .list_all(SERVICE_IPS, 1000)
            .await?
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(SERVICE_IPS)?.parse().ok())
            .collect();
        let first = u32::from(range.network) + 1;
        let last = u32::from(range.broadcast()).saturating_sub(1);
        let size = u64::from(last.saturating_sub(first)) + 1;
        let in_range = held.iter().filter(|ip| usable(range, **ip)).count() as u64;
        if last < first || in_range >= size {
            return Err(ControlError::Conflict(format!(
                "the service range {range} has no free address"
            )));
        }
        let start = rand::random_range(first..=last);
        (start..=last)
            .chain(first..start)
            .map(Ipv4Addr::from)
            .find(|ip| !held.contains(ip))
            .ok_or_else(|| {
                ControlError::Conflict(format!("the service range {range} has no free address"))
            })
    }

    /// Replaces a stored service's spec and metadata, keeping its address.
    async fn replace_service(
        &self,
        current: Service,
        applied: &Service,
    ) -> Result<(Service, bool), ControlError> {
        let kept = current.spec.cluster_ip.clone();
        let asked = applied.spec.cluster_ip.as_deref().map(str::trim);
        if !matches!(asked, None | Some("")) && asked != kept.as_deref() {
            return Err(ControlError::Invalid(ObjectError::Invalid {
                field: "spec.clusterIP".into(),
                message: format!(
                    "the cluster IP of service {} is {} and cannot change \
                     (delete the service and create it again)",
                    current.metadata.name,
                    kept.as_deref().unwrap_or("unset")
                ),
            }));
        }
        let mut updated = current.clone();
        updated.spec = applied.spec.clone();
        updated.spec.cluster_ip = kept;
        updated.metadata.labels = applied.metadata.labels.clone();
        updated.metadata.annotations = applied.metadata.annotations.clone();
        if updated == current {
            return Ok((current, false));
        }
        updated.metadata.generation += 1;
        Ok((self.update(updated).await?, false))
    }

    /// Deletes a service, its address and its endpoints at once.
    pub async fn delete_service(&self, project: &str, name: &str) -> Result<Service, ControlError> {
        for _ in 0..CLAIM_ATTEMPTS {
            let service: Service = self.require(Some(project), name).await?;
            let key = key_of::<Service>(Some(project), name);
            let revision = revision_of(&service)?.unwrap_or(0);
            let mut txn = Txn::new()
                .when_revision(&key, revision)
                .delete(&key)
                .delete(key_of::<Endpoints>(Some(project), name));
            if let Some(ip) = service.cluster_ip() {
                txn = txn.delete(service_ip_key(ip));
            }
            if self.store().txn(txn).await?.succeeded {
                return Ok(service);
            }
        }
        Err(ControlError::Conflict(format!(
            "service {project}/{name} keeps changing"
        )))
    }

    /// Deletes every service of `project`, freeing their addresses.
    pub async fn delete_project_services(&self, project: &str) -> Result<usize, ControlError> {
        let (services, _) = self.list::<Service>(Some(project), None).await?;
        let mut count = 0;
        for service in services {
            match self.delete_service(project, &service.metadata.name).await {
                Ok(_) => count += 1,
                Err(ControlError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(count)
    }
}

/// Whether `ip` is an address of `range` a service may hold.
fn usable(range: Subnet, ip: Ipv4Addr) -> bool {
    range.contains(ip) && ip != range.network && ip != range.broadcast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_objects::objects;

    fn range() -> Subnet {
        Subnet::parse("10.195.0.0/29").unwrap()
    }

    fn service(name: &str, cluster_ip: Option<&str>) -> Service {
        let mut service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "project": "shop"},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}]},
        }))
        .unwrap();
        service.spec.cluster_ip = cluster_ip.map(str::to_string);
        service
    }

    async fn held(objects: &Objects) -> Vec<String> {
        let kvs = objects.store().list_all(SERVICE_IPS, 1000).await.unwrap();
        kvs.iter()
            .map(|kv| kv.key[SERVICE_IPS.len()..].to_string())
            .collect()
    }

    #[tokio::test]
    async fn allocates_keeps_and_frees_a_cluster_ip() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let (web, created) = objects
            .apply_service(service("web", None), range())
            .await
            .unwrap();
        assert!(created);
        let ip = web.cluster_ip().unwrap();
        assert!(usable(range(), ip), "{ip}");
        assert_eq!(held(&objects).await, [ip.to_string()]);
        // Applied again without an address, or with its own: same address.
        let mut changed = service("web", None);
        changed.spec.ports[0].port = 8080;
        let (again, created) = objects.apply_service(changed, range()).await.unwrap();
        assert!(!created);
        assert_eq!(again.cluster_ip(), Some(ip));
        assert_eq!(again.spec.ports[0].port, 8080);
        let same = service("web", Some(&ip.to_string()));
        objects.apply_service(same, range()).await.unwrap();
        let other = if ip == Ipv4Addr::new(10, 195, 0, 1) {
            "10.195.0.2"
        } else {
            "10.195.0.1"
        };
        let err = objects
            .apply_service(service("web", Some(other)), range())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("spec.clusterIP"), "{err}");
        objects.delete_service("shop", "web").await.unwrap();
        assert!(held(&objects).await.is_empty());
    }

    #[tokio::test]
    async fn a_requested_address_must_be_free_and_in_range() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let fixed = service("web", Some("10.195.0.3"));
        let (web, _) = objects.apply_service(fixed, range()).await.unwrap();
        assert_eq!(web.spec.cluster_ip.as_deref(), Some("10.195.0.3"));
        let taken = objects
            .apply_service(service("api", Some("10.195.0.3")), range())
            .await
            .unwrap_err();
        assert!(
            taken.to_string().contains("held by service shop/web"),
            "{taken}"
        );
        for outside in ["10.195.0.0", "10.195.0.7", "10.96.0.1"] {
            let err = objects
                .apply_service(service("api", Some(outside)), range())
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("service range"),
                "{outside}: {err}"
            );
        }
        // Nothing half-applied: the refused services do not exist.
        assert!(
            objects
                .get::<Service>(Some("shop"), "api")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(held(&objects).await, ["10.195.0.3"]);
    }

    #[tokio::test]
    async fn headless_services_hold_no_address() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let (db, _) = objects
            .apply_service(service("db", Some("None")), range())
            .await
            .unwrap();
        assert_eq!(db.spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(db.cluster_ip(), None);
        assert!(held(&objects).await.is_empty());
        objects.delete_service("shop", "db").await.unwrap();
    }

    #[tokio::test]
    async fn concurrent_services_fill_the_range_without_sharing_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        // A /29 has six usable addresses; eight services race for them.
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let objects = objects.clone();
                tokio::spawn(async move {
                    objects
                        .apply_service(service(&format!("s{i}"), None), range())
                        .await
                })
            })
            .collect();
        let mut ips = BTreeSet::new();
        let mut refused = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok((service, _)) => assert!(ips.insert(service.cluster_ip().unwrap())),
                Err(err) => {
                    assert!(err.to_string().contains("no free address"), "{err}");
                    refused += 1;
                }
            }
        }
        assert_eq!((ips.len(), refused), (6, 2));
        assert_eq!(held(&objects).await.len(), 6);
        let (services, _) = objects.list::<Service>(Some("shop"), None).await.unwrap();
        assert_eq!(services.len(), 6);
        // Deleting the project frees every address.
        assert_eq!(objects.delete_project_services("shop").await.unwrap(), 6);
        assert!(held(&objects).await.is_empty());
    }
}
