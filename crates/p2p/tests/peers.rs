//! In-process peers: real piece servers on loopback, a fake tracker and a
//! fake registry that counts the bytes it serves.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey};
use futures_util::StreamExt;
use tempfile::TempDir;
use wharf_oci::{Digest, DigestAlgorithm};
use wharf_p2p::peer::{
    BlobTask, ByteStream, Downloaded, Downloader, DownloaderOptions, PIECE_ROUTE, PieceServer,
    PieceStore, Source, TrackerClient,
};
use wharf_p2p::wire::{
    PIECES_HEADER, Parent, PeerReport, PeerState, ServerKey, TaskAssignment, TaskRequest,
    piece_path,
};
use wharf_p2p::{Bitmap, GRANT_AUDIENCE, P2pError, PeerGrant, PieceManifest, encode_grant};

const MIB: usize = 1 << 20;

fn blob(size: usize) -> (Bytes, PieceManifest) {
    let bytes: Vec<u8> = (0..size)
        .map(|i| (i * 131 % 241) as u8 ^ (i >> 16) as u8)
        .collect();
    let digest = Digest::of(DigestAlgorithm::Sha256, &bytes);
    let manifest = PieceManifest::compute(&digest, size as u64, &bytes[..]).unwrap();
    (bytes.into(), manifest)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The tracker as the test scripts it: who goes back to source, who gets
/// which parents (with the pieces their last report said they hold).
struct FakeTracker {
    key: SigningKey,
    manifest: PieceManifest,
    down: AtomicBool,
    seeds: Mutex<Vec<String>>,
    parents: Mutex<HashMap<String, Vec<String>>>,
    urls: Mutex<HashMap<String, String>>,
    held: Mutex<HashMap<String, Bitmap>>,
    reports: Mutex<Vec<(String, PeerReport)>>,
}

impl FakeTracker {
    fn new(manifest: &PieceManifest) -> Arc<FakeTracker> {
        Arc::new(FakeTracker {
            key: SigningKey::from_bytes(&[9; 32]),
            manifest: manifest.clone(),
            down: AtomicBool::new(false),
            seeds: Mutex::default(),
            parents: Mutex::default(),
            urls: Mutex::default(),
            held: Mutex::default(),
            reports: Mutex::default(),
        })
    }

    fn grant_for(&self, node: &str, blob: &Digest, exp: u64) -> String {
        let grant = PeerGrant {
            aud: GRANT_AUDIENCE.into(),
            sub: node.into(),
            blob: blob.clone(),
            iat: now(),
            exp,
        };
        encode_grant(&grant, "k1", |m| self.key.sign(m).to_bytes())
    }

    fn assignment(&self, node: &str) -> TaskAssignment {
        let held = self.held.lock().unwrap();
        let urls = self.urls.lock().unwrap();
        let parents = self
            .parents
            .lock()
            .unwrap()
            .get(node)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|name| Parent {
                url: urls[&name].clone(),
                pieces: held
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| Bitmap::new(self.manifest.piece_count())),
                node: name,
                idc: None,
                pool: None,
                seed: false,
            })
            .collect();
        TaskAssignment {
            grant: self.grant_for(node, &self.manifest.digest, now() + 300),
            grant_expires_in: 300,
            manifest: self.manifest.clone(),
            parents,
            neighbors: Vec::new(),
            back_to_source: self.seeds.lock().unwrap().iter().any(|s| s == node),
            report_interval_ms: 50,
        }
    }

    /// Registers `name` at `url` as a peer holding the whole blob.
    fn holds_everything(&self, name: &str, url: String) {
        self.urls.lock().unwrap().insert(name.into(), url);
        let full = Bitmap::full(self.manifest.piece_count());
        self.held.lock().unwrap().insert(name.into(), full);
    }

    fn check_up(&self) -> Result<(), P2pError> {
        if self.down.load(Ordering::Relaxed) {
            Err(P2pError::Tracker("connection refused".into()))
        } else {
            Ok(())
        }
    }

    fn reports_of(&self, node: &str) -> Vec<PeerReport> {
        let reports = self.reports.lock().unwrap();
        reports
            .iter()
            .filter(|(n, _)| n == node)
            .map(|(_, r)| r.clone())
            .collect()
    }

    fn client(self: &Arc<Self>, node: &str) -> TrackerFor {
        TrackerFor {
            tracker: self.clone(),
            node: node.into(),
        }
    }
}

/// The tracker as one node's credential sees it.
struct TrackerFor {
    tracker: Arc<FakeTracker>,
    node: String,
}

#[async_trait]
impl TrackerClient for TrackerFor {
    async fn key(&self) -> Result<ServerKey, P2pError> {
        self.tracker.check_up()?;
        Ok(ServerKey {
            key_id: "k1".into(),
            public_key: STANDARD.encode(self.tracker.key.verifying_key().as_bytes()),
        })
    }

    async fn assign(&self, request: &TaskRequest) -> Result<TaskAssignment, P2pError> {
        self.tracker.check_up()?;
        assert_eq!(request.digest, self.tracker.manifest.digest);
        Ok(self.tracker.assignment(&self.node))
    }

    async fn report(&self, report: &PeerReport) -> Result<TaskAssignment, P2pError> {
        self.tracker.check_up()?;
        self.tracker
            .held
            .lock()
            .unwrap()
            .insert(self.node.clone(), report.pieces.clone());
        self.tracker
            .reports
            .lock()
            .unwrap()
            .push((self.node.clone(), report.clone()));
        Ok(self.tracker.assignment(&self.node))
    }
}

/// The registry: ranged reads of the blob, counted, optionally slow.
#[derive(Clone)]
struct FakeSource {
    bytes: Bytes,
    served: Arc<AtomicU64>,
    chunk_delay: Duration,
    /// Bytes from this offset on never come (the stream hangs there).
    hang_at: usize,
}

impl FakeSource {
    fn new(bytes: &Bytes, chunk_delay: Duration) -> Arc<FakeSource> {
        Arc::new(FakeSource {
            bytes: bytes.clone(),
            served: Arc::default(),
            chunk_delay,
            hang_at: usize::MAX,
        })
    }

    /// A registry that sends the first `at` bytes and then nothing.
    fn hanging_at(bytes: &Bytes, at: usize) -> Arc<FakeSource> {
        Arc::new(FakeSource {
            hang_at: at,
            ..(*FakeSource::new(bytes, Duration::ZERO)).clone()
        })
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Source for FakeSource {
    async fn range(&self, range: Range<u64>) -> Result<ByteStream, P2pError> {
        let this = self.clone();
        let chunks: Vec<Range<usize>> = (range.start as usize..range.end as usize)
            .step_by(64 << 10)
            .map(|start| start..(start + (64 << 10)).min(range.end as usize))
            .collect();
        Ok(futures_util::stream::iter(chunks)
            .then(move |r| {
                let this = this.clone();
                async move {
                    if r.start >= this.hang_at {
                        std::future::pending::<()>().await;
                    }
                    if !this.chunk_delay.is_zero() {
                        tokio::time::sleep(this.chunk_delay).await;
                    }
                    this.served.fetch_add(r.len() as u64, Ordering::Relaxed);
                    Ok(this.bytes.slice(r))
                }
            })
            .boxed())
    }
}

/// Serves `router` on 127.0.0.1:0; returns its URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

/// A real node: its piece store, piece server and downloader.
struct Peer {
    name: String,
    _dir: TempDir,
    store: Arc<PieceStore>,
    downloader: Downloader,
    /// When the piece server answered 200 for each request, by piece.
    served: Arc<Mutex<Vec<(Instant, String)>>>,
}

fn options() -> DownloaderOptions {
    DownloaderOptions {
        concurrency: 4,
        stall_timeout: Duration::from_millis(500),
        slow_strikes: 3,
        piece_fallback: Duration::from_secs(5),
        download_rate: 0,
        default_report_interval: Duration::from_millis(50),
    }
}

/// One stall is enough to drop a parent; `slow_parents_rest_before_they_are_dropped`
/// shows the default's patience.
fn strike_once() -> DownloaderOptions {
    DownloaderOptions {
        slow_strikes: 1,
        ..options()
    }
}

async fn peer(tracker: &Arc<FakeTracker>, name: &str, options: DownloaderOptions) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(PieceStore::open(dir.path().join("blobs")).await.unwrap());
    let server = Arc::new(PieceServer::new(
        store.clone(),
        Arc::new(tracker.client(name)),
        8,
        0,
    ));
    let served = Arc::new(Mutex::new(Vec::new()));
    let log = served.clone();
    let router = server.clone().router().layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let log = log.clone();
            async move {
                let path = request.uri().path().to_owned();
                let response = next.run(request).await;
                if response.status().is_success() {
                    log.lock().unwrap().push((Instant::now(), path));
                }
                response
            }
        },
    ));
    let url = serve(router).await;
    tracker.urls.lock().unwrap().insert(name.into(), url);
    let downloader = Downloader::new(store.clone(), Some(server), options).unwrap();
    Peer {
        name: name.into(),
        _dir: dir,
        store,
        downloader,
        served,
    }
}

impl Peer {
    async fn fetch(
        &self,
        tracker: &Arc<FakeTracker>,
        source: &Arc<FakeSource>,
    ) -> (Downloaded, Instant) {
        let task = BlobTask {
            digest: tracker.manifest.digest.clone(),
            size: tracker.manifest.size,
            repository: "shop/web".into(),
        };
        let downloaded = self
            .downloader
            .download(&task, &tracker.client(&self.name), &**source, &|_| {})
            .await
            .unwrap();
        (downloaded, Instant::now())
    }

    fn first_served(&self) -> Option<Instant> {
        self.served.lock().unwrap().first().map(|(at, _)| *at)
    }
}

fn assert_blob(downloaded: &Downloaded, bytes: &Bytes) {
    assert_eq!(std::fs::read(&downloaded.path).unwrap(), bytes.as_ref());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chain_of_three_streams_from_parents_still_downloading() {
    let (bytes, manifest) = blob(24 * MIB + 12345);
    let tracker = FakeTracker::new(&manifest);
    // 386 chunks of 64 KiB at 5 ms each: about 2 s for the seed.
    let source = FakeSource::new(&bytes, Duration::from_millis(5));
    let a = peer(&tracker, "a", options()).await;
    let b = peer(&tracker, "b", options()).await;
    let c = peer(&tracker, "c", options()).await;
    tracker.seeds.lock().unwrap().push("a".into());
    tracker
        .parents
        .lock()
        .unwrap()
        .insert("b".into(), vec!["a".into()]);
    tracker
        .parents
        .lock()
        .unwrap()
        .insert("c".into(), vec!["b".into()]);

    let ((da, a_done), (db, b_done), (dc, _)) = tokio::join!(
        a.fetch(&tracker, &source),
        b.fetch(&tracker, &source),
        c.fetch(&tracker, &source)
    );

    for downloaded in [&da, &db, &dc] {
        assert_blob(downloaded, &bytes);
    }
    let size = manifest.size;
    assert_eq!(source.served(), size, "only the seed reads the registry");
    assert_eq!((da.source_bytes, da.peer_bytes), (size, 0));
    assert_eq!((db.source_bytes, db.peer_bytes), (0, size));
    assert_eq!((dc.source_bytes, dc.peer_bytes), (0, size));
    assert!(
        a.first_served().unwrap() < a_done,
        "a served a piece while downloading"
    );
    assert!(
        b.first_served().unwrap() < b_done,
        "b served a piece while downloading"
    );
    let done = tracker.reports_of("c");
    assert_eq!(done.last().unwrap().state, PeerState::Done);
    assert!(done.last().unwrap().pieces.is_complete());
    // Complete blobs serve every piece.
    assert_eq!(c.store.held(&manifest.digest).await.unwrap().count(), 7);
}

/// A parent answering with bytes shaped by `answer` for every piece.
async fn rogue_parent(
    tracker: &Arc<FakeTracker>,
    name: &str,
    answer: fn(Bytes) -> Response,
    bytes: &Bytes,
) {
    let (bytes, manifest) = (bytes.clone(), tracker.manifest.clone());
    let router = Router::new().route(
        PIECE_ROUTE,
        axum::routing::get(move |Path((_, index)): Path<(String, u32)>| {
            let range = manifest.piece_range(index).unwrap();
            let piece = bytes.slice(range.start as usize..range.end as usize);
            async move { answer(piece) }
        }),
    );
    let url = serve(router).await;
    tracker.holds_everything(name, url);
}

fn corrupted(piece: Bytes) -> Response {
    let mut bad = piece.to_vec();
    bad[100] ^= 0xff;
    bad.into_response()
}

/// Half the piece, then nothing (the connection stays open).
fn stalling(piece: Bytes) -> Response {
    let length = piece.len();
    let half = piece.slice(..length / 2);
    let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(half) })
        .chain(futures_util::stream::pending());
    Response::builder()
        .header("content-length", length)
        .body(Body::from_stream(body))
        .unwrap()
}

/// Half the piece, then the connection closes.
fn closing(piece: Bytes) -> Response {
    let length = piece.len();
    let half = piece.slice(..length / 2);
    let body =
        futures_util::stream::iter([Ok(half), Err(std::io::Error::other("the parent went away"))]);
    Response::builder()
        .header("content-length", length)
        .body(Body::from_stream(body))
        .unwrap()
}

async fn seeded(tracker: &Arc<FakeTracker>, name: &str, source: &Arc<FakeSource>) -> Peer {
    let seed = peer(tracker, name, options()).await;
    tracker.seeds.lock().unwrap().push(name.into());
    seed.fetch(tracker, source).await;
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_sending_corrupt_pieces_is_blocklisted_and_the_blob_is_right() {
    let (bytes, manifest) = blob(13 * MIB);
    let tracker = FakeTracker::new(&manifest);
    let source = FakeSource::new(&bytes, Duration::ZERO);
    let _seed = seeded(&tracker, "seed", &source).await;
    rogue_parent(&tracker, "evil", corrupted, &bytes).await;
    // The corrupt parent comes first, so it is asked first.
    tracker
        .parents
        .lock()
        .unwrap()
        .insert("c".into(), vec!["evil".into(), "seed".into()]);
    let served_before = source.served();

    let c = peer(&tracker, "c", options()).await;
    let (downloaded, _) = c.fetch(&tracker, &source).await;

    assert_blob(&downloaded, &bytes);
    assert_eq!(downloaded.peer_bytes, manifest.size);
    assert_eq!(source.served(), served_before, "no fallback needed");
    let last = tracker.reports_of("c").pop().unwrap();
    assert_eq!(last.bad_parents.len(), 1, "{:?}", last.bad_parents);
    assert_eq!(last.bad_parents[0].node, "evil");
    assert!(
        last.bad_parents[0]
            .reason
            .contains("not matching the manifest")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parents_that_stall_or_close_mid_piece_are_dropped_without_failing_the_pull() {
    let (bytes, manifest) = blob(13 * MIB);
    let tracker = FakeTracker::new(&manifest);
    let source = FakeSource::new(&bytes, Duration::ZERO);
    let _seed = seeded(&tracker, "seed", &source).await;
    rogue_parent(&tracker, "staller", stalling, &bytes).await;
    rogue_parent(&tracker, "closer", closing, &bytes).await;
    let parents = vec!["staller".into(), "closer".into(), "seed".into()];
    tracker.parents.lock().unwrap().insert("c".into(), parents);
    let served_before = source.served();

    let c = peer(&tracker, "c", strike_once()).await;
    let started = Instant::now();
    let (downloaded, _) = c.fetch(&tracker, &source).await;

    assert_blob(&downloaded, &bytes);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(source.served(), served_before);
    let bad: HashMap<String, String> = tracker
        .reports_of("c")
        .pop()
        .unwrap()
        .bad_parents
        .into_iter()
        .map(|b| (b.node, b.reason))
        .collect();
    assert!(bad["staller"].contains("stalled"), "{bad:?}");
    assert!(bad["closer"].contains("mid-piece"), "{bad:?}");
    assert!(!bad.contains_key("seed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_that_never_answers_rests_and_is_not_reported_bad() {
    let (bytes, manifest) = blob(13 * MIB);
    let tracker = FakeTracker::new(&manifest);
    let source = FakeSource::new(&bytes, Duration::ZERO);
    let _seed = seeded(&tracker, "seed", &source).await;
    // Connections are accepted (the backlog) and never read: as on a link
    // whose queues drop every request.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tracker.holds_everything("silent", format!("http://{}", silent.local_addr().unwrap()));
    let parents = vec!["silent".into(), "seed".into()];
    tracker.parents.lock().unwrap().insert("c".into(), parents);
    let served_before = source.served();

    let c = peer(&tracker, "c", strike_once()).await;
    let (downloaded, _) = c.fetch(&tracker, &source).await;

    assert_blob(&downloaded, &bytes);
    silent.set_nonblocking(true).unwrap();
    assert!(silent.accept().is_ok(), "the silent parent was asked");
    assert_eq!(source.served(), served_before, "the seed served it all");
    let reports = tracker.reports_of("c");
    assert!(
        reports.iter().all(|r| r.bad_parents.is_empty()),
        "{:?}",
        reports.last().map(|r| &r.bad_parents)
    );
}

/// Requests at once over a set of parents: now and the most seen.
#[derive(Clone, Default)]
struct AtOnce {
    now: Arc<AtomicU64>,
    most: Arc<AtomicU64>,
}

/// A parent holding everything that answers each request after 50 ms,
/// counting in `at_once` the requests it has open.
async fn counting_parent(tracker: &Arc<FakeTracker>, name: &str, bytes: &Bytes, at_once: &AtOnce) {
    let (bytes, manifest, at_once) = (bytes.clone(), tracker.manifest.clone(), at_once.clone());
    let router = Router::new().route(
        PIECE_ROUTE,
        axum::routing::get(move |Path((_, index)): Path<(String, u32)>| {
            let range = manifest.piece_range(index).unwrap();
            let piece = bytes.slice(range.start as usize..range.end as usize);
            let at_once = at_once.clone();
            async move {
                let open = at_once.now.fetch_add(1, Ordering::SeqCst) + 1;
                at_once.most.fetch_max(open, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                at_once.now.fetch_sub(1, Ordering::SeqCst);
                piece
            }
        }),
    );
    let url = serve(router).await;
    tracker.holds_everything(name, url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_has_six_piece_requests_in_flight_at_most() {
    let (bytes, manifest) = blob(64 * MIB);
    let tracker = FakeTracker::new(&manifest);
    let source = FakeSource::new(&bytes, Duration::ZERO);
    let at_once = AtOnce::default();
    let names: Vec<String> = (0..8).map(|i| format!("parent{i}")).collect();
    for name in &names {
        counting_parent(&tracker, name, &bytes, &at_once).await;
    }
    tracker.parents.lock().unwrap().insert("c".into(), names);

    // 16 workers, 2 requests per parent: 16 at once without the node's
    // limit.
    let eager = DownloaderOptions {
        concurrency: 16,
        ..options()
    };
    let c = peer(&tracker, "c", eager).await;
    let (downloaded, _) = c.fetch(&tracker, &source).await;
    assert_blob(&downloaded, &bytes);
    assert_eq!(source.served(), 0);
    let most = at_once.most.load(Ordering::SeqCst);
    assert!((4..=6).contains(&most), "{most} requests at once");
}

/// Whether [`stalling_once`] has stalled yet (one test uses it).
static STALLED_ONCE: AtomicBool = AtomicBool::new(false);

/// Stalls its first answer as [`stalling`] does, then serves well: a
/// parent on a congested link.
fn stalling_once(piece: Bytes) -> Response {
    if STALLED_ONCE.swap(true, Ordering::SeqCst) {
        Response::new(Body::from(piece))
    } else {
        stalling(piece)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_parents_rest_before_they_are_dropped() {
    let (bytes, manifest) = blob(13 * MIB);
    let tracker = FakeTracker::new(&manifest);
    let source = FakeSource::new(&bytes, Duration::ZERO);
    rogue_parent(&tracker, "slowpoke", stalling_once, &bytes).await;
    tracker
        .parents
        .lock()
        .unwrap()
        .insert("c".into(), vec!["slowpoke".into()]);

    let c = peer(&tracker, "c", options()).await;
    let (downloaded, _) = c.fetch(&tracker, &source).await;

    assert!(
        STALLED_ONCE.load(Ordering::SeqCst),
        "the parent stalled once"
    );
    assert_blob(&downloaded, &bytes);
    assert_eq!(downloaded.peer_bytes, manifest.size, "all from the parent");
    assert_eq!(source.served(), 0, "no fallback to the registry");
    let last = tracker.reports_of("c").pop().unwrap();
    assert!(last.bad_parents.is_empty(), "{:?}", last.bad_parents);
}

#[tokio::test]
async fn with_the_tracker_down_everything_comes_from_the_registry() {
    let (bytes, manifest) = blob(9 * MIB);
    let tracker = FakeTracker::new(&manifest);
    tracker.down.store(true, Ordering::Relaxed);
    let source = FakeSource::new(&bytes, Duration::ZERO);
    let c = peer(&tracker, "c", options()).await;

    let (downloaded, _) = c.fetch(&tracker, &source).await;

    assert_blob(&downloaded, &bytes);
    assert_eq!(
        (downloaded.source_bytes, downloaded.peer_bytes),
        (manifest.size, 0)
    );
    assert_eq!(source.served(), manifest.size);
    // The verified blob is kept, and the next fetch finds it.
    let (again, _) = c.fetch(&tracker, &source).await;
    assert_eq!(again.cached_bytes, manifest.size);
    assert_eq!(source.served(), manifest.size);
}

#[tokio::test]
async fn pieces_no_parent_delivers_in_time_come_from_the_registry_by_range() {
    let (bytes, manifest) = blob(9 * MIB);
    let tracker = FakeTracker::new(&manifest);
    let source = FakeSource::new(&bytes, Duration::ZERO);
    // A parent that holds nothing: every piece is a 404.
    let empty = peer(&tracker, "empty", options()).await;
    tracker
        .parents
        .lock()
        .unwrap()
        .insert("c".into(), vec![empty.name.clone()]);
    let c = peer(
        &tracker,
        "c",
        DownloaderOptions {
            piece_fallback: Duration::from_millis(300),
            ..options()
        },
    )
    .await;

    let (downloaded, _) = c.fetch(&tracker, &source).await;

    assert_blob(&downloaded, &bytes);
    assert_eq!(
        (downloaded.source_bytes, downloaded.peer_bytes),
        (manifest.size, 0)
    );
}

#[tokio::test]
async fn the_piece_server_refuses_grants_that_are_forged_expired_or_for_another_blob() {
    let (bytes, manifest) = blob(5 * MIB);
    let tracker = FakeTracker::new(&manifest);
    let source = FakeSource::new(&bytes, Duration::ZERO);
    let seed = seeded(&tracker, "seed", &source).await;
    let url = tracker.urls.lock().unwrap()["seed"].clone();
    let http = reqwest::Client::new();
    let get = |index: u32, token: Option<String>| {
        let mut request = http.get(format!("{url}{}", piece_path(&manifest.digest, index)));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap() }
    };

    let valid = tracker.grant_for("c", &manifest.digest, now() + 60);
    let ok = get(1, Some(valid.clone())).await;
    assert_eq!(ok.status(), 200);
    // Every answer says what the peer holds: here, the whole blob.
    let held: Bitmap = serde_json::from_slice(ok.headers()[PIECES_HEADER].as_bytes()).unwrap();
    assert!(held.is_complete() && held.len() == 2, "{held:?}");
    assert_eq!(ok.bytes().await.unwrap(), bytes.slice(4 * MIB..));
    let missing = get(2, Some(valid)).await;
    assert_eq!(missing.status(), 404, "no such piece");
    assert!(missing.headers().contains_key(PIECES_HEADER));

    let expired = tracker.grant_for("c", &manifest.digest, now() - 1);
    let other_blob = tracker.grant_for("c", &Digest::of(DigestAlgorithm::Sha256, b"x"), now() + 60);
    let forger = SigningKey::from_bytes(&[1; 32]);
    let forged = encode_grant(
        &PeerGrant {
            aud: GRANT_AUDIENCE.into(),
            sub: "c".into(),
            blob: manifest.digest.clone(),
            iat: now(),
            exp: now() + 60,
        },
        "k1",
        |m| forger.sign(m).to_bytes(),
    );
    for (what, token) in [
        ("expired", Some(expired)),
        ("other blob", Some(other_blob)),
        ("forged", Some(forged)),
        ("garbage", Some("not.a.grant".into())),
        ("missing", None),
    ] {
        let response = get(0, token).await;
        assert_eq!(response.status(), 403, "{what}");
    }
    assert!(seed.store.complete(&manifest.digest).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_sends_a_piece_twice_only_once_every_piece_it_holds_went_out() {
    let (bytes, manifest) = blob(12 * MIB);
    let tracker = FakeTracker::new(&manifest);
    // The registry sends pieces 0 and 1, then hangs: the seed is still
    // fetching for the whole test.
    let source = FakeSource::hanging_at(&bytes, 8 * MIB);
    let seed = peer(&tracker, "seed", options()).await;
    tracker.seeds.lock().unwrap().push("seed".into());
    let fetching = {
        let (tracker, source) = (tracker.clone(), source.clone());
        tokio::spawn(async move { seed.fetch(&tracker, &source).await })
    };
    let url = tracker.urls.lock().unwrap()["seed"].clone();
    let http = reqwest::Client::new();
    let get = |index: u32, node: &str| {
        let grant = tracker.grant_for(node, &manifest.digest, now() + 60);
        let request = http
            .get(format!("{url}{}", piece_path(&manifest.digest, index)))
            .bearer_auth(grant);
        async move { request.send().await.unwrap() }
    };
    // Any answer says what the seed holds; piece 3 does not exist.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get(3, "b").await;
        let held = answer
            .headers()
            .get(PIECES_HEADER)
            .and_then(|v| serde_json::from_slice::<Bitmap>(v.as_bytes()).ok());
        if held.is_some_and(|h| h.has(0) && h.has(1)) {
            break;
        }
        assert!(Instant::now() < deadline, "the seed fetches two pieces");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = get(0, "b").await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.bytes().await.unwrap(), bytes.slice(..4 * MIB));

    let again = get(0, "c").await;
    assert_eq!(again.status(), 404, "piece 1 has not gone out yet");
    let held: Bitmap = serde_json::from_slice(again.headers()[PIECES_HEADER].as_bytes()).unwrap();
    assert!(
        held.has(0) && held.has(1),
        "the refusal says the seed holds it"
    );

    assert_eq!(get(1, "c").await.status(), 200);
    let second_copy = get(0, "c").await;
    assert_eq!(second_copy.status(), 200, "each piece went once");
    assert_eq!(second_copy.bytes().await.unwrap(), bytes.slice(..4 * MIB));
    fetching.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_upload_slots_answer_429_and_the_upload_rate_holds() {
    let (bytes, manifest) = blob(8 * MIB);
    let tracker = FakeTracker::new(&manifest);
    let source = FakeSource::new(&bytes, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(PieceStore::open(dir.path()).await.unwrap());
    let seeder = Downloader::new(store.clone(), None, options()).unwrap();
    tracker.seeds.lock().unwrap().push("seed".into());
    let task = BlobTask {
        digest: manifest.digest.clone(),
        size: manifest.size,
        repository: "shop/web".into(),
    };
    seeder
        .download(&task, &tracker.client("seed"), &*source, &|_| {})
        .await
        .unwrap();
    // One slot, 2 MiB/s: a 4 MiB piece takes about a second after the
    // bucket's first second's worth.
    let server = Arc::new(PieceServer::new(
        store,
        Arc::new(tracker.client("seed")),
        1,
        2 << 20,
    ));
    let url = serve(server.clone().router()).await;
    let grant = tracker.grant_for("c", &manifest.digest, now() + 60);
    let http = reqwest::Client::new();
    let piece = |index| {
        http.get(format!("{url}{}", piece_path(&manifest.digest, index)))
            .bearer_auth(&grant)
            .send()
    };

    let started = Instant::now();
    let first = piece(0).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(server.free_slots(), 0);
    let refused = piece(1).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(first.bytes().await.unwrap().len(), 4 * MIB);
    let first_took = started.elapsed();
    assert!(first_took >= Duration::from_millis(800), "{first_took:?}");

    let started = Instant::now();
    let second = piece(1).await.unwrap();
    assert_eq!(second.status(), 200, "the slot is free again");
    assert_eq!(second.bytes().await.unwrap().len(), 4 * MIB);
    // The bucket was drained by the first piece: 4 MiB at 2 MiB/s.
    let second_took = started.elapsed();
    assert!(
        second_took >= Duration::from_millis(1500),
        "{second_took:?}"
    );
    assert!(second_took < Duration::from_secs(5), "{second_took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_download_rate_holds_across_pieces() {
    let (bytes, manifest) = blob(12 * MIB);
    let tracker = FakeTracker::new(&manifest);
    let source = FakeSource::new(&bytes, Duration::ZERO);
    let _seed = seeded(&tracker, "seed", &source).await;
    tracker
        .parents
        .lock()
        .unwrap()
        .insert("c".into(), vec!["seed".into()]);
    let c = peer(
        &tracker,
        "c",
        DownloaderOptions {
            download_rate: 4 << 20,
            ..options()
        },
    )
    .await;

    let started = Instant::now();
    let (downloaded, _) = c.fetch(&tracker, &source).await;
    let took = started.elapsed();

    assert_blob(&downloaded, &bytes);
    assert_eq!(downloaded.peer_bytes, manifest.size);
    // 12 MiB at 4 MiB/s with one second's worth up front: about 2 s.
    assert!(took >= Duration::from_millis(1700), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_the_tracker_makes_the_seed_mid_download_goes_to_the_registry_at_once() {
    let (bytes, manifest) = blob(13 * MIB);
    let tracker = FakeTracker::new(&manifest);
    let source = FakeSource::new(&bytes, Duration::ZERO);
    // No parent and not the seed: the node waits for parents...
    let c = peer(
        &tracker,
        "c",
        DownloaderOptions {
            piece_fallback: Duration::from_secs(30),
            ..options()
        },
    )
    .await;
    let promote = {
        let tracker = tracker.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // ...until the seed is gone and the tracker promotes it.
            tracker.seeds.lock().unwrap().push("c".into());
        })
    };

    let started = Instant::now();
    let (downloaded, _) = c.fetch(&tracker, &source).await;

    assert_blob(&downloaded, &bytes);
    assert_eq!(downloaded.source_bytes, manifest.size);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "not the 30 s fallback: {took:?}"
    );
    promote.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_seeding_one_blob_fetches_another_from_peers_after_it() {
    let (bytes_a, manifest_a) = blob(8 * MIB);
    let (bytes_b, manifest_b) = blob(8 * MIB + 1);
    let (tracker_a, tracker_b) = (FakeTracker::new(&manifest_a), FakeTracker::new(&manifest_b));
    // 128 chunks of 64 KiB at 10 ms each: more than a second of seeding.
    let source_a = FakeSource::new(&bytes_a, Duration::from_millis(10));
    let source_b = FakeSource::new(&bytes_b, Duration::ZERO);
    let seed_b = seeded(&tracker_b, "seed", &source_b).await;
    let node = peer(&tracker_a, "node", options()).await;
    tracker_a.seeds.lock().unwrap().push("node".into());
    tracker_b
        .parents
        .lock()
        .unwrap()
        .insert("node".into(), vec!["seed".into()]);

    let started = Instant::now();
    let seeding = async {
        let (downloaded, done) = node.fetch(&tracker_a, &source_a).await;
        assert_eq!(downloaded.source_bytes, manifest_a.size);
        done
    };
    let fetching = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        node.fetch(&tracker_b, &source_b).await
    };
    let (seeded_at, (downloaded_b, _)) = tokio::join!(seeding, fetching);
    assert_blob(&downloaded_b, &bytes_b);
    assert_eq!(downloaded_b.peer_bytes, manifest_b.size);
    // The second blob's pieces were asked for only once the node's own
    // stream from the registry ended (less the time to finish it).
    let first_piece = seed_b.first_served().unwrap();
    assert!(
        first_piece.duration_since(started) >= seeded_at.duration_since(started) * 3 / 4,
        "first piece of the other blob after {:?}, seeding done after {:?}",
        first_piece.duration_since(started),
        seeded_at.duration_since(started)
    );
}
