//! The edge: what is decided once per connection and per request, before any handler
//! runs — who the client is, whether the request head and body are within bounds, the trace
//! context, and the path every later step reads. Handlers read the results from the
//! request's extensions; they never look at the peer address, `X-Forwarded-For` or the raw
//! path themselves. The request middleware ([`front`]) runs these steps in order.

pub mod body;
mod client_ip;
mod connection;
mod front;
pub mod trace_context;

use actix_web::http::header::HeaderMap;

pub use client_ip::{client_ip, identify_client, ClientIp, X_FORWARDED_FOR};
pub use connection::{
    hold_connection, release_when_sent, watch_connection, ConnectionGuard, ConnectionWatch,
    HoldingBody, RequestTicket, KEEP_ALIVE,
};
pub use front::{attach_live_state, front, with_live_state};

use crate::error::{ApiError, Problem};

/// Bytes of all header lines together, as sent: `name: value` plus the line end.
pub fn head_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// 431 for a request head over `limit` bytes (`max_header_bytes`).
pub fn check_head_size(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    if head_bytes(headers) > limit {
        return Err(ApiError::new(Problem::HeaderTooLarge).detail(format!(
            "The request's header lines may be {limit} bytes together."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_bytes_counts_every_line() {
        let mut headers = HeaderMap::new();
        headers.insert(
            actix_web::http::header::HeaderName::from_static("x-a"),
            actix_web::http::header::HeaderValue::from_static("12345"),
        );
        assert_eq!(head_bytes(&headers), 3 + 5 + 4);
    }
}
