//! `wharf server`: runs the registry and the API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use wharf_auth::IdentityConfig;
use wharf_registry::RegistryConfig;
use wharf_replication::{RemoteOptions, ReplicationOptions};
use wharf_server::{Server, ServerConfig, StoreLocation};

use crate::units;

/// Options of `wharf server`.
#[derive(Args, Clone)]
pub struct ServerArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:7700", env = "WHARF_LISTEN")]
    pub listen: SocketAddr,
    /// Directory for state and blobs.
    #[arg(long, default_value = "/var/lib/wharf", env = "WHARF_DATA_DIR")]
    pub data_dir: PathBuf,
    /// How often garbage collection runs (0 disables it).
    #[arg(long, default_value = "6h", value_parser = units::parse_duration)]
    gc_interval: Duration,
    /// Content marked more recently than this is never collected.
    #[arg(long, default_value = "1h", value_parser = units::parse_duration)]
    gc_grace: Duration,
    /// Scheduled collections also delete untagged manifests (as Harbor's
    /// "delete untagged artifacts"); see `wharf gc --delete-untagged`.
    #[arg(long)]
    gc_delete_untagged: bool,
    /// Upload sessions idle this long are deleted.
    #[arg(long, default_value = "24h", value_parser = units::parse_duration)]
    upload_ttl: Duration,
    /// Largest blob accepted.
    #[arg(long, default_value = "64GiB", value_parser = units::parse_size)]
    max_blob_size: u64,
    /// Largest manifest accepted.
    #[arg(long, default_value = "4MiB", value_parser = units::parse_size)]
    max_manifest_size: u64,
    /// How long deleted tags are remembered (tombstones). Replication
    /// converges on deletes made during partitions shorter than this.
    #[arg(long, default_value = "30d", value_parser = units::parse_duration)]
    tombstone_retention: Duration,
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
    /// Where state lives: `embedded` (a file in the data directory) or
    /// `etcd://host:port[,host:port...]` for several servers.
    #[arg(long, default_value = "embedded", env = "WHARF_STORE")]
    store: StoreLocation,
    /// How the scheduler places pods: `spread` (least allocated first) or
    /// `pack` (bin packing: fill nodes before using more).
    #[arg(long, default_value = "spread", value_parser = ["spread", "pack"])]
    scheduler_strategy: String,
    /// Heartbeat lease of agents that name none (`wharf agent --lease-ttl`):
    /// a silent node turns NotReady this long after its last renewal.
    #[arg(long, default_value = "2s", value_parser = units::parse_duration)]
    pub node_lease_ttl: Duration,
    /// How long pods stay on an unreachable or not-ready node unless their
    /// own tolerations say otherwise (Kubernetes: 300s).
    #[arg(long, default_value = "1s", value_parser = units::parse_duration)]
    default_toleration: Duration,
    /// Nodes whose pods are evicted per second, per zone (`wharf.io/idc`).
    #[arg(long, default_value_t = 0.1)]
    node_eviction_rate: f64,
    /// The same in a zone with most of its nodes NotReady.
    #[arg(long, default_value_t = 0.01)]
    secondary_node_eviction_rate: f64,
    /// Share of NotReady nodes above which a zone counts as unhealthy.
    #[arg(long, default_value_t = 0.55)]
    unhealthy_zone_threshold: f64,
    /// An unhealthy zone of at most this many nodes is not evicted at all.
    #[arg(long, default_value_t = 50)]
    large_cluster_size_threshold: usize,
    /// This registry's instance id for replication (`[a-z0-9-]`, e.g. the
    /// IDC name); fixed at the first start, generated if not given.
    #[arg(long, env = "WHARF_INSTANCE")]
    instance: Option<String>,
    /// How often every replication policy is compared with its
    /// destination and the differences copied.
    #[arg(long, default_value = "5m", value_parser = units::parse_duration)]
    replication_reconcile: Duration,
    /// How often an unreachable replication endpoint is asked again; when it
    /// answers, its policies are reconciled at once.
    #[arg(long, default_value = "5s", value_parser = units::parse_duration)]
    replication_probe: Duration,
    /// Tries per replication task before it fails.
    #[arg(long, default_value_t = 6)]
    replication_attempts: u32,
    /// First pause between tries of a replication task (doubling, at most a minute).
    #[arg(long, default_value = "1s", value_parser = units::parse_duration)]
    replication_retry: Duration,
    /// A replication copy fails after an endpoint is silent this long.
    #[arg(long, default_value = "30s", value_parser = units::parse_duration)]
    replication_timeout: Duration,
    /// Bytes per upload request of large blobs (a resumed copy repeats at most one).
    #[arg(long, default_value = "64MiB", value_parser = units::parse_size)]
    replication_chunk: u64,
    /// The range services' cluster IPs are allocated from (a CIDR that
    /// overlaps neither pod nor node addresses).
    #[arg(long, default_value = wharf_control::DEFAULT_SERVICE_RANGE, value_parser = wharf_api::Subnet::parse)]
    service_cidr: wharf_api::Subnet,
    /// How often each HorizontalPodAutoscaler reads its pods' usage and
    /// scales its deployment (Kubernetes' default: 15 s).
    #[arg(long, default_value = "15s", value_parser = units::parse_duration)]
    hpa_sync_period: Duration,
    /// How often the leader evaluates alert rules.
    #[arg(long, default_value = "15s", value_parser = units::parse_duration)]
    alert_eval_interval: Duration,
    /// Most raw metric samples kept in memory over all series (about 20
    /// bytes each); past it the oldest go first.
    #[arg(long, default_value_t = 8_000_000)]
    metrics_raw_points: usize,
    /// Most metric series one endpoint (node, container) may have; pushes
    /// that would create more are refused.
    #[arg(long, default_value_t = 10_000)]
    metrics_series_per_endpoint: usize,
    /// How long raw metric samples are kept (in memory).
    #[arg(long, default_value = "2h", value_parser = units::parse_duration)]
    metrics_raw_retention: Duration,
    /// How long 1-minute metric history is kept (on disk).
    #[arg(long, default_value = "7d", value_parser = units::parse_duration)]
    metrics_1m_retention: Duration,
    /// How long 1-hour metric history is kept (on disk).
    #[arg(long, default_value = "90d", value_parser = units::parse_duration)]
    metrics_1h_retention: Duration,
}

impl ServerArgs {
    /// The server configuration these options describe.
    pub fn config(&self) -> ServerConfig {
        let mut config = ServerConfig::new(self.listen, self.data_dir.clone());
        config.gc_interval = (!self.gc_interval.is_zero()).then_some(self.gc_interval);
        config.gc_delete_untagged = self.gc_delete_untagged;
        config.registry = RegistryConfig {
            max_manifest_bytes: self.max_manifest_size,
            max_blob_bytes: self.max_blob_size,
            gc_grace: self.gc_grace,
            upload_ttl: self.upload_ttl,
            tombstone_retention: self.tombstone_retention,
            ..RegistryConfig::default()
        };
        config.identity = IdentityConfig {
            service: self.service.clone(),
            registry_token_ttl: self.token_ttl,
            api_token_ttl: self.token_ttl.max(Duration::from_secs(60)),
            ..IdentityConfig::default()
        };
        config.public_url = self.public_url.clone();
        config.audit_retention = self.audit_retention;
        config.store = self.store.clone();
        config.scheduler.strategy = match self.scheduler_strategy.as_str() {
            "pack" => wharf_scheduler::Strategy::MostAllocated,
            _ => wharf_scheduler::Strategy::LeastAllocated,
        };
        config.instance = self.instance.clone();
        config.service_range = self.service_cidr;
        config.hpa_sync_period = self.hpa_sync_period;
        config.alert_eval_interval = self.alert_eval_interval.max(Duration::from_millis(100));
        config.metrics = wharf_tsdb::TsdbConfig {
            raw_points: self.metrics_raw_points,
            series_per_endpoint: self.metrics_series_per_endpoint,
            raw_retention: self.metrics_raw_retention.as_secs() as i64,
            minute_retention: self.metrics_1m_retention.as_secs() as i64,
            hour_retention: self.metrics_1h_retention.as_secs() as i64,
        };
        config.failover = wharf_control::EvictionConfig {
            node_lease_ttl: self.node_lease_ttl,
            default_toleration: self.default_toleration,
            eviction_rate: self.node_eviction_rate.max(0.0),
            secondary_eviction_rate: self.secondary_node_eviction_rate.max(0.0),
            unhealthy_zone_threshold: self.unhealthy_zone_threshold,
            large_cluster_size: self.large_cluster_size_threshold,
        };
        config.replication = ReplicationOptions {
            reconcile_interval: self.replication_reconcile.max(Duration::from_secs(1)),
            max_attempts: self.replication_attempts.max(1),
            retry_base: self.replication_retry,
            chunk_size: self.replication_chunk.max(1 << 20),
            probe_interval: self.replication_probe.max(Duration::from_millis(100)),
            remote: RemoteOptions {
                connect_timeout: self.replication_timeout.min(Duration::from_secs(10)),
                read_timeout: self.replication_timeout,
            },
            ..ReplicationOptions::default()
        };
        // Read here, not logged anywhere: only the hash is stored.
        config.admin_password = std::env::var("WHARF_ADMIN_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty());
        config
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(args: ServerArgs) -> Result<()> {
    let stop = shutdown_signal();
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
    server.run(stop).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first awaited: a signal during startup
/// then ends the process cleanly too (giving leadership up) instead of
/// killing it.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    }
}
