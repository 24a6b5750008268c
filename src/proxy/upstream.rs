//! The API proxy's HTTP client: hyper's pooled client, used directly. reqwest (kept for the
//! provider, the dev server and WebSocket handshakes) costs a client clone, a `Url` parse
//! and its redirect and retry layers on every call; on the proxy's hot path that was about
//! a tenth of gatehouse's CPU per call (BENCHMARKS.md).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyDataStream, BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::tls::tls_failure;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request body on its way upstream: empty, or the browser's upload as it streams in.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;
pub type UpstreamResponse = http::Response<Incoming>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_IDLE: Duration = Duration::from_secs(60);
/// The longest wait for one more piece of a response body before the stream is cut.
pub const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// A pooled client for one TLS setting. Cheap to share: the pool lives behind an `Arc`.
#[derive(Clone)]
pub struct UpstreamClient {
    inner: Client<HttpsConnector<HttpConnector>, UpstreamBody>,
}

impl UpstreamClient {
    /// `tls` is used as given, ALPN included: whether h2 may be negotiated is its choice.
    pub fn new(tls: rustls::ClientConfig) -> Self {
        let mut http = HttpConnector::new();
        // The scheme is the TLS layer's to check (http and https both pass through it).
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = HttpsConnector::from((http, tls));
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Self { inner }
    }

    pub fn send(
        &self,
        request: http::Request<UpstreamBody>,
    ) -> hyper_util::client::legacy::ResponseFuture {
        self.inner.request(request)
    }

    /// Sends a request that has no body (`build` makes it afresh for each attempt), and
    /// when it is idempotent sends it again, at most [`STALE_RETRIES`] times, while the
    /// answer shows a pooled connection the upstream had already given up on.
    ///
    /// Servers close idle keep-alive connections on their own clock (Node and actix after
    /// 5 s, answering 408 to a connection that never sent a request), and a request can
    /// cross that close on the wire. hyper resends only a request it had not yet written;
    /// one that was written gets the 408, or no answer at all. Either way the application
    /// never saw it, so an idempotent request is safe to send again (RFC 9110 §9.2.2, and
    /// what browsers, Go and .NET clients do).
    pub async fn send_replayable(
        &self,
        build: impl Fn() -> http::Request<UpstreamBody>,
        idempotent: bool,
    ) -> Result<UpstreamResponse, hyper_util::client::legacy::Error> {
        let mut retries_left = if idempotent { STALE_RETRIES } else { 0 };
        loop {
            let result = self.inner.request(build()).await;
            if retries_left == 0 || !gave_up_connection(&result) {
                return result;
            }
            retries_left -= 1;
        }
    }
}

/// Resends after a stale pooled connection: each pooled connection can be stale, and a
/// fresh one is opened once the pool has none left.
const STALE_RETRIES: u8 = 2;

/// Whether the upstream closed the connection instead of handling the request: it answered
/// 408, or closed (or reset) it before a response began. Not a failure to connect, which
/// a retry would only repeat.
fn gave_up_connection(
    result: &Result<UpstreamResponse, hyper_util::client::legacy::Error>,
) -> bool {
    let error = match result {
        Ok(response) => return response.status() == http::StatusCode::REQUEST_TIMEOUT,
        Err(error) if error.is_connect() => return false,
        Err(error) => error,
    };
    causes(error).any(|cause| {
        cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(|e| e.is_incomplete_message() || e.is_canceled())
            || io_kind(cause).is_some_and(|kind| {
                matches!(
                    kind,
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::UnexpectedEof
                )
            })
    })
}

/// An error and its sources, outermost first.
fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |cause| cause.source())
}

fn io_kind(error: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    error
        .downcast_ref::<std::io::Error>()
        .map(std::io::Error::kind)
}

pub fn empty_body() -> UpstreamBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body from a stream of chunks (the browser's upload).
pub fn streamed_body<S>(chunks: S) -> UpstreamBody
where
    S: Stream<Item = Result<Bytes, BoxError>> + Send + 'static,
{
    StreamBody::new(chunks.map(|chunk| chunk.map(Frame::data))).boxed_unsync()
}

/// Why a request never got a response head.
#[derive(Debug, PartialEq, Eq)]
pub enum SendFailure {
    Timeout,
    /// rustls's text: names the failure (unknown issuer, alert), never the URL.
    Tls(String),
    Unreachable(&'static str),
}

/// Reads a transport error without its text (which carries the upstream URL).
pub fn classify(error: &hyper_util::client::legacy::Error) -> SendFailure {
    if let Some(tls) = tls_failure(error) {
        return SendFailure::Tls(tls.to_string());
    }
    if causes(error).any(|cause| io_kind(cause) == Some(std::io::ErrorKind::TimedOut)) {
        return SendFailure::Timeout;
    }
    SendFailure::Unreachable(if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    })
}

/// The response body as a stream of chunks, each awaited at most [`READ_TIMEOUT`]. The
/// timer exists only while the stream waits: a body that is already in costs none.
pub fn body_chunks(body: Incoming) -> ReadTimeout<BodyDataStream<Incoming>> {
    ReadTimeout {
        inner: body.into_data_stream(),
        timer: None,
        limit: READ_TIMEOUT,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BodyReadError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Read(E),
    #[error("the upstream sent no more of its response for {0:?}")]
    TimedOut(Duration),
}

pub struct ReadTimeout<S> {
    inner: S,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    limit: Duration,
}

impl<S, E> Stream for ReadTimeout<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error + 'static,
{
    type Item = Result<Bytes, BodyReadError<E>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(item) => {
                this.timer = None;
                Poll::Ready(item.map(|chunk| chunk.map_err(BodyReadError::Read)))
            }
            Poll::Pending => {
                let limit = this.limit;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.timer = None;
                        Poll::Ready(Some(Err(BodyReadError::TimedOut(limit))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stalled_body_is_cut_after_the_read_timeout_and_a_flowing_one_is_not() {
        let limit = Duration::from_millis(400);
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let inner = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        let mut stream = ReadTimeout {
            inner: Box::pin(inner),
            timer: None,
            limit,
        };
        // Chunks 50 ms apart: each wait is well under the limit, all of them together over it.
        let started = tokio::time::Instant::now();
        for _ in 0..10 {
            let sender = sender.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                sender.send(Ok(Bytes::from_static(b"x"))).await.ok();
            });
            let chunk = stream.next().await.expect("a chunk").expect("no timeout");
            assert_eq!(chunk, Bytes::from_static(b"x"));
        }
        assert!(started.elapsed() > limit);
        let stalled = tokio::time::Instant::now();
        let error = stream
            .next()
            .await
            .expect("an item")
            .expect_err("a timeout");
        assert!(matches!(error, BodyReadError::TimedOut(_)));
        assert!(stalled.elapsed() >= limit);
        drop(sender);
    }
}
