//! `presence-gateway`: the axum service every `presenced` process runs.
//!
//! It terminates client WebSockets and REST calls, authenticates them,
//! applies rate limits, records device events in the store, fans presence
//! updates out to subscribed clients and exposes Prometheus metrics.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod budget;
pub mod config;
pub mod console;
pub mod error;
pub mod frame_meter;
pub mod frames;
pub mod hub;
pub mod listener;
pub mod metrics;
pub mod ops;
pub mod ratelimit;
pub mod rest;
pub mod rocketchat;
pub mod status_change_limits;
pub mod ws;
