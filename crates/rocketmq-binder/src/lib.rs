//! RocketMQ for orderflow.
//!
//! - [`binder`]: [`RocketMqBinder`], the `binding::Binder` contract on a RocketMQ cluster.
//! - `admin.rs`: mqadmin's questions (topics, queues, offsets moved, messages found) on
//!   RocketMQ, through the client's admin API and a pull consumer.
//! - [`cluster`]: a name server and a broker (the Apache RocketMQ Rust servers) run as
//!   processes on loopback ports with a small store — for development (`orderflow rocketmq`)
//!   and for tests, which start, stop and kill them.

#![recursion_limit = "512"]

mod admin;
pub mod binder;
pub mod cluster;

pub use binder::{RocketMqBinder, RocketMqSettings};

pub use cluster::{ClusterError, ClusterOptions, LocalCluster};
