//! Consumer settings (a service's `consumer` section), the consumer's
//! `ClientConfig`, and the checks that the loop's timings fit each other.

use serde::{Deserialize, Serialize};

use crate::{KafkaError, KafkaSettings, RetryPolicy};

/// Consumer settings (a service's `consumer` section). Defaults follow the seed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ConsumerSettings {
    /// `group.id`. Required.
    pub group_id: String,
    /// `auto.offset.reset` for a group without committed offsets: `earliest`
    /// or `latest`. Default `earliest` (the seed's).
    pub auto_offset_reset: String,
    /// `isolation.level`: `read_committed` or `read_uncommitted`. Default
    /// `read_committed` (librdkafka's; kafka-python's is `read_uncommitted`).
    pub isolation_level: String,
    /// `fetch.min.bytes`. Default 1024 (the seed's; librdkafka's is 1).
    pub fetch_min_bytes: u32,
    /// `fetch.wait.max.ms`. Default 500 (the seed's and librdkafka's).
    pub fetch_max_wait_ms: u32,
    /// `session.timeout.ms`: how long the group waits for a silent member's
    /// heartbeat (sent by librdkafka's own thread, not by the loop). Default
    /// 45000 (librdkafka's; kafka-python's is 10000).
    pub session_timeout_ms: u32,
    /// `max.poll.interval.ms`: the longest the loop may go without polling
    /// (one batch's handler time, a shutdown drain) before the group gives its
    /// partitions to another member. Default 300000 (librdkafka's).
    pub max_poll_interval_ms: u32,
    /// Largest batch handed to a batch or transactional handler (the seed's
    /// `max_poll_records`); the per-message mode takes up to this many already
    /// fetched records per poll. Default 100.
    pub max_batch_records: usize,
    /// Longest wait to fill a batch, milliseconds. Default 500 (the seed's `fetch_max_wait_ms`).
    pub max_batch_wait_ms: u64,
    /// Commit after this many processed records. Default 500.
    pub commit_every_records: u64,
    /// Commit at least this often while processed offsets are uncommitted
    /// (also after a failed commit), milliseconds. Default 1000.
    pub commit_interval_ms: u64,
    /// How long a SIGTERM drain may take before the loop gives up on in-flight
    /// work (which is then redelivered), milliseconds. Default 20000.
    pub shutdown_deadline_ms: u64,
    /// `/readyz` reports the consumer stuck when one handler call has run this
    /// long, milliseconds. Default 60000.
    pub stuck_after_ms: u64,
    /// `statistics.interval.ms`: how often `kafka_consumer_lag` is refreshed. Default 1000.
    pub lag_interval_ms: u32,
    /// Backoff for retryable handler errors.
    pub retry: RetryPolicy,
    /// `transactional.id` of the consume-transform-produce mode's producer;
    /// must be stable across restarts of one instance and unique between
    /// instances. Default: none (the mode refuses to start without it).
    pub transactional_id: Option<String>,
    /// How long one transaction call (send offsets, commit, abort) may block
    /// before it returns librdkafka's retriable timeout and is called again,
    /// milliseconds. Default 10000.
    pub transaction_call_timeout_ms: u64,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            group_id: String::new(),
            auto_offset_reset: "earliest".into(),
            isolation_level: "read_committed".into(),
            fetch_min_bytes: 1024,
            fetch_max_wait_ms: 500,
            session_timeout_ms: 45_000,
            max_poll_interval_ms: 300_000,
            max_batch_records: 100,
            max_batch_wait_ms: 500,
            commit_every_records: 500,
            commit_interval_ms: 1000,
            shutdown_deadline_ms: 20_000,
            stuck_after_ms: 60_000,
            lag_interval_ms: 1000,
            retry: RetryPolicy::default(),
            transactional_id: None,
            transaction_call_timeout_ms: 10_000,
        }
    }
}

/// librdkafka keys the consumer settings own; `kafka.extra` may not set them.
const CONSUMER_OWNED_KEYS: &[&str] = &[
    "group.id",
    "group.instance.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "isolation.level",
    "fetch.min.bytes",
    "fetch.wait.max.ms",
    "session.timeout.ms",
    "max.poll.interval.ms",
    "statistics.interval.ms",
    "enable.partition.eof",
    "partition.assignment.strategy",
    "group.protocol",
];

impl ConsumerSettings {
    /// The consumer `ClientConfig`: connection settings, no auto-commit, and
    /// these settings, after [`check`](Self::check).
    pub fn client_config(
        &self,
        kafka: &KafkaSettings,
    ) -> Result<rdkafka::ClientConfig, KafkaError> {
        self.check()?;
        let mut cfg = kafka.client_config_owning(CONSUMER_OWNED_KEYS)?;
        cfg.set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &self.auto_offset_reset)
            .set("isolation.level", &self.isolation_level)
            .set("fetch.min.bytes", self.fetch_min_bytes.to_string())
            .set("fetch.wait.max.ms", self.fetch_max_wait_ms.to_string())
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set("max.poll.interval.ms", self.max_poll_interval_ms.to_string())
            .set("statistics.interval.ms", self.lag_interval_ms.to_string())
            .set("enable.partition.eof", "false")
            // The eager protocol: every rebalance revokes everything, between two polls.
            .set("partition.assignment.strategy", "range,roundrobin");
        Ok(cfg)
    }

    /// Checks each setting and that the timings fit each other; the error
    /// names the setting. The loop stops polling while a batch is handled and
    /// while it drains on shutdown, so both must end well within
    /// `max_poll_interval_ms`, or the group gives the partitions away while
    /// their records are still being processed.
    pub fn check(&self) -> Result<(), KafkaError> {
        let fail = |m: String| Err(KafkaError::Config(format!("consumer.{m}")));
        if self.group_id.trim().is_empty() {
            return fail("group_id is empty".into());
        }
        if !matches!(self.auto_offset_reset.as_str(), "earliest" | "latest") {
            return fail(format!(
                "auto_offset_reset is `{}`; use `earliest` or `latest`",
                self.auto_offset_reset
            ));
        }
        if !matches!(self.isolation_level.as_str(), "read_committed" | "read_uncommitted") {
            return fail(format!(
                "isolation_level is `{}`; use `read_committed` or `read_uncommitted`",
                self.isolation_level
            ));
        }
        let poll = u64::from(self.max_poll_interval_ms);
        if u64::from(self.session_timeout_ms) > poll {
            return fail(format!(
                "session_timeout_ms ({}) is above max_poll_interval_ms ({poll})",
                self.session_timeout_ms
            ));
        }
        for (name, value) in [
            ("shutdown_deadline_ms", self.shutdown_deadline_ms),
            ("stuck_after_ms", self.stuck_after_ms),
            ("max_batch_wait_ms", self.max_batch_wait_ms),
            ("transaction_call_timeout_ms", self.transaction_call_timeout_ms),
        ] {
            if value == 0 && name != "max_batch_wait_ms" {
                return fail(format!("{name} is 0"));
            }
            if value >= poll {
                return fail(format!(
                    "{name} ({value}) must be below max_poll_interval_ms ({poll}): the loop does not poll meanwhile"
                ));
            }
        }
        if self.commit_interval_ms == 0 || self.commit_every_records == 0 {
            return fail("commit_interval_ms and commit_every_records must be above 0".into());
        }
        Ok(())
    }

    /// True with `isolation_level = read_committed`.
    pub(crate) fn read_committed(&self) -> bool {
        self.isolation_level == "read_committed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ConsumerSettings {
        ConsumerSettings {
            group_id: "g".into(),
            ..Default::default()
        }
    }

    #[test]
    fn no_auto_commit_and_the_seeds_fetch_settings() {
        let cfg = settings().client_config(&KafkaSettings::default()).unwrap();
        assert_eq!(cfg.get("enable.auto.commit"), Some("false"));
        assert_eq!(cfg.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(cfg.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(cfg.get("fetch.min.bytes"), Some("1024"));
        assert_eq!(cfg.get("max.poll.interval.ms"), Some("300000"));
        assert!(ConsumerSettings::default()
            .client_config(&KafkaSettings::default())
            .is_err());
    }

    #[test]
    fn extra_cannot_set_what_the_consumer_settings_own() {
        for key in ["enable.auto.commit", "max.poll.interval.ms", "group.instance.id"] {
            let mut kafka = KafkaSettings::default();
            kafka.extra.insert(key.into(), "1".into());
            let err = settings().client_config(&kafka).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn timings_that_do_not_fit_are_refused_naming_the_setting() {
        type Change = fn(&mut ConsumerSettings);
        let cases: [(Change, &str); 6] = [
            (|s| s.shutdown_deadline_ms = 400_000, "shutdown_deadline_ms"),
            (|s| s.stuck_after_ms = 300_000, "stuck_after_ms"),
            (|s| s.session_timeout_ms = 400_000, "session_timeout_ms"),
            (|s| s.max_batch_wait_ms = 300_000, "max_batch_wait_ms"),
            (|s| s.transaction_call_timeout_ms = 0, "transaction_call_timeout_ms"),
            (|s| s.isolation_level = "committed".into(), "isolation_level"),
        ];
        for (change, name) in cases {
            let mut s = settings();
            change(&mut s);
            let err = s.check().unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        assert!(settings().check().is_ok());
    }
}
