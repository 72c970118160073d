//! `POST /v1/pods/{project}/{name}/commit` on the agent's endpoint
//! ([`crate::endpoint`]): a running container's changes (its overlay
//! `upper/` directory) pushed as a new image on top of the one it runs.
//!
//! ```text
//! ask the server (as the node, with the user's token) -> grant to push to one repository
//! measure upper/ -> quota check          nothing paused yet; any refusal is an HTTP error
//! 200, then JSON lines of CommitProgress:
//!   pre-copy upper/ (running) -> freeze the cgroup -> frozen pass: walk, copy
//!   what changed since -> thaw (always) -> compress (one streaming pass)
//!   -> push (node credential, base layers mounted) -> done | failed{step}
//! end the grant
//! ```
//!
//! What is left out of the layer: the files the agent bind-mounts into
//! every container (`/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`),
//! runc's `/proc`, `/sys` and `/dev`, and the mount points of the pod's
//! volumes (their content is the volume's, not the image's).

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use wharf_api::commit::{
    CommitCompression, CommitProgress, CommitRequest, CommitResult, NodeCommitGrant,
    NodeCommitGrantRequest,
};
use wharf_image::{ImageRef, ImageStore, RegistryCredentials};

use crate::AgentError;
use crate::api::NodeApi;
use crate::endpoint::{EndpointState, bearer, refuse};
use crate::freezer::CgroupFreezer;

/// What the node mounts into every container, never the image's: the
/// files the agent bind-mounts (runc bundle) and runc's own filesystems,
/// whose mount points overlayfs creates in `upper/` when the image lacks
/// them (what is written there goes to the mounts, not to `upper/`).
pub const NODE_MOUNTS: [&str; 6] = [
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/proc",
    "/sys",
    "/dev",
];

/// What a node needs to push commits: its image cache (which holds the
/// base images and a scratch directory on the same filesystem), the
/// registry credential it pulls with (the node's own, which the server
/// lets push to one repository per granted commit) and the registry that
/// names without a host mean.
#[derive(Clone)]
pub struct CommitSource {
    /// The node's image cache.
    pub store: Arc<ImageStore>,
    /// The node's registry login.
    pub credentials: Option<RegistryCredentials>,
    /// The Wharf server's `host:port`.
    pub default_registry: Option<String>,
}

/// Ends a grant when the commit is over, however it ended.
struct GrantGuard {
    api: Arc<dyn NodeApi>,
    node: String,
    grant: Option<NodeCommitGrant>,
}

impl GrantGuard {
    async fn end(mut self) {
        if let Some(grant) = self.grant.take()
            && let Err(err) = self.api.end_commit_grant(&self.node, &grant).await
        {
            tracing::warn!(error = %err, repository = grant.repository, "ending a commit grant failed; it expires by itself");
        }
    }
}

impl Drop for GrantGuard {
    fn drop(&mut self) {
        if let Some(grant) = self.grant.take() {
            let api = self.api.clone();
            let node = self.node.clone();
            tokio::spawn(async move {
                let _ = api.end_commit_grant(&node, &grant).await;
            });
        }
    }
}

/// How a container is frozen: through its cgroup's freezer (see
/// [`crate::freezer`] for why), or by `runc pause` when its cgroup cannot
/// be found from its process.
enum Freezer {
    Cgroup(CgroupFreezer),
    Runc { runc: wharf_runc::Runc, id: String },
}

/// A frozen container, thawed by [`Frozen::resume`] or, should that never
/// be reached (a panic, a cancelled task), on drop.
struct Frozen {
    freezer: Freezer,
    /// When the freeze was asked for: the pause reported runs from here to
    /// the thaw's completion.
    since: Instant,
    resumed: bool,
}

impl Frozen {
    async fn pause(runc: &wharf_runc::Runc, id: &str) -> Result<Frozen, String> {
        let freezer = match cgroup_freezer(runc, id).await {
            Ok(cgroup) => Freezer::Cgroup(cgroup),
            Err(err) => {
                tracing::warn!(container = id, error = %err, "no cgroup freezer found; pausing with runc, everything copied while frozen");
                Freezer::Runc {
                    runc: runc.clone(),
                    id: id.to_string(),
                }
            }
        };
        // The guard exists before the freeze is asked for: a task cancelled
        // while the freezer works still thaws the container on drop.
        let mut frozen = Frozen {
            freezer,
            since: Instant::now(),
            resumed: false,
        };
        let result = match &frozen.freezer {
            Freezer::Cgroup(cgroup) => {
                on_cgroup(
                    cgroup,
                    CgroupFreezer::freeze,
                    &format!("freezing container {id}"),
                )
                .await
            }
            Freezer::Runc { runc, id } => runc.pause(id).await.map_err(|e| e.to_string()),
        };
        if let Err(err) = result {
            // A failed `runc pause` paused nothing; a cgroup is thawed by
            // the drop (again: thawing a thawed cgroup changes nothing).
            frozen.resumed = matches!(frozen.freezer, Freezer::Runc { .. });
            return Err(err);
        }
        Ok(frozen)
    }

    /// The container's processes, when its cgroup is known: read while
    /// frozen, that is every process that can write its files.
    async fn processes(&self) -> Option<Result<Vec<u32>, String>> {
        let Freezer::Cgroup(cgroup) = &self.freezer else {
            return None;
        };
        Some(
            on_cgroup(
                cgroup,
                CgroupFreezer::processes,
                "listing the container's processes",
            )
            .await,
        )
    }

    /// Thaws it; how long it was frozen.
    async fn resume(mut self) -> Result<Duration, String> {
        self.resumed = true;
        let result = match &self.freezer {
            Freezer::Cgroup(cgroup) => on_cgroup(cgroup, CgroupFreezer::thaw, "thawing").await,
            Freezer::Runc { runc, id } => runc.resume(id).await.map_err(|e| e.to_string()),
        };
        let paused = self.since.elapsed();
        result.map(|()| paused)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if self.resumed {
            return;
        }
        match &self.freezer {
            // One write to the cgroup file, done here and now: nothing
            // later (a runtime shutting down) can keep it from happening.
            Freezer::Cgroup(cgroup) => {
                if let Err(err) = cgroup.thaw() {
                    tracing::error!(error = %err, "thawing a frozen container failed");
                }
            }
            Freezer::Runc { runc, id } => {
                let (runc, id) = (runc.clone(), id.clone());
                tokio::spawn(async move {
                    if let Err(err) = runc.resume(&id).await {
                        tracing::error!(container = id, error = %err, "resuming a paused container failed");
                    }
                });
            }
        }
    }
}

/// `op` on `cgroup`, on a blocking thread (cgroup files are files); its
/// error prefixed with `what`.
async fn on_cgroup<T: Send + 'static>(
    cgroup: &CgroupFreezer,
    op: fn(&CgroupFreezer) -> std::io::Result<T>,
    what: &str,
) -> Result<T, String> {
    let cgroup = cgroup.clone();
    tokio::task::spawn_blocking(move || op(&cgroup))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{what}: {e}"))
}

/// The freezer of container `id`'s cgroup, found from its process.
async fn cgroup_freezer(runc: &wharf_runc::Runc, id: &str) -> Result<CgroupFreezer, String> {
    let state = runc
        .state(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("runc knows no container {id}"))?;
    if state.pid == 0 {
        return Err(format!("container {id} has no process"));
    }
    tokio::task::spawn_blocking(move || CgroupFreezer::of_process(state.pid))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// While frozen: the layer's snapshot. With the container's processes
/// known, only what changed since the pre-copy is copied (files mapped
/// shared-writable by any of them always); otherwise everything is.
async fn frozen_snapshot(
    store: &ImageStore,
    frozen: &Frozen,
    precopy: wharf_image::PreCopy,
    upper: &std::path::Path,
    exclude: &[PathBuf],
) -> Result<wharf_image::Snapshot, String> {
    let Some(processes) = frozen.processes().await else {
        drop(precopy);
        return store
            .snapshot_upper(upper, exclude)
            .await
            .map_err(|e| e.to_string());
    };
    let processes = processes?;
    let mapped =
        tokio::task::spawn_blocking(move || wharf_image::shared_writable_inodes(&processes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    store
        .snapshot_precopied(precopy, mapped)
        .await
        .map_err(|e| e.to_string())
}

/// A step that failed: where and why.
struct Failure {
    step: &'static str,
    message: String,
}

fn failed<E: std::fmt::Display>(step: &'static str) -> impl Fn(E) -> Failure {
    move |err| Failure {
        step,
        message: err.to_string(),
    }
}

/// Everything checked before anything is paused.
struct Prepared {
    source: CommitSource,
    runc: wharf_runc::Runc,
    container_id: String,
    upper: PathBuf,
    exclude: Vec<PathBuf>,
    base: wharf_image::PulledImage,
    base_ref: ImageRef,
    target: ImageRef,
    changes: wharf_image::ConfigChanges,
    measured: wharf_image::ChangeSize,
    started: Instant,
}

pub(crate) async fn commit(
    State(state): State<Arc<EndpointState>>,
    UrlPath((project, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    tracing::info!(project, pod = name, "commit asked");
    for bad in [&project, &name] {
        if wharf_api::check_name("name", bad).is_err() {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("{bad:?} is not a valid name"),
            );
        }
    }
    let Some(token) = bearer(&headers) else {
        return refuse(StatusCode::UNAUTHORIZED, "a bearer token is required");
    };
    let request: CommitRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => return refuse(StatusCode::BAD_REQUEST, format!("commit request: {err}")),
    };
    let asked = NodeCommitGrantRequest {
        token: token.to_string(),
        project: project.clone(),
        pod: name.clone(),
        request: request.clone(),
    };
    // The server checks the token's rights on the pod and the target, and
    // lets this node push there for a while.
    let grant = match state.api.commit_grant(&state.node, &asked).await {
        Ok(grant) => grant,
        Err(AgentError::Refused { status, message }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            return refuse(status, message);
        }
        Err(err) => {
            return refuse(StatusCode::BAD_GATEWAY, format!("asking the server: {err}"));
        }
    };
    // A check gets no push right (the server writes no grant for it).
    let guard = GrantGuard {
        api: state.api.clone(),
        node: state.node.clone(),
        grant: (!request.check_only).then(|| grant.clone()),
    };
    let prepared = match prepare(&state, &project, &name, &request, &grant, started).await {
        Ok(prepared) => prepared,
        Err((status, message)) => {
            guard.end().await;
            return refuse(status, message);
        }
    };
    if request.check_only {
        let measured = CommitProgress::Measured {
            entries: prepared.measured.entries,
            bytes: prepared.measured.bytes,
            quota_remaining_bytes: grant.quota_remaining_bytes,
        };
        let mut line = serde_json::to_vec(&measured).expect("progress serializes");
        line.push(b'\n');
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .body(Body::from(line))
            .expect("valid response");
    }
    let (lines, receiver) = tokio::sync::mpsc::unbounded_channel::<CommitProgress>();
    // The commit runs on its own task: a client that goes away does not
    // stop it half-way (the container is resumed, the grant ended).
    tokio::spawn(async move {
        let last = match run(prepared, &request, &lines).await {
            Ok(result) => CommitProgress::Done(result),
            Err(failure) => CommitProgress::Failed {
                step: failure.step.to_string(),
                message: failure.message,
            },
        };
        let _ = lines.send(last);
        guard.end().await;
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let line = receiver.recv().await?;
        let mut bytes = serde_json::to_vec(&line).expect("progress serializes");
        bytes.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(bytes)), receiver))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .expect("valid response")
}

/// The checks of the node's side, before anything is paused: the
/// container runs here on an overlay root, its image is in the cache,
/// the changes parse, and the snapshot fits the target's quota.
async fn prepare(
    state: &EndpointState,
    project: &str,
    name: &str,
    request: &CommitRequest,
    grant: &NodeCommitGrant,
    started: Instant,
) -> Result<Prepared, (StatusCode, String)> {
    let container = &grant.container;
    let (Some(source), Some(runc)) = (state.runtime.commits(), state.runtime.runc()) else {
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "node {} runs no containers on an overlay root: nothing to commit",
                state.node
            ),
        ));
    };
    let Some((container_id, dir)) = state
        .runtime
        .running_container(project, name, container)
        .await
    else {
        return Err((
            StatusCode::CONFLICT,
            format!("container {container} of pod {project}/{name} is not running on this node"),
        ));
    };
    let upper = dir.join("upper");
    let has_upper = tokio::fs::symlink_metadata(&upper)
        .await
        .is_ok_and(|m| m.is_dir());
    if !has_upper {
        return Err((
            StatusCode::CONFLICT,
            format!(
                "container {container} of pod {project}/{name} has no overlay root ({} is missing): nothing to commit",
                upper.display()
            ),
        ));
    }
    let changes = wharf_image::ConfigChanges::parse(&request.changes)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("changes: {e}")))?;
    let registry = source.default_registry.as_deref();
    let target = ImageRef::parse_with_default_registry(
        &format!("{}:{}", grant.repository, grant.tag),
        registry,
    )
    .map_err(|e| (StatusCode::BAD_REQUEST, format!("image: {e}")))?;
    let base_ref = ImageRef::parse_with_default_registry(&grant.base_image, registry)
        .map_err(|e| (StatusCode::CONFLICT, format!("the container's image: {e}")))?;
    let Some(base) = source.store.cached(&base_ref).await else {
        return Err((
            StatusCode::CONFLICT,
            format!("image {base_ref} of container {container} is no longer in the node's cache"),
        ));
    };
    // The layers the container runs on must be the cached image's: a tag
    // pulled again since (imagePullPolicy Always) names other layers, and
    // the changes belong on the ones below them.
    let rootfs = dir.join("rootfs");
    let mounted = tokio::task::spawn_blocking(move || crate::containers::mounted_layers(&rootfs))
        .await
        .unwrap_or_default();
    match mounted.first() {
        None => {
            return Err((
                StatusCode::CONFLICT,
                format!(
                    "container {container} of pod {project}/{name} has no overlay root mounted: nothing to commit"
                ),
            ));
        }
        Some(layers) if *layers != base.layers => {
            return Err((
                StatusCode::CONFLICT,
                format!(
                    "image {base_ref} in the node's cache is no longer the one container {container} runs (pulled again since it started): restart the pod, or commit before pulling"
                ),
            ));
        }
        Some(_) => {}
    }
    let exclude: Vec<PathBuf> = NODE_MOUNTS
        .iter()
        .map(PathBuf::from)
        .chain(grant.exclude.iter().map(PathBuf::from))
        .collect();
    let measured = {
        let (upper, exclude) = (upper.clone(), exclude.clone());
        tokio::task::spawn_blocking(move || wharf_image::measure_upper(&upper, &exclude))
            .await
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("measuring the changes: {e}"),
                )
            })?
    };
    if let Some(left) = grant.quota_remaining_bytes
        && measured.bytes > left
    {
        let project = grant.repository.split('/').next().unwrap_or_default();
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the container's changes ({} bytes) exceed what project {project}'s quota leaves ({left} bytes)",
                measured.bytes
            ),
        ));
    }
    Ok(Prepared {
        source: source.clone(),
        runc: runc.clone(),
        container_id,
        upper,
        exclude,
        base,
        base_ref,
        target,
        changes,
        measured,
        started,
    })
}

/// Pause, snapshot, resume, compress, push; each step's progress goes to
/// `lines`.
async fn run(
    prepared: Prepared,
    request: &CommitRequest,
    lines: &tokio::sync::mpsc::UnboundedSender<CommitProgress>,
) -> Result<CommitResult, Failure> {
    let Prepared {
        source,
        runc,
        container_id,
        upper,
        exclude,
        base,
        base_ref,
        target,
        changes,
        measured,
        started,
    } = prepared;
    let _ = lines.send(CommitProgress::Measured {
        entries: measured.entries,
        bytes: measured.bytes,
        quota_remaining_bytes: None,
    });
    let (snapshot, paused_ms) = if request.pause {
        // Copied while the container runs; the freeze then covers only a
        // walk and what changed since.
        let precopy = source
            .store
            .precopy_upper(&upper, &exclude)
            .await
            .map_err(failed("snapshot"))?;
        let frozen = Frozen::pause(&runc, &container_id)
            .await
            .map_err(failed("pause"))?;
        let _ = lines.send(CommitProgress::Paused);
        let snapshot = frozen_snapshot(&source.store, &frozen, precopy, &upper, &exclude).await;
        // Resumed whatever the snapshot did.
        let paused = frozen.resume().await.map_err(failed("resume"))?;
        let paused_ms = paused.as_millis() as u64;
        let _ = lines.send(CommitProgress::Resumed { paused_ms });
        (snapshot, paused_ms)
    } else {
        let snapshot = source
            .store
            .snapshot_upper(&upper, &exclude)
            .await
            .map_err(|e| e.to_string());
        (snapshot, 0)
    };
    let snapshot = snapshot.map_err(failed("snapshot"))?;

    let compression = match request.compression {
        CommitCompression::Gzip => wharf_image::Compression::Gzip,
        CommitCompression::Zstd => wharf_image::Compression::Zstd,
    };
    let compressing = |done: u64, total: u64| {
        let _ = lines.send(CommitProgress::Compressing {
            done_bytes: done,
            total_bytes: total,
        });
    };
    let layer = source
        .store
        .compress_snapshot(snapshot, compression, &compressing)
        .await
        .map_err(failed("compress"))?;
    let pushing = |done: u64, total: u64| {
        let _ = lines.send(CommitProgress::Pushing {
            done_bytes: done,
            total_bytes: total,
        });
    };
    let created = wharf_api::rfc3339(crate::runtime::now_millis());
    let push = wharf_image::CommitPush {
        base: &base_ref,
        base_digest: &base.manifest_digest,
        layer: &layer,
        changes: &changes,
        author: request.author.as_deref(),
        message: request.message.as_deref(),
        created: &created,
        target: &target,
    };
    let pushed = source
        .store
        .push_commit(push, source.credentials.as_ref(), &pushing)
        .await
        .map_err(failed("push"))?;
    Ok(CommitResult {
        image: target.to_string(),
        digest: pushed.manifest_digest.to_string(),
        layer_digest: layer.digest.to_string(),
        layer_bytes: layer.size,
        reused_layers: pushed.reused_layers,
        paused_ms,
        total_ms: started.elapsed().as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A `runc` that only writes down what it was asked
    /// (`pause ID`, `resume ID`) in `calls`.
    fn recording_runc(dir: &std::path::Path) -> (wharf_runc::Runc, PathBuf) {
        let calls = dir.join("calls");
        let script = dir.join("runc");
        std::fs::write(
            &script,
            format!("#!/bin/sh\nshift 2\necho \"$@\" >> {}\n", calls.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        (wharf_runc::Runc::new(&script, dir.join("root")), calls)
    }

    /// A snapshot that fails while the container is frozen still resumes
    /// it, reports the pause, and fails at `snapshot`.
    #[tokio::test]
    async fn a_failed_snapshot_still_resumes_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let (runc, calls) = recording_runc(dir.path());
        let store = ImageStore::open(dir.path().join("images"), Default::default())
            .await
            .unwrap();
        let base_ref = ImageRef::parse("127.0.0.1:7700/shop/web:1").unwrap();
        let prepared = Prepared {
            source: CommitSource {
                store: Arc::new(store),
                credentials: None,
                default_registry: None,
            },
            runc,
            container_id: "pod1-web".into(),
            // Gone between the checks and the snapshot.
            upper: dir.path().join("no-such-upper"),
            exclude: Vec::new(),
            base: wharf_image::PulledImage {
                reference: base_ref.clone(),
                manifest_digest: format!("sha256:{}", "a".repeat(64)).parse().unwrap(),
                config_digest: format!("sha256:{}", "b".repeat(64)).parse().unwrap(),
                config: Default::default(),
                layers: Vec::new(),
                size_bytes: 0,
                bytes: Default::default(),
            },
            base_ref,
            target: ImageRef::parse("127.0.0.1:7700/shop/snap:1").unwrap(),
            changes: Default::default(),
            measured: Default::default(),
            started: Instant::now(),
        };
        let request: CommitRequest = serde_json::from_str(r#"{"image":"shop/snap:1"}"#).unwrap();
        let (lines, mut receiver) = tokio::sync::mpsc::unbounded_channel();
        let failure = run(prepared, &request, &lines)
            .await
            .expect_err("a failure");
        assert_eq!(failure.step, "snapshot", "{}", failure.message);
        assert_eq!(
            std::fs::read_to_string(&calls).unwrap(),
            "state pod1-web\npause pod1-web\nresume pod1-web\n",
            "a container whose cgroup cannot be found is paused with runc"
        );
        drop(lines);
        let mut seen = Vec::new();
        while let Some(line) = receiver.recv().await {
            seen.push(line);
        }
        assert!(matches!(seen[1], CommitProgress::Paused), "{seen:?}");
        assert!(
            matches!(seen[2], CommitProgress::Resumed { .. }),
            "{seen:?}"
        );
    }

    /// A pause (by runc) whose resume is never reached (a panic, a dropped
    /// task) is thawed all the same.
    #[tokio::test]
    async fn a_frozen_container_is_resumed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (runc, calls) = recording_runc(dir.path());
        let frozen = Frozen::pause(&runc, "pod1-web").await.unwrap();
        drop(frozen);
        for _ in 0..100 {
            if std::fs::read_to_string(&calls)
                .unwrap_or_default()
                .contains("resume")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            std::fs::read_to_string(&calls).unwrap(),
            "state pod1-web\npause pod1-web\nresume pod1-web\n"
        );
    }
}
