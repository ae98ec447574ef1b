//! What can go wrong encoding, decoding or registering a value, in terms a
//! consumer can act on: retry (registry down) or dead-letter (everything else).

/// Why a value could not be encoded, decoded or registered.
///
/// [`SchemaError::is_retryable`] tells a consume loop what to do: retry with
/// backoff (a dependency is down) or dead-letter the record (the bytes are bad).
/// [`SchemaError::with_context`] wraps any error with the record's position.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The value starts with neither the Avro magic byte 0 nor a JSON object.
    #[error("unknown magic byte 0x{byte:02x}: neither Confluent-framed Avro (0x00) nor legacy JSON ('{{')")]
    UnknownMagicByte {
        /// The first byte of the value.
        byte: u8,
    },
    /// The value is empty or shorter than the 5-byte Confluent header.
    #[error("value of {len} bytes is too short to be Confluent-framed Avro or JSON")]
    Truncated {
        /// Length of the value in bytes.
        len: usize,
    },
    /// The registry does not know the schema id in the frame. Retryable: the
    /// producer registered it somewhere, and the replica asked may not have it
    /// yet; a consume loop retries and, past its retry cap, reports the
    /// partition stuck on `/readyz` rather than dead-letter a valid record.
    #[error("schema id {id} is not known to the schema registry (yet)")]
    UnknownSchemaId {
        /// The schema id from the frame.
        id: u32,
    },
    /// The registry could not be reached, or answered 5xx, 408, 429 (rate
    /// limited) or 401/403 (our credentials refused, e.g. during a rotation).
    /// Retry later.
    #[error("schema registry unavailable: {reason}")]
    RegistryUnavailable {
        /// What failed (connection refused, timeout, status).
        reason: String,
    },
    /// The registry rejected the schema as incompatible with the subject's
    /// earlier versions (HTTP 409).
    #[error("schema registry rejected {record} for subject {subject} as incompatible with earlier versions: {reason}")]
    IncompatibleSchema {
        /// The subject, `<topic>-value`.
        subject: String,
        /// Full name of the record whose schema was rejected.
        record: String,
        /// The registry's message.
        reason: String,
    },
    /// The registry answered with an error that retrying will not fix.
    #[error("schema registry error: {reason}")]
    Registry {
        /// The registry's status and message.
        reason: String,
    },
    /// The writer's schema cannot be read as the expected type (a different
    /// record, or a change the reader cannot resolve).
    #[error("schema mismatch: {reason}")]
    SchemaMismatch {
        /// What did not match.
        reason: String,
    },
    /// The Avro body does not decode with its writer's schema.
    #[error("invalid Avro body: {reason}")]
    InvalidAvro {
        /// The decoder's message.
        reason: String,
    },
    /// Not syntactically valid JSON.
    #[error("invalid JSON: {reason}")]
    InvalidJson {
        /// The parser's message, with line and column.
        reason: String,
    },
    /// A required field is absent.
    #[error("missing field `{field}`")]
    MissingField {
        /// Path of the field, e.g. `originalHeaders[0].key`.
        field: String,
    },
    /// A field has the wrong type or an invalid value.
    #[error("ill-typed field `{field}`: {reason}")]
    IllTypedField {
        /// Path of the field (`$` for the value itself).
        field: String,
        /// What was expected and found.
        reason: String,
    },
    /// A value could not be encoded with its own schema (a bug: type and
    /// schema drifted apart).
    #[error("cannot encode {record}: {reason}")]
    Encode {
        /// Full name of the record.
        record: String,
        /// The encoder's message.
        reason: String,
    },
    /// A schema text could not be parsed.
    #[error("cannot parse schema {name}: {reason}")]
    InvalidSchema {
        /// Which schema.
        name: String,
        /// The parser's message.
        reason: String,
    },
    /// Registry settings are unusable (e.g. a malformed URL).
    #[error("invalid registry settings: {reason}")]
    Settings {
        /// What is wrong.
        reason: String,
    },
    /// Another error, located at a record of a topic.
    #[error("{topic}[{partition}]@{offset}: {source}")]
    InRecord {
        /// Topic of the record.
        topic: String,
        /// Partition of the record.
        partition: i32,
        /// Offset of the record.
        offset: i64,
        /// The error itself.
        source: Box<SchemaError>,
    },
}

impl SchemaError {
    /// True when retrying later can succeed (the registry was unreachable,
    /// refused us for now, or does not know the schema id yet); false when the
    /// value itself is bad and belongs in the dead-letter topic.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RegistryUnavailable { .. } | Self::UnknownSchemaId { .. } => true,
            Self::InRecord { source, .. } => source.is_retryable(),
            _ => false,
        }
    }

    /// Wraps the error with the record's topic, partition and offset (an error
    /// that already carries a position is re-located, not nested twice).
    pub fn with_context(self, topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        let source = match self {
            Self::InRecord { source, .. } => source,
            other => Box::new(other),
        };
        Self::InRecord {
            topic: topic.into(),
            partition,
            offset,
            source,
        }
    }

    /// The error without any record position.
    pub fn root(&self) -> &SchemaError {
        match self {
            Self::InRecord { source, .. } => source.root(),
            other => other,
        }
    }

    /// A short stable name of the error kind, e.g. for the DLQ's `errorType`
    /// or a metric label.
    pub fn kind(&self) -> &'static str {
        match self.root() {
            Self::UnknownMagicByte { .. } => "UnknownMagicByte",
            Self::Truncated { .. } => "Truncated",
            Self::UnknownSchemaId { .. } => "UnknownSchemaId",
            Self::RegistryUnavailable { .. } => "RegistryUnavailable",
            Self::IncompatibleSchema { .. } => "IncompatibleSchema",
            Self::Registry { .. } => "Registry",
            Self::SchemaMismatch { .. } => "SchemaMismatch",
            Self::InvalidAvro { .. } => "InvalidAvro",
            Self::InvalidJson { .. } => "InvalidJson",
            Self::MissingField { .. } => "MissingField",
            Self::IllTypedField { .. } => "IllTypedField",
            Self::Encode { .. } => "Encode",
            Self::InvalidSchema { .. } => "InvalidSchema",
            Self::Settings { .. } => "Settings",
            Self::InRecord { .. } => unreachable!("root() never returns InRecord"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_registry_trouble_is_retryable_even_with_context() {
        let down = SchemaError::RegistryUnavailable {
            reason: "connection refused".into(),
        };
        assert!(down.is_retryable());
        assert!(down.with_context("agent-events", 3, 42).is_retryable());
        assert!(SchemaError::UnknownSchemaId { id: 9 }
            .with_context("t", 0, 0)
            .is_retryable());
        let bad = SchemaError::UnknownMagicByte { byte: 7 };
        assert!(!bad.is_retryable());
        assert!(!SchemaError::InvalidAvro { reason: "x".into() }
            .with_context("t", 0, 0)
            .is_retryable());
    }

    #[test]
    fn context_names_the_record_and_keeps_the_cause() {
        let e = SchemaError::MissingField {
            field: "agentId".into(),
        }
        .with_context("agent-events", 3, 42);
        let text = e.to_string();
        assert!(text.contains("agent-events[3]@42"), "{text}");
        assert!(text.contains("missing field `agentId`"), "{text}");
        assert!(matches!(e.root(), SchemaError::MissingField { field } if field == "agentId"));
        assert_eq!(e.kind(), "MissingField");
        // re-locating replaces the position instead of nesting
        let moved = e.with_context("other", 1, 2);
        match &moved {
            SchemaError::InRecord { topic, source, .. } => {
                assert_eq!(topic, "other");
                assert!(matches!(**source, SchemaError::MissingField { .. }));
            }
            other => panic!("expected InRecord, got {other:?}"),
        }
    }
}
