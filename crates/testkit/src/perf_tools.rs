//! Kafka's own performance tools, `kafka-producer-perf-test` and
//! `kafka-consumer-perf-test`, run from the local stack's jars
//! (`deploy/local/kafka-tool.sh`, named by `DORA_KAFKA_TOOL` in `stack.sh env`),
//! with their summaries parsed: the figures a Kafka user measures first, as
//! baselines of the benchmarks. Blocking: call from a plain thread or
//! `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use dora_kafka::{ConsumerSettings, ProducerSettings};

/// `deploy/local/kafka-tool.sh` (or `DORA_KAFKA_TOOL`).
pub fn kafka_tool() -> PathBuf {
    std::env::var("DORA_KAFKA_TOOL")
        .ok()
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("deploy/local/kafka-tool.sh"))
}

/// What `kafka-producer-perf-test` reported for the whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerPerf {
    /// Records sent and acknowledged.
    pub records: u64,
    /// Records per second, first send to last acknowledgement.
    pub records_per_s: f64,
    /// Payload megabytes per second.
    pub mb_per_s: f64,
    /// Send-to-ack latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
}

/// What `kafka-consumer-perf-test` reported.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerPerf {
    /// Records consumed.
    pub records: u64,
    /// Records per second from subscribing to the last record (group join included).
    pub records_per_s: f64,
    /// Records per second after the partitions were assigned (`fetch.nMsg.sec`).
    pub fetch_records_per_s: f64,
    /// Time spent joining the group, milliseconds.
    pub rebalance_ms: f64,
}

/// Where the producer's payloads come from.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Random letters of this many bytes (`--record-size`).
    Size(usize),
    /// One payload per line of this UTF-8 file, picked at random (`--payload-file`).
    File(PathBuf),
}

/// The Java producer's properties equivalent to the platform's producer
/// settings: idempotence, `acks=all`, the same compression, batch size,
/// linger and in-flight limit. (`message.timeout.ms` has no equivalent the
/// Java client accepts below `linger.ms + request.timeout.ms`; it only matters
/// for failures.)
pub fn java_producer_props(settings: &ProducerSettings) -> Vec<(String, String)> {
    [
        ("acks", "all".to_string()),
        ("enable.idempotence", "true".to_string()),
        ("compression.type", settings.compression.clone()),
        ("batch.size", settings.batch_size.to_string()),
        ("linger.ms", settings.linger_ms.to_string()),
        ("max.in.flight.requests.per.connection", settings.max_in_flight.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The Java consumer's properties equivalent to the loop's consumer settings
/// (fetch sizes and waits, isolation level, offset reset).
pub fn java_consumer_props(settings: &ConsumerSettings) -> Vec<(String, String)> {
    [
        ("fetch.min.bytes", settings.fetch_min_bytes.to_string()),
        ("fetch.max.wait.ms", settings.fetch_max_wait_ms.to_string()),
        ("isolation.level", settings.isolation_level.clone()),
        ("auto.offset.reset", settings.auto_offset_reset.clone()),
        ("session.timeout.ms", settings.session_timeout_ms.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Runs `kafka-producer-perf-test` flat out (`--throughput -1`): `records`
/// records to `topic` with the given payloads and producer properties.
pub fn producer_perf_test(
    bootstrap: &str,
    topic: &str,
    records: u64,
    payload: &Payload,
    props: &[(String, String)],
) -> Result<ProducerPerf> {
    let mut cmd = Command::new("bash");
    cmd.arg(kafka_tool())
        .arg("producer-perf-test")
        .args(["--topic", topic, "--num-records", &records.to_string(), "--throughput", "-1"]);
    match payload {
        Payload::Size(n) => cmd.args(["--record-size", &n.to_string()]),
        Payload::File(path) => cmd.arg("--payload-file").arg(path),
    };
    cmd.arg("--producer-props").arg(format!("bootstrap.servers={bootstrap}"));
    cmd.args(props.iter().map(|(k, v)| format!("{k}={v}")));
    let out = run(&mut cmd)?;
    parse_producer_summary(&out)
        .with_context(|| format!("no summary line in kafka-producer-perf-test's output:\n{out}"))
}

/// Runs `kafka-consumer-perf-test`: `records` records of `topic` in a new
/// `group`, with the given consumer properties.
pub fn consumer_perf_test(
    bootstrap: &str,
    topic: &str,
    records: u64,
    group: &str,
    props: &[(String, String)],
) -> Result<ConsumerPerf> {
    let config = tempfile::NamedTempFile::new()?;
    let text: String = props.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(config.path(), text)?;
    let mut cmd = Command::new("bash");
    cmd.arg(kafka_tool())
        .arg("consumer-perf-test")
        .args(["--bootstrap-server", bootstrap, "--topic", topic, "--group", group])
        .args(["--messages", &records.to_string(), "--timeout", "60000"])
        .arg("--consumer.config")
        .arg(config.path());
    let out = run(&mut cmd)?;
    parse_consumer_summary(&out)
        .with_context(|| format!("no summary in kafka-consumer-perf-test's output:\n{out}"))
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {}", kafka_tool().display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{stdout}\n{}",
            kafka_tool().display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// The number right before `label` in `text` (`"12.5 ms 99th"` -> 12.5 for `" ms 99th"`).
fn number_before(text: &str, label: &str) -> Option<f64> {
    let head = &text[..text.find(label)?];
    let start = head.rfind(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-')).map_or(0, |i| i + 1);
    head[start..].parse().ok()
}

/// Parses the final summary line of `kafka-producer-perf-test` (the one with percentiles):
/// `N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max latency, P ms 50th, ...`.
pub fn parse_producer_summary(output: &str) -> Option<ProducerPerf> {
    let line = output.lines().rev().find(|l| l.contains("records sent") && l.contains("50th"))?;
    Some(ProducerPerf {
        records: number_before(line, " records sent")? as u64,
        records_per_s: number_before(line, " records/sec")?,
        mb_per_s: number_before(line, " MB/sec")?,
        p50_ms: number_before(line, " ms 50th")?,
        p99_ms: number_before(line, " ms 99th")?,
    })
}

/// Parses `kafka-consumer-perf-test`'s header and value lines
/// (`start.time, end.time, data.consumed.in.MB, ..., fetch.nMsg.sec`).
pub fn parse_consumer_summary(output: &str) -> Option<ConsumerPerf> {
    let mut lines = output.lines().map(str::trim).filter(|l| !l.is_empty());
    let header: Vec<&str> = lines.find(|l| l.starts_with("start.time"))?.split(',').map(str::trim).collect();
    let values: Vec<&str> = lines.next()?.split(',').map(str::trim).collect();
    let field = |name: &str| -> Option<f64> {
        let i = header.iter().position(|h| *h == name)?;
        values.get(i)?.parse().ok()
    };
    Some(ConsumerPerf {
        records: field("data.consumed.in.nMsg")? as u64,
        records_per_s: field("nMsg.sec")?,
        fetch_records_per_s: field("fetch.nMsg.sec")?,
        rebalance_ms: field("rebalance.time.ms")?,
    })
}

/// Writes `payloads` one per line for `--payload-file` (they must be UTF-8
/// text without newlines, as the tool splits the file on `\n`).
pub fn write_payload_file(path: &Path, payloads: &[Vec<u8>]) -> Result<()> {
    let mut text = String::new();
    for p in payloads {
        let s = std::str::from_utf8(p).context("a payload for the perf tool is not UTF-8")?;
        if s.contains('\n') {
            bail!("a payload for the perf tool contains a newline");
        }
        text.push_str(s);
        text.push('\n');
    }
    std::fs::write(path, text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_summary_is_the_line_with_percentiles() {
        let out = "49983 records sent, 9994.6 records/sec (3.05 MB/sec), 512.3 ms avg latency, 880.0 ms max latency.\n\
                   200000 records sent, 41511.000415 records/sec (12.67 MB/sec), 487.35 ms avg latency, 1012.00 ms max latency, 455 ms 50th, 910 ms 95th, 980 ms 99th, 1005 ms 99.9th.\n";
        let p = parse_producer_summary(out).unwrap();
        assert_eq!(p.records, 200_000);
        assert!((p.records_per_s - 41511.000415).abs() < 1e-6);
        assert_eq!((p.mb_per_s, p.p50_ms, p.p99_ms), (12.67, 455.0, 980.0));
        assert_eq!(parse_producer_summary(out.lines().next().unwrap()), None);
    }

    #[test]
    fn consumer_summary_is_read_by_column_name() {
        let out = "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec\n\
                   2026-11-27 10:00:00:000, 2026-11-27 10:00:05:000, 61.0, 12.2, 200000, 40000.0, 250, 4750, 12.8, 42105.3\n";
        let c = parse_consumer_summary(out).unwrap();
        assert_eq!(c, ConsumerPerf { records: 200_000, records_per_s: 40000.0, fetch_records_per_s: 42105.3, rebalance_ms: 250.0 });
        assert_eq!(parse_consumer_summary("WARN something\n"), None);
    }

    #[test]
    fn java_props_mirror_the_platform_producer() {
        let props = java_producer_props(&ProducerSettings::default());
        let get = |k: &str| props.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("acks"), Some("all"));
        assert_eq!(get("enable.idempotence"), Some("true"));
        assert_eq!(get("compression.type"), Some("snappy"));
        assert_eq!(get("linger.ms"), Some("10"));
    }
}
