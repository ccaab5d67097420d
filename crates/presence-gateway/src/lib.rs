//! `presence-gateway`: the axum service every `presenced` process runs.
//!
//! It terminates client WebSockets and REST calls, authenticates them,
//! applies rate limits, records device events in the store, fans presence
//! updates out to subscribed clients and exposes Prometheus metrics.
#![forbid(unsafe_code)]

pub mod auth;
pub mod metrics;
pub mod ratelimit;
