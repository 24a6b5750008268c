//! Request bodies, bounded at the edge: every body is read against a deadline, and the
//! bodies of gatehouse's own endpoints against a size that fits them. A client that sends
//! a body one byte at a time holds a connection, a descriptor and a task; without a
//! deadline a few hundred of them exhaust the process.
//!
//! Two rules (docs/decisions.md, "Request bodies"):
//! - gatehouse's own endpoints (`/auth/…`, health, the frontend's files) take small bodies
//!   whole: all of it within `server.body_timeout_ms`, at most [`OWN_BODY_CAP`] bytes
//!   ([`LOGOUT_TOKEN_CAP`] for back-channel logout);
//! - bodies streamed on (API routes, the dev server) may take as long as their size needs,
//!   at a minimum rate: `body_timeout_ms` for the start, plus one second for every
//!   `body_min_bytes_per_sec` bytes received (Apache's `mod_reqtimeout` rule).
//!
//! A body cut off for time answers 408, one over its cap 413, and either closes the
//! connection (the rest of the body is never read).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use actix_web::http::Version;
use actix_web::HttpMessage;
use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::error::{ApiError, Problem};

/// A logout token is a signed JWT of a few KB, form-encoded.
pub const LOGOUT_TOKEN_CAP: u64 = 16 * 1024;
/// gatehouse's other endpoints read no body; a small one (`{}`) is tolerated.
pub const OWN_BODY_CAP: u64 = 4 * 1024;

/// `server.body_timeout_ms` and `server.body_min_bytes_per_sec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    pub timeout: Duration,
    pub min_bytes_per_sec: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPolicy {
    /// Read whole by gatehouse itself: within the timeout, at most `cap` bytes.
    Whole { cap: u64 },
    /// Streamed on: at the minimum rate after the timeout's start.
    Streamed,
}

/// How a body was cut off, kept for the edge to answer for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyCut {
    TooSlow,
    TooLarge,
}

impl BodyCut {
    pub fn problem(self, limits: BodyLimits) -> ApiError {
        match self {
            BodyCut::TooSlow => ApiError::new(Problem::BodyTimeout).detail(format!(
                "The request body must arrive within {} ms, and then at {} bytes per second or more.",
                limits.timeout.as_millis(),
                limits.min_bytes_per_sec
            )),
            BodyCut::TooLarge => ApiError::new(Problem::PayloadTooLarge)
                .detail("This endpoint takes a small request body only."),
        }
    }
}

/// Where a cut is recorded (the edge holds the other end), with the rest of the body.
#[derive(Default)]
pub struct CutState {
    cut: Cell<Option<BodyCut>>,
    rest: Cell<Option<Payload>>,
}

impl CutState {
    /// How the body was cut off, if it was, and its unread rest: kept with the response
    /// until it is sent, so that actix sees an unread body and closes the connection
    /// instead of draining a chunked one (which a trickle would make last for ever).
    pub fn take(&self) -> Option<(BodyCut, HeldBody)> {
        let cut = self.cut.get()?;
        Some((
            cut,
            HeldBody {
                _rest: self.rest.take(),
            },
        ))
    }
}

/// The unread rest of a body that was cut off (see [`CutState::take`]).
pub struct HeldBody {
    _rest: Option<Payload>,
}

impl HeldBody {
    /// `response`'s body, holding the rest of the request's until it has been sent: actix
    /// decides between draining and closing when the response body ends.
    pub fn keep_until_sent(self, body: BoxBody) -> BoxBody {
        crate::edge::HoldingBody::boxed(body, self)
    }
}

pub type CutFlag = Rc<CutState>;

/// The policy for a request to `path` (its normal form): `streamed` when an API route or
/// the dev server will stream the body on.
pub fn policy_for(path: &str, streamed: bool) -> BodyPolicy {
    if path == "/auth/backchannel-logout" {
        BodyPolicy::Whole {
            cap: LOGOUT_TOKEN_CAP,
        }
    } else if streamed && !path.starts_with("/auth/") {
        BodyPolicy::Streamed
    } else {
        BodyPolicy::Whole { cap: OWN_BODY_CAP }
    }
}

/// Whether the request may carry a body at all (HTTP/1: a length or chunked encoding;
/// HTTP/2 says so only with its frames). A WebSocket handshake's "body" is the socket,
/// which its own idle limit bounds.
pub fn may_have_body(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    if headers.contains_key(UPGRADE) {
        return false;
    }
    req.version() == Version::HTTP_2
        || headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .is_some_and(|value| value.as_bytes() != b"0")
}

/// Puts the deadline (and the cap) on the request's body. A declared length over the cap
/// is refused at once, before anything is read.
pub fn guard(
    req: &mut ServiceRequest,
    policy: BodyPolicy,
    limits: BodyLimits,
) -> Result<CutFlag, ApiError> {
    if let BodyPolicy::Whole { cap } = policy {
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > cap) {
            return Err(BodyCut::TooLarge.problem(limits));
        }
    }
    let cut = CutFlag::default();
    let started = Instant::now();
    let body = DeadlineBody {
        inner: req.take_payload(),
        sleep: Box::pin(tokio::time::sleep_until(started + limits.timeout)),
        started,
        received: 0,
        policy,
        limits,
        cut: cut.clone(),
        done: false,
    };
    req.set_payload(Payload::Stream {
        payload: Box::pin(body),
    });
    Ok(cut)
}

/// The instant by which a streamed body that has `received` bytes must have sent more.
fn streamed_deadline(started: Instant, received: u64, limits: BodyLimits) -> Instant {
    let rate = limits.min_bytes_per_sec.max(1);
    let earned = Duration::from_secs(received / rate)
        + Duration::from_nanos((received % rate) * 1_000_000_000 / rate);
    started + limits.timeout + earned
}

struct DeadlineBody {
    inner: Payload,
    sleep: Pin<Box<Sleep>>,
    started: Instant,
    received: u64,
    policy: BodyPolicy,
    limits: BodyLimits,
    cut: CutFlag,
    done: bool,
}

impl DeadlineBody {
    fn cut_off(&mut self, cut: BodyCut) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.done = true;
        self.cut.cut.set(Some(cut));
        self.cut
            .rest
            .set(Some(std::mem::replace(&mut self.inner, Payload::None)));
        let error = match cut {
            BodyCut::TooSlow => PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request body is too slow",
            )),
            BodyCut::TooLarge => PayloadError::Overflow,
        };
        Poll::Ready(Some(Err(error)))
    }
}

impl Stream for DeadlineBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.received += chunk.len() as u64;
                match this.policy {
                    BodyPolicy::Whole { cap } if this.received > cap => {
                        return this.cut_off(BodyCut::TooLarge);
                    }
                    BodyPolicy::Whole { .. } => {}
                    BodyPolicy::Streamed => {
                        let deadline = streamed_deadline(this.started, this.received, this.limits);
                        this.sleep.as_mut().reset(deadline);
                    }
                }
                return Poll::Ready(Some(Ok(chunk)));
            }
            Poll::Ready(end) => {
                this.done = end.is_none();
                return Poll::Ready(end);
            }
            Poll::Pending => {}
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                tracing::info!(
                    received = this.received,
                    "request body cut off: it came too slowly"
                );
                this.cut_off(BodyCut::TooSlow)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_gets_its_policy() {
        assert_eq!(
            policy_for("/auth/backchannel-logout", false),
            BodyPolicy::Whole {
                cap: LOGOUT_TOKEN_CAP
            }
        );
        assert_eq!(
            policy_for("/auth/logout", true),
            BodyPolicy::Whole { cap: OWN_BODY_CAP }
        );
        assert_eq!(
            policy_for("/index.html", false),
            BodyPolicy::Whole { cap: OWN_BODY_CAP }
        );
        assert_eq!(policy_for("/api/orders", true), BodyPolicy::Streamed);
    }

    #[test]
    fn a_streamed_body_earns_a_second_per_min_rate_bytes() {
        let limits = BodyLimits {
            timeout: Duration::from_secs(10),
            min_bytes_per_sec: 500,
        };
        let start = Instant::now();
        let at = |received| streamed_deadline(start, received, limits) - start;
        assert_eq!(at(0), Duration::from_secs(10));
        assert_eq!(at(250), Duration::from_millis(10_500));
        assert_eq!(at(500), Duration::from_secs(11));
        assert_eq!(at(10 * 1024 * 1024), Duration::from_millis(20_981_520));
        // A trickle of a byte every 2 s earns 2 ms per byte: it falls behind at once.
        assert!(at(5) < Duration::from_secs(10) + Duration::from_millis(11));
    }
}
