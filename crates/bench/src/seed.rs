//! The seed's own Python client as a baseline: a virtual environment under the
//! project's cache (`$DORA_CACHE_DIR`, default `.cache/`) with the pinned
//! kafka-python (`python/requirements.txt`), created on first use, and
//! `python/seed_bench.py` run in it against the benchmark's topics.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::Command;

use crate::command;
use crate::figures::{parse_output, BenchOutput};

/// The folder of the Python files.
pub fn python_dir() -> PathBuf {
    crate::repo_root().join("crates/bench/python")
}

/// The cache folder (`DORA_CACHE_DIR`, default `<repo>/.cache`).
pub fn cache_dir() -> PathBuf {
    std::env::var("DORA_CACHE_DIR")
        .ok()
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join(".cache"))
}

/// A short, stable name for the requirements' content (FNV-1a), so a change
/// of the pins makes a new environment.
fn fingerprint(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// The virtual environment's python, created and filled when missing.
pub async fn environment() -> Result<PathBuf> {
    let requirements = python_dir().join("requirements.txt");
    let pins = std::fs::read_to_string(&requirements).context("reading python/requirements.txt")?;
    let venv = cache_dir().join("bench-python").join(fingerprint(&pins));
    let python = venv.join("bin/python");
    let ready = venv.join(".installed");
    if ready.exists() {
        println!("    python environment {} (cached)", venv.display());
        return Ok(python);
    }
    println!("    creating the python environment {} (first run only)", venv.display());
    if venv.exists() {
        std::fs::remove_dir_all(&venv)?;
    }
    let mut create = Command::new("python3");
    create.args(["-m", "venv"]).arg(&venv);
    command::run(create, "python3 -m venv", Duration::from_secs(120)).await?;
    let mut install = Command::new(&python);
    install.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"]).arg(&requirements);
    command::run(install, "pip install -r crates/bench/python/requirements.txt", Duration::from_secs(600)).await?;
    std::fs::write(&ready, pins)?;
    Ok(python)
}

/// Sizes of the seed's run.
pub struct SeedPlan<'a> {
    /// Agent events to send.
    pub events: u64,
    /// Compliance reports to send.
    pub reports: u64,
    /// (seed topic name, benchmark topic) pairs.
    pub topics: &'a [(&'a str, String)],
}

/// Runs the seed's producers flat out with `python`; their figures.
pub async fn measure(python: &Path, bootstrap: &str, plan: &SeedPlan<'_>) -> Result<BenchOutput> {
    let mut cmd = Command::new(python);
    // The seed's lambda serializers draw a DeprecationWarning from kafka-python 3.
    cmd.args(["-W", "ignore::DeprecationWarning"])
        .arg(python_dir().join("seed_bench.py"))
        .args(["--bootstrap", bootstrap])
        .args(["--events", &plan.events.to_string(), "--reports", &plan.reports.to_string()]);
    for (seed, bench) in plan.topics {
        cmd.arg("--topic").arg(format!("{seed}={bench}"));
    }
    let out = command::run(cmd, "seed_bench.py", Duration::from_secs(600)).await?;
    match parse_output(&out)? {
        Some(figures) => Ok(figures),
        None => bail!("seed_bench.py printed no result line"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's classes the benchmark runs are the verbatim copy the schema
    /// fixtures were generated with, not an edited one.
    #[test]
    fn the_seed_classes_are_the_seeds_own() {
        let classes = |text: &str| {
            let start = text.find("class AgentEventProducer:").expect("AgentEventProducer");
            let end = text.find("class AuditEventProducer:").unwrap_or(text.len());
            text[start..end].trim_end().to_string()
        };
        let root = crate::repo_root();
        let ours = std::fs::read_to_string(python_dir().join("seed_patterns.py")).unwrap();
        let fixture = std::fs::read_to_string(root.join("crates/schema/tests/fixtures/seed/generate.py")).unwrap();
        assert_eq!(classes(&ours), classes(&fixture));
        assert!(classes(&ours).contains("class ComplianceReportProducer:"));
    }

    #[test]
    fn the_environment_follows_the_pins() {
        assert_eq!(fingerprint("kafka-python==3.0.12\n"), fingerprint("kafka-python==3.0.12\n"));
        assert_ne!(fingerprint("kafka-python==3.0.12\n"), fingerprint("kafka-python==2.3.3\n"));
    }
}
