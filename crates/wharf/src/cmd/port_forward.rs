//! `wharf port-forward POD [LOCAL:]REMOTE...`: listens on 127.0.0.1 and
//! tunnels each connection through the server and the agent of the pod's
//! node to the pod's port. Without LOCAL (or with 0) a free port is taken
//! and printed, as kubectl does.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use wharf_agent::PORT_FORWARD_PROTOCOL;

use super::objects::PodTarget;
use crate::client::ApiClient;

/// Options of `wharf port-forward`.
#[derive(Args)]
pub struct PortForwardArgs {
    #[command(flatten)]
    target: PodTarget,
    /// `LOCAL:REMOTE`, or `REMOTE` alone for a free local port.
    #[arg(required = true, value_name = "[LOCAL:]REMOTE", value_parser = parse_ports)]
    ports: Vec<(u16, u16)>,
}

/// `LOCAL:REMOTE`, `:REMOTE` or `REMOTE`; a missing LOCAL is 0 (any free).
fn parse_ports(text: &str) -> Result<(u16, u16)> {
    let port = |p: &str| {
        p.parse::<u16>()
            .with_context(|| format!("{p:?} is not a port number"))
    };
    let (local, remote) = match text.split_once(':') {
        Some(("", remote)) => (0, port(remote)?),
        Some((local, remote)) => (port(local)?, port(remote)?),
        None => (0, port(text)?),
    };
    if remote == 0 {
        bail!("the pod's port cannot be 0");
    }
    Ok((local, remote))
}

/// Forwards until interrupted.
pub async fn run(args: PortForwardArgs) -> Result<()> {
    let (mut client, project) = args.target.connect()?;
    let path = [
        "projects",
        project.as_str(),
        "pods",
        &args.target.pod,
        "exec",
    ];
    // Refusals (no such pod, no right) now rather than at the first connection.
    client
        .get(&path)
        .await
        .with_context(|| format!("port-forward to pod {project}/{}", args.target.pod))?;
    let client = Arc::new(Mutex::new(client));
    let mut forwarders = tokio::task::JoinSet::new();
    for (local, remote) in args.ports {
        let listener = TcpListener::bind(("127.0.0.1", local))
            .await
            .with_context(|| format!("listening on 127.0.0.1:{local}"))?;
        let bound = listener.local_addr()?.port();
        println!("Forwarding from 127.0.0.1:{bound} -> {remote}");
        let target = Target {
            client: client.clone(),
            project: project.clone(),
            pod: args.target.pod.clone(),
            remote,
        };
        forwarders.spawn(target.serve(listener));
    }
    match forwarders.join_next().await {
        Some(result) => result.context("a forwarder panicked")?,
        None => Ok(()),
    }
}

/// Where a listener's connections go.
#[derive(Clone)]
struct Target {
    client: Arc<Mutex<ApiClient>>,
    project: String,
    pod: String,
    remote: u16,
}

impl Target {
    async fn serve(self, listener: TcpListener) -> Result<()> {
        loop {
            let (local, _) = listener.accept().await.context("accepting a connection")?;
            let target = self.clone();
            tokio::spawn(async move {
                if let Err(err) = target.tunnel(local).await {
                    eprintln!("error: port {}: {err:#}", target.remote);
                }
            });
        }
    }

    async fn tunnel(&self, mut local: TcpStream) -> Result<()> {
        let path = ["projects", &self.project, "pods", &self.pod, "portforward"];
        let query = [("port", self.remote.to_string())];
        let mut remote = self
            .client
            .lock()
            .await
            .upgrade(&path, &query, PORT_FORWARD_PROTOCOL)
            .await?;
        tokio::io::copy_bidirectional(&mut local, &mut remote).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_pairs() {
        assert_eq!(parse_ports("8080:80").unwrap(), (8080, 80));
        assert_eq!(parse_ports("80").unwrap(), (0, 80));
        assert_eq!(parse_ports(":80").unwrap(), (0, 80));
        for bad in ["", "x:80", "80:", "8080:0", "70000"] {
            assert!(parse_ports(bad).is_err(), "{bad:?}");
        }
    }
}
