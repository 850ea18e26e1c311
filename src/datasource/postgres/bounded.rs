//! The connection's socket, read through a watch on the size of every message the server sends.
//!
//! tokio-postgres reserves a whole message's length as soon as it has read the message's header,
//! so one 300 MB value would grow the gateway by that much (and more, as the row is decoded and
//! encoded) before any row or byte cap is consulted. This wrapper reads each backend message's
//! header (a type byte and a 4-byte length) as the bytes go by and fails the read when a message
//! is longer than the limit: the codec never sees that header, nothing is reserved, the
//! connection ends and is discarded, and the statement answers "result too large".
//!
//! It also remembers the longest message that did pass, so a connection whose read buffer grew
//! for a large row is discarded rather than kept in the pool with that memory.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the watch saw, shared with the connection's owner.
#[derive(Debug, Default)]
pub struct Watch {
    /// A message longer than the limit arrived; the connection is gone.
    pub oversized: AtomicBool,
    /// The longest message body that passed.
    pub largest: AtomicUsize,
}

pub struct Bounded<S> {
    inner: S,
    limit: usize,
    watch: Arc<Watch>,
    /// Bytes of the current message's header read so far.
    header: [u8; 5],
    header_len: usize,
    /// Bytes of the current message's body still to come.
    body_left: usize,
}

impl<S> Bounded<S> {
    /// Bounds every backend message's body to `limit` bytes.
    pub fn new(inner: S, limit: usize, watch: Arc<Watch>) -> Self {
        Bounded {
            inner,
            limit,
            watch,
            header: [0; 5],
            header_len: 0,
            body_left: 0,
        }
    }

    /// Follows the message framing through `bytes`; an error when a header announces a message
    /// over the limit.
    fn follow(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (5 - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len < 5 {
                break;
            }
            self.header_len = 0;
            let len = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]) as usize;
            let body = len.saturating_sub(4);
            if body > self.limit {
                self.watch.oversized.store(true, Ordering::Release);
                return Err(io::Error::other(format!(
                    "the server sent a message of {body} bytes, over the limit of {}",
                    self.limit
                )));
            }
            self.watch.largest.fetch_max(body, Ordering::AcqRel);
            self.body_left = body;
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let followed = this.follow(&buf.filled()[before..]);
        if let Err(e) = followed {
            // Nothing of what was just read reaches the codec.
            buf.set_filled(before);
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Over a TLS stream, the stream's channel binding is what SCRAM authentication binds to.
impl<S: tokio_postgres::tls::TlsStream + Unpin> tokio_postgres::tls::TlsStream for Bounded<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        self.inner.channel_binding()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(ty: u8, body: usize) -> Vec<u8> {
        let mut m = vec![ty];
        m.extend_from_slice(&((body + 4) as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(b'x', body));
        m
    }

    #[test]
    fn messages_are_followed_across_any_split_and_the_longest_is_remembered() {
        let watch = Arc::new(Watch::default());
        let mut b = Bounded::new((), 100, watch.clone());
        let mut stream = message(b'D', 10);
        stream.extend(message(b'D', 100));
        stream.extend(message(b'C', 0));
        // Fed one byte at a time, then in odd chunks: the framing is the same.
        for chunk in stream.chunks(1) {
            b.follow(chunk).unwrap();
        }
        for chunk in stream.chunks(7) {
            b.follow(chunk).unwrap();
        }
        assert_eq!(watch.largest.load(Ordering::Acquire), 100);
        assert!(!watch.oversized.load(Ordering::Acquire));
    }

    #[test]
    fn a_header_announcing_more_than_the_limit_fails_before_its_body() {
        let watch = Arc::new(Watch::default());
        let mut b = Bounded::new((), 100, watch.clone());
        b.follow(&message(b'D', 50)).unwrap();
        // Only the header of the big message: the error comes before any of its body.
        let big = message(b'D', 101);
        assert!(b.follow(&big[..5]).is_err());
        assert!(watch.oversized.load(Ordering::Acquire));
    }
}
