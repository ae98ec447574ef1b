//! The platform's topics, defined once: names, partitions and configs
//! (DESIGN.md §2). `deploy/k8s/topics.yaml` mirrors this list and a test keeps
//! the two equal.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::{KafkaError, KafkaSettings};

/// Agent lifecycle events from the gateway (key `agentId`).
pub const AGENT_EVENTS: &str = "agent-events";
/// Latest health per agent, compacted (key `agentId`).
pub const AGENT_HEALTH: &str = "agent-health";
/// Gap assessment reports (key `organizationId`).
pub const GAP_ASSESSMENTS: &str = "gap-assessments";
/// Risk assessment reports (key `organizationId`).
pub const RISK_ASSESSMENTS: &str = "risk-assessments";
/// User activity audit trail (key: hour bucket `YYYY-MM-DD-HH`).
pub const USER_ACTIVITIES: &str = "user-activities";
/// Windowed risk alerts (key `organizationId`).
pub const RISK_ALERTS: &str = "risk-alerts";

/// Suffix of a topic's dead-letter topic.
pub const DLQ_SUFFIX: &str = "-dlq";
/// Suffix of a dead-letter topic's parking lot.
pub const PARKED_SUFFIX: &str = "-dlq-parked";

/// The dead-letter topic of `topic`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}{DLQ_SUFFIX}")
}

/// The parking-lot topic of `topic`'s dead letters.
pub fn parked_topic(topic: &str) -> String {
    format!("{topic}{PARKED_SUFFIX}")
}

/// One topic's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Topic-level configs (`cleanup.policy`, `retention.ms`, ...).
    pub configs: Vec<(String, String)>,
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn spec(name: &str, partitions: i32, configs: &[(&str, String)]) -> TopicSpec {
    TopicSpec {
        name: name.to_string(),
        partitions,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

/// Every topic of the platform: the six main topics, and a `-dlq` and
/// `-dlq-parked` topic for each consumed one.
pub fn catalog() -> Vec<TopicSpec> {
    let retention = |days: u64| ("retention.ms", (days * DAY_MS).to_string());
    let mut topics = vec![
        spec(AGENT_EVENTS, 6, &[retention(7)]),
        spec(
            AGENT_HEALTH,
            3,
            &[
                ("cleanup.policy", "compact".into()),
                ("min.compaction.lag.ms", "60000".into()),
                // Roll segments hourly and compact within the hour, so a replica
                // reading agent-health whole reads about one record per agent.
                ("segment.ms", "3600000".into()),
                ("max.compaction.lag.ms", "3600000".into()),
            ],
        ),
        spec(GAP_ASSESSMENTS, 3, &[retention(30)]),
        spec(RISK_ASSESSMENTS, 3, &[retention(30)]),
        // The audit trail is archived in PostgreSQL by audit-sink; the topic keeps a
        // long replay window on top of that.
        spec(USER_ACTIVITIES, 3, &[retention(90)]),
        spec(RISK_ALERTS, 3, &[retention(30)]),
    ];
    for consumed in [
        AGENT_EVENTS,
        GAP_ASSESSMENTS,
        RISK_ASSESSMENTS,
        USER_ACTIVITIES,
    ] {
        topics.push(spec(&dlq_topic(consumed), 1, &[retention(30)]));
        topics.push(spec(
            &parked_topic(consumed),
            1,
            &[("retention.ms", "-1".into())],
        ));
    }
    topics
}

/// Creates every topic in `specs` that does not exist yet; existing topics are
/// left as they are. Returns the names that were created, once every topic of
/// `specs` is usable: each partition has a leader that answers for its offsets
/// (on a fresh broker, creation returns before that, and a first reader fails
/// with NotLeaderForPartition).
pub async fn provision(
    settings: &KafkaSettings,
    specs: &[TopicSpec],
    replication: i32,
    timeout: Duration,
) -> Result<Vec<String>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = settings
        .client_config()?
        .create()
        .map_err(KafkaError::Client)?;
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let mut t = NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(replication));
            for (k, v) in &s.configs {
                t = t.set(k, v);
            }
            t
        })
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = admin
        .create_topics(new_topics.iter(), &opts)
        .await
        .map_err(KafkaError::Client)?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::Admin(format!(
                    "cannot create topic {name}: {code}"
                )));
            }
        }
    }
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let settings = settings.clone();
    crate::blocking::off_worker(move || await_usable(&settings, &names, timeout)).await?;
    Ok(created)
}

/// Waits until every partition of `topics` has a leader that answers for its
/// watermarks, or `timeout` passes (blocking: run it off the async workers).
fn await_usable(settings: &KafkaSettings, topics: &[String], timeout: Duration) -> Result<(), KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = settings.client_config()?.create().map_err(KafkaError::Client)?;
    let deadline = std::time::Instant::now() + timeout;
    let step = Duration::from_secs(5);
    let mut pending: Vec<String> = topics.to_vec();
    loop {
        let md = consumer.fetch_metadata(None, step).map_err(KafkaError::Client)?;
        pending.retain(|name| {
            let Some(t) = md.topics().iter().find(|t| t.name() == name.as_str()) else { return true };
            t.error().is_some()
                || t.partitions().is_empty()
                || t.partitions().iter().any(|p| {
                    p.leader() < 0 || consumer.fetch_watermarks(name, p.id(), step).is_err()
                })
        });
        if pending.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(KafkaError::Admin(format!(
                "topics not usable within {timeout:?}: {}",
                pending.join(", ")
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The low and high watermark of every partition of `topic`, as
/// `(partition, low, high)`: e.g. to know when a reader of a whole topic has
/// caught up with what was there when it started.
pub async fn watermarks(
    settings: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<(i32, i64, i64)>, KafkaError> {
    let settings = settings.clone();
    let topic = topic.to_string();
    crate::blocking::off_worker(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = settings
            .client_config()?
            .create()
            .map_err(KafkaError::Client)?;
        let md = consumer
            .fetch_metadata(Some(&topic), timeout)
            .map_err(KafkaError::Client)?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| KafkaError::Admin(format!("topic {topic} not found")))?;
        if let Some(e) = t.error() {
            return Err(KafkaError::Admin(format!(
                "topic {topic}: {:?}",
                RDKafkaErrorCode::from(e)
            )));
        }
        let mut out = Vec::with_capacity(t.partitions().len());
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(&topic, p.id(), timeout)
                .map_err(KafkaError::Client)?;
            out.push((p.id(), low, high));
        }
        Ok(out)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_has_unique_names_and_a_dlq_per_consumed_topic() {
        let cat = catalog();
        let mut names: Vec<_> = cat.iter().map(|t| t.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), cat.len());
        for t in [
            AGENT_EVENTS,
            GAP_ASSESSMENTS,
            RISK_ASSESSMENTS,
            USER_ACTIVITIES,
        ] {
            assert!(names.contains(&dlq_topic(t)));
            assert!(names.contains(&parked_topic(t)));
        }
        let health = cat.iter().find(|t| t.name == AGENT_HEALTH).unwrap();
        assert!(health
            .configs
            .contains(&("cleanup.policy".into(), "compact".into())));
    }
}
