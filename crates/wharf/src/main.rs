//! The `wharf` binary: server, client verbs and benchmarks.

mod bench;
mod units;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use wharf_auth::IdentityConfig;
use wharf_registry::RegistryConfig;
use wharf_server::{Server, ServerConfig};

/// Wharf: a private image registry and container platform in one binary.
#[derive(Parser)]
#[command(name = "wharf", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (registry at /v2/, API at /api/v1/).
    Server(ServerArgs),
    /// Run garbage collection on a running server now.
    Gc(GcArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Args, Clone)]
struct ServerArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:7700", env = "WHARF_LISTEN")]
    listen: SocketAddr,
    /// Directory for state and blobs.
    #[arg(long, default_value = "/var/lib/wharf", env = "WHARF_DATA_DIR")]
    data_dir: PathBuf,
    /// How often garbage collection runs (0 disables it).
    #[arg(long, default_value = "6h", value_parser = units::parse_duration)]
    gc_interval: Duration,
    /// Content marked more recently than this is never collected.
    #[arg(long, default_value = "1h", value_parser = units::parse_duration)]
    gc_grace: Duration,
    /// Upload sessions idle this long are deleted.
    #[arg(long, default_value = "24h", value_parser = units::parse_duration)]
    upload_ttl: Duration,
    /// Largest blob accepted.
    #[arg(long, default_value = "64GiB", value_parser = units::parse_size)]
    max_blob_size: u64,
    /// Largest manifest accepted.
    #[arg(long, default_value = "4MiB", value_parser = units::parse_size)]
    max_manifest_size: u64,
    /// URL clients reach this server at, for token realms (default: from each request's Host).
    #[arg(long, env = "WHARF_PUBLIC_URL")]
    public_url: Option<String>,
    /// Registry service name in tokens and challenges.
    #[arg(long, default_value = "wharf")]
    service: String,
    /// Lifetime of registry and API access tokens.
    #[arg(long, default_value = "5m", value_parser = units::parse_duration)]
    token_ttl: Duration,
    /// How long audit events are kept.
    #[arg(long, default_value = "90d", value_parser = units::parse_duration)]
    audit_retention: Duration,
}

#[derive(Args)]
struct GcArgs {
    /// Server URL.
    #[arg(long, default_value = "http://127.0.0.1:7700", env = "WHARF_SERVER")]
    server: String,
    /// Report what would be removed without removing it.
    #[arg(long)]
    dry_run: bool,
    /// Override the server's grace period.
    #[arg(long, value_parser = units::parse_duration)]
    grace: Option<Duration>,
    /// Output format.
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => run_server(args).await,
            Command::Gc(args) => run_gc(args).await,
            Command::Bench(command) => bench::run(command).await,
        }
    })
}

impl ServerArgs {
    fn config(&self) -> ServerConfig {
        let mut config = ServerConfig::new(self.listen, self.data_dir.clone());
        config.gc_interval = (!self.gc_interval.is_zero()).then_some(self.gc_interval);
        config.registry = RegistryConfig {
            max_manifest_bytes: self.max_manifest_size,
            max_blob_bytes: self.max_blob_size,
            gc_grace: self.gc_grace,
            upload_ttl: self.upload_ttl,
        };
        config.identity = IdentityConfig {
            service: self.service.clone(),
            registry_token_ttl: self.token_ttl,
            api_token_ttl: self.token_ttl.max(Duration::from_secs(60)),
            ..IdentityConfig::default()
        };
        config.public_url = self.public_url.clone();
        config.audit_retention = self.audit_retention;
        // Read here, not logged anywhere: only the hash is stored.
        config.admin_password = std::env::var("WHARF_ADMIN_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty());
        config
    }
}

async fn run_server(args: ServerArgs) -> Result<()> {
    let server = Server::bind(args.config()).await.with_context(|| {
        format!(
            "starting the server with data in {}",
            args.data_dir.display()
        )
    })?;
    println!("listening on http://{}", server.local_addr());
    if let Some(password) = server.generated_admin_password() {
        // Shown once, on the first start; it is stored only as a hash.
        println!("admin password: {password}");
    }
    server.run(shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

async fn run_gc(args: GcArgs) -> Result<()> {
    let mut request = serde_json::json!({ "dry_run": args.dry_run });
    if let Some(grace) = args.grace {
        request["grace_seconds"] = grace.as_secs().into();
    }
    let url = format!("{}/api/v1/gc", args.server.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .json(&request)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}: is the server running?"))?;
    let status = response.status();
    let report: serde_json::Value = response
        .json()
        .await
        .context("reading the server's answer")?;
    if !status.is_success() {
        bail!("garbage collection failed ({status}): {report}");
    }
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let field = |name: &str| report[name].as_u64().unwrap_or(0);
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    println!(
        "{verb} {} blobs ({} bytes), {} links, {} upload sessions in {} ms",
        field("blobs_removed"),
        field("bytes_freed"),
        field("links_removed"),
        field("uploads_removed"),
        field("duration_ms"),
    );
    Ok(())
}
