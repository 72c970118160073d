//! The server side of P2P distribution: the tracker (its logic is
//! [`wharf_p2p::Tracker`]), the piece manifests of the registry's blobs,
//! and the grants that let a node fetch a blob from other nodes. The API
//! handlers (`api/p2p.rs`) check who asks; this module keeps the state.
//!
//! The tracker's state is this process's memory: only the leader (of an
//! etcd-backed cluster) tracks, and followers send agents to the registry
//! (503 naming the leader), which the agents take as "no P2P now".

mod manifests;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wharf_auth::Identity;
use wharf_blob::BlobStore;
use wharf_control::Candidate;
use wharf_oci::Digest;
use wharf_p2p::wire::{ServerKey, TaskAssignment};
use wharf_p2p::{
    Assignment, GRANT_AUDIENCE, P2pError, PeerGrant, PeerInfo, PeerUpdate, PieceManifest, Tracker,
    TrackerConfig, encode_grant,
};
use wharf_store::Store;

use crate::telemetry::ServerMetrics;
pub(crate) use manifests::ManifestError;

/// How often agents report their progress on a blob.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// How long a peer grant lasts; agents ask again (a report) well before.
pub(crate) const GRANT_TTL: Duration = Duration::from_secs(5 * 60);

/// Manifests kept in memory.
const MANIFEST_CACHE_ENTRIES: usize = 1024;

/// How long who leads is believed without asking the store again: every
/// report would otherwise cost a store read.
const LEADER_CACHE_TTL: Duration = Duration::from_secs(2);

/// Whether this server tracks, or which one does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tracking {
    /// This server leads (or no server leads yet, or the store runs one
    /// server): it tracks.
    Here,
    /// Another server leads and tracks; its name (host and address).
    Elsewhere(String),
}

/// The tracker and everything it hands out, shared by the handlers.
pub(crate) struct P2pService {
    identity: Arc<Identity>,
    store: Arc<dyn Store>,
    server_id: String,
    tracker: Mutex<Tracker>,
    manifests: manifests::ManifestCache,
    telemetry: Arc<ServerMetrics>,
    leader: Mutex<Option<(Instant, Tracking)>>,
}

impl P2pService {
    /// The service of server `server_id`, reading blobs from `blobs`.
    pub(crate) fn new(
        identity: Arc<Identity>,
        store: Arc<dyn Store>,
        server_id: String,
        blobs: BlobStore,
        telemetry: Arc<ServerMetrics>,
    ) -> P2pService {
        P2pService {
            identity,
            store,
            server_id,
            tracker: Mutex::new(Tracker::new(TrackerConfig::for_report_interval(
                REPORT_INTERVAL,
            ))),
            manifests: manifests::ManifestCache::new(blobs, MANIFEST_CACHE_ENTRIES),
            telemetry,
            leader: Mutex::new(None),
        }
    }

    /// The key grants are checked with.
    pub(crate) fn server_key(&self) -> ServerKey {
        use base64::Engine;
        let keys = self.identity.token_keys();
        ServerKey {
            key_id: keys.key_id().to_string(),
            public_key: base64::engine::general_purpose::STANDARD.encode(keys.public_key()),
        }
    }

    /// Whether this server tracks now.
    pub(crate) async fn tracking(&self) -> Result<Tracking, wharf_store::StoreError> {
        let now = Instant::now();
        if let Some((at, known)) = lock(&self.leader).clone()
            && now.duration_since(at) < LEADER_CACHE_TTL
        {
            return Ok(known);
        }
        let tracking = match wharf_control::current_leader(self.store.as_ref()).await? {
            Some(Candidate { id, name }) if id != self.server_id => Tracking::Elsewhere(name),
            _ => Tracking::Here,
        };
        *lock(&self.leader) = Some((now, tracking.clone()));
        Ok(tracking)
    }

    /// The piece manifest of `digest` (registry size `size`).
    pub(crate) async fn manifest(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<Arc<PieceManifest>, ManifestError> {
        let (manifest, computed) = self.manifests.get(digest, size).await?;
        if computed {
            self.telemetry.p2p_manifest_computed();
        }
        Ok(manifest)
    }

    /// Runs the tracker for `peer`'s `update` on `manifest`'s blob and
    /// signs a fresh grant for it.
    pub(crate) fn assign(
        &self,
        peer: PeerInfo,
        update: PeerUpdate,
        manifest: &PieceManifest,
    ) -> Result<TaskAssignment, P2pError> {
        let node = peer.node.clone();
        let (assignment, tasks, peers) = {
            let mut tracker = lock(&self.tracker);
            let assignment = tracker.assign(peer, update, manifest, Instant::now())?;
            (assignment, tracker.task_count(), tracker.peer_count())
        };
        let Assignment {
            parents,
            neighbors,
            back_to_source,
            newly_back_to_source,
            newly_blocklisted,
            ..
        } = assignment;
        self.telemetry.p2p_tracked(
            tasks as u64,
            peers as u64,
            newly_back_to_source,
            newly_blocklisted as u64,
        );
        Ok(TaskAssignment {
            grant: self.sign_grant(&node, &manifest.digest),
            grant_expires_in: GRANT_TTL.as_secs(),
            manifest: manifest.clone(),
            parents,
            neighbors,
            back_to_source,
            report_interval_ms: REPORT_INTERVAL.as_millis() as u64,
        })
    }

    /// A grant for `node` to fetch `blob` from peers, signed with the
    /// server's token key.
    fn sign_grant(&self, node: &str, blob: &Digest) -> String {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let grant = PeerGrant {
            aud: GRANT_AUDIENCE.into(),
            sub: node.to_string(),
            blob: blob.clone(),
            iat,
            exp: iat + GRANT_TTL.as_secs(),
        };
        let keys = self.identity.token_keys();
        encode_grant(&grant, keys.key_id(), |message| keys.sign_raw(message))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
