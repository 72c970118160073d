//! Preheat: warming nodes' image caches before a rollout, as Harbor and
//! Dragonfly do. A [`PreheatPolicy`] (per project) says which pushes warm
//! which nodes; a [`Preheat`] is one job: one image, by digest, pulled
//! into the caches of the nodes it was resolved to, each node reporting
//! its progress. [`preheat_targets`] decides the nodes (the seed peers of
//! each IDC and pool, or every ready node of one pool), a pure function.
//!
//! ```
//! use wharf_api::preheat::{PreheatPolicy, PreheatTarget};
//! let policy = PreheatPolicy::new("shop", "web-releases", "web", "v*", PreheatTarget::Seeds);
//! policy.validate().unwrap();
//! assert!(policy.matches("web", "v1.2"));
//! assert!(!policy.matches("web", "latest"));
//! ```

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use wharf_oci::{Digest, Reference, RepositoryName};

use crate::ObjectError;
use crate::glob::Glob;
use crate::meta::{ObjectMeta, check_name};
use crate::node::{LABEL_IDC, LABEL_POOL, Node};

/// Node label marking a node as its IDC's and pool's seed peer: the one
/// that fetches from the registry first and that preheats warm.
pub const LABEL_P2P_SEED: &str = "wharf.io/p2p-seed";

/// How many times an agent tries one preheat pull before it reports the
/// node `Failed`.
pub const PREHEAT_PULL_ATTEMPTS: u32 = 3;

/// How long a finished preheat is kept (from its last node's finish).
pub const PREHEAT_RETENTION_MILLIS: u64 = 7 * 24 * 3600 * 1000;

/// Which nodes a preheat warms: `seeds`, or `{pool: P}` (in JSON and
/// YAML alike).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "TargetForm", into = "TargetForm")]
pub enum PreheatTarget {
    /// The seed peer(s) of every IDC and pool ([`seed_peers`]).
    #[default]
    Seeds,
    /// Every ready node of this pool (label `wharf.io/pool`).
    Pool(String),
}

/// How a target is written: YAML readers take a Rust enum's map form for
/// a tag, so the two forms are spelled out.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
enum TargetForm {
    /// `seeds`.
    Word(String),
    /// `{pool: P}`.
    Pool {
        /// The pool.
        pool: String,
    },
}

impl TryFrom<TargetForm> for PreheatTarget {
    type Error = String;

    fn try_from(form: TargetForm) -> Result<PreheatTarget, String> {
        match form {
            TargetForm::Word(word) if word == "seeds" => Ok(PreheatTarget::Seeds),
            TargetForm::Word(word) => Err(format!(
                "target {word:?} is not one Wharf knows: use seeds or {{pool: NAME}}"
            )),
            TargetForm::Pool { pool } => Ok(PreheatTarget::Pool(pool)),
        }
    }
}

impl From<PreheatTarget> for TargetForm {
    fn from(target: PreheatTarget) -> TargetForm {
        match target {
            PreheatTarget::Seeds => TargetForm::Word("seeds".into()),
            PreheatTarget::Pool(pool) => TargetForm::Pool { pool },
        }
    }
}

impl std::fmt::Display for PreheatTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PreheatTarget::Seeds => f.write_str("seeds"),
            PreheatTarget::Pool(pool) => write!(f, "pool {pool}"),
        }
    }
}

/// A project's rule: pushes of matching repositories and tags warm nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreheatPolicy {
    /// Always `wharf.io/v1`.
    #[serde(default = "wharf_v1")]
    pub api_version: String,
    /// Always `PreheatPolicy`.
    #[serde(default = "policy_kind")]
    pub kind: String,
    /// Name and project.
    pub metadata: ObjectMeta,
    /// What it matches and what it warms.
    pub spec: PreheatPolicySpec,
}

/// What a preheat policy matches and warms.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreheatPolicySpec {
    /// Glob over the repository's name within the project (`web`,
    /// `team/*`, `**`): `*` within a path component, `**` across them.
    pub repository: String,
    /// Glob over the pushed tag (`v*`, `{1,2}.*`). Pushes by digest carry
    /// no tag and match no policy.
    pub tag: String,
    /// The nodes to warm; the seed peers when left out.
    #[serde(default)]
    pub target: PreheatTarget,
}

fn wharf_v1() -> String {
    "wharf.io/v1".into()
}

fn policy_kind() -> String {
    "PreheatPolicy".into()
}

fn preheat_kind() -> String {
    "Preheat".into()
}

impl PreheatPolicy {
    /// Policy `name` of `project`.
    pub fn new(
        project: &str,
        name: &str,
        repository: &str,
        tag: &str,
        target: PreheatTarget,
    ) -> PreheatPolicy {
        PreheatPolicy {
            api_version: wharf_v1(),
            kind: policy_kind(),
            metadata: ObjectMeta {
                name: name.into(),
                project: Some(project.into()),
                ..ObjectMeta::default()
            },
            spec: PreheatPolicySpec {
                repository: repository.into(),
                tag: tag.into(),
                target,
            },
        }
    }

    /// Checks the name, project, patterns and target.
    pub fn validate(&self) -> Result<(), ObjectError> {
        check_name("metadata.name", &self.metadata.name)?;
        let project = self.metadata.project.as_deref().unwrap_or_default();
        check_name("metadata.namespace", project)?;
        Glob::parse(&self.spec.repository)
            .map_err(|e| ObjectError::invalid("spec.repository", e))?;
        Glob::parse(&self.spec.tag).map_err(|e| ObjectError::invalid("spec.tag", e))?;
        check_target("spec.target.pool", &self.spec.target)
    }

    /// Whether a push of `tag` to `repository` (its name within the
    /// project) matches. A policy whose patterns do not parse matches
    /// nothing (stored policies were validated).
    pub fn matches(&self, repository: &str, tag: &str) -> bool {
        let matches =
            |pattern: &str, text: &str| Glob::parse(pattern).is_ok_and(|glob| glob.matches(text));
        matches(&self.spec.repository, repository) && matches(&self.spec.tag, tag)
    }
}

fn check_target(field: &str, target: &PreheatTarget) -> Result<(), ObjectError> {
    match target {
        PreheatTarget::Seeds => Ok(()),
        PreheatTarget::Pool(pool) => check_name(field, pool),
    }
}

/// One preheat job: an image pulled into the caches of some nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Preheat {
    /// Always `wharf.io/v1`.
    #[serde(default = "wharf_v1")]
    pub api_version: String,
    /// Always `Preheat`.
    #[serde(default = "preheat_kind")]
    pub kind: String,
    /// Name (generated) and project.
    pub metadata: ObjectMeta,
    /// The image and the nodes it was meant for.
    pub spec: PreheatSpec,
    /// Where each node stands.
    #[serde(default)]
    pub status: PreheatStatus,
}

/// What a preheat pulls, and for whom.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreheatSpec {
    /// The whole repository name (`shop/web`).
    pub repository: String,
    /// The tag (or digest) the image was named by when the preheat began.
    pub reference: String,
    /// The manifest digest nodes pull: a tag moved later changes nothing.
    pub digest: String,
    /// What the nodes were resolved from.
    pub target: PreheatTarget,
    /// The policy that started it; none for `wharf image preheat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Who pushed (policy) or asked (explicit).
    #[serde(default)]
    pub requested_by: String,
}

/// A preheat's overall state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PreheatPhase {
    /// No node has started.
    #[default]
    Pending,
    /// Some node is pulling or has yet to start, and some has started.
    Running,
    /// Every node holds the image.
    Succeeded,
    /// Every node finished and at least one failed, or there was no node.
    Failed,
}

/// One node's part of a preheat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NodePreheatState {
    /// The node has not picked it up yet.
    #[default]
    Pending,
    /// The node is pulling.
    Pulling,
    /// The image is in the node's cache.
    Done,
    /// The node gave up (see the message).
    Failed,
}

impl NodePreheatState {
    /// Whether the node is finished with it.
    pub fn is_final(self) -> bool {
        matches!(self, NodePreheatState::Done | NodePreheatState::Failed)
    }
}

/// Where one node stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePreheat {
    /// The node.
    pub node: String,
    /// How far it got.
    #[serde(default)]
    pub state: NodePreheatState,
    /// Why it failed, or the latest progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Bytes of the image in its cache so far (all of it once done).
    #[serde(default)]
    pub bytes: u64,
    /// Bytes of the whole image, once the node knows.
    #[serde(default)]
    pub total_bytes: u64,
    /// When it started pulling, unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    /// When it finished, unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
}

/// Where a preheat stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreheatStatus {
    /// Overall, from the nodes' states ([`PreheatStatus::phase_of`]).
    #[serde(default)]
    pub phase: PreheatPhase,
    /// Why there is nothing to do (no ready node matched the target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// One entry per node it was resolved to, by name.
    #[serde(default)]
    pub nodes: Vec<NodePreheat>,
}

impl PreheatStatus {
    /// The phase `nodes` add up to.
    ///
    /// ```
    /// use wharf_api::preheat::{NodePreheat, NodePreheatState::*, PreheatPhase, PreheatStatus};
    /// let node = |state| NodePreheat { state, ..NodePreheat::default() };
    /// assert_eq!(PreheatStatus::phase_of(&[node(Done), node(Pending)]), PreheatPhase::Running);
    /// assert_eq!(PreheatStatus::phase_of(&[node(Done), node(Failed)]), PreheatPhase::Failed);
    /// assert_eq!(PreheatStatus::phase_of(&[]), PreheatPhase::Failed);
    /// ```
    pub fn phase_of(nodes: &[NodePreheat]) -> PreheatPhase {
        let count = |state| nodes.iter().filter(|n| n.state == state).count();
        if nodes.is_empty() || count(NodePreheatState::Failed) == nodes.len() {
            return PreheatPhase::Failed;
        }
        if nodes.iter().all(|n| n.state.is_final()) {
            if count(NodePreheatState::Failed) > 0 {
                return PreheatPhase::Failed;
            }
            return PreheatPhase::Succeeded;
        }
        if count(NodePreheatState::Pending) == nodes.len() {
            PreheatPhase::Pending
        } else {
            PreheatPhase::Running
        }
    }
}

impl Preheat {
    /// A new preheat of `repository@digest` (named by `reference`) for
    /// `nodes`, pending; named from the digest and `now` (unix ms).
    pub fn new(
        repository: &RepositoryName,
        reference: &str,
        digest: &Digest,
        target: PreheatTarget,
        nodes: Vec<String>,
        now: u64,
    ) -> Preheat {
        let mut nodes: Vec<NodePreheat> = nodes
            .into_iter()
            .map(|node| NodePreheat {
                node,
                ..NodePreheat::default()
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        let message = nodes
            .is_empty()
            .then(|| format!("no ready node matches the target ({target})"));
        Preheat {
            api_version: wharf_v1(),
            kind: preheat_kind(),
            metadata: ObjectMeta {
                name: Preheat::name_for(digest, now),
                project: Some(repository.project().to_string()),
                ..ObjectMeta::default()
            },
            spec: PreheatSpec {
                repository: repository.to_string(),
                reference: reference.to_string(),
                digest: digest.to_string(),
                target,
                policy: None,
                requested_by: String::new(),
            },
            status: PreheatStatus {
                phase: PreheatStatus::phase_of(&nodes),
                message,
                nodes,
            },
        }
    }

    /// `ph-<12 hex digits of the digest>-<now in base 36>`: one name per
    /// image and millisecond, sorting by digest then roughly by time.
    pub fn name_for(digest: &Digest, now: u64) -> String {
        let hex: String = digest
            .to_string()
            .split(':')
            .nth(1)
            .unwrap_or_default()
            .chars()
            .take(12)
            .collect();
        format!("ph-{hex}-{}", base36(now))
    }

    /// Checks the name, the image and the target.
    pub fn validate(&self) -> Result<(), ObjectError> {
        check_name("metadata.name", &self.metadata.name)?;
        let repository: RepositoryName = self
            .spec
            .repository
            .parse()
            .map_err(|e| ObjectError::invalid("spec.repository", format!("{e}")))?;
        if self.metadata.project.as_deref() != Some(repository.project()) {
            return Err(ObjectError::invalid(
                "metadata.namespace",
                format!(
                    "a preheat of {repository} belongs to project {}",
                    repository.project()
                ),
            ));
        }
        self.spec
            .reference
            .parse::<Reference>()
            .map_err(|e| ObjectError::invalid("spec.reference", format!("{e}")))?;
        self.spec
            .digest
            .parse::<Digest>()
            .map_err(|e| ObjectError::invalid("spec.digest", format!("{e}")))?;
        check_target("spec.target.pool", &self.spec.target)
    }

    /// Whether every node finished it more than `keep` milliseconds before
    /// `now` (a preheat no node was found for counts from its creation).
    /// Unfinished preheats never expire.
    ///
    /// ```
    /// # use wharf_api::preheat::*;
    /// let mut job = Preheat::new(&"shop/web".parse().unwrap(), "1", &"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".parse().unwrap(), PreheatTarget::Seeds, vec!["n1".into()], 0);
    /// assert!(!job.expired(u64::MAX, 10), "n1 has not finished");
    /// job.record("n1", &PreheatReport { state: NodePreheatState::Done, ..PreheatReport::default() }, 100).unwrap();
    /// assert!(!job.expired(110, 10));
    /// assert!(job.expired(111, 10));
    /// ```
    pub fn expired(&self, now: u64, keep: u64) -> bool {
        if !self.status.nodes.iter().all(|n| n.state.is_final()) {
            return false;
        }
        let finished = self
            .status
            .nodes
            .iter()
            .filter_map(|n| n.finished_at)
            .max()
            .unwrap_or(self.metadata.created_at);
        now.saturating_sub(finished) > keep
    }

    /// The image nodes pull: `repository@digest`, without a registry host
    /// (the node's own registry).
    pub fn image(&self) -> String {
        format!("{}@{}", self.spec.repository, self.spec.digest)
    }

    /// Records `report` from `node`: its state, bytes and message, the
    /// times, and the phase they add up to. Refused (naming the node) when
    /// the node is not one of this preheat's, or is already finished.
    pub fn record(
        &mut self,
        node: &str,
        report: &PreheatReport,
        now: u64,
    ) -> Result<(), ObjectError> {
        let entry = self
            .status
            .nodes
            .iter_mut()
            .find(|n| n.node == node)
            .ok_or_else(|| {
                ObjectError::invalid(
                    "node",
                    format!(
                        "node {node} is not a target of preheat {}",
                        self.metadata.name
                    ),
                )
            })?;
        if entry.state.is_final() {
            return Err(ObjectError::invalid(
                "state",
                format!(
                    "node {node} already finished preheat {} ({:?})",
                    self.metadata.name, entry.state
                ),
            ));
        }
        if report.state == NodePreheatState::Pending {
            return Err(ObjectError::invalid(
                "state",
                "a node reports Pulling, Done or Failed",
            ));
        }
        entry.state = report.state;
        entry.bytes = report.bytes;
        entry.total_bytes = report.total_bytes.max(report.bytes);
        entry.message = report.message.clone();
        entry.started_at.get_or_insert(now);
        if report.state.is_final() {
            entry.finished_at = Some(now);
        }
        self.status.phase = PreheatStatus::phase_of(&self.status.nodes);
        Ok(())
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii digits")
}

/// `POST /api/v1/projects/{project}/preheats`: warm nodes with an image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreheatRequest {
    /// The repository's name within the project (`web`).
    pub repository: String,
    /// A tag or a digest.
    pub reference: String,
    /// Every ready node of this pool; the seed peers when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// What a node is asked to preheat (`GET /api/v1/nodes/{node}/preheats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreheatAssignment {
    /// The preheat's project.
    pub project: String,
    /// The preheat's name.
    pub name: String,
    /// The image to pull: `repository@digest`.
    pub image: String,
}

/// A node's report on one preheat
/// (`PUT /api/v1/nodes/{node}/preheats/{project}/{name}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreheatReport {
    /// `Pulling`, `Done` or `Failed`.
    pub state: NodePreheatState,
    /// Bytes in the cache so far.
    #[serde(default)]
    pub bytes: u64,
    /// Bytes of the whole image, when known.
    #[serde(default)]
    pub total_bytes: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The seed peers among `nodes` (one IDC's and pool's nodes): the ready
/// nodes labelled `wharf.io/p2p-seed=true`, else the ready node with the
/// lowest name; none when no node is ready.
pub fn seed_peers(nodes: &[&Node]) -> Vec<String> {
    let ready: Vec<&Node> = nodes.iter().copied().filter(|n| n.status.ready).collect();
    let labelled: Vec<String> = ready
        .iter()
        .filter(|n| n.metadata.labels.get(LABEL_P2P_SEED).map(String::as_str) == Some("true"))
        .map(|n| n.metadata.name.clone())
        .collect();
    if !labelled.is_empty() {
        return labelled;
    }
    ready
        .iter()
        .map(|n| n.metadata.name.clone())
        .min()
        .into_iter()
        .collect()
}

/// The nodes `target` resolves to among `nodes`, sorted by name: for
/// [`PreheatTarget::Seeds`], the [`seed_peers`] of each group of nodes
/// sharing an IDC and a pool (nodes without those labels form their own
/// group); for a pool, every ready node labelled with it.
///
/// ```
/// use wharf_api::Node;
/// use wharf_api::preheat::{PreheatTarget, preheat_targets};
/// let node = |name: &str, pool: &str, ready: bool| {
///     let mut node = Node::default();
///     node.metadata.name = name.into();
///     node.metadata.labels.insert("wharf.io/pool".into(), pool.into());
///     node.status.ready = ready;
///     node
/// };
/// let nodes = [node("b", "core", true), node("a", "core", false), node("c", "core", true), node("d", "edge", true)];
/// assert_eq!(preheat_targets(&nodes, &PreheatTarget::Seeds), ["b", "d"]);
/// assert_eq!(preheat_targets(&nodes, &PreheatTarget::Pool("core".into())), ["b", "c"]);
/// ```
pub fn preheat_targets(nodes: &[Node], target: &PreheatTarget) -> Vec<String> {
    let mut chosen = match target {
        PreheatTarget::Pool(pool) => nodes
            .iter()
            .filter(|n| n.status.ready && n.metadata.labels.get(LABEL_POOL) == Some(pool))
            .map(|n| n.metadata.name.clone())
            .collect(),
        PreheatTarget::Seeds => {
            let mut groups: BTreeMap<(Option<&String>, Option<&String>), Vec<&Node>> =
                BTreeMap::new();
            for node in nodes {
                let labels = &node.metadata.labels;
                let key = (labels.get(LABEL_IDC), labels.get(LABEL_POOL));
                groups.entry(key).or_default().push(node);
            }
            groups
                .values()
                .flat_map(|group| seed_peers(group))
                .collect::<Vec<String>>()
        }
    };
    chosen.sort();
    chosen.dedup();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: &[(&str, &str)], ready: bool) -> Node {
        let mut node = Node::default();
        node.metadata.name = name.into();
        for (k, v) in labels {
            node.metadata.labels.insert((*k).into(), (*v).into());
        }
        node.status.ready = ready;
        node
    }

    #[test]
    fn policies_name_the_bad_field() {
        let good = PreheatPolicy::new("shop", "rel", "web", "v*", PreheatTarget::Seeds);
        good.validate().unwrap();
        let cases = [
            (
                PreheatPolicy::new("shop", "Rel", "web", "v*", PreheatTarget::Seeds),
                "metadata.name",
            ),
            (
                PreheatPolicy::new("", "rel", "web", "v*", PreheatTarget::Seeds),
                "metadata.namespace",
            ),
            (
                PreheatPolicy::new("shop", "rel", "", "v*", PreheatTarget::Seeds),
                "spec.repository",
            ),
            (
                PreheatPolicy::new("shop", "rel", "web", "{v*", PreheatTarget::Seeds),
                "spec.tag",
            ),
            (
                PreheatPolicy::new(
                    "shop",
                    "rel",
                    "web",
                    "v*",
                    PreheatTarget::Pool("Core!".into()),
                ),
                "spec.target.pool",
            ),
        ];
        for (policy, field) in cases {
            let err = policy.validate().unwrap_err().to_string();
            assert!(err.starts_with(&format!("{field}:")), "{field}: {err}");
        }
    }

    #[test]
    fn policies_match_repository_within_the_project_and_tag() {
        let policy = PreheatPolicy::new("shop", "rel", "team/*", "{1,2}.*", PreheatTarget::Seeds);
        assert!(policy.matches("team/web", "1.4"));
        assert!(!policy.matches("team/web/deep", "1.4"));
        assert!(!policy.matches("web", "1.4"));
        assert!(!policy.matches("team/web", "3.0"));
        let all = PreheatPolicy::new("shop", "all", "**", "*", PreheatTarget::Seeds);
        assert!(all.matches("a/b/c", "latest"));
    }

    #[test]
    fn targets_in_yaml_read_as_documented() {
        let yaml = "apiVersion: wharf.io/v1\nkind: PreheatPolicy\nmetadata: {name: rel, namespace: shop}\n\
                    spec: {repository: web, tag: 'v*', target: {pool: core}}\n";
        let policy: PreheatPolicy = serde_norway::from_str(yaml).unwrap();
        assert_eq!(policy.spec.target, PreheatTarget::Pool("core".into()));
        let seeds: PreheatPolicySpec =
            serde_json::from_str(r#"{"repository":"web","tag":"*","target":"seeds"}"#).unwrap();
        assert_eq!(seeds.target, PreheatTarget::Seeds);
        let unknown = serde_json::from_str::<PreheatPolicySpec>(
            r#"{"repository":"web","tag":"*","tags":"x"}"#,
        );
        assert!(unknown.is_err());
        let word = serde_json::from_str::<PreheatPolicySpec>(
            r#"{"repository":"web","tag":"*","target":"all"}"#,
        );
        assert!(word.unwrap_err().to_string().contains("use seeds or"));
        let back = serde_json::to_value(PreheatTarget::Pool("core".into())).unwrap();
        assert_eq!(back, serde_json::json!({"pool": "core"}));
        assert_eq!(serde_json::to_value(PreheatTarget::Seeds).unwrap(), "seeds");
    }

    #[test]
    fn a_labelled_seed_wins_else_the_lowest_ready_name() {
        let a = node("a", &[], false);
        let b = node("b", &[], true);
        let c = node("c", &[], true);
        assert_eq!(seed_peers(&[&c, &b, &a]), ["b"]);
        let seed = node("z", &[(LABEL_P2P_SEED, "true")], true);
        assert_eq!(seed_peers(&[&c, &b, &seed]), ["z"]);
        let seed_down = node("z", &[(LABEL_P2P_SEED, "true")], false);
        assert_eq!(seed_peers(&[&c, &seed_down]), ["c"]);
        assert!(seed_peers(&[&a]).is_empty());
    }

    #[test]
    fn seeds_are_chosen_per_idc_and_pool() {
        let nodes = [
            node("e1", &[(LABEL_IDC, "east"), (LABEL_POOL, "core")], true),
            node("e2", &[(LABEL_IDC, "east"), (LABEL_POOL, "core")], true),
            node("w1", &[(LABEL_IDC, "west"), (LABEL_POOL, "core")], true),
            node("w2", &[(LABEL_IDC, "west"), (LABEL_POOL, "edge")], true),
            node(
                "w3",
                &[
                    (LABEL_IDC, "west"),
                    (LABEL_POOL, "edge"),
                    (LABEL_P2P_SEED, "true"),
                ],
                true,
            ),
        ];
        assert_eq!(
            preheat_targets(&nodes, &PreheatTarget::Seeds),
            ["e1", "w1", "w3"]
        );
        assert_eq!(
            preheat_targets(&nodes, &PreheatTarget::Pool("edge".into())),
            ["w2", "w3"]
        );
        assert!(preheat_targets(&nodes, &PreheatTarget::Pool("none".into())).is_empty());
    }

    fn preheat(nodes: &[&str]) -> Preheat {
        let repository: RepositoryName = "shop/web".parse().unwrap();
        let digest = Digest::of(wharf_oci::DigestAlgorithm::Sha256, b"manifest");
        let nodes = nodes.iter().map(|n| n.to_string()).collect();
        Preheat::new(
            &repository,
            "1.0",
            &digest,
            PreheatTarget::Seeds,
            nodes,
            1_700_000_000_000,
        )
    }

    #[test]
    fn a_new_preheat_is_valid_and_names_its_image() {
        let job = preheat(&["n2", "n1"]);
        job.validate().unwrap();
        assert!(
            job.metadata.name.starts_with("ph-"),
            "{}",
            job.metadata.name
        );
        assert_eq!(job.metadata.project.as_deref(), Some("shop"));
        assert_eq!(job.status.nodes[0].node, "n1");
        assert_eq!(job.status.phase, PreheatPhase::Pending);
        assert!(job.image().starts_with("shop/web@sha256:"));
        let empty = preheat(&[]);
        assert_eq!(empty.status.phase, PreheatPhase::Failed);
        assert!(
            empty
                .status
                .message
                .as_deref()
                .unwrap()
                .contains("no ready node")
        );
        let mut bad = preheat(&["n1"]);
        bad.spec.digest = "sha256:short".into();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .starts_with("spec.digest:")
        );
        let mut moved = preheat(&["n1"]);
        moved.metadata.project = Some("other".into());
        assert!(
            moved
                .validate()
                .unwrap_err()
                .to_string()
                .starts_with("metadata.namespace:")
        );
    }

    #[test]
    fn node_reports_move_the_phase_and_only_targets_report() {
        let mut job = preheat(&["n1", "n2"]);
        let pulling = PreheatReport {
            state: NodePreheatState::Pulling,
            bytes: 10,
            total_bytes: 100,
            message: None,
        };
        job.record("n1", &pulling, 5).unwrap();
        assert_eq!(job.status.phase, PreheatPhase::Running);
        assert_eq!(job.status.nodes[0].started_at, Some(5));
        let done = PreheatReport {
            state: NodePreheatState::Done,
            bytes: 100,
            ..pulling.clone()
        };
        job.record("n1", &done, 9).unwrap();
        assert_eq!(job.status.nodes[0].finished_at, Some(9));
        assert_eq!(job.status.nodes[0].started_at, Some(5));
        let err = job.record("n3", &done, 9).unwrap_err().to_string();
        assert!(err.contains("node n3 is not a target"), "{err}");
        assert!(
            job.record("n1", &pulling, 10).is_err(),
            "finished stays finished"
        );
        let failed = PreheatReport {
            state: NodePreheatState::Failed,
            message: Some("manifest unknown".into()),
            ..PreheatReport::default()
        };
        job.record("n2", &failed, 11).unwrap();
        assert_eq!(job.status.phase, PreheatPhase::Failed);
        let mut other = preheat(&["n1"]);
        other.record("n1", &done, 3).unwrap();
        assert_eq!(other.status.phase, PreheatPhase::Succeeded);
        let pending = PreheatReport::default();
        assert!(preheat(&["n1"]).record("n1", &pending, 1).is_err());
    }
}
