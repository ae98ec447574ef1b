//! The report a run writes: every section with its table and PNG plot passes
//! the check, and the check names what is missing when a plot, a table or a
//! section is gone. (No stack needed: the figures are made up.)

use dora_bench::figures::{BenchOutput, Figure, LoadPoint};
use dora_bench::report::{self, PLOTS, REPORT};
use dora_bench::run;
use dora_bench::suite::{Benchmark, Machine, Outcome, Suite, LATENCY_PLOT, SECTIONS, SERVICES};

fn figure(group: &str, name: &str, rate: f64, baseline: bool) -> Figure {
    Figure {
        group: group.into(),
        name: name.into(),
        rate,
        unit: "records/s".into(),
        p50_ms: Some(2.5),
        p99_ms: Some(40.0),
        baseline,
        runs: vec![rate * 0.9, rate],
    }
}

fn measured(id: &str) -> Outcome {
    let figures = match id {
        "runtime" => vec![
            figure("producer path", "platform Producer", 40_000.0, false),
            figure("producer path", "bare rdkafka BaseProducer", 50_000.0, true),
            figure("producer path", "kafka-producer-perf-test", 60_000.0, true),
            figure("consume path", "consume loop", 90_000.0, false),
            figure("consume path", "bare rdkafka BaseConsumer", 100_000.0, true),
            figure("consume path", "kafka-consumer-perf-test", 120_000.0, true),
        ],
        "agent-gateway" => vec![
            figure("agent events", "agent-gateway, flat out", 20_000.0, false),
            figure("agent events", "kafka-producer-perf-test (300-byte records)", 80_000.0, true),
            figure("agent events", "seed AgentEventProducer (kafka-python)", 4_000.0, true),
        ],
        _ => vec![figure("results", "subject", 10.0, false), figure("results", "bare", 20.0, true)],
    };
    let curve = if id == "agent-gateway" {
        [1000.0, 5000.0, 10000.0]
            .iter()
            .map(|&r| LoadPoint { offered_per_s: r, acked_per_s: r, p50_ms: r / 2000.0, p99_ms: r / 500.0, p999_ms: Some(r / 100.0) })
            .collect()
    } else {
        Vec::new()
    };
    Outcome::Measured(BenchOutput { figures, curve, ..Default::default() })
}

fn suite(outcome: impl Fn(&str) -> Outcome) -> Suite {
    Suite {
        quick: true,
        started: "2026-11-27 10:00 UTC".into(),
        seconds: 100.0,
        commit: "abc1234".into(),
        machine: Machine { rows: vec![("cores".into(), "2".into())] },
        load: ("1.0 1.0 1.0".into(), "2.0 2.0 2.0".into()),
        benchmarks: SECTIONS
            .iter()
            .map(|(id, _)| Benchmark { id: id.to_string(), about: format!("about {id}"), outcome: outcome(id), seconds: 1.0 })
            .collect(),
    }
}

#[test]
fn a_complete_report_passes_and_names_the_headline_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let s = suite(|id| if SERVICES.contains(&id) && id != "report-ingest" {
        Outcome::NoBenchmark { reason: "none yet".into() }
    } else {
        measured(id)
    });
    run::write(&s, dir.path()).unwrap();
    report::check(dir.path()).unwrap();
    let md = std::fs::read_to_string(dir.path().join(REPORT)).unwrap();
    assert!(md.contains("| agent-gateway, flat out | kafka-producer-perf-test (300-byte records) | 0.25× |"), "{md}");
    assert!(md.contains("| consume loop | kafka-consumer-perf-test | 0.75× |"), "{md}");
    // Each path's own bare baseline: the consumer's, not the producer's of the same name prefix.
    assert!(md.contains("| consume loop | bare rdkafka BaseConsumer | 0.90× |"), "{md}");
    assert!(md.contains("| platform Producer | bare rdkafka BaseProducer | 0.80× |"), "{md}");
    assert!(md.contains("| agent-gateway, flat out | seed AgentEventProducer (kafka-python) | 5.00× |"), "{md}");
    assert!(md.contains("**0.80×** bare rdkafka BaseProducer; **0.67×** kafka-producer-perf-test"), "{md}");
    assert!(md.contains("No benchmark yet: none yet"));
    for plot in ["runtime", "agent-gateway", LATENCY_PLOT, "schema-codec", "report-ingest"] {
        let png = std::fs::read(dir.path().join(PLOTS).join(format!("{plot}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{plot}");
    }
    if let Ok(keep) = std::env::var("DORA_BENCH_KEEP_REPORT") {
        let _ = std::fs::remove_dir_all(&keep);
        std::fs::rename(dir.keep(), keep).unwrap();
    }
}

#[test]
fn a_missing_plot_table_or_section_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    run::write(&suite(measured), dir.path()).unwrap();
    report::check(dir.path()).unwrap();

    std::fs::remove_file(dir.path().join(PLOTS).join(format!("{LATENCY_PLOT}.png"))).unwrap();
    let err = report::check(dir.path()).unwrap_err().to_string();
    assert!(err.contains("agent-gateway-latency.png is not a PNG"), "{err}");

    let failed = suite(|id| if id == "schema-codec" { Outcome::Failed { error: "boom".into() } } else { measured(id) });
    run::write(&failed, dir.path()).unwrap();
    let err = report::check(dir.path()).unwrap_err().to_string();
    assert!(err.contains("section schema-codec: no table of figures"), "{err}");

    let core_missing = suite(|id| if id == "runtime" { Outcome::NoBenchmark { reason: "gone".into() } } else { measured(id) });
    run::write(&core_missing, dir.path()).unwrap();
    assert!(report::check(dir.path()).unwrap_err().to_string().contains("section runtime"));

    let md = std::fs::read_to_string(dir.path().join(REPORT)).unwrap();
    std::fs::write(dir.path().join(REPORT), md.replace("## dlq-replayer", "## something else")).unwrap();
    assert!(report::check(dir.path()).unwrap_err().to_string().contains("no section `## dlq-replayer`"));
}
