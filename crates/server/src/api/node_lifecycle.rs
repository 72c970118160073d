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

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wharf_api::{EventType, LABEL_POOL, Node, ObjectReference, check_name};
use wharf_auth::{AuthError, NODE_ROBOT_PREFIX};
use wharf_control::{DrainOptions, EventRecorder, EvictedPod};

use super::{ApiCaller, ApiResult, Body as JsonBody};
use crate::AppState;

/// How long a join token lasts when the request names no ttl.
const DEFAULT_JOIN_TTL: Duration = Duration::from_secs(3600);
/// How long a drain waits when the request names no timeout.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// The one check of the node lifecycle routes (join-command, drain,
/// decommission): the `poolOperator` role, or `clusterAdmin`. Until the
/// inventory roles exist, system administrators.
fn require_pool_operator(caller: &ApiCaller) -> Result<(), AuthError> {
    if caller.principal.is_admin() {
        Ok(())
    } else {
        Err(AuthError::Denied(
            "pool operators and cluster administrators only".into(),
        ))
    }
}

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
    require_pool_operator(&caller)?;
    check_name("pool", &pool)?;
    let ttl = request
        .ttl_seconds
        .map_or(DEFAULT_JOIN_TTL, Duration::from_secs);
    let work = state
        .identity
        .create_join_token(&caller.principal, &pool, ttl);
    let (shown, token) = state
        .audited(&caller, "node.join-token", format!("pool/{pool}"), work)
        .await?;
    let reply = json!({ "pool": shown.pool, "expiresAt": shown.expires_at, "token": token });
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
    require_pool_operator(&caller)?;
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
    require_pool_operator(&caller)?;
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
