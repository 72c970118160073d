//! A node's life beyond registration: join tokens and their exchange for
//! the node's own credential, drain, and decommission.
//!
//! ```text
//! operator: POST /api/v1/pools/{pool}/join-tokens --> single-use token
//! machine:  POST /api/v1/join {token, node} --> robot$node+<node> and its
//!           secret (the agent keeps it 0600 in its node dir)
//! operator: POST /api/v1/nodes/{node}/drain --> cordoned, pods moved off
//!           POST /api/v1/nodes/{node}/decommission --> drained, credential
//!           revoked, node deleted (its agent gets 401 and stops)
//! ```

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;
use wharf_api::{EventType, LABEL_POOL, Node, ObjectReference, check_name};
use wharf_auth::{AuthError, NODE_ROBOT_PREFIX};
use wharf_control::{DrainOptions, EventRecorder, EvictedPod};
use wharf_oci::{DigestAlgorithm, StreamHasher};

use super::{ApiCaller, ApiErrorReply, ApiResult, Body as JsonBody};
use crate::AppState;

/// How long a join token lasts when the request names no ttl.
const DEFAULT_JOIN_TTL: Duration = Duration::from_secs(3600);
/// The header the join script sends its join token in: a bearer token
/// would be taken for an API token, and refused.
const JOIN_TOKEN_HEADER: &str = "wharf-join-token";
/// The script the join command's line runs (see `join.sh`).
const JOIN_SCRIPT: &str = include_str!("join.sh");

/// How long a drain waits when the request names no timeout.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// `POST /api/v1/pools/{pool}/join-tokens` body.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JoinTokenRequest {
    ttl_seconds: Option<u64>,
}

/// `POST /api/v1/pools/{pool}/join-tokens`: a single-use token a new
/// machine joins pool `pool` with.
pub(crate) async fn create_join_token(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(pool): Path<String>,
    JsonBody(request): JsonBody<JoinTokenRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_name("pool", &pool)?;
    let ttl = request
        .ttl_seconds
        .map_or(DEFAULT_JOIN_TTL, Duration::from_secs);
    let work = state
        .identity
        .create_join_token(caller.principal.name(), &pool, ttl);
    let (shown, token) = state
        .audited(&caller, "node.join-token", format!("pool/{pool}"), work)
        .await?;
    let (_, digest) = self_binary().await?;
    let reply = json!({
        "pool": shown.pool,
        "expiresAt": shown.expires_at,
        "token": token,
        "binarySha256": digest,
    });
    Ok((StatusCode::CREATED, Json(reply)))
}

/// `POST /api/v1/join` body.
#[derive(Deserialize)]
pub(crate) struct JoinRequest {
    token: String,
    node: String,
}

/// What a joining machine gets: its pool and its credential.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JoinReply {
    pool: String,
    /// The labels the node registers with (`wharf.io/pool`).
    labels: std::collections::BTreeMap<String, String>,
    name: String,
    secret: String,
}

/// `POST /api/v1/join`: a join token (its only authentication) exchanged,
/// once, for the node's credential.
pub(crate) async fn join(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    JsonBody(request): JsonBody<JoinRequest>,
) -> ApiResult<(StatusCode, Json<JoinReply>)> {
    let work = state
        .identity
        .redeem_join_token(&request.token, &request.node);
    let resource = format!("node/{}", request.node);
    let joined = state.audited(&caller, "node.join", resource, work).await?;
    let labels = [(LABEL_POOL.to_string(), joined.pool.clone())].into();
    let reply = JoinReply {
        pool: joined.pool,
        labels,
        name: joined.robot.name,
        secret: joined.secret,
    };
    Ok((StatusCode::CREATED, Json(reply)))
}

/// `POST .../drain` and `.../decommission` body.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DrainRequest {
    #[serde(default)]
    force: bool,
    timeout_seconds: Option<u64>,
}

impl DrainRequest {
    fn options(&self) -> DrainOptions {
        DrainOptions {
            force: self.force,
            timeout: self
                .timeout_seconds
                .map_or(DEFAULT_DRAIN_TIMEOUT, Duration::from_secs),
            ..DrainOptions::default()
        }
    }
}

/// Drains `node`, recording an event on it for each pod moved off.
async fn drain_recorded(
    state: &AppState,
    node: &str,
    request: &DrainRequest,
) -> Result<Vec<EvictedPod>, wharf_control::DrainError> {
    let objects = state.control.objects();
    let recorder = EventRecorder::new(objects.clone(), "drain");
    let involved = ObjectReference {
        kind: "Node".into(),
        project: None,
        name: node.to_string(),
        uid: String::new(),
    };
    let mut evicted = Vec::new();
    let result = objects
        .drain_node(node, request.options(), |pod| evicted.push(pod.clone()))
        .await;
    for pod in &evicted {
        let message = format!("pod {} evicted in {} ms", pod.pod, pod.millis);
        recorder
            .record(&involved, EventType::Normal, "Evicted", &message)
            .await;
    }
    result
}

/// `POST /api/v1/nodes/{node}/drain`: cordons the node and moves its pods
/// off (see `wharf_control::drain`); answers the pods moved.
pub(crate) async fn drain(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(node): Path<String>,
    JsonBody(request): JsonBody<DrainRequest>,
) -> ApiResult<Json<Value>> {
    let work = drain_recorded(&state, &node, &request);
    let evicted = state
        .audited(&caller, "node.drain", format!("node/{node}"), work)
        .await?;
    Ok(Json(json!({ "node": node, "evicted": evicted })))
}

/// `POST /api/v1/nodes/{node}/decommission`: drains the node, revokes its
/// credential (its agent's next request gets 401) and deletes it.
pub(crate) async fn decommission(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(node): Path<String>,
    JsonBody(request): JsonBody<DrainRequest>,
) -> ApiResult<Json<Value>> {
    let work = async {
        let evicted = drain_recorded(&state, &node, &request).await?;
        let revoked = revoke_credential(&state, &node).await?;
        state
            .control
            .objects()
            .delete::<Node>(None, &node, None)
            .await?;
        Ok::<_, super::ApiErrorReply>(json!({
            "node": node,
            "evicted": evicted,
            "credentialRevoked": revoked,
        }))
    };
    let reply = state
        .audited(&caller, "node.decommission", format!("node/{node}"), work)
        .await?;
    Ok(Json(reply))
}

/// Deletes node `node`'s credential; `false` if it had none (it was
/// started with an administrator's login).
async fn revoke_credential(state: &AppState, node: &str) -> Result<bool, AuthError> {
    match state
        .identity
        .delete_robot(&format!("{NODE_ROBOT_PREFIX}{node}"))
        .await
    {
        Ok(()) => Ok(true),
        Err(AuthError::NotFound(_)) => Ok(false),
        Err(err) => Err(err),
    }
}

/// The running server's executable and its SHA-256 (hex), hashed once:
/// what a joining machine downloads and checks.
static SELF_BINARY: OnceCell<(PathBuf, String)> = OnceCell::const_new();

async fn self_binary() -> ApiResult<&'static (PathBuf, String)> {
    SELF_BINARY
        .get_or_try_init(|| async {
            let hashed = tokio::task::spawn_blocking(hash_own_executable).await;
            match hashed {
                Ok(Ok(found)) => Ok(found),
                Ok(Err(err)) => Err(ApiErrorReply::internal(format!(
                    "reading the server's own executable: {err}"
                ))),
                Err(err) => Err(ApiErrorReply::internal(err.to_string())),
            }
        })
        .await
}

/// The SHA-256 of the server's executable, for join commands made outside
/// a request (the pool autoscaler's).
pub(crate) async fn own_binary_sha256() -> Result<String, String> {
    match self_binary().await {
        Ok((_, digest)) => Ok(digest.clone()),
        Err(err) => Err(err.message),
    }
}

fn hash_own_executable() -> std::io::Result<(PathBuf, String)> {
    let path = std::env::current_exe()?;
    let mut file = std::fs::File::open(&path)?;
    let mut hasher = StreamHasher::new(DigestAlgorithm::Sha256);
    let mut buffer = vec![0; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok((path, hasher.finish().hex().to_string()))
}

/// `GET /api/v1/join/script`: the join script (it holds no secret; the
/// join command's line passes it the server, pool, token and digest).
pub(crate) async fn join_script() -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8")
        .body(Body::from(JOIN_SCRIPT))
        .expect("valid response")
}

/// `GET /api/v1/join/wharf`: the running server's own executable, for a
/// caller holding a join token that could still be redeemed (in the
/// `Wharf-Join-Token` header).
pub(crate) async fn join_binary(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let token = headers
        .get(JOIN_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            AuthError::Unauthenticated("send a join token in Wharf-Join-Token".into())
        })?;
    state.identity.check_join_token(token).await?;
    let (path, digest) = self_binary().await?;
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ApiErrorReply::internal(format!("opening the executable: {e}")))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| ApiErrorReply::internal(e.to_string()))?
        .len();
    let chunks = futures_util::stream::unfold(file, |mut file| async move {
        let mut chunk = vec![0; 256 << 10];
        match file.read(&mut chunk).await {
            Ok(0) => None,
            Ok(read) => {
                chunk.truncate(read);
                Some((Ok::<_, std::io::Error>(chunk), file))
            }
            Err(err) => Some((Err(err), file)),
        }
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, size)
        .header("wharf-binary-sha256", digest.as_str())
        .body(Body::from_stream(chunks))
        .expect("valid response"))
}
