//! The proxy's side of a hosted cache: offer the segments it fetched from the
//! origin (MS-PCHC), so the hosted cache pulls them from this host's PCCRR
//! listener and serves them to the rest of the branch.
//!
//! The planner tells the [`Offerer`] (a [`FetchObserver`]) about each
//! completed segment; segments of which at least [`OFFER_ORIGIN_FRACTION`]
//! came from the origin go into a bounded queue (full → dropped and
//! counted: an offer is an optimisation, never worth blocking a client).
//! One task drains it: v2 sends BATCHED_OFFERs of up to 128 segments; v1
//! sends INITIAL_OFFER and, when the cache is INTERESTED, SEGMENT_INFO over
//! TLS. Segments the chosen version cannot describe are skipped and counted:
//! v1 carries PCCRC v1 content only ([`describe_v1`]); v2 names 32-byte ids
//! only, so SHA-384/512 v1 content is not offered ([`describe_v2`]).

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client::OfferClient;
use crate::fetch::{FetchObserver, SegmentPlan};
use crate::metrics::Metrics;
use crate::proto::pccrc::HashAlgo;
use crate::proto::pchc::{
    encode_segment_info_ci, OfferHashAlgo, ResponseCode, SegmentDescriptor, CONTENT_TAG_LEN,
    MAX_BATCHED_DESCRIPTORS,
};
use crate::retrieval::PeerRole;

/// Segments waiting to be offered; beyond it new ones are dropped.
pub const OFFER_QUEUE_CAPACITY: usize = 1024;
/// Windows offers a segment once 20 % of it came from the origin (PROTOCOL.md
/// §8.5); a segment served wholly from peers is not offered again.
pub const OFFER_ORIGIN_FRACTION: (u64, u64) = (1, 5);
/// The `ContentTag` we send (statistics only on the cache; zero padded).
pub const CONTENT_TAG: [u8; CONTENT_TAG_LEN] = *b"branchcache\0\0\0\0\0";

/// Where and how to offer.
#[derive(Debug, Clone)]
pub struct OffererConfig {
    /// PCHC version: 1 (HTTPS) or 2 (HTTP).
    pub version: u8,
    /// The hosted cache's HTTP listener (v2 offers).
    pub http_addr: SocketAddr,
    /// The hosted cache's HTTPS listener (v1 offers).
    pub https_addr: SocketAddr,
    /// TLS name verified for v1.
    pub server_name: ServerName<'static>,
    /// Our PCCRR listener port, sent in CONNECTION_INFORMATION.
    pub pccrr_port: u16,
}

/// The hosted cache's addresses and TLS name; replaced on reload.
#[derive(Debug, Clone)]
struct Target {
    http_addr: SocketAddr,
    https_addr: SocketAddr,
    server_name: ServerName<'static>,
}

/// The planner's hook: queues segments worth offering.
#[derive(Debug, Clone)]
pub struct Offerer {
    tx: mpsc::Sender<Arc<SegmentPlan>>,
    version: &'static str,
    metrics: Arc<Metrics>,
    /// Where offers go; [`Offerer::retarget`].
    target: Arc<std::sync::RwLock<Target>>,
}

impl Offerer {
    /// Start the offering task (stops with `shutdown`) and return the hook to
    /// give the planner.
    pub fn start(
        config: OffererConfig,
        client: OfferClient,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> (Offerer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(OFFER_QUEUE_CAPACITY);
        let version = if config.version == 1 { "v1" } else { "v2" };
        let target = Arc::new(std::sync::RwLock::new(Target {
            http_addr: config.http_addr,
            https_addr: config.https_addr,
            server_name: config.server_name.clone(),
        }));
        let task = tokio::spawn(run(
            config,
            target.clone(),
            client,
            rx,
            metrics.clone(),
            shutdown,
        ));
        (
            Offerer {
                tx,
                version,
                metrics,
                target,
            },
            task,
        )
    }

    /// Offer to the hosted cache at these addresses (and TLS name) from
    /// now on (configuration reload).
    pub fn retarget(
        &self,
        http_addr: SocketAddr,
        https_addr: SocketAddr,
        server_name: ServerName<'static>,
    ) {
        *self.target.write().unwrap_or_else(|p| p.into_inner()) = Target {
            http_addr,
            https_addr,
            server_name,
        };
    }

    fn count(&self, outcome: &'static str) {
        count(&self.metrics, self.version, outcome, 1);
    }
}

fn count(metrics: &Metrics, version: &'static str, outcome: &'static str, n: u64) {
    metrics
        .upstream_hosted_cache_offers
        .get_or_create(&[("version", version), ("outcome", outcome)])
        .inc_by(n);
}

impl FetchObserver for Offerer {
    fn segment_fetched(&self, seg: &Arc<SegmentPlan>, origin_bytes: u64) {
        let (num, den) = OFFER_ORIGIN_FRACTION;
        if origin_bytes == 0 || origin_bytes.saturating_mul(den) < u64::from(seg.size) * num {
            return;
        }
        if self.tx.try_send(seg.clone()).is_err() {
            self.count("dropped");
        }
    }
}

/// The v2 descriptor of a segment, or `None` when v2 cannot name it (an id
/// longer than 32 bytes: SHA-384/512 v1 content).
pub fn describe_v2(seg: &SegmentPlan) -> Option<SegmentDescriptor> {
    let hash_algorithm = match seg.algo {
        HashAlgo::Sha256 => OfferHashAlgo::SHA256,
        HashAlgo::Sha512Trunc => OfferHashAlgo::SHA512_TRUNC,
        _ => return None,
    };
    let hohodk: [u8; 32] = seg.id.as_bytes().try_into().ok()?;
    Some(SegmentDescriptor {
        block_size: seg.block_size,
        segment_size: seg.size,
        content_tag: CONTENT_TAG,
        hash_algorithm,
        hohodk,
    })
}

/// The SEGMENT_INFO content information of a v1 segment, or `None` for v2
/// content (PCHC v1 carries PCCRC v1 only).
pub fn describe_v1(seg: &SegmentPlan) -> Option<Vec<u8>> {
    if seg.v2 {
        return None;
    }
    encode_segment_info_ci(
        seg.algo,
        seg.offset,
        seg.size,
        &seg.hash_of_data,
        &seg.secret,
        &seg.block_hashes,
    )
}

async fn run(
    mut config: OffererConfig,
    target: Arc<std::sync::RwLock<Target>>,
    client: OfferClient,
    mut rx: mpsc::Receiver<Arc<SegmentPlan>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            seg = rx.recv() => match seg { Some(s) => s, None => return },
        };
        {
            let t = target.read().unwrap_or_else(|p| p.into_inner());
            config.http_addr = t.http_addr;
            config.https_addr = t.https_addr;
            config.server_name = t.server_name.clone();
        }
        let work = async {
            if config.version == 1 {
                offer_v1(&config, &client, &metrics, &first).await;
            } else {
                // Batch whatever else is already queued (≤ 128 per message).
                let mut batch = vec![first.clone()];
                while batch.len() < MAX_BATCHED_DESCRIPTORS {
                    match rx.try_recv() {
                        Ok(s) => batch.push(s),
                        Err(_) => break,
                    }
                }
                offer_v2(&config, &client, &metrics, &batch).await;
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = work => {}
        }
    }
}

async fn offer_v2(
    config: &OffererConfig,
    client: &OfferClient,
    metrics: &Metrics,
    batch: &[Arc<SegmentPlan>],
) {
    let descriptors: Vec<SegmentDescriptor> = batch.iter().filter_map(|s| describe_v2(s)).collect();
    let skipped = (batch.len() - descriptors.len()) as u64;
    if skipped > 0 {
        count(metrics, "v2", "skipped", skipped);
    }
    if descriptors.is_empty() {
        return;
    }
    match client
        .offer_v2(config.http_addr, config.pccrr_port, &descriptors)
        .await
    {
        Ok(()) => {
            metrics
                .peers
                .success(PeerRole::HostedCache, config.http_addr, None);
            count(metrics, "v2", "accepted", descriptors.len() as u64)
        }
        Err(e) => {
            tracing::debug!(hosted_cache = %config.http_addr, error = %e, "offer failed");
            metrics
                .peers
                .failure(PeerRole::HostedCache, config.http_addr, e.kind(), None);
            count(metrics, "v2", e.kind(), descriptors.len() as u64);
        }
    }
}

async fn offer_v1(
    config: &OffererConfig,
    client: &OfferClient,
    metrics: &Metrics,
    seg: &SegmentPlan,
) {
    let Some(ci) = describe_v1(seg) else {
        count(metrics, "v1", "skipped", 1);
        return;
    };
    let res = client
        .offer_v1(
            config.https_addr,
            &config.server_name,
            config.pccrr_port,
            seg.id,
            CONTENT_TAG,
            &ci,
        )
        .await;
    // Offers go to the HTTPS listener; the book knows the hosted cache by
    // its configured (HTTP, PCCRR) address.
    match &res {
        Ok(_) => metrics
            .peers
            .success(PeerRole::HostedCache, config.http_addr, None),
        Err(e) => metrics
            .peers
            .failure(PeerRole::HostedCache, config.http_addr, e.kind(), None),
    }
    match res {
        // INTERESTED: it took our SEGMENT_INFO; OK: it already had the hash
        // information (and pulls what it lacks on its own).
        Ok(ResponseCode::INTERESTED) => count(metrics, "v1", "accepted", 1),
        Ok(_) => count(metrics, "v1", "known", 1),
        Err(e) => {
            tracing::debug!(hosted_cache = %config.https_addr, error = %e, "offer failed");
            count(metrics, "v1", e.kind(), 1);
        }
    }
}
