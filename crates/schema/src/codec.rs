//! [`Codec`]: Confluent wire format over the schema registry, with the seed's
//! legacy JSON accepted on decode.
//!
//! Wire format: byte 0 is the magic byte `0`, bytes 1..5 the schema id
//! (big-endian `u32`), the rest the Avro binary body. Subjects follow the
//! topic-name strategy: `<topic>-value`.
//!
//! Caches: the id registered for each (subject, record) and the parsed writer
//! schema of each id are kept for the life of the codec (ids are immutable in
//! a registry), so once a topic's type is registered and each writer schema id
//! has been seen once, encode and decode never touch the network again — a
//! registry outage after warm-up stops neither. Ids the registry answered 404
//! for are remembered for `registry.unknown_id_cache_ms` (a negative cache).
//!
//! Registry answers a consumer should retry (see [`retryable_status`]): 5xx,
//! 408, 429, 401 and 403 (credentials rotating), and 404 for a schema id (a
//! replica that has not caught up). Everything else is the record's fault.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use dora_config::ExposeSecret;
use schema_registry_converter::async_impl::schema_registry::{
    get_schema_by_id, post_schema, SrSettings,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::record::{
    decode_body, decode_body_json, encode_body, writer_name, AvroRecord, CompiledSchema,
};
use crate::unknown_ids::UnknownIds;
use crate::{legacy, RegistrySettings, SchemaError};

/// The Confluent wire-format magic byte.
pub const MAGIC_BYTE: u8 = 0;
/// Length of the Confluent header: magic byte + 4-byte schema id.
pub const HEADER_LEN: usize = 5;
/// Compatibility level set on every subject this codec registers.
pub const COMPATIBILITY: &str = "BACKWARD_TRANSITIVE";

/// The registry subject of a topic's values (topic-name strategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// What a value's first bytes say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Confluent-framed Avro written with this schema id.
    Avro {
        /// The schema id from the header.
        id: u32,
    },
    /// The seed's plain JSON (first non-whitespace byte is `{`).
    LegacyJson,
}

/// Tells Confluent-framed Avro from legacy JSON without decoding the body.
pub fn framing(bytes: &[u8]) -> Result<Framing, SchemaError> {
    match bytes.first() {
        None => Err(SchemaError::Truncated { len: 0 }),
        Some(&MAGIC_BYTE) => {
            let header: [u8; HEADER_LEN] = bytes
                .get(..HEADER_LEN)
                .and_then(|h| h.try_into().ok())
                .ok_or(SchemaError::Truncated { len: bytes.len() })?;
            Ok(Framing::Avro {
                id: u32::from_be_bytes([header[1], header[2], header[3], header[4]]),
            })
        }
        Some(&first) => match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Ok(Framing::LegacyJson),
            _ => Err(SchemaError::UnknownMagicByte { byte: first }),
        },
    }
}

/// A value decoded without knowing its type ([`Codec::decode_generic`]).
#[derive(Clone, Debug, PartialEq)]
pub struct GenericValue {
    /// How it was framed (Avro with its schema id, or legacy JSON).
    pub framing: Framing,
    /// Full name of the Avro record it was written as; `None` for JSON.
    pub record: Option<String>,
    /// The value as JSON.
    pub json: serde_json::Value,
}

/// Encodes and decodes every Kafka value of the platform. Cheap to clone
/// (one `Arc`); clones share the caches.
#[derive(Clone)]
pub struct Codec {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    sr: SrSettings,
    /// Client for the one call the converter lacks (PUT /config); built on
    /// first registration, so decode-only codecs load no second TLS context.
    http: OnceLock<reqwest::Client>,
    timeouts: (Duration, Duration),
    auth: Option<(String, Option<dora_config::Secret>)>,
    /// topic -> (fingerprint of the schema, registered id) of its value subject.
    ids: RwLock<HashMap<String, Vec<(u64, u32)>>>,
    /// schema id -> parsed writer schema.
    writers: RwLock<HashMap<u32, WriterSchema>>,
    /// Ids the registry recently did not know.
    unknown: UnknownIds,
}

/// A writer schema in the cache: one of ours (static) or fetched by id.
#[derive(Clone)]
enum WriterSchema {
    Ours(&'static CompiledSchema),
    Fetched(Arc<CompiledSchema>),
}

impl std::ops::Deref for WriterSchema {
    type Target = CompiledSchema;
    fn deref(&self) -> &CompiledSchema {
        match self {
            WriterSchema::Ours(s) => s,
            WriterSchema::Fetched(s) => s,
        }
    }
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("url", &self.inner.url)
            .field(
                "registered",
                &self.inner.ids.read().map(|m| m.len()).unwrap_or(0),
            )
            .field(
                "cached_schemas",
                &self.inner.writers.read().map(|m| m.len()).unwrap_or(0),
            )
            .finish_non_exhaustive()
    }
}

impl Codec {
    /// Builds a codec; no network traffic until the first register/encode/decode.
    pub fn new(settings: &RegistrySettings) -> Result<Codec, SchemaError> {
        let url = settings.url.trim_end_matches('/').to_string();
        reqwest::Url::parse(&url).map_err(|e| SchemaError::Settings {
            reason: format!("registry.url {url:?}: {e}"),
        })?;
        let timeout = Duration::from_millis(settings.request_timeout_ms);
        let connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
        let client_builder = || {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(connect_timeout)
        };

        let mut sr = SrSettings::new_builder(url.clone());
        sr.set_timeout(timeout);
        let password = settings
            .password
            .as_ref()
            .map(|p| p.expose_secret().to_string());
        if let Some(user) = &settings.username {
            sr.set_basic_authorization(user, password.as_deref());
        }
        let sr = sr
            .build_with(client_builder())
            .map_err(|e| SchemaError::Settings {
                reason: e.to_string(),
            })?;
        Ok(Codec {
            inner: Arc::new(Inner {
                url,
                sr,
                http: OnceLock::new(),
                timeouts: (timeout, connect_timeout),
                auth: settings
                    .username
                    .clone()
                    .map(|u| (u, settings.password.clone())),
                ids: RwLock::new(HashMap::new()),
                writers: RwLock::new(HashMap::new()),
                unknown: UnknownIds::new(Duration::from_millis(settings.unknown_id_cache_ms)),
            }),
        })
    }

    /// Registers `T`'s schema under `<topic>-value` and returns its id.
    /// Idempotent: the same schema yields the same id, and a second call is
    /// answered from the cache. Sets the subject's compatibility to
    /// BACKWARD_TRANSITIVE first, so the registry checks this and every later
    /// version against all earlier ones; a rejected schema is
    /// [`SchemaError::IncompatibleSchema`].
    pub async fn register<T: AvroRecord>(&self, topic: &str) -> Result<u32, SchemaError> {
        let subject = value_subject(topic);
        let fingerprint = T::compiled().fingerprint();
        if let Some(id) = self.cached_id(topic, fingerprint) {
            return Ok(id);
        }
        let configured = self.set_compatibility(&subject).await?;
        let id = self.post::<T>(&subject).await?;
        if !configured {
            // registries that refuse config for a subject that does not exist yet
            if !self.set_compatibility(&subject).await? {
                return Err(SchemaError::Registry {
                    reason: format!("cannot set compatibility of {subject} after registering it"),
                });
            }
        }
        self.cache_id(topic, fingerprint, id);
        self.inner
            .writers
            .write()
            .expect("writer cache lock poisoned")
            .entry(id)
            .or_insert(WriterSchema::Ours(T::compiled()));
        Ok(id)
    }

    /// Encodes `value` in the Confluent wire format with the id `T` is
    /// registered under for `topic` (registering it on first use).
    pub async fn encode<T: AvroRecord + Serialize>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<Vec<u8>, SchemaError> {
        let id = match self.cached_id(topic, T::compiled().fingerprint()) {
            Some(id) => id,
            None => self.register::<T>(topic).await?,
        };
        encode_framed(id, value)
    }

    /// Decodes a value of `topic`: Confluent-framed Avro (writer schema by id,
    /// cached; resolved against `T`'s schema when it differs) or the seed's
    /// legacy JSON. Anything else is an error; only registry trouble
    /// ([`SchemaError::is_retryable`]) is worth retrying.
    pub async fn decode<T: AvroRecord + DeserializeOwned>(
        &self,
        topic: &str,
        bytes: &[u8],
    ) -> Result<T, SchemaError> {
        match framing(bytes)? {
            Framing::LegacyJson => legacy::decode_json(bytes),
            Framing::Avro { id } => {
                let writer = self.writer_schema(id).await?;
                decode_body::<T>(&writer, &bytes[HEADER_LEN..]).map_err(|e| match e {
                    SchemaError::SchemaMismatch { reason } => SchemaError::SchemaMismatch {
                        reason: format!("topic {topic}, schema id {id}: {reason}"),
                    },
                    other => other,
                })
            }
        }
    }

    /// Decodes any value of the platform for display, without knowing its
    /// type: Confluent-framed Avro with its writer schema (fetched by id,
    /// cached) or the seed's legacy JSON as it is. For operator tools (e.g.
    /// showing a dead letter's original value); services decode into their
    /// own types with [`decode`](Self::decode).
    pub async fn decode_generic(&self, bytes: &[u8]) -> Result<GenericValue, SchemaError> {
        match framing(bytes)? {
            Framing::LegacyJson => {
                let json = serde_json::from_slice(bytes).map_err(|e| SchemaError::InvalidJson {
                    reason: e.to_string(),
                })?;
                Ok(GenericValue {
                    framing: Framing::LegacyJson,
                    record: None,
                    json,
                })
            }
            Framing::Avro { id } => {
                let writer = self.writer_schema(id).await?;
                let json = decode_body_json(&writer, &bytes[HEADER_LEN..])?;
                Ok(GenericValue {
                    framing: Framing::Avro { id },
                    record: Some(writer_name(&writer)),
                    json,
                })
            }
        }
    }

    /// The definition ([`CompiledSchema::definition`]) of the writer schema
    /// registered under `id`, from the cache or the registry: what an archive
    /// keeps to decode its stored values without the registry.
    pub async fn writer_definition(&self, id: u32) -> Result<String, SchemaError> {
        Ok(self.writer_schema(id).await?.definition())
    }

    /// The writer schema registered under `id`, from the cache or the registry.
    async fn writer_schema(&self, id: u32) -> Result<WriterSchema, SchemaError> {
        if let Some(s) = self
            .inner
            .writers
            .read()
            .expect("writer cache lock poisoned")
            .get(&id)
        {
            return Ok(s.clone());
        }
        if self.inner.unknown.recently_unknown(id) {
            return Err(SchemaError::UnknownSchemaId { id });
        }
        let registered = get_schema_by_id(id, &self.inner.sr)
            .await
            .map_err(|e| match status_of(&e) {
                Some(404) => {
                    self.inner.unknown.remember(id);
                    SchemaError::UnknownSchemaId { id }
                }
                _ => registry_error(e),
            })?;
        self.inner.unknown.forget(id);
        if registered.schema_type != SchemaType::Avro {
            return Err(SchemaError::SchemaMismatch {
                reason: format!(
                    "schema id {id} is a {:?} schema, not Avro",
                    registered.schema_type
                ),
            });
        }
        let compiled = CompiledSchema::parse(&format!("schema id {id}"), &registered.schema)?;
        let schema = WriterSchema::Fetched(Arc::new(compiled));
        self.inner
            .writers
            .write()
            .expect("writer cache lock poisoned")
            .entry(id)
            .or_insert(schema.clone());
        Ok(schema)
    }

    fn cached_id(&self, topic: &str, fingerprint: u64) -> Option<u32> {
        let ids = self.inner.ids.read().expect("id cache lock poisoned");
        ids.get(topic)?
            .iter()
            .find(|(f, _)| *f == fingerprint)
            .map(|&(_, id)| id)
    }

    fn cache_id(&self, topic: &str, fingerprint: u64, id: u32) {
        let mut ids = self.inner.ids.write().expect("id cache lock poisoned");
        let known = ids.entry(topic.to_string()).or_default();
        if !known.iter().any(|(f, _)| *f == fingerprint) {
            known.push((fingerprint, id));
        }
    }

    async fn post<T: AvroRecord>(&self, subject: &str) -> Result<u32, SchemaError> {
        let schema = SuppliedSchema::new(
            Some(T::NAME.to_string()),
            SchemaType::Avro,
            T::SCHEMA.to_string(),
        );
        match post_schema(&self.inner.sr, subject.to_string(), schema).await {
            Ok(registered) => Ok(registered.id),
            Err(e) if status_of(&e) == Some(409) => Err(SchemaError::IncompatibleSchema {
                subject: subject.to_string(),
                record: T::NAME.to_string(),
                reason: e.cause.clone().unwrap_or_else(|| e.error.clone()),
            }),
            Err(e) => Err(registry_error(e)),
        }
    }

    /// PUT /config/{subject}; false when the registry does not know the subject.
    async fn set_compatibility(&self, subject: &str) -> Result<bool, SchemaError> {
        let url = format!("{}/config/{}", self.inner.url, subject.replace('/', "%2F"));
        let http = match self.inner.http.get() {
            Some(http) => http,
            None => {
                let (timeout, connect_timeout) = self.inner.timeouts;
                let http = reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(connect_timeout)
                    .build()
                    .map_err(|e| SchemaError::Settings {
                        reason: e.to_string(),
                    })?;
                self.inner.http.get_or_init(|| http)
            }
        };
        let mut request = http
            .put(&url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/vnd.schemaregistry.v1+json",
            )
            .header(
                reqwest::header::ACCEPT,
                "application/vnd.schemaregistry.v1+json",
            )
            .body(format!(r#"{{"compatibility":"{COMPATIBILITY}"}}"#));
        if let Some((user, password)) = &self.inner.auth {
            request = request.basic_auth(user, password.as_ref().map(|p| p.expose_secret()));
        }
        let response = request
            .send()
            .await
            .map_err(|e| SchemaError::RegistryUnavailable {
                reason: format!("PUT {url}: {e}"),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(true);
        }
        let body = response.text().await.unwrap_or_default();
        match status.as_u16() {
            404 => Ok(false),
            s if retryable_status(s) => Err(SchemaError::RegistryUnavailable {
                reason: format!("PUT {url}: {status} {body}"),
            }),
            _ => Err(SchemaError::Registry {
                reason: format!("PUT {url}: {status} {body}"),
            }),
        }
    }
}

/// Frames an Avro body: magic byte, big-endian id, body.
pub fn encode_framed<T: AvroRecord + Serialize>(
    id: u32,
    value: &T,
) -> Result<Vec<u8>, SchemaError> {
    let mut out = Vec::with_capacity(256);
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&id.to_be_bytes());
    encode_body(value, &mut out)?;
    Ok(out)
}

/// Whether a registry answer with this HTTP status is worth retrying: the
/// registry is down or overloaded (5xx, 408, 429) or refuses our credentials
/// for now (401, 403: a rotation in progress). A 404 is decided by the caller
/// (an unknown schema id is retried, an unknown subject is not an error).
pub fn retryable_status(status: u16) -> bool {
    status >= 500 || matches!(status, 401 | 403 | 408 | 429)
}

/// The HTTP status in a converter error, if it came from a response.
fn status_of(e: &SRCError) -> Option<u16> {
    let rest = e.error.split("failed with status ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

fn registry_error(e: SRCError) -> SchemaError {
    let reason = match &e.cause {
        Some(cause) => format!("{}: {cause}", e.error),
        None => e.error.clone(),
    };
    if e.retriable || status_of(&e).is_some_and(retryable_status) {
        SchemaError::RegistryUnavailable { reason }
    } else {
        SchemaError::Registry { reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_tells_avro_json_and_garbage_apart() {
        assert_eq!(
            framing(&[0, 0, 0, 1, 2, 9]).unwrap(),
            Framing::Avro { id: 258 }
        );
        assert_eq!(
            framing(&[0, 0xff, 0xff, 0xff, 0xff]).unwrap(),
            Framing::Avro { id: u32::MAX }
        );
        assert_eq!(framing(b"{\"a\":1}").unwrap(), Framing::LegacyJson);
        assert_eq!(framing(b" \n{}").unwrap(), Framing::LegacyJson);
        assert!(matches!(
            framing(&[]),
            Err(SchemaError::Truncated { len: 0 })
        ));
        assert!(matches!(
            framing(&[0, 1, 2]),
            Err(SchemaError::Truncated { len: 3 })
        ));
        assert!(matches!(
            framing(&[1, 0, 0, 0, 1]),
            Err(SchemaError::UnknownMagicByte { byte: 1 })
        ));
        assert!(matches!(
            framing(b"[1,2]"),
            Err(SchemaError::UnknownMagicByte { byte: b'[' })
        ));
        assert!(matches!(
            framing(b"  x"),
            Err(SchemaError::UnknownMagicByte { byte: b' ' })
        ));
    }

    #[test]
    fn converter_status_is_read_from_its_message() {
        let e = SRCError::new(
            "HTTP request to schema registry failed with status 409 Conflict",
            None,
            false,
        );
        assert_eq!(status_of(&e), Some(409));
        assert!(matches!(registry_error(e), SchemaError::Registry { .. }));
        let e = SRCError::new(
            "HTTP request to schema registry failed with status 503 Service Unavailable",
            None,
            true,
        );
        assert!(registry_error(e).is_retryable());
        let e = SRCError::new(
            "http call to schema registry failed",
            Some("connection refused".into()),
            true,
        );
        assert_eq!(status_of(&e), None);
        assert!(registry_error(e).is_retryable());
    }

    #[test]
    fn invalid_url_is_a_settings_error() {
        let settings = RegistrySettings {
            url: "not a url".into(),
            ..RegistrySettings::default()
        };
        assert!(matches!(
            Codec::new(&settings),
            Err(SchemaError::Settings { .. })
        ));
    }
}
