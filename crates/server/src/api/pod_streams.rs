//! `exec` and `port-forward`: an HTTP/1.1 upgrade from the client, passed
//! on to the agent of the pod's node, after which the server only copies
//! bytes both ways. The framing inside is the agent's
//! (`wharf_agent::exec::Frame`); the server never reads stdin.
//!
//! ```text
//! POST .../pods/{name}/exec?container=C&command=["sh","-c","id"]&stdin=true&tty=true&cols=80&rows=24
//!      Connection: upgrade, Upgrade: wharf-exec.v1
//! POST .../pods/{name}/portforward?port=8080
//!      Connection: upgrade, Upgrade: wharf-tcp.v1
//! GET  .../pods/{name}/exec   204 when the caller may exec (asked by agents)
//! ```

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use wharf_api::Pod;

use super::node_proxy::{self, http};
use super::{ApiCaller, ApiErrorReply, ApiResult};
use crate::AppState;

/// The `Upgrade` protocols, as the agent names them.
const EXEC_PROTOCOL: &str = "wharf-exec.v1";
const PORT_FORWARD_PROTOCOL: &str = "wharf-tcp.v1";

/// `GET .../pods/{name}/exec`: 204 for whom the route table lets exec into
/// the pod. Agents ask it with the caller's token before they run anything.
pub(crate) async fn may_exec(
    State(state): State<Arc<AppState>>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let _: Pod = state
        .control
        .objects()
        .require(Some(&project), &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct ExecQuery {
    command: String,
}

/// `POST .../pods/{name}/exec`, audited as `pod.exec` with the command.
pub(crate) async fn exec(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
    Query(asked): Query<ExecQuery>,
    RawQuery(query): RawQuery,
    request: Request,
) -> ApiResult<Response> {
    let detail = format!("command {}", asked.command);
    let target = Upstream {
        project,
        name,
        what: "exec",
        query: query.unwrap_or_default(),
        protocol: EXEC_PROTOCOL,
    };
    target
        .open_audited(&state, &caller, "pod.exec", detail, request)
        .await
}

#[derive(Deserialize)]
pub(crate) struct PortForwardQuery {
    port: u16,
}

/// `POST .../pods/{name}/portforward`, audited as `pod.portforward`.
pub(crate) async fn port_forward(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path((project, name)): Path<(String, String)>,
    Query(asked): Query<PortForwardQuery>,
    request: Request,
) -> ApiResult<Response> {
    let target = Upstream {
        project,
        name,
        what: "portforward",
        query: format!("port={}", asked.port),
        protocol: PORT_FORWARD_PROTOCOL,
    };
    let detail = format!("port {}", asked.port);
    target
        .open_audited(&state, &caller, "pod.portforward", detail, request)
        .await
}

/// An upgraded stream to open on the agent of a pod's node.
struct Upstream {
    project: String,
    name: String,
    what: &'static str,
    query: String,
    protocol: &'static str,
}

impl Upstream {
    /// [`Upstream::open`], audited as `action` on the pod with `detail`.
    async fn open_audited(
        self,
        state: &Arc<AppState>,
        caller: &ApiCaller,
        action: &str,
        detail: String,
        request: Request,
    ) -> ApiResult<Response> {
        let resource = format!("{}/pod/{}", self.project, self.name);
        let work = self.open(state, request);
        state
            .audited_request(caller, action, resource, detail, work)
            .await
    }

    /// Upgrades the agent's connection first, so its refusal (not running,
    /// not allowed, port closed) reaches the client as an HTTP error; then
    /// the client's, and joins the two.
    async fn open(self, state: &Arc<AppState>, mut request: Request) -> ApiResult<Response> {
        let asked = request
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(self.protocol.as_bytes()));
        if !asked {
            return Err(ApiErrorReply::new(
                StatusCode::UPGRADE_REQUIRED,
                "UPGRADE_REQUIRED",
                format!(
                    "this route speaks {} over an HTTP/1.1 upgrade",
                    self.protocol
                ),
            ));
        }
        let (node, url) = node_proxy::pod_url(state, &self.project, &self.name, self.what).await?;
        let mut upstream = http()
            .post(format!("{url}?{}", self.query))
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, self.protocol);
        if let Some(authorization) = request.headers().get(header::AUTHORIZATION) {
            upstream = upstream.header(header::AUTHORIZATION, authorization.clone());
        }
        let answer = upstream
            .send()
            .await
            .map_err(|e| node_proxy::unreachable(&node, e))?;
        if answer.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            return Err(node_proxy::refused(&node, answer).await);
        }
        let client = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let (agent, client) = tokio::join!(answer.upgrade(), client);
            match (agent, client) {
                (Ok(mut agent), Ok(client)) => {
                    let mut client = TokioIo::new(client);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut agent).await;
                }
                (Err(err), _) => tracing::debug!(error = %err, node, "upgrading to the agent"),
                (_, Err(err)) => tracing::debug!(error = %err, "upgrading the client"),
            }
        });
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static(self.protocol));
        Ok(response)
    }
}
