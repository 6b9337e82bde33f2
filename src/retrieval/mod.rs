//! MS-PCCRR over HTTP: the retrieval server (a hyper handler over a
//! [`BlockSource`]) and [`PeerClient`], which fetches and verifies blocks
//! from peers and hosted caches.
//!
//! Both are thin drivers around [`crate::proto::pccrr`]: decode → store call
//! → encode on the server, encode → POST → decode → decrypt + verify on the
//! client. The random IV per block is drawn here, never in the core.
//! The server encrypts on its own thread, in batches (`encryptor`).
//! [`PeerSource`] plugs peers (or a hosted cache) into the fetch planner.

pub mod book;
pub mod client;
mod encryptor;
mod http1;
pub mod server;
pub mod source;
mod store_source;

pub use book::{PeerBook, PeerRole, PeerStatus};
pub use client::{
    BlockRequest, ClientConfig, FetchedBlock, PeerClient, RawBlock, RetrievalError, Unverified,
};
pub use server::{
    BlockSource, MemorySource, RetrievalServer, ServerConfig, DEFAULT_MAX_ACTIVE_PER_CLIENT,
};
pub use source::{
    PeerLocator, PeerSource, SharedPeers, StaticPeers, BLOCKS_IN_FLIGHT_PER_RUN,
    GETBLKLIST_MIN_RUN, MAX_PEERS_PER_BLOCK, MAX_REQUESTS_PER_PEER, PEER_PENALTY,
};
