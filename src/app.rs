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
    /// The hosted cache could not start (TLS files, replay store, listeners).
    #[error("hosted cache: {0}")]
    HostedCache(String),
    /// The upstream hosted cache's TLS trust could not be loaded.
    #[error("upstream_hosted_cache: {0}")]
    UpstreamHostedCache(#[from] crate::hosted_cache::tls::TlsError),
    /// No discovery interface could be chosen from `[peer] interfaces`.
    #[error("discovery: {0}")]
    DiscoveryInterfaces(#[from] crate::discovery::InterfaceError),
    /// The discovery sockets could not be set up.
    #[error(transparent)]
    Discovery(#[from] crate::discovery::DiscoveryError),
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
    /// The hosted cache's HTTP (PCHC v2 + PCCRR) listener, when configured.
    pub hosted_cache_http_addr: Option<SocketAddr>,
    /// The hosted cache's HTTPS (PCHC v1) listener, when configured.
    pub hosted_cache_https_addr: Option<SocketAddr>,
    /// Shared metrics.
    pub metrics: Arc<Metrics>,
    /// The block store shared by every role (clone it freely).
    pub store: Store,
    reloader: Reloader,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

/// Applies configuration reloads to a running [`App`]; cheap to clone, so a
/// signal task can hold it while [`App::wait`] owns the app.
#[derive(Debug, Clone)]
pub struct Reloader {
    inner: Arc<ReloadInner>,
}

#[derive(Debug)]
struct ReloadInner {
    /// What runs now (the last applied configuration).
    running: tokio::sync::Mutex<Config>,
    store: Store,
    metrics: Arc<Metrics>,
    proxy: Option<crate::proxy::Proxy>,
    publisher: Option<Arc<Publisher>>,
    fixed_peers: Option<crate::retrieval::SharedPeers>,
    hosted_cache: Option<crate::retrieval::SharedPeers>,
    offerer: Option<crate::hosted_cache::Offerer>,
    replay: Option<crate::hosted_cache::ReplayStore>,
    /// Wakes the hosted-cache probe when its address changed.
    probe_now: Arc<tokio::sync::Notify>,
}

impl Reloader {
    /// Compare `new` with the running configuration and apply what can
    /// change without a restart (see [`crate::reload`]); the log level is
    /// the caller's (it owns the subscriber). Returns what was applied and
    /// what waits for a restart.
    pub async fn reload(&self, new: &Config) -> crate::reload::ReloadPlan {
        use crate::reload::Change;
        use crate::retrieval::PeerRole;
        let r = &self.inner;
        let mut running = r.running.lock().await;
        let plan = crate::reload::plan(&running, new);
        for change in &plan.apply {
            match change {
                Change::LogLevel(_) => {}
                Change::StoreMaxSize(n) => {
                    if let Err(e) = r.store.set_max_size(*n).await {
                        tracing::warn!(error = %e, "store flush after the new size bound failed");
                    }
                }
                Change::ProxyUpstream(u) => {
                    if let Some(p) = &r.proxy {
                        p.set_upstream(u.clone());
                    }
                }
                Change::ProxyPeers(peers) => {
                    if let Some(f) = &r.fixed_peers {
                        f.set(peers.clone());
                    }
                    r.metrics.peers.configure(PeerRole::Peer, peers);
                }
                Change::PublisherUpstream(u) => {
                    if let Some(p) = &r.publisher {
                        p.set_upstream(u.clone());
                    }
                }
                Change::PublisherCacheSize(n) => {
                    if let Some(p) = &r.publisher {
                        p.set_cache_size(*n);
                    }
                }
                Change::ReplayMaxSize(n) => {
                    if let Some(replay) = &r.replay {
                        replay.set_max_size(*n);
                    }
                }
                Change::HostedCacheAddress {
                    http,
                    https,
                    server_name,
                } => {
                    if let Some(h) = &r.hosted_cache {
                        h.set(vec![*http]);
                    }
                    if let Some(o) = &r.offerer {
                        match rustls::pki_types::ServerName::try_from(server_name.clone()) {
                            Ok(name) => o.retarget(*http, *https, name),
                            Err(e) => {
                                tracing::warn!(error = %e, "upstream_hosted_cache.server_name not applied")
                            }
                        }
                    }
                    r.metrics.peers.configure(PeerRole::HostedCache, &[*http]);
                    r.probe_now.notify_one();
                }
            }
        }
        *running = crate::reload::running_after(&running, &plan);
        plan
    }
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

        // Bound before the proxy so discovery can advertise it and the
        // proxy's planner can ask discovered peers.
        let mut peer_listener = match &config.peer {
            Some(pc) => Some(bind_local("peer", pc.listen).await?),
            None => None,
        };
        let discovery = match (&config.peer, &peer_listener) {
            (Some(pc), Some((_, addr))) => {
                start_discovery(pc, *addr, &store, &metrics, &shutdown, &mut tasks)?
            }
            _ => None,
        };

        let mut peer_addr = None;
        if let (Some(pc), Some((listener, addr))) = (&config.peer, peer_listener.take()) {
            peer_addr = Some(addr);
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

        let mut proxy_addr = None;
        let (mut fixed_peers, mut hosted_cache_peers, mut offerer_handle, mut proxy_handle) =
            (None, None, None, None);
        if let Some(pc) = &config.proxy {
            let listener = bind("proxy", pc.listen).await?;
            proxy_addr = Some(listener.local_addr().map_err(|source| StartError::Bind {
                what: "proxy",
                addr: pc.listen,
                source,
            })?);
            let (sources, fixed, hosted) = block_sources(&config, discovery.clone(), &metrics);
            fixed_peers = fixed;
            hosted_cache_peers = hosted;
            let planner = crate::fetch::Planner::new(
                Arc::new(store.clone()),
                sources,
                crate::fetch::PlannerOptions {
                    origin_parallelism: pc.origin_parallelism as usize,
                },
                metrics.clone(),
            );
            if let (Some(up), Some(peer)) = (&config.upstream_hosted_cache, peer_addr) {
                if up.offer {
                    let tls = if up.version == 1 {
                        Some(crate::hosted_cache::tls::client_config(
                            up.ca_file.as_deref(),
                        )?)
                    } else {
                        None
                    };
                    let server_name = rustls::pki_types::ServerName::try_from(
                        up.server_name.clone(),
                    )
                    .map_err(|e| StartError::HostedCache(format!("upstream server_name: {e}")))?;
                    let (offerer, task) = crate::hosted_cache::Offerer::start(
                        crate::hosted_cache::OffererConfig {
                            version: up.version,
                            http_addr: up.address,
                            https_addr: up.https_address,
                            server_name,
                            pccrr_port: peer.port(),
                        },
                        crate::hosted_cache::OfferClient::new(tls),
                        metrics.clone(),
                        shutdown.child_token(),
                    );
                    offerer_handle = Some(offerer.clone());
                    planner.set_observer(Arc::new(offerer));
                    tasks.spawn(async move {
                        let _ = task.await;
                    });
                }
            }
            let fetches = planner.clone();
            let proxy = crate::proxy::Proxy::new(pc, planner, metrics.clone())?;
            proxy_handle = Some(proxy.clone());
            let drain = pc.shutdown_timeout;
            let direct = Arc::new(crate::proxy::DirectHits(proxy.clone()));
            let serve = crate::net::serve_on(
                listener,
                crate::net::Front::Direct(direct),
                move |req, peer| {
                    let proxy = proxy.clone();
                    async move { proxy.handle(req, peer).await }
                },
                crate::net::Limits::default(),
                shutdown.child_token(),
                drain,
            );
            // Shutdown: stop accepting, let in-flight requests finish, then
            // let segment fetches still running (e.g. for a client that went
            // away) land in the store, all within `shutdown_timeout`; the
            // store is flushed and closed after every task ends (`wait`).
            tasks.spawn(async move {
                let left = serve.await;
                if tokio::time::timeout(left, fetches.wait_idle())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        fetches = fetches.flights_in_progress(),
                        "segment fetches still running after shutdown_timeout; abandoning them"
                    );
                }
            });
            roles.push("proxy");
        }

        let mut publisher_addr = None;
        let mut publisher_handle = None;
        if let Some(pcfg) = config.publisher.clone() {
            let listener = bind("publisher", pcfg.listen).await?;
            let addr = listener.local_addr().map_err(|source| StartError::Bind {
                what: "publisher",
                addr: pcfg.listen,
                source,
            })?;
            let publisher = Arc::new(Publisher::new(pcfg, metrics.clone())?);
            publisher_handle = Some(publisher.clone());
            tasks.spawn(publisher.serve(listener, shutdown.child_token()));
            tracing::info!(publisher = %addr, "publisher listening");
            publisher_addr = Some(addr);
            roles.push("publisher");
        }

        let mut hosted_cache_http_addr = None;
        let mut hosted_cache_https_addr = None;
        let mut replay_handle = None;
        if let Some(hc) = &config.hosted_cache {
            let (server, replay) =
                start_hosted_cache(hc, &config, &store, &metrics, &shutdown).await?;
            replay_handle = Some(replay);
            hosted_cache_http_addr = server.http_addr();
            hosted_cache_https_addr = server.https_addr();
            tracing::info!(http = ?hosted_cache_http_addr, https = ?hosted_cache_https_addr, "hosted cache listening");
            tasks.spawn(server.join());
            roles.push("hosted_cache");
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
                ("hosted_cache_http", hosted_cache_http_addr),
                ("hosted_cache_https", hosted_cache_https_addr),
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
        let probe_now = Arc::new(tokio::sync::Notify::new());
        if let Some(hosted) = &hosted_cache_peers {
            tasks.spawn(probe_hosted_cache(
                hosted.clone(),
                metrics.clone(),
                probe_now.clone(),
                shutdown.child_token(),
            ));
        }
        let reloader = Reloader {
            inner: Arc::new(ReloadInner {
                running: tokio::sync::Mutex::new(config.clone()),
                store: store.clone(),
                metrics: metrics.clone(),
                proxy: proxy_handle,
                publisher: publisher_handle,
                fixed_peers,
                hosted_cache: hosted_cache_peers,
                offerer: offerer_handle,
                replay: replay_handle,
                probe_now,
            }),
        };
        state.ready.store(true, Ordering::Release);
        tracing::info!(admin = %admin_addr, store = %config.store.path.display(), "branchcache started");
        Ok(App {
            admin_addr,
            proxy_addr,
            peer_addr,
            publisher_addr,
            hosted_cache_http_addr,
            hosted_cache_https_addr,
            metrics,
            store,
            reloader,
            shutdown,
            tasks,
        })
    }

    /// The handle that applies configuration reloads (SIGHUP).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
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

/// The planner's sources before the origin, in order: the upstream hosted
/// cache, fixed peers (`[proxy] peers`), then peers found by discovery. The
/// hosted cache's address and the fixed peers come back as handles a reload
/// can replace (the fixed-peer source exists even with no peer configured,
/// so a reload can add some), and are entered in the peer book.
fn block_sources(
    config: &Config,
    discovered: Option<Arc<dyn crate::retrieval::PeerLocator>>,
    metrics: &Arc<Metrics>,
) -> (
    Vec<Arc<dyn crate::fetch::BlockSource>>,
    Option<crate::retrieval::SharedPeers>,
    Option<crate::retrieval::SharedPeers>,
) {
    use crate::fetch::SourceKind;
    use crate::retrieval::{ClientConfig, PeerClient, PeerRole, PeerSource, SharedPeers};
    let mut sources: Vec<Arc<dyn crate::fetch::BlockSource>> = Vec::new();
    let client = PeerClient::new(ClientConfig::default(), Some(metrics.clone()));
    let mut hosted = None;
    if let Some(up) = &config.upstream_hosted_cache {
        let peers = SharedPeers::new(vec![up.address]);
        metrics
            .peers
            .configure(PeerRole::HostedCache, &[up.address]);
        sources.push(Arc::new(
            PeerSource::new(
                SourceKind::HostedCache,
                Arc::new(peers.clone()),
                client.clone(),
            )
            .with_metrics(metrics.clone()),
        ));
        hosted = Some(peers);
    }
    let mut fixed = None;
    if let Some(pc) = &config.proxy {
        let peers = SharedPeers::new(pc.peers.clone());
        metrics.peers.configure(PeerRole::Peer, &pc.peers);
        sources.push(Arc::new(
            PeerSource::new(SourceKind::Peer, Arc::new(peers.clone()), client.clone())
                .with_metrics(metrics.clone()),
        ));
        fixed = Some(peers);
    }
    if let Some(locator) = discovered {
        sources.push(Arc::new(
            PeerSource::new(SourceKind::Peer, locator, client).with_metrics(metrics.clone()),
        ));
    }
    (sources, fixed, hosted)
}

/// How often the configured hosted cache is asked for a PCCRR negotiation,
/// so `/status` knows whether it is reachable before the first miss.
pub const HOSTED_CACHE_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Negotiate with the configured hosted cache now, every
/// [`HOSTED_CACHE_PROBE_INTERVAL`] and when `now` is notified (its address
/// was reloaded); record the outcome in the peer book.
async fn probe_hosted_cache(
    hosted: crate::retrieval::SharedPeers,
    metrics: Arc<Metrics>,
    now: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    use crate::retrieval::{ClientConfig, PeerClient, PeerRole};
    // No metrics on this client: probes are not block requests.
    let client = PeerClient::new(ClientConfig::default(), None);
    let mut tick = tokio::time::interval(HOSTED_CACHE_PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = now.notified() => {}
        }
        for addr in hosted.get().iter().copied() {
            let res = tokio::select! {
                _ = stop.cancelled() => return,
                r = client.negotiate(addr) => r,
            };
            match res {
                Ok(_) => metrics.peers.success(PeerRole::HostedCache, addr, None),
                Err(e) => {
                    tracing::debug!(hosted_cache = %addr, error = %e, "hosted cache probe failed");
                    metrics
                        .peers
                        .failure(PeerRole::HostedCache, addr, e.kind(), None);
                }
            }
        }
    }
}

/// Open the replay store, load TLS, and bind the hosted cache's listeners
/// (PCHC v2 + PCCRR over HTTP, PCHC v1 over HTTPS).
async fn start_hosted_cache(
    hc: &crate::config::HostedCacheConfig,
    config: &Config,
    store: &Store,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> Result<
    (
        crate::hosted_cache::HostedCacheServer,
        crate::hosted_cache::ReplayStore,
    ),
    StartError,
> {
    use crate::hosted_cache::{
        CacheHoldings, HostedCacheOptions, HostedCacheServer, RateLimit, ReplayStore, StorePuller,
    };
    let replay_dir = config.store.path.join(REPLAY_DIR);
    let replay = ReplayStore::open(&replay_dir, hc.replay_max_size, Some(metrics.clone()))
        .await
        .map_err(|e| StartError::HostedCache(e.to_string()))?;
    let holdings = Arc::new(CacheHoldings {
        store: store.clone(),
        replay: replay.clone(),
    });
    let https = match &hc.https {
        Some(t) => Some((
            t.listen,
            crate::hosted_cache::tls::server_config(&t.cert, &t.key)
                .map_err(|e| StartError::HostedCache(e.to_string()))?,
        )),
        None => None,
    };
    let retrieval = crate::retrieval::RetrievalServer::new(
        holdings.clone(),
        crate::retrieval::ServerConfig {
            crypto: hc.crypto,
            max_active_per_client: hc.max_active_per_client,
            ..Default::default()
        },
        metrics.clone(),
    );
    let puller = Arc::new(
        StorePuller::new(
            crate::retrieval::PeerClient::new(
                crate::retrieval::ClientConfig {
                    request_timeout: PULL_REQUEST_TIMEOUT,
                    ..Default::default()
                },
                Some(metrics.clone()),
            ),
            store.clone(),
        )
        .with_replay(replay.clone())
        .with_metrics(metrics.clone()),
    );
    let options = HostedCacheOptions {
        listen_http: hc.listen_http,
        listen_https: https,
        queue_capacity: hc.queue_capacity,
        max_concurrent_pulls: hc.max_concurrent_pulls,
        rate_limit: RateLimit {
            per_second: hc.offer_rate,
            burst: hc.offer_burst,
        },
        retrieval: Some(retrieval),
    };
    let bound_addr = hc.listen_http.or(hc.https.as_ref().map(|t| t.listen));
    HostedCacheServer::bind(
        options,
        holdings,
        puller,
        metrics.clone(),
        shutdown.child_token(),
    )
    .await
    .map(|server| (server, replay))
    .map_err(|source| StartError::Bind {
        what: "hosted_cache",
        addr: bound_addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        source,
    })
}

/// Directory of the hosted cache's v2 replay store, inside `[store] path`.
pub const REPLAY_DIR: &str = "replay";
/// Per-block timeout of the hosted cache's pulls: longer than a peer fetch
/// (2 s), since the offering client may be busy serving its own download.
const PULL_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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

/// `[peer] discovery`: start MS-PCCRD answering from `store` and advertising
/// `pccrr`, on `[peer] interfaces` (default: every up, multicast-capable,
/// non-loopback one). Returns the locator the proxy asks for peers; `None`
/// when discovery is off, or on by default but no interface suits (logged).
/// Named interfaces that do not exist, and socket errors, fail the start.
fn start_discovery(
    pc: &crate::config::PeerConfig,
    pccrr: SocketAddr,
    store: &Store,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<Option<Arc<dyn crate::retrieval::PeerLocator>>, StartError> {
    use crate::discovery::{interfaces, Discovery, DiscoveryConfig, DiscoveryLocator};
    if !pc.discovery {
        return Ok(None);
    }
    let chosen = match interfaces::list().and_then(|all| interfaces::select(all, &pc.interfaces)) {
        Ok(chosen) => chosen,
        Err(e @ interfaces::InterfaceError::NoneSuitable) => {
            tracing::warn!(error = %e, "discovery disabled; serving PCCRR only");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let dc = DiscoveryConfig::for_interfaces(pccrr, &chosen);
    let xaddrs = dc.engine.xaddrs.clone();
    let d = Discovery::start(dc, store.clone(), metrics.clone(), shutdown.child_token())?;
    let names: Vec<&str> = chosen.iter().map(|i| i.name.as_str()).collect();
    tracing::info!(interfaces = ?names, xaddrs = ?xaddrs, "discovery running");
    let locator = DiscoveryLocator::new(d.handle(), xaddrs, Default::default());
    tasks.spawn(d.join());
    Ok(Some(Arc::new(locator)))
}

/// Bind a listener and learn its address (port 0 resolved).
async fn bind_local(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = bind(what, addr).await?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Bind { what, addr, source })?;
    Ok((listener, local))
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}
