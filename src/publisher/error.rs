//! Publisher errors and the one place that maps them to HTTP statuses.

use http::{Response, StatusCode};

use crate::net::{full, Body};
use crate::proto::pccrc::build::BuildError;

/// What went wrong while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    /// The origin could not be reached or broke the HTTP exchange.
    #[error("origin request to {url} failed: {source}")]
    Origin {
        /// Upstream URL.
        url: String,
        /// hyper's error.
        source: hyper_util::client::legacy::Error,
    },
    /// The origin sent no response headers within `origin_timeout`.
    #[error("origin did not answer {url} within {secs} s")]
    OriginTimeout {
        /// Upstream URL.
        url: String,
        /// The timeout.
        secs: u64,
    },
    /// The origin stalled or failed mid-body while we hashed it.
    #[error("origin body of {url} failed: {reason}")]
    OriginBody {
        /// Upstream URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The body length differs from the origin's `Content-Length`.
    #[error("origin body of {url} was {got} bytes, Content-Length said {expected}")]
    OriginLength {
        /// Upstream URL.
        url: String,
        /// Announced length.
        expected: u64,
        /// Received length.
        got: u64,
    },
    /// The request target cannot be mapped onto the upstream.
    #[error("request target cannot be mapped onto the upstream")]
    BadTarget,
    /// Content information could not be encoded (a bug or an empty entity).
    #[error("cannot build content information: {0}")]
    Build(#[from] BuildError),
    /// The hashing thread died.
    #[error("hashing task failed: {0}")]
    Hashing(String),
}

impl PublisherError {
    /// Stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PublisherError::Origin { .. } => "origin",
            PublisherError::OriginTimeout { .. } => "origin_timeout",
            PublisherError::OriginBody { .. } => "origin_body",
            PublisherError::OriginLength { .. } => "origin_length",
            PublisherError::BadTarget => "bad_target",
            PublisherError::Build(_) => "build",
            PublisherError::Hashing(_) => "hashing",
        }
    }

    /// True when the origin is to blame (counted in `publisher_origin_errors`).
    pub fn is_origin(&self) -> bool {
        matches!(
            self,
            PublisherError::Origin { .. }
                | PublisherError::OriginTimeout { .. }
                | PublisherError::OriginBody { .. }
                | PublisherError::OriginLength { .. }
        )
    }

    /// The HTTP status for this error: origin down/broken → 502, origin slow
    /// → 504, bad request target → 400, our own failure → 500.
    pub fn status(&self) -> StatusCode {
        match self {
            PublisherError::Origin { source, .. } if is_timeout(source) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            PublisherError::Origin { .. }
            | PublisherError::OriginBody { .. }
            | PublisherError::OriginLength { .. } => StatusCode::BAD_GATEWAY,
            PublisherError::OriginTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            PublisherError::BadTarget => StatusCode::BAD_REQUEST,
            PublisherError::Build(_) | PublisherError::Hashing(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The response sent to the client: the status and a short text body
    /// (no URLs or internals).
    pub fn to_response(&self) -> Response<Body> {
        let status = self.status();
        let msg = match status {
            StatusCode::BAD_GATEWAY => "origin unreachable or broken\n",
            StatusCode::GATEWAY_TIMEOUT => "origin timed out\n",
            StatusCode::BAD_REQUEST => "bad request target\n",
            _ => "internal error\n",
        };
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(full(msg))
            .expect("static response is valid")
    }
}

/// Connect timeouts surface as connect errors whose source chain says "timed out".
fn is_timeout(e: &hyper_util::client::legacy::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        if s.to_string().contains("timed out") {
            return true;
        }
        src = s.source();
    }
    false
}
