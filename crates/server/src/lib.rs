//! Assembles a Wharf server from its parts: opens the state store, the blob
//! directory and the token key, creates the first administrator, builds the
//! HTTP router (registry at `/v2/`, token server at `/service/token`, API at
//! `/api/v1/`, the dashboard at `/` and `/ui/`), binds the listener and runs background jobs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wharf_server::ServerError> {
//! let config = wharf_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), "/tmp/wharf".into());
//! let server = wharf_server::Server::bind(config).await?;
//! println!("listening on http://{}", server.local_addr());
//! server.run(std::future::pending()).await
//! # }
//! ```

mod alerts;
mod api;
mod commit_specs;
mod image_layers;
mod listener;
mod machine_join;
mod p2p;
mod pod_committer;
mod preheats;
mod proxy_cache;
mod registry_auth;
mod telemetry;
mod token_endpoint;

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use listener::LingeringListener;
use tokio::net::TcpListener;
use tokio_util::task::AbortOnDropHandle;
use wharf_audit::{AuditEvent, Outcome};
use wharf_audit::{AuditLog, AuditOptions};
use wharf_auth::{Identity, IdentityConfig, TokenKeys};
use wharf_blob::BlobStore;
use wharf_control::{
    Candidate, ConfigObjects, ControlPlane, Objects, PoolAutoscaler, PoolScaleAction,
};
use wharf_registry::http::Gate;
use wharf_registry::{GcOptions, Registry, RegistryConfig};
use wharf_replication::{
    Replication, ReplicationOptions, Report, SecretBox, State as ReplicationState,
};
use wharf_store::{RedbStore, RedbStoreOptions, Store};
use wharf_store_etcd::{EtcdStore, EtcdStoreOptions};

pub use alerts::{
    DEFAULT_ALERT_EVAL_INTERVAL, DELIVERY_HEADER, RetryPolicy, SIGNATURE_HEADER, webhook_signature,
};
pub use api::{Access, InventoryAction, RouteInfo, route_table};

/// Everything a server needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory holding the state file, blobs and the token key.
    pub data_dir: PathBuf,
    /// Registry limits and garbage-collection grace.
    pub registry: RegistryConfig,
    /// Token lifetimes, service name, login throttling.
    pub identity: IdentityConfig,
    /// How often garbage collection runs; `None` disables the schedule.
    pub gc_interval: Option<Duration>,
    /// Whether scheduled collections also delete untagged manifests.
    pub gc_delete_untagged: bool,
    /// Password of the `admin` account created on first start; generated
    /// (and returned by [`Server::bind`]) when `None`.
    pub admin_password: Option<String>,
    /// The URL clients reach this server at (for token realms); by default
    /// taken from each request's `Host`.
    pub public_url: Option<String>,
    /// How long audit events are kept.
    pub audit_retention: Duration,
    /// Where state lives.
    pub store: StoreLocation,
    /// Scheduler settings.
    pub scheduler: wharf_scheduler::SchedulerConfig,
    /// This registry's instance id (`[a-z0-9-]`), fixed at the first
    /// start; generated when `None`. Replicated writes carry it as their origin.
    pub instance: Option<String>,
    /// Replication timings.
    pub replication: ReplicationOptions,
    /// Node lease and eviction of the pods of dead nodes.
    pub failover: wharf_control::EvictionConfig,
    /// Where services' cluster IPs are allocated.
    pub service_range: wharf_api::Subnet,
    /// How often autoscalers are synced.
    pub hpa_sync_period: Duration,
    /// The metrics store's budget, per-endpoint series limit and retentions.
    pub metrics: wharf_tsdb::TsdbConfig,
    /// How often the leader evaluates alert rules.
    pub alert_eval_interval: Duration,
    /// How alert notifications are retried.
    pub alert_retry: RetryPolicy,
}

/// The state store a server uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// `state.redb` in the data directory (one server).
    Embedded,
    /// An etcd cluster (several servers).
    Etcd(Vec<String>),
}

impl std::str::FromStr for StoreLocation {
    type Err = String;

    /// `embedded`, or `etcd://host:port[,host:port...]`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "embedded" {
            return Ok(StoreLocation::Embedded);
        }
        let hosts = text.strip_prefix("etcd://").ok_or_else(|| {
            format!("invalid store {text:?}: use embedded or etcd://host:port[,host:port...]")
        })?;
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| format!("http://{h}"))
            .collect();
        if endpoints.is_empty() {
            return Err(format!("invalid store {text:?}: no etcd endpoint"));
        }
        Ok(StoreLocation::Etcd(endpoints))
    }
}

impl ServerConfig {
    /// Defaults for everything but the address and data directory.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            listen,
            data_dir,
            registry: RegistryConfig::default(),
            identity: IdentityConfig::default(),
            gc_interval: Some(Duration::from_secs(6 * 3600)),
            gc_delete_untagged: false,
            admin_password: None,
            public_url: None,
            audit_retention: Duration::from_secs(90 * 24 * 3600),
            store: StoreLocation::Embedded,
            scheduler: wharf_scheduler::SchedulerConfig::default(),
            instance: None,
            replication: ReplicationOptions::default(),
            failover: wharf_control::EvictionConfig::default(),
            service_range: wharf_api::Subnet::parse(wharf_control::DEFAULT_SERVICE_RANGE)
                .expect("the default range parses"),
            hpa_sync_period: wharf_control::DEFAULT_HPA_SYNC_PERIOD,
            metrics: wharf_tsdb::TsdbConfig::default(),
            alert_eval_interval: DEFAULT_ALERT_EVAL_INTERVAL,
            alert_retry: RetryPolicy::default(),
        }
    }
}

/// Why a server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory is unusable.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The state store failed to open.
    #[error("state store: {0}")]
    Store(#[from] wharf_store::StoreError),
    /// The blob directory failed to open.
    #[error("blob store: {0}")]
    Blobs(#[from] wharf_blob::BlobError),
    /// Identities or the token key failed.
    #[error("identities: {0}")]
    Auth(#[from] wharf_auth::AuthError),
    /// A setting is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The key Secrets are sealed with is unusable.
    #[error("secrets: {0}")]
    Seal(#[from] wharf_seal::SealError),
    /// The metrics store failed to open.
    #[error("metrics: {0}")]
    Metrics(#[from] wharf_tsdb::TsdbError),
    /// Replication could not start.
    #[error("replication: {0}")]
    Replication(#[from] wharf_replication::ReplicationError),
    /// The listener failed.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The client's address, when the listener recorded it.
pub(crate) struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let connect = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>();
        Ok(ClientAddr(connect.map(|c| c.0.ip())))
    }
}

/// The services one server runs, shared by its handlers.
pub(crate) struct AppState {
    pub identity: Arc<Identity>,
    pub registry: Arc<Registry>,
    pub audit: AuditLog,
    pub control: ControlPlane,
    /// ConfigMaps and Secrets (Secret data sealed at rest).
    pub config: ConfigObjects,
    pub replication: Replication,
    /// Where registry writes are announced (audit log, replication): the
    /// API's deletes go there as `/v2/` deletes do.
    pub registry_events: Arc<dyn wharf_registry::http::EventSink>,
    /// Becomes `true` when the server shuts down: watch streams end then,
    /// so that graceful shutdown does not wait on them forever.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Node and container metrics pushed to this server.
    pub metrics: Arc<wharf_tsdb::Tsdb>,
    /// This server's own counters, for `/metrics`.
    pub telemetry: Arc<telemetry::ServerMetrics>,
    /// Seals alert receivers' secrets (the key of Secrets).
    pub alert_secrets: SecretBox,
    /// Minute-level cost history (`<data-dir>/cost`), written by the
    /// cost recorder while this server leads.
    pub cost_history: wharf_control::cost::CostHistory,
    /// The component flow's pinned Deployment specs, in the registry.
    pub commit_specs: Arc<dyn wharf_control::SpecStore>,
    /// The P2P tracker, piece manifests and peer grants.
    pub p2p: p2p::P2pService,
    /// Whether the dashboard's session cookie is marked `Secure`: the
    /// server is reached over HTTPS (its public URL says so).
    pub secure_cookies: bool,
}

/// A server's services and router, before it listens. Tests drive the
/// router in-process.
pub struct App {
    /// The whole HTTP surface.
    pub router: Router,
    /// The registry service.
    pub registry: Arc<Registry>,
    /// The identity service.
    pub identity: Arc<Identity>,
    /// The audit log.
    pub audit: AuditLog,
    /// The control plane (cluster objects).
    pub control: ControlPlane,
    /// Replication to and from other registries.
    pub replication: Replication,
    /// Node and container metrics pushed to this server (not shared with
    /// other servers of an etcd cluster).
    pub metrics: Arc<wharf_tsdb::Tsdb>,
    /// Where the component flow keeps the pinned Deployments' specs (this
    /// server's registry); given to `ControlPlane::with_commit_flow` with
    /// the pod committer.
    pub commit_specs: Arc<dyn wharf_control::SpecStore>,
    /// The generated `admin` password, on the first start only.
    pub generated_admin_password: Option<String>,
    /// This server's own id (`server.id` in the data directory): the same
    /// across restarts, different for every data directory. It campaigns
    /// for leadership under it.
    pub server_id: String,
    /// Tells long-lived responses (watches) to end.
    stop: tokio::sync::watch::Sender<bool>,
    /// Sends alert notifications (from the leader's evaluator).
    alert_sender: alerts::Sender,
    /// How often the leader evaluates alert rules.
    alert_eval_interval: Duration,
    /// Where the scheduler reads the layers of images hosted here.
    image_layers: Arc<image_layers::RegistryImageLayers>,
    /// Grows and shrinks cloud pools (on the leader).
    pool_autoscaler: Arc<PoolAutoscaler>,
    /// The join commands it gives new machines (told the listener's address).
    machine_joins: Arc<machine_join::MachineJoinCommands>,
    /// Where the leader's cost recorder writes.
    cost_history: wharf_control::cost::CostHistory,
    /// `server.id`, locked while the server runs: one process per data
    /// directory, so one process per server id.
    _lock: std::fs::File,
}

impl App {
    /// Replaces the component flow's pod committer (by default this
    /// server's own `wharf commit POD` path), keeping the pinned specs in
    /// this registry: tests commit without agents with it.
    pub fn set_pod_committer(
        &mut self,
        committer: Arc<dyn wharf_control::PodCommitter>,
        timing: wharf_control::FlowTiming,
    ) {
        self.control =
            self.control
                .clone()
                .with_commit_flow(committer, self.commit_specs.clone(), timing);
    }

    /// Opens everything under the data directory and builds the router.
    pub async fn open(config: &ServerConfig) -> Result<App, ServerError> {
        let data_dir = &config.data_dir;
        let data_dir_error = |source| ServerError::DataDir {
            path: data_dir.display().to_string(),
            source,
        };
        // Password hashes, keys, the audit log and private projects' blobs.
        wharf_fs::private_dir(data_dir).map_err(data_dir_error)?;
        let (server_id, lock) = server_id(data_dir)?;
        let telemetry = Arc::new(telemetry::ServerMetrics::default());
        let backend: Arc<dyn Store> = match &config.store {
            StoreLocation::Embedded => Arc::new(RedbStore::open(
                &data_dir.join("state.redb"),
                RedbStoreOptions::default(),
            )?),
            StoreLocation::Etcd(endpoints) => {
                Arc::new(EtcdStore::connect(endpoints, EtcdStoreOptions::default()).await?)
            }
        };
        let store: Arc<dyn Store> =
            Arc::new(telemetry::CountedStore::new(backend, telemetry.clone()));
        let keys = TokenKeys::load_or_create(&data_dir.join("token.key"))?;
        let identity = Arc::new(Identity::new(store.clone(), keys, config.identity.clone()));
        let generated_admin_password = identity
            .bootstrap_admin(config.admin_password.clone())
            .await?;
        let audit = AuditLog::start(
            store.clone(),
            AuditOptions {
                retention: config.audit_retention,
                ..AuditOptions::default()
            },
        );
        let blobs = BlobStore::open(data_dir.join("registry"))?;
        let p2p = p2p::P2pService::new(
            identity.clone(),
            store.clone(),
            server_id.clone(),
            blobs.clone(),
            telemetry.clone(),
        );
        let registry_config = RegistryConfig {
            instance: instance_id(store.as_ref(), config.instance.as_deref()).await?,
            ..config.registry.clone()
        };
        let registry = Arc::new(
            Registry::new(store.clone(), blobs, registry_config)
                .with_quotas(Arc::new(registry_auth::ProjectQuotas(identity.clone()))),
        );
        let proxies = Arc::new(proxy_cache::ProjectProxies::new(identity.clone()));
        let secrets = SecretBox::load_or_create(&data_dir.join("replication.key"))?;
        let reports = audit.clone();
        let jobs = telemetry.clone();
        let replication = Replication::new(
            store.clone(),
            registry.clone(),
            secrets,
            config.replication.clone(),
        )
        .with_reports(Arc::new(move |report| {
            if let Report::JobFinished { state, bytes, .. } = &report {
                jobs.replication_job(&format!("{state:?}").to_lowercase(), *bytes);
            }
            reports.record(audit_event_of(report))
        }))
        .with_project_creator(project_creator(identity.clone()))
        .with_proxy_projects(proxies.clone());
        let registry_events: Arc<dyn wharf_registry::http::EventSink> =
            Arc::new(registry_auth::EventFanOut(vec![
                Arc::new(registry_auth::AuditSink(audit.clone())),
                replication.event_sink(),
                preheats::trigger(wharf_control::Objects::new(store.clone())),
            ]));
        let gate = Gate {
            authorizer: Arc::new(registry_auth::TokenAuthorizer {
                identity: identity.clone(),
                audit: audit.clone(),
                public_url: config.public_url.clone(),
            }),
            events: registry_events.clone(),
            pull_through: Arc::new(proxy_cache::pull_through_cache(
                registry.clone(),
                proxies,
                &replication,
                audit.clone(),
            )),
        };
        let image_layers = Arc::new(image_layers::RegistryImageLayers::new(
            registry.clone(),
            config.public_url.as_deref(),
        ));
        // The component flow: its specs go to this registry, its pods are
        // committed through this server's `wharf commit POD` path.
        let commit_specs: Arc<dyn wharf_control::SpecStore> = Arc::new(
            commit_specs::RegistrySpecStore::new(registry.clone(), registry_events.clone()),
        );
        let pod_committer = Arc::new(pod_committer::ServerPodCommitter::default());
        let control = ControlPlane::new(store.clone(), config.scheduler)
            .with_commit_flow(
                pod_committer.clone(),
                commit_specs.clone(),
                wharf_control::FlowTiming::default(),
            )
            .with_image_layers(image_layers.clone())
            .with_eviction(config.failover)
            .with_service_range(config.service_range)
            .with_hpa_sync_period(config.hpa_sync_period)
            .with_scale_reports(scale_auditor(audit.clone()))
            .with_scheduling_reports(telemetry.scheduling_reporter());
        let config_objects = ConfigObjects::new(
            control.objects().clone(),
            SecretBox::load_or_create(&data_dir.join("secrets.key"))?,
        );
        let metrics = Arc::new(wharf_tsdb::Tsdb::open(
            &data_dir.join("metrics"),
            config.metrics.clone(),
        )?);
        let alert_secrets = SecretBox::load_or_create(&data_dir.join("secrets.key"))?;
        let cost_history =
            wharf_control::cost::CostHistory::open(&data_dir.join("cost")).map_err(|source| {
                ServerError::DataDir {
                    path: data_dir.join("cost").display().to_string(),
                    source,
                }
            })?;
        let alert_sender = alerts::Sender {
            store: store.clone(),
            secrets: alert_secrets.clone(),
            http: reqwest::Client::new(),
            retry: config.alert_retry,
        };
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let machine_joins = Arc::new(machine_join::MachineJoinCommands::new(
            identity.clone(),
            config.public_url.clone(),
        ));
        let pool_autoscaler = Arc::new(
            pool_autoscaler(
                control.objects().clone(),
                config_objects.clone(),
                audit.clone(),
            )
            .with_join_commands(machine_joins.clone()),
        );
        let state = Arc::new(AppState {
            identity: identity.clone(),
            registry: registry.clone(),
            audit: audit.clone(),
            control: control.clone(),
            config: config_objects,
            replication: replication.clone(),
            registry_events,
            stopping,
            metrics: metrics.clone(),
            telemetry: telemetry.clone(),
            alert_secrets,
            cost_history: cost_history.clone(),
            commit_specs: commit_specs.clone(),
            p2p,
            secure_cookies: config
                .public_url
                .as_deref()
                .is_some_and(|url| url.starts_with("https://")),
        });
        pod_committer.attach(&state);
        let token_routes = Router::new()
            .route(
                "/service/token",
                get(token_endpoint::get_token).post(token_endpoint::post_token),
            )
            .with_state(state.clone());
        // The store, keys and blobs were created (or existed) with the
        // process umask: narrow them now, also on installs from before.
        make_entries_private(data_dir).map_err(data_dir_error)?;
        let router = wharf_registry::http::router(registry.clone(), gate)
            .merge(token_routes)
            .merge(api::router(state))
            .merge(wharf_dashboard::router())
            .layer(axum::middleware::from_fn_with_state(
                telemetry,
                telemetry::http::observe,
            ));
        Ok(App {
            router,
            commit_specs,
            registry,
            identity,
            audit,
            control,
            replication,
            metrics,
            generated_admin_password,
            server_id,
            stop,
            alert_sender,
            alert_eval_interval: config.alert_eval_interval,
            image_layers,
            pool_autoscaler,
            machine_joins,
            cost_history,
            _lock: lock,
        })
    }

    /// Marks the server as shutting down: `/readyz` answers 503 from now
    /// on and watch streams end.
    pub fn begin_shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

/// A server bound to its address, ready to run.
pub struct Server {
    listener: TcpListener,
    app: App,
    gc_interval: Option<Duration>,
    gc_delete_untagged: bool,
}

impl Server {
    /// Opens state and blobs under the data directory and binds the listener.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let app = App::open(&config).await?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Listen {
                    addr: config.listen,
                    source,
                })?;
        if let Ok(addr) = listener.local_addr() {
            app.image_layers.listening_on(addr.port());
            app.machine_joins.listening_on(addr, &hostname());
        }
        Ok(Server {
            listener,
            app,
            gc_interval: config.gc_interval,
            gc_delete_untagged: config.gc_delete_untagged,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The `admin` password generated on this first start, to be shown once.
    pub fn generated_admin_password(&self) -> Option<&str> {
        self.app.generated_admin_password.as_deref()
    }

    /// Serves until `shutdown` completes, then drains open connections and
    /// flushes the audit log.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let addr = self.local_addr();
        if let Some(interval) = self.gc_interval {
            tokio::spawn(collect_garbage_periodically(
                self.app.registry.clone(),
                interval,
                self.gc_delete_untagged,
            ));
        }
        // Every server turns its registry events into replication jobs;
        // controllers and the replication executor run only while this
        // server leads (one leader per etcd).
        let _metrics_flush = AbortOnDropHandle::new(tokio::spawn(flush_metrics_periodically(
            self.app.metrics.clone(),
        )));
        let intake = self.app.replication.clone();
        let _intake =
            AbortOnDropHandle::new(tokio::spawn(async move { intake.run_intake().await }));
        let replication = self.app.replication.clone();
        let candidate =
            Candidate::new(self.app.server_id.clone(), format!("{}:{addr}", hostname()));
        let objects = self.app.control.objects().clone();
        let metrics = self.app.metrics.clone();
        let sender = self.app.alert_sender.clone();
        let interval = self.app.alert_eval_interval;
        let pools = self.app.pool_autoscaler.clone();
        let pod_metrics = self.app.control.pod_metrics().clone();
        let cost_history = self.app.cost_history.clone();
        let controllers = self.app.control.start_with(candidate, move || {
            let replication = replication.clone();
            let pools = pools.clone();
            let alerts = alerts::AlertEvaluator::new(
                objects.clone(),
                metrics.clone(),
                sender.clone(),
                interval,
            );
            let cost = wharf_control::cost::CostRecorder::new(
                objects.clone(),
                pod_metrics.clone(),
                cost_history.clone(),
            );
            let budgets = alerts::BudgetAlerts::new(
                wharf_control::cost::BudgetEvaluator::new(objects.clone(), cost_history.clone()),
                objects.clone(),
                sender.clone(),
                interval,
            );
            async move {
                tokio::join!(
                    replication.run(),
                    alerts.run(),
                    pools.run(),
                    cost.run(),
                    budgets.run()
                );
            }
        });
        let stop = self.app.stop.clone();
        // Each connection's requests carry the client's address, for audit.
        let router = self.app.router.clone();
        let connections = tower::service_fn(
            move |incoming: axum::serve::IncomingStream<'_, LingeringListener>| {
                let client = axum::extract::ConnectInfo(*incoming.remote_addr());
                let service = tower::ServiceExt::map_request(
                    router.clone(),
                    move |mut request: axum::extract::Request| {
                        request.extensions_mut().insert(client);
                        request
                    },
                );
                std::future::ready(Ok::<_, std::convert::Infallible>(service))
            },
        );
        let served = axum::serve(LingeringListener(self.listener), connections)
            .with_graceful_shutdown(async move {
                shutdown.await;
                // `/readyz` turns 503 and watches end at once; leadership
                // goes next, so another server takes over while this one
                // drains its connections.
                let _ = stop.send(true);
                controllers.stop().await;
            })
            .await
            .map_err(|source| ServerError::Listen { addr, source });
        if let Err(err) = self.app.audit.flush().await {
            tracing::warn!(error = %err, "audit events lost at shutdown");
        }
        let metrics = self.app.metrics.clone();
        match tokio::task::spawn_blocking(move || metrics.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "metrics history lost at shutdown"),
            Err(err) => tracing::warn!(error = %err, "metrics history lost at shutdown"),
        }
        served
    }
}

/// Gives every file directly in `dir` mode 0600 and every directory 0700
/// (deeper entries are out of reach once these are).
fn make_entries_private(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        let wanted = if meta.is_dir() { 0o700 } else { 0o600 };
        if meta.permissions().mode() & 0o777 != wanted {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(wanted))?;
        }
    }
    Ok(())
}

/// Creates projects that pull replication brings artifacts into: private,
/// owned by `admin`, as Harbor does for replication destinations.
fn project_creator(identity: Arc<Identity>) -> wharf_replication::ProjectCreator {
    Arc::new(move |name: String| {
        let identity = identity.clone();
        Box::pin(async move {
            // Only the creator's name is recorded (as the project's admin
            // member); no token is issued, so no account uid is needed.
            let admin = wharf_auth::Principal::User {
                name: "admin".into(),
                uid: String::new(),
                admin: true,
            };
            match identity.create_project(&admin, &name, false, None).await {
                Ok(_) | Err(wharf_auth::AuthError::Conflict(_)) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        })
    })
}

/// The audit record of what replication reports.
fn audit_event_of(report: Report) -> AuditEvent {
    match report {
        Report::Conflict(why) => AuditEvent::new(
            "replication",
            "replication.conflict",
            "registry",
            Outcome::Success,
        )
        .with_detail(why),
        Report::JobFinished {
            job,
            policy,
            state,
            summary,
            ..
        } => {
            let outcome = match state {
                ReplicationState::Succeeded | ReplicationState::Skipped => Outcome::Success,
                _ => Outcome::Failed,
            };
            AuditEvent::new(
                "replication",
                "replication.job",
                format!("{policy}/{job}"),
                outcome,
            )
            .with_detail(format!("{state:?}: {summary}").to_lowercase())
        }
    }
}

/// Records the autoscaler's scales in the audit log, with its reason as
/// the detail, as any other change to a deployment.
fn scale_auditor(audit: AuditLog) -> wharf_control::ScaleReporter {
    Arc::new(move |report: wharf_control::ScaleReport| {
        let resource = format!("{}/deployment/{}", report.project, report.deployment);
        let actor = format!("horizontal-pod-autoscaler/{}", report.hpa);
        audit.record(
            AuditEvent::new(actor, "deployment.scale", resource, Outcome::Success)
                .with_detail(report.message),
        );
    })
}

/// The pool autoscaler, its provider calls through one HTTP client and its
/// actions in the audit log.
fn pool_autoscaler(objects: Objects, secrets: ConfigObjects, audit: AuditLog) -> PoolAutoscaler {
    let http = reqwest::Client::new();
    let providers: wharf_control::ProviderFactory = Arc::new(move |spec, credentials| {
        wharf_provider::provider_for(spec, credentials, http.clone())
    });
    PoolAutoscaler::new(objects, secrets, providers).with_reports(Arc::new(move |report| {
        let outcome = match report.action {
            PoolScaleAction::Failed => Outcome::Failed,
            _ => Outcome::Success,
        };
        let resource = format!("pool/{}", report.pool);
        audit.record(
            AuditEvent::new("pool-autoscaler", report.action.as_str(), resource, outcome)
                .with_detail(report.message),
        );
    }))
}

/// Key of this registry's instance id.
const INSTANCE_KEY: &str = "/system/instance";

/// The instance id stored at the first start: `wanted`, or a generated one.
/// Later starts keep the stored id (origins recorded elsewhere name it).
async fn instance_id(store: &dyn Store, wanted: Option<&str>) -> Result<String, ServerError> {
    use wharf_store::StoreExt;
    let invalid =
        |e: wharf_registry::RegistryError| ServerError::Config(format!("instance id: {e}"));
    if let Some(kv) = store.get(INSTANCE_KEY).await? {
        let stored = String::from_utf8_lossy(&kv.value).into_owned();
        if wanted.is_some_and(|w| w != stored) {
            tracing::warn!(stored = %stored, "keeping the instance id chosen at the first start");
        }
        return Ok(stored);
    }
    let id = match wanted {
        Some(id) => id.to_string(),
        None => format!("w{:010x}", rand::random::<u64>() >> 24),
    };
    wharf_registry::Origin::check_instance(&id).map_err(invalid)?;
    if store
        .create(INSTANCE_KEY, id.clone().into_bytes())
        .await?
        .is_none()
    {
        // Another server of the same cluster stored one first.
        return Box::pin(instance_id(store, None)).await;
    }
    Ok(id)
}

/// The file holding this server's id in its data directory.
const SERVER_ID_FILE: &str = "server.id";

/// This server's id, created at the first start (32 hex digits), and its
/// file, locked for as long as it is held: a second process on the same
/// data directory is refused, so no two running servers share an id.
fn server_id(data_dir: &std::path::Path) -> Result<(String, std::fs::File), ServerError> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(SERVER_ID_FILE);
    let failed = |source: std::io::Error| ServerError::DataDir {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(failed)?;
    file.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => failed(std::io::Error::other(
            "in use by another running wharf server (one data directory per server)",
        )),
        std::fs::TryLockError::Error(e) => failed(e),
    })?;
    let mut id = String::new();
    file.read_to_string(&mut id).map_err(failed)?;
    let id = id.trim().to_string();
    if id.is_empty() {
        let id = format!("{:032x}", rand::random::<u128>());
        file.rewind().map_err(failed)?;
        file.write_all(id.as_bytes()).map_err(failed)?;
        file.sync_all().map_err(failed)?;
        return Ok((id, file));
    }
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ServerError::Config(format!(
            "{} does not hold a server id (32 hex digits); remove it to get a new one",
            path.display()
        )));
    }
    Ok((id, file))
}

/// This machine's name, to tell servers apart in the leader key.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "wharf".into())
}

/// How often closed metric buckets are written to disk: at most this much
/// closed history is lost in a crash.
const METRICS_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

async fn flush_metrics_periodically(metrics: Arc<wharf_tsdb::Tsdb>) {
    let mut ticker = tokio::time::interval(METRICS_FLUSH_INTERVAL);
    loop {
        ticker.tick().await;
        let metrics = metrics.clone();
        let flushed = tokio::task::spawn_blocking(move || metrics.flush(api::unix_now())).await;
        if let Ok(Err(err)) = flushed {
            tracing::warn!(error = %err, "writing metrics history failed");
        }
    }
}

async fn collect_garbage_periodically(
    registry: Arc<Registry>,
    interval: Duration,
    delete_untagged: bool,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let options = GcOptions {
            delete_untagged,
            ..GcOptions::with_grace(registry.config().gc_grace)
        };
        if let Err(err) = registry.collect_garbage(options).await {
            tracing::warn!(error = %err, "scheduled garbage collection failed");
        }
    }
}
