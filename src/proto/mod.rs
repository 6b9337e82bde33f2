//! The pure protocol core: wire formats, cryptography and state machines.
//!
//! Nothing in here touches the async runtime, sockets, the filesystem, a clock or a random
//! number generator: time, secrets and randomness are parameters. A CI check
//! (`.ci/check-pure-core`) enforces it. Every parser is total: `&[u8]` in,
//! `Result<_, DecodeError>` out, no panics, no allocation sized by an
//! unchecked wire count.

pub mod codec;
pub mod negotiate;
pub mod pccrc;
pub mod pccrd;
pub mod pccrr;
pub mod pchc;

pub use codec::{DecodeError, Reader, Writer};
