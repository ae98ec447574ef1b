//! The settings every service shares ([`CommonSettings`]: Kafka, telemetry,
//! admin) and the trait through which the boot sequence reads them from a
//! service's own settings type.

use std::time::Duration;

use dora_kafka::KafkaSettings;
use dora_telemetry::{AdminSettings, TelemetrySettings};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// What every service's settings type exposes to the boot sequence: its
/// [`CommonSettings`] (embedded with `#[serde(flatten)]`).
pub trait ServiceSettings: Serialize + DeserializeOwned + Default + Send + 'static {
    /// The common sections.
    fn common(&self) -> &CommonSettings;
    /// Kafka connection settings.
    fn kafka(&self) -> &KafkaSettings {
        &self.common().kafka
    }
    /// Logging and tracing settings.
    fn telemetry(&self) -> &TelemetrySettings {
        &self.common().telemetry
    }
    /// Admin HTTP settings.
    fn admin(&self) -> &AdminSettings {
        &self.common().admin
    }
    /// Longest time the start-up connection check may take. Default 30 s.
    fn startup_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// The settings sections every service has; a service embeds this with
/// `#[serde(flatten)]` next to its own section.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CommonSettings {
    /// Section `kafka`.
    pub kafka: KafkaSettings,
    /// Section `telemetry`.
    pub telemetry: TelemetrySettings,
    /// Section `admin`.
    pub admin: AdminSettings,
}

impl CommonSettings {
    /// Defaults with the admin server on `127.0.0.1:<port>` (each service's port
    /// from the design's address table).
    pub fn with_admin_port(port: u16) -> Self {
        let mut s = Self::default();
        s.admin.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        s
    }
}

/// Settings of a service that has only the common sections, with its admin
/// server on `127.0.0.1:<ADMIN_PORT>` by default. (De)serializes exactly as
/// [`CommonSettings`]; serde's derive does not take const generics.
#[derive(Debug, Clone)]
pub struct BaseSettings<const ADMIN_PORT: u16> {
    /// Kafka, telemetry and admin sections.
    pub common: CommonSettings,
}

impl<const ADMIN_PORT: u16> Serialize for BaseSettings<ADMIN_PORT> {
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        self.common.serialize(serializer)
    }
}

impl<'de, const ADMIN_PORT: u16> serde::Deserialize<'de> for BaseSettings<ADMIN_PORT> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        CommonSettings::deserialize(deserializer).map(|common| Self { common })
    }
}

impl<const ADMIN_PORT: u16> Default for BaseSettings<ADMIN_PORT> {
    fn default() -> Self {
        Self {
            common: CommonSettings::with_admin_port(ADMIN_PORT),
        }
    }
}

impl<const ADMIN_PORT: u16> ServiceSettings for BaseSettings<ADMIN_PORT> {
    fn common(&self) -> &CommonSettings {
        &self.common
    }
}

impl ServiceSettings for CommonSettings {
    fn common(&self) -> &CommonSettings {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_settings_default_to_their_admin_port_and_read_env_like_common() {
        let s: BaseSettings<9105> = dora_config::load_from(&[]).unwrap();
        assert_eq!(s.admin().listen.port(), 9105);
        let vars = vec![
            (
                "DORA_KAFKA__BOOTSTRAP_SERVERS".to_string(),
                "b:9092".to_string(),
            ),
            (
                "DORA_ADMIN__ANNOUNCE_PATH".to_string(),
                "/tmp/a".to_string(),
            ),
        ];
        let s: BaseSettings<9105> = dora_config::load_from(&vars).unwrap();
        assert_eq!(s.kafka().bootstrap_servers, "b:9092");
        assert_eq!(s.admin().listen.port(), 9105);
        assert_eq!(
            s.admin().announce_path.as_deref(),
            Some(std::path::Path::new("/tmp/a"))
        );
    }
}
