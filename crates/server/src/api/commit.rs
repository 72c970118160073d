//! `wharf commit POD`: a running container's changes pushed as an image,
//! through the agent of the pod's node.
//!
//! ```text
//! POST /api/v1/projects/{project}/pods/{name}/commit      CommitRequest
//!      -> checks (nothing paused yet), then JSON lines of CommitProgress from the node
//! POST   /api/v1/nodes/{node}/commitgrants                the agent asks, as the node,
//!      with the user's token: the same checks, then a grant for the node to push
//! DELETE /api/v1/nodes/{node}/commitgrants/{id}?repository=P/R   the commit ended
//! ```
//!
//! Every check is made before the agent is contacted, and made again by
//! the server when the agent asks for its grant (the agent takes no one's
//! word but the server's). The node pushes with its own credential, which
//! pulls everywhere and pushes nowhere, except to the one repository of a
//! live grant ([`wharf_auth::Identity::grant_commit_push`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use serde::Deserialize;
use wharf_api::commit::{
    CommitProgress, CommitRequest, CommitResult, NodeCommitGrant, NodeCommitGrantRequest,
};
use wharf_api::{EventType, Node, Pod, PodEventReport};
use wharf_audit::{AuditEvent, Outcome};
use wharf_auth::{Action, Actions, Principal, Scope};
use wharf_oci::{RepositoryName, Tag};

use super::node_proxy::{self, http};
use super::{ApiCaller, ApiErrorReply, ApiResult, Body as JsonBody};
use crate::AppState;

/// How long a node may push for one commit: compressing and pushing a
/// large layer takes minutes; a grant left by an agent that died means
/// nothing after this.
pub(crate) const COMMIT_GRANT_TTL: Duration = Duration::from_secs(15 * 60);

/// The longest `author` and `message` (they go into the image config).
const MAX_TEXT: usize = 4096;

/// The `--change` instructions `docker commit` accepts; the node parses
/// them fully, the server refuses the others before anything starts.
const CHANGE_INSTRUCTIONS: [&str; 7] = [
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "WORKDIR",
    "EXPOSE",
    "LABEL",
    "USER",
];

/// Where a commit failed (`check`, `pause`, `snapshot`, `resume`,
/// `compress`, `push`, or `node` when the node's answer broke off) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CommitFailure {
    pub step: String,
    pub message: String,
    /// The status a request refused before the node started answers with.
    pub status: StatusCode,
}

impl CommitFailure {
    fn refused(reply: ApiErrorReply) -> CommitFailure {
        CommitFailure {
            step: "check".into(),
            message: reply.message,
            status: reply.status,
        }
    }
}

/// A commit's target on this registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CommitTarget {
    pub repository: RepositoryName,
    pub tag: String,
}

impl std::fmt::Display for CommitTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

/// Parses `project/repository[:tag]` (tag `latest` when left out); the
/// error names the field.
pub(crate) fn parse_target(image: &str) -> ApiResult<CommitTarget> {
    let bad = |why: String| ApiErrorReply::invalid(format!("image: {why}"));
    if image.contains('@') {
        return Err(bad(format!(
            "{image:?} names a digest; a commit pushes a tag (project/repository[:tag])"
        )));
    }
    let (name, tag) = match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    };
    let repository: RepositoryName = name.parse().map_err(|e| {
        bad(format!(
            "{name:?} is not a repository name of this registry ({e})"
        ))
    })?;
    if !name.contains('/') {
        return Err(bad(format!(
            "{name:?} names no project: use project/repository[:tag]"
        )));
    }
    tag.parse::<Tag>()
        .map_err(|e| bad(format!("{tag:?} is not a valid tag ({e})")))?;
    Ok(CommitTarget {
        repository,
        tag: tag.to_string(),
    })
}

/// The request's own fields, checked before anything is looked up.
fn check_request(request: &CommitRequest) -> ApiResult<()> {
    if let Some(container) = &request.container {
        wharf_api::check_name("container", container)
            .map_err(|e| ApiErrorReply::invalid(e.to_string()))?;
    }
    for (field, text) in [("author", &request.author), ("message", &request.message)] {
        if text.as_ref().is_some_and(|t| t.len() > MAX_TEXT) {
            return Err(ApiErrorReply::invalid(format!(
                "{field}: longer than {MAX_TEXT} bytes"
            )));
        }
    }
    for (i, change) in request.changes.iter().enumerate() {
        let word = change.split_whitespace().next().unwrap_or_default();
        if !CHANGE_INSTRUCTIONS
            .iter()
            .any(|known| known.eq_ignore_ascii_case(word))
        {
            return Err(ApiErrorReply::invalid(format!(
                "changes[{i}]: {word:?} is not an instruction a commit applies (use one of {})",
                CHANGE_INSTRUCTIONS.join(", ")
            )));
        }
    }
    Ok(())
}

/// What the checks found: everything the node needs besides the request.
#[derive(Clone, Debug)]
pub(crate) struct CheckedCommit {
    pub project: String,
    pub pod: String,
    pub node: String,
    pub container: String,
    pub base_image: String,
    pub exclude: Vec<String>,
    pub target: CommitTarget,
    pub quota_remaining_bytes: Option<u64>,
}

/// Every check of a commit of container `request.container` of pod
/// `project/pod` by `principal`, in the order a user can act on: the
/// request, the target's name, the right to push there (the token
/// server's own answer), the right to act inside the pod (`push` on its
/// project, as for exec), the pod bound to a ready node that serves
/// pods, the container. Nothing is paused or contacted.
pub(crate) async fn check_commit(
    state: &AppState,
    principal: &Principal,
    project: &str,
    pod: &str,
    request: &CommitRequest,
) -> ApiResult<CheckedCommit> {
    check_request(request)?;
    let target = parse_target(&request.image)?;
    let push = Scope::Repository {
        name: target.repository.clone(),
        actions: Actions::from(Action::Push),
    };
    let granted = state.identity.grant(principal, &[push]).await?;
    if !granted
        .iter()
        .any(|g| g.actions.iter().any(|a| a == "push"))
    {
        return Err(ApiErrorReply::new(
            StatusCode::FORBIDDEN,
            "DENIED",
            format!(
                "{} may not push to repository {}",
                principal.name(),
                target.repository
            ),
        ));
    }
    state
        .identity
        .require(principal, project, Action::Push)
        .await?;
    let objects = state.control.objects();
    let found: Pod = objects.require(Some(project), pod).await?;
    let unavailable =
        |message: String| ApiErrorReply::new(StatusCode::CONFLICT, "UNAVAILABLE", message);
    let node_name = found
        .spec
        .node_name
        .clone()
        .ok_or_else(|| unavailable(format!("pod {project}/{pod} is not on a node yet")))?;
    let node: Node = objects.require(None, &node_name).await?;
    if !node.status.ready {
        return Err(unavailable(format!(
            "node {node_name} of pod {project}/{pod} is not ready"
        )));
    }
    if node.status.endpoint.is_none() {
        return Err(unavailable(format!(
            "node {node_name} does not serve pods (its agent runs no containers): nothing to commit"
        )));
    }
    let containers = &found.spec.containers;
    let container = match (&request.container, containers.as_slice()) {
        (Some(asked), _) => containers
            .iter()
            .find(|c| &c.name == asked)
            .ok_or_else(|| {
                ApiErrorReply::new(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    format!("container {asked} of pod {project}/{pod} does not exist"),
                )
            })?,
        (None, [only]) => only,
        (None, _) => {
            let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
            return Err(ApiErrorReply::invalid(format!(
                "container: pod {project}/{pod} has several containers; choose one of {}",
                names.join(", ")
            )));
        }
    };
    // Only those who may push there get this far, so the project exists
    // (but may be deleted meanwhile: then this says so).
    let target_project = target.repository.project();
    let found_project = state.identity.project(target_project).await?;
    if let Some(cache) = &found_project.proxy_cache {
        return Err(ApiErrorReply::invalid(format!(
            "image: project {target_project} is a proxy cache of endpoint {}: nothing is pushed to it",
            cache.endpoint
        )));
    }
    let quota_remaining_bytes = match found_project.quota_bytes {
        Some(quota) => {
            let used = state.registry.usage(target_project).await?;
            Some(quota.saturating_sub(used))
        }
        None => None,
    };
    Ok(CheckedCommit {
        project: project.to_string(),
        pod: pod.to_string(),
        node: node_name,
        container: container.name.clone(),
        base_image: container.image.clone(),
        exclude: container
            .volume_mounts
            .iter()
            .map(|m| m.mount_path.clone())
            .collect(),
        target,
        quota_remaining_bytes,
    })
}

/// Commits a container of pod `project/pod` for `caller`: every check
/// first ([`check_commit`]), then the node's progress to `progress` as it
/// comes. The node gets a fresh API token of the caller's (the agent asks
/// the server itself what the token may, as for logs and exec), so a
/// caller whose own token is about to expire — or a long component flow
/// acting for its user — commits all the same. Audited as `pod.commit`, and
/// recorded as a pod event, `Committed` (image, pause time) or
/// `CommitFailed` (the step). The one entry point for a commit, for the
/// route and the component flow alike.
pub(crate) async fn commit_pod(
    state: &AppState,
    caller: &ApiCaller,
    project: &str,
    pod: &str,
    request: &CommitRequest,
    progress: &(dyn Fn(&CommitProgress) + Send + Sync),
) -> Result<CommitResult, CommitFailure> {
    let checked = check_commit(state, &caller.principal, project, pod, request)
        .await
        .map_err(|reply| {
            audit(
                state,
                caller,
                project,
                pod,
                request,
                &Err((reply.status, reply.message.clone())),
            );
            CommitFailure::refused(reply)
        })?;
    let token = state
        .identity
        .issue_api_token(&caller.principal)
        .await
        .map_err(|e| CommitFailure::refused(e.into()))?;
    run_checked(state, caller, &token.token, &checked, request, progress).await
}

/// The node's part of a commit that passed [`check_commit`].
async fn run_checked(
    state: &AppState,
    caller: &ApiCaller,
    token: &str,
    checked: &CheckedCommit,
    request: &CommitRequest,
    progress: &(dyn Fn(&CommitProgress) + Send + Sync),
) -> Result<CommitResult, CommitFailure> {
    let started = Instant::now();
    let outcome = match relay(state, token, checked, request, progress).await {
        Ok(CommitProgress::Done(result)) => Ok(result),
        Ok(other) => Err(CommitFailure {
            step: "node".into(),
            message: format!("the node ended the commit with {other:?}"),
            status: StatusCode::BAD_GATEWAY,
        }),
        Err(failure) => Err(failure),
    };
    let (project, pod) = (&checked.project, &checked.pod);
    let event = match &outcome {
        Ok(result) => PodEventReport {
            event_type: EventType::Normal,
            reason: "Committed".into(),
            message: format!(
                "container {} committed to {} ({}), paused {} ms",
                checked.container, result.image, result.digest, result.paused_ms
            ),
        },
        Err(failure) => PodEventReport {
            event_type: EventType::Warning,
            reason: "CommitFailed".into(),
            message: format!(
                "committing container {} to {} failed at {}: {}",
                checked.container, checked.target, failure.step, failure.message
            ),
        },
    };
    if let Err(err) = state.control.record_pod_event(project, pod, &event).await {
        tracing::warn!(error = %err, project, pod, "recording the commit's event failed");
    }
    let audited = outcome
        .as_ref()
        .map(|r| {
            format!(
                "{} ({}), {} ms",
                r.image,
                r.digest,
                started.elapsed().as_millis()
            )
        })
        .map_err(|f| (f.status, format!("failed at {}: {}", f.step, f.message)));
    audit(state, caller, project, pod, request, &audited);
    outcome
}

fn audit(
    state: &AppState,
    caller: &ApiCaller,
    project: &str,
    pod: &str,
    request: &CommitRequest,
    outcome: &Result<String, (StatusCode, String)>,
) {
    let container = request.container.as_deref().unwrap_or("(only)");
    let asked = format!("container {container} to image {}", request.image);
    let (result, detail) = match outcome {
        Ok(done) => (Outcome::Success, format!("{asked}: {done}")),
        Err((status, why)) => {
            let denied = matches!(*status, StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED);
            let outcome = if denied {
                Outcome::Denied
            } else {
                Outcome::Failed
            };
            (outcome, format!("{asked}: {why}"))
        }
    };
    let event = AuditEvent::new(
        caller.principal.name(),
        "pod.commit",
        format!("{project}/pod/{pod}"),
        result,
    )
    .with_source(caller.source)
    .with_detail(detail);
    state.audit.record(event);
}

/// Posts the request to the node's agent and passes its JSON lines on;
/// the last one: `done`, or `measured` for a check.
async fn relay(
    state: &AppState,
    token: &str,
    checked: &CheckedCommit,
    request: &CommitRequest,
    progress: &(dyn Fn(&CommitProgress) + Send + Sync),
) -> Result<CommitProgress, CommitFailure> {
    let node_failure = |message: String| CommitFailure {
        step: "node".into(),
        message,
        status: StatusCode::BAD_GATEWAY,
    };
    let (node, url) = node_proxy::pod_url(state, &checked.project, &checked.pod, "commit")
        .await
        .map_err(CommitFailure::refused)?;
    let response = http()
        .post(&url)
        .bearer_auth(token)
        .json(request)
        .send()
        .await
        .map_err(|e| CommitFailure::refused(node_proxy::unreachable(&node, e)))?;
    if !response.status().is_success() {
        let reply = node_proxy::refused(&node, response).await;
        return Err(CommitFailure::refused(reply));
    }
    let mut lines = std::pin::pin!(ndjson(response));
    while let Some(line) = lines.next().await {
        let line = line.map_err(|e| node_failure(format!("node {node}: {e}")))?;
        let parsed: CommitProgress = serde_json::from_str(&line)
            .map_err(|e| node_failure(format!("node {node} answered {line:?}: {e}")))?;
        progress(&parsed);
        match parsed {
            CommitProgress::Done(_) => return Ok(parsed),
            CommitProgress::Measured { .. } if request.check_only => return Ok(parsed),
            CommitProgress::Failed { step, message } => {
                return Err(CommitFailure {
                    step,
                    message,
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                });
            }
            _ => {}
        }
    }
    Err(node_failure(format!(
        "node {node} stopped answering before the commit ended"
    )))
}

/// The lines of a streamed body.
fn ndjson(response: reqwest::Response) -> impl futures_util::Stream<Item = Result<String, String>> {
    let bytes = response.bytes_stream();
    futures_util::stream::unfold(
        (bytes, Vec::<u8>::new(), false),
        |(mut bytes, mut buffer, mut ended)| async move {
            loop {
                if let Some(at) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=at).collect();
                    let text = String::from_utf8_lossy(&line[..at]).into_owned();
                    if text.trim().is_empty() {
                        continue;
                    }
                    return Some((Ok(text), (bytes, buffer, ended)));
                }
                if ended {
                    if buffer.is_empty() {
                        return None;
                    }
                    let text = String::from_utf8_lossy(&buffer).into_owned();
                    buffer.clear();
                    return Some((Ok(text), (bytes, buffer, ended)));
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                    Some(Err(err)) => {
                        ended = true;
                        buffer.clear();
                        return Some((Err(err.to_string()), (bytes, buffer, ended)));
                    }
                    None => ended = true,
                }
            }
        },
    )
}

/// A check of pod `project/pod` for `caller` that pauses, writes and
/// pushes nothing: every check of [`commit_pod`], the node's included,
/// and the changes measured. The component flow checks every pod this way
/// before it commits the first. Answers the `measured` line.
pub(crate) async fn check_pod(
    state: &AppState,
    caller: &ApiCaller,
    project: &str,
    pod: &str,
    request: &CommitRequest,
) -> Result<CommitProgress, CommitFailure> {
    let request = CommitRequest {
        check_only: true,
        ..request.clone()
    };
    let checked = check_commit(state, &caller.principal, project, pod, &request)
        .await
        .map_err(CommitFailure::refused)?;
    let token = state
        .identity
        .issue_api_token(&caller.principal)
        .await
        .map_err(|e| CommitFailure::refused(e.into()))?;
    relay(state, &token.token, &checked, &request, &|_| {}).await
}

/// `POST /api/v1/projects/{project}/pods/{name}/commit`: refusals are
/// HTTP errors (nothing was paused); once the node has started, `200`
/// with the JSON lines of [`CommitProgress`], the last `done` or `failed`.
pub(crate) async fn commit(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, pod)): Path<(String, String)>,
    JsonBody(request): JsonBody<CommitRequest>,
) -> ApiResult<Response> {
    if request.check_only {
        let measured = check_pod(&state, &caller, &project, &pod, &request)
            .await
            .map_err(|f| ApiErrorReply::new(f.status, "COMMIT_REFUSED", f.message))?;
        let mut line = serde_json::to_vec(&measured).expect("progress serializes");
        line.push(b'\n');
        return Ok(Response::builder()
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .body(Body::from(line))
            .expect("valid response"));
    }
    let (lines, receiver) = tokio::sync::mpsc::unbounded_channel::<CommitProgress>();
    let first = tokio::sync::oneshot::channel::<Option<CommitFailure>>();
    tokio::spawn(async move {
        let started = std::sync::Mutex::new(Some(first.0));
        let answered = |failure: Option<CommitFailure>| {
            if let Some(sender) = started.lock().expect("lock").take() {
                let _ = sender.send(failure);
            }
        };
        let forward = |line: &CommitProgress| {
            answered(None);
            let _ = lines.send(line.clone());
        };
        let outcome = commit_pod(&state, &caller, &project, &pod, &request, &forward).await;
        if let Err(failure) = outcome {
            // The node's own failures came as its last line; a broken-off
            // answer gets one here.
            if failure.step == "node" {
                let _ = lines.send(CommitProgress::Failed {
                    step: failure.step.clone(),
                    message: failure.message.clone(),
                });
            }
            answered(Some(failure));
        }
    });
    // A refusal before the node's first line (every check's, and the
    // node's own before it pauses anything) is an HTTP error.
    if let Ok(Some(failure)) = first.1.await
        && failure.step == "check"
    {
        let code = match failure.status {
            StatusCode::BAD_REQUEST => "INVALID",
            StatusCode::FORBIDDEN => "DENIED",
            StatusCode::NOT_FOUND => "NOT_FOUND",
            StatusCode::CONFLICT => "UNAVAILABLE",
            _ => "COMMIT_REFUSED",
        };
        return Err(ApiErrorReply::new(failure.status, code, failure.message));
    }
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let line = receiver.recv().await?;
        let mut bytes = serde_json::to_vec(&line).expect("progress serializes");
        bytes.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(bytes), receiver))
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .expect("valid response"))
}

/// `POST /api/v1/nodes/{node}/commitgrants`, called by node `node`'s
/// agent with the token of the user who asked for the commit: the same
/// checks as the user's request, the pod on this very node, then a grant
/// for the node's credential to push to the target repository.
pub(crate) async fn grant(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(node): Path<String>,
    JsonBody(asked): JsonBody<NodeCommitGrantRequest>,
) -> ApiResult<axum::Json<NodeCommitGrant>> {
    let user = state.identity.verify_api_token(&asked.token).await?;
    let checked = check_commit(&state, &user, &asked.project, &asked.pod, &asked.request).await?;
    if checked.node != node {
        return Err(ApiErrorReply::new(
            StatusCode::FORBIDDEN,
            "DENIED",
            format!(
                "pod {}/{} is on node {}, not on node {node}",
                asked.project, asked.pod, checked.node
            ),
        ));
    }
    if asked.request.check_only {
        // Measuring needs no push right: nothing is written.
        return Ok(axum::Json(NodeCommitGrant {
            id: String::new(),
            repository: checked.target.repository.to_string(),
            tag: checked.target.tag.clone(),
            expires_at: 0,
            container: checked.container.clone(),
            base_image: checked.base_image.clone(),
            exclude: checked.exclude.clone(),
            quota_remaining_bytes: checked.quota_remaining_bytes,
        }));
    }
    let work = async {
        let grant = state
            .identity
            .grant_commit_push(
                &node,
                &checked.target.repository,
                user.name(),
                COMMIT_GRANT_TTL,
            )
            .await?;
        Ok::<_, ApiErrorReply>(NodeCommitGrant {
            id: grant.id,
            repository: grant.repository,
            tag: checked.target.tag.clone(),
            expires_at: grant.expires_at,
            container: checked.container.clone(),
            base_image: checked.base_image.clone(),
            exclude: checked.exclude.clone(),
            quota_remaining_bytes: checked.quota_remaining_bytes,
        })
    };
    let detail = format!("push to {} for {}", checked.target.repository, user.name());
    let resource = format!("node/{node}");
    let grant = state
        .audited_request(&caller, "node.commitgrant", resource, detail, work)
        .await?;
    Ok(axum::Json(grant))
}

#[derive(Deserialize)]
pub(crate) struct EndGrant {
    repository: String,
}

/// `DELETE /api/v1/nodes/{node}/commitgrants/{id}?repository=P/R`: the
/// node's commit ended; its credential pushes there no more.
pub(crate) async fn end_grant(
    State(state): State<Arc<AppState>>,
    Path((node, id)): Path<(String, String)>,
    Query(query): Query<EndGrant>,
) -> ApiResult<StatusCode> {
    let repository: RepositoryName = query
        .repository
        .parse()
        .map_err(|e| ApiErrorReply::invalid(format!("repository: {e}")))?;
    state
        .identity
        .revoke_commit_push(&node, &repository, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_as_project_repository_and_tag() {
        let target = parse_target("shop/web:snap-1").unwrap();
        assert_eq!(target.repository.as_str(), "shop/web");
        assert_eq!(target.tag, "snap-1");
        assert_eq!(
            parse_target("shop/a/b").unwrap().to_string(),
            "shop/a/b:latest"
        );
        for bad in [
            "web:1",
            "Shop/web:1",
            "shop/web:bad tag",
            "shop/web@sha256:0000",
            "127.0.0.1:7700/shop/web:1",
            "shop//web",
            "",
        ] {
            let err = parse_target(bad).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(err.message.starts_with("image: "), "{bad}: {}", err.message);
        }
    }

    #[test]
    fn only_docker_commit_changes_pass() {
        let request = |changes: &[&str]| CommitRequest {
            container: None,
            image: "shop/web:1".into(),
            pause: true,
            compression: Default::default(),
            author: None,
            message: None,
            changes: changes.iter().map(|c| c.to_string()).collect(),
            check_only: false,
        };
        check_request(&request(&["CMD [\"sh\"]", "env A=1", "LABEL a=b"])).unwrap();
        let err = check_request(&request(&["ENV A=1", "RUN rm -rf /"])).unwrap_err();
        assert!(
            err.message.starts_with("changes[1]: \"RUN\""),
            "{}",
            err.message
        );
    }
}
