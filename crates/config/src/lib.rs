//! The one settings loader every service uses: defaults < file < environment,
//! with secrets read from `*_FILE` paths.
//!
//! Layers, later wins:
//!
//! 1. the settings type's `Default` (each field documents its default and unit);
//! 2. a TOML file: the path in `DORA_CONFIG`, if set (a missing file named there is an error);
//! 3. environment variables `DORA_<SECTION>__<KEY>` (double underscore separates
//!    nesting levels, e.g. `DORA_KAFKA__BOOTSTRAP_SERVERS=broker:9092`);
//! 4. secret files: `DORA_<SECTION>__<KEY>_FILE=/run/secrets/x` sets `<section>.<key>`
//!    to the file's contents, unchanged: text when they are UTF-8, else bytes.
//!
//! Secret values are typed [`Secret`] (text: a password; one trailing newline
//! of the file is dropped) or [`SecretBytes`] (a key: every byte kept, any
//! bytes, e.g. `head -c 32 /dev/urandom > key`); neither ever prints its
//! contents. `*_FILE` is for secrets: read into a plain `String`, a file keeps
//! its trailing newline.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;

mod secret;

pub use secrecy::ExposeSecret;
pub use secret::{Secret, SecretBytes};

/// Environment variable prefix for every setting.
pub const ENV_PREFIX: &str = "DORA_";
/// Environment variable naming an optional TOML settings file.
pub const CONFIG_FILE_ENV: &str = "DORA_CONFIG";

/// Why settings could not be loaded. Binaries exit with a distinct code on it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `DORA_CONFIG` does not exist.
    #[error("settings file {path} (from {CONFIG_FILE_ENV}) does not exist")]
    MissingFile {
        /// The path that was named.
        path: PathBuf,
    },
    /// A `*_FILE` secret could not be read.
    #[error("cannot read secret file {path} named by {var}: {source}")]
    SecretFile {
        /// The environment variable that named the file.
        var: String,
        /// The path it named.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A value is missing or has the wrong type.
    #[error("invalid setting `{key}`: {message}")]
    Invalid {
        /// The dotted settings key, e.g. `kafka.security_protocol`
        /// (environment variable `DORA_KAFKA__SECURITY_PROTOCOL`).
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Loads settings of type `T` from the process environment.
pub fn load<T>() -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let vars: Vec<(String, String)> = std::env::vars().collect();
    load_from(&vars)
}

/// Loads settings of type `T` from the given environment (for tests).
pub fn load_from<T>(vars: &[(String, String)]) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));

    if let Some((_, path)) = vars.iter().find(|(k, _)| k == CONFIG_FILE_ENV) {
        let path = PathBuf::from(path);
        if !path.exists() {
            return Err(ConfigError::MissingFile { path });
        }
        figment = figment.merge(Toml::file(&path));
    }

    let plain: Vec<(String, String)> = vars
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k != CONFIG_FILE_ENV && !k.ends_with("_FILE"))
        .cloned()
        .collect();
    figment = figment.merge(env_provider(plain));

    for (var, path) in vars {
        let Some(stripped) = var.strip_suffix("_FILE") else { continue };
        if !var.starts_with(ENV_PREFIX) || var == CONFIG_FILE_ENV {
            continue;
        }
        let Some(key) = settings_key(stripped) else { continue };
        figment = figment.merge((key, read_secret(var, Path::new(path))?));
    }

    figment.extract().map_err(|e| {
        let key = if e.path.is_empty() { "<root>".to_string() } else { e.path.join(".") };
        ConfigError::Invalid { key, message: e.kind.to_string() }
    })
}

/// A secret file's contents as a settings value: a string when they are
/// UTF-8, else an array of bytes (the secret types take either).
fn read_secret(var: &str, path: &Path) -> Result<figment::value::Value, ConfigError> {
    use figment::value::Value;
    let bytes = std::fs::read(path)
        .map_err(|source| ConfigError::SecretFile { var: var.to_string(), path: path.to_path_buf(), source })?;
    Ok(match String::from_utf8(bytes) {
        Ok(text) => Value::from(text),
        Err(e) => Value::from(e.into_bytes()),
    })
}

/// `DORA_SECTION__KEY` -> `section.key`.
fn settings_key(var: &str) -> Option<String> {
    var.strip_prefix(ENV_PREFIX).map(|rest| rest.to_ascii_lowercase().replace("__", "."))
}

/// An `Env` provider over an explicit list of variables instead of the process environment.
fn env_provider(vars: Vec<(String, String)>) -> Figment {
    // figment's Env provider reads the process environment; tests need an explicit
    // list, so nested keys are built here the same way (`__` -> `.`, lower case).
    let mut figment = Figment::new();
    for (var, value) in vars {
        let Some(key) = settings_key(&var) else { continue };
        figment = figment.merge((key, parse_scalar(&value)));
    }
    figment
}

/// Interprets an environment value the way figment's `Env` does: booleans and
/// numbers become typed values, everything else stays a string.
fn parse_scalar(value: &str) -> figment::value::Value {
    use figment::value::Value;
    value.parse::<Value>().unwrap_or_else(|_| Value::from(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(default)]
    struct Kafka {
        bootstrap_servers: String,
        batch_size: u32,
        #[serde(skip_serializing)]
        password: Option<Secret>,
    }
    impl Default for Kafka {
        fn default() -> Self {
            Self { bootstrap_servers: "127.0.0.1:9092".into(), batch_size: 16384, password: None }
        }
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Settings {
        kafka: Kafka,
    }

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn defaults_apply_without_anything() {
        let s: Settings = load_from(&[]).unwrap();
        assert_eq!(s.kafka.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(s.kafka.batch_size, 16384);
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(&file, "[kafka]\nbootstrap_servers = \"file:9092\"\nbatch_size = 1\n").unwrap();
        let s: Settings = load_from(&vars(&[
            ("DORA_CONFIG", file.to_str().unwrap()),
            ("DORA_KAFKA__BATCH_SIZE", "2"),
        ]))
        .unwrap();
        assert_eq!(s.kafka.bootstrap_servers, "file:9092");
        assert_eq!(s.kafka.batch_size, 2);
    }

    #[test]
    fn secret_comes_from_file_and_never_prints() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cr3t\n").unwrap();
        let s: Settings = load_from(&vars(&[("DORA_KAFKA__PASSWORD_FILE", file.to_str().unwrap())])).unwrap();
        let pw = s.kafka.password.as_ref().unwrap();
        assert_eq!(pw.expose_secret(), "s3cr3t");
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Gateway {
        #[serde(skip_serializing)]
        token_key: Option<SecretBytes>,
        #[serde(skip_serializing)]
        password: Option<Secret>,
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct WithKey {
        gateway: Gateway,
    }

    fn load_secret_file(var: &str, contents: &[u8]) -> Result<WithKey, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, contents).unwrap();
        load_from(&vars(&[(var, file.to_str().unwrap())]))
    }

    #[test]
    fn a_binary_key_file_is_read_byte_for_byte() {
        // What `head -c 32 /dev/urandom > key` makes: not UTF-8, any byte,
        // here ending in a newline byte that must be kept.
        let mut key: Vec<u8> = (0..31u8).map(|i| i.wrapping_mul(97).wrapping_add(0x80)).collect();
        key[3] = 0;
        key.push(b'\n');
        assert!(std::str::from_utf8(&key).is_err());
        let s = load_secret_file("DORA_GATEWAY__TOKEN_KEY_FILE", &key).unwrap();
        let got = s.gateway.token_key.as_ref().unwrap();
        assert_eq!(got.expose_secret(), key.as_slice());
        assert!(!format!("{s:?}").contains("128"), "{s:?}");
    }

    #[test]
    fn a_key_file_that_happens_to_be_text_keeps_its_newline() {
        let s = load_secret_file("DORA_GATEWAY__TOKEN_KEY_FILE", b"0123456789abcdef\n").unwrap();
        assert_eq!(s.gateway.token_key.unwrap().expose_secret(), b"0123456789abcdef\n");
    }

    #[test]
    fn a_text_secret_drops_one_trailing_line_end_only() {
        let s = load_secret_file("DORA_GATEWAY__PASSWORD_FILE", b"pw\r\n").unwrap();
        assert_eq!(s.gateway.password.unwrap().expose_secret(), "pw");
        let s = load_secret_file("DORA_GATEWAY__PASSWORD_FILE", b"pw \n\n").unwrap();
        assert_eq!(s.gateway.password.unwrap().expose_secret(), "pw \n");
        // a password of digits stays text
        let s = load_secret_file("DORA_GATEWAY__PASSWORD_FILE", b"12345\n").unwrap();
        assert_eq!(s.gateway.password.unwrap().expose_secret(), "12345");
    }

    #[test]
    fn a_text_secret_from_a_binary_file_is_refused_naming_the_key() {
        let err = load_secret_file("DORA_GATEWAY__PASSWORD_FILE", &[0xff, 0xfe, 0x00]).unwrap_err();
        assert!(matches!(&err, ConfigError::Invalid { key, .. } if key == "gateway.password"), "{err}");
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }

    #[test]
    fn missing_secret_file_names_the_variable() {
        let err = load_from::<Settings>(&vars(&[("DORA_KAFKA__PASSWORD_FILE", "/nonexistent/pw")])).unwrap_err();
        assert!(err.to_string().contains("DORA_KAFKA__PASSWORD_FILE"), "{err}");
    }

    #[test]
    fn ill_typed_value_names_the_key() {
        let err = load_from::<Settings>(&vars(&[("DORA_KAFKA__BATCH_SIZE", "lots")])).unwrap_err();
        assert!(err.to_string().contains("batch_size"), "{err}");
    }

    #[test]
    fn unknown_enum_value_names_the_key() {
        #[derive(Debug, Default, Serialize, Deserialize)]
        #[serde(default)]
        struct WithEnum {
            mode: Mode,
        }
        #[derive(Debug, Default, Serialize, Deserialize)]
        enum Mode {
            #[default]
            Fast,
            Safe,
        }
        let err = load_from::<WithEnum>(&vars(&[("DORA_MODE", "Bogus")])).unwrap_err();
        assert!(matches!(&err, ConfigError::Invalid { key, .. } if key == "mode"), "{err}");
        let ok: WithEnum = load_from(&vars(&[("DORA_MODE", "Safe")])).unwrap();
        assert!(matches!(ok.mode, Mode::Safe));
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let err = load_from::<Settings>(&vars(&[("DORA_CONFIG", "/nonexistent.toml")])).unwrap_err();
        assert!(matches!(err, ConfigError::MissingFile { .. }));
    }
}
