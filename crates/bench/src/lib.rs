//! `cargo xtask bench`: every benchmark of the workspace with its baselines in
//! one run on one broker, written up as a Markdown report with PNG plots.
//!
//! The runtime's throughput bench, the seed's Python client (kafka-python in a
//! virtual environment under `.cache/`), agent-gateway as a process driven by
//! its `agent-bench`, the schema codec's criterion bench and each service's own
//! `*-bench` command run in turn ([`run`]); every command prints one JSON
//! result line ([`figures`]); the report ([`report`]) has a section per
//! benchmark with a table (rate, p50/p99 latency, ratio to each baseline) and
//! a plot ([`plot`]), and [`report::check`] verifies a written report.

pub mod about;
pub mod codec;
pub mod command;
pub mod figures;
pub mod gateway;
pub mod machine;
pub mod plot;
pub mod report;
pub mod run;
pub mod seed;
pub mod suite;

/// The repository root (dora-testkit's).
pub use dora_testkit::repo_root;
