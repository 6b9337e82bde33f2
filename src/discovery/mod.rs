//! MS-PCCRD driver: one tokio task around the sans-IO
//! [`crate::proto::pccrd::engine::Engine`].
//!
//! The task owns the UDP sockets (port 3702, SO_REUSEADDR/SO_REUSEPORT, joined
//! to 239.255.255.250 and/or ff02::c on the configured interfaces) and the
//! engine, and `select!`s over: each socket, `sleep_until(poll_timeout)`, a
//! bounded command channel and the shutdown token. After every arm it drains
//! `poll_output()`: datagrams go out, peers found go to the query's
//! [`QueryHandle`]. All protocol decisions stay in the engine.
//!
//! Where "multicast" datagrams go is [`DiscoveryConfig::targets`]; tests point
//! it at other drivers' unicast loopback addresses so several drivers can
//! talk on 127.0.0.1 without multicast routing.
//!
//! Around the driver: [`interfaces`] picks the interfaces (getifaddrs),
//! [`DiscoveryConfig::for_interfaces`] turns them into the daemon's sockets,
//! allow-list and XAddrs, the block store answers Probes (its
//! `SegmentLookup` impl in `lookup.rs`), and [`DiscoveryLocator`] serves the
//! proxy's planner as a [`crate::retrieval::PeerLocator`].

pub mod interfaces;
mod locator;
mod lookup;

pub use interfaces::{Interface, InterfaceError};
pub use locator::{DiscoveryLocator, LocatorOptions};

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::proto::pccrc::crypto::SegmentId;
use crate::proto::pccrd::engine::{
    Destination, Engine, EngineConfig, EngineStats, Entropy, Output, Peer, QueryError, QueryId,
    SegmentLookup, SegmentPeers,
};
use crate::proto::pccrd::{Uuid, Version, DISCOVERY_PORT, MAX_MESSAGE_SIZE};

/// WS-Discovery IPv4 multicast group.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(239, 255, 255, 250);
/// WS-Discovery IPv6 link-local multicast group.
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xc);

/// Commands queued to the task before senders wait: queries are rare and
/// each is bounded by the engine, so a small queue suffices.
const COMMAND_QUEUE: usize = 64;

/// PeerFound events buffered per query before further ones are dropped
/// (the final result still lists every peer).
const PEER_EVENT_QUEUE: usize = 64;

/// Multicast hop limit: discovery is link-local (SOAP-over-UDP uses TTL 1).
const MULTICAST_TTL: u32 = 1;

/// Receive buffer: one more than the largest accepted message, so oversized
/// datagrams are seen as such (and rejected by the engine).
const RECV_BUFFER: usize = MAX_MESSAGE_SIZE + 1;

/// Driver configuration.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Local addresses to bind (one socket each), e.g. `0.0.0.0:3702` and `[::]:3702`.
    pub bind: Vec<SocketAddr>,
    /// Destinations of the engine's multicast datagrams (normally the
    /// groups on port 3702; any address works, which tests use).
    pub targets: Vec<SocketAddr>,
    /// IPv4 interface addresses to join multicast groups on (empty: the
    /// kernel's default interface).
    pub interfaces_v4: Vec<Ipv4Addr>,
    /// IPv6 interface indexes to join on (empty: index 0, the default).
    pub interfaces_v6: Vec<u32>,
    /// The engine's tunables, including our endpoint UUID and XAddrs.
    pub engine: EngineConfig,
}

impl DiscoveryConfig {
    /// Standard WS-Discovery sockets and groups on every address family,
    /// advertising `xaddrs` for MS-PCCRR, with a fresh endpoint UUID and an
    /// InstanceId of the current Unix time.
    pub fn standard(xaddrs: Vec<SocketAddr>) -> Self {
        let mut bytes = [0u8; 16];
        fill_random(&mut bytes);
        DiscoveryConfig {
            bind: vec![
                SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), DISCOVERY_PORT),
                SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), DISCOVERY_PORT),
            ],
            targets: vec![
                SocketAddr::new(GROUP_V4.into(), DISCOVERY_PORT),
                SocketAddr::new(GROUP_V6.into(), DISCOVERY_PORT),
            ],
            interfaces_v4: Vec::new(),
            interfaces_v6: Vec::new(),
            engine: EngineConfig {
                endpoint: Uuid::new_v4(bytes),
                instance_id: unix_now(),
                xaddrs,
                ..EngineConfig::default()
            },
        }
    }
}

/// Most XAddrs advertised for an unspecified PCCRR listen address (one per
/// interface address; keeps ProbeMatches small on hosts with many addresses).
const MAX_XADDRS: usize = 8;

impl DiscoveryConfig {
    /// The daemon's configuration for a PCCRR server listening on `pccrr`:
    /// sockets for the address families that listener serves (`0.0.0.0`:
    /// IPv4; `[::]`: both, Linux listeners being dual-stack; a specific
    /// address: its family), groups joined and Probes sent on every one of
    /// `interfaces`, datagrams accepted only from those interfaces' subnets,
    /// and XAddrs = `pccrr`, or for an unspecified address every address of
    /// `interfaces` (of the served families) with `pccrr`'s port.
    pub fn for_interfaces(pccrr: SocketAddr, interfaces: &[Interface]) -> Self {
        let mut c = DiscoveryConfig::standard(Vec::new());
        let (v4, v6) = match pccrr.ip() {
            IpAddr::V4(_) => (true, false),
            IpAddr::V6(ip) if ip.is_unspecified() => (true, true),
            IpAddr::V6(_) => (false, true),
        };
        let v4 = v4 && interfaces.iter().any(|i| !i.v4.is_empty());
        let v6 = v6 && interfaces.iter().any(|i| !i.v6.is_empty());
        c.bind
            .retain(|a| (a.is_ipv4() && v4) || (a.is_ipv6() && v6));
        c.targets
            .retain(|a| (a.is_ipv4() && v4) || (a.is_ipv6() && v6));
        if v4 {
            c.interfaces_v4 = interfaces
                .iter()
                .filter_map(|i| i.v4.first().map(|a| a.0))
                .collect();
        }
        if v6 {
            c.interfaces_v6 = interfaces
                .iter()
                .filter(|i| !i.v6.is_empty() && i.index != 0)
                .map(|i| i.index)
                .collect();
        }
        c.engine.allowed_sources = interfaces
            .iter()
            .flat_map(Interface::subnets)
            .filter(|n| (n.addr.is_ipv4() && v4) || (n.addr.is_ipv6() && v6))
            .collect();
        c.engine.xaddrs = if pccrr.ip().is_unspecified() {
            let port = pccrr.port();
            let v4s = interfaces
                .iter()
                .flat_map(|i| i.v4.iter())
                .filter(|_| v4)
                .map(|(a, _)| SocketAddr::new(IpAddr::V4(*a), port));
            let v6s = interfaces
                .iter()
                .flat_map(|i| i.v6.iter())
                .filter(|_| v6)
                .map(|(a, _)| SocketAddr::new(IpAddr::V6(*a), port));
            v4s.chain(v6s).take(MAX_XADDRS).collect()
        } else {
            vec![pccrr]
        };
        c
    }
}

/// Why the driver could not start or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// No socket could be bound.
    #[error("discovery: cannot bind any of {addrs:?}: {source}")]
    Bind {
        /// What was tried.
        addrs: Vec<SocketAddr>,
        /// The last error.
        source: io::Error,
    },
    /// The engine refused the query.
    #[error("discovery query refused: {0}")]
    Query(#[from] QueryError),
    /// The driver task has stopped (shutdown).
    #[error("discovery driver stopped")]
    Stopped,
}

impl DiscoveryError {
    /// A short, stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DiscoveryError::Bind { .. } => "bind",
            DiscoveryError::Query(e) => e.kind(),
            DiscoveryError::Stopped => "stopped",
        }
    }
}

type Update<L> = Box<dyn FnOnce(&mut L) + Send>;

enum Command<L> {
    Start {
        ids: Vec<SegmentId>,
        version: Version,
        reply: oneshot::Sender<Result<QueryHandle, QueryError>>,
    },
    Update(Update<L>),
    SetTargets(Vec<SocketAddr>),
    Stats(oneshot::Sender<EngineStats>),
}

/// A running query: peers as they are found, then the full result.
/// Dropping it before [`QueryHandle::finish`] returns ends the query in the
/// engine (no more retransmissions, its slot freed for other queries).
#[derive(Debug)]
pub struct QueryHandle {
    /// The engine's id for this query.
    pub id: QueryId,
    peers: mpsc::Receiver<(SegmentId, Peer)>,
    done: Option<oneshot::Receiver<Vec<SegmentPeers>>>,
    cancel: Option<mpsc::Sender<QueryId>>,
}

impl Drop for QueryHandle {
    fn drop(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            // Full queue: the query still ends at its deadline.
            let _ = cancel.try_send(self.id);
        }
    }
}

impl QueryHandle {
    /// The next peer found, or `None` once the query is over (or too many
    /// events queued up; [`QueryHandle::finish`] has them all).
    pub async fn next_peer(&mut self) -> Option<(SegmentId, Peer)> {
        self.peers.recv().await
    }

    /// Wait for the query to end; per requested segment, the peers found.
    pub async fn finish(mut self) -> Result<Vec<SegmentPeers>, DiscoveryError> {
        self.cancel = None;
        let done = self.done.take().ok_or(DiscoveryError::Stopped)?;
        done.await.map_err(|_| DiscoveryError::Stopped)
    }
}

struct Subscriber {
    peers: mpsc::Sender<(SegmentId, Peer)>,
    done: oneshot::Sender<Vec<SegmentPeers>>,
}

/// Cheap, cloneable handle to the driver task.
pub struct DiscoveryHandle<L> {
    tx: mpsc::Sender<Command<L>>,
}

impl<L> Clone for DiscoveryHandle<L> {
    fn clone(&self) -> Self {
        DiscoveryHandle {
            tx: self.tx.clone(),
        }
    }
}

impl<L> std::fmt::Debug for DiscoveryHandle<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoveryHandle").finish_non_exhaustive()
    }
}

impl<L: SegmentLookup + Send + 'static> DiscoveryHandle<L> {
    /// Start a query (use [`Version::V2`] for v2 content information).
    pub async fn start_query(
        &self,
        ids: Vec<SegmentId>,
        version: Version,
    ) -> Result<QueryHandle, DiscoveryError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Start {
                ids,
                version,
                reply,
            })
            .await
            .map_err(|_| DiscoveryError::Stopped)?;
        Ok(rx.await.map_err(|_| DiscoveryError::Stopped)??)
    }

    /// Start a query and wait for its result.
    pub async fn find_peers(
        &self,
        ids: Vec<SegmentId>,
        version: Version,
    ) -> Result<Vec<SegmentPeers>, DiscoveryError> {
        self.start_query(ids, version).await?.finish().await
    }

    /// Change what the responder side holds (runs on the driver task).
    pub async fn update_lookup(
        &self,
        f: impl FnOnce(&mut L) + Send + 'static,
    ) -> Result<(), DiscoveryError> {
        self.tx
            .send(Command::Update(Box::new(f)))
            .await
            .map_err(|_| DiscoveryError::Stopped)
    }

    /// Replace where multicast datagrams go (see [`DiscoveryConfig::targets`]).
    pub async fn set_targets(&self, targets: Vec<SocketAddr>) -> Result<(), DiscoveryError> {
        self.tx
            .send(Command::SetTargets(targets))
            .await
            .map_err(|_| DiscoveryError::Stopped)
    }

    /// The engine's counters.
    pub async fn stats(&self) -> Result<EngineStats, DiscoveryError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Stats(tx))
            .await
            .map_err(|_| DiscoveryError::Stopped)?;
        rx.await.map_err(|_| DiscoveryError::Stopped)
    }
}

/// The running driver.
#[derive(Debug)]
pub struct Discovery<L> {
    handle: DiscoveryHandle<L>,
    local_addrs: Vec<SocketAddr>,
    task: JoinHandle<()>,
}

impl<L: SegmentLookup + Send + 'static> Discovery<L> {
    /// Bind the sockets, join the groups and spawn the task. It stops when
    /// `shutdown` is cancelled. Engine counters are published to `metrics`
    /// (`branchcache_discovery_*`).
    pub fn start(
        config: DiscoveryConfig,
        lookup: L,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<Self, DiscoveryError> {
        let mut v4 = None;
        let mut v6 = None;
        let mut last_err = None;
        for addr in &config.bind {
            match bind(*addr, &config) {
                Ok(s) => {
                    let slot = if addr.is_ipv4() { &mut v4 } else { &mut v6 };
                    if slot.is_none() {
                        *slot = Some(s);
                    }
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "discovery: cannot bind");
                    last_err = Some(e);
                }
            }
        }
        if v4.is_none() && v6.is_none() {
            return Err(DiscoveryError::Bind {
                addrs: config.bind.clone(),
                source: last_err
                    .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address")),
            });
        }
        let local_addrs = [&v4, &v6]
            .into_iter()
            .flatten()
            .filter_map(|f: &Family| f.listen.local_addr().ok())
            .collect();
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (cancel_tx, cancel_rx) = mpsc::channel(COMMAND_QUEUE);
        let engine = Engine::new(config.engine.clone(), lookup, Box::new(OsEntropy));
        let driver = Driver {
            engine,
            v4,
            v6,
            targets: config.targets,
            interfaces_v4: config.interfaces_v4,
            interfaces_v6: config.interfaces_v6,
            epoch: Instant::now(),
            subscribers: HashMap::new(),
            metrics,
            published: EngineStats::default(),
            cancel_tx,
        };
        let task = tokio::spawn(driver.run(rx, cancel_rx, shutdown));
        Ok(Discovery {
            handle: DiscoveryHandle { tx },
            local_addrs,
            task,
        })
    }

    /// A handle for queries and updates.
    pub fn handle(&self) -> DiscoveryHandle<L> {
        self.handle.clone()
    }

    /// The bound socket addresses (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Wait for the task to end (after the shutdown token is cancelled).
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "discovery task failed");
        }
    }
}

/// Randomness from the operating system (MessageIDs must be unpredictable
/// so off-path hosts cannot forge replies).
struct OsEntropy;

impl Entropy for OsEntropy {
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        fill_random(&mut b);
        u64::from_le_bytes(b)
    }
}

fn fill_random(buf: &mut [u8]) {
    if getrandom::getrandom(buf).is_err() {
        // Practically unreachable on Linux; degrade to clock-derived bytes
        // rather than stopping discovery.
        let mut x = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        for b in buf.iter_mut() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (x >> 33) as u8;
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The sockets of one address family.
struct Family {
    /// Bound to the discovery port and joined to the group: receives
    /// Probes, sends ProbeMatches (from port 3702, as WS-Discovery expects).
    listen: UdpSocket,
    /// An ephemeral port our own Probes leave from, so the unicast
    /// ProbeMatches come back to us and not to whichever process shares 3702.
    probe: UdpSocket,
}

fn udp_socket(addr: SocketAddr, reuse: bool) -> io::Result<Socket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if reuse {
        // Several WS-Discovery services (or drivers in tests) share 3702.
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Join the groups among `config.targets` (when `join`) and set the
/// outgoing multicast interface, hop limit and loopback.
fn multicast_setup(
    s: &Socket,
    addr: SocketAddr,
    config: &DiscoveryConfig,
    join: bool,
) -> io::Result<()> {
    for target in &config.targets {
        match (addr.ip(), target.ip()) {
            (IpAddr::V4(_), IpAddr::V4(group)) if group.is_multicast() => {
                if join {
                    let ifaces = if config.interfaces_v4.is_empty() {
                        vec![Ipv4Addr::UNSPECIFIED]
                    } else {
                        config.interfaces_v4.clone()
                    };
                    for iface in ifaces {
                        s.join_multicast_v4(&group, &iface)?;
                    }
                }
                if let Some(first) = config.interfaces_v4.first() {
                    s.set_multicast_if_v4(first)?;
                }
                s.set_multicast_ttl_v4(MULTICAST_TTL)?;
                // Other services on this host must hear our Probes; our own
                // copy is dropped by the engine's MessageID dedup.
                s.set_multicast_loop_v4(true)?;
            }
            (IpAddr::V6(_), IpAddr::V6(group)) if group.is_multicast() => {
                if join {
                    let ifaces = if config.interfaces_v6.is_empty() {
                        vec![0]
                    } else {
                        config.interfaces_v6.clone()
                    };
                    for iface in ifaces {
                        s.join_multicast_v6(&group, iface)?;
                    }
                }
                if let Some(first) = config.interfaces_v6.first() {
                    s.set_multicast_if_v6(*first)?;
                }
                s.set_multicast_hops_v6(MULTICAST_TTL)?;
                s.set_multicast_loop_v6(true)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn bind(addr: SocketAddr, config: &DiscoveryConfig) -> io::Result<Family> {
    let listen = udp_socket(addr, true)?;
    multicast_setup(&listen, addr, config, true)?;
    let probe = udp_socket(SocketAddr::new(addr.ip(), 0), false)?;
    multicast_setup(&probe, addr, config, false)?;
    Ok(Family {
        listen: UdpSocket::from_std(listen.into())?,
        probe: UdpSocket::from_std(probe.into())?,
    })
}

struct Driver<L> {
    engine: Engine<L>,
    v4: Option<Family>,
    v6: Option<Family>,
    targets: Vec<SocketAddr>,
    /// Multicast Probes go out on each of these (one send per interface).
    interfaces_v4: Vec<Ipv4Addr>,
    interfaces_v6: Vec<u32>,
    epoch: Instant,
    subscribers: HashMap<QueryId, Subscriber>,
    metrics: Arc<Metrics>,
    /// Counters as last published to `metrics`.
    published: EngineStats,
    /// Given to every [`QueryHandle`]: dropped handles send their id here.
    cancel_tx: mpsc::Sender<QueryId>,
}

async fn recv(sock: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

impl<L: SegmentLookup + Send + 'static> Driver<L> {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command<L>>,
        mut cancels: mpsc::Receiver<QueryId>,
        shutdown: CancellationToken,
    ) {
        let mut bufs = [(); 4].map(|_| vec![0u8; RECV_BUFFER]);
        let mut commands_open = true;
        loop {
            self.drain().await;
            self.publish_metrics();
            let wake = self.engine.poll_timeout().map(|t| self.epoch + t);
            let [b0, b1, b2, b3] = &mut bufs;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = recv(self.v4.as_ref().map(|f| &f.listen), b0) => self.received(r, b0),
                r = recv(self.v4.as_ref().map(|f| &f.probe), b1) => self.received(r, b1),
                r = recv(self.v6.as_ref().map(|f| &f.listen), b2) => self.received(r, b2),
                r = recv(self.v6.as_ref().map(|f| &f.probe), b3) => self.received(r, b3),
                cmd = rx.recv(), if commands_open => match cmd {
                    Some(cmd) => self.command(cmd),
                    // Every handle is gone: keep answering Probes until shutdown.
                    None => commands_open = false,
                },
                // Never None: the driver holds a sender itself.
                Some(id) = cancels.recv() => {
                    self.subscribers.remove(&id);
                    self.engine.cancel_query(id);
                }
                _ = sleep_until(wake), if wake.is_some() => {
                    let now = self.now();
                    self.engine.handle_timeout(now);
                }
            }
        }
        tracing::debug!("discovery driver stopped");
    }

    fn publish_metrics(&mut self) {
        let now = self.engine.stats();
        if now == self.published {
            return;
        }
        for ((name, new), (_, old)) in now.counters().into_iter().zip(self.published.counters()) {
            if new > old {
                self.metrics
                    .discovery_events
                    .get_or_create(&[("event", name)])
                    .inc_by(new - old);
            }
        }
        self.published = now;
        self.metrics
            .discovery_active_queries
            .set(i64::try_from(self.engine.active_queries()).unwrap_or(i64::MAX));
    }

    fn received(&mut self, r: io::Result<(usize, SocketAddr)>, buf: &[u8]) {
        match r {
            Ok((n, from)) => {
                let now = self.now();
                if let Some(datagram) = buf.get(..n) {
                    self.engine.handle_datagram(from, datagram, now);
                }
            }
            // ICMP errors from earlier sends surface here; not fatal.
            Err(e) => tracing::debug!(error = %e, "discovery: recv failed"),
        }
    }

    fn command(&mut self, cmd: Command<L>) {
        match cmd {
            Command::Start {
                ids,
                version,
                reply,
            } => {
                let now = self.now();
                let result = self.engine.start_query(&ids, version, now).map(|id| {
                    let (ptx, prx) = mpsc::channel(PEER_EVENT_QUEUE);
                    let (dtx, drx) = oneshot::channel();
                    self.subscribers.insert(
                        id,
                        Subscriber {
                            peers: ptx,
                            done: dtx,
                        },
                    );
                    QueryHandle {
                        id,
                        peers: prx,
                        done: Some(drx),
                        cancel: Some(self.cancel_tx.clone()),
                    }
                });
                if let Err(Ok(handle)) = reply.send(result) {
                    // The caller went away: stop the query now.
                    self.engine.cancel_query(handle.id);
                }
            }
            Command::Update(f) => f(self.engine.lookup_mut()),
            Command::SetTargets(t) => self.targets = t,
            Command::Stats(tx) => {
                let _ = tx.send(self.engine.stats());
            }
        }
    }

    async fn drain(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Transmit(t) => match t.destination {
                    Destination::Multicast => {
                        let out = Outbound {
                            v4: &self.v4,
                            v6: &self.v6,
                            interfaces_v4: &self.interfaces_v4,
                            interfaces_v6: &self.interfaces_v6,
                        };
                        for target in &self.targets {
                            out.send(*target, &t.payload).await;
                        }
                    }
                    Destination::Unicast(to) => {
                        send_reply(&self.v4, &self.v6, to, &t.payload).await
                    }
                },
                Output::PeerFound {
                    query,
                    segment,
                    peer,
                } => {
                    if let Some(s) = self.subscribers.get(&query) {
                        match s.peers.try_send((segment, peer)) {
                            // Full: the final result still carries every peer.
                            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                            // The QueryHandle was dropped: nobody wants the answer.
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                self.subscribers.remove(&query);
                                self.engine.cancel_query(query);
                            }
                        }
                    }
                }
                Output::QueryFinished { query, results } => {
                    if let Some(s) = self.subscribers.remove(&query) {
                        let _ = s.done.send(results);
                    }
                }
            }
        }
    }
}

/// Where and how multicast Probes leave.
struct Outbound<'a> {
    v4: &'a Option<Family>,
    v6: &'a Option<Family>,
    interfaces_v4: &'a [Ipv4Addr],
    interfaces_v6: &'a [u32],
}

impl Outbound<'_> {
    /// A Probe to `to`: to a group, once per configured interface of its
    /// family (`IP_MULTICAST_IF` / `IPV6_MULTICAST_IF` set before each send:
    /// the task is the socket's only user, so this cannot race); to any
    /// other address (tests), once.
    async fn send(&self, to: SocketAddr, payload: &[u8]) {
        let family = if to.is_ipv4() { self.v4 } else { self.v6 };
        let Some(family) = family else { return };
        let sock = &family.probe;
        match to.ip() {
            IpAddr::V4(g) if g.is_multicast() && self.interfaces_v4.len() > 1 => {
                for iface in self.interfaces_v4 {
                    if let Err(e) = socket2::SockRef::from(sock).set_multicast_if_v4(iface) {
                        tracing::debug!(interface = %iface, error = %e, "discovery: cannot select interface");
                        continue;
                    }
                    send_on(sock, to, payload).await;
                }
            }
            IpAddr::V6(g) if g.is_multicast() && self.interfaces_v6.len() > 1 => {
                for iface in self.interfaces_v6 {
                    if let Err(e) = socket2::SockRef::from(sock).set_multicast_if_v6(*iface) {
                        tracing::debug!(interface = iface, error = %e, "discovery: cannot select interface");
                        continue;
                    }
                    send_on(sock, to, payload).await;
                }
            }
            _ => send_on(sock, to, payload).await,
        }
    }
}

async fn send_on(sock: &UdpSocket, to: SocketAddr, payload: &[u8]) {
    if let Err(e) = sock.send_to(payload, to).await {
        tracing::debug!(%to, error = %e, "discovery: send failed");
    }
}

/// A reply to `to`, from the discovery port of its address family (none
/// bound: dropped).
async fn send_reply(v4: &Option<Family>, v6: &Option<Family>, to: SocketAddr, payload: &[u8]) {
    let family = if to.is_ipv4() { v4 } else { v6 };
    if let Some(family) = family {
        send_on(&family.listen, to, payload).await;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The lookup type for a responder backed by something shared with the rest
/// of the daemon (e.g. the store): `Discovery<SharedLookup>`.
pub type SharedLookup = Arc<dyn SegmentLookup + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, index: u32, v4: &[(&str, u8)], v6: &[(&str, u8)]) -> Interface {
        Interface {
            name: name.into(),
            index,
            up: true,
            loopback: false,
            multicast: true,
            v4: v4.iter().map(|(a, p)| (a.parse().unwrap(), *p)).collect(),
            v6: v6.iter().map(|(a, p)| (a.parse().unwrap(), *p)).collect(),
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn daemon_config_follows_the_listener_family_and_interfaces() {
        let ifaces = [
            iface("eth0", 2, &[("192.0.2.10", 24)], &[("fe80::1", 64)]),
            iface("eth1", 3, &[("198.51.100.7", 25)], &[]),
        ];
        // 0.0.0.0: IPv4 only, XAddrs = every interface address.
        let c = DiscoveryConfig::for_interfaces(sa("0.0.0.0:8082"), &ifaces);
        assert_eq!(c.bind, vec![sa("0.0.0.0:3702")]);
        assert_eq!(c.targets, vec![sa("239.255.255.250:3702")]);
        assert_eq!(
            c.interfaces_v4,
            vec![Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(198, 51, 100, 7)]
        );
        assert!(c.interfaces_v6.is_empty());
        assert_eq!(
            c.engine.xaddrs,
            vec![sa("192.0.2.10:8082"), sa("198.51.100.7:8082")]
        );
        let allowed = &c.engine.allowed_sources;
        assert_eq!(allowed.len(), 2);
        assert!(allowed
            .iter()
            .any(|n| n.contains("198.51.100.100".parse().unwrap())));
        assert!(!allowed
            .iter()
            .any(|n| n.contains("198.51.100.200".parse().unwrap())));
        assert!(!allowed
            .iter()
            .any(|n| n.contains("fe80::2".parse().unwrap())));

        // [::]: both families; IPv6 joined only where it has addresses.
        let c = DiscoveryConfig::for_interfaces(sa("[::]:8082"), &ifaces);
        assert_eq!(c.bind.len(), 2);
        assert_eq!(c.interfaces_v6, vec![2]);
        assert!(c.engine.xaddrs.contains(&sa("[fe80::1]:8082")));
        assert!(c
            .engine
            .allowed_sources
            .iter()
            .any(|n| n.contains("fe80::2".parse().unwrap())));

        // A specific address is advertised as is.
        let c = DiscoveryConfig::for_interfaces(sa("192.0.2.10:9000"), &ifaces);
        assert_eq!(c.engine.xaddrs, vec![sa("192.0.2.10:9000")]);
        assert_eq!(c.bind, vec![sa("0.0.0.0:3702")]);
    }
}
