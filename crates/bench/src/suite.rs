//! The benchmarks of one run, in report order, and what became of each.

use serde::{Deserialize, Serialize};

use crate::figures::{BenchOutput, Figure};

/// The benchmarks every report has a section for, in order: (id, title).
/// The id names the plot (`benchmarks/<id>.png`).
pub const SECTIONS: &[(&str, &str)] = &[
    ("runtime", "Runtime: producer path and consume loop (dora-kafka)"),
    ("agent-gateway", "agent-gateway: agent events over gRPC"),
    ("schema-codec", "Schema codec: Avro vs JSON (dora-schema)"),
    ("report-ingest", "report-ingest"),
    ("audit-sink", "audit-sink"),
    ("risk-streamer", "risk-streamer"),
    ("dlq-replayer", "dlq-replayer"),
];

/// The services whose own benchmark command (`services/<name>/src/bin/*-bench.rs`)
/// the run looks for. agent-gateway's `agent-bench` needs a running gateway and
/// is driven separately.
pub const SERVICES: &[&str] = &["report-ingest", "audit-sink", "risk-streamer", "dlq-replayer"];

/// The gateway's latency plot.
pub const LATENCY_PLOT: &str = "agent-gateway-latency";

/// What became of one benchmark.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Outcome {
    /// It ran and printed its figures.
    Measured(BenchOutput),
    /// There is nothing to run yet (why).
    NoBenchmark {
        /// Why not.
        reason: String,
    },
    /// It ran and failed (how).
    Failed {
        /// The error and the end of its output.
        error: String,
    },
}

/// One benchmark of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Benchmark {
    /// Section id (see [`SECTIONS`]).
    pub id: String,
    /// What it measures and against what, and the command that runs it alone.
    pub about: String,
    /// What became of it.
    pub outcome: Outcome,
    /// Seconds it took.
    pub seconds: f64,
}

impl Benchmark {
    /// The figures, if measured.
    pub fn figures(&self) -> &[Figure] {
        match &self.outcome {
            Outcome::Measured(out) => &out.figures,
            _ => &[],
        }
    }

    /// The section title.
    pub fn title(&self) -> &'static str {
        SECTIONS.iter().find(|(id, _)| *id == self.id).map_or("benchmark", |(_, t)| t)
    }
}

/// Facts about the machine and the software measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// (what, value) rows, e.g. ("cores", "2 × Intel Xeon ...").
    pub rows: Vec<(String, String)>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Suite {
    /// `--quick`: tiny sizes, figures without meaning.
    pub quick: bool,
    /// When it started (UTC, RFC 3339).
    pub started: String,
    /// Seconds the benchmarks took (building excluded).
    pub seconds: f64,
    /// The commit measured.
    pub commit: String,
    /// The machine and versions.
    pub machine: Machine,
    /// `/proc/loadavg` before and after.
    pub load: (String, String),
    /// Every benchmark, in [`SECTIONS`] order.
    pub benchmarks: Vec<Benchmark>,
}

impl Suite {
    /// The benchmark with this id.
    pub fn benchmark(&self, id: &str) -> Option<&Benchmark> {
        self.benchmarks.iter().find(|b| b.id == id)
    }
}
