//! One integration-test binary (link time): real gatehouse, real Redis, real provider.

mod alerts;
mod audit;
mod browser;
mod callback;
mod client_auth;
mod config_cli;
mod cookie_names;
mod edge;
mod frontend;
mod helpers;
mod lifecycle;
mod login;
mod logout;
mod metrics;
mod presets;
mod providers;
mod proxy;
mod resilience;
mod session_cache;
mod store_contract;
mod tls;
mod topologies;
mod topology_bed;
mod trace_context;
mod websocket;
mod your_sessions;
