//! Schema registry settings (section `registry`, environment `DORA_REGISTRY__*`).

use dora_config::Secret;
use serde::{Deserialize, Serialize};

/// Default registry URL: the local Apicurio's Confluent-compatible API.
pub const DEFAULT_REGISTRY_URL: &str = "http://127.0.0.1:8081/apis/ccompat/v7";

/// How to reach the Confluent-API schema registry. Section `registry` of a
/// service's settings, e.g. `DORA_REGISTRY__URL`, `DORA_REGISTRY__PASSWORD_FILE`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistrySettings {
    /// Base URL of the Confluent-compatible API (no trailing slash needed).
    /// Default `http://127.0.0.1:8081/apis/ccompat/v7` (Apicurio); for
    /// Confluent's registry the root URL, e.g. `http://registry:8081`.
    pub url: String,
    /// Timeout of one HTTP request, milliseconds. Default 5000.
    pub request_timeout_ms: u64,
    /// Timeout to establish a connection, milliseconds. Default 2000.
    pub connect_timeout_ms: u64,
    /// Basic-auth user name; no authentication when unset. Default unset.
    pub username: Option<String>,
    /// Basic-auth password (use `DORA_REGISTRY__PASSWORD_FILE`). Never
    /// serialized or printed. Default unset.
    #[serde(skip_serializing)]
    pub password: Option<Secret>,
    /// How long a schema id the registry answered 404 for is answered from
    /// memory (still an unknown, retryable id) before the registry is asked
    /// again, milliseconds; 0 asks every time. Default 5000. Keeps records
    /// with made-up ids from costing one registry request per retry.
    pub unknown_id_cache_ms: u64,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            url: DEFAULT_REGISTRY_URL.to_string(),
            request_timeout_ms: 5_000,
            connect_timeout_ms: 2_000,
            username: None,
            password: None,
            unknown_id_cache_ms: 5_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Settings {
        registry: RegistrySettings,
    }

    #[test]
    fn defaults_and_environment_overrides() {
        let s: Settings = dora_config::load_from(&[]).unwrap();
        assert_eq!(s.registry.url, DEFAULT_REGISTRY_URL);
        assert_eq!(s.registry.request_timeout_ms, 5_000);
        assert!(s.registry.username.is_none() && s.registry.password.is_none());

        let vars = [
            (
                "DORA_REGISTRY__URL".to_string(),
                "http://registry:8081".to_string(),
            ),
            ("DORA_REGISTRY__USERNAME".to_string(), "svc".to_string()),
            (
                "DORA_REGISTRY__PASSWORD".to_string(),
                "pw-not-printed".to_string(),
            ),
        ];
        let s: Settings = dora_config::load_from(&vars).unwrap();
        assert_eq!(s.registry.url, "http://registry:8081");
        assert_eq!(s.registry.username.as_deref(), Some("svc"));
        use dora_config::ExposeSecret;
        assert_eq!(
            s.registry.password.as_ref().unwrap().expose_secret(),
            "pw-not-printed"
        );
        assert!(!format!("{s:?}").contains("pw-not-printed"));
        assert!(!serde_json::to_string(&s)
            .unwrap()
            .contains("pw-not-printed"));
    }
}
