//! The tracker's logic: which peers hold which pieces of which blob, and
//! whom each downloading node fetches from. Pure: no IO, the clock is
//! passed in, so the server wraps it in a lock and tests drive it directly.
//!
//! Rules, per blob (a "task"):
//! - A downloading node gets up to [`TrackerConfig::max_parents`] parents:
//!   live peers (not stale, not `Failed`/`Left`) holding a piece it lacks
//!   (or its IDC's seed, still fetching, before it holds any),
//!   never itself, never one it blocklisted for this blob, never one that
//!   (transitively) fetches from it. Ranked: same IDC, same pool, fewest
//!   children handed it already (spreads the swarm's load), `Done`
//!   before `Downloading`, free upload slots, measured throughput, pieces
//!   held.
//! - It also gets up to [`TrackerConfig::max_neighbors`] neighbors: other
//!   such peers holding pieces it lacks, whichever way the parent graph
//!   runs between them. A node asks a neighbor only for pieces it holds
//!   (answered at once, never held waiting), so no two nodes ever wait on
//!   each other, while pieces flow both ways between peers: the only way
//!   for every uplink to carry its share, instead of each node taking
//!   everything from the few peers ahead of it in the graph.
//! - The first node of a task in an IDC is that IDC's seed: it goes back to
//!   source (the registry). An IDC has at most one live seed per blob; when
//!   the seed goes stale or fails before any peer of the IDC is `Done`, the
//!   next downloading node of that IDC to ask is promoted.
//! - Peers that stop reporting expire; a task without peers is dropped;
//!   tasks and peers are capped ([`TrackerConfig`]), and a node the tracker
//!   has no room for is sent to the source untracked (a pull never fails
//!   because of P2P).
//! - The state is rebuilt from reports: a report for a task the tracker
//!   does not know (it restarted) registers the peer with its bitmap.
//!
//! Nodes without an IDC label share one unnamed IDC; likewise for pools.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use wharf_oci::Digest;

use crate::wire::{Parent, PeerReport, PeerState};
use crate::{Bitmap, P2pError, PieceManifest};

/// Most parents a blocklist remembers per node and blob: more bad parents
/// than that means the node should go to the source anyway.
const MAX_BLOCKLIST: usize = 256;

/// The tracker's limits and timing.
#[derive(Clone, Debug)]
pub struct TrackerConfig {
    /// Most parents handed to one node at a time.
    pub max_parents: usize,
    /// Most neighbors handed to one node at a time.
    pub max_neighbors: usize,
    /// A peer not heard from for this long is stale: handed to no one,
    /// no longer a seed, and forgotten.
    pub stale_after: Duration,
    /// Most blobs tracked at once.
    pub max_tasks: usize,
    /// Most peers tracked at once, over all blobs.
    pub max_peers: usize,
}

impl TrackerConfig {
    /// The defaults for agents reporting every `report_interval`: 4
    /// parents and 4 neighbors, stale after 8 missed reports (a seed whose
    /// uplink is full of pieces gets its reports through late; taking it
    /// for dead sends a second node of its IDC to the registry), 4,096
    /// blobs and 65,536 peers (about 100 bytes plus the bitmap each: some
    /// 10 MiB at most).
    pub fn for_report_interval(report_interval: Duration) -> TrackerConfig {
        TrackerConfig {
            max_parents: 4,
            max_neighbors: 4,
            stale_after: report_interval * 8,
            max_tasks: 4096,
            max_peers: 65_536,
        }
    }
}

/// The node asking: who it is and where it can be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The node's name.
    pub node: String,
    /// Its agent endpoint (`http://host:port`); a node without one
    /// downloads but is handed to no one as a parent.
    pub url: Option<String>,
    /// Its `wharf.io/idc` label.
    pub idc: Option<String>,
    /// Its `wharf.io/pool` label.
    pub pool: Option<String>,
}

/// What a node says about its download: a fresh start (a task request) or
/// a report.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerUpdate {
    /// Where it stands.
    pub state: PeerState,
    /// The pieces it holds, verified.
    pub pieces: Bitmap,
    /// Upload slots free on it now.
    pub free_upload_slots: u32,
    /// Parents it will not take pieces from again, for this blob.
    pub bad_parents: Vec<String>,
    /// Bytes per second it measured from parents.
    pub throughput: Vec<(String, f64)>,
    /// Bytes it fetched from the registry so far.
    pub source_bytes: u64,
}

impl PeerUpdate {
    /// A node starting to fetch a blob of `piece_count` pieces.
    pub fn starting(piece_count: u32) -> PeerUpdate {
        PeerUpdate {
            state: PeerState::Downloading,
            pieces: Bitmap::new(piece_count),
            free_upload_slots: 0,
            bad_parents: Vec::new(),
            throughput: Vec::new(),
            source_bytes: 0,
        }
    }
}

impl From<&PeerReport> for PeerUpdate {
    fn from(report: &PeerReport) -> PeerUpdate {
        PeerUpdate {
            state: report.state,
            pieces: report.pieces.clone(),
            free_upload_slots: report.free_upload_slots,
            bad_parents: report.bad_parents.iter().map(|b| b.node.clone()).collect(),
            throughput: report
                .throughput
                .iter()
                .map(|t| (t.node.clone(), t.bytes_per_second))
                .collect(),
            source_bytes: report.source_bytes,
        }
    }
}

/// Where a node fetches from now.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    /// Peers to fetch pieces from, best first.
    pub parents: Vec<Parent>,
    /// Peers to fetch held pieces from, whichever way the parent graph
    /// runs (see the module's rules).
    pub neighbors: Vec<Parent>,
    /// Whether it fetches from the registry.
    pub back_to_source: bool,
    /// Whether this answer is the first to send the node to the source
    /// (it just became its IDC's seed, or the tracker is full): what the
    /// server counts.
    pub newly_back_to_source: bool,
    /// Parents the update named bad that the node had not named before
    /// for this blob (reports repeat a node's whole list): what the server
    /// counts as bad parent reports.
    pub newly_blocklisted: usize,
    /// Whether the tracker records this node (false only when full).
    pub tracked: bool,
}

/// One node's part in one task.
#[derive(Clone, Debug)]
struct Peer {
    info: PeerInfo,
    state: PeerState,
    pieces: Bitmap,
    last_report: Instant,
    free_upload_slots: u32,
    /// Bytes per second its children measured, smoothed.
    throughput: f64,
    /// The parents it was last handed.
    parents: Vec<String>,
    /// Parents it refused for this blob.
    blocklist: HashSet<String>,
    /// Whether it is its IDC's seed (fetches from the registry).
    back_to_source: bool,
    source_bytes: u64,
}

/// One blob being distributed.
#[derive(Debug)]
struct Task {
    piece_count: u32,
    peers: HashMap<String, Peer>,
}

/// Every blob being distributed and its peers, in memory.
#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    tasks: HashMap<Digest, Task>,
    peer_count: usize,
    last_sweep: Option<Instant>,
}

impl Tracker {
    /// An empty tracker.
    pub fn new(config: TrackerConfig) -> Tracker {
        Tracker {
            config,
            tasks: HashMap::new(),
            peer_count: 0,
            last_sweep: None,
        }
    }

    /// How many blobs are tracked.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// How many (node, blob) peers are tracked.
    pub fn peer_count(&self) -> usize {
        self.peer_count
    }

    /// Records what `peer` says about the blob of `manifest` at `now` and
    /// answers where it fetches from. Fails, changing nothing, when the
    /// update's bitmap does not fit the manifest.
    pub fn assign(
        &mut self,
        peer: PeerInfo,
        update: PeerUpdate,
        manifest: &PieceManifest,
        now: Instant,
    ) -> Result<Assignment, P2pError> {
        let piece_count = manifest.piece_count();
        if update.pieces.len() != piece_count {
            return Err(P2pError::InvalidReport(format!(
                "pieces: a bitmap of {} pieces for {} of {piece_count} pieces",
                update.pieces.len(),
                manifest.digest
            )));
        }
        if update.state == PeerState::Done && !update.pieces.is_complete() {
            return Err(P2pError::InvalidReport(format!(
                "pieces: state done with {} of {piece_count} pieces of {}",
                update.pieces.count(),
                manifest.digest
            )));
        }
        self.sweep_now_and_then(now);
        let stale_after = self.config.stale_after;
        if let Some(task) = self.tasks.get_mut(&manifest.digest) {
            let before = task.peers.len();
            task.peers.retain(|_, p| is_live(p, now, stale_after));
            self.peer_count -= before - task.peers.len();
        }
        let gone = matches!(update.state, PeerState::Failed | PeerState::Left);
        if gone {
            self.forget(&manifest.digest, &peer.node);
            return Ok(Assignment {
                parents: Vec::new(),
                neighbors: Vec::new(),
                back_to_source: false,
                newly_back_to_source: false,
                newly_blocklisted: 0,
                tracked: true,
            });
        }
        if !self.make_room(&manifest.digest, &peer.node) {
            let back_to_source = update.state == PeerState::Downloading;
            return Ok(Assignment {
                parents: Vec::new(),
                neighbors: Vec::new(),
                back_to_source,
                newly_back_to_source: back_to_source,
                newly_blocklisted: 0,
                tracked: false,
            });
        }
        let task = self
            .tasks
            .entry(manifest.digest.clone())
            .or_insert_with(|| Task {
                piece_count,
                peers: HashMap::new(),
            });
        if task.piece_count != piece_count {
            // The same digest always has the same manifest; a mismatch
            // can only be a manifest from another piece-size rule.
            task.peers.clear();
            task.piece_count = piece_count;
        }
        Ok(task.record_and_assign(peer, update, now, &self.config, &mut self.peer_count))
    }

    /// Drops peers that went stale by `now`, and tasks left without peers.
    pub fn expire(&mut self, now: Instant) {
        let stale_after = self.config.stale_after;
        let mut removed = 0;
        self.tasks.retain(|_, task| {
            let before = task.peers.len();
            task.peers.retain(|_, p| is_live(p, now, stale_after));
            removed += before - task.peers.len();
            !task.peers.is_empty()
        });
        self.peer_count -= removed;
        self.last_sweep = Some(now);
    }

    /// Forgets everything (what a restarted server starts from).
    pub fn reset(&mut self) {
        self.tasks.clear();
        self.peer_count = 0;
    }

    /// A full sweep costs a walk over every peer: once per staleness
    /// window is enough to keep memory bounded.
    fn sweep_now_and_then(&mut self, now: Instant) {
        let due = self
            .last_sweep
            .is_none_or(|last| now.saturating_duration_since(last) >= self.config.stale_after);
        if due {
            self.expire(now);
        }
    }

    fn forget(&mut self, digest: &Digest, node: &str) {
        if let Some(task) = self.tasks.get_mut(digest) {
            if task.peers.remove(node).is_some() {
                self.peer_count -= 1;
            }
            if task.peers.is_empty() {
                self.tasks.remove(digest);
            }
        }
    }

    /// Whether (`digest`, `node`) fits under the caps.
    fn make_room(&mut self, digest: &Digest, node: &str) -> bool {
        match self.tasks.get(digest) {
            Some(task) if task.peers.contains_key(node) => true,
            Some(_) => self.peer_count < self.config.max_peers,
            None => {
                self.tasks.len() < self.config.max_tasks && self.peer_count < self.config.max_peers
            }
        }
    }
}

/// Whether `peer` is its IDC's seed still fetching the blob from the
/// registry.
fn is_fetching_seed(peer: &Peer) -> bool {
    peer.back_to_source && peer.state == PeerState::Downloading
}

/// Whether `peer` may serve or seed: it reported recently and did not give
/// up.
fn is_live(peer: &Peer, now: Instant, stale_after: Duration) -> bool {
    !matches!(peer.state, PeerState::Failed | PeerState::Left)
        && now.saturating_duration_since(peer.last_report) < stale_after
}

impl Task {
    fn record_and_assign(
        &mut self,
        info: PeerInfo,
        update: PeerUpdate,
        now: Instant,
        config: &TrackerConfig,
        peer_count: &mut usize,
    ) -> Assignment {
        for (parent, rate) in &update.throughput {
            if let Some(parent) = self.peers.get_mut(parent)
                && rate.is_finite()
                && *rate >= 0.0
            {
                parent.throughput = if parent.throughput == 0.0 {
                    *rate
                } else {
                    (parent.throughput + rate) / 2.0
                };
            }
        }
        let node = info.node.clone();
        let peer = self.peers.entry(node.clone()).or_insert_with(|| {
            *peer_count += 1;
            Peer {
                info: info.clone(),
                state: update.state,
                pieces: Bitmap::new(update.pieces.len()),
                last_report: now,
                free_upload_slots: 0,
                throughput: 0.0,
                parents: Vec::new(),
                blocklist: HashSet::new(),
                back_to_source: false,
                source_bytes: 0,
            }
        });
        peer.info = info;
        peer.state = update.state;
        peer.pieces = update.pieces;
        peer.last_report = now;
        peer.free_upload_slots = update.free_upload_slots;
        peer.source_bytes = update.source_bytes;
        let mut newly_blocklisted = 0;
        for bad in update.bad_parents {
            if peer.blocklist.len() < MAX_BLOCKLIST && bad != node && peer.blocklist.insert(bad) {
                newly_blocklisted += 1;
            }
        }
        if peer.state == PeerState::Done {
            // A complete peer fetches nothing more.
            peer.parents.clear();
            peer.back_to_source = false;
            return Assignment {
                parents: Vec::new(),
                neighbors: Vec::new(),
                back_to_source: false,
                newly_back_to_source: false,
                newly_blocklisted,
                tracked: true,
            };
        }
        let was_seed = peer.back_to_source;
        let back_to_source = was_seed || self.must_seed(&node);
        let (parents, neighbors) = if back_to_source {
            (Vec::new(), Vec::new())
        } else {
            let parents = self.rank_parents(&node, config.max_parents);
            let neighbors = self.rank_neighbors(&node, &parents, config.max_neighbors);
            (parents, neighbors)
        };
        let peer = self.peers.get_mut(&node).expect("recorded above");
        peer.back_to_source = back_to_source;
        peer.parents = parents.iter().map(|p| p.node.clone()).collect();
        Assignment {
            parents,
            neighbors,
            back_to_source,
            newly_back_to_source: back_to_source && !was_seed,
            newly_blocklisted,
            tracked: true,
        }
    }

    /// Whether `node` (downloading, not yet a seed) must go to the source:
    /// nobody else in its IDC has or is fetching the blob, or its IDC's
    /// seed went away before any peer there completed and no other peer
    /// can give it anything.
    fn must_seed(&self, node: &str) -> bool {
        let me = &self.peers[node];
        // A peer without an endpoint serves no one: it neither seeds nor
        // completes for its IDC; nor, for this node, does one it
        // blocklisted (a complete peer serving corrupt pieces must not
        // keep everyone from the registry).
        let mut same_idc = self.peers.values().filter(|p| {
            p.info.node != node
                && p.info.url.is_some()
                && p.info.idc == me.info.idc
                && !me.blocklist.contains(&p.info.node)
        });
        let (mut any, mut seed_or_done) = (false, false);
        for p in &mut same_idc {
            any = true;
            seed_or_done |= p.back_to_source || p.state == PeerState::Done;
        }
        if !any {
            return true;
        }
        !seed_or_done
            && self
                .candidates(node)
                .all(|p| self.fetches_from(&p.info.node, node))
    }

    /// Peers that could give `node` a piece now, cycles aside: checking
    /// those walks the parent graph, so it is done only for the few
    /// handed out ([`Task::fetches_from`]). A seed still fetching counts
    /// even before its first piece: its children hold their requests
    /// until each piece lands, rather than learn of the seed a report
    /// interval later.
    fn candidates<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Peer> + 'a {
        let me = &self.peers[node];
        self.peers.values().filter(move |p| {
            p.info.node != node
                && p.info.url.is_some()
                && !me.blocklist.contains(&p.info.node)
                && (has_piece_missing_from(&p.pieces, &me.pieces) || is_fetching_seed(p))
        })
    }

    /// The best `max` candidates for `node`, best first.
    fn rank_parents(&self, node: &str, max: usize) -> Vec<Parent> {
        let me = &self.peers[node];
        // Children already handed each peer (other than `node`): without
        // this every asker within a report interval gets the same best
        // parents, whose slots then answer "busy" while others idle.
        let mut children: HashMap<&str, usize> = HashMap::new();
        for peer in self.peers.values().filter(|p| p.info.node != node) {
            for parent in &peer.parents {
                *children.entry(parent.as_str()).or_default() += 1;
            }
        }
        let children_of = |p: &Peer| children.get(p.info.node.as_str()).copied().unwrap_or(0);
        let mut ranked: Vec<&Peer> = self.candidates(node).collect();
        ranked.sort_by(|a, b| {
            let key = |p: &Peer| {
                (
                    p.info.idc == me.info.idc,
                    p.info.pool == me.info.pool,
                    std::cmp::Reverse(children_of(p)),
                    p.state == PeerState::Done,
                    p.free_upload_slots,
                )
            };
            key(b)
                .cmp(&key(a))
                .then(b.throughput.total_cmp(&a.throughput))
                .then(b.pieces.count().cmp(&a.pieces.count()))
                .then(a.info.node.cmp(&b.info.node))
        });
        ranked
            .into_iter()
            .filter(|p| !self.fetches_from(&p.info.node, node))
            .take(max)
            .map(as_parent)
            .collect()
    }

    /// Up to `max` peers outside `parents` holding pieces `node` lacks:
    /// same IDC, then same pool, then those holding the most such pieces;
    /// ties broken by a hash of the pair, so that nodes alike in every
    /// other way are not all handed the same neighbors.
    fn rank_neighbors(&self, node: &str, parents: &[Parent], max: usize) -> Vec<Parent> {
        let me = &self.peers[node];
        let mut ranked: Vec<(usize, &Peer)> = self
            .candidates(node)
            .filter(|p| !parents.iter().any(|parent| parent.node == p.info.node))
            .map(|p| {
                let useful = p.pieces.held().filter(|&i| !me.pieces.has(i)).count();
                (useful, p)
            })
            .filter(|&(useful, _)| useful > 0)
            .collect();
        ranked.sort_by_key(|&(useful, p)| {
            std::cmp::Reverse((
                p.info.idc == me.info.idc,
                p.info.pool == me.info.pool,
                useful,
                pair_hash(node, &p.info.node),
            ))
        });
        ranked
            .into_iter()
            .take(max)
            .map(|(_, p)| as_parent(p))
            .collect()
    }

    /// Whether `from` fetches, directly or through its parents' parents,
    /// from `target`: handing `from` to `target` would close a cycle.
    fn fetches_from(&self, from: &str, target: &str) -> bool {
        let mut seen = HashSet::new();
        let mut queue = vec![from];
        while let Some(current) = queue.pop() {
            if !seen.insert(current) {
                continue;
            }
            let Some(peer) = self.peers.get(current) else {
                continue;
            };
            for parent in &peer.parents {
                if parent == target {
                    return true;
                }
                queue.push(parent);
            }
        }
        false
    }
}

/// `peer` as the wire names a peer to fetch from.
fn as_parent(peer: &Peer) -> Parent {
    Parent {
        node: peer.info.node.clone(),
        url: peer.info.url.clone().unwrap_or_default(),
        idc: peer.info.idc.clone(),
        pool: peer.info.pool.clone(),
        pieces: peer.pieces.clone(),
        seed: is_fetching_seed(peer),
    }
}

/// A number fixed for the pair and scattered over pairs.
fn pair_hash(a: &str, b: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (a, b).hash(&mut hasher);
    hasher.finish()
}

/// Whether `theirs` holds a piece `mine` lacks.
fn has_piece_missing_from(theirs: &Bitmap, mine: &Bitmap) -> bool {
    theirs.held().any(|i| !mine.has(i))
}

#[cfg(test)]
mod tests {
    use wharf_oci::DigestAlgorithm;

    use super::*;

    const PIECES: u32 = 8;

    fn manifest() -> PieceManifest {
        let size = u64::from(PIECES) * (4 << 20);
        PieceManifest {
            digest: Digest::of(DigestAlgorithm::Sha256, b"blob"),
            size,
            piece_size: 4 << 20,
            pieces: (0..PIECES)
                .map(|i| Digest::of(DigestAlgorithm::Sha256, &i.to_le_bytes()))
                .collect(),
        }
    }

    /// Stale after 3 s, which the tests below count on.
    fn tracker() -> Tracker {
        Tracker::new(TrackerConfig {
            stale_after: Duration::from_secs(3),
            ..TrackerConfig::for_report_interval(Duration::from_secs(1))
        })
    }

    fn node(name: &str, idc: &str, pool: &str) -> PeerInfo {
        PeerInfo {
            node: name.into(),
            url: Some(format!("http://{name}:7701")),
            idc: Some(idc.into()),
            pool: Some(pool.into()),
        }
    }

    fn holding(pieces: &[u32]) -> PeerUpdate {
        let mut update = PeerUpdate::starting(PIECES);
        pieces.iter().for_each(|&i| update.pieces.set(i));
        update
    }

    fn done() -> PeerUpdate {
        PeerUpdate {
            state: PeerState::Done,
            pieces: Bitmap::full(PIECES),
            ..PeerUpdate::starting(PIECES)
        }
    }

    fn names(assignment: &Assignment) -> Vec<&str> {
        assignment.parents.iter().map(|p| p.node.as_str()).collect()
    }

    #[test]
    fn the_first_node_of_an_idc_seeds_and_the_next_ones_fetch_from_it() {
        let (mut t, m, now) = (tracker(), manifest(), Instant::now());
        let first = t
            .assign(
                node("a", "east", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                now,
            )
            .unwrap();
        assert!(first.back_to_source && first.parents.is_empty());
        assert!(first.newly_back_to_source);
        let again = t
            .assign(
                node("a", "east", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                now,
            )
            .unwrap();
        assert!(again.back_to_source && !again.newly_back_to_source);

        // The seed has nothing yet: the second does not seed, it gets the
        // seed as its parent (its requests wait there for the pieces).
        let second = t
            .assign(
                node("b", "east", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                now,
            )
            .unwrap();
        assert!(!second.back_to_source);
        assert_eq!(names(&second), ["a"]);
        assert_eq!(second.parents[0].pieces.count(), 0);
        assert!(second.parents[0].seed, "children know their seed");

        t.assign(node("a", "east", "p"), holding(&[0, 1]), &m, now)
            .unwrap();
        let second = t
            .assign(
                node("b", "east", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                now,
            )
            .unwrap();
        assert!(!second.back_to_source);
        assert_eq!(names(&second), ["a"]);
        assert_eq!(second.parents[0].pieces.count(), 2);

        // Another IDC gets its own seed, even though east could serve.
        let west = t
            .assign(
                node("c", "west", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                now,
            )
            .unwrap();
        assert!(west.back_to_source);
        assert_eq!(t.task_count(), 1);
        assert_eq!(t.peer_count(), 3);
    }

    #[test]
    fn an_idc_has_one_live_seed_at_a_time() {
        let (mut t, m, now) = (tracker(), manifest(), Instant::now());
        t.assign(
            node("a", "east", "p"),
            PeerUpdate::starting(PIECES),
            &m,
            now,
        )
        .unwrap();
        for name in ["b", "c", "d", "e"] {
            let a = t
                .assign(
                    node(name, "east", "p"),
                    PeerUpdate::starting(PIECES),
                    &m,
                    now,
                )
                .unwrap();
            assert!(!a.back_to_source, "{name} must not seed too");
        }
    }

    #[test]
    fn same_idc_then_same_pool_then_done_come_first() {
        let (mut t, m, now) = (tracker(), manifest(), Instant::now());
        t.assign(node("far-done", "west", "p1"), done(), &m, now)
            .unwrap();
        t.assign(node("near-other-pool", "east", "p2"), done(), &m, now)
            .unwrap();
        t.assign(
            node("near-same-pool-partial", "east", "p1"),
            holding(&[0]),
            &m,
            now,
        )
        .unwrap();
        t.assign(node("near-same-pool-done", "east", "p1"), done(), &m, now)
            .unwrap();
        let child = t
            .assign(
                node("child", "east", "p1"),
                PeerUpdate::starting(PIECES),
                &m,
                now,
            )
            .unwrap();
        assert!(!child.back_to_source);
        assert_eq!(
            names(&child),
            [
                "near-same-pool-done",
                "near-same-pool-partial",
                "near-other-pool",
                "far-done"
            ]
        );
    }

    #[test]
    fn fewer_children_then_slots_throughput_and_pieces_rank_and_at_most_four_are_given() {
        let (mut t, m, now) = (tracker(), manifest(), Instant::now());
        let with = |pieces: &[u32], slots: u32| PeerUpdate {
            free_upload_slots: slots,
            ..holding(pieces)
        };
        // The IDC's seed, still fetching, is everyone's parent: with the
        // most children it ranks last.
        let seed = t
            .assign(node("seed", "east", "p"), with(&[0], 9), &m, now)
            .unwrap();
        assert!(seed.back_to_source);
        t.assign(node("slots", "east", "p"), with(&[0], 5), &m, now)
            .unwrap();
        t.assign(node("fast", "east", "p"), with(&[0], 1), &m, now)
            .unwrap();
        t.assign(node("slow", "east", "p"), with(&[0], 1), &m, now)
            .unwrap();
        t.assign(node("many", "east", "p"), with(&[0, 1, 2], 0), &m, now)
            .unwrap();
        t.assign(node("few", "east", "p"), with(&[0], 0), &m, now)
            .unwrap();
        // A peer measured "fast" faster than "slow"; it holds more than
        // anyone but the seed, so it takes no other parent itself.
        let report = PeerUpdate {
            throughput: vec![("fast".into(), 9e6), ("slow".into(), 1e6)],
            ..holding(&[0, 1, 2, 5])
        };
        t.assign(node("reporter", "east", "p"), report, &m, now)
            .unwrap();
        let child = t
            .assign(
                node("child", "east", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                now,
            )
            .unwrap();
        // "many" already serves "few": the idle ones come first, then by
        // slots, throughput and pieces ("reporter" over "few").
        assert_eq!(names(&child), ["slots", "fast", "slow", "reporter"]);
    }

    #[test]
    fn parents_never_form_a_cycle() {
        let (mut t, m, now) = (tracker(), manifest(), Instant::now());
        t.assign(node("seed", "east", "p"), holding(&[0]), &m, now)
            .unwrap();
        // b fetches from seed; c fetches from b and seed.
        let b = t
            .assign(
                node("b", "east", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                now,
            )
            .unwrap();
        assert_eq!(names(&b), ["seed"]);
        t.assign(node("b", "east", "p"), holding(&[0]), &m, now)
            .unwrap();
        let c = t
            .assign(node("c", "east", "p"), holding(&[1]), &m, now)
            .unwrap();
        assert!(names(&c).contains(&"b"));
        // b now lacks piece 1, which only c holds; but c fetches from b.
        let b = t
            .assign(node("b", "east", "p"), holding(&[0]), &m, now)
            .unwrap();
        assert!(!names(&b).contains(&"c"), "{:?}", names(&b));
        // Transitively too: d fetches from c only, c from b: b must not
        // get d, which alone holds piece 2.
        let d_report = PeerUpdate {
            bad_parents: vec!["b".into(), "seed".into()],
            ..holding(&[2])
        };
        let d = t.assign(node("d", "east", "p"), d_report, &m, now).unwrap();
        assert_eq!(names(&d), ["c"]);
        let b = t
            .assign(node("b", "east", "p"), holding(&[0]), &m, now)
            .unwrap();
        assert_eq!(names(&b), ["seed"], "the seed only: it is fetching");
        let seed = t
            .assign(node("seed", "east", "p"), holding(&[0]), &m, now)
            .unwrap();
        assert!(seed.back_to_source, "the seed stays on the source");
    }

    #[test]
    fn neighbors_hold_pieces_the_node_lacks_whichever_way_the_graph_runs() {
        let (mut t, m, now) = (tracker(), manifest(), Instant::now());
        let seed = t
            .assign(node("seed", "east", "p"), holding(&[0]), &m, now)
            .unwrap();
        assert!(
            seed.neighbors.is_empty(),
            "the seed fetches from the registry"
        );
        t.assign(node("b", "east", "p"), holding(&[0]), &m, now)
            .unwrap();
        let c = t
            .assign(node("c", "east", "p"), holding(&[1]), &m, now)
            .unwrap();
        assert!(names(&c).contains(&"b"));
        // c fetches from b, so it cannot be b's parent; b may still take
        // the piece c holds from it, and e, holding nothing b lacks, is no
        // one's neighbor.
        t.assign(node("e", "east", "p"), holding(&[0]), &m, now)
            .unwrap();
        let b = t
            .assign(node("b", "east", "p"), holding(&[0]), &m, now)
            .unwrap();
        let neighbors = |a: &Assignment| {
            a.neighbors
                .iter()
                .map(|p| p.node.clone())
                .collect::<Vec<_>>()
        };
        assert!(!names(&b).contains(&"c"));
        assert_eq!(neighbors(&b), ["c"]);
        assert!(
            b.neighbors
                .iter()
                .all(|n| !names(&b).contains(&n.node.as_str()))
        );

        // At most four, outside the parents, those holding the most
        // pieces b lacks first; none b blocklisted.
        let others: [(&str, &[u32]); 8] = [
            ("f", &[2, 3, 4]),
            ("g", &[2, 3]),
            ("h", &[2]),
            ("i", &[2]),
            ("j", &[2]),
            ("k", &[2]),
            ("l", &[2]),
            ("m", &[2]),
        ];
        for (name, pieces) in others {
            t.assign(node(name, "east", "p"), holding(pieces), &m, now)
                .unwrap();
        }
        let report = PeerUpdate {
            bad_parents: vec!["c".into()],
            ..holding(&[0])
        };
        let b = t.assign(node("b", "east", "p"), report, &m, now).unwrap();
        // Each of them got b as a parent, so none can be b's parent: b
        // could take their pieces only as a neighbor's.
        assert_eq!(names(&b), ["seed"]);
        let listed = neighbors(&b);
        assert_eq!(listed.len(), 4, "{listed:?}");
        assert_eq!(listed[..2], ["f", "g"], "those holding the most first");
        assert!(!listed.contains(&"c".to_string()), "c is blocklisted");
    }

    #[test]
    fn a_blocklisted_parent_is_not_handed_out_again_for_that_blob() {
        let (mut t, m, now) = (tracker(), manifest(), Instant::now());
        t.assign(node("seed", "east", "p"), holding(&[0, 1]), &m, now)
            .unwrap();
        t.assign(node("liar", "east", "p"), done(), &m, now)
            .unwrap();
        let child = t
            .assign(
                node("child", "east", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                now,
            )
            .unwrap();
        assert_eq!(names(&child), ["liar", "seed"]);
        let report = PeerUpdate {
            bad_parents: vec!["liar".into()],
            ..PeerUpdate::starting(PIECES)
        };
        let child = t
            .assign(node("child", "east", "p"), report, &m, now)
            .unwrap();
        assert_eq!(names(&child), ["seed"]);
        let later = t
            .assign(node("child", "east", "p"), holding(&[0]), &m, now)
            .unwrap();
        assert_eq!(names(&later), ["seed"], "the blocklist is kept");
        // Other children still get it.
        let other = t
            .assign(
                node("other", "east", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                now,
            )
            .unwrap();
        assert_eq!(names(&other)[0], "liar");
    }

    #[test]
    fn a_bad_parent_counts_once_per_child_and_blob_however_often_reported() {
        let (mut t, m, now) = (tracker(), manifest(), Instant::now());
        t.assign(node("liar", "east", "p"), done(), &m, now)
            .unwrap();
        let naming = |bad: &[&str]| PeerUpdate {
            bad_parents: bad.iter().map(|b| b.to_string()).collect(),
            ..PeerUpdate::starting(PIECES)
        };
        let first = t
            .assign(node("child", "east", "p"), naming(&["liar"]), &m, now)
            .unwrap();
        assert_eq!(first.newly_blocklisted, 1);
        // Every later report repeats the list: nothing new.
        let again = t
            .assign(node("child", "east", "p"), naming(&["liar"]), &m, now)
            .unwrap();
        assert_eq!(again.newly_blocklisted, 0);
        // A node naming itself is not a bad parent.
        let itself = t
            .assign(
                node("child", "east", "p"),
                naming(&["liar", "child"]),
                &m,
                now,
            )
            .unwrap();
        assert_eq!(itself.newly_blocklisted, 0);
        // Another child naming the same parent is a report of its own,
        // and so is the last report of a child that completed.
        let other = t
            .assign(node("other", "east", "p"), naming(&["liar"]), &m, now)
            .unwrap();
        assert_eq!(other.newly_blocklisted, 1);
        let completed = PeerUpdate {
            bad_parents: vec!["liar".into()],
            ..done()
        };
        let last = t
            .assign(node("third", "east", "p"), completed, &m, now)
            .unwrap();
        assert_eq!(last.newly_blocklisted, 1);
    }

    #[test]
    fn a_child_that_blocklisted_the_only_complete_peer_goes_to_the_source() {
        let (mut t, m, now) = (tracker(), manifest(), Instant::now());
        t.assign(node("rotten", "east", "p"), done(), &m, now)
            .unwrap();
        let child = t
            .assign(
                node("child", "east", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                now,
            )
            .unwrap();
        assert_eq!(names(&child), ["rotten"]);
        assert!(!child.back_to_source);
        let report = PeerUpdate {
            bad_parents: vec!["rotten".into()],
            ..PeerUpdate::starting(PIECES)
        };
        let child = t
            .assign(node("child", "east", "p"), report, &m, now)
            .unwrap();
        assert!(child.back_to_source && child.parents.is_empty());
        // The others of the IDC now fetch from the new seed as well.
        let other = t
            .assign(
                node("other", "east", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                now,
            )
            .unwrap();
        assert!(!other.back_to_source);
        assert!(names(&other).contains(&"child"), "{:?}", names(&other));
    }

    #[test]
    fn a_seed_that_goes_stale_is_replaced_by_the_next_asking_child() {
        let (mut t, m, t0) = (tracker(), manifest(), Instant::now());
        let seed = t
            .assign(
                node("seed", "east", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                t0,
            )
            .unwrap();
        assert!(seed.back_to_source);
        t.assign(node("b", "east", "p"), PeerUpdate::starting(PIECES), &m, t0)
            .unwrap();
        t.assign(node("c", "east", "p"), PeerUpdate::starting(PIECES), &m, t0)
            .unwrap();
        // b and c keep reporting; the seed was killed and says nothing.
        let t1 = t0 + Duration::from_secs(2);
        for name in ["b", "c"] {
            t.assign(
                node(name, "east", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                t1,
            )
            .unwrap();
        }
        let t2 = t0 + Duration::from_secs(4);
        let b = t
            .assign(node("b", "east", "p"), PeerUpdate::starting(PIECES), &m, t2)
            .unwrap();
        assert!(b.back_to_source, "b is promoted");
        let c = t
            .assign(node("c", "east", "p"), PeerUpdate::starting(PIECES), &m, t2)
            .unwrap();
        assert!(!c.back_to_source, "one seed per IDC");
        assert_eq!(t.peer_count(), 2, "the dead seed is forgotten");
    }

    #[test]
    fn a_failed_seed_is_replaced_at_once() {
        let (mut t, m, now) = (tracker(), manifest(), Instant::now());
        t.assign(
            node("seed", "east", "p"),
            PeerUpdate::starting(PIECES),
            &m,
            now,
        )
        .unwrap();
        t.assign(
            node("b", "east", "p"),
            PeerUpdate::starting(PIECES),
            &m,
            now,
        )
        .unwrap();
        let failed = PeerUpdate {
            state: PeerState::Failed,
            ..PeerUpdate::starting(PIECES)
        };
        t.assign(node("seed", "east", "p"), failed, &m, now)
            .unwrap();
        let b = t
            .assign(
                node("b", "east", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                now,
            )
            .unwrap();
        assert!(b.back_to_source);
    }

    #[test]
    fn a_child_whose_parents_are_gone_and_seed_done_goes_on_with_the_done_peer() {
        let (mut t, m, now) = (tracker(), manifest(), Instant::now());
        t.assign(
            node("seed", "east", "p"),
            PeerUpdate::starting(PIECES),
            &m,
            now,
        )
        .unwrap();
        t.assign(node("seed", "east", "p"), done(), &m, now)
            .unwrap();
        let b = t
            .assign(
                node("b", "east", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                now,
            )
            .unwrap();
        assert!(!b.back_to_source);
        assert_eq!(names(&b), ["seed"]);
    }

    #[test]
    fn a_report_after_a_restart_rebuilds_the_task() {
        let (mut t, m, now) = (tracker(), manifest(), Instant::now());
        t.assign(
            node("a", "east", "p"),
            PeerUpdate::starting(PIECES),
            &m,
            now,
        )
        .unwrap();
        t.reset();
        assert_eq!((t.task_count(), t.peer_count()), (0, 0));
        // The old seed reports its progress: it is known again, and with
        // no one else in its IDC it seeds on.
        let a = t
            .assign(node("a", "east", "p"), holding(&[0, 1, 2]), &m, now)
            .unwrap();
        assert!(a.back_to_source);
        let b = t
            .assign(
                node("b", "east", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                now,
            )
            .unwrap();
        assert_eq!(names(&b), ["a"]);
        assert_eq!(b.parents[0].pieces.held().collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn stale_peers_expire_and_empty_tasks_are_dropped() {
        let (mut t, m, t0) = (tracker(), manifest(), Instant::now());
        t.assign(node("a", "east", "p"), done(), &m, t0).unwrap();
        t.assign(node("b", "east", "p"), PeerUpdate::starting(PIECES), &m, t0)
            .unwrap();
        t.expire(t0 + Duration::from_secs(2));
        assert_eq!((t.task_count(), t.peer_count()), (1, 2));
        t.expire(t0 + Duration::from_secs(3));
        assert_eq!((t.task_count(), t.peer_count()), (0, 0));
        // A stale peer is handed to no one even before a sweep.
        let mut t = tracker();
        t.assign(node("a", "east", "p"), done(), &m, t0).unwrap();
        let b = t
            .assign(
                node("b", "east", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                t0 + Duration::from_millis(3500),
            )
            .unwrap();
        assert!(b.back_to_source && b.parents.is_empty());
    }

    #[test]
    fn a_node_that_left_is_forgotten() {
        let (mut t, m, now) = (tracker(), manifest(), Instant::now());
        t.assign(node("a", "east", "p"), done(), &m, now).unwrap();
        let left = PeerUpdate {
            state: PeerState::Left,
            ..PeerUpdate::starting(PIECES)
        };
        t.assign(node("a", "east", "p"), left, &m, now).unwrap();
        assert_eq!((t.task_count(), t.peer_count()), (0, 0));
    }

    #[test]
    fn caps_bound_memory_and_an_untracked_node_goes_to_the_source() {
        let config = TrackerConfig {
            max_tasks: 1,
            max_peers: 2,
            ..TrackerConfig::for_report_interval(Duration::from_secs(1))
        };
        let (mut t, m, now) = (Tracker::new(config), manifest(), Instant::now());
        t.assign(node("a", "east", "p"), done(), &m, now).unwrap();
        t.assign(node("b", "east", "p"), holding(&[1]), &m, now)
            .unwrap();
        let c = t
            .assign(
                node("c", "east", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                now,
            )
            .unwrap();
        assert!(c.back_to_source && !c.tracked);
        let mut other = manifest();
        other.digest = Digest::of(DigestAlgorithm::Sha256, b"other");
        let d = t
            .assign(
                node("d", "east", "p"),
                PeerUpdate::starting(PIECES),
                &other,
                now,
            )
            .unwrap();
        assert!(d.back_to_source && !d.tracked);
        assert_eq!((t.task_count(), t.peer_count()), (1, 2));
        // Known peers still report.
        assert!(
            t.assign(node("b", "east", "p"), holding(&[1, 2]), &m, now)
                .unwrap()
                .tracked
        );
    }

    #[test]
    fn a_bitmap_that_does_not_fit_is_refused_and_changes_nothing() {
        let (mut t, m, now) = (tracker(), manifest(), Instant::now());
        let err = t
            .assign(node("a", "east", "p"), PeerUpdate::starting(3), &m, now)
            .unwrap_err();
        assert!(err.to_string().contains("pieces"), "{err}");
        let half_done = PeerUpdate {
            state: PeerState::Done,
            ..holding(&[0, 1])
        };
        let err = t
            .assign(node("a", "east", "p"), half_done, &m, now)
            .unwrap_err();
        assert!(err.to_string().contains("done with 2 of 8"), "{err}");
        assert_eq!(t.task_count(), 0);
    }

    #[test]
    fn a_node_without_an_endpoint_is_no_ones_parent() {
        let (mut t, m, now) = (tracker(), manifest(), Instant::now());
        let hidden = PeerInfo {
            url: None,
            ..node("hidden", "east", "p")
        };
        t.assign(hidden, done(), &m, now).unwrap();
        let b = t
            .assign(
                node("b", "east", "p"),
                PeerUpdate::starting(PIECES),
                &m,
                now,
            )
            .unwrap();
        assert!(b.parents.is_empty());
        assert!(b.back_to_source, "b seeds: the hidden node serves no one");
    }
}
