//! Wiring: bind listeners, open the store directory, spawn roles, shut down.
//!
//! [`App::start`] binds everything first (so a bad address fails fast and
//! tests can use port 0), then spawns one task per listener, all owned by
//! the `App` and stopped by one cancellation token.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::publisher::Publisher;
use crate::store::{Store, StoreError};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
    /// The proxy's origin client could not be built.
    #[error("proxy: {0}")]
    ProxyClient(#[from] crate::fetch::origin::ClientError),
    /// The publisher could not start (server secret file, upstream TLS trust).
    #[error("publisher: {0}")]
    Publisher(#[from] crate::publisher::InitError),
    /// The store could not be opened.
    #[error("cannot open store {path}: {source}")]
    StoreDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: StoreError,
    },
}

/// A running daemon.
#[derive(Debug)]
pub struct App {
    /// Where the admin listener is bound (useful when configured with port 0).
    pub admin_addr: SocketAddr,
    /// Where the branch proxy listens, when `[proxy]` is configured.
    pub proxy_addr: Option<SocketAddr>,
    /// Where the PCCRR server listens, when `[peer]` is configured.
    pub peer_addr: Option<SocketAddr>,
    /// Where the publisher listens, when `[publisher]` is configured.
    pub publisher_addr: Option<SocketAddr>,
    /// Shared metrics.
    pub metrics: Arc<Metrics>,
    /// The block store shared by every role (clone it freely).
    pub store: Store,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl App {
    /// Bind every listener and start every configured role.
    pub async fn start(config: Config) -> Result<App, StartError> {
        let store = Store::open(&config.store.path, config.store.max_size)
            .await
            .map_err(|source| StartError::StoreDir {
                path: config.store.path.clone(),
                source,
            })?;
        let metrics = Arc::new(Metrics::new());
        metrics.register_store(store.metrics());
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();

        let admin_listener = bind("admin", config.admin.listen).await?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                what: "admin",
                addr: config.admin.listen,
                source,
            })?;
        let mut roles = vec!["admin"];

        let mut proxy_addr = None;
        if let Some(pc) = &config.proxy {
            let listener = bind("proxy", pc.listen).await?;
            proxy_addr = Some(listener.local_addr().map_err(|source| StartError::Bind {
                what: "proxy",
                addr: pc.listen,
                source,
            })?);
            let planner = crate::fetch::Planner::new(
                Arc::new(store.clone()),
                Vec::new(),
                crate::fetch::PlannerOptions {
                    origin_parallelism: pc.origin_parallelism as usize,
                },
                metrics.clone(),
            );
            let proxy = crate::proxy::Proxy::new(pc, planner, metrics.clone())?;
            tasks.spawn(crate::net::serve(
                listener,
                move |req, peer| {
                    let proxy = proxy.clone();
                    async move { proxy.handle(req, peer).await }
                },
                shutdown.child_token(),
            ));
            roles.push("proxy");
        }

        let mut peer_addr = None;
        if let Some(pc) = &config.peer {
            let listener = bind("peer", pc.listen).await?;
            peer_addr = Some(listener.local_addr().map_err(|source| StartError::Bind {
                what: "peer",
                addr: pc.listen,
                source,
            })?);
            if pc.discovery {
                tracing::warn!("peer.discovery requested, but discovery is not in this build yet; serving PCCRR only");
            }
            let server = crate::retrieval::RetrievalServer::new(
                Arc::new(store.clone()),
                crate::retrieval::ServerConfig {
                    crypto: pc.crypto,
                    allow_plaintext: pc.allow_plaintext,
                    max_active_per_client: pc.max_active_per_client,
                    ..Default::default()
                },
                metrics.clone(),
            );
            tasks.spawn(crate::net::serve(
                listener,
                move |req, peer| server.clone().handle(req, peer),
                shutdown.child_token(),
            ));
            roles.push("peer");
        }

        let mut publisher_addr = None;
        if let Some(pcfg) = config.publisher.clone() {
            let listener = bind("publisher", pcfg.listen).await?;
            let addr = listener.local_addr().map_err(|source| StartError::Bind {
                what: "publisher",
                addr: pcfg.listen,
                source,
            })?;
            let publisher = Arc::new(Publisher::new(pcfg, metrics.clone())?);
            tasks.spawn(publisher.serve(listener, shutdown.child_token()));
            tracing::info!(publisher = %addr, "publisher listening");
            publisher_addr = Some(addr);
            roles.push("publisher");
        }

        let state = Arc::new(AdminState {
            metrics: metrics.clone(),
            ready: Default::default(),
            roles,
            started: Instant::now(),
            listeners: [
                ("admin", Some(admin_addr)),
                ("proxy", proxy_addr),
                ("peer", peer_addr),
                ("publisher", publisher_addr),
            ]
            .into_iter()
            .filter_map(|(role, addr)| Some((role, addr?)))
            .collect(),
            store: store.clone(),
        });
        {
            let state = state.clone();
            tasks.spawn(crate::net::serve(
                admin_listener,
                move |req, _peer| admin::handle(state.clone(), req),
                shutdown.child_token(),
            ));
        }
        tasks.spawn(flush_store_periodically(
            store.clone(),
            shutdown.child_token(),
        ));
        state.ready.store(true, Ordering::Release);
        tracing::info!(admin = %admin_addr, store = %config.store.path.display(), "branchcache started");
        Ok(App {
            admin_addr,
            proxy_addr,
            peer_addr,
            publisher_addr,
            metrics,
            store,
            shutdown,
            tasks,
        })
    }

    /// A token that stops the daemon when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Wait until the daemon stops (after [`shutdown_token`](Self::shutdown_token) fires),
    /// then flush and close the store.
    pub async fn wait(mut self) {
        while let Some(res) = self.tasks.join_next().await {
            if let Err(e) = res {
                tracing::error!(error = %e, "task failed");
            }
        }
        if let Err(e) = self.store.close().await {
            tracing::error!(error = %e, "closing the store failed");
        }
    }

    /// Stop accepting, drain, and wait for every task.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }
}

/// How often the store's lazily kept state (LRU order) is persisted when
/// there are no writes to carry it: bounds what a crash forgets.
const STORE_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

async fn flush_store_periodically(store: Store, stop: CancellationToken) {
    let mut tick = tokio::time::interval(STORE_FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = store.flush().await {
                    tracing::warn!(error = %e, "periodic store flush failed");
                }
            }
        }
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}
