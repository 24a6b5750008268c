//! gatehouse: a Backend-for-Frontend session server.
//!
//! The browser only ever holds an opaque, HttpOnly session cookie; gatehouse runs the
//! OpenID Connect login, keeps the tokens server-side (encrypted per session) and attaches
//! them to API calls it proxies.

pub mod cli;
pub mod client_key;
pub mod clock;
pub mod config;
pub mod dpop;
pub mod drain;
pub mod edge;
pub mod error;
pub mod file_watch;
pub mod frontend;
pub mod live;
pub mod observability;
pub mod oidc;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod routes;
pub mod session;
pub mod startup;
pub mod state;
pub mod tls;
pub mod tls_files;
