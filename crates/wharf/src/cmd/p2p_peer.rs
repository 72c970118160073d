//! `wharf p2p-peer` (hidden): the lightweight peer `wharf bench p2p` runs
//! by the dozen, one per shaped network namespace. It pulls one image into
//! a cache directory of its own with the node's pull code
//! ([`wharf_image::ImageStore`], as `wharf agent` pulls, without runc or
//! pods), then stays up until its stdin closes.
//!
//! With `--join-token` it is a node as an agent is: it trades the token
//! for its own node credential (kept in its directory), registers its Node
//! (name, address, the pool's labels) and pulls as that node, which is
//! what the server's P2P tracker requires of the nodes it schedules.
//! Otherwise it pulls as `--registry-user`. With `--p2p` (a node only) it
//! pulls through P2P as an agent does ([`wharf_agent::p2p::PeerNode`]),
//! serving its pieces on `--address`:7701 (the endpoint it registers).
//!
//! It speaks one JSON object per line, so that the benchmark can open every
//! cache first and start all pulls at once:
//!
//! ```text
//! stdout  {"ready":true}                            the cache is open
//! stdin   go                                        pull now
//! stdout  {"pulled":{"sizeBytes":..,"millis":..}}   or {"failed":"why"}
//! stdin   (closed)                                  exit
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use wharf_agent::p2p::{P2pSettings, PeerNode};
use wharf_agent::{AgentConfig, HttpNodeApi, LoadSummary, NodeApi};
use wharf_image::{ImageRef, ImageStore, ImageStoreOptions, PullPolicy, RegistryCredentials};

use super::node_credential::{CredentialLogin, NodeCredential};
use crate::units;

/// `wharf p2p-peer` arguments.
#[derive(Args)]
pub struct P2pPeerArgs {
    /// The server whose registry the image is pulled from (`http://host:port`).
    #[arg(long)]
    server: String,
    /// The image to pull (`host:port/project/name:tag`).
    #[arg(long)]
    image: String,
    /// The cache directory (created).
    #[arg(long)]
    dir: PathBuf,
    /// The node's name (with --join-token).
    #[arg(long, requires = "join_token")]
    name: Option<String>,
    /// The node's address (with --join-token).
    #[arg(long, requires = "join_token")]
    address: Option<String>,
    /// A single-use join token: the peer becomes node --name of the
    /// token's pool and pulls with that node's credential.
    #[arg(
        long,
        env = "WHARF_JOIN_TOKEN",
        hide_env_values = true,
        requires = "name",
        conflicts_with = "registry_user"
    )]
    join_token: Option<String>,
    /// Registry user for the pull (without --join-token); its password
    /// comes from WHARF_REGISTRY_PASSWORD.
    #[arg(
        long,
        env = "WHARF_REGISTRY_USER",
        required_unless_present = "join_token"
    )]
    registry_user: Option<String>,
    /// Disk space kept free under the cache: the pull fails below it.
    #[arg(long, default_value = "1GiB", value_parser = units::parse_size)]
    disk_reserve: u64,
    /// Pull through P2P (the server's tracker, other peers) and serve
    /// pieces on --address:7701, as an agent does.
    #[arg(long, requires_all = ["join_token", "address"])]
    p2p: bool,
}

/// The port a P2P peer serves pieces on, in its own network namespace.
const PIECE_PORT: u16 = 7701;

/// Runs one peer until its stdin closes.
pub async fn run(args: P2pPeerArgs) -> Result<()> {
    let (credentials, api) = match (&args.join_token, &args.registry_user) {
        (Some(token), _) => {
            let (credentials, api) = join(&args, token).await?;
            (credentials, Some(api))
        }
        (None, Some(user)) => {
            let password = std::env::var("WHARF_REGISTRY_PASSWORD").map_err(|_| {
                anyhow::anyhow!(
                    "--registry-user {user} needs its password in WHARF_REGISTRY_PASSWORD"
                )
            })?;
            (RegistryCredentials::new(user.clone(), password), None)
        }
        (None, None) => bail!("give --join-token or --registry-user"),
    };
    let image = ImageRef::parse(&args.image).with_context(|| format!("--image {}", args.image))?;
    let mut options = store_options(&args)?;
    if let (true, Some(api)) = (args.p2p, api) {
        options.blob_fetcher = Some(serve_pieces(&args, api, &image).await?.blob_fetcher());
    }
    let store = ImageStore::open(args.dir.join("images"), options)
        .await
        .with_context(|| format!("opening the cache in {}", args.dir.display()))?;
    println!("{}", json!({"ready": true}));
    let mut stdin = stdin_lines();
    match stdin.recv().await {
        Some(line) if line.trim() == "go" => {}
        Some(line) => bail!("expected `go` on stdin, got {line:?}"),
        None => return Ok(()),
    }
    let started = Instant::now();
    let pulled = store
        .pull(&image, Some(&credentials), PullPolicy::Always, &|_| {})
        .await;
    let answer = match pulled {
        Ok(pulled) => json!({"pulled": {
            "sizeBytes": pulled.size_bytes,
            "millis": started.elapsed().as_millis() as u64,
            "layers": pulled.layers.len(),
            "registryBytes": pulled.bytes.registry,
            "peerBytes": pulled.bytes.peers,
        }}),
        Err(error) => json!({"failed": format!("pulling {image}: {error}")}),
    };
    println!("{answer}");
    // Stay up (a peer serves what it holds) until the benchmark is done.
    while stdin.recv().await.is_some() {}
    Ok(())
}

/// Stdin's lines, read on a thread of their own (reading stdin blocks);
/// the channel closes with stdin.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (lines, receiver) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if lines.blocking_send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Opens the peer's blob cache and serves its pieces on
/// `--address`:[`PIECE_PORT`]; layers of `image`'s registry then go
/// through P2P.
async fn serve_pieces(
    args: &P2pPeerArgs,
    api: Arc<HttpNodeApi>,
    image: &ImageRef,
) -> Result<Arc<PeerNode>> {
    let address = args.address.as_deref().context("--p2p needs --address")?;
    let listener = tokio::net::TcpListener::bind((address, PIECE_PORT))
        .await
        .with_context(|| format!("serving pieces on {address}:{PIECE_PORT}"))?;
    let peer = PeerNode::open(
        args.dir.join("blobs"),
        api,
        P2pSettings::default(),
        Some(image.registry().to_string()),
    )
    .await?;
    let serving = peer.clone();
    tokio::spawn(async move {
        if let Err(error) = serving.serve(listener).await {
            tracing::error!(%error, "the piece server stopped");
        }
    });
    Ok(peer)
}

/// Trades `token` for the node's credential (or reuses the one kept in the
/// peer's directory), registers the node (with its piece endpoint under
/// `--p2p`) and returns its pull credentials and API client.
async fn join(args: &P2pPeerArgs, token: &str) -> Result<(RegistryCredentials, Arc<HttpNodeApi>)> {
    let name = args.name.as_deref().context("--join-token needs --name")?;
    let credential = NodeCredential::obtain(Some(&args.server), name, &args.dir, Some(token))
        .await?
        .context("no node credential")?;
    let pull = RegistryCredentials::new(credential.name.clone(), credential.secret.clone());
    let mut config = AgentConfig::new(name);
    config.labels = credential.labels.clone();
    config.address = args.address.clone();
    config.max_pods = 0;
    if args.p2p
        && let Some(address) = &args.address
    {
        config.endpoint = Some(format!("http://{address}:{PIECE_PORT}"));
    }
    let api = HttpNodeApi::new(&args.server, Arc::new(CredentialLogin::new(credential)))?;
    api.register(config.node(&LoadSummary::default()))
        .await
        .with_context(|| format!("registering node {name}"))?;
    Ok((pull, Arc::new(api)))
}

/// The cache's settings: the agent's defaults, the server's registry over
/// plain HTTP when the server is, and the reserve asked for.
fn store_options(args: &P2pPeerArgs) -> Result<ImageStoreOptions> {
    let url = crate::client::parse_server_url(&args.server)?;
    let mut plain_http = Vec::new();
    if url.scheme() == "http"
        && let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default())
    {
        plain_http.push(format!("{host}:{port}"));
    }
    Ok(ImageStoreOptions {
        plain_http,
        reserve_bytes: args.disk_reserve,
        ..ImageStoreOptions::default()
    })
}
