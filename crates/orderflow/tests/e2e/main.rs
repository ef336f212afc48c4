//! The end-to-end tests, one binary (each module used to be a binary of its own, each
//! linking the whole application): the real app — or the real `orderflow` processes — on
//! each binder and storage, driven over HTTP. Helpers are in the `testkit` crate.

mod bench;
mod chaos;
mod compensation;
mod console;
mod dead_letters;
mod distributed;
mod flows;
mod http_api;
mod monitoring;
mod mqadmin;
mod restart;
mod retention;
mod traces;
