//! A Kafka broker of a test's own, for tests that stop or restart the broker:
//! `deploy/local/stack.sh kafka-up` with a private state folder and unused
//! ports, the jars from the shared download cache (`DORA_CACHE_DIR`, default
//! `<repo>/.cache`, so nothing is fetched twice). The shared broker other
//! tests use is never touched. Stopped and removed when dropped.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use dora_kafka::KafkaSettings;

use crate::repo_root;

/// A private single-node broker (PLAINTEXT, SASL_SSL and controller ports of its own).
pub struct PrivateKafka {
    dir: tempfile::TempDir,
    ports: [u16; 3],
    /// PLAINTEXT settings for this broker.
    pub settings: KafkaSettings,
}

fn unused_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl PrivateKafka {
    /// Starts the broker; returns once it answers.
    pub async fn start() -> Result<Self> {
        let mut dir = tempfile::Builder::new().prefix("dora-kafka-").tempdir()?;
        let mut attempts = 0;
        loop {
            let ports = [unused_port()?, unused_port()?, unused_port()?];
            let broker = Self {
                settings: KafkaSettings {
                    bootstrap_servers: format!("127.0.0.1:{}", ports[0]),
                    client_id: "dora-testkit".into(),
                    ..Default::default()
                },
                dir,
                ports,
            };
            // Another process may take a picked port before the broker binds it.
            match broker.stack("kafka-up").await {
                Ok(()) => return Ok(broker),
                Err(e) if attempts < 2 => {
                    attempts += 1;
                    eprintln!("private Kafka did not start, trying other ports: {e:#}");
                    drop(broker); // stops whatever started, removes its folder
                    dir = tempfile::Builder::new().prefix("dora-kafka-").tempdir()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Stops the broker and starts it again on the same ports and data;
    /// returns once it answers.
    pub async fn restart(&self) -> Result<()> {
        self.stack("restart-kafka").await
    }

    /// Sets one topic-level config of `topic` on this broker, keeping the
    /// topic's other dynamic configs (AlterConfigs replaces the whole set).
    pub async fn set_topic_config(&self, topic: &str, key: &str, value: &str) -> Result<()> {
        use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
        use rdkafka::admin::ConfigSource;
        let admin: AdminClient<_> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.settings.bootstrap_servers)
            .create()
            .context("admin client for the private broker")?;
        let options = AdminOptions::new().request_timeout(Some(std::time::Duration::from_secs(10)));
        let spec = ResourceSpecifier::Topic(topic);
        let described = admin.describe_configs([&spec], &options).await?;
        let resource = described
            .into_iter()
            .next()
            .context("no answer describing the topic")?
            .map_err(|e| anyhow::anyhow!("describing {topic}: {e}"))?;
        let mut change = AlterConfig::new(spec);
        for entry in &resource.entries {
            if let (ConfigSource::DynamicTopic, Some(v)) = (&entry.source, &entry.value) {
                change = change.set(&entry.name, v);
            }
        }
        let altered = admin.alter_configs([&change.set(key, value)], &options).await?;
        for result in altered {
            result.map_err(|(_, e)| anyhow::anyhow!("setting {key}={value} on {topic}: {e}"))?;
        }
        Ok(())
    }

    /// The last `lines` lines of the broker's own log (`logs/kafka.log` in
    /// its state folder), for a test's failure message: the folder is
    /// removed with the broker.
    pub fn log_tail(&self, lines: usize) -> String {
        let path = self.dir.path().join("logs/kafka.log");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(no broker log at {}: {e})", path.display()),
        }
    }

    fn command(&self, verb: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("deploy/local/stack.sh"))
            .arg(verb)
            .env("DORA_STACK_DIR", self.dir.path())
            .env("DORA_STACK_KAFKA_PORT", self.ports[0].to_string())
            .env("DORA_STACK_KAFKA_SASL_PORT", self.ports[1].to_string())
            .env(
                "DORA_STACK_KAFKA_CONTROLLER_PORT",
                self.ports[2].to_string(),
            )
            .env("DORA_CACHE_DIR", cache_dir());
        cmd
    }

    async fn stack(&self, verb: &'static str) -> Result<()> {
        let mut cmd = tokio::process::Command::from(self.command(verb));
        let out = cmd
            .output()
            .await
            .with_context(|| format!("running stack.sh {verb}"))?;
        if !out.status.success() {
            bail!(
                "stack.sh {verb} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    fn stop(&self) {
        let _ = self.command("down").output();
    }
}

/// The shared download cache: `DORA_CACHE_DIR`, or the repository's `.cache`.
fn cache_dir() -> PathBuf {
    std::env::var_os("DORA_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache"))
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        self.stop();
    }
}
