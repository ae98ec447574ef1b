//! [`AvroRecord`]: ties each domain type to its `schemas/*.avsc` file, and the
//! Avro body encoding (no framing) every codec path goes through.

use std::sync::OnceLock;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{AgentEvent, AgentHealth, AuditEvent, ComplianceReport, DeadLetter, RiskAlert};
use crate::SchemaError;

/// A type whose values travel as one Avro record, with its schema from
/// `schemas/<Name>.avsc` compiled in.
pub trait AvroRecord {
    /// Full name of the Avro record, e.g. `dora.events.AgentEvent`.
    const NAME: &'static str;
    /// The `.avsc` text, exactly as committed in `schemas/`.
    const SCHEMA: &'static str;

    /// The parsed schema and its fingerprint, built once per process.
    fn compiled() -> &'static CompiledSchema;

    /// The parsed schema.
    fn schema() -> &'static Schema {
        &Self::compiled().schema
    }
}

/// A parsed Avro schema with the fingerprint of its canonical form, used to
/// tell whether a writer's schema is exactly the reader's (fast path) or needs
/// resolution. The compiled-in schemas of [`AvroRecord`] types (which live for
/// the whole process) also keep their datum reader and writer, so the hot path
/// does not resolve schema names again for every value.
pub struct CompiledSchema {
    schema: Schema,
    fingerprint: u64,
    reader: OnceLock<GenericDatumReader<'static>>,
    writer: OnceLock<GenericDatumWriter<'static>>,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSchema")
            .field("schema", &self.schema.canonical_form())
            .field("fingerprint", &format_args!("{:016x}", self.fingerprint))
            .finish()
    }
}

impl CompiledSchema {
    /// Parses a schema text.
    pub fn parse(name: &str, text: &str) -> Result<Self, SchemaError> {
        let schema = Schema::parse_str(text).map_err(|e| SchemaError::InvalidSchema {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self::from_schema(schema))
    }

    /// Wraps an already parsed schema.
    pub fn from_schema(schema: Schema) -> Self {
        let fingerprint = u64::from_le_bytes(
            schema.fingerprint::<apache_avro::rabin::Rabin>().bytes[..8]
                .try_into()
                .expect("a Rabin fingerprint has 8 bytes"),
        );
        Self {
            schema,
            fingerprint,
            reader: OnceLock::new(),
            writer: OnceLock::new(),
        }
    }

    /// Reader for bodies written with exactly this schema, built once.
    fn datum_reader(
        &'static self,
    ) -> Result<&'static GenericDatumReader<'static>, apache_avro::Error> {
        if let Some(reader) = self.reader.get() {
            return Ok(reader);
        }
        let reader = GenericDatumReader::builder(&self.schema)
            .human_readable(false)
            .build()?;
        Ok(self.reader.get_or_init(|| reader))
    }

    /// Writer of bodies with this schema, built once.
    fn datum_writer(
        &'static self,
    ) -> Result<&'static GenericDatumWriter<'static>, apache_avro::Error> {
        if let Some(writer) = self.writer.get() {
            return Ok(writer);
        }
        let writer = GenericDatumWriter::builder(&self.schema)
            .human_readable(false)
            .build()?;
        Ok(self.writer.get_or_init(|| writer))
    }

    /// The parsed schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The schema written out as JSON (with logical types, defaults and
    /// docs: unlike the parsing canonical form, enough to decode with it
    /// again). The same parsed schema always gives the same text; parsing
    /// the text gives back this schema. For archives that must decode their
    /// values later without the registry.
    pub fn definition(&self) -> String {
        serde_json::to_string(&self.schema).expect("a parsed Avro schema serialises as JSON")
    }

    /// The 64-bit Rabin fingerprint of the schema's parsing canonical form.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

macro_rules! avro_record {
    ($ty:ty, $file:literal, $name:literal) => {
        impl AvroRecord for $ty {
            const NAME: &'static str = $name;
            const SCHEMA: &'static str = include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../schemas/",
                $file
            ));

            fn compiled() -> &'static CompiledSchema {
                static COMPILED: OnceLock<CompiledSchema> = OnceLock::new();
                COMPILED.get_or_init(|| {
                    CompiledSchema::parse(Self::NAME, Self::SCHEMA).unwrap_or_else(|e| {
                        panic!("schemas/{} is committed and tested: {e}", $file)
                    })
                })
            }
        }
    };
}

avro_record!(AgentEvent, "AgentEvent.avsc", "dora.events.AgentEvent");
avro_record!(AgentHealth, "AgentHealth.avsc", "dora.events.AgentHealth");
avro_record!(
    ComplianceReport,
    "ComplianceReport.avsc",
    "dora.events.ComplianceReport"
);
avro_record!(AuditEvent, "AuditEvent.avsc", "dora.events.AuditEvent");
avro_record!(RiskAlert, "RiskAlert.avsc", "dora.events.RiskAlert");
avro_record!(DeadLetter, "DeadLetter.avsc", "dora.events.DeadLetter");

/// Appends the Avro binary encoding of `value` (its own schema, no framing) to `out`.
pub fn encode_body<T: AvroRecord + Serialize>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), SchemaError> {
    let encode_err = |e: apache_avro::Error| SchemaError::Encode {
        record: T::NAME.to_string(),
        reason: e.to_string(),
    };
    T::compiled()
        .datum_writer()
        .map_err(encode_err)?
        .write_ser(out, value)
        .map_err(encode_err)?;
    Ok(())
}

/// Largest single string, bytes or array apache-avro may allocate while
/// decoding (64 MiB, far above any Kafka record we accept). apache-avro keeps
/// this limit process-wide; this crate sets it on first decode so corrupt
/// length prefixes fail fast instead of allocating up to its 512 MiB default.
pub const MAX_ALLOCATION_BYTES: usize = 64 << 20;

/// Decodes an Avro body written with `writer` into `T`, resolving against
/// `T`'s own schema when the writer's differs (added/removed fields with
/// defaults, unknown enum symbols). The whole body must be consumed.
pub fn decode_body<T: AvroRecord + DeserializeOwned>(
    writer: &CompiledSchema,
    body: &[u8],
) -> Result<T, SchemaError> {
    apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
    let invalid = |e: apache_avro::Error| SchemaError::InvalidAvro {
        reason: e.to_string(),
    };
    let mut rest = body;
    let own = T::compiled();
    let value = if writer.fingerprint == own.fingerprint {
        // same canonical schema, so the same binary layout: deserialize straight
        // from the bytes with the cached reader of T's own schema, no intermediate Value
        own.datum_reader()
            .map_err(invalid)?
            .read_deser::<T>(&mut rest)
            .map_err(invalid)?
    } else {
        check_same_record::<T>(writer)?;
        let reader = GenericDatumReader::builder(&writer.schema)
            .reader_schema(T::schema())
            .human_readable(false)
            .build()
            .map_err(|e| SchemaError::SchemaMismatch {
                reason: e.to_string(),
            })?;
        let resolved = read_value_whole(&reader, rest, T::NAME)?.map_err(|e| {
            if is_malformed_input(&e) {
                invalid(e)
            } else {
                SchemaError::SchemaMismatch {
                    reason: format!(
                        "writer schema {} cannot be read as {}: {e}",
                        writer_name(writer),
                        T::NAME
                    ),
                }
            }
        })?;
        rest = &[];
        apache_avro::from_value::<T>(&resolved).map_err(|e| SchemaError::SchemaMismatch {
            reason: e.to_string(),
        })?
    };
    if !rest.is_empty() {
        return Err(SchemaError::InvalidAvro {
            reason: format!("{} trailing bytes after the {} record", rest.len(), T::NAME),
        });
    }
    Ok(value)
}

/// Decodes an Avro body written with `writer` into JSON, whatever record it
/// is (for display: bytes as arrays of numbers, enums as their symbols, unions
/// as their branch). The whole body must be consumed.
pub fn decode_body_json(
    writer: &CompiledSchema,
    body: &[u8],
) -> Result<serde_json::Value, SchemaError> {
    apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
    let invalid = |e: apache_avro::Error| SchemaError::InvalidAvro {
        reason: e.to_string(),
    };
    let reader = GenericDatumReader::builder(&writer.schema)
        .human_readable(false)
        .build()
        .map_err(invalid)?;
    let value = read_value_whole(&reader, body, &writer_name(writer))?.map_err(invalid)?;
    serde_json::Value::try_from(value).map_err(invalid)
}

/// Bytes appended after a body read by apache-avro's generic reader, which
/// takes an early end of input for a null (a truncated string or union
/// decodes as null instead of failing): reading must leave exactly these.
/// 0xFF never ends a varint, so a length read from them overflows.
const GUARD: [u8; 16] = [0xFF; 16];

/// Reads one value with apache-avro's generic reader; the value must span
/// `body` exactly. A truncated body or trailing bytes are the outer
/// [`SchemaError::InvalidAvro`]; the reader's own errors the inner one.
fn read_value_whole(
    reader: &GenericDatumReader<'_>,
    body: &[u8],
    name: &str,
) -> Result<Result<apache_avro::types::Value, apache_avro::Error>, SchemaError> {
    let mut guarded = Vec::with_capacity(body.len() + GUARD.len());
    guarded.extend_from_slice(body);
    guarded.extend_from_slice(&GUARD);
    let mut rest = &guarded[..];
    let value = match reader.read_value(&mut rest) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    match rest.len().cmp(&GUARD.len()) {
        std::cmp::Ordering::Equal => Ok(Ok(value)),
        std::cmp::Ordering::Less => Err(SchemaError::InvalidAvro {
            reason: format!("the {name} body of {} bytes is truncated", body.len()),
        }),
        std::cmp::Ordering::Greater => Err(SchemaError::InvalidAvro {
            reason: format!(
                "{} trailing bytes after the {name} record",
                rest.len() - GUARD.len()
            ),
        }),
    }
}

/// Errors that come from the bytes rather than from the schemas.
fn is_malformed_input(e: &apache_avro::Error) -> bool {
    use apache_avro::error::Details;
    matches!(
        e.details(),
        Details::ReadBytes(_)
            | Details::ReadString(_)
            | Details::ReadVariableIntegerBytes(_)
            | Details::IntegerOverflow
            | Details::ConvertToUtf8(_)
            | Details::ConvertToUtf8Error(_)
            | Details::MemoryAllocation { .. }
    )
}

/// The full name of the writer's record (or the kind of a non-record schema).
pub(crate) fn writer_name(writer: &CompiledSchema) -> String {
    match &writer.schema {
        Schema::Record(r) => r.name.fullname(None),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)),
    }
}

/// A writer schema of another record (or not a record) is a mismatch, even if
/// Avro resolution would happen to succeed.
fn check_same_record<T: AvroRecord>(writer: &CompiledSchema) -> Result<(), SchemaError> {
    let name = writer_name(writer);
    if name == T::NAME {
        Ok(())
    } else {
        Err(SchemaError::SchemaMismatch {
            reason: format!("value was written as {name}, expected {}", T::NAME),
        })
    }
}
