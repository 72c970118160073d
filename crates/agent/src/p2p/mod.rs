//! P2P layer distribution on the node: the image cache's
//! [`BlobFetcher`] gets layer blobs of the server's registry through the
//! [`wharf_p2p::peer::Downloader`] (parents the tracker names, the
//! registry by range for the rest), keeps them verified in the node's blob
//! cache (`<data-dir>/blobs/`) and serves their pieces to other nodes on
//! the agent's endpoint. Blobs of other registries are fetched directly,
//! as without P2P.
//!
//! A server without a tracker (an older one: 404 on the tracker routes)
//! or a tracker that fails costs one request per layer: the layer then
//! comes from the registry, and the pull goes on.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use tokio_util::task::AbortOnDropHandle;
use wharf_image::{
    BlobFetcher, BlobLocation, BlobRequest, DirectFetcher, FetchedBlob, ImageError, PullBytes,
    RegistryBlob,
};
use wharf_oci::Digest;
use wharf_p2p::peer::{
    BlobTask, ByteStream, Downloader, DownloaderOptions, PieceServer, PieceStore, Source,
    TrackerClient,
};
use wharf_p2p::wire::{PeerReport, PeerState, ServerKey, TaskAssignment, TaskRequest};
use wharf_p2p::{Bitmap, P2pError, piece_size_for};

use crate::AgentError;
use crate::api::NodeApi;

/// The agent's P2P flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct P2pSettings {
    /// Bytes per second the node sends to peers, over all uploads (0 =
    /// unlimited).
    pub upload_rate: u64,
    /// Bytes per second the node takes from peers, over all downloads (0
    /// = unlimited).
    pub download_rate: u64,
    /// Pieces sent to peers at once at most.
    pub upload_slots: u32,
}

/// Pieces a node sends at once by default. Each upload gets an equal
/// share of the uplink: with fewer at once a piece reaches its first child
/// sooner, and that child can pass it on. Measured at 10 peers, 8 MiB/s
/// links (`wharf bench p2p`): 8 slots 38.2 s, 4 slots 25.8 s, 3 slots
/// 27.7 s, 2 slots 27.4 s.
pub const DEFAULT_UPLOAD_SLOTS: u32 = 4;

impl Default for P2pSettings {
    fn default() -> Self {
        P2pSettings {
            upload_rate: 0,
            download_rate: 0,
            upload_slots: DEFAULT_UPLOAD_SLOTS,
        }
    }
}

/// How long a node keeps telling the tracker that it holds a blob it
/// fetched (the tracker forgets holders that stop reporting): long enough
/// for the other nodes of a rollout to find it as a parent.
const HOLD_REPORTS_FOR: Duration = Duration::from_secs(600);

/// The node as a P2P peer: its blob cache, piece server and downloader.
pub struct PeerNode {
    store: Arc<PieceStore>,
    server: Arc<PieceServer>,
    downloader: Downloader,
    tracker: Arc<NodeTracker>,
    /// The server's registry (`host:port`): only its blobs go through P2P.
    registry: Option<String>,
    /// Blob -> (repository, size) of the blobs fetched in this run, to
    /// tell the tracker when one leaves the cache.
    fetched: Mutex<HashMap<Digest, (String, u64)>>,
    /// The tasks reporting blobs held, by blob; dropping one stops it.
    holding: Mutex<HashMap<Digest, AbortOnDropHandle<()>>>,
}

impl PeerNode {
    /// Opens the blob cache under `dir` (dropping what an interrupted run
    /// left half-fetched) and sets up the piece server and downloader.
    pub async fn open(
        dir: PathBuf,
        api: Arc<dyn NodeApi>,
        settings: P2pSettings,
        registry: Option<String>,
    ) -> Result<Arc<PeerNode>, AgentError> {
        let store = PieceStore::open(&dir)
            .await
            .map_err(|e| AgentError::Setup(format!("opening the blob cache: {e}")))?;
        let store = Arc::new(store);
        let tracker = Arc::new(NodeTracker { api });
        let server = Arc::new(PieceServer::new(
            store.clone(),
            tracker.clone(),
            settings.upload_slots,
            settings.upload_rate,
        ));
        let options = DownloaderOptions {
            download_rate: settings.download_rate,
            ..DownloaderOptions::default()
        };
        let downloader = Downloader::new(store.clone(), Some(server.clone()), options)
            .map_err(|e| AgentError::Setup(format!("p2p downloader: {e}")))?;
        Ok(Arc::new(PeerNode {
            store,
            server,
            downloader,
            tracker,
            registry,
            fetched: Mutex::default(),
            holding: Mutex::default(),
        }))
    }

    /// The piece route, for the agent's endpoint.
    pub fn router(&self) -> axum::Router {
        self.server.clone().router()
    }

    /// Serves the piece route alone on `listener` (a peer without the
    /// agent's endpoint, as `wharf bench p2p` runs them) until the task is
    /// dropped.
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// The blob fetcher the image cache uses.
    pub fn blob_fetcher(self: &Arc<Self>) -> Arc<dyn BlobFetcher> {
        Arc::new(PeerFetcher { node: self.clone() })
    }

    /// Removes the blobs of layers the image cache removed: they are
    /// served no more, and the tracker hears so.
    pub async fn forget(&self, digests: &[Digest]) {
        for digest in digests {
            self.holding
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(digest);
            match self.store.remove(digest).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(blob = %digest, error = %e, "could not remove a cached blob");
                    continue;
                }
            }
            let known = self
                .fetched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(digest);
            let Some((repository, size)) = known else {
                continue;
            };
            let report = PeerReport {
                digest: digest.clone(),
                repository,
                size,
                state: PeerState::Left,
                pieces: Bitmap::new(piece_count(size)),
                free_upload_slots: self.server.free_slots(),
                bad_parents: Vec::new(),
                throughput: Vec::new(),
                source_bytes: 0,
                peer_bytes: 0,
            };
            if let Err(e) = self.tracker.report(&report).await {
                tracing::debug!(blob = %digest, error = %e, "could not tell the tracker a blob left");
            }
        }
    }
}

impl PeerNode {
    /// Reports `task`'s blob `Done` every `interval` for
    /// [`HOLD_REPORTS_FOR`], so that the tracker keeps handing the node
    /// out as a parent.
    fn keep_reporting(
        &self,
        task: &BlobTask,
        done: &wharf_p2p::peer::Downloaded,
        interval: Duration,
    ) {
        let report = PeerReport {
            digest: task.digest.clone(),
            repository: task.repository.clone(),
            size: task.size,
            state: PeerState::Done,
            pieces: Bitmap::full(piece_count(task.size)),
            free_upload_slots: 0,
            bad_parents: Vec::new(),
            throughput: Vec::new(),
            source_bytes: done.source_bytes,
            peer_bytes: done.peer_bytes,
        };
        let (tracker, server) = (self.tracker.clone(), self.server.clone());
        let rounds = (HOLD_REPORTS_FOR.as_millis() / interval.as_millis().max(1)) as u64;
        let reporting = tokio::spawn(async move {
            for _ in 0..rounds {
                tokio::time::sleep(interval).await;
                let report = PeerReport {
                    free_upload_slots: server.free_slots(),
                    ..report.clone()
                };
                if let Err(e) = tracker.report(&report).await {
                    tracing::debug!(blob = %report.digest, error = %e, "holder report not delivered");
                }
            }
        });
        self.holding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task.digest.clone(), AbortOnDropHandle::new(reporting));
    }
}

fn piece_count(size: u64) -> u32 {
    size.div_ceil(piece_size_for(size)) as u32
}

/// The tracker, through the agent's client to the server.
struct NodeTracker {
    api: Arc<dyn NodeApi>,
}

fn tracker_error(e: AgentError) -> P2pError {
    match e {
        AgentError::Unreachable(_) => P2pError::TrackerUnreachable(e.to_string()),
        e => P2pError::Tracker(e.to_string()),
    }
}

#[async_trait]
impl TrackerClient for NodeTracker {
    async fn key(&self) -> Result<ServerKey, P2pError> {
        self.api.p2p_key().await.map_err(tracker_error)
    }

    async fn assign(&self, request: &TaskRequest) -> Result<TaskAssignment, P2pError> {
        self.api.p2p_task(request).await.map_err(tracker_error)
    }

    async fn report(&self, report: &PeerReport) -> Result<TaskAssignment, P2pError> {
        self.api.p2p_report(report).await.map_err(tracker_error)
    }
}

/// The registry as the downloader's source; keeps the registry's own
/// error, so that a failed pull says what the registry said.
struct RegistrySource {
    blob: RegistryBlob,
    failure: Arc<Mutex<Option<ImageError>>>,
}

impl RegistrySource {
    fn note(failure: &Mutex<Option<ImageError>>, e: ImageError) -> P2pError {
        let message = e.to_string();
        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        P2pError::Source(message)
    }
}

#[async_trait]
impl Source for RegistrySource {
    async fn range(&self, range: Range<u64>) -> Result<ByteStream, P2pError> {
        let stream = match self.blob.range(range).await {
            Ok(stream) => stream,
            Err(e) => return Err(Self::note(&self.failure, e)),
        };
        let failure = self.failure.clone();
        Ok(stream.map_err(move |e| Self::note(&failure, e)).boxed())
    }
}

struct PeerFetcher {
    node: Arc<PeerNode>,
}

#[async_trait]
impl BlobFetcher for PeerFetcher {
    async fn fetch(&self, request: BlobRequest<'_>) -> Result<FetchedBlob, ImageError> {
        let ours = self.node.registry.as_deref() == Some(request.blob.registry());
        if !ours {
            return DirectFetcher.fetch(request).await;
        }
        let blob = request.blob.clone();
        let task = BlobTask {
            digest: blob.digest().clone(),
            size: blob.size(),
            repository: blob.repository().to_owned(),
        };
        let source = RegistrySource {
            blob,
            failure: Arc::default(),
        };
        let downloaded = self
            .node
            .downloader
            .download(&task, self.node.tracker.as_ref(), &source, request.progress)
            .await;
        match downloaded {
            Ok(done) => {
                self.node
                    .fetched
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(task.digest.clone(), (task.repository.clone(), task.size));
                if let Some(interval) = done.report_interval {
                    self.node.keep_reporting(&task, &done, interval);
                }
                Ok(FetchedBlob {
                    location: BlobLocation::Kept(done.path),
                    bytes: PullBytes {
                        registry: done.source_bytes,
                        peers: done.peer_bytes,
                        cache: done.cached_bytes,
                    },
                })
            }
            Err(e) => {
                let registry = source
                    .failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                Err(registry.unwrap_or_else(|| ImageError::BlobFetch {
                    layer: task.digest.to_string(),
                    reason: e.to_string(),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests;
