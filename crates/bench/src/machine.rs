//! The machine and the versions measured, for the report's first table.

use std::process::Command;

use crate::suite::Machine;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The first line a command prints (stdout, else stderr), or "unknown".
fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().next().map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `/proc/loadavg`'s three averages.
pub fn load_average() -> String {
    read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn cpu() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_else(|| "unknown model".into());
    format!("{cores} × {model}")
}

fn memory() -> String {
    read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or("unknown".into(), |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
}

fn os() -> String {
    let name = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
        .unwrap_or_else(|| "unknown".into());
    format!("{name}, Linux {}", read("/proc/sys/kernel/osrelease").trim())
}

/// Describes this machine; `kafka_version` and `extra` rows come from the run.
pub fn describe(kafka_version: &str, profile: &str, extra: &[(String, String)]) -> Machine {
    let mut rows = vec![
        ("cores".to_string(), cpu()),
        ("memory".into(), memory()),
        ("operating system".into(), os()),
        ("Rust".into(), first_line("rustc", &["--version"])),
        ("build profile".into(), profile.to_string()),
        ("Kafka broker".into(), format!("Apache Kafka {kafka_version}, one KRaft node on 127.0.0.1 (deploy/local/stack.sh)")),
        ("Java (broker, perf tools)".into(), first_line("java", &["-version"])),
    ];
    rows.extend(extra.iter().cloned());
    Machine { rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_is_described_from_proc() {
        let m = describe("4.1.1", "release", &[("x".into(), "y".into())]);
        let get = |k: &str| m.rows.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
        assert!(get("cores").starts_with(&std::thread::available_parallelism().unwrap().get().to_string()));
        assert!(get("memory").ends_with("GiB"));
        assert_eq!(get("x"), "y");
        assert_eq!(load_average().split(' ').count(), 3);
    }
}
