//! What gatehouse tells its operators: the log and its security events (`telemetry`, with
//! the catalogue in `events`), the audit file, and the Prometheus metrics. Nothing here
//! imports the handlers: they call in, with what is to be counted.

pub mod audit;
pub mod events;
pub mod metrics;
pub mod spans;
pub mod telemetry;
pub mod trace_export;
