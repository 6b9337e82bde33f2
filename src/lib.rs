//! # branchcache
//!
//! BranchCache / PeerDist for Linux branch offices: one daemon whose roles
//! (branch proxy, hosted cache, publisher) are switched on in a TOML file.
//!
//! ## Modules
//! - [`proto`]: the pure protocol core — content information (MS-PCCRC),
//!   retrieval messages (MS-PCCRR), discovery (MS-PCCRD), hosted cache
//!   (MS-PCHC) and the PeerDist HTTP header logic. No IO, clock or RNG.
//! - [`config`]: TOML → validated, typed configuration.
//! - [`hashing`]: parallel content hashing (segments on all cores) feeding the
//!   content information builder.
//! - [`app`]: binds listeners, spawns roles, graceful shutdown.
//! - [`admin`], [`metrics`], [`status`], [`activity`]: `/metrics`, `/healthz`,
//!   `/readyz`, `/status` and the status page at `/`.
//! - [`net`]: the shared hyper serving loop.
//! - [`proxy`]: the branch proxy (hyper service, pass-through, response assembly).
//! - [`fetch`]: the per-segment planner: store → sources → origin ranges, verified.
//! - [`publisher`]: HQ role — content information for a plain origin.
//! - [`store`]: the persistent, verified block store keyed by segment id.
//! - [`retrieval`]: MS-PCCRR server handler and peer client.
//! - [`hosted_cache`]: the MS-PCHC offer server (v2 HTTP, v1 HTTPS) and its
//!   bounded pull queue.
//! - [`inspect`]: renders content information for `branchcache inspect`.
//! - [`preload`]: `branchcache preload` — warm a cache through its proxy.
//! - [`demo`]: `branchcache demo` — origin, publisher and proxy on loopback, two downloads.
//! - [`fuzz`]: fuzz harnesses shared by `fuzz/` and the corpus replay test.
//! - [`discovery`]: MS-PCCRD UDP driver around `proto::pccrd`.
//! - [`reload`]: what a SIGHUP configuration reload applies and what waits
//!   for a restart.
//!
//! ## Data flow (branch proxy)
//! client → proxy → origin with `Accept-Encoding: peerdist` → content
//! information parsed by `proto::pccrc` → per segment: store, then peers /
//! hosted cache, then origin ranges → every block verified against its hash
//! → identity bytes streamed to the client. See `docs/ARCHITECTURE.md`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod activity;
pub mod admin;
pub mod app;
pub mod bufpool;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod fetch;
pub mod fuzz;
pub mod hashing;
pub mod hosted_cache;
pub mod inspect;
pub mod lru;
pub mod metrics;
pub mod net;
pub mod preload;
pub mod proto;
pub mod proxy;
pub mod publisher;
pub mod reload;
pub mod retrieval;
pub mod status;
pub mod store;
