//! Kafka connection settings (section `kafka`) and the one function that turns
//! them into an rdkafka `ClientConfig`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dora_config::{ExposeSecret, Secret};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::KafkaError;

/// How clients talk to the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SecurityProtocol {
    /// No TLS, no authentication (local development only).
    #[default]
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    /// TLS with SASL/SCRAM authentication.
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

/// SCRAM mechanism for `SASL_SSL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SaslMechanism {
    /// SCRAM-SHA-256 (what the seed uses).
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM-SHA-512 (what Strimzi's KafkaUser issues).
    #[default]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The librdkafka `sasl.mechanism` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Connection settings every Kafka client shares.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaSettings {
    /// `bootstrap.servers`. Default `127.0.0.1:9092` (the local stack's PLAINTEXT listener).
    pub bootstrap_servers: String,
    /// `security.protocol`: `PLAINTEXT` or `SASL_SSL`. Default `PLAINTEXT`.
    pub security_protocol: SecurityProtocol,
    /// `sasl.mechanism` when `SASL_SSL`. Default `SCRAM-SHA-512`.
    pub sasl_mechanism: SaslMechanism,
    /// `sasl.username`. Required for `SASL_SSL`.
    pub sasl_username: Option<String>,
    /// `sasl.password`, normally from `DORA_KAFKA__SASL_PASSWORD_FILE`. Never logged.
    #[serde(skip_serializing)]
    pub sasl_password: Option<Secret>,
    /// `ssl.ca.location`: PEM file of the CA that signed the brokers' certificates.
    /// Default: none (the system trust store). Certificate verification is always on.
    pub ssl_ca_location: Option<PathBuf>,
    /// `client.id`. Default: empty, and each service sets its own name.
    pub client_id: String,
    /// Extra librdkafka properties. A key that one of the typed fields above (or the
    /// producer/consumer settings) owns is rejected, so the two cannot disagree,
    /// and so is every security key (`security.*`, `ssl.*`, `sasl.*`,
    /// `enable.ssl.*`, ...): `extra` can never turn off certificate or
    /// hostname verification.
    pub extra: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: SaslMechanism::ScramSha512,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            client_id: String::new(),
            extra: BTreeMap::new(),
        }
    }
}

/// librdkafka keys the typed settings own; `extra` may not set them.
const OWNED_KEYS: &[&str] = &["bootstrap.servers", "metadata.broker.list", "client.id"];

/// Prefixes of librdkafka's security keys (protocol, TLS, SASL): all owned by
/// the typed settings, whether or not a typed field sets them, so nothing can
/// weaken what `security_protocol` promises.
const SECURITY_PREFIXES: &[&str] = &[
    "security.",
    "ssl.",
    "ssl_",
    "sasl.",
    "enable.ssl.",
    "enable.sasl.",
    "https.",
];

fn owned(key: &str, also_owned: &[&str]) -> bool {
    OWNED_KEYS.contains(&key)
        || also_owned.contains(&key)
        || SECURITY_PREFIXES.iter().any(|p| key.starts_with(p))
}

impl KafkaSettings {
    /// The base `ClientConfig` for any client: connection and security only.
    ///
    /// Errors name the missing or conflicting setting.
    pub fn client_config(&self) -> Result<ClientConfig, KafkaError> {
        self.client_config_owning(&[])
    }

    /// Like [`client_config`](Self::client_config), additionally rejecting `extra`
    /// keys in `also_owned` (the producer and consumer factories pass theirs).
    pub fn client_config_owning(&self, also_owned: &[&str]) -> Result<ClientConfig, KafkaError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(KafkaError::Config(
                "kafka.bootstrap_servers is empty".into(),
            ));
        }
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap_servers);
        if !self.client_id.is_empty() {
            cfg.set("client.id", &self.client_id);
        }
        match self.security_protocol {
            SecurityProtocol::Plaintext => {
                cfg.set("security.protocol", "plaintext");
            }
            SecurityProtocol::SaslSsl => {
                let user = self
                    .sasl_username
                    .as_deref()
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| {
                        KafkaError::Config("kafka.sasl_username is required with SASL_SSL".into())
                    })?;
                let password = self.sasl_password.as_ref().ok_or_else(|| {
                    KafkaError::Config(
                        "kafka.sasl_password is required with SASL_SSL (set DORA_KAFKA__SASL_PASSWORD_FILE)"
                            .into(),
                    )
                })?;
                cfg.set("security.protocol", "sasl_ssl")
                    .set("sasl.mechanism", self.sasl_mechanism.as_str())
                    .set("sasl.username", user)
                    .set("sasl.password", password.expose_secret())
                    .set("enable.ssl.certificate.verification", "true")
                    .set("ssl.endpoint.identification.algorithm", "https");
                if let Some(ca) = &self.ssl_ca_location {
                    if !ca.exists() {
                        return Err(KafkaError::Config(format!(
                            "kafka.ssl_ca_location {} does not exist",
                            ca.display()
                        )));
                    }
                    cfg.set("ssl.ca.location", ca.to_string_lossy());
                }
            }
        }
        for (key, value) in &self.extra {
            if owned(key, also_owned) {
                return Err(KafkaError::Config(format!(
                    "kafka.extra sets `{key}`, which a typed setting owns; use the typed setting"
                )));
            }
            cfg.set(key, value);
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_by_default() {
        let cfg = KafkaSettings::default().client_config().unwrap();
        assert_eq!(cfg.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(cfg.get("security.protocol"), Some("plaintext"));
        assert_eq!(cfg.get("sasl.username"), None);
    }

    #[test]
    fn sasl_ssl_requires_credentials() {
        let s = KafkaSettings {
            security_protocol: SecurityProtocol::SaslSsl,
            ..Default::default()
        };
        let err = s.client_config().unwrap_err().to_string();
        assert!(err.contains("sasl_username"), "{err}");
        let s = KafkaSettings {
            sasl_username: Some("u".into()),
            ..s
        };
        let err = s.client_config().unwrap_err().to_string();
        assert!(err.contains("sasl_password"), "{err}");
    }

    #[test]
    fn sasl_ssl_verifies_certificates() {
        let s = KafkaSettings {
            security_protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: SaslMechanism::ScramSha256,
            sasl_username: Some("u".into()),
            sasl_password: Some(Secret::from("p")),
            ..Default::default()
        };
        let cfg = s.client_config().unwrap();
        assert_eq!(cfg.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(cfg.get("enable.ssl.certificate.verification"), Some("true"));
    }

    #[test]
    fn extra_cannot_touch_any_security_key() {
        for key in [
            "ssl.endpoint.identification.algorithm",
            "enable.ssl.certificate.verification",
            "ssl.certificate.location",
            "sasl.oauthbearer.config",
            "security.protocol",
            "ssl_engine_id",
        ] {
            let mut s = KafkaSettings::default();
            s.extra.insert(key.into(), "none".into());
            let err = s.client_config().unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        let mut s = KafkaSettings::default();
        s.extra.insert("socket.timeout.ms".into(), "1000".into());
        assert!(s.client_config().is_ok(), "other keys stay open");
    }

    #[test]
    fn extra_cannot_override_typed_settings() {
        let mut s = KafkaSettings::default();
        s.extra.insert("security.protocol".into(), "ssl".into());
        let err = s.client_config().unwrap_err().to_string();
        assert!(err.contains("security.protocol"), "{err}");
        let mut s = KafkaSettings::default();
        s.extra.insert("acks".into(), "1".into());
        assert!(s.client_config_owning(&["acks"]).is_err());
        assert!(s.client_config().is_ok());
    }
}
