//! Settings of risk-streamer: the shared sections plus `risk` (window,
//! threshold, hysteresis, lateness, tick, topics).

use std::time::Duration;

use dora_service::{CommonSettings, ServiceSettings};
use serde::{Deserialize, Serialize};

use crate::alert::Rules;
use crate::window::score_of;

/// Settings of risk-streamer (defaults < `DORA_CONFIG` file < `DORA_*` env).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Kafka, telemetry and admin sections. Admin default `127.0.0.1:9104`.
    #[serde(flatten)]
    pub common: CommonSettings,
    /// Section `registry`: the schema registry.
    pub registry: dora_schema::RegistrySettings,
    /// Section `producer`: the transactional producer of alerts (and dead letters).
    pub producer: dora_kafka::ProducerSettings,
    /// Section `consumer`: risk-assessments in group `risk-streamer`,
    /// transactional. `transactional_id` defaults to `risk-streamer-<host
    /// name>` (stable across restarts of one host or pod, distinct between
    /// them; two instances on one host need their own). Batches of up to 500
    /// records, gathered for at most 200 ms, are one transaction each.
    pub consumer: dora_kafka::consume::ConsumerSettings,
    /// Section `risk`; checked when loaded, so unusable rules exit 78 naming the key.
    #[serde(deserialize_with = "checked_rules")]
    pub risk: RiskSettings,
}

fn checked_rules<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RiskSettings, D::Error> {
    let risk = RiskSettings::deserialize(d)?;
    risk.rules().map_err(serde::de::Error::custom)?;
    Ok(risk)
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            common: CommonSettings::with_admin_port(9104),
            registry: Default::default(),
            producer: Default::default(),
            consumer: dora_kafka::consume::ConsumerSettings {
                group_id: "risk-streamer".into(),
                transactional_id: Some(format!("risk-streamer-{}", dora_service::host_name())),
                max_batch_records: 500,
                max_batch_wait_ms: 200,
                ..Default::default()
            },
            risk: RiskSettings::default(),
        }
    }
}

impl ServiceSettings for Settings {
    fn common(&self) -> &CommonSettings {
        &self.common
    }
}

/// Section `risk` (env `DORA_RISK__<KEY>`). The defaults are the seed's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RiskSettings {
    /// Topic risk assessments are read from. Default `risk-assessments`.
    pub assessments_topic: String,
    /// Topic alerts are written to. Default `risk-alerts`.
    pub alerts_topic: String,
    /// Window length, ms, a whole number of seconds. Default 300 000 (the seed's 5 minutes).
    pub window_ms: u64,
    /// An organisation's average riskScore over the window must be strictly
    /// above this to raise. Default 0.8 (the seed's).
    pub threshold: f64,
    /// Hysteresis: a raised alert clears when the average falls strictly
    /// below `threshold - clear_margin`. Default 0.05.
    pub clear_margin: f64,
    /// How far a record may lag behind the newest record of its partition
    /// (event time) and still count, ms, a whole number of seconds. Default 30 000.
    pub allowed_lateness_ms: u64,
    /// How often quiet organisations are checked (wall clock), ms. Default 1 000.
    pub tick_ms: u64,
    /// How many reportIds of the highest scores an alert lists. Default 3.
    pub top_reports: usize,
    /// Longest the alert history read at an assignment may make no progress
    /// (it waits for transactions a previous owner left open), ms. Default 90 000
    /// (above the producer's 60 s transaction timeout).
    pub history_stall_timeout_ms: u64,
}

impl Default for RiskSettings {
    fn default() -> Self {
        Self {
            assessments_topic: dora_kafka::topics::RISK_ASSESSMENTS.into(),
            alerts_topic: dora_kafka::topics::RISK_ALERTS.into(),
            window_ms: 300_000,
            threshold: 0.8,
            clear_margin: 0.05,
            allowed_lateness_ms: 30_000,
            tick_ms: 1_000,
            top_reports: 3,
            history_stall_timeout_ms: 90_000,
        }
    }
}

impl RiskSettings {
    /// The rules, or what is wrong with the settings (names the key).
    pub fn rules(&self) -> Result<Rules, String> {
        if self.window_ms == 0 || !self.window_ms.is_multiple_of(1000) {
            return Err(format!(
                "risk.window_ms {} is not a positive whole number of seconds",
                self.window_ms
            ));
        }
        if !self.allowed_lateness_ms.is_multiple_of(1000) {
            return Err(format!(
                "risk.allowed_lateness_ms {} is not a whole number of seconds",
                self.allowed_lateness_ms
            ));
        }
        let raise_above = score_of(self.threshold).map_err(|e| format!("risk.threshold: {e}"))?;
        if !(0.0..=self.threshold).contains(&self.clear_margin) {
            return Err(format!(
                "risk.clear_margin {} must be within 0..=threshold ({})",
                self.clear_margin, self.threshold
            ));
        }
        let clear_below = score_of(self.threshold - self.clear_margin)
            .map_err(|e| format!("risk.clear_margin: {e}"))?;
        if self.tick_ms == 0 {
            return Err("risk.tick_ms must be positive".into());
        }
        Ok(Rules {
            window_secs: (self.window_ms / 1000) as i64,
            lateness_ms: self.allowed_lateness_ms as i64,
            raise_above,
            clear_below,
            top_reports: self.top_reports,
        })
    }

    /// The tick period.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seeds_and_read_env_overrides() {
        let s: Settings = dora_config::load_from(&[]).unwrap();
        let rules = s.risk.rules().unwrap();
        assert_eq!((rules.window_secs, rules.lateness_ms), (300, 30_000));
        assert_eq!(
            (rules.raise_above, rules.clear_below),
            (800_000_000, 750_000_000)
        );
        assert_eq!(s.consumer.group_id, "risk-streamer");
        assert!(s
            .consumer
            .transactional_id
            .unwrap()
            .starts_with("risk-streamer-"));
        assert_eq!(s.common.admin.listen.port(), 9104);
        let vars = vec![
            ("DORA_RISK__WINDOW_MS".to_string(), "10000".to_string()),
            ("DORA_RISK__THRESHOLD".to_string(), "0.7".to_string()),
        ];
        let s: Settings = dora_config::load_from(&vars).unwrap();
        assert_eq!(s.risk.rules().unwrap().window_secs, 10);
        assert_eq!(s.risk.rules().unwrap().raise_above, 700_000_000);
    }

    #[test]
    fn unusable_rules_name_their_key() {
        let bad = |f: fn(&mut RiskSettings)| {
            let mut s = RiskSettings::default();
            f(&mut s);
            s.rules().unwrap_err()
        };
        assert!(bad(|s| s.window_ms = 1500).contains("risk.window_ms"));
        assert!(bad(|s| s.allowed_lateness_ms = 10).contains("risk.allowed_lateness_ms"));
        assert!(bad(|s| s.threshold = 1.5).contains("risk.threshold"));
        assert!(bad(|s| s.clear_margin = 0.9).contains("risk.clear_margin"));
        assert!(bad(|s| s.tick_ms = 0).contains("risk.tick_ms"));
        let vars = vec![("DORA_RISK__WINDOW_MS".to_string(), "1500".to_string())];
        let err = dora_config::load_from::<Settings>(&vars)
            .unwrap_err()
            .to_string();
        assert!(err.contains("risk.window_ms"), "{err}");
    }
}
