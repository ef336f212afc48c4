//! RocketMQ for orderflow.
//!
//! - [`binder`]: [`RocketMqBinder`], the `binding::Binder` contract on a RocketMQ cluster.
//! - [`cluster`]: a name server and a broker (the Apache RocketMQ Rust servers) run as
//!   processes on loopback ports with a small store — for development (`orderflow rocketmq`)
//!   and for tests, which start, stop and kill them.

#![recursion_limit = "512"]

pub mod binder;
pub mod cluster;

pub use binder::{RocketMqBinder, RocketMqSettings};

pub use cluster::{ClusterError, LocalCluster};
