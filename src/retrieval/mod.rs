//! MS-PCCRR over HTTP: the retrieval server (a hyper handler over a
//! [`BlockSource`]) and [`PeerClient`], which fetches and verifies blocks
//! from peers and hosted caches.
//!
//! Both are thin drivers around [`crate::proto::pccrr`]: decode → store call
//! → encode on the server, encode → POST → decode → decrypt + verify on the
//! client. The random IV per block is drawn here, never in the core.

pub mod client;
pub mod server;
mod store_source;

pub use client::{BlockRequest, ClientConfig, FetchedBlock, PeerClient, RetrievalError};
pub use server::{
    BlockSource, MemorySource, RetrievalServer, ServerConfig, DEFAULT_MAX_ACTIVE_PER_CLIENT,
};
