//! The ONE place proxy errors become HTTP statuses.
//!
//! Every error has a blame: the origin (502, or 504 for timeouts), the client
//! (4xx) or ourselves (500). Bodies are one short line saying what happened;
//! they never carry secrets.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::fetch::{FetchError, SourceError};
use crate::net::{full, Body};

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The origin (unreachable, slow, or answering nonsense).
    Origin,
    /// The client's request.
    Client,
    /// This daemon.
    Local,
}

/// Why a proxy request failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Origin-form request but no `upstream` is configured.
    #[error("no upstream is configured for origin-form requests")]
    NoUpstream,
    /// Absolute-form or CONNECT request while `forward = false`.
    #[error("forward proxying is disabled")]
    ForwardDisabled,
    /// The request cannot be forwarded as written.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The client's single range lies outside the object.
    #[error("range not satisfiable (object is {len} bytes)")]
    RangeNotSatisfiable {
        /// Object length.
        len: u64,
    },
    /// The origin could not be reached or failed mid-answer.
    #[error("origin: {0}")]
    Origin(#[from] SourceError),
    /// Content information larger than `max_content_info`.
    #[error("origin sent {len} bytes of content information; the limit is {max}")]
    ContentInfoTooLarge {
        /// Announced or received length.
        len: u64,
        /// Configured limit.
        max: u64,
    },
    /// The planner could not produce verified bytes.
    #[error("{0}")]
    Fetch(#[from] FetchError),
    /// A CONNECT target could not be reached.
    #[error("cannot connect to {target}: {detail}")]
    Tunnel {
        /// host:port asked for.
        target: String,
        /// The IO error, as text.
        detail: String,
    },
}

impl ProxyError {
    /// Who is to blame.
    pub fn blame(&self) -> Blame {
        match self {
            ProxyError::NoUpstream | ProxyError::ForwardDisabled | ProxyError::BadRequest(_) => {
                Blame::Client
            }
            ProxyError::RangeNotSatisfiable { .. } => Blame::Client,
            ProxyError::Origin(_)
            | ProxyError::ContentInfoTooLarge { .. }
            | ProxyError::Fetch(_)
            | ProxyError::Tunnel { .. } => Blame::Origin,
        }
    }

    /// Short stable name for metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoUpstream => "no_upstream",
            ProxyError::ForwardDisabled => "forward_disabled",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            ProxyError::Origin(e) => e.kind(),
            ProxyError::ContentInfoTooLarge { .. } => "content_info_too_large",
            ProxyError::Fetch(e) => e.kind(),
            ProxyError::Tunnel { .. } => "tunnel",
        }
    }

    /// The HTTP status the client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoUpstream => StatusCode::NOT_FOUND,
            ProxyError::ForwardDisabled => StatusCode::FORBIDDEN,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ProxyError::Origin(SourceError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Fetch(FetchError::Source {
                error: SourceError::Timeout { .. },
                ..
            }) => StatusCode::GATEWAY_TIMEOUT,
            _ => match self.blame() {
                Blame::Origin => StatusCode::BAD_GATEWAY,
                Blame::Client => StatusCode::BAD_REQUEST,
                Blame::Local => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// The response sent to the client.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let mut resp = Response::new(full(format!("branchcache: {self}\n")));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let ProxyError::RangeNotSatisfiable { len } = self {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_failures_are_502_and_timeouts_504() {
        let down = ProxyError::Origin(SourceError::Connect {
            what: "origin",
            detail: "refused".into(),
        });
        assert_eq!(down.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(down.blame(), Blame::Origin);
        let slow = ProxyError::Origin(SourceError::Timeout { what: "origin" });
        assert_eq!(slow.status(), StatusCode::GATEWAY_TIMEOUT);
        let lying = ProxyError::Fetch(FetchError::Mismatch {
            segment: "ab".into(),
            block: 1,
            source_kind: "origin",
        });
        assert_eq!(lying.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn client_errors_are_4xx_with_a_short_body() {
        let r = ProxyError::RangeNotSatisfiable { len: 10 }.into_response();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes */10");
        assert_eq!(ProxyError::ForwardDisabled.status(), StatusCode::FORBIDDEN);
        assert!(ProxyError::BadRequest("x").status().is_client_error());
    }
}
