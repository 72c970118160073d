//! Failover: pods leave nodes that died, as Kubernetes' node lifecycle
//! controller and taint manager make them.
//!
//! ```text
//! lease expires --> node NotReady (nodes.rs)
//!   --> taint node.kubernetes.io/unreachable:NoExecute, at the zone's rate
//!   --> each pod waits out its toleration (tolerationSeconds, else the
//!       cluster default) --> evicted: object and address claim removed in
//!       one transaction that holds only while the node's heartbeat key is
//!       absent --> its Deployment makes a replacement elsewhere
//! ```
//!
//! Why the address may go with the pod: the node's lease has expired, and
//! an agent stops its fixed-IP pods before its own lease can run out
//! (self-fencing, in the agent), so nothing answers at that address any
//! more. If the agent is back (its heartbeat key exists) the transaction
//! fails and nothing is evicted.
//!
//! Rate limits, per zone (the `wharf.io/idc` label): a zone with more than
//! `unhealthy_zone_threshold` of its nodes NotReady is tainted at the slow
//! secondary rate (none in a zone of at most `large_cluster_size` nodes),
//! and when every node of every zone is NotReady nothing is tainted at
//! all: the control plane is more likely cut off than the whole fleet dead.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;
use wharf_api::{EventType, LABEL_IDC, Node, ObjectReference, Pod, Taint, TaintEffect, Toleration};
use wharf_store::Txn;

use crate::ControlError;
use crate::events::EventRecorder;
use crate::eviction_view::EvictionView;
use crate::ipam::with_claim_released;
use crate::nodes::heartbeat_key;
use crate::objects::{Object, Objects, now_millis};
use crate::scheduling::{scheduler_taint, scheduler_toleration};
use crate::termination::PodDeletion;

/// The taint of a node whose lease expired.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node whose agent reports it is not ready.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";

/// Failover settings (server flags).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvictionConfig {
    /// The heartbeat lease of agents that name none: how long after its
    /// last renewal a silent node turns NotReady.
    pub node_lease_ttl: Duration,
    /// How long a pod without a toleration of its node's unreachable or
    /// not-ready taint stays (Kubernetes: 300 s).
    pub default_toleration: Duration,
    /// Nodes tainted per second in a healthy zone (Kubernetes: 0.1).
    pub eviction_rate: f64,
    /// Nodes tainted per second in a zone mostly NotReady (Kubernetes: 0.01).
    pub secondary_eviction_rate: f64,
    /// Share of NotReady nodes above which a zone is unhealthy (0.55).
    pub unhealthy_zone_threshold: f64,
    /// An unhealthy zone of at most this many nodes is not evicted at all (50).
    pub large_cluster_size: usize,
}

impl Default for EvictionConfig {
    fn default() -> Self {
        EvictionConfig {
            node_lease_ttl: Duration::from_secs(2),
            default_toleration: Duration::from_secs(1),
            eviction_rate: 0.1,
            secondary_eviction_rate: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_size: 50,
        }
    }
}

/// A token bucket holding at most one token: one node at once, then one
/// per `1 / rate` seconds.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub(crate) fn new(rate: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            tokens: 1.0,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(1.0);
        self.at = now;
    }

    /// Changes the rate from `now` on.
    pub(crate) fn set_rate(&mut self, rate: f64, now: Instant) {
        self.refill(now);
        self.rate = rate;
    }

    /// How long until the next token, from the last refill; `None` at rate 0.
    pub(crate) fn until_token(&self) -> Option<Duration> {
        (self.rate > 0.0).then(|| Duration::from_secs_f64((1.0 - self.tokens).max(0.0) / self.rate))
    }

    /// Takes a token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.rate > 0.0 && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How a zone stands, as Kubernetes reckons it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    /// Few nodes NotReady.
    Normal,
    /// More than the threshold (and more than two nodes) NotReady.
    PartialDisruption,
    /// Every node NotReady.
    FullDisruption,
}

/// The state of a zone with `ready` and `not_ready` nodes.
pub fn zone_state(ready: usize, not_ready: usize, threshold: f64) -> ZoneState {
    let total = ready + not_ready;
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f64 / total as f64 >= threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// Nodes per second tainted in a zone of `size` nodes in `state`;
/// `all_down`: every zone is fully disrupted.
pub fn zone_rate(state: ZoneState, size: usize, all_down: bool, config: &EvictionConfig) -> f64 {
    match state {
        _ if all_down => 0.0,
        ZoneState::Normal | ZoneState::FullDisruption => config.eviction_rate,
        ZoneState::PartialDisruption if size > config.large_cluster_size => {
            config.secondary_eviction_rate
        }
        ZoneState::PartialDisruption => 0.0,
    }
}

/// Whether `taint` is one the control plane puts on a failing node.
fn is_node_condition(taint: &Taint) -> bool {
    taint.key == TAINT_UNREACHABLE || taint.key == TAINT_NOT_READY
}

/// When (unix ms) a pod with `tolerations` must leave a node carrying the
/// `NoExecute` taints `taints`, each with the time it counts from; `None`:
/// it may stay. Per taint, as in Kubernetes: untolerated means at once
/// (for the unreachable and not-ready taints: after `default`), tolerated
/// means after the least `tolerationSeconds` of the matching tolerations
/// (never if none of them has one). The earliest taint decides.
pub fn eviction_deadline(
    tolerations: &[Toleration],
    taints: &[(&Taint, u64)],
    default: Duration,
) -> Option<u64> {
    taints
        .iter()
        .filter(|(taint, _)| taint.effect == TaintEffect::NoExecute)
        .filter_map(|&(taint, since)| {
            let matcher = scheduler_taint(taint);
            let mut matching = tolerations
                .iter()
                .filter(|t| scheduler_toleration(t).tolerates(&matcher))
                .peekable();
            let allowed = if matching.peek().is_none() {
                if is_node_condition(taint) {
                    default.as_millis() as u64
                } else {
                    0
                }
            } else {
                matching.filter_map(|t| t.toleration_seconds).min()? * 1000
            };
            Some(since + allowed)
        })
        .min()
}

/// A node with the `NoExecute` taints in force and when each counts from.
type TaintedNode<'a> = (&'a Node, Vec<(&'a Taint, u64)>);

/// The condition taint `node` should carry: unreachable while its lease is
/// expired (Kubernetes' `Ready=Unknown`), not-ready while its agent, alive,
/// says it cannot run pods (`Ready=False`), none while it is ready.
pub fn condition_taint(node: &Node) -> Option<&'static str> {
    if !node.status.ready {
        Some(TAINT_UNREACHABLE)
    } else if node.status.not_ready_reason.is_some() {
        Some(TAINT_NOT_READY)
    } else {
        None
    }
}

/// The condition taints `node` carries.
fn carried_conditions(node: &Node) -> Vec<&str> {
    let conditions = node.spec.taints.iter().filter(|t| is_node_condition(t));
    conditions.map(|t| t.key.as_str()).collect()
}

/// Whether `node` carries exactly the condition taint it should.
fn conditions_in_step(node: &Node) -> bool {
    carried_conditions(node) == Vec::from_iter(condition_taint(node))
}

/// Taints nodes that are unreachable or not ready and evicts the pods whose
/// tolerations ran out.
///
/// Driven by watches: a pass runs when a node's readiness or taints
/// change, when a pod lands on a tainted node, and when the first
/// toleration or rate-limit wait it found ends; never on a fixed tick,
/// and it reads nothing from the store (its view is kept by the watches).
pub struct NodeEviction {
    objects: Objects,
    config: EvictionConfig,
    events: EventRecorder,
    buckets: HashMap<String, TokenBucket>,
    /// The state and rate last reported per zone.
    rates: HashMap<String, (ZoneState, f64)>,
    /// When `NoExecute` taints without a `timeAdded` were first seen.
    first_seen: HashMap<(String, String), u64>,
    view: EvictionView,
}

/// The longest a pass waits for: a safety net, as every wait a pass knows
/// of is shorter.
const IDLE_PASS: Duration = Duration::from_secs(10);
/// How soon a pass follows an eviction that did not hold (the pod changed).
const RETRY: Duration = Duration::from_millis(200);

impl NodeEviction {
    /// A controller over `objects`.
    pub fn new(objects: Objects, config: EvictionConfig) -> NodeEviction {
        NodeEviction {
            events: EventRecorder::new(objects.clone(), "node-lifecycle"),
            objects,
            config,
            buckets: HashMap::new(),
            rates: HashMap::new(),
            first_seen: HashMap::new(),
            view: EvictionView::default(),
        }
    }

    /// Runs until dropped.
    pub async fn run(mut self) {
        loop {
            if let Err(err) = self.follow().await {
                tracing::warn!(error = %err, "node eviction watch ended; restarting");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Loads the view, then passes on every relevant change or due wait.
    async fn follow(&mut self) -> Result<(), ControlError> {
        let (nodes_at, pods_at) = self.load().await?;
        let mut nodes = Box::pin(self.objects.watch::<Node>(None, nodes_at + 1).await?);
        let mut pods = Box::pin(self.objects.watch::<Pod>(None, pods_at + 1).await?);
        loop {
            let wait = self.pass().await?.unwrap_or(IDLE_PASS).min(IDLE_PASS);
            let wake = Instant::now() + wait;
            let mut relevant = false;
            while !relevant {
                relevant = tokio::select! {
                    change = nodes.next() => match change {
                        Some(change) => self.view.apply_node(change?),
                        None => return Ok(()),
                    },
                    change = pods.next() => match change {
                        Some(change) => self.view.apply_pod(change?),
                        None => return Ok(()),
                    },
                    () = tokio::time::sleep_until(wake) => true,
                };
            }
            // One pass for a burst: take in what else has arrived.
            while let Some(Some(change)) = nodes.next().now_or_never() {
                self.view.apply_node(change?);
            }
            while let Some(Some(change)) = pods.next().now_or_never() {
                self.view.apply_pod(change?);
            }
        }
    }

    /// Replaces the view by a listing; returns the listings' revisions.
    async fn load(&mut self) -> Result<(u64, u64), ControlError> {
        let (nodes, nodes_at) = self.objects.list::<Node>(None, None).await?;
        let (pods, pods_at) = self.objects.list::<Pod>(None, None).await?;
        self.view = EvictionView::load(nodes, pods);
        Ok((nodes_at, pods_at))
    }

    /// One pass over a fresh listing: taints and untaints nodes, then
    /// evicts what is due.
    pub async fn tick(&mut self) -> Result<(), ControlError> {
        self.load().await?;
        self.pass().await.map(drop)
    }

    /// Taints and untaints nodes, then evicts what is due; returns how
    /// soon something else falls due (a toleration, a rate-limit token).
    async fn pass(&mut self) -> Result<Option<Duration>, ControlError> {
        let mut nodes = std::mem::take(&mut self.view.nodes);
        let tainted = self.taint_nodes(&mut nodes).await;
        self.view.nodes = nodes;
        let token = tainted?;
        let toleration = self.evict_pods().await?;
        Ok(token.into_iter().chain(toleration).min())
    }

    /// The applied rate (nodes per second) and state of each zone.
    pub fn zone_rates(&self) -> BTreeMap<String, (ZoneState, f64)> {
        self.rates.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Brings every node's condition taint in step; returns how soon the
    /// next token comes if a node waits for one.
    async fn taint_nodes(
        &mut self,
        nodes: &mut BTreeMap<String, Node>,
    ) -> Result<Option<Duration>, ControlError> {
        let mut nodes: Vec<&mut Node> = nodes.values_mut().collect();
        let mut zones: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, node) in nodes.iter().enumerate() {
            let zone = node.metadata.labels.get(LABEL_IDC).cloned();
            zones.entry(zone.unwrap_or_default()).or_default().push(i);
        }
        let state_of = |members: &[usize]| {
            let ready = members
                .iter()
                .filter(|i| condition_taint(nodes[**i]).is_none())
                .count();
            zone_state(
                ready,
                members.len() - ready,
                self.config.unhealthy_zone_threshold,
            )
        };
        let states: Vec<ZoneState> = zones.values().map(|m| state_of(m)).collect();
        let all_down = states.iter().all(|s| *s == ZoneState::FullDisruption);
        let now = Instant::now();
        let mut next_token: Option<Duration> = None;
        for ((zone, members), state) in zones.into_iter().zip(states) {
            let rate = zone_rate(state, members.len(), all_down, &self.config);
            if self.rates.get(&zone) != Some(&(state, rate)) {
                tracing::info!(zone, ?state, rate, "node eviction rate");
                self.rates.insert(zone.clone(), (state, rate));
            }
            let mut bucket = self
                .buckets
                .remove(&zone)
                .unwrap_or_else(|| TokenBucket::new(rate, now));
            bucket.set_rate(rate, now);
            for i in members {
                let node = &mut *nodes[i];
                if conditions_in_step(node) {
                    continue;
                }
                // Only a node that had no condition taint costs a token;
                // lifting one, or swapping one for the other, does not.
                let fresh = carried_conditions(node).is_empty();
                if fresh && let Some(wait) = self.starting(node) {
                    next_token = next_token.into_iter().chain([wait]).min();
                    continue;
                }
                if fresh && !bucket.try_take(now) {
                    let wait = bucket.until_token();
                    next_token = next_token.into_iter().chain(wait).min();
                    continue;
                }
                *node = self.set_condition_taint(&node.metadata.name).await?;
                if let Some(key) = condition_taint(node)
                    && carried_conditions(node) == [key]
                {
                    self.record_tainted(node, key, &zone, state, rate).await;
                }
            }
            self.buckets.insert(zone, bucket);
        }
        Ok(next_token)
    }

    /// How long `node`, registered but without a lease yet, is still
    /// starting rather than lost (one lease TTL from its creation, as
    /// Kubernetes' node startup grace period): tainting it would spend the
    /// token of its zone that a real failure needs.
    fn starting(&self, node: &Node) -> Option<Duration> {
        let grace_ends = node.metadata.created_at + self.config.node_lease_ttl.as_millis() as u64;
        let now = now_millis();
        (!node.status.ready && now < grace_ends).then(|| Duration::from_millis(grace_ends - now))
    }

    async fn record_tainted(
        &self,
        node: &Node,
        key: &str,
        zone: &str,
        state: ZoneState,
        rate: f64,
    ) {
        let reason = if key == TAINT_UNREACHABLE {
            "NodeUnreachable"
        } else {
            "NodeConditionNotReady"
        };
        let message = format!(
            "tainted {key}:NoExecute; zone {zone:?} is {state:?}, nodes tainted at {rate}/s"
        );
        self.events
            .record(
                &reference("Node", node),
                EventType::Warning,
                reason,
                &message,
            )
            .await;
    }

    /// Gives the node the condition taint its stored state calls for (and
    /// no other).
    async fn set_condition_taint(&self, name: &str) -> Result<Node, ControlError> {
        self.objects
            .modify::<Node>(None, name, |node| {
                if conditions_in_step(node) {
                    return false;
                }
                node.spec.taints.retain(|t| !is_node_condition(t));
                if let Some(key) = condition_taint(node) {
                    node.spec.taints.push(Taint {
                        key: key.into(),
                        value: String::new(),
                        effect: TaintEffect::NoExecute,
                        time_added: Some(now_millis()),
                    });
                }
                true
            })
            .await
    }

    /// Evicts the pods of tainted nodes whose tolerations ran out; returns
    /// how soon the next one runs out.
    async fn evict_pods(&mut self) -> Result<Option<Duration>, ControlError> {
        let now = now_millis();
        let mut taints: Vec<TaintedNode> = Vec::new();
        let mut seen = HashSet::new();
        for node in self.view.nodes.values() {
            let name = node.metadata.name.as_str();
            let condition = condition_taint(node);
            let mut in_force = Vec::new();
            for taint in &node.spec.taints {
                // A condition the node no longer has is about to be lifted.
                if taint.effect != TaintEffect::NoExecute
                    || (is_node_condition(taint) && condition != Some(taint.key.as_str()))
                {
                    continue;
                }
                let key = (name.to_string(), taint.key.clone());
                let since = taint.time_added.unwrap_or_else(|| {
                    seen.insert(key.clone());
                    *self.first_seen.entry(key).or_insert(now)
                });
                in_force.push((taint, since));
            }
            if !in_force.is_empty() {
                taints.push((node, in_force));
            }
        }
        self.first_seen.retain(|k, _| seen.contains(k));
        let mut next: Option<u64> = None;
        for (node, node_taints) in &taints {
            for pod in self.view.pods_on(&node.metadata.name) {
                if node.status.ready && pod.metadata.is_terminating() {
                    continue;
                }
                let due = eviction_deadline(
                    &pod.spec.tolerations,
                    node_taints,
                    self.config.default_toleration,
                );
                let wait = match due {
                    Some(due) if due > now => due - now,
                    Some(_) => match self.evict(pod, node).await {
                        Ok(true) | Err(ControlError::NotFound { .. }) => continue,
                        Ok(false) => RETRY.as_millis() as u64,
                        Err(err) => return Err(err),
                    },
                    None => continue,
                };
                next = next.into_iter().chain([wait]).min();
            }
        }
        Ok(next.map(Duration::from_millis))
    }

    /// Evicts `pod` from `node`: gracefully from a live node; from a lost
    /// one, object and address at once while its lease stays expired.
    /// False if that did not hold (the pod changed, or the node is back).
    async fn evict(&self, pod: &Pod, node: &Node) -> Result<bool, ControlError> {
        let project = pod.metadata.project.as_deref().unwrap_or_default();
        let name = &pod.metadata.name;
        if node.status.ready {
            self.objects
                .request_pod_deletion(project, name, PodDeletion::Graceful(None))
                .await?;
        } else if !self.objects.evict_from_lost_node(pod).await? {
            return Ok(false);
        }
        let message = format!("evicted from node {}", node.metadata.name);
        self.events
            .record(
                &reference("Pod", pod),
                EventType::Normal,
                "TaintManagerEviction",
                &message,
            )
            .await;
        Ok(true)
    }
}

fn reference<T: Object>(kind: &str, object: &T) -> ObjectReference {
    let meta = object.metadata();
    ObjectReference {
        kind: kind.into(),
        project: meta.project.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
    }
}

impl Objects {
    /// Removes `pod`, bound to a node whose lease expired, with its address
    /// claim, in one transaction that holds only while the node's heartbeat
    /// key is absent and the pod unchanged. False if it did not hold.
    pub(crate) async fn evict_from_lost_node(&self, pod: &Pod) -> Result<bool, ControlError> {
        let Some(node) = pod.spec.node_name.as_deref() else {
            return Ok(false);
        };
        let project = pod.metadata.project.as_deref().unwrap_or_default();
        let mut txn: Txn = self
            .pod_deletion_txn(pod)
            .await?
            .when_revision(heartbeat_key(node), 0);
        if let Some((kv, claim)) = self.pod_claim_entry(project, &pod.metadata.name).await?
            && claim.pod_uid == pod.metadata.uid
        {
            txn = with_claim_released(txn, &kv, &claim);
        }
        Ok(self.store().txn(txn).await?.succeeded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_objects::{deployment, node, objects, pod, pod_exists};

    fn toleration(key: &str, seconds: Option<u64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: wharf_api::TolerationOperator::Exists,
            value: None,
            effect: Some(TaintEffect::NoExecute),
            toleration_seconds: seconds,
        }
    }

    fn no_execute(key: &str) -> Taint {
        Taint {
            key: key.into(),
            value: String::new(),
            effect: TaintEffect::NoExecute,
            time_added: None,
        }
    }

    #[test]
    fn tolerations_decide_how_long_a_pod_stays_on_a_tainted_node() {
        let unreachable = no_execute(TAINT_UNREACHABLE);
        let dedicated = no_execute("dedicated");
        let default = Duration::from_secs(2);
        let at = |taints: &[(&Taint, u64)], tolerations: &[Toleration]| {
            eviction_deadline(tolerations, taints, default)
        };
        // No toleration: the cluster default for the node's condition...
        assert_eq!(at(&[(&unreachable, 10_000)], &[]), Some(12_000));
        // ...and at once for an operator's taint.
        assert_eq!(at(&[(&dedicated, 10_000)], &[]), Some(10_000));
        // The pod's own tolerationSeconds, the least of those that match.
        let short = toleration(TAINT_UNREACHABLE, Some(5));
        let long = toleration(TAINT_UNREACHABLE, Some(60));
        assert_eq!(
            at(&[(&unreachable, 10_000)], &[long.clone(), short.clone()]),
            Some(15_000)
        );
        // Tolerated without seconds: forever; a toleration of another key does not count.
        let forever = toleration(TAINT_UNREACHABLE, None);
        assert_eq!(
            at(&[(&unreachable, 10_000)], std::slice::from_ref(&forever)),
            None
        );
        let other = toleration(TAINT_NOT_READY, None);
        assert_eq!(at(&[(&unreachable, 10_000)], &[other]), Some(12_000));
        // Only NoExecute taints evict; the earliest deadline wins.
        let mut soft = dedicated.clone();
        soft.effect = TaintEffect::NoSchedule;
        assert_eq!(at(&[(&soft, 0)], &[]), None);
        assert_eq!(
            at(&[(&unreachable, 10_000), (&dedicated, 11_000)], &[forever]),
            Some(11_000)
        );
    }

    #[test]
    fn one_node_at_once_then_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(0.1, start);
        assert!(bucket.try_take(start));
        assert!(!bucket.try_take(start + Duration::from_secs(9)));
        assert!(bucket.try_take(start + Duration::from_secs(10)));
        // A long quiet spell gives one token, not a burst.
        let later = start + Duration::from_secs(1000);
        assert!(bucket.try_take(later));
        assert!(!bucket.try_take(later));
        // Rate 0 stops; a new rate counts from when it is set.
        bucket.set_rate(0.0, later);
        assert!(!bucket.try_take(later + Duration::from_secs(1000)));
        bucket.set_rate(1.0, later + Duration::from_secs(1000));
        assert!(bucket.try_take(later + Duration::from_secs(1001)));
    }

    #[test]
    fn a_mostly_down_zone_is_evicted_slowly_and_a_fully_down_cluster_not_at_all() {
        let config = EvictionConfig::default();
        assert_eq!(zone_state(10, 0, 0.55), ZoneState::Normal);
        // Two down are never a disruption, whatever the share.
        assert_eq!(zone_state(1, 2, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(4, 6, 0.55), ZoneState::PartialDisruption);
        assert_eq!(zone_state(5, 5, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(0, 3, 0.55), ZoneState::FullDisruption);

        let rate = |state, size, all_down| zone_rate(state, size, all_down, &config);
        assert_eq!(rate(ZoneState::Normal, 5000, false), 0.1);
        assert_eq!(rate(ZoneState::PartialDisruption, 2500, false), 0.01);
        assert_eq!(rate(ZoneState::PartialDisruption, 50, false), 0.0);
        // A zone wholly down while others live: its nodes really died.
        assert_eq!(rate(ZoneState::FullDisruption, 2500, false), 0.1);
        assert_eq!(rate(ZoneState::FullDisruption, 2500, true), 0.0);
    }

    /// Pods leave at once; nodes have no startup grace.
    fn at_once() -> EvictionConfig {
        EvictionConfig {
            default_toleration: Duration::ZERO,
            node_lease_ttl: Duration::ZERO,
            ..EvictionConfig::default()
        }
    }

    /// Runs a pass, then reads node `name`.
    async fn pass_then_node(eviction: &mut NodeEviction, objects: &Objects, name: &str) -> Node {
        eviction.tick().await.unwrap();
        objects.require(None, name).await.unwrap()
    }

    async fn tolerate_forever(objects: &Objects, pod: &Pod, key: &str) {
        objects
            .modify::<Pod>(Some("shop"), &pod.metadata.name, |p| {
                p.spec.tolerations = vec![toleration(key, None)];
                true
            })
            .await
            .unwrap();
    }

    async fn pool(objects: &Objects) {
        let yaml = "apiVersion: wharf.io/v1\nkind: IpPool\nmetadata: {name: fixed}\nspec: {cidr: 10.93.0.0/24, gateway: 10.93.0.1, ranges: [{start: 10.93.0.10, end: 10.93.0.20}]}\n";
        let pools = wharf_api::parse_ip_pools(yaml).unwrap().0;
        objects.import_ip_pools(pools).await.unwrap();
    }

    async fn set_ready(objects: &Objects, name: &str, ready: bool) {
        objects
            .modify::<Node>(None, name, |n| {
                n.status.ready = ready;
                true
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_lost_nodes_pods_go_with_their_addresses_once_tolerated_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        pool(&objects).await;
        node(&objects, "wtf-lost", true).await;
        node(&objects, "wtf-live", true).await;
        let owner = deployment(&objects, "web").await;
        let evicted = pod(&objects, &owner, Some("wtf-lost")).await;
        let name = evicted.metadata.name.clone();
        // A fixed-address pod: its claim goes with it.
        objects
            .modify::<Pod>(Some("shop"), &name, |p| {
                let fixed = wharf_api::ANNOTATION_FIXED_IP.to_string();
                p.metadata.annotations.insert(fixed, "10.93.0.15".into());
                true
            })
            .await
            .unwrap();
        objects.claim_pod_ip("shop", &name).await.unwrap().unwrap();
        let patient = pod(&objects, &owner, Some("wtf-lost")).await;
        tolerate_forever(&objects, &patient, TAINT_UNREACHABLE).await;
        let elsewhere = pod(&objects, &owner, Some("wtf-live")).await;

        let mut eviction = NodeEviction::new(objects.clone(), at_once());
        eviction.tick().await.unwrap();
        assert!(pod_exists(&objects, &name).await, "both nodes are ready");

        set_ready(&objects, "wtf-lost", false).await;
        let lost = pass_then_node(&mut eviction, &objects, "wtf-lost").await;
        let taint = lost.spec.taints.iter().find(|t| t.key == TAINT_UNREACHABLE);
        assert_eq!(taint.unwrap().effect, TaintEffect::NoExecute);
        assert!(!pod_exists(&objects, &name).await);
        assert_eq!(objects.pod_claim("shop", &name).await.unwrap(), None);
        assert!(objects.pool_claims("fixed").await.unwrap().is_empty());
        // Tolerated forever, and on a live node: they stay.
        assert!(pod_exists(&objects, &patient.metadata.name).await);
        assert!(pod_exists(&objects, &elsewhere.metadata.name).await);
        let (zone, (state, rate)) = eviction.zone_rates().into_iter().next().unwrap();
        assert_eq!((zone.as_str(), state, rate), ("", ZoneState::Normal, 0.1));

        // Back to ready: the taint goes.
        set_ready(&objects, "wtf-lost", true).await;
        let back = pass_then_node(&mut eviction, &objects, "wtf-lost").await;
        assert!(back.spec.taints.is_empty());
    }

    #[tokio::test]
    async fn a_node_alive_but_not_ready_is_tainted_not_ready_and_drained_gracefully() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        node(&objects, "wfo-sick", true).await;
        // A cluster wholly not ready is not evicted: another node is fine.
        node(&objects, "wfo-fine", true).await;
        let owner = deployment(&objects, "web").await;
        let drained = pod(&objects, &owner, Some("wfo-sick")).await;
        let patient = pod(&objects, &owner, Some("wfo-sick")).await;
        tolerate_forever(&objects, &patient, TAINT_NOT_READY).await;
        // Tolerating the other condition does not count.
        let other = pod(&objects, &owner, Some("wfo-sick")).await;
        tolerate_forever(&objects, &other, TAINT_UNREACHABLE).await;
        let set_reason = async |reason: Option<&str>| {
            objects
                .modify::<Node>(None, "wfo-sick", |n| {
                    n.status.not_ready_reason = reason.map(str::to_string);
                    true
                })
                .await
                .unwrap();
        };
        let mut eviction = NodeEviction::new(objects.clone(), at_once());

        set_reason(Some("runc does not run")).await;
        let sick = pass_then_node(&mut eviction, &objects, "wfo-sick").await;
        let keys: Vec<&str> = sick.spec.taints.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, [TAINT_NOT_READY]);
        assert_eq!(sick.spec.taints[0].effect, TaintEffect::NoExecute);
        // The agent lives: its pods are deleted gracefully, not removed.
        let terminating = async |name: &str| {
            let pod: Pod = objects.require(Some("shop"), name).await.unwrap();
            pod.metadata.is_terminating()
        };
        assert!(terminating(&drained.metadata.name).await);
        assert!(terminating(&other.metadata.name).await);
        assert!(!terminating(&patient.metadata.name).await);

        // The lease lost too: unreachable replaces not-ready.
        set_ready(&objects, "wfo-sick", false).await;
        let lost = pass_then_node(&mut eviction, &objects, "wfo-sick").await;
        assert_eq!(carried_conditions(&lost), [TAINT_UNREACHABLE]);
        // Healthy again: no condition taint.
        set_ready(&objects, "wfo-sick", true).await;
        set_reason(None).await;
        let healthy = pass_then_node(&mut eviction, &objects, "wfo-sick").await;
        assert!(healthy.spec.taints.is_empty());
    }

    #[tokio::test]
    async fn a_node_starting_up_is_not_tainted_nor_spends_the_zones_token() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        node(&objects, "wfo-up", true).await;
        node(&objects, "wfo-new", false).await;
        let mut eviction = NodeEviction::new(objects.clone(), EvictionConfig::default());
        let new = pass_then_node(&mut eviction, &objects, "wfo-new").await;
        assert!(new.spec.taints.is_empty(), "within its startup grace");
        // Its agent beats; then another node dies: the token is still there.
        set_ready(&objects, "wfo-new", true).await;
        node(&objects, "wfo-dies", true).await;
        objects
            .modify::<Node>(None, "wfo-dies", |n| {
                n.metadata.created_at -= 10_000;
                n.status.ready = false;
                true
            })
            .await
            .unwrap();
        let dead = pass_then_node(&mut eviction, &objects, "wfo-dies").await;
        assert_eq!(carried_conditions(&dead), [TAINT_UNREACHABLE]);
    }

    #[test]
    fn the_condition_taint_follows_lease_and_reported_readiness() {
        let mut node = Node::new("wfo-n", wharf_api::Resources::default());
        assert_eq!(condition_taint(&node), Some(TAINT_UNREACHABLE));
        node.status.not_ready_reason = Some("runtime".into());
        assert_eq!(condition_taint(&node), Some(TAINT_UNREACHABLE));
        node.status.ready = true;
        assert_eq!(condition_taint(&node), Some(TAINT_NOT_READY));
        assert!(!conditions_in_step(&node));
        node.status.not_ready_reason = None;
        assert_eq!(condition_taint(&node), None);
        assert!(conditions_in_step(&node));
    }

    #[test]
    fn an_empty_bucket_says_when_its_next_token_comes() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(0.5, start);
        assert!(bucket.try_take(start));
        assert!(!bucket.try_take(start + Duration::from_secs(1)));
        let wait = bucket.until_token().unwrap();
        assert!(wait.abs_diff(Duration::from_secs(1)) < Duration::from_millis(1));
        bucket.set_rate(0.0, start + Duration::from_secs(1));
        assert_eq!(bucket.until_token(), None);
    }

    #[tokio::test]
    async fn nothing_is_evicted_while_the_node_holds_a_lease() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        node(&objects, "wtf-back", false).await;
        let owner = deployment(&objects, "web").await;
        let kept = pod(&objects, &owner, Some("wtf-back")).await;
        // The agent beat again, but readiness has not caught up yet.
        objects
            .heartbeat("wtf-back", None, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(!objects.evict_from_lost_node(&kept).await.unwrap());
        assert!(pod_exists(&objects, &kept.metadata.name).await);
    }
}
