//! Typed cluster objects in the `Store`.
//!
//! ```text
//! /cluster/nodes/<name>                     Node
//! /cluster/deployments/<project>/<name>     Deployment
//! /cluster/pods/<project>/<name>            Pod
//! /cluster/events/<project>/<name>          Event (bound to a lease: expires)
//! /cluster/allocations/<node>               Allocation (requests of the pods bound there)
//! /cluster/heartbeats/<node>                bound to the node agent's lease
//! /cluster/ippools/<pool>                   IpPool (claims: see `ipam`)
//! /cluster/configmaps/<project>/<name>      ConfigMap
//! /cluster/secrets/<project>/<name>         Secret, data sealed (see `config`)
//! /cluster/claims/<project>/<name>          PersistentVolumeClaim (see `claims`)
//! /cluster/services/<project>/<name>        Service (cluster IPs: see `services`)
//! /cluster/endpoints/<project>/<name>       Endpoints of the service of that name
//! /cluster/hpas/<project>/<name>            HorizontalPodAutoscaler (see `autoscalers`)
//! /cluster/alertrules/[<project>/]<name>    AlertRule (no project: cluster-wide)
//! /cluster/silences/[<project>/]<name>      Silence (no project: cluster-wide)
//! /cluster/alertreceivers/[<project>/]<name> AlertReceiver, secret sealed
//! /cluster/clusters/<name>                  Cluster (the inventory: physical, vm, cloud)
//! /cluster/pools/<name>                     Pool (service pool of a cluster)
//! /cluster/machineclasses/<name>            MachineClass
//! /cluster/poolgrants/<pool>.<project>      PoolGrant (a project's right to a pool)
//! /cluster/costbudgets/<project>            CostBudget (a project's spend per period)
//! /cluster/componentcommits/<project>/<name> ComponentCommit (see `component_commit`)
//! /cluster/preheatpolicies/<project>/<name> PreheatPolicy (see `wharf_api::preheat`)
//! /cluster/preheats/<project>/<name>        Preheat (one job: an image warmed on nodes)
//! ```
//!
//! An object's `resourceVersion` is the store revision of its last write;
//! updates name it and fail if the object changed since.

use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use wharf_api::component_commit::ComponentCommit;
use wharf_api::preheat::{Preheat, PreheatPolicy};
use wharf_api::{
    AlertReceiver, AlertRule, Cluster, ConfigMap, CostBudget, Deployment, DeploymentRevision,
    Endpoints, Event, HorizontalPodAutoscaler, IpPool, LabelSelector, MachineClass, Node,
    ObjectMeta, PersistentVolumeClaim, Pod, Pool, PoolGrant, Service, Silence,
};
use wharf_store::{EventKind, KeyValue, Revision, Store, StoreExt, Txn};

use crate::ControlError;

/// A kind of cluster object stored under its own prefix.
pub trait Object: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The kind's name, as in `kind:`.
    const KIND: &'static str;
    /// Store prefix of the kind.
    const PREFIX: &'static str;
    /// Whether objects of this kind live in a project.
    const NAMESPACED: bool;
    /// The metadata.
    fn metadata(&self) -> &ObjectMeta;
    /// The metadata, to change.
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
}

macro_rules! object_kind {
    ($type:ty, $kind:literal, $prefix:literal, $namespaced:literal) => {
        impl Object for $type {
            const KIND: &'static str = $kind;
            const PREFIX: &'static str = $prefix;
            const NAMESPACED: bool = $namespaced;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

object_kind!(Node, "Node", "/cluster/nodes/", false);
object_kind!(Deployment, "Deployment", "/cluster/deployments/", true);
object_kind!(Pod, "Pod", "/cluster/pods/", true);
object_kind!(Event, "Event", "/cluster/events/", true);
object_kind!(IpPool, "IpPool", "/cluster/ippools/", false);
object_kind!(Cluster, "Cluster", "/cluster/clusters/", false);
object_kind!(Pool, "Pool", "/cluster/pools/", false);
object_kind!(
    MachineClass,
    "MachineClass",
    "/cluster/machineclasses/",
    false
);
object_kind!(PoolGrant, "PoolGrant", "/cluster/poolgrants/", false);
object_kind!(CostBudget, "CostBudget", "/cluster/costbudgets/", false);
object_kind!(ConfigMap, "ConfigMap", "/cluster/configmaps/", true);
object_kind!(
    PersistentVolumeClaim,
    "PersistentVolumeClaim",
    "/cluster/claims/",
    true
);
object_kind!(Service, "Service", "/cluster/services/", true);
object_kind!(Endpoints, "Endpoints", "/cluster/endpoints/", true);
object_kind!(
    HorizontalPodAutoscaler,
    "HorizontalPodAutoscaler",
    "/cluster/hpas/",
    true
);
object_kind!(
    ComponentCommit,
    "ComponentCommit",
    "/cluster/componentcommits/",
    true
);
object_kind!(
    DeploymentRevision,
    "DeploymentRevision",
    "/cluster/revisions/",
    true
);
object_kind!(
    PreheatPolicy,
    "PreheatPolicy",
    "/cluster/preheatpolicies/",
    true
);
object_kind!(Preheat, "Preheat", "/cluster/preheats/", true);

// Alerting objects are namespaced, and those without a project are the
// cluster's: their keys sit directly under the prefix, which no project's
// key does (names have no '/').
object_kind!(AlertRule, "AlertRule", "/cluster/alertrules/", true);
object_kind!(Silence, "Silence", "/cluster/silences/", true);
object_kind!(
    AlertReceiver,
    "AlertReceiver",
    "/cluster/alertreceivers/",
    true
);

/// The store key of object `name` (in `project`, for namespaced kinds).
pub fn key_of<T: Object>(project: Option<&str>, name: &str) -> String {
    match (T::NAMESPACED, project) {
        (true, Some(project)) => format!("{}{project}/{name}", T::PREFIX),
        _ => format!("{}{name}", T::PREFIX),
    }
}

/// The key prefix listing a kind, in one project or everywhere.
pub fn prefix_of<T: Object>(project: Option<&str>) -> String {
    match (T::NAMESPACED, project) {
        (true, Some(project)) => format!("{}{project}/", T::PREFIX),
        _ => T::PREFIX.to_string(),
    }
}

fn display_name<T: Object>(project: Option<&str>, name: &str) -> String {
    match (T::NAMESPACED, project) {
        (true, Some(project)) => format!("{project}/{name}"),
        _ => name.to_string(),
    }
}

/// Decodes a stored object and stamps its resource version.
pub fn decode<T: Object>(kv: &KeyValue) -> Result<T, ControlError> {
    let mut object: T = serde_json::from_slice(&kv.value)
        .map_err(|e| ControlError::Internal(format!("corrupt {} at {}: {e}", T::KIND, kv.key)))?;
    object.metadata_mut().resource_version = Some(kv.mod_revision.to_string());
    Ok(object)
}

/// Encodes an object for storage (without its resource version, which the
/// store's revision supplies).
pub fn encode<T: Object>(object: &T) -> Vec<u8> {
    let mut object = object.clone();
    object.metadata_mut().resource_version = None;
    serde_json::to_vec(&object).expect("objects serialize")
}

/// The revision an object was read at, from its resource version.
pub fn revision_of<T: Object>(object: &T) -> Result<Option<Revision>, ControlError> {
    match &object.metadata().resource_version {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| ControlError::Conflict(format!("invalid resourceVersion {text:?}"))),
    }
}

/// Takes the labels and annotations of an applied manifest onto the stored
/// object's metadata (the rest of it is the cluster's); whether they changed.
pub(crate) fn take_applied_metadata(current: &mut ObjectMeta, applied: &ObjectMeta) -> bool {
    let changed = current.labels != applied.labels || current.annotations != applied.annotations;
    current.labels = applied.labels.clone();
    current.annotations = applied.annotations.clone();
    changed
}

/// A change seen by [`Objects::watch`].
#[derive(Clone, Debug)]
pub enum Change<T> {
    /// Created.
    Added(T),
    /// Changed.
    Modified(T),
    /// Deleted; only the key's project and name are known.
    Deleted {
        /// Project of the deleted object.
        project: Option<String>,
        /// Name of the deleted object.
        name: String,
        /// Revision of the deletion.
        revision: Revision,
    },
}

/// Typed access to cluster objects.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn Store>,
}

pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Objects {
    /// Objects kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Objects {
        Objects { store }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// One object, if it exists.
    pub async fn get<T: Object>(
        &self,
        project: Option<&str>,
        name: &str,
    ) -> Result<Option<T>, ControlError> {
        match self.store.get(&key_of::<T>(project, name)).await? {
            Some(kv) => Ok(Some(decode(&kv)?)),
            None => Ok(None),
        }
    }

    /// One object, or `NotFound`.
    pub async fn require<T: Object>(
        &self,
        project: Option<&str>,
        name: &str,
    ) -> Result<T, ControlError> {
        self.get(project, name)
            .await?
            .ok_or_else(|| ControlError::NotFound {
                kind: T::KIND,
                name: display_name::<T>(project, name),
            })
    }

    /// Objects of a kind (in one project, or all), optionally filtered by
    /// labels, with the revision the listing reflects (to watch from).
    pub async fn list<T: Object>(
        &self,
        project: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<(Vec<T>, Revision), ControlError> {
        self.list_named::<T>(project, "", selector).await
    }

    /// Like [`list`](Objects::list), only objects whose names start with
    /// `name_prefix`: a key range, so it reads only those.
    pub async fn list_named<T: Object>(
        &self,
        project: Option<&str>,
        name_prefix: &str,
        selector: Option<&LabelSelector>,
    ) -> Result<(Vec<T>, Revision), ControlError> {
        let prefix = format!("{}{name_prefix}", prefix_of::<T>(project));
        let (items, revision) = self.store.list_all_from(&prefix, 1000).await?;
        let mut objects = Vec::new();
        for kv in &items {
            let object: T = decode(kv)?;
            if selector.is_none_or(|s| s.matches(&object.metadata().labels)) {
                objects.push(object);
            }
        }
        Ok((objects, revision))
    }

    /// Stores a new object: assigns uid, creation time, generation 1; a
    /// new object is not being deleted, whatever its manifest said.
    pub async fn create<T: Object>(&self, mut object: T) -> Result<T, ControlError> {
        let meta = object.metadata_mut();
        meta.uid = uuid::Uuid::new_v4().to_string();
        meta.created_at = now_millis();
        meta.generation = 1;
        meta.deletion_timestamp = None;
        meta.deletion_grace_period_seconds = None;
        let project = meta.project.clone();
        let name = meta.name.clone();
        let key = key_of::<T>(project.as_deref(), &name);
        match self.store.create(&key, encode(&object)).await? {
            Some(revision) => {
                object.metadata_mut().resource_version = Some(revision.to_string());
                Ok(object)
            }
            None => Err(ControlError::Conflict(format!(
                "{} {} already exists",
                T::KIND,
                display_name::<T>(project.as_deref(), &name)
            ))),
        }
    }

    /// Replaces an object if it is still at the revision in its
    /// `resourceVersion` (which must be set).
    pub async fn update<T: Object>(&self, mut object: T) -> Result<T, ControlError> {
        let revision = revision_of(&object)?.ok_or_else(|| {
            ControlError::Conflict("an update must name the resourceVersion it was read at".into())
        })?;
        let meta = object.metadata();
        let key = key_of::<T>(meta.project.as_deref(), &meta.name);
        match self.store.put_if(&key, encode(&object), revision).await? {
            Some(revision) => {
                object.metadata_mut().resource_version = Some(revision.to_string());
                Ok(object)
            }
            None => Err(ControlError::Conflict(format!(
                "{} {} changed since resourceVersion {revision}; read it again",
                T::KIND,
                meta.name
            ))),
        }
    }

    /// Reads, changes and writes back an object, retrying on conflicts.
    /// `change` returns `false` to leave the object as it is.
    pub async fn modify<T: Object>(
        &self,
        project: Option<&str>,
        name: &str,
        mut change: impl FnMut(&mut T) -> bool,
    ) -> Result<T, ControlError> {
        for _ in 0..32 {
            let mut object: T = self.require(project, name).await?;
            if !change(&mut object) {
                return Ok(object);
            }
            match self.update(object).await {
                Err(ControlError::Conflict(_)) => continue,
                other => return other,
            }
        }
        Err(ControlError::Conflict(format!(
            "{} {name} keeps changing",
            T::KIND
        )))
    }

    /// Creates `object` if no object of its name exists, else changes the
    /// stored one with `change` (retrying on conflicts; `false` leaves it);
    /// `true` if it was created. What `apply` does for every kind.
    pub async fn create_or_modify<T: Object>(
        &self,
        object: T,
        change: impl FnMut(&mut T) -> bool,
    ) -> Result<(T, bool), ControlError> {
        let project = object.metadata().project.clone();
        let name = object.metadata().name.clone();
        if self.get::<T>(project.as_deref(), &name).await?.is_none() {
            match self.create(object).await {
                Ok(created) => return Ok((created, true)),
                // Created meanwhile: change that one.
                Err(ControlError::Conflict(_)) => {}
                Err(err) => return Err(err),
            }
        }
        let changed = self.modify::<T>(project.as_deref(), &name, change).await?;
        Ok((changed, false))
    }

    /// Deletes every object of a kind in `project`; returns how many.
    pub async fn delete_in_project<T: Object>(&self, project: &str) -> Result<usize, ControlError> {
        let (objects, _) = self.list::<T>(Some(project), None).await?;
        let mut count = 0;
        for object in objects {
            match self
                .delete::<T>(Some(project), &object.metadata().name, None)
                .await
            {
                Ok(_) => count += 1,
                Err(ControlError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(count)
    }

    /// Deletes an object: only if still at `expected` revision, when given;
    /// otherwise whatever version is there (a concurrent status update by a
    /// controller does not make the delete fail), returning the one deleted.
    pub async fn delete<T: Object>(
        &self,
        project: Option<&str>,
        name: &str,
        expected: Option<Revision>,
    ) -> Result<T, ControlError> {
        let key = key_of::<T>(project, name);
        for _ in 0..32 {
            let current: T = self.require(project, name).await?;
            let revision = expected.unwrap_or(revision_of(&current)?.unwrap_or(0));
            if self
                .store
                .txn(Txn::new().when_revision(&key, revision).delete(&key))
                .await?
                .succeeded
            {
                return Ok(current);
            }
            if expected.is_some() {
                break;
            }
        }
        Err(ControlError::Conflict(format!(
            "{} {name} changed; read it again",
            T::KIND
        )))
    }

    /// Changes to a kind (in one project, or all) from revision `from`
    /// (0: from now on).
    pub async fn watch<T: Object>(
        &self,
        project: Option<&str>,
        from: Revision,
    ) -> Result<impl Stream<Item = Result<Change<T>, ControlError>> + Send + use<T>, ControlError>
    {
        let prefix = prefix_of::<T>(project);
        let stream = self.store.watch(&prefix, from).await?;
        Ok(stream.map(move |event| {
            let event = event?;
            match event.kind {
                EventKind::Put => {
                    let object = decode::<T>(&event.kv)?;
                    Ok(if event.kv.create_revision == event.kv.mod_revision {
                        Change::Added(object)
                    } else {
                        Change::Modified(object)
                    })
                }
                EventKind::Delete => {
                    let rest = event
                        .kv
                        .key
                        .strip_prefix(T::PREFIX)
                        .unwrap_or(&event.kv.key);
                    let (project, name) = match (T::NAMESPACED, rest.split_once('/')) {
                        (true, Some((project, name))) => {
                            (Some(project.to_string()), name.to_string())
                        }
                        _ => (None, rest.to_string()),
                    };
                    Ok(Change::Deleted {
                        project,
                        name,
                        revision: event.kv.mod_revision,
                    })
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_objects::objects;

    #[tokio::test]
    async fn objects_stored_by_earlier_versions_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        // As the previous version wrote a pod: `createdAt` in milliseconds.
        let old = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-1","project":"shop",
            "uid":"0b7c","createdAt":1735787045123,"generation":1},
            "spec":{"containers":[{"name":"web","image":"shop/web:1"}]}}"#;
        let key = key_of::<Pod>(Some("shop"), "web-1");
        objects
            .store()
            .txn(Txn::new().put(&key, old.as_bytes().to_vec()))
            .await
            .unwrap();
        let pod: Pod = objects.require(Some("shop"), "web-1").await.unwrap();
        assert_eq!(pod.metadata.created_at, 1_735_787_045_123);
        assert!(!pod.metadata.is_terminating());
        let (listed, _) = objects.list::<Pod>(None, None).await.unwrap();
        assert_eq!(listed.len(), 1);
        // Written back, it takes the new names.
        let updated = objects
            .modify::<Pod>(Some("shop"), "web-1", |pod| {
                pod.metadata.labels.insert("app".into(), "web".into());
                true
            })
            .await
            .unwrap();
        let stored = objects.store().get(&key).await.unwrap().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!(
            json["metadata"]["creationTimestamp"],
            "2025-01-02T03:04:05Z"
        );
        assert!(json["metadata"].get("createdAt").is_none());
        assert_eq!(updated.metadata.uid, "0b7c");
    }
}
