//! The agent's own HTTP endpoint, which the server proxies to: container
//! logs ([`crate::logs`]), `exec` and `port-forward` over upgraded
//! connections ([`crate::streams`]), and commits ([`crate::commit`]). A caller must present a token the
//! server accepts for what it asks: the agent asks the server, so it holds
//! no credentials of its own to check.
//!
//! ```text
//! GET  /v1/pods/{project}/{name}/log?container=C&follow=true&tailLines=N&previous=true
//! POST /v1/pods/{project}/{name}/exec?container=C&command=["sh"]&stdin=true&tty=true&cols=80&rows=24
//! POST /v1/pods/{project}/{name}/portforward?port=8080
//! POST /v1/pods/{project}/{name}/commit      CommitRequest -> JSON lines of CommitProgress
//! POST /v1/push                      falcon's push API, from this machine only
//! GET  /metrics                      the newest collection, for Prometheus
//! GET  /v1/p2p/blobs/{digest}/pieces/{index}   a piece of the blob cache, to
//!                                    peers with a grant ([`crate::p2p`])
//! ```
//!
//! `/v1/push` is the exception to the token rule: falcon's plugins and
//! scripts send none, so it is open to local processes only (see
//! [`crate::metrics::push`]).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;

use crate::api::{NodeApi, PodAccess};
use crate::containers::ContainerRuntime;
use crate::metrics::LatestSamples;
use crate::metrics::push::MAX_PUSHES_IN_FLIGHT;

/// The `Upgrade` protocol of an exec stream ([`crate::exec::Frame`]s).
pub const EXEC_PROTOCOL: &str = "wharf-exec.v1";
/// The `Upgrade` protocol of a forwarded port: the TCP bytes, as they are.
pub const PORT_FORWARD_PROTOCOL: &str = "wharf-tcp.v1";

pub(crate) struct EndpointState {
    pub api: Arc<dyn NodeApi>,
    pub runtime: Arc<ContainerRuntime>,
    /// The node whose metrics user pushes are forwarded as.
    pub node: String,
    /// Room for the user pushes being read and forwarded.
    pub pushes: tokio::sync::Semaphore,
    /// The collector's newest samples, served by `/metrics`.
    pub latest: LatestSamples,
}

/// Serves node `node`'s agent endpoint on `listener` until the task is
/// dropped.
pub async fn serve_endpoint(
    listener: tokio::net::TcpListener,
    node: &str,
    api: Arc<dyn NodeApi>,
    runtime: Arc<ContainerRuntime>,
    latest: LatestSamples,
) -> std::io::Result<()> {
    // Peers fetch pieces of the node's blob cache with grants the server
    // signed; the piece server checks them itself.
    let pieces = runtime.p2p().map(|peer| peer.router());
    let router = Router::new()
        .route("/v1/pods/{project}/{name}/log", get(crate::logs::pod_log))
        .route("/v1/pods/{project}/{name}/exec", post(crate::streams::exec))
        .route(
            "/v1/pods/{project}/{name}/portforward",
            post(crate::streams::port_forward),
        )
        .route(
            "/v1/pods/{project}/{name}/commit",
            post(crate::commit::commit),
        )
        .route("/v1/push", post(crate::metrics::push::push))
        .route("/metrics", get(crate::metrics::exposition::metrics))
        .with_state(Arc::new(EndpointState {
            api,
            runtime,
            node: node.to_owned(),
            pushes: tokio::sync::Semaphore::new(MAX_PUSHES_IN_FLIGHT),
            latest,
        }));
    let router = match pieces {
        Some(pieces) => router.merge(pieces),
        None => router,
    };
    // The peer's address tells local pushes from others.
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await
}

/// The request's bearer token, if it has one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

pub(crate) fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

impl EndpointState {
    /// Checks the names (they become path components: only DNS labels get
    /// that far) and asks the server whether the caller's token may do
    /// `access` to the pod.
    pub(crate) async fn authorize(
        &self,
        headers: &HeaderMap,
        names: &[&str],
        access: PodAccess,
    ) -> Result<(), Response> {
        if let Some(bad) = names
            .iter()
            .find(|n| wharf_api::check_name("name", n).is_err())
        {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("{bad:?} is not a valid name"),
            ));
        }
        let Some(token) = bearer(headers) else {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required",
            ));
        };
        let (project, name) = (names[0], names[1]);
        match self.api.may_access_pod(token, project, name, access).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(refuse(
                StatusCode::FORBIDDEN,
                match access {
                    PodAccess::Read => "the server does not let this token read the pod",
                    PodAccess::Exec => "the server does not let this token exec into the pod",
                },
            )),
            Err(err) => Err(refuse(
                StatusCode::BAD_GATEWAY,
                format!("asking the server: {err}"),
            )),
        }
    }

    /// The container named, or the pod's only one.
    pub(crate) async fn choose_container(
        &self,
        project: &str,
        name: &str,
        container: Option<String>,
    ) -> Result<String, Response> {
        let containers = self.runtime.containers_of(project, name).await;
        match (container, containers.as_slice()) {
            (Some(container), _) => Ok(container),
            (None, [only]) => Ok(only.clone()),
            (None, []) => Err(refuse(
                StatusCode::NOT_FOUND,
                format!("pod {project}/{name} has no containers on this node"),
            )),
            (None, many) => Err(refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "pod {project}/{name} has several containers; choose one of {}",
                    many.join(", ")
                ),
            )),
        }
    }
}

/// Answers `101 Switching Protocols` to `protocol` and hands the upgraded
/// connection to `serve`; refuses a request that did not ask for it.
pub(crate) fn upgrade<F, Fut>(request: &mut Request, protocol: &'static str, serve: F) -> Response
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let asked = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(protocol.as_bytes()));
    if !asked {
        return refuse(
            StatusCode::UPGRADE_REQUIRED,
            format!("this endpoint speaks {protocol} over an HTTP/1.1 upgrade"),
        );
    }
    let pending = hyper::upgrade::on(request);
    tokio::spawn(async move {
        match pending.await {
            Ok(upgraded) => serve(TokioIo::new(upgraded)).await,
            Err(err) => tracing::debug!(error = %err, "a connection upgrade failed"),
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(protocol));
    response
}
