//! Criterion micro benchmarks of the hot paths, in `benches/hot_paths.rs`:
//! `cargo bench -p microbench` (results in `target/criterion/`). Kept in a crate of their own
//! so that criterion is built only for `cargo bench`, never for the test command.
