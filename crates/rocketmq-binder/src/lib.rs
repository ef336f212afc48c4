//! RocketMQ for orderflow.
//!
//! - [`cluster`]: a name server and a broker (the Apache RocketMQ Rust servers) run as
//!   processes on loopback ports with a small store — for development (`orderflow rocketmq`)
//!   and for tests, which start, stop and kill them.

pub mod cluster;

pub use cluster::{ClusterError, LocalCluster};
