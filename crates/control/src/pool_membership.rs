//! A node in its pool: when an agent registers naming a pool (the
//! `wharf.io/pool` label its `--pool` sets), the node gets the pool's
//! labels, the inventory's labels (cluster, cluster kind, IDC, machine
//! class, tier) and, on joining, the pool's taints and price. A node is in
//! one pool for its life: moving is decommissioning and joining again.

use wharf_api::{
    ANNOTATION_JOIN_POOL, CONDITION_INITIALIZED, Cluster, InitProfile, LABEL_CLUSTER,
    LABEL_CLUSTER_KIND, LABEL_IDC, LABEL_MACHINE_CLASS, LABEL_POOL, LABEL_TIER, MachineClass, Node,
    NodeInitProfile, ObjectError, Pool, TAINT_NOT_INITIALIZED, Taint, TaintEffect,
    initialized_condition, set_condition,
};

use crate::ControlError;
use crate::objects::Objects;

/// What a node of a pool gets in its spec: the pool's taints and price on
/// the registration that puts it there, nothing on later ones (its spec
/// is then the operators').
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct PoolJoin {
    /// The pool's taints.
    pub taints: Vec<Taint>,
    /// Pool price, else class price, else cluster price.
    pub cost_per_hour: Option<f64>,
    /// The hash of the pool's init profile, on every registration: until
    /// the agent reports a successful run of it the node is tainted
    /// not-initialized.
    pub init_hash: Option<String>,
}

impl PoolJoin {
    /// Adds the pool's taints the node lacks and sets its price.
    pub(crate) fn apply_to(&self, node: &mut Node) {
        for taint in &self.taints {
            let present = node
                .spec
                .taints
                .iter()
                .any(|t| t.key == taint.key && t.effect == taint.effect);
            if !present {
                node.spec.taints.push(taint.clone());
            }
        }
        if self.cost_per_hour.is_some() {
            node.spec.cost_per_hour = self.cost_per_hour;
        }
    }
}

/// Sets `node`'s `Initialized` condition from its agent's last report and
/// the pool's current profile (`init_hash`), and keeps the not-initialized
/// taint on it exactly while that condition is not `True`. The taint is
/// its own key, apart from the condition taints the node lifecycle keeps
/// (unreachable, not-ready), so the two never undo each other.
pub(crate) fn apply_initialization(node: &mut Node, init_hash: Option<&str>, now: u64) {
    let condition = initialized_condition(init_hash, node.status.initialization.as_ref());
    let initialized = condition.as_ref().is_none_or(|c| c.status == "True");
    set_condition(
        &mut node.status.conditions,
        CONDITION_INITIALIZED,
        condition,
        now,
    );
    let taints = &mut node.spec.taints;
    let tainted = taints.iter().any(|t| t.key == TAINT_NOT_INITIALIZED);
    if initialized {
        taints.retain(|t| t.key != TAINT_NOT_INITIALIZED);
    } else if !tainted {
        taints.push(Taint {
            key: TAINT_NOT_INITIALIZED.into(),
            value: String::new(),
            effect: TaintEffect::NoSchedule,
            time_added: Some(now),
        });
    }
}

impl Objects {
    /// Puts `reported` (a registration) in the pool it names, or keeps it
    /// in the one `stored` is in: sets the pool's and inventory's labels.
    /// Returns `None` for a node in no pool, else what joining adds to its
    /// spec (nothing unless it joins now). Refused:
    /// a pool that does not exist, a class the pool does not allow, a node
    /// of one pool naming another.
    pub(crate) async fn place_in_pool(
        &self,
        reported: &mut Node,
        stored: Option<&Node>,
    ) -> Result<Option<PoolJoin>, ControlError> {
        let name = reported.metadata.name.clone();
        let explicit = reported
            .metadata
            .annotations
            .get(ANNOTATION_JOIN_POOL)
            .cloned();
        if let Some(pool) = &explicit {
            reported
                .metadata
                .labels
                .insert(LABEL_POOL.into(), pool.clone());
        }
        // Only a pool of the inventory holds a node; a label naming no
        // such pool is a plain label.
        let held: Option<Pool> = match stored.and_then(|n| n.metadata.labels.get(LABEL_POOL)) {
            Some(pool) => self.get(None, pool).await?,
            None => None,
        };
        let current = held.as_ref().map(|p| p.metadata.name.clone());
        let asked = reported.metadata.labels.get(LABEL_POOL).cloned();
        if let (Some(current), Some(asked)) = (&current, &asked)
            && current != asked
        {
            return Err(ControlError::Conflict(format!(
                "node {name} is in pool {current}: a node is in one pool; decommission it \
                 and join pool {asked} as a new node"
            )));
        }
        let Some(pool_name) = asked.or(current.clone()) else {
            return Ok(None);
        };
        // A node's re-registrations (every few seconds) name the pool it
        // is in: the one read above.
        let found = match held {
            Some(pool) if pool.metadata.name == pool_name => Some(pool),
            _ => self.get(None, &pool_name).await?,
        };
        let pool: Pool = match found {
            Some(pool) => pool,
            None if explicit.is_some() => {
                return Err(ObjectError::Invalid {
                    field: format!("metadata.annotations.{ANNOTATION_JOIN_POOL}"),
                    message: format!("node {name} names pool {pool_name}, which does not exist"),
                }
                .into());
            }
            None => return Ok(None),
        };
        let cluster: Cluster = self.require(None, &pool.spec.cluster).await?;
        let class = self.class_of(reported, &pool).await?;
        let labels = &mut reported.metadata.labels;
        labels.extend(pool.spec.labels.clone());
        labels.insert(LABEL_POOL.into(), pool_name);
        labels.insert(LABEL_CLUSTER.into(), cluster.metadata.name.clone());
        labels.insert(LABEL_CLUSTER_KIND.into(), cluster.spec.kind.as_str().into());
        match &cluster.spec.idc {
            Some(idc) => labels.insert(LABEL_IDC.into(), idc.clone()),
            None => labels.remove(LABEL_IDC),
        };
        match &class {
            Some(class) => {
                labels.insert(LABEL_MACHINE_CLASS.into(), class.metadata.name.clone());
                labels.insert(LABEL_TIER.into(), class.spec.tier.as_str().into());
            }
            None => {
                labels.remove(LABEL_MACHINE_CLASS);
                labels.remove(LABEL_TIER);
            }
        }
        let init_hash = pool.spec.init.as_ref().map(InitProfile::hash);
        if current.is_some() {
            return Ok(Some(PoolJoin {
                init_hash,
                ..PoolJoin::default()
            }));
        }
        let cost_per_hour = pool
            .spec
            .price_per_hour
            .or(class.as_ref().map(|c| c.spec.price_per_hour))
            .or(cluster.spec.price_per_hour);
        Ok(Some(PoolJoin {
            taints: pool.spec.taints.clone(),
            cost_per_hour,
            init_hash,
        }))
    }

    /// What `node` is to run before it takes pods: its pool's init
    /// profile and the profile's hash (none for a node of no pool, or of
    /// a pool without one).
    pub async fn node_init_profile(&self, node: &str) -> Result<NodeInitProfile, ControlError> {
        let node: Node = self.require(None, node).await?;
        let Some(pool_name) = node.metadata.labels.get(LABEL_POOL) else {
            return Ok(NodeInitProfile::default());
        };
        let pool = self.get::<Pool>(None, pool_name).await?;
        let profile = pool.and_then(|p| p.spec.init);
        Ok(NodeInitProfile::new(Some(pool_name.clone()), profile))
    }

    /// The node's machine class: the one it names (`--class`), which the
    /// pool must allow, else the first the pool allows (any, when it lists
    /// none) whose ranges hold the node's capacity; `None` if none does.
    async fn class_of(
        &self,
        node: &Node,
        pool: &Pool,
    ) -> Result<Option<MachineClass>, ControlError> {
        let allowed = &pool.spec.machine_classes;
        if let Some(named) = node.metadata.labels.get(LABEL_MACHINE_CLASS) {
            if !allowed.is_empty() && !allowed.contains(named) {
                return Err(ObjectError::Invalid {
                    field: format!("metadata.labels.{LABEL_MACHINE_CLASS}"),
                    message: format!(
                        "pool {} allows machine classes {}, not {named}",
                        pool.metadata.name,
                        allowed.join(", ")
                    ),
                }
                .into());
            }
            let class = self
                .get(None, named)
                .await?
                .ok_or_else(|| ObjectError::Invalid {
                    field: format!("metadata.labels.{LABEL_MACHINE_CLASS}"),
                    message: format!("unknown machine class {named}"),
                })?;
            return Ok(Some(class));
        }
        let capacity = &node.status.capacity;
        let fits = |c: &MachineClass| c.spec.contains(capacity.cpu_millis, capacity.memory_bytes);
        if allowed.is_empty() {
            let (classes, _) = self.list::<MachineClass>(None, None).await?;
            return Ok(classes.into_iter().find(fits));
        }
        for name in allowed {
            if let Some(class) = self.get::<MachineClass>(None, name).await?
                && fits(&class)
            {
                return Ok(Some(class));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use wharf_api::{ClusterKind, InitState, NodeInitialization, Resources, Tier};

    use super::*;
    use crate::InventoryWrite::{self, Create};
    use crate::test_objects;

    async fn inventory(objects: &Objects) {
        let mut cluster = Cluster::default();
        cluster.metadata.name = "bj".into();
        cluster.spec.kind = ClusterKind::Vm;
        cluster.spec.idc = Some("bj-1".into());
        cluster.spec.price_per_hour = Some(0.01);
        objects.write_cluster(cluster, Create).await.unwrap();
        for (name, cpu, tier, price) in [
            ("legacy-12c16g", ("", "12"), Tier::Batch, 0.12),
            ("std-32c32g", ("16", ""), Tier::Core, 0.4),
        ] {
            let class: MachineClass = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": {"cpu": {"min": (!cpu.0.is_empty()).then_some(cpu.0),
                                 "max": (!cpu.1.is_empty()).then_some(cpu.1)},
                         "pricePerHour": price, "tier": tier}
            }))
            .unwrap();
            objects.write_machine_class(class, Create).await.unwrap();
        }
        for (name, classes, price) in [
            ("old", vec!["legacy-12c16g"], None),
            ("new", vec!["std-32c32g"], Some(0.5)),
            ("any", vec![], None),
        ] {
            let mut pool = Pool::default();
            pool.metadata.name = name.into();
            pool.spec.cluster = "bj".into();
            pool.spec.machine_classes = classes.into_iter().map(String::from).collect();
            pool.spec.price_per_hour = price;
            pool.spec.labels.insert("team".into(), name.into());
            pool.spec.taints.push(Taint {
                key: "pool".into(),
                value: name.into(),
                effect: TaintEffect::NoSchedule,
                time_added: None,
            });
            objects.write_pool(pool, Create).await.unwrap();
        }
    }

    fn machine(name: &str, pool: Option<&str>, cpus: u64) -> Node {
        let mut node = Node::new(
            name,
            Resources {
                cpu_millis: cpus * 1000,
                memory_bytes: 16 << 30,
                pods: 110,
            },
        );
        if let Some(pool) = pool {
            let join = (ANNOTATION_JOIN_POOL.to_string(), pool.to_string());
            node.metadata.annotations.insert(join.0, join.1);
        }
        node
    }

    #[tokio::test]
    async fn a_joining_node_gets_its_pools_labels_taints_and_price() {
        let dir = tempfile::tempdir().unwrap();
        let objects = test_objects::objects(&dir);
        inventory(&objects).await;
        let (node, _) = objects
            .register_node(machine("old-1", Some("old"), 12))
            .await
            .unwrap();
        let labels = &node.metadata.labels;
        assert_eq!(labels["team"], "old");
        assert_eq!(labels[LABEL_CLUSTER], "bj");
        assert_eq!(labels[LABEL_CLUSTER_KIND], "vm");
        assert_eq!(labels[LABEL_IDC], "bj-1");
        assert_eq!(labels[LABEL_MACHINE_CLASS], "legacy-12c16g");
        assert_eq!(labels[LABEL_TIER], "batch");
        assert_eq!(node.spec.taints[0].key, "pool");
        // No pool price: the class's.
        assert_eq!(node.spec.cost_per_hour, Some(0.12));

        let (node, _) = objects
            .register_node(machine("new-1", Some("new"), 32))
            .await
            .unwrap();
        assert_eq!(node.metadata.labels[LABEL_TIER], "core");
        assert_eq!(node.spec.cost_per_hour, Some(0.5), "the pool's price first");

        // No class fits: no class labels, the cluster's price.
        let (node, _) = objects
            .register_node(machine("odd-1", Some("old"), 24))
            .await
            .unwrap();
        assert!(!node.metadata.labels.contains_key(LABEL_MACHINE_CLASS));
        assert_eq!(node.spec.cost_per_hour, Some(0.01));

        // Any class when the pool lists none; a named class must be allowed.
        let (node, _) = objects
            .register_node(machine("any-1", Some("any"), 32))
            .await
            .unwrap();
        assert_eq!(node.metadata.labels[LABEL_MACHINE_CLASS], "std-32c32g");
        let mut named = machine("new-2", Some("new"), 32);
        named
            .metadata
            .labels
            .insert(LABEL_MACHINE_CLASS.into(), "legacy-12c16g".into());
        let refused = objects.register_node(named).await.unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("allows machine classes std-32c32g, not legacy-12c16g"),
            "{refused}"
        );
        assert!(objects.get::<Node>(None, "new-2").await.unwrap().is_none());

        // Without a pool, or with a pool label the inventory does not
        // know, as before.
        let (node, _) = objects
            .register_node(machine("plain", None, 4))
            .await
            .unwrap();
        assert!(!node.metadata.labels.contains_key(LABEL_POOL));
        let mut labelled = machine("labelled", None, 4);
        labelled
            .metadata
            .labels
            .insert(LABEL_POOL.into(), "web".into());
        labelled.spec.cost_per_hour = Some(0.7);
        let (node, _) = objects.register_node(labelled).await.unwrap();
        assert_eq!(node.metadata.labels[LABEL_POOL], "web");
        assert!(!node.metadata.labels.contains_key(LABEL_CLUSTER));
        assert_eq!(node.spec.cost_per_hour, Some(0.7));
        assert!(node.spec.taints.is_empty());
    }

    /// The node `name` as its agent reports it after a run of `hash`.
    fn reporting(name: &str, hash: &str, state: InitState) -> Node {
        let mut node = machine(name, None, 12);
        node.status.initialization = Some(NodeInitialization {
            profile_hash: hash.into(),
            state,
            message: (state == InitState::Failed).then(|| "script: exit status 3".into()),
            ..NodeInitialization::default()
        });
        node
    }

    fn initialized(node: &Node) -> (bool, &str, bool) {
        let condition = node
            .status
            .conditions
            .iter()
            .find(|c| c.kind == CONDITION_INITIALIZED)
            .unwrap();
        let tainted = node
            .spec
            .taints
            .iter()
            .any(|t| t.key == TAINT_NOT_INITIALIZED && t.effect == TaintEffect::NoSchedule);
        (
            condition.status == "True",
            condition.reason.as_str(),
            tainted,
        )
    }

    #[tokio::test]
    async fn a_node_is_tainted_until_it_ran_its_pools_current_profile() {
        let dir = tempfile::tempdir().unwrap();
        let objects = test_objects::objects(&dir);
        inventory(&objects).await;
        let mut pool: Pool = objects.require(None, "old").await.unwrap();
        pool.spec.init = Some(InitProfile {
            script: Some("true".into()),
            ..InitProfile::default()
        });
        let (pool, _) = objects
            .write_pool(pool, InventoryWrite::Update)
            .await
            .unwrap();
        let first = pool.spec.init.as_ref().unwrap().hash();
        let profile = objects.node_init_profile("missing").await;
        assert!(profile.is_err(), "an unknown node has no profile");

        let (node, _) = objects
            .register_node(machine("old-1", Some("old"), 12))
            .await
            .unwrap();
        assert_eq!(initialized(&node), (false, "Pending", true));
        assert_eq!(node.spec.taints[0].key, "pool", "the pool's taints too");
        let asked = objects.node_init_profile("old-1").await.unwrap();
        assert_eq!(asked.hash.as_deref(), Some(first.as_str()));
        assert_eq!(asked.pool.as_deref(), Some("old"));

        let report = |state| reporting("old-1", &first, state);
        let (node, _) = objects
            .register_node(report(InitState::Running))
            .await
            .unwrap();
        assert_eq!(initialized(&node), (false, "Running", true));
        let (node, _) = objects
            .register_node(report(InitState::Failed))
            .await
            .unwrap();
        assert_eq!(initialized(&node), (false, "Failed", true));
        let condition = &node.status.conditions[0];
        assert!(condition.message.contains("exit status 3"), "{condition:?}");
        let since = condition.last_transition_time;
        let (node, _) = objects
            .register_node(report(InitState::Succeeded))
            .await
            .unwrap();
        assert_eq!(initialized(&node), (true, "Succeeded", false));
        assert!(node.status.conditions[0].last_transition_time >= since);
        assert_eq!(node.spec.taints.len(), 1, "only the pool's taint is left");

        // The pool's profile changes: tainted again until the new one ran.
        let mut pool: Pool = objects.require(None, "old").await.unwrap();
        pool.spec.init.as_mut().unwrap().script = Some("echo two".into());
        let (pool, _) = objects
            .write_pool(pool, InventoryWrite::Update)
            .await
            .unwrap();
        let second = pool.spec.init.as_ref().unwrap().hash();
        let node: Node = objects.require(None, "old-1").await.unwrap();
        assert_eq!(initialized(&node), (false, "ProfileChanged", true));
        let (node, _) = objects
            .register_node(report(InitState::Succeeded))
            .await
            .unwrap();
        assert_eq!(
            initialized(&node),
            (false, "ProfileChanged", true),
            "the old hash"
        );
        let done = reporting("old-1", &second, InitState::Succeeded);
        let (node, _) = objects.register_node(done).await.unwrap();
        assert_eq!(initialized(&node), (true, "Succeeded", false));

        // No profile any more: no condition, no taint.
        let mut pool: Pool = objects.require(None, "old").await.unwrap();
        pool.spec.init = None;
        objects
            .write_pool(pool, InventoryWrite::Update)
            .await
            .unwrap();
        let node: Node = objects.require(None, "old-1").await.unwrap();
        assert!(node.status.conditions.is_empty());
        assert!(
            node.spec
                .taints
                .iter()
                .all(|t| t.key != TAINT_NOT_INITIALIZED)
        );
    }

    #[tokio::test]
    async fn a_node_stays_in_its_one_pool() {
        let dir = tempfile::tempdir().unwrap();
        let objects = test_objects::objects(&dir);
        inventory(&objects).await;
        let refused = objects
            .register_node(machine("n1", Some("nope"), 4))
            .await
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("pool nope, which does not exist")
        );
        assert!(objects.get::<Node>(None, "n1").await.unwrap().is_none());

        objects
            .register_node(machine("n1", Some("old"), 12))
            .await
            .unwrap();
        // The operator removes the pool taint: a re-registration keeps it off.
        objects
            .modify::<Node>(None, "n1", |n| {
                n.spec.taints.clear();
                true
            })
            .await
            .unwrap();
        let refused = objects
            .register_node(machine("n1", Some("new"), 12))
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("node n1 is in pool old"),
            "{refused}"
        );
        // Restarted without --pool: still in its pool.
        let (node, _) = objects
            .register_node(machine("n1", None, 12))
            .await
            .unwrap();
        assert_eq!(node.metadata.labels[LABEL_POOL], "old");
        assert_eq!(node.metadata.labels["team"], "old");
        assert!(node.spec.taints.is_empty());
    }
}
