//! What a benchmark measured, and the one-JSON-line contract every benchmark
//! command follows: the last line of its stdout that is a JSON object,
//!
//! ```json
//! {"bench": "report-ingest", "results": [
//!   {"group": "gRPC submissions", "name": "report-ingest", "rate": 812.5, "unit": "submissions/s",
//!    "p50_ms": 9.1, "p99_ms": 31.0, "baseline": false},
//!   {"group": "gRPC submissions", "name": "bare FutureProducer", "rate": 2410.0, "unit": "submissions/s",
//!    "baseline": true}],
//!  "latency_curve": [{"offered_per_s": 500, "acked_per_s": 498, "p50_ms": 2.1, "p99_ms": 8.0}]}
//! ```
//!
//! Each non-baseline figure is compared with every baseline of its group. A
//! line without `results` is read leniently: each number named `*_per_s` is a
//! figure (a baseline when its name says `bare` or `baseline`), every other
//! number is shown as it is.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One measured rate (and its latency where it applies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// What is compared within: subjects and their baselines share a group.
    pub group: String,
    /// The client or path measured.
    pub name: String,
    /// Operations per second.
    pub rate: f64,
    /// The operation, e.g. `records/s`.
    pub unit: String,
    /// Median latency, milliseconds, where it applies.
    #[serde(default)]
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, milliseconds, where it applies.
    #[serde(default)]
    pub p99_ms: Option<f64>,
    /// A baseline (what users would pick instead) rather than the platform.
    #[serde(default)]
    pub baseline: bool,
    /// Every round's rate, when the figure is the best of several.
    #[serde(default)]
    pub runs: Vec<f64>,
}

/// Latency at one offered load (the gateway's curve).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadPoint {
    /// Load offered, operations per second.
    pub offered_per_s: f64,
    /// Load acknowledged, operations per second.
    pub acked_per_s: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// 99.9th percentile latency, milliseconds.
    #[serde(default)]
    pub p999_ms: Option<f64>,
}

/// A benchmark command's result line, read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchOutput {
    /// The figures.
    pub figures: Vec<Figure>,
    /// Latency against offered load, if measured.
    pub curve: Vec<LoadPoint>,
    /// Every other field of the line, shown in the report as it is.
    pub details: Map<String, Value>,
}

/// Reads the last JSON-object line of `stdout`; `None` when there is none.
pub fn parse_output(stdout: &str) -> Result<Option<BenchOutput>> {
    let Some(line) = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('{') && serde_json::from_str::<Map<String, Value>>(l).is_ok())
    else {
        return Ok(None);
    };
    let mut object: Map<String, Value> = serde_json::from_str(line)?;
    let mut out = BenchOutput::default();
    if let Some(results) = object.remove("results") {
        out.figures = serde_json::from_value(results).context("the `results` of a benchmark line")?;
    } else {
        out.figures = lenient_figures(&object);
        object.retain(|k, v| !(v.is_number() && k.ends_with("_per_s")));
    }
    if let Some(curve) = object.remove("latency_curve") {
        out.curve = serde_json::from_value(curve).context("the `latency_curve` of a benchmark line")?;
    }
    object.remove("bench");
    out.details = object;
    if out.figures.is_empty() {
        bail!("the result line has no figures: {line}");
    }
    Ok(Some(out))
}

fn lenient_figures(object: &Map<String, Value>) -> Vec<Figure> {
    object
        .iter()
        .filter_map(|(name, value)| {
            let rate = value.as_f64()?;
            let stem = name.strip_suffix("_per_s")?;
            Some(Figure {
                group: "results".into(),
                name: stem.replace('_', " "),
                rate,
                unit: "/s".into(),
                p50_ms: None,
                p99_ms: None,
                baseline: stem.contains("bare") || stem.contains("baseline"),
                runs: Vec::new(),
            })
        })
        .collect()
}

/// `subject.rate / baseline.rate`.
pub fn ratio(subject: &Figure, baseline: &Figure) -> Option<f64> {
    (baseline.rate > 0.0).then(|| subject.rate / baseline.rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_json_line_counts() {
        let out = "warming up\n{\"not\": \"this\"}\nnoise {\n{\"bench\":\"x\",\"results\":[{\"group\":\"g\",\"name\":\"a\",\"rate\":10.0,\"unit\":\"records/s\",\"p50_ms\":1.5}],\"record_bytes\":300,\"verify_per_s\":9}\n";
        let parsed = parse_output(out).unwrap().unwrap();
        assert_eq!(parsed.figures.len(), 1);
        assert_eq!(parsed.figures[0].p50_ms, Some(1.5));
        assert!(!parsed.figures[0].baseline);
        assert_eq!(parsed.details["record_bytes"], 300);
        assert_eq!(parsed.details["verify_per_s"], 9);
        assert!(!parsed.details.contains_key("bench"));
    }

    #[test]
    fn no_json_line_is_no_result_and_a_line_without_figures_is_an_error() {
        assert_eq!(parse_output("done\n").unwrap(), None);
        assert!(parse_output("{\"bench\":\"x\",\"note\":\"nothing\"}").is_err());
    }

    #[test]
    fn flat_lines_are_read_by_their_names() {
        let out = r#"{"bench":"report-ingest","grpc_submissions_per_s":800.0,"bare_producer_submissions_per_s":2000.0,"grpc_ratio":0.4}"#;
        let parsed = parse_output(out).unwrap().unwrap();
        let bare = parsed.figures.iter().find(|f| f.baseline).unwrap();
        let grpc = parsed.figures.iter().find(|f| !f.baseline).unwrap();
        assert_eq!(bare.name, "bare producer submissions");
        assert_eq!(ratio(grpc, bare), Some(0.4));
        assert_eq!(parsed.details["grpc_ratio"], 0.4);
        assert!(!parsed.details.contains_key("grpc_submissions_per_s"));
    }
}
