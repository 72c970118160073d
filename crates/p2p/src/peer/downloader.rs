//! The P2P downloader: one blob from parents and the registry into the
//! node's piece store, serving what it has to others as it goes.
//!
//! Pieces are fetched in order, a few at a time. In order rather than
//! rarest first because each IDC has one seed streaming the blob from the
//! registry in order: children behind a parent still downloading want the
//! pieces in the order the parent gets them, and the whole-blob hash then
//! advances as pieces land, without re-reading the blob at the end.
//!
//! A pull never fails because of P2P: a piece no parent delivers in time
//! comes from the registry by range, and if the tracker cannot be reached
//! (or anything else on the P2P path fails) the blob is streamed whole from
//! the registry, as before P2P.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use tokio::time::Instant;
use wharf_oci::Digest;

use super::store::PartialBlob;
use super::{PieceServer, PieceStore, Source, TokenBucket, TrackerClient};
use crate::P2pError;
use crate::wire::{
    BadParent, Parent, ParentThroughput, PeerReport, PeerState, TaskAssignment, TaskRequest,
    piece_path,
};

/// How a node's downloads behave.
#[derive(Clone, Debug)]
pub struct DownloaderOptions {
    /// Pieces fetched at once per blob.
    pub concurrency: usize,
    /// A parent that answers or sends no byte for this long rests a while;
    /// after `slow_strikes` such times it is dropped for the blob.
    pub stall_timeout: Duration,
    /// See `stall_timeout`.
    pub slow_strikes: u32,
    /// A piece no parent has delivered this long after it was first
    /// wanted comes from the registry.
    pub piece_fallback: Duration,
    /// Bytes per second from peers over all downloads (0 = unlimited).
    pub download_rate: u64,
    /// Used when the tracker gives no report interval.
    pub default_report_interval: Duration,
}

impl Default for DownloaderOptions {
    fn default() -> Self {
        DownloaderOptions {
            concurrency: 4,
            stall_timeout: Duration::from_secs(5),
            slow_strikes: 3,
            piece_fallback: Duration::from_secs(10),
            download_rate: 0,
            default_report_interval: Duration::from_secs(3),
        }
    }
}

/// One blob to fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobTask {
    /// The blob.
    pub digest: Digest,
    /// Its size, from the image manifest.
    pub size: u64,
    /// The repository it is pulled from (`project/name`).
    pub repository: String,
}

/// A fetched blob and where its bytes came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    /// The verified blob in the node's blob cache.
    pub path: PathBuf,
    /// Bytes fetched from the registry.
    pub source_bytes: u64,
    /// Bytes fetched from peers.
    pub peer_bytes: u64,
    /// Bytes the blob cache already held (the whole blob, or nothing).
    pub cached_bytes: u64,
    /// How often the tracker wants to hear from holders of the blob, when
    /// it tracks this node for it (`None`: fetched without the tracker).
    /// It forgets a node that stops reporting, so a node that keeps
    /// serving the blob keeps reporting it `Done` at this interval.
    pub report_interval: Option<Duration>,
}

/// Fetches blobs for one node. Shared by all its pulls: the download rate
/// limit is per node.
pub struct Downloader {
    store: Arc<PieceStore>,
    http: reqwest::Client,
    options: DownloaderOptions,
    bucket: TokenBucket,
    server: Option<Arc<PieceServer>>,
}

impl Downloader {
    /// A downloader into `store`. `server`, if the node serves pieces,
    /// tells the tracker how many upload slots are free.
    pub fn new(
        store: Arc<PieceStore>,
        server: Option<Arc<PieceServer>>,
        options: DownloaderOptions,
    ) -> Result<Downloader, P2pError> {
        let http = reqwest::Client::builder()
            .connect_timeout(options.stall_timeout)
            .user_agent(concat!("wharf-p2p/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| P2pError::Internal(format!("cannot build the http client: {e}")))?;
        Ok(Downloader {
            bucket: TokenBucket::new(options.download_rate),
            store,
            http,
            options,
            server,
        })
    }

    /// The store blobs land in.
    pub fn store(&self) -> &Arc<PieceStore> {
        &self.store
    }

    /// Fetches `task`'s blob into the blob cache (verified) and says where
    /// its bytes came from; `progress` hears the bytes received so far.
    /// Fails only if the registry fails.
    #[tracing::instrument(skip_all, fields(blob = %task.digest))]
    pub async fn download(
        &self,
        task: &BlobTask,
        tracker: &dyn TrackerClient,
        source: &dyn Source,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Downloaded, P2pError> {
        if let Some(path) = self.store.complete(&task.digest).await {
            return Ok(Downloaded {
                path,
                source_bytes: 0,
                peer_bytes: 0,
                cached_bytes: task.size,
                report_interval: None,
            });
        }
        let counters = Counters {
            source: AtomicU64::new(0),
            peers: AtomicU64::new(0),
            progress,
        };
        let request = TaskRequest {
            digest: task.digest.clone(),
            size: task.size,
            repository: task.repository.clone(),
        };
        let p2p = async {
            let assignment = assign(tracker, &request).await?;
            self.check(task, &assignment)?;
            self.with_peers(task, assignment, tracker, source, &counters)
                .await
        }
        .await;
        let (path, report_interval) = match p2p {
            Ok((path, interval)) => (path, Some(interval)),
            Err(e) => {
                tracing::info!(error = %e, "p2p unavailable for the blob: fetching it from the registry");
                (self.whole_from_source(task, source, &counters).await?, None)
            }
        };
        Ok(Downloaded {
            path,
            source_bytes: counters.source.load(Ordering::Relaxed),
            peer_bytes: counters.peers.load(Ordering::Relaxed),
            cached_bytes: 0,
            report_interval,
        })
    }

    fn check(&self, task: &BlobTask, assignment: &TaskAssignment) -> Result<(), P2pError> {
        let manifest = &assignment.manifest;
        manifest.validate()?;
        if manifest.digest != task.digest || manifest.size != task.size {
            return Err(P2pError::Tracker(format!(
                "the tracker's manifest is for {} of {} bytes",
                manifest.digest, manifest.size
            )));
        }
        Ok(())
    }

    async fn whole_from_source(
        &self,
        task: &BlobTask,
        source: &dyn Source,
        counters: &Counters<'_>,
    ) -> Result<PathBuf, P2pError> {
        let stream = source.range(0..task.size).await?;
        let counted = stream.inspect_ok(|chunk| counters.add_source(chunk.len()));
        let (path, _) = self
            .store
            .import_stream(&task.digest, task.size, counted)
            .await?;
        Ok(path)
    }

    async fn with_peers(
        &self,
        task: &BlobTask,
        assignment: TaskAssignment,
        tracker: &dyn TrackerClient,
        source: &dyn Source,
        counters: &Counters<'_>,
    ) -> Result<(PathBuf, Duration), P2pError> {
        let Some(partial) = self.store.begin(&assignment.manifest).await? else {
            return Err(P2pError::Internal(
                "the blob is being fetched already".into(),
            ));
        };
        let run = Run {
            downloader: self,
            task,
            partial: partial.clone(),
            source,
            counters,
            state: Mutex::new(RunState::new(&assignment)),
            back_to_source: assignment.back_to_source,
        };
        let interval = match assignment.report_interval_ms {
            0 => self.options.default_report_interval,
            ms => Duration::from_millis(ms),
        };
        let fetched = tokio::select! {
            fetched = run.fetch() => fetched,
            never = run.report_every(interval, tracker) => match never {},
        };
        let finished = match fetched {
            Ok(()) => self.store.finish(&partial).await,
            Err(e) => {
                self.store.abandon(&partial);
                Err(e)
            }
        };
        let state = if finished.is_ok() {
            PeerState::Done
        } else {
            PeerState::Failed
        };
        run.report(state, tracker).await;
        finished.map(|path| (path, interval))
    }
}

/// The tracker's assignment, asked again while the tracker is merely
/// unreachable (a congested link, a server restarting): going to the
/// registry for the whole blob costs the origin a blob, waiting a second
/// costs nothing.
async fn assign(
    tracker: &dyn TrackerClient,
    request: &TaskRequest,
) -> Result<TaskAssignment, P2pError> {
    let mut attempt = 0;
    loop {
        match tracker.assign(request).await {
            Err(P2pError::TrackerUnreachable(e)) if attempt < TRACKER_RETRIES => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "tracker unreachable: asking again");
                tokio::time::sleep(TRACKER_RETRY_WAIT * attempt).await;
            }
            answer => return answer,
        }
    }
}

/// Bytes received for one blob, by origin.
struct Counters<'a> {
    source: AtomicU64,
    peers: AtomicU64,
    progress: &'a (dyn Fn(u64) + Send + Sync),
}

impl Counters<'_> {
    fn add_source(&self, bytes: usize) {
        self.source.fetch_add(bytes as u64, Ordering::Relaxed);
        self.tell();
    }

    fn add_peers(&self, bytes: u64) {
        self.peers.fetch_add(bytes, Ordering::Relaxed);
        self.tell();
    }

    fn tell(&self) {
        let received = self.source.load(Ordering::Relaxed) + self.peers.load(Ordering::Relaxed);
        (self.progress)(received);
    }
}

/// One blob's download from parents.
struct Run<'a> {
    downloader: &'a Downloader,
    task: &'a BlobTask,
    partial: Arc<PartialBlob>,
    source: &'a dyn Source,
    counters: &'a Counters<'a>,
    state: Mutex<RunState>,
    back_to_source: bool,
}

/// What a run knows of its parents.
struct RunState {
    grant: String,
    /// The tracker sends the node to the registry (it became its IDC's
    /// seed): pieces still missing come from there.
    back_to_source: bool,
    parents: Vec<ParentState>,
    bad: Vec<BadParent>,
    /// When a parent last answered for this blob (a piece, "not yet" or
    /// "busy"): while the swarm answers, a piece waits for it rather than
    /// going to the registry. A seed that dies is replaced by the tracker,
    /// which sends one node of the IDC to the registry, not all of them.
    last_heard: Instant,
}

struct ParentState {
    parent: Parent,
    /// Why it is not used any more for this blob.
    dropped: Option<String>,
    /// After a 429: not before then.
    busy_until: Option<Instant>,
    /// Pieces it answered 404 for, and when to ask again.
    lacking: HashMap<u32, Instant>,
    in_flight: usize,
    /// Times it answered too slowly or stalled since it last delivered.
    strikes: u32,
    /// Bytes and time spent on its pieces since the last report.
    bytes: u64,
    busy: Duration,
}

/// Why a piece did not come from a parent.
enum Miss {
    /// It does not hold the piece yet.
    NotHeld,
    /// No slot free; try again after the duration.
    Busy(Duration),
    /// No answer or no bytes in time: on a congested link a parent can be
    /// slow without being gone, so it rests a while and is dropped only
    /// after `slow_strikes` such times.
    Slow(String),
    /// Do not use it again for this blob.
    Drop(String),
}

/// A 404 is asked again after this long: the parent may be downloading.
const NOT_HELD_RETRY: Duration = Duration::from_millis(500);
/// How long a piece waits before looking for a parent again.
const NO_PARENT_WAIT: Duration = Duration::from_millis(50);
/// A piece waits at most this many fallback times for its parents, however
/// busy they sound.
const FALLBACK_PATIENCE: u32 = 3;
/// How long a slow parent rests before it is asked again.
const SLOW_REST: Duration = Duration::from_secs(2);
/// Times an unreachable tracker is asked again before the whole blob
/// comes from the registry, and the wait before the first (it grows).
const TRACKER_RETRIES: u32 = 3;
const TRACKER_RETRY_WAIT: Duration = Duration::from_secs(1);

fn lock(state: &Mutex<RunState>) -> MutexGuard<'_, RunState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl RunState {
    fn new(assignment: &TaskAssignment) -> RunState {
        let mut state = RunState {
            grant: assignment.grant.clone(),
            back_to_source: assignment.back_to_source,
            parents: Vec::new(),
            bad: Vec::new(),
            last_heard: Instant::now(),
        };
        state.refresh(assignment);
        state
    }

    /// Takes a fresh grant and the tracker's parents; dropped parents stay
    /// dropped.
    fn refresh(&mut self, assignment: &TaskAssignment) {
        self.grant = assignment.grant.clone();
        self.back_to_source = assignment.back_to_source;
        for parent in &assignment.parents {
            match self
                .parents
                .iter_mut()
                .find(|p| p.parent.node == parent.node)
            {
                Some(known) => known.parent = parent.clone(),
                None => self.parents.push(ParentState {
                    parent: parent.clone(),
                    dropped: None,
                    busy_until: None,
                    lacking: HashMap::new(),
                    in_flight: 0,
                    strikes: 0,
                    bytes: 0,
                    busy: Duration::ZERO,
                }),
            }
        }
    }

    /// The parent to ask for `index`: one whose last report holds it, else
    /// one that may have it by now (it is downloading), least loaded first.
    fn choose(&mut self, index: u32) -> Option<(usize, Parent, String)> {
        let now = Instant::now();
        let usable = |p: &ParentState| {
            p.dropped.is_none()
                && p.busy_until.is_none_or(|t| t <= now)
                && p.lacking.get(&index).is_none_or(|t| *t <= now)
        };
        let best = |holding: bool| {
            self.parents
                .iter()
                .enumerate()
                .filter(|(_, p)| usable(p) && p.parent.pieces.has(index) == holding)
                .min_by_key(|(_, p)| p.in_flight)
                .map(|(i, _)| i)
        };
        let chosen = best(true).or_else(|| best(false))?;
        let parent = &mut self.parents[chosen];
        parent.in_flight += 1;
        Some((chosen, parent.parent.clone(), self.grant.clone()))
    }

    fn drop_parent(&mut self, at: usize, reason: String) {
        let parent = &mut self.parents[at];
        if parent.dropped.is_none() {
            tracing::info!(parent = %parent.parent.node, %reason, "dropping a parent for the blob");
            self.bad.push(BadParent {
                node: parent.parent.node.clone(),
                reason: reason.clone(),
            });
            parent.dropped = Some(reason);
        }
    }
}

impl Run<'_> {
    async fn fetch(&self) -> Result<(), P2pError> {
        if self.back_to_source {
            return self.stream_from_source().await;
        }
        let concurrency = self.downloader.options.concurrency.max(1);
        futures_util::stream::iter(0..self.partial.manifest().piece_count())
            .map(|index| self.fetch_piece(index))
            .buffer_unordered(concurrency)
            .try_for_each(|()| async { Ok(()) })
            .await
    }

    /// The seed's way: the whole blob from the registry in order, each
    /// piece published (verified) as soon as it is complete.
    async fn stream_from_source(&self) -> Result<(), P2pError> {
        let manifest = self.partial.manifest();
        let mut stream = self.source.range(0..manifest.size).await?;
        let mut index = 0u32;
        let mut piece = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let mut chunk = chunk?;
            self.counters.add_source(chunk.len());
            while !chunk.is_empty() {
                let range = manifest.piece_range(index).map_err(|_| self.too_long())?;
                let want = (range.end - range.start) as usize - piece.len();
                piece.extend_from_slice(&chunk.split_to(want.min(chunk.len())));
                if piece.len() as u64 == range.end - range.start {
                    self.write_source_piece(index, piece.split().freeze())
                        .await?;
                    index += 1;
                }
            }
        }
        if index != manifest.piece_count() {
            return Err(P2pError::Source(format!(
                "blob {} ended after {index} of {} pieces",
                manifest.digest,
                manifest.piece_count()
            )));
        }
        Ok(())
    }

    fn too_long(&self) -> P2pError {
        P2pError::Source(format!(
            "blob {} is longer than {} bytes",
            self.task.digest, self.task.size
        ))
    }

    async fn write_source_piece(&self, index: u32, bytes: Bytes) -> Result<(), P2pError> {
        if self
            .downloader
            .store
            .write_piece(&self.partial, index, bytes)
            .await?
        {
            Ok(())
        } else {
            // The registry is the truth: the manifest is wrong, not the blob.
            Err(P2pError::Verification {
                digest: self.task.digest.to_string(),
                reason: format!(
                    "the registry's piece {index} does not match the tracker's manifest"
                ),
            })
        }
    }

    /// One piece from the parents, or from the registry once no parent has
    /// answered for the blob within the fallback time (a slow swarm is
    /// waited for, a silent one is not), and in any case once it has waited
    /// [`FALLBACK_PATIENCE`] fallback times.
    async fn fetch_piece(&self, index: u32) -> Result<(), P2pError> {
        let wanted = Instant::now();
        let fallback = self.downloader.options.piece_fallback;
        loop {
            let (chosen, deadline) = {
                let mut state = lock(&self.state);
                // Bounded: parents saying "not yet" forever (holding
                // nothing and getting nothing) must not hold a pull.
                let deadline = (wanted.max(state.last_heard) + fallback)
                    .min(wanted + fallback * FALLBACK_PATIENCE);
                let chosen = if state.back_to_source || Instant::now() >= deadline {
                    None
                } else {
                    Some(state.choose(index))
                };
                (chosen, deadline)
            };
            let Some(chosen) = chosen else {
                return self.piece_from_source(index).await;
            };
            let Some((at, parent, grant)) = chosen else {
                tokio::time::sleep(NO_PARENT_WAIT.min(deadline - Instant::now())).await;
                continue;
            };
            let started = Instant::now();
            let fetched = self.piece_from_parent(&parent, &grant, index).await;
            let bytes = match fetched {
                Ok(bytes) => {
                    let len = bytes.len() as u64;
                    let matched = self
                        .downloader
                        .store
                        .write_piece(&self.partial, index, bytes)
                        .await?;
                    if matched {
                        self.counters.add_peers(len);
                        Ok(len)
                    } else {
                        Err(Miss::Drop(format!(
                            "sent piece {index} not matching the manifest"
                        )))
                    }
                }
                Err(miss) => Err(miss),
            };
            let mut state = lock(&self.state);
            let entry = &mut state.parents[at];
            entry.in_flight -= 1;
            match bytes {
                Ok(len) => {
                    entry.bytes += len;
                    entry.busy += started.elapsed();
                    entry.strikes = 0;
                    state.last_heard = Instant::now();
                    return Ok(());
                }
                Err(Miss::NotHeld) => {
                    entry.lacking.insert(index, Instant::now() + NOT_HELD_RETRY);
                    state.last_heard = Instant::now();
                }
                Err(Miss::Busy(wait)) => {
                    entry.busy_until = Some(Instant::now() + wait);
                    state.last_heard = Instant::now();
                }
                Err(Miss::Slow(reason)) => {
                    // Requests sent together time out together: one strike
                    // per rest, not one per piece that was in flight.
                    let now = Instant::now();
                    if entry.busy_until.is_none_or(|until| until <= now) {
                        entry.strikes += 1;
                    }
                    entry.busy_until = Some(now + SLOW_REST);
                    let strikes = entry.strikes;
                    if strikes >= self.downloader.options.slow_strikes {
                        state.drop_parent(at, format!("{reason} ({strikes} times)"));
                    }
                }
                Err(Miss::Drop(reason)) => state.drop_parent(at, reason),
            }
        }
    }

    async fn piece_from_parent(
        &self,
        parent: &Parent,
        grant: &str,
        index: u32,
    ) -> Result<Bytes, Miss> {
        let stall = self.downloader.options.stall_timeout;
        let expected = self
            .partial
            .manifest()
            .piece_range(index)
            .map(|r| r.end - r.start)
            .map_err(|e| Miss::Drop(e.to_string()))?;
        let url = format!(
            "{}{}",
            parent.url.trim_end_matches('/'),
            piece_path(&self.task.digest, index)
        );
        let sent = self.downloader.http.get(&url).bearer_auth(grant).send();
        let mut response = match tokio::time::timeout(stall, sent).await {
            Err(_) => return Err(Miss::Slow(format!("no answer in {stall:?}"))),
            Ok(Err(e)) if e.is_timeout() => return Err(Miss::Slow(format!("no answer: {e}"))),
            Ok(Err(e)) => return Err(Miss::Drop(format!("unreachable: {e}"))),
            Ok(Ok(response)) => response,
        };
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(Miss::NotHeld),
            StatusCode::TOO_MANY_REQUESTS => {
                let wait = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                return Err(Miss::Busy(Duration::from_secs(wait.clamp(1, 30))));
            }
            status => return Err(Miss::Drop(format!("answered {status}"))),
        }
        let mut piece = BytesMut::with_capacity(expected as usize);
        loop {
            let chunk = match tokio::time::timeout(stall, response.chunk()).await {
                Err(_) => return Err(Miss::Slow(format!("stalled mid-piece for {stall:?}"))),
                Ok(Err(e)) => return Err(Miss::Drop(format!("disconnected mid-piece: {e}"))),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => chunk,
            };
            if piece.len() as u64 + chunk.len() as u64 > expected {
                return Err(Miss::Drop(format!("sent more than piece {index}")));
            }
            self.downloader.bucket.take(chunk.len() as u64).await;
            piece.extend_from_slice(&chunk);
        }
        if piece.len() as u64 != expected {
            return Err(Miss::Drop(format!(
                "sent {} of piece {index}'s {expected} bytes",
                piece.len()
            )));
        }
        Ok(piece.freeze())
    }

    async fn piece_from_source(&self, index: u32) -> Result<(), P2pError> {
        let range: Range<u64> = self.partial.manifest().piece_range(index)?;
        tracing::debug!(
            index,
            "no parent delivered the piece in time: fetching it from the registry"
        );
        let mut stream = self.source.range(range.clone()).await?;
        let mut piece = BytesMut::with_capacity((range.end - range.start) as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            self.counters.add_source(chunk.len());
            if piece.len() + chunk.len() > (range.end - range.start) as usize {
                return Err(self.too_long());
            }
            piece.extend_from_slice(&chunk);
        }
        self.write_source_piece(index, piece.freeze()).await
    }

    async fn report_every(
        &self,
        interval: Duration,
        tracker: &dyn TrackerClient,
    ) -> std::convert::Infallible {
        loop {
            tokio::time::sleep(interval).await;
            self.report(PeerState::Downloading, tracker).await;
        }
    }

    /// Tells the tracker where the blob stands and takes its fresh grant
    /// and parents; a tracker that does not answer changes nothing.
    async fn report(&self, state: PeerState, tracker: &dyn TrackerClient) {
        let report = {
            let mut run = lock(&self.state);
            let throughput = run
                .parents
                .iter_mut()
                .filter(|p| p.bytes > 0)
                .map(|p| {
                    let measured = ParentThroughput {
                        node: p.parent.node.clone(),
                        bytes_per_second: p.bytes as f64 / p.busy.as_secs_f64().max(0.001),
                    };
                    (p.bytes, p.busy) = (0, Duration::ZERO);
                    measured
                })
                .collect();
            PeerReport {
                digest: self.task.digest.clone(),
                repository: self.task.repository.clone(),
                size: self.task.size,
                state,
                pieces: self.partial.held(),
                free_upload_slots: self
                    .downloader
                    .server
                    .as_ref()
                    .map_or(0, |s| s.free_slots()),
                bad_parents: run.bad.clone(),
                throughput,
                source_bytes: self.counters.source.load(Ordering::Relaxed),
                peer_bytes: self.counters.peers.load(Ordering::Relaxed),
            }
        };
        match tracker.report(&report).await {
            Ok(assignment) if assignment.manifest == *self.partial.manifest() => {
                lock(&self.state).refresh(&assignment);
            }
            Ok(_) => tracing::warn!("the tracker answered a report with another manifest: ignored"),
            Err(e) => tracing::debug!(error = %e, "report not delivered"),
        }
    }
}
