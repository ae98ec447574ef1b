//! The schema codec's criterion benchmark (`cargo bench -p dora-schema --bench
//! codec`), its estimates read from criterion's own files (`CRITERION_HOME`
//! pointed at a fresh folder): operations per second, each Avro path against
//! serde_json on the same `AgentEvent` in its group.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::command;
use crate::figures::{BenchOutput, Figure};
use crate::run::Options;
use crate::suite::Outcome;

/// Runs the codec benchmark and reads its estimates.
pub async fn measure(opts: &Options) -> Result<Outcome> {
    let home = std::env::temp_dir().join(dora_testkit::unique("dora-bench-criterion"));
    // Quick: few samples and resamples (criterion's analysis is slow in a debug build).
    let (warm_up, measure, samples, resamples) =
        if opts.quick { ("0.1", "0.2", "10", "1000") } else { ("1", "3", "50", "100000") };
    let args = [
        "--noplot", "--warm-up-time", warm_up, "--measurement-time", measure, "--sample-size", samples,
        "--nresamples", resamples,
    ];
    let mut cmd = opts.cargo_bench("dora-schema", "codec", &args);
    cmd.env("CRITERION_HOME", &home);
    let result = command::run(cmd, "the codec bench", std::time::Duration::from_secs(if opts.quick { 240 } else { 900 })).await;
    let figures = result.and_then(|_| read_estimates(&home));
    let _ = std::fs::remove_dir_all(&home);
    let figures = figures?;
    if figures.is_empty() {
        bail!("criterion wrote no estimates");
    }
    Ok(Outcome::Measured(BenchOutput { figures, ..Default::default() }))
}

/// Every `<group>/<function>/new/{benchmark,estimates}.json` under `home`.
pub fn read_estimates(home: &Path) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for group in std::fs::read_dir(home).with_context(|| format!("reading {}", home.display()))?.flatten() {
        let Ok(functions) = std::fs::read_dir(group.path()) else { continue };
        for function in functions.flatten() {
            let new = function.path().join("new");
            let (Ok(bench), Ok(estimates)) =
                (std::fs::read_to_string(new.join("benchmark.json")), std::fs::read_to_string(new.join("estimates.json")))
            else {
                continue;
            };
            figures.push(figure(&serde_json::from_str(&bench)?, &serde_json::from_str(&estimates)?)?);
        }
    }
    figures.sort_by(|a, b| (&a.group, a.baseline, &a.name).cmp(&(&b.group, b.baseline, &b.name)));
    Ok(figures)
}

fn figure(bench: &Value, estimates: &Value) -> Result<Figure> {
    let group = bench["group_id"].as_str().context("group_id")?.to_string();
    let name = bench["function_id"].as_str().unwrap_or("").to_string();
    let mean_ns = estimates["mean"]["point_estimate"].as_f64().context("mean estimate")?;
    Ok(Figure {
        baseline: name == "serde_json",
        group,
        name,
        rate: 1e9 / mean_ns.max(1e-9),
        unit: "ops/s".into(),
        p50_ms: None,
        p99_ms: None,
        runs: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criterion_estimates_become_rates_with_serde_json_as_baseline() {
        let home = tempfile::tempdir().unwrap();
        for (function, ns) in [("serde_json", 2000.0), ("avro_body", 500.0)] {
            let new = home.path().join("agent_event_decode").join(function).join("new");
            std::fs::create_dir_all(&new).unwrap();
            let bench = serde_json::json!({"group_id": "agent_event/decode", "function_id": function});
            std::fs::write(new.join("benchmark.json"), bench.to_string()).unwrap();
            let est = serde_json::json!({"mean": {"point_estimate": ns}});
            std::fs::write(new.join("estimates.json"), est.to_string()).unwrap();
        }
        let figures = read_estimates(home.path()).unwrap();
        assert_eq!(figures.len(), 2);
        assert_eq!((figures[0].name.as_str(), figures[0].rate), ("avro_body", 2_000_000.0));
        assert!(figures[1].baseline && figures[1].rate == 500_000.0);
    }
}
