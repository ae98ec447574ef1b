//! The producer's settings (a service's `producer` section) and the
//! librdkafka configuration they make: idempotent, `acks=all`, the seed's
//! batching; the keys they own cannot be set through `kafka.extra`.

use serde::{Deserialize, Serialize};

use crate::{KafkaError, KafkaSettings};

/// Producer settings (a service's `producer` section). Defaults follow the seed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ProducerSettings {
    /// `compression.codec`. Default `snappy` (the seed's `compression_type`).
    pub compression: String,
    /// `batch.size`, bytes per partition batch. Default 16384 (the seed's; librdkafka's is 1000000).
    pub batch_size: u32,
    /// `linger.ms`. Default 10 (the seed's; librdkafka's is 5).
    pub linger_ms: u32,
    /// `message.timeout.ms`: how long librdkafka retries one record before its
    /// delivery fails. Default 30000 (librdkafka's is 300000). This bounds the
    /// seed's `retries=3`: retries are unlimited within this time.
    pub delivery_timeout_ms: u32,
    /// `max.in.flight.requests.per.connection`. Default 5, the most idempotence
    /// allows while still keeping per-partition order.
    pub max_in_flight: u32,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        Self {
            compression: "snappy".into(),
            batch_size: 16384,
            linger_ms: 10,
            delivery_timeout_ms: 30_000,
            max_in_flight: 5,
        }
    }
}

/// librdkafka keys the producer settings own; `kafka.extra` may not set them.
pub(crate) const PRODUCER_OWNED_KEYS: &[&str] = &[
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "compression.codec",
    "compression.type",
    "batch.size",
    "linger.ms",
    "queue.buffering.max.ms",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "max.in.flight",
    "max.in.flight.requests.per.connection",
    "transactional.id",
    "enable.gapless.guarantee",
];

impl ProducerSettings {
    /// The full producer `ClientConfig`: connection settings plus idempotence,
    /// `acks=all` and these settings.
    pub fn client_config(
        &self,
        kafka: &KafkaSettings,
    ) -> Result<rdkafka::ClientConfig, KafkaError> {
        let mut cfg = kafka.client_config_owning(PRODUCER_OWNED_KEYS)?;
        cfg.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.codec", &self.compression)
            .set("batch.size", self.batch_size.to_string())
            .set("linger.ms", self.linger_ms.to_string())
            .set("message.timeout.ms", self.delivery_timeout_ms.to_string())
            .set(
                "max.in.flight.requests.per.connection",
                self.max_in_flight.to_string(),
            );
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_acks_all_snappy_and_the_seeds_batching() {
        let cfg = ProducerSettings::default()
            .client_config(&KafkaSettings::default())
            .unwrap();
        assert_eq!(cfg.get("enable.idempotence"), Some("true"));
        assert_eq!(cfg.get("acks"), Some("all"));
        assert_eq!(cfg.get("compression.codec"), Some("snappy"));
        assert_eq!(cfg.get("batch.size"), Some("16384"));
        assert_eq!(cfg.get("linger.ms"), Some("10"));
        assert_eq!(cfg.get("max.in.flight.requests.per.connection"), Some("5"));
    }

    #[test]
    fn extra_cannot_weaken_the_producer() {
        let mut kafka = KafkaSettings::default();
        kafka.extra.insert("acks".into(), "1".into());
        let err = ProducerSettings::default()
            .client_config(&kafka)
            .unwrap_err()
            .to_string();
        assert!(err.contains("acks"), "{err}");
    }
}
