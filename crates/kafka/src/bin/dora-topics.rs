//! `dora-topics`: the platform's topics on a cluster. `dora-topics provision`
//! creates every topic of the catalog that does not exist yet (idempotent);
//! `dora-topics list` prints the catalog. Kafka settings as every service reads
//! them (`DORA_KAFKA__*`). `cargo xtask` runs it once the stack is up.

use std::process::ExitCode;
use std::time::Duration;

use dora_kafka::topics::{catalog, provision};
use dora_kafka::KafkaSettings;
use serde::{Deserialize, Serialize};

/// The settings this tool reads: section `kafka` only.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Settings {
    kafka: KafkaSettings,
}

const USAGE: &str = "usage: dora-topics provision [--replication-factor N] | list";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("list") => {
            for t in catalog() {
                println!("{:<28} {:>3} partitions", t.name, t.partitions);
            }
            ExitCode::SUCCESS
        }
        Some("provision") => match replication_factor(&args[1..]) {
            Ok(rf) => run_provision(rf).await,
            Err(e) => {
                eprintln!("dora-topics: {e}\n{USAGE}");
                ExitCode::from(64)
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(64)
        }
    }
}

fn replication_factor(args: &[String]) -> Result<i32, String> {
    match args {
        [] => Ok(1),
        [flag, n] if flag == "--replication-factor" => {
            n.parse().map_err(|_| format!("--replication-factor: not a number: {n}"))
        }
        _ => Err(format!("unexpected arguments: {}", args.join(" "))),
    }
}

async fn run_provision(replication: i32) -> ExitCode {
    let settings: Settings = match dora_config::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dora-topics: {e}");
            return ExitCode::from(78);
        }
    };
    let topics = catalog();
    match provision(&settings.kafka, &topics, replication, Duration::from_secs(30)).await {
        Ok(created) if created.is_empty() => {
            println!("topics: all {} already exist on {}", topics.len(), settings.kafka.bootstrap_servers);
            ExitCode::SUCCESS
        }
        Ok(created) => {
            println!("topics: created {}", created.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dora-topics: {e}");
            ExitCode::from(69)
        }
    }
}
