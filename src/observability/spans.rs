//! The client spans of a request: its upstream call, its calls to a provider, its store
//! operations. They exist for trace export only: their target is [`EXPORT_TARGET`], which
//! the log and the audit file leave out (so a log line keeps the request span as its
//! current span), and which is off altogether when no trace is exported, so the spans cost
//! nothing then. Fields name what was done, never with what: no token, cookie, code, key
//! or session id.

use tracing::Span;

/// The target of the spans that only the trace export sees.
pub const EXPORT_TARGET: &str = "gatehouse::export";

/// A call to an identity provider: `operation` is one of `metadata` (discovery, keys),
/// `code_exchange`, `userinfo`, `refresh`, `revocation`, `par`, `client_credentials`.
pub fn provider_call(operation: &'static str, provider: &str) -> Span {
    tracing::info_span!(
        target: EXPORT_TARGET,
        "provider",
        otel.name = operation_name("provider", operation),
        otel.kind = "client",
        gatehouse.provider = provider,
    )
}

/// One operation of the session store (`op`: the names `gatehouse_store_*` uses).
pub fn store_call(op: &'static str) -> Span {
    tracing::info_span!(
        target: EXPORT_TARGET,
        "store",
        otel.name = operation_name("store", op),
        otel.kind = "client",
        db.operation.name = op,
    )
}

/// The call to a route's upstream (the route's prefix, not the path: a path can carry
/// anything the browser put in it).
pub fn upstream_call(route: &str, method: &str) -> Span {
    tracing::info_span!(
        target: EXPORT_TARGET,
        "upstream",
        otel.name = format_args!("upstream {method}"),
        otel.kind = "client",
        http.request.method = method,
        gatehouse.route = route,
        http.response.status_code = tracing::field::Empty,
    )
}

fn operation_name(kind: &str, operation: &str) -> String {
    let mut name = String::with_capacity(kind.len() + 1 + operation.len());
    name.push_str(kind);
    name.push('.');
    name.push_str(operation);
    name
}
