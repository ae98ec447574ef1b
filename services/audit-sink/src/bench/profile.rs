//! Where a side's time goes, for the benchmark's explanation of its ratio:
//! the CPU of the PostgreSQL backends that served it (from `/proc`, the
//! local stack's server runs on this machine), the bytes it left in tables
//! and indexes per record, and the sink's time per step of a batch
//! (`audit_sink_db_seconds{operation=<step>}`).

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::{json, Value};

use super::schedstat_seconds;
use crate::metrics;

/// The steps of a stored batch, in the order the store runs them.
/// (`batch`: the wall time of whole stores, the partitions' steps overlapping in it.)
pub const STEPS: [&str; 7] = ["lock_heads", "copy_rows", "insert_rows", "copy_links", "move_heads", "commit", "batch"];

/// CPU seconds so far of every backend serving `user` on this database
/// (except the asking connection), by pid; empty when `/proc` does not show them.
pub async fn backend_cpu(probe: &tokio_postgres::Client, user: &str) -> Result<BTreeMap<i32, f64>> {
    let rows = probe
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND usename = $1 AND pid <> pg_backend_pid()",
            &[&user],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.get::<_, i32>(0))
        .filter_map(|pid| {
            let path = std::path::PathBuf::from(format!("/proc/{pid}/schedstat"));
            path.exists().then(|| (pid, schedstat_seconds(&path)))
        })
        .collect())
}

/// CPU seconds the backends used between two [`backend_cpu`] snapshots.
pub fn cpu_between(before: &BTreeMap<i32, f64>, after: &BTreeMap<i32, f64>) -> f64 {
    after.iter().map(|(pid, s)| s - before.get(pid).copied().unwrap_or(0.0)).sum()
}

/// Bytes of `tables` with their indexes and TOAST.
pub async fn stored_bytes(probe: &tokio_postgres::Client, tables: &[&str]) -> Result<i64> {
    let row = probe
        .query_one(
            "SELECT coalesce(sum(pg_total_relation_size(t::regclass)), 0)::int8 FROM unnest($1::text[]) AS t",
            &[&tables],
        )
        .await?;
    Ok(row.get(0))
}

/// Seconds spent so far in each step of the sink's batches.
pub fn steps() -> Vec<f64> {
    STEPS.iter().map(|s| metrics::db_seconds_total(s).1).collect()
}

/// Seconds per step between two [`steps`] snapshots, as a JSON object.
pub fn steps_between(before: &[f64], after: &[f64]) -> Value {
    let mut out = serde_json::Map::new();
    for ((name, b), a) in STEPS.iter().zip(before).zip(after) {
        out.insert(format!("{name}_s"), json!(round(a - b)));
    }
    Value::Object(out)
}

/// Rounds to milliseconds (for the result line).
pub fn round(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}
