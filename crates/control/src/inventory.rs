//! The inventory kinds in the store: [`Cluster`]s, their [`Pool`]s and
//! the [`MachineClass`]es pools allow. Writes check what the object names
//! exists (a pool's cluster and classes); deletes refuse to orphan
//! anything (a cluster with pools, a pool with nodes, a class in use).
//! Pool status (nodes, ready nodes) is counted from the nodes when read,
//! so it is never stale.

use wharf_api::{
    Cluster, InitProfile, LABEL_MACHINE_CLASS, LABEL_POOL, LabelSelector, MachineClass, Node,
    ObjectError, Pool, PoolStatus,
};

use crate::ControlError;
use crate::objects::{Object, Objects, now_millis, take_applied_metadata};
use crate::pool_membership::apply_initialization;

/// How an inventory object is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InventoryWrite {
    /// A new object: one of that name already there is a conflict.
    Create,
    /// A replacement of the version named by `metadata.resourceVersion`.
    Update,
    /// Created, or the stored one's spec, labels and annotations replaced
    /// (`wharf apply`).
    Apply,
}

/// A kind of the inventory: its spec is what writes replace.
trait InventoryKind: Object {
    type Spec: Clone + PartialEq + Send + Sync;
    fn spec(&self) -> &Self::Spec;
    fn spec_mut(&mut self) -> &mut Self::Spec;
}

macro_rules! inventory_kind {
    ($type:ty, $spec:ty) => {
        impl InventoryKind for $type {
            type Spec = $spec;
            fn spec(&self) -> &$spec {
                &self.spec
            }
            fn spec_mut(&mut self) -> &mut $spec {
                &mut self.spec
            }
        }
    };
}

inventory_kind!(Cluster, wharf_api::ClusterSpec);
inventory_kind!(Pool, wharf_api::PoolSpec);
inventory_kind!(MachineClass, wharf_api::MachineClassSpec);

impl Objects {
    /// Writes a cluster; `true` if it was created.
    pub async fn write_cluster(
        &self,
        cluster: Cluster,
        how: InventoryWrite,
    ) -> Result<(Cluster, bool), ControlError> {
        cluster.validate()?;
        self.write_inventory(cluster, how).await
    }

    /// Writes a pool whose cluster and machine classes exist; `true` if it
    /// was created. Its status is the cluster's, never the writer's.
    pub async fn write_pool(
        &self,
        mut pool: Pool,
        how: InventoryWrite,
    ) -> Result<(Pool, bool), ControlError> {
        pool.validate()?;
        self.check_pool_references(&pool).await?;
        pool.status = PoolStatus::default();
        let (pool, created) = self.write_inventory(pool, how).await?;
        self.reinitialize_pool_nodes(&pool).await?;
        Ok((self.with_pool_status(pool).await?, created))
    }

    /// Brings the pool's nodes in step with its (maybe changed) init
    /// profile: a node that has not run the current profile is tainted
    /// not-initialized again until its agent reports it has.
    async fn reinitialize_pool_nodes(&self, pool: &Pool) -> Result<(), ControlError> {
        let hash = pool.spec.init.as_ref().map(InitProfile::hash);
        let nodes = self.nodes_labelled(LABEL_POOL, &pool.metadata.name).await?;
        for node in nodes {
            self.modify::<Node>(None, &node.metadata.name, |node| {
                let before = (node.spec.taints.clone(), node.status.conditions.clone());
                apply_initialization(node, hash.as_deref(), now_millis());
                before != (node.spec.taints.clone(), node.status.conditions.clone())
            })
            .await?;
        }
        Ok(())
    }

    /// Writes a machine class; `true` if it was created.
    pub async fn write_machine_class(
        &self,
        class: MachineClass,
        how: InventoryWrite,
    ) -> Result<(MachineClass, bool), ControlError> {
        class.validate()?;
        self.write_inventory(class, how).await
    }

    /// A pool names only what exists: an unknown cluster or class is named
    /// in the error, and nothing is stored.
    async fn check_pool_references(&self, pool: &Pool) -> Result<(), ControlError> {
        if self
            .get::<Cluster>(None, &pool.spec.cluster)
            .await?
            .is_none()
        {
            return Err(ObjectError::Invalid {
                field: "spec.cluster".into(),
                message: format!("cluster {} does not exist", pool.spec.cluster),
            }
            .into());
        }
        for class in pool.named_classes() {
            if self.get::<MachineClass>(None, class).await?.is_none() {
                return Err(ObjectError::Invalid {
                    field: "spec.machineClasses".into(),
                    message: format!("unknown machine class {class}: create it first"),
                }
                .into());
            }
        }
        Ok(())
    }

    async fn write_inventory<T: InventoryKind>(
        &self,
        mut object: T,
        how: InventoryWrite,
    ) -> Result<(T, bool), ControlError> {
        let meta = object.metadata_mut();
        meta.project = None;
        match how {
            InventoryWrite::Create => {
                meta.resource_version = None;
                Ok((self.create(object).await?, true))
            }
            InventoryWrite::Update => {
                let name = meta.name.clone();
                let stored: T = self.require(None, &name).await?;
                let spec_changed = stored.spec() != object.spec();
                // Identity and history are the store's, not the writer's.
                let kept = stored.metadata();
                let meta = object.metadata_mut();
                meta.uid = kept.uid.clone();
                meta.created_at = kept.created_at;
                meta.generation = kept.generation + u64::from(spec_changed);
                Ok((self.update(object).await?, false))
            }
            InventoryWrite::Apply => {
                let applied = object.clone();
                self.create_or_modify(object, |current: &mut T| {
                    let spec_changed = current.spec() != applied.spec();
                    if spec_changed {
                        *current.spec_mut() = applied.spec().clone();
                        current.metadata_mut().generation += 1;
                    }
                    take_applied_metadata(current.metadata_mut(), applied.metadata())
                        || spec_changed
                })
                .await
            }
        }
    }

    /// Deletes a cluster no pool belongs to.
    pub async fn delete_cluster(&self, name: &str) -> Result<Cluster, ControlError> {
        self.require::<Cluster>(None, name).await?;
        let (pools, _) = self.list::<Pool>(None, None).await?;
        let users = names(pools.iter().filter(|p| p.spec.cluster == name));
        if !users.is_empty() {
            return Err(ControlError::Conflict(format!(
                "cluster {name} still has pools {users}: delete them first"
            )));
        }
        self.delete(None, name, None).await
    }

    /// Deletes a pool no node is in.
    pub async fn delete_pool(&self, name: &str) -> Result<Pool, ControlError> {
        self.require::<Pool>(None, name).await?;
        let nodes = self.nodes_labelled(LABEL_POOL, name).await?;
        if !nodes.is_empty() {
            return Err(ControlError::Conflict(format!(
                "pool {name} still has nodes {}: decommission them first",
                names(nodes.iter())
            )));
        }
        self.delete(None, name, None).await
    }

    /// Deletes a machine class no pool allows and no node is of.
    pub async fn delete_machine_class(&self, name: &str) -> Result<MachineClass, ControlError> {
        self.require::<MachineClass>(None, name).await?;
        let (pools, _) = self.list::<Pool>(None, None).await?;
        let pools = names(pools.iter().filter(|p| p.named_classes().contains(name)));
        if !pools.is_empty() {
            return Err(ControlError::Conflict(format!(
                "machine class {name} is used by pools {pools}: remove it from them first"
            )));
        }
        let nodes = self.nodes_labelled(LABEL_MACHINE_CLASS, name).await?;
        if !nodes.is_empty() {
            return Err(ControlError::Conflict(format!(
                "machine class {name} is used by nodes {}: decommission them first",
                names(nodes.iter())
            )));
        }
        self.delete(None, name, None).await
    }

    async fn nodes_labelled(&self, key: &str, value: &str) -> Result<Vec<Node>, ControlError> {
        let selector = LabelSelector {
            match_labels: [(key.to_string(), value.to_string())].into(),
            ..LabelSelector::default()
        };
        Ok(self.list::<Node>(None, Some(&selector)).await?.0)
    }

    /// The pool with its status counted from the nodes now in it.
    pub async fn with_pool_status(&self, mut pool: Pool) -> Result<Pool, ControlError> {
        let nodes = self.nodes_labelled(LABEL_POOL, &pool.metadata.name).await?;
        pool.status = pool_status(&nodes);
        Ok(pool)
    }

    /// Every pool, each with its status (one listing of the nodes).
    pub async fn pools_with_status(&self) -> Result<Vec<Pool>, ControlError> {
        let (mut pools, _) = self.list::<Pool>(None, None).await?;
        let (nodes, _) = self.list::<Node>(None, None).await?;
        for pool in &mut pools {
            let name = Some(&pool.metadata.name);
            let members: Vec<Node> = nodes
                .iter()
                .filter(|n| n.metadata.labels.get(LABEL_POOL) == name)
                .cloned()
                .collect();
            pool.status = pool_status(&members);
        }
        Ok(pools)
    }
}

fn pool_status(nodes: &[Node]) -> PoolStatus {
    PoolStatus {
        nodes: nodes.len() as u32,
        ready_nodes: nodes.iter().filter(|n| n.status.ready).count() as u32,
    }
}

/// `a, b, c`: the names of objects, for a refusal.
fn names<'a, T: Object>(objects: impl Iterator<Item = &'a T>) -> String {
    objects
        .map(|o| o.metadata().name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use wharf_api::Tier;

    use super::*;
    use crate::test_objects;

    fn objects() -> (tempfile::TempDir, Objects) {
        let dir = tempfile::tempdir().unwrap();
        let objects = test_objects::objects(&dir);
        (dir, objects)
    }

    fn cluster(name: &str) -> Cluster {
        let mut cluster = Cluster::default();
        cluster.metadata.name = name.into();
        cluster
    }

    fn class(name: &str) -> MachineClass {
        let mut class = MachineClass::default();
        class.metadata.name = name.into();
        class.spec.price_per_hour = 0.3;
        class.spec.tier = Tier::Core;
        class
    }

    fn pool(name: &str, cluster: &str, classes: &[&str]) -> Pool {
        let mut pool = Pool::default();
        pool.metadata.name = name.into();
        pool.spec.cluster = cluster.into();
        pool.spec.machine_classes = classes.iter().map(|c| c.to_string()).collect();
        pool
    }

    #[tokio::test]
    async fn a_pool_names_only_an_existing_cluster_and_classes() {
        let (_dir, objects) = objects();
        let refused = objects
            .write_pool(pool("core", "bj", &[]), InventoryWrite::Apply)
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("cluster bj does not exist"));
        objects
            .write_cluster(cluster("bj"), InventoryWrite::Create)
            .await
            .unwrap();
        let refused = objects
            .write_pool(pool("core", "bj", &["std-32c32g"]), InventoryWrite::Apply)
            .await
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("unknown machine class std-32c32g"),
            "{refused}"
        );
        assert!(objects.get::<Pool>(None, "core").await.unwrap().is_none());
        objects
            .write_machine_class(class("std-32c32g"), InventoryWrite::Apply)
            .await
            .unwrap();
        let (stored, created) = objects
            .write_pool(pool("core", "bj", &["std-32c32g"]), InventoryWrite::Apply)
            .await
            .unwrap();
        assert!(created);
        assert_eq!(stored.metadata.generation, 1);
    }

    #[tokio::test]
    async fn updates_name_the_version_they_read_and_apply_bumps_the_generation() {
        let (_dir, objects) = objects();
        let (created, _) = objects
            .write_cluster(cluster("bj"), InventoryWrite::Create)
            .await
            .unwrap();
        let again = objects
            .write_cluster(cluster("bj"), InventoryWrite::Create)
            .await
            .unwrap_err();
        assert!(matches!(again, ControlError::Conflict(_)), "{again}");
        let mut change = created.clone();
        change.spec.idc = Some("bj-1".into());
        let unversioned = {
            let mut c = change.clone();
            c.metadata.resource_version = None;
            c
        };
        assert!(
            objects
                .write_cluster(unversioned, InventoryWrite::Update)
                .await
                .is_err()
        );
        let (updated, _) = objects
            .write_cluster(change.clone(), InventoryWrite::Update)
            .await
            .unwrap();
        assert_eq!(updated.metadata.generation, 2);
        assert_eq!(updated.metadata.uid, created.metadata.uid);
        let stale = objects
            .write_cluster(change, InventoryWrite::Update)
            .await
            .unwrap_err();
        assert!(stale.to_string().contains("changed since"), "{stale}");
        let mut applied = cluster("bj");
        applied.spec.idc = Some("bj-2".into());
        let (applied, created) = objects
            .write_cluster(applied, InventoryWrite::Apply)
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(applied.metadata.generation, 3);
    }

    #[tokio::test]
    async fn deletes_refuse_to_orphan_pools_nodes_or_classes() {
        let (_dir, objects) = objects();
        objects
            .write_cluster(cluster("bj"), InventoryWrite::Create)
            .await
            .unwrap();
        objects
            .write_machine_class(class("std"), InventoryWrite::Create)
            .await
            .unwrap();
        objects
            .write_pool(pool("core", "bj", &["std"]), InventoryWrite::Create)
            .await
            .unwrap();
        let refused = objects.delete_cluster("bj").await.unwrap_err();
        assert!(refused.to_string().contains("still has pools core"));
        let refused = objects.delete_machine_class("std").await.unwrap_err();
        assert!(refused.to_string().contains("used by pools core"));
        test_objects::node(&objects, "n1", true).await;
        objects
            .modify::<Node>(None, "n1", |n| {
                n.metadata.labels.insert(LABEL_POOL.into(), "core".into());
                true
            })
            .await
            .unwrap();
        let pool = objects.pools_with_status().await.unwrap().remove(0);
        assert_eq!(
            pool.status,
            PoolStatus {
                nodes: 1,
                ready_nodes: 1
            }
        );
        let refused = objects.delete_pool("core").await.unwrap_err();
        assert!(refused.to_string().contains("still has nodes n1"));
        objects.delete::<Node>(None, "n1", None).await.unwrap();
        objects.delete_pool("core").await.unwrap();
        objects.delete_machine_class("std").await.unwrap();
        objects.delete_cluster("bj").await.unwrap();
        assert!(objects.delete_cluster("bj").await.is_err());
    }
}
