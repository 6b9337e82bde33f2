//! [`IdleTimeout`]: an HTTP body from an origin that ends with an error when
//! the origin sends nothing for too long, so a stalled origin cannot hold a
//! client's response, a fetch or a connection slot forever. The publisher
//! wraps relayed bodies in it; the proxy wraps every origin body it reads
//! (pass-through, content information, block ranges).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

/// A body that fails with [`std::io::ErrorKind::TimedOut`] when the inner
/// body yields no frame for `idle` while it is being waited for.
///
/// Time the reader spends not polling does not count: the timer is armed
/// when a poll finds no frame ready, not when a frame is handed on, and the
/// one timer is re-armed (never re-allocated) per wait. Errors of the inner
/// body pass through as [`std::io::Error::other`].
pub struct IdleTimeout<B> {
    inner: B,
    sleep: Pin<Box<Sleep>>,
    /// The timer is armed for the current wait.
    waiting: bool,
    idle: Duration,
}

impl<B> IdleTimeout<B> {
    /// Wrap `inner`, allowing `idle` between frames.
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            sleep: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            idle,
        }
    }
}

impl<B> std::fmt::Debug for IdleTimeout<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleTimeout")
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        // Every field is Unpin (the timer is boxed, `B: Unpin`).
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let deadline = tokio::time::Instant::now() + this.idle;
                    this.sleep.as_mut().reset(deadline);
                }
                match this.sleep.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("origin sent nothing for {:?}", this.idle),
                    )))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::convert::Infallible;

    /// A body whose next frame is not ready at the first poll (it wakes
    /// itself at once), like an origin connection that was idle because
    /// the client was not reading; `None`: never ready.
    struct Late {
        frame: Option<Bytes>,
        polled: bool,
    }

    impl http_body::Body for Late {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.frame.is_none() {
                return Poll::Pending;
            }
            if !std::mem::replace(&mut self.polled, true) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(self.frame.take().map(|b| Ok(Frame::data(b))))
        }
    }

    fn wrap(frame: Option<&'static [u8]>) -> IdleTimeout<Late> {
        let late = Late {
            frame: frame.map(Bytes::from_static),
            polled: false,
        };
        IdleTimeout::new(late, Duration::from_millis(200))
    }

    #[tokio::test]
    async fn time_the_reader_spends_not_polling_does_not_count() {
        let mut body = wrap(Some(b"late"));
        // The reader asks for nothing for longer than the idle timeout
        // before asking for the first frame.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "late");
    }

    #[tokio::test]
    async fn a_body_that_sends_nothing_ends_with_timed_out() {
        let mut body = wrap(None);
        let start = tokio::time::Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(200));
    }
}
