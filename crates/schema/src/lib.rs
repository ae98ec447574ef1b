//! Every Kafka value of the platform: Avro contracts, Confluent wire format,
//! schema registry, and the seed's legacy JSON. The only crate that touches Avro
//! and the registry.
//!
//! # Map
//!
//! - [`types`]: the domain types ([`AgentEvent`], [`AgentHealth`],
//!   [`ComplianceReport`], [`AuditEvent`], [`RiskAlert`], [`DeadLetter`]) and
//!   their enums, one per `schemas/<Name>.avsc`, camelCase on the wire as the seed.
//! - [`AvroRecord`]: ties a type to its `.avsc` (compiled in with `include_str!`).
//! - [`Codec`]: register (`<topic>-value`, BACKWARD_TRANSITIVE), encode
//!   (Confluent framing), decode (Avro by schema id, or legacy JSON), with
//!   caches that survive a registry outage after warm-up.
//! - [`SchemaError`]: what went wrong, retryable or not, with record context.
//!
//! # Design decisions
//!
//! - **Free-form JSON** (`metadata`, `data`, `details`, `resourceUsage`) is an
//!   Avro `string` holding JSON text, `serde_json::Value` in Rust. A recursive
//!   Avro union could carry the structure, but JSON text round-trips every JSON
//!   value exactly (big integers, key order, floats), any consumer reads it with
//!   its JSON library, and the payloads stay producer-defined as in the seed.
//!   See [`types::json_text`].
//! - **One type, two formats**: serde's `is_human_readable` tells Avro (we run
//!   apache-avro non-human-readable) from JSON, so the legacy JSON decoder and
//!   the Avro codec share the same structs.
//! - **Enums** carry the Avro default symbol `UNKNOWN`: an older reader maps a
//!   new symbol to it, and legacy JSON with an unknown string decodes to it.
//! - **Fast path**: when a value's writer schema is exactly the reader's
//!   (same Rabin fingerprint), the body is deserialized straight from the bytes;
//!   otherwise Avro schema resolution runs through an intermediate value.
//! - **Key order**: this crate enables serde_json's `preserve_order`, so a
//!   free-form dict keeps the producer's key order through Avro and back (and a
//!   legacy dead letter's `originalMessage` is rebuilt byte-for-byte as Python's
//!   `json.dumps` wrote it).
//!
//! # Where decode time goes
//!
//! `benches/codec.rs` compares Avro with serde_json on the seed's
//! `send_task_completion` event. Most of either decode is building the
//! `serde_json::Value` of `metadata` (map inserts, string allocations); on the
//! typed fields alone Avro needs about a quarter fewer instructions than JSON.
//! Values of a *newer* writer schema take apache-avro's resolution path
//! (decode to a generic value, resolve, convert), about twice the fast path:
//! apache-avro 0.22 has no resolving serde deserializer yet. Encoding costs
//! more than serde_json because apache-avro's schema-aware serializer looks up
//! every field by name.
//!
//! *Architecture invariant*: this crate knows nothing about rdkafka or the
//! consume loop; it maps bytes to domain types and back.

mod codec;
mod error;
mod legacy;
mod pyjson;
mod record;
mod settings;
pub mod types;
mod unknown_ids;

pub use codec::{
    encode_framed, framing, retryable_status, value_subject, Codec, Framing, GenericValue,
    COMPATIBILITY, HEADER_LEN, MAGIC_BYTE,
};
pub use error::SchemaError;
pub use legacy::decode_json;
pub use record::{
    decode_body, decode_body_json, encode_body, AvroRecord, CompiledSchema, MAX_ALLOCATION_BYTES,
};
pub use settings::{RegistrySettings, DEFAULT_REGISTRY_URL};
pub use types::{
    json_len, AgentEvent, AgentHealth, AgentStatus, AuditEvent, ComplianceReport, DeadLetter,
    DeadLetterHeader, EventType, ReportType, RiskAlert, RiskAlertState, RiskLevel,
};
