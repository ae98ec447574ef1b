//! Settings of agent-gateway: the shared sections plus `gateway` (gRPC,
//! authentication, limits, health timing, topics).

use std::net::SocketAddr;
use std::time::Duration;

use dora_service::{CommonSettings, ServiceSettings};
use serde::{Deserialize, Serialize};

/// Settings of agent-gateway (defaults < `DORA_CONFIG` file < `DORA_*` env).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Kafka, telemetry and admin sections. Admin default `127.0.0.1:9101`.
    #[serde(flatten)]
    pub common: CommonSettings,
    /// Section `registry`: the schema registry.
    pub registry: dora_schema::RegistrySettings,
    /// Section `producer`: the agent-events and agent-health producer. Default
    /// `linger_ms` 5 (the runtime's default is the seed's 10).
    pub producer: dora_kafka::ProducerSettings,
    /// Section `consumer`: the health processor's consumer. Group default
    /// `agent-event-processor`; `fetch_min_bytes` 1 and batches wait at most 50 ms
    /// (runtime defaults 1024 and 500) so health follows events closely;
    /// `transactional_id` default `agent-gateway-<hostname>` (one per replica,
    /// stable across its restarts so a restart fences its predecessor).
    pub consumer: dora_kafka::consume::ConsumerSettings,
    /// Section `gateway`.
    pub gateway: GatewaySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            common: CommonSettings::with_admin_port(9101),
            registry: Default::default(),
            // Agents wait for the ack: linger 5 ms (librdkafka's default) instead
            // of the seed's 10 halves the typical ack latency; under load batches
            // still fill while earlier ones are in flight.
            producer: dora_kafka::ProducerSettings {
                linger_ms: 5,
                ..Default::default()
            },
            consumer: dora_kafka::consume::ConsumerSettings {
                group_id: "agent-event-processor".into(),
                // Health should follow events closely (the seed's fetch.min.bytes=1024
                // makes a lone heartbeat wait fetch_max_wait_ms); batches fill fast
                // under load anyway.
                fetch_min_bytes: 1,
                max_batch_wait_ms: 50,
                // One transaction per batch: a backlog of 250k events folded at
                // ~6k events/s in the runtime's default batches of 100 and at
                // ~11k/s in batches of 1000 (2-core dev machine); a quiet stream
                // still commits after max_batch_wait_ms.
                max_batch_records: 1000,
                transactional_id: Some(format!("agent-gateway-{}", dora_service::host_name())),
                ..Default::default()
            },
            gateway: GatewaySettings::default(),
        }
    }
}

impl ServiceSettings for Settings {
    fn common(&self) -> &CommonSettings {
        &self.common
    }
}

/// Section `gateway` (env `DORA_GATEWAY__<KEY>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewaySettings {
    /// gRPC listen address. Default `127.0.0.1:50051`.
    pub grpc_listen: SocketAddr,
    /// TLS and token settings (`tls_cert`, `tls_key`, `tls_client_ca`,
    /// `token_key` from `DORA_GATEWAY__TOKEN_KEY_FILE`): see
    /// [`dora_auth::AuthSettings`]. Agents authenticate with a token for
    /// `sub` = their id, or a client certificate whose one CN is their id.
    #[serde(flatten)]
    pub auth: dora_auth::AuthSettings,
    /// Interval at which agents are expected to heartbeat, ms. Default 10 000.
    pub heartbeat_interval_ms: u64,
    /// Missed heartbeat intervals after which an agent is UNHEALTHY. Default 3.
    pub unhealthy_after_intervals: u32,
    /// How often silent agents are looked for, ms. Default 1 000.
    pub liveness_check_ms: u64,
    /// Silence after which an agent is retired: a tombstone on agent-health
    /// removes it from every replica's directory (and, after compaction, from
    /// the topic), ms; 0: never. Default 604 800 000 (7 days).
    pub retire_after_ms: u64,
    /// Largest `agent_id`, `agent_type`, `task_id`, bytes. Default 128.
    pub max_id_bytes: usize,
    /// Largest `message`, bytes. Default 4 096.
    pub max_message_bytes: usize,
    /// Largest `metadata` JSON text, bytes. Default 16 384.
    pub max_metadata_bytes: usize,
    /// Largest gRPC request frame, bytes (larger: OUT_OF_RANGE). Default 65 536.
    pub max_request_bytes: usize,
    /// Events that may wait for a broker ack at once (the bounded send queue).
    /// Default 4 096.
    pub send_queue_capacity: usize,
    /// Bytes of events that may wait for a broker ack at once (the send
    /// queue's memory bound). Default 67 108 864 (64 MiB).
    pub max_in_flight_bytes: usize,
    /// Longest a write waits for a queue slot when the call has no deadline, ms;
    /// then RESOURCE_EXHAUSTED. Default 5 000.
    pub send_queue_wait_ms: u64,
    /// Event streams one caller may hold open at once (more: RESOURCE_EXHAUSTED). Default 8.
    pub max_streams_per_caller: usize,
    /// WatchAgents calls one caller may hold open at once. Default 4.
    pub max_watches_per_caller: usize,
    /// Topic agent events are written to. Default `agent-events`.
    pub events_topic: String,
    /// Compacted topic of agent health. Default `agent-health`.
    pub health_topic: String,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            auth: Default::default(),
            heartbeat_interval_ms: 10_000,
            unhealthy_after_intervals: 3,
            liveness_check_ms: 1_000,
            retire_after_ms: 7 * 24 * 3_600_000,
            max_id_bytes: 128,
            max_message_bytes: 4_096,
            max_metadata_bytes: 16_384,
            max_request_bytes: 65_536,
            send_queue_capacity: 4_096,
            max_in_flight_bytes: 64 << 20,
            send_queue_wait_ms: 5_000,
            max_streams_per_caller: 8,
            max_watches_per_caller: 4,
            events_topic: dora_kafka::topics::AGENT_EVENTS.to_string(),
            health_topic: dora_kafka::topics::AGENT_HEALTH.to_string(),
        }
    }
}

impl GatewaySettings {
    /// Silence after which an agent is UNHEALTHY, ms.
    pub fn allowed_silence_ms(&self) -> i64 {
        (self
            .heartbeat_interval_ms
            .saturating_mul(u64::from(self.unhealthy_after_intervals))) as i64
    }

    /// When agents count as silent or are retired.
    pub fn liveness(&self, lag_interval_ms: u32) -> crate::fold::Liveness {
        crate::fold::Liveness {
            allowed_silence_ms: self.allowed_silence_ms(),
            retire_after_ms: (self.retire_after_ms > 0).then_some(self.retire_after_ms as i64),
            caught_up_margin_ms: 2 * i64::from(lag_interval_ms),
        }
    }

    /// How long a write may wait for a queue slot when the call has no deadline.
    pub fn send_queue_wait(&self) -> Duration {
        Duration::from_millis(self.send_queue_wait_ms)
    }

    /// The validation limits.
    pub fn limits(&self) -> crate::validation::Limits {
        crate::validation::Limits {
            max_id_bytes: self.max_id_bytes,
            max_message_bytes: self.max_message_bytes,
            max_metadata_bytes: self.max_metadata_bytes,
        }
    }
}
