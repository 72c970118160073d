//! `exec` and `port-forward` on the agent's endpoint: each request is
//! authorized with the exec right, then upgraded to a raw connection that
//! carries [`crate::exec::Frame`]s or a TCP connection's bytes.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use crate::api::PodAccess;
use crate::endpoint::{EXEC_PROTOCOL, EndpointState, PORT_FORWARD_PROTOCOL, refuse, upgrade};
use crate::exec::ExecCommand;

#[derive(Deserialize)]
pub(crate) struct ExecParams {
    container: Option<String>,
    /// The command and its arguments, as a JSON array of strings.
    command: String,
    #[serde(default)]
    stdin: bool,
    #[serde(default)]
    tty: bool,
    cols: Option<u16>,
    rows: Option<u16>,
}

pub(crate) async fn exec(
    State(state): State<Arc<EndpointState>>,
    Path((project, name)): Path<(String, String)>,
    Query(params): Query<ExecParams>,
    mut request: Request,
) -> Response {
    let mut names = vec![project.as_str(), name.as_str()];
    names.extend(params.container.as_deref());
    if let Err(refused) = state
        .authorize(request.headers(), &names, PodAccess::Exec)
        .await
    {
        return refused;
    }
    let command: Vec<String> = match serde_json::from_str(&params.command) {
        Ok(command) => command,
        Err(err) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("command is not a JSON list of strings: {err}"),
            );
        }
    };
    if command.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "no command to run");
    }
    let container = match state
        .choose_container(&project, &name, params.container)
        .await
    {
        Ok(container) => container,
        Err(refused) => return refused,
    };
    let Some(runc) = state.runtime.runc().cloned() else {
        return refuse(
            StatusCode::NOT_IMPLEMENTED,
            "this node runs no runc containers",
        );
    };
    let Some(id) = state
        .runtime
        .running_container_id(&project, &name, &container)
        .await
    else {
        return refuse(
            StatusCode::CONFLICT,
            format!("container {container} of pod {project}/{name} is not running"),
        );
    };
    let exec = ExecCommand {
        id,
        command,
        stdin: params.stdin,
        tty: params
            .tty
            .then(|| (params.cols.unwrap_or(80), params.rows.unwrap_or(24))),
    };
    upgrade(&mut request, EXEC_PROTOCOL, move |conn| async move {
        if let Err(err) = crate::exec::run(&runc, exec, conn).await {
            tracing::debug!(error = %err, "an exec stream ended with an error");
        }
    })
}

#[derive(Deserialize)]
pub(crate) struct PortForwardParams {
    port: u16,
}

pub(crate) async fn port_forward(
    State(state): State<Arc<EndpointState>>,
    Path((project, name)): Path<(String, String)>,
    Query(params): Query<PortForwardParams>,
    mut request: Request,
) -> Response {
    if let Err(refused) = state
        .authorize(request.headers(), &[&project, &name], PodAccess::Exec)
        .await
    {
        return refused;
    }
    let Some(ip) = state.runtime.pod_ip(&project, &name).await else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("pod {project}/{name} has no address on this node"),
        );
    };
    // Connected before answering, so a closed port is an HTTP error the
    // client can report rather than a connection that just ends.
    let target = (ip, params.port);
    let mut pod = match tokio::net::TcpStream::connect(target).await {
        Ok(stream) => stream,
        Err(err) => {
            return refuse(
                StatusCode::BAD_GATEWAY,
                format!(
                    "connecting to pod {project}/{name} at {ip}:{}: {err}",
                    params.port
                ),
            );
        }
    };
    upgrade(
        &mut request,
        PORT_FORWARD_PROTOCOL,
        move |mut conn| async move {
            let _ = tokio::io::copy_bidirectional(&mut conn, &mut pod).await;
        },
    )
}
