//! Keep-alive honesty: when an answer goes out before its request body was read to the end (a
//! 401 from the token check, a 413, an unknown route), the server cannot reuse the connection, so
//! it says `Connection: close` instead of dropping the connection under a client that has already
//! written its next request.

use axum::body::Body;
use axum::http::{HeaderValue, Request, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

/// A request body that records when it has been read to its end.
struct Tracked {
    inner: Body,
    done: Arc<AtomicBool>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.done.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pub async fn close_if_body_unread(req: Request<Body>, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    // A request without a body (GET, or a zero length) never blocks keep-alive.
    let has_body = !http_body::Body::is_end_stream(&body);
    let done = Arc::new(AtomicBool::new(!has_body));
    let tracked = Body::new(Tracked {
        inner: body,
        done: done.clone(),
    });
    let mut res = next.run(Request::from_parts(parts, tracked)).await;
    if !done.load(Ordering::Acquire) {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}
