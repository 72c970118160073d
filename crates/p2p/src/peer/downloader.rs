//! The P2P downloader: one blob from parents and the registry into the
//! node's piece store, serving what it has to others as it goes.
//!
//! A few workers per blob each ask one parent for one piece at a time, at
//! most [`PER_PARENT_IN_FLIGHT`] per parent. A worker picks the rarest
//! piece among what its parents hold (one of the first few, at random), so
//! the children of one parent fetch different pieces and trade them
//! instead of all queueing at the parent's uplink for the same one. What a
//! parent holds comes from the tracker (a report interval old) and, fresher,
//! from every answer of the parent itself ([`PIECES_HEADER`]). When no
//! parent is known to hold a missing piece, the parent furthest along is
//! asked for the first one it lacks: it holds the request until the piece
//! lands ([`PIECE_WAIT`]), so pieces flow down a chain of nodes still
//! downloading as soon as each is verified. The seed streams the blob from
//! the registry in order.
//!
//! A pull never fails because of P2P: a piece no parent delivers in time
//! comes from the registry by range, and if the tracker cannot be reached
//! (or anything else on the P2P path fails) the blob is streamed whole from
//! the registry, as before P2P.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use tokio::time::Instant;
use wharf_oci::Digest;

use super::store::PartialBlob;
use super::{PieceServer, PieceStore, Source, TokenBucket, TrackerClient};
use crate::Bitmap;
use crate::P2pError;
use crate::wire::{
    BadParent, PIECE_WAIT, PIECES_HEADER, Parent, ParentThroughput, PeerReport, PeerState,
    TaskAssignment, TaskRequest, piece_path,
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
    /// Blobs this node is streaming from the registry as its IDC's seed.
    /// Its other downloads from peers wait meanwhile (up to
    /// [`SEEDING_YIELD_LIMIT`] each): flows on one link share it about
    /// equally, and the seed's stream, which every other node of the IDC
    /// waits on, would get a fraction of the downlink.
    seeding: AtomicUsize,
    seeding_ended: tokio::sync::Notify,
    /// Piece requests in flight over all of the node's downloads
    /// ([`NODE_REQUESTS`]).
    requests: tokio::sync::Semaphore,
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
            // A SYN dropped by a full queue is sent again after 1 s, then
            // 2 s more, then 4 s more: a connection can take 7 s on a busy
            // link that is not dead.
            .connect_timeout(CONNECT_TIMEOUT.max(options.stall_timeout))
            .user_agent(concat!("wharf-p2p/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| P2pError::Internal(format!("cannot build the http client: {e}")))?;
        Ok(Downloader {
            bucket: TokenBucket::new(options.download_rate),
            store,
            http,
            options,
            server,
            seeding: AtomicUsize::new(0),
            seeding_ended: tokio::sync::Notify::new(),
            requests: tokio::sync::Semaphore::new(NODE_REQUESTS),
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
            changed: tokio::sync::Notify::new(),
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

/// Counts a seed's stream in [`Downloader::seeding`] while it lives.
struct Seeding<'a>(&'a Downloader);

impl<'a> Seeding<'a> {
    fn start(downloader: &'a Downloader) -> Seeding<'a> {
        downloader.seeding.fetch_add(1, Ordering::AcqRel);
        Seeding(downloader)
    }
}

impl Drop for Seeding<'_> {
    fn drop(&mut self) {
        if self.0.seeding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.seeding_ended.notify_waiters();
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
    /// Wakes workers waiting for a parent or a piece to pick when a
    /// request ends or the tracker's parents change.
    changed: tokio::sync::Notify,
    back_to_source: bool,
}

/// What a run knows of its parents and pieces.
struct RunState {
    grant: String,
    /// The tracker sends the node to the registry (it became its IDC's
    /// seed): pieces still missing come from there.
    back_to_source: bool,
    parents: Vec<ParentState>,
    bad: Vec<BadParent>,
    /// Pieces being fetched now, from a parent or the registry.
    in_flight: Vec<bool>,
    /// When a parent last answered for this blob (a piece, "not yet" or
    /// "busy"): while the swarm answers, pieces wait for it rather than
    /// go to the registry. A seed that dies is replaced by the tracker,
    /// which sends one node of the IDC to the registry, not all of them.
    last_heard: Instant,
    /// When a parent last delivered a piece (or the run began): parents
    /// that answer "not yet" forever, holding nothing and getting nothing,
    /// must not hold a pull.
    last_delivered: Instant,
    /// Time spent waiting for the node's seeding to end (bounded: a seed
    /// stuck on a slow registry must not hold other pulls).
    yielded: Duration,
}

struct ParentState {
    parent: Parent,
    /// Whether the tracker's latest answer lists it as a parent. The
    /// tracker keeps the graph of who fetches from whom free of cycles as
    /// of its latest answers; a neighbor, or a parent it stopped listing,
    /// may by now fetch from this node, so it is asked only for what it
    /// holds, never to hold a request.
    listed: bool,
    /// Why it is not used any more for this blob.
    dropped: Option<String>,
    /// After a 429 or a slow answer: not before then.
    busy_until: Option<Instant>,
    /// Pieces it answered 404 for, and when to ask again.
    lacking: HashMap<u32, Instant>,
    in_flight: usize,
    /// Times it stalled mid-piece since it last delivered.
    strikes: u32,
    /// Times in a row its answer did not come in time.
    unanswered: u32,
    /// Bytes and time spent on its pieces since the last report.
    bytes: u64,
    busy: Duration,
}

/// Why a piece did not come from a parent.
enum Miss {
    /// It does not hold the piece (yet).
    NotHeld,
    /// No slot free; try again after the duration.
    Busy(Duration),
    /// No bytes in time mid-piece: on a congested link a parent can be
    /// slow without being gone, so it rests a while and is dropped only
    /// after `slow_strikes` such times.
    Slow(String),
    /// No answer in time. On a saturated link connections and requests
    /// wait on dropped packets' retransmissions (a SYN is sent again
    /// after 1, 3 and 7 s): the parent rests, longer each time in a row,
    /// and is never dropped for it; a parent that is gone answers nothing
    /// to anyone, and the run's fallback takes over.
    Unanswered,
    /// Do not use it again for this blob.
    Drop(String),
}

/// A run waits at most this long in all for the node's seeding of other
/// blobs to end ([`Downloader::seeding`]).
const SEEDING_YIELD_LIMIT: Duration = Duration::from_secs(10);
/// How long connecting to a parent may take (see [`Downloader::new`]).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a worker of a run does next.
enum Step {
    /// Ask `parent` (at `at` in the run's parents) for `index`.
    Fetch {
        index: u32,
        at: usize,
        parent: Parent,
        grant: String,
    },
    /// Fetch `index` from the registry.
    Source(u32),
    /// Nothing to ask for now: wait for a request to end or a parent.
    Wait,
    /// Every piece is held or being fetched by another worker.
    Finished,
}

/// Piece requests (to peers, or by range to the registry) a node has in
/// flight at most, over all the blobs it fetches (each run has
/// `concurrency` workers; 3 layers are pulled at once). On a saturated downlink every further TCP flow means more
/// dropped packets, and each drop a retransmission timeout on some flow:
/// at 50 peers on 4 MiB/s links, 12 requests per node left thousands of
/// answers more than 7 s late.
const NODE_REQUESTS: usize = 6;
/// A parent is asked for at most this many pieces at once, so that a
/// node's requests spread over its parents' uplinks instead of queueing
/// at the best one.
const PER_PARENT_IN_FLIGHT: usize = 2;
/// Among the rarest pieces a parent can give, one of the first this many
/// (by index) is picked at random: children of one parent then fetch
/// different pieces and can trade them, while the blob still fills
/// roughly in order (the whole-blob hash advances as pieces land).
const PICK_WINDOW: usize = 8;
/// A 404 (after the parent held the request [`PIECE_WAIT`]) is asked
/// again after this long.
const NOT_HELD_RETRY: Duration = Duration::from_millis(200);
/// A piece the seed sent to others already is asked of it again after
/// this long, about when the tracker lists the peers that got it.
const RATIONED_RETRY: Duration = Duration::from_secs(1);
/// How long a worker with nothing to ask waits before looking again,
/// unless a request ends first.
const NO_PARENT_WAIT: Duration = Duration::from_millis(100);
/// The run goes to the registry after this many fallback times without a
/// piece from its parents, however busy they sound.
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

impl ParentState {
    fn usable(&self, now: Instant) -> bool {
        self.dropped.is_none()
            && self.busy_until.is_none_or(|t| t <= now)
            && self.in_flight < PER_PARENT_IN_FLIGHT
    }

    /// Whether it may be asked for `index` now: its last known bitmap has
    /// it (`holding`) or not (`!holding`: a request it holds until the
    /// piece lands), and it did not just answer "not yet" for it.
    fn may_ask(&self, index: u32, holding: bool, now: Instant) -> bool {
        self.parent.pieces.has(index) == holding
            && self.lacking.get(&index).is_none_or(|t| *t <= now)
    }

    fn rate(&self) -> f64 {
        self.bytes as f64 / self.busy.as_secs_f64().max(0.001)
    }
}

impl RunState {
    fn new(assignment: &TaskAssignment) -> RunState {
        let now = Instant::now();
        let mut state = RunState {
            grant: assignment.grant.clone(),
            back_to_source: assignment.back_to_source,
            parents: Vec::new(),
            bad: Vec::new(),
            in_flight: vec![false; assignment.manifest.piece_count() as usize],
            last_heard: now,
            last_delivered: now,
            yielded: Duration::ZERO,
        };
        state.refresh(assignment);
        state
    }

    /// Takes a fresh grant and the tracker's parents and neighbors;
    /// dropped parents stay dropped, and what a parent told directly is
    /// not forgotten.
    fn refresh(&mut self, assignment: &TaskAssignment) {
        self.grant = assignment.grant.clone();
        self.back_to_source = assignment.back_to_source;
        self.parents.iter_mut().for_each(|p| p.listed = false);
        let parents = assignment.parents.iter().map(|p| (p, true));
        let neighbors = assignment.neighbors.iter().map(|p| (p, false));
        for (parent, listed) in parents.chain(neighbors) {
            match self
                .parents
                .iter_mut()
                .find(|p| p.parent.node == parent.node)
            {
                Some(known) => {
                    let mut pieces = parent.pieces.clone();
                    pieces.merge(&known.parent.pieces);
                    known.parent = Parent {
                        pieces,
                        ..parent.clone()
                    };
                    known.listed |= listed;
                }
                None => self.parents.push(ParentState {
                    parent: parent.clone(),
                    listed,
                    dropped: None,
                    busy_until: None,
                    lacking: HashMap::new(),
                    in_flight: 0,
                    strikes: 0,
                    unanswered: 0,
                    bytes: 0,
                    busy: Duration::ZERO,
                }),
            }
        }
    }

    /// Whether the swarm has given up on this node: no parent answered
    /// anything for the fallback time, or none delivered a piece for
    /// [`FALLBACK_PATIENCE`] times that.
    fn swarm_gave_up(&self, now: Instant, fallback: Duration) -> bool {
        now >= self.last_heard + fallback
            || now >= self.last_delivered + fallback * FALLBACK_PATIENCE
    }

    /// The next request: the rarest piece (among the parents) a usable
    /// parent is known to hold, from the least loaded such parent; else a
    /// held request to the parent furthest along for the first piece it
    /// lacks; the registry once the swarm gave up.
    fn next_step(&mut self, held: &Bitmap, fallback: Duration) -> Step {
        let now = Instant::now();
        let open: Vec<u32> = (0..held.len())
            .filter(|&i| !held.has(i) && !self.in_flight[i as usize])
            .collect();
        let Some(&first) = open.first() else {
            return Step::Finished;
        };
        if self.back_to_source || self.swarm_gave_up(now, fallback) {
            self.in_flight[first as usize] = true;
            return Step::Source(first);
        }
        // The seed's uplink carries every new piece into the IDC: a node
        // with other parents asks it for one piece at a time.
        let other_parents = self
            .parents
            .iter()
            .any(|p| p.listed && p.dropped.is_none() && !p.parent.seed);
        let usable: Vec<usize> = (0..self.parents.len())
            .filter(|&at| {
                let parent = &self.parents[at];
                parent.usable(now) && !(other_parents && parent.parent.seed && parent.in_flight > 0)
            })
            .collect();
        let listed: Vec<usize> = usable
            .iter()
            .copied()
            .filter(|&at| self.parents[at].listed)
            .collect();
        // A neighbor, or a parent the tracker stopped listing, may fetch
        // from this node: it is asked only for pieces it holds (answered
        // at once), never held waiting, so no two nodes ever wait on each
        // other.
        let choice = self
            .rarest_held(&open, &usable, now)
            .or_else(|| self.furthest_fetching(&open, &listed, now));
        let Some((index, at)) = choice else {
            return Step::Wait;
        };
        self.in_flight[index as usize] = true;
        let parent = &mut self.parents[at];
        parent.in_flight += 1;
        Step::Fetch {
            index,
            at,
            parent: parent.parent.clone(),
            grant: self.grant.clone(),
        }
    }

    /// A piece a usable parent holds: first those a parent other than
    /// the seed can give, then the rarest among the parents; one of the
    /// first [`PICK_WINDOW`] such at random. From the holder that is not
    /// the seed, has the fewest of this node's requests and delivered the
    /// fastest.
    fn rarest_held(&self, open: &[u32], usable: &[usize], now: Instant) -> Option<(u32, usize)> {
        let holders = |index: u32| {
            self.parents
                .iter()
                .filter(|p| p.dropped.is_none() && p.parent.pieces.has(index))
                .count()
        };
        let askable: Vec<(u32, (bool, usize))> = open
            .iter()
            .filter_map(|&i| {
                let mut askable = usable
                    .iter()
                    .map(|&at| &self.parents[at])
                    .filter(|p| p.may_ask(i, true, now));
                let first = askable.next()?;
                let only_seed = first.parent.seed && askable.all(|p| p.parent.seed);
                Some((i, (only_seed, holders(i))))
            })
            .collect();
        let best = askable.iter().map(|&(_, key)| key).min()?;
        let window: Vec<u32> = askable
            .iter()
            .filter(|&&(_, key)| key == best)
            .map(|&(i, _)| i)
            .take(PICK_WINDOW)
            .collect();
        let index = window[rand::random::<u32>() as usize % window.len()];
        let at = usable
            .iter()
            .copied()
            .filter(|&at| self.parents[at].may_ask(index, true, now))
            .min_by(|&a, &b| {
                let (a, b) = (&self.parents[a], &self.parents[b]);
                a.parent
                    .seed
                    .cmp(&b.parent.seed)
                    .then(a.in_flight.cmp(&b.in_flight))
                    .then(b.rate().total_cmp(&a.rate()))
            })?;
        Some((index, at))
    }

    fn furthest_fetching(
        &self,
        open: &[u32],
        usable: &[usize],
        now: Instant,
    ) -> Option<(u32, usize)> {
        usable
            .iter()
            .copied()
            .filter(|&at| !self.parents[at].parent.pieces.is_complete())
            .filter_map(|at| {
                let parent = &self.parents[at];
                let index = open
                    .iter()
                    .copied()
                    .find(|&i| parent.may_ask(i, false, now))?;
                Some((index, at))
            })
            .max_by_key(|&(_, at)| {
                let parent = &self.parents[at];
                (
                    parent.parent.pieces.count(),
                    std::cmp::Reverse(parent.in_flight),
                )
            })
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
            let _seeding = Seeding::start(self.downloader);
            self.partial.ration_uploads();
            return self.stream_from_source().await;
        }
        let workers = self.downloader.options.concurrency.max(1);
        futures_util::future::try_join_all((0..workers).map(|_| self.work())).await?;
        Ok(())
    }

    /// One of the run's workers: asks for pieces until none is left to
    /// ask for.
    async fn work(&self) -> Result<(), P2pError> {
        let fallback = self.downloader.options.piece_fallback;
        loop {
            if self.downloader.seeding.load(Ordering::Acquire) > 0
                && lock(&self.state).yielded < SEEDING_YIELD_LIMIT
            {
                self.yield_to_seeding().await;
                continue;
            }
            let waiting = Instant::now();
            let request = self
                .downloader
                .requests
                .acquire()
                .await
                .map_err(|_| P2pError::Internal("the request limit closed".into()))?;
            let waited = waiting.elapsed();
            if waited >= NO_PARENT_WAIT {
                // The run asked no one meanwhile: their silence is not the
                // parents' fault.
                let mut state = lock(&self.state);
                state.last_heard += waited;
                state.last_delivered += waited;
            }
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let step = lock(&self.state).next_step(&self.partial.held(), fallback);
            match step {
                Step::Finished => return Ok(()),
                Step::Wait => {
                    drop(request);
                    let _ = tokio::time::timeout(NO_PARENT_WAIT, changed).await;
                }
                Step::Source(index) => {
                    let fetched = self.piece_from_source(index).await;
                    lock(&self.state).in_flight[index as usize] = false;
                    self.changed.notify_waiters();
                    fetched?;
                }
                Step::Fetch {
                    index,
                    at,
                    parent,
                    grant,
                } => {
                    let answered = self.ask_parent(index, at, &parent, &grant).await;
                    self.changed.notify_waiters();
                    answered?;
                }
            }
        }
    }

    /// Waits (a while at most) for the node's seeding to end. Parents are
    /// not being asked meanwhile, so their silence is not held against
    /// them.
    async fn yield_to_seeding(&self) {
        let started = Instant::now();
        let ended = self.downloader.seeding_ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        if self.downloader.seeding.load(Ordering::Acquire) > 0 {
            let _ = tokio::time::timeout(NO_PARENT_WAIT, ended).await;
        }
        let mut state = lock(&self.state);
        let now = Instant::now();
        state.last_heard = now;
        state.last_delivered = now;
        state.yielded += now - started;
    }

    /// Asks one parent for one piece and records what came of it. Fails
    /// only if the node's own store fails.
    async fn ask_parent(
        &self,
        index: u32,
        at: usize,
        parent: &Parent,
        grant: &str,
    ) -> Result<(), P2pError> {
        let started = Instant::now();
        let (pieces, fetched) = self.piece_from_parent(parent, grant, index).await;
        // A store failure ends the run (the blob then comes whole from the
        // registry), so its bookkeeping need not be undone.
        let written = match fetched {
            Ok(bytes) => {
                let len = bytes.len() as u64;
                let store = &self.downloader.store;
                if store.write_piece(&self.partial, index, bytes).await? {
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
        tracing::debug!(
            blob = %self.task.digest,
            index,
            parent = %parent.node,
            outcome = match &written {
                Ok(_) => "piece",
                Err(Miss::NotHeld) => "not-held",
                Err(Miss::Busy(_)) => "busy",
                Err(Miss::Slow(_)) => "slow",
                Err(Miss::Unanswered) => "unanswered",
                Err(Miss::Drop(_)) => "drop",
            },
            millis = started.elapsed().as_millis() as u64,
            "piece asked"
        );
        let mut state = lock(&self.state);
        state.in_flight[index as usize] = false;
        let now = Instant::now();
        let entry = &mut state.parents[at];
        entry.in_flight -= 1;
        // "Not held" from a parent whose bitmap holds the piece: a seed
        // that sent it to others already (see `PieceStore::claim_upload`).
        let rationed = pieces.as_ref().is_some_and(|p| p.has(index));
        if let Some(pieces) = pieces {
            entry.parent.pieces.merge(&pieces);
        }
        match written {
            Ok(len) => {
                entry.bytes += len;
                entry.busy += started.elapsed();
                entry.strikes = 0;
                entry.unanswered = 0;
                state.last_heard = now;
                state.last_delivered = now;
            }
            Err(Miss::NotHeld) => {
                let retry = if rationed {
                    RATIONED_RETRY
                } else {
                    NOT_HELD_RETRY
                };
                entry.lacking.insert(index, now + retry);
                state.last_heard = now;
            }
            Err(Miss::Busy(wait)) => {
                entry.busy_until = Some(now + wait);
                state.last_heard = now;
            }
            Err(Miss::Unanswered) => {
                // Requests sent together time out together: one more rest
                // in a row per rest, not per piece that was in flight.
                if entry.busy_until.is_none_or(|until| until <= now) {
                    entry.unanswered += 1;
                }
                let doublings = entry.unanswered.clamp(1, 3) - 1;
                entry.busy_until = Some(now + SLOW_REST * 2u32.pow(doublings));
            }
            Err(Miss::Slow(reason)) => {
                // Requests sent together time out together: one strike
                // per rest, not one per piece that was in flight.
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
        Ok(())
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

    /// Asks `parent` for piece `index`: the piece, or why not, with the
    /// pieces the parent says it holds now.
    async fn piece_from_parent(
        &self,
        parent: &Parent,
        grant: &str,
        index: u32,
    ) -> (Option<Bitmap>, Result<Bytes, Miss>) {
        let stall = self.downloader.options.stall_timeout;
        let expected = match self.partial.manifest().piece_range(index) {
            Ok(range) => range.end - range.start,
            Err(e) => return (None, Err(Miss::Drop(e.to_string()))),
        };
        let url = format!(
            "{}{}",
            parent.url.trim_end_matches('/'),
            piece_path(&self.task.digest, index)
        );
        let sent = self.downloader.http.get(&url).bearer_auth(grant).send();
        // The parent may hold the request PIECE_WAIT for a piece it is
        // fetching before it answers.
        let response = match tokio::time::timeout(stall + PIECE_WAIT, sent).await {
            Err(_) => return (None, Err(Miss::Unanswered)),
            Ok(Err(e)) if e.is_timeout() => return (None, Err(Miss::Unanswered)),
            Ok(Err(e)) => return (None, Err(Miss::Drop(format!("unreachable: {e}")))),
            Ok(Ok(response)) => response,
        };
        let pieces = response
            .headers()
            .get(PIECES_HEADER)
            .and_then(|v| serde_json::from_slice::<Bitmap>(v.as_bytes()).ok());
        (pieces, self.piece_body(response, index, expected).await)
    }

    async fn piece_body(
        &self,
        mut response: reqwest::Response,
        index: u32,
        expected: u64,
    ) -> Result<Bytes, Miss> {
        let stall = self.downloader.options.stall_timeout;
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
                self.changed.notify_waiters();
            }
            Ok(_) => tracing::warn!("the tracker answered a report with another manifest: ignored"),
            Err(e) => tracing::debug!(error = %e, "report not delivered"),
        }
    }
}

#[cfg(test)]
mod tests {
    use wharf_oci::DigestAlgorithm;

    use super::*;
    use crate::PieceManifest;

    const FALLBACK: Duration = Duration::from_secs(10);

    /// A run's state over a blob of `pieces` 4 MiB pieces with parents
    /// holding the given pieces.
    fn state(pieces: u32, parents: &[(&str, &[u32])]) -> RunState {
        let manifest = run_manifest(pieces);
        let parents = parents
            .iter()
            .map(|(node, held)| {
                let mut bitmap = Bitmap::new(pieces);
                held.iter().for_each(|&i| bitmap.set(i));
                Parent {
                    node: (*node).into(),
                    url: format!("http://{node}"),
                    idc: None,
                    pool: None,
                    pieces: bitmap,
                    seed: false,
                }
            })
            .collect();
        RunState::new(&assignment(manifest, parents, "grant"))
    }

    /// The tracker's answer listing `parents`, with `grant`.
    fn assignment(manifest: PieceManifest, parents: Vec<Parent>, grant: &str) -> TaskAssignment {
        TaskAssignment {
            grant: grant.into(),
            grant_expires_in: 300,
            manifest,
            parents,
            neighbors: Vec::new(),
            back_to_source: false,
            report_interval_ms: 1000,
        }
    }

    fn fetch(step: Step) -> (u32, String) {
        match step {
            Step::Fetch { index, parent, .. } => (index, parent.node),
            Step::Source(index) => panic!("piece {index} sent to the registry"),
            Step::Wait => panic!("a worker waits"),
            Step::Finished => panic!("a worker finished"),
        }
    }

    #[test]
    fn the_rarest_pieces_come_first_and_each_parent_gets_two_requests_at_most() {
        let mut run = state(6, &[("a", &[0, 1, 2, 3]), ("b", &[0, 1])]);
        let held = Bitmap::new(6);
        let mut asked: Vec<(u32, String)> = (0..4)
            .map(|_| fetch(run.next_step(&held, FALLBACK)))
            .collect();
        asked.sort();
        // Pieces 2 and 3 only "a" holds; then "a" has two requests and 0
        // and 1 go to "b".
        assert_eq!(
            asked,
            [
                (0, "b".into()),
                (1, "b".into()),
                (2, "a".into()),
                (3, "a".into())
            ]
        );
        // Both parents busy, pieces 4 and 5 held by neither: wait.
        assert!(matches!(run.next_step(&held, FALLBACK), Step::Wait));
    }

    #[test]
    fn the_seed_is_asked_for_one_piece_at_a_time_and_only_for_what_no_one_else_has() {
        let mut run = state(6, &[("seed", &[0, 1, 2, 3, 4, 5]), ("peer", &[0, 1])]);
        run.parents[0].parent.seed = true;
        let held = Bitmap::new(6);
        let mut asked: Vec<(u32, String)> = (0..3)
            .map(|_| fetch(run.next_step(&held, FALLBACK)))
            .collect();
        asked.sort();
        // What "peer" holds comes from it, though the seed holds it too;
        // then one piece only the seed has.
        assert_eq!(&asked[..2], [(0, "peer".into()), (1, "peer".into())]);
        assert_eq!(asked[2].1, "seed");
        assert!(matches!(run.next_step(&held, FALLBACK), Step::Wait));

        // With no other parent left, the seed takes the usual two.
        run.drop_parent(1, "gone".into());
        run.parents[0].in_flight = 0;
        run.in_flight.iter_mut().for_each(|f| *f = false);
        assert_eq!(fetch(run.next_step(&held, FALLBACK)).1, "seed");
        assert_eq!(fetch(run.next_step(&held, FALLBACK)).1, "seed");
        assert!(matches!(run.next_step(&held, FALLBACK), Step::Wait));
    }

    #[test]
    fn a_piece_no_parent_holds_is_asked_of_the_parent_furthest_along() {
        let mut run = state(4, &[("behind", &[0]), ("ahead", &[0, 1])]);
        let mut held = Bitmap::new(4);
        held.set(0);
        held.set(1);
        // Nothing to take: "ahead" is asked for piece 2 (it holds the
        // request until the piece lands), then for piece 3; then nothing
        // is left to ask for.
        assert_eq!(fetch(run.next_step(&held, FALLBACK)), (2, "ahead".into()));
        assert_eq!(fetch(run.next_step(&held, FALLBACK)), (3, "ahead".into()));
        assert!(matches!(run.next_step(&held, FALLBACK), Step::Finished));
    }

    #[test]
    fn held_and_requested_pieces_are_not_asked_for_and_dropped_parents_never() {
        let mut run = state(3, &[("gone", &[0, 1, 2]), ("here", &[1])]);
        run.drop_parent(0, "sent a bad piece".into());
        let mut held = Bitmap::new(3);
        held.set(0);
        assert_eq!(fetch(run.next_step(&held, FALLBACK)), (1, "here".into()));
        // Piece 2: only the dropped parent holds it; "here" may get it.
        assert_eq!(fetch(run.next_step(&held, FALLBACK)), (2, "here".into()));
        assert!(matches!(run.next_step(&held, FALLBACK), Step::Finished));
        assert_eq!(run.bad.len(), 1);
    }

    #[test]
    fn a_silent_or_fruitless_swarm_sends_pieces_to_the_registry() {
        let mut run = state(2, &[("a", &[0, 1])]);
        let held = Bitmap::new(2);
        run.last_heard = Instant::now() - FALLBACK;
        assert!(matches!(run.next_step(&held, FALLBACK), Step::Source(0)));

        let mut run = state(2, &[("a", &[0, 1])]);
        // Answers keep coming, pieces do not.
        run.last_delivered = Instant::now() - FALLBACK * FALLBACK_PATIENCE;
        assert!(matches!(run.next_step(&held, FALLBACK), Step::Source(0)));
        assert!(matches!(run.next_step(&held, FALLBACK), Step::Source(1)));
        assert!(matches!(run.next_step(&held, FALLBACK), Step::Finished));
    }

    #[test]
    fn a_fresh_tracker_view_adds_to_what_a_parent_said_itself() {
        let mut run = state(3, &[("a", &[0])]);
        let mut told = Bitmap::new(3);
        told.set(2);
        run.parents[0].parent.pieces.merge(&told);
        let mut tracker_view = Bitmap::new(3);
        tracker_view.set(1);
        let parent = Parent {
            pieces: tracker_view,
            ..run.parents[0].parent.clone()
        };
        run.refresh(&assignment(run_manifest(3), vec![parent], "newer"));
        assert_eq!(
            run.parents[0].parent.pieces.held().collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(run.grant, "newer");
    }

    #[test]
    fn neighbors_and_parents_no_longer_listed_are_asked_only_for_pieces_they_hold() {
        let mut run = state(4, &[("old", &[0, 1, 2]), ("new", &[0])]);
        let mut new = run.parents[1].parent.clone();
        new.pieces.set(1);
        let mut next = assignment(run_manifest(4), vec![new], "newer");
        let mut neighbor = next.parents[0].clone();
        neighbor.node = "beside".into();
        neighbor.pieces = Bitmap::new(4);
        neighbor.pieces.set(3);
        next.neighbors = vec![neighbor];
        run.refresh(&next);
        assert!(!run.parents[0].listed && run.parents[1].listed && !run.parents[2].listed);
        // Held pieces are asked of whoever holds them, the rarest first:
        // 2 only "old" holds, 3 only the neighbor.
        let held = Bitmap::new(4);
        let mut first: Vec<(u32, String)> = (0..2)
            .map(|_| fetch(run.next_step(&held, FALLBACK)))
            .collect();
        first.sort();
        assert_eq!(first, [(2, "old".into()), (3, "beside".into())]);
        let (index, _) = fetch(run.next_step(&held, FALLBACK));
        assert!(index < 2);

        // A piece none holds is a held request to a listed parent only.
        let mut run = state(3, &[("old", &[0]), ("new", &[0])]);
        let new = run.parents[1].parent.clone();
        let mut next = assignment(run_manifest(3), vec![new], "newer");
        let mut neighbor = next.parents[0].clone();
        neighbor.node = "beside".into();
        next.neighbors = vec![neighbor];
        run.refresh(&next);
        let mut held = Bitmap::new(3);
        held.set(0);
        let asked: Vec<(u32, String)> = (0..2)
            .map(|_| fetch(run.next_step(&held, FALLBACK)))
            .collect();
        assert_eq!(asked, [(1, "new".into()), (2, "new".into())]);
        assert!(matches!(run.next_step(&held, FALLBACK), Step::Finished));
    }

    fn run_manifest(pieces: u32) -> PieceManifest {
        let bytes = vec![7u8; pieces as usize * (4 << 20)];
        let digest = Digest::of(DigestAlgorithm::Sha256, &bytes);
        PieceManifest::compute(&digest, bytes.len() as u64, &bytes[..]).unwrap()
    }
}
