//! Assembles a Wharf server from its parts: opens the state store and the
//! blob directory, builds the HTTP router (registry at `/v2/`, admin API at
//! `/api/v1/`), binds the listener and runs background jobs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wharf_server::ServerError> {
//! let config = wharf_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), "/tmp/wharf".into());
//! let server = wharf_server::Server::bind(config).await?;
//! println!("listening on http://{}", server.local_addr());
//! server.run(std::future::pending()).await
//! # }
//! ```

mod api;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use wharf_blob::BlobStore;
use wharf_registry::{GcOptions, Registry, RegistryConfig};
use wharf_store::{RedbStore, RedbStoreOptions, Store};

/// Everything a server needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory holding the state file and blobs.
    pub data_dir: PathBuf,
    /// Registry limits and garbage-collection grace.
    pub registry: RegistryConfig,
    /// How often garbage collection runs; `None` disables the schedule.
    pub gc_interval: Option<Duration>,
}

impl ServerConfig {
    /// Defaults for everything but the address and data directory.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            listen,
            data_dir,
            registry: RegistryConfig::default(),
            gc_interval: Some(Duration::from_secs(6 * 3600)),
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
    /// The listener failed.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A server bound to its address, ready to run.
pub struct Server {
    listener: TcpListener,
    router: Router,
    registry: Arc<Registry>,
    gc_interval: Option<Duration>,
}

impl Server {
    /// Opens state and blobs under the data directory and binds the listener.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| ServerError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(
            &data_dir.join("state.redb"),
            RedbStoreOptions::default(),
        )?);
        let blobs = BlobStore::open(data_dir.join("registry"))?;
        let registry = Arc::new(Registry::new(store, blobs, config.registry.clone()));
        let router = app(registry.clone());
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Listen {
                    addr: config.listen,
                    source,
                })?;
        Ok(Server {
            listener,
            router,
            registry,
            gc_interval: config.gc_interval,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown` completes, then drains open connections.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let addr = self.local_addr();
        if let Some(interval) = self.gc_interval {
            tokio::spawn(collect_garbage_periodically(
                self.registry.clone(),
                interval,
            ));
        }
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| ServerError::Listen { addr, source })
    }
}

/// The full HTTP surface over one registry.
pub fn app(registry: Arc<Registry>) -> Router {
    wharf_registry::http::router(registry.clone()).merge(api::router(registry))
}

async fn collect_garbage_periodically(registry: Arc<Registry>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let options = GcOptions {
            grace: registry.config().gc_grace,
            dry_run: false,
        };
        if let Err(err) = registry.collect_garbage(options).await {
            tracing::warn!(error = %err, "scheduled garbage collection failed");
        }
    }
}
