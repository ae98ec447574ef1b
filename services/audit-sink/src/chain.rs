//! The tamper-evident chain: one link per consumed record of a (topic,
//! partition), `hash = SHA-256(previous hash || canonical bytes)`, where the
//! canonical bytes cover the record's position, its original bytes and every
//! column stored for it. The same code builds the bytes at ingest (from the
//! values written) and in `verify` (from the values read back), so any stored
//! value that changes changes the hash.
//!
//! # Canonical bytes, version 1
//!
//! The tag `dora-audit-link/1`, then the fields below in order. A string or
//! byte string is its length as a big-endian u32 followed by its bytes; an
//! integer is big-endian (i32 or i64); a float is its IEEE-754 bits as a
//! big-endian u64; an optional value is a byte 0 (absent) or 1 followed by the
//! value. Timestamps are microseconds since the epoch (i64).
//!
//! 1. topic, partition (i32), chain position `seq` (i64), Kafka offset (i64);
//! 2. outcome (`stored`, `duplicate`, `rejected`), entity id (optional),
//!    reason (optional), consumed-at timestamp;
//! 3. the record: Kafka timestamp (optional), key (optional), value (optional);
//! 4. a byte 0 (no row), 1 (an `audit_events` row) or 2 (a
//!    `compliance_reports` row), followed by that row's typed columns in
//!    table order: `event_id, occurred_at, user_id, action, resource, details,
//!    ip_address, user_agent, session_id, value_format` or `report_id,
//!    organization_id, reported_at, report_type, risk_score, risk_level, data,
//!    version, value_format` (JSON columns as their exact text).
//!
//! # Canonical bytes, version 2 (written since migration V3)
//!
//! The tag `dora-audit-link/2`, then sections 1-3 of version 1, then a byte 0
//! (no row), 1 (an `audit_events` row) or 2 (a `compliance_reports` row),
//! then (optional) the SHA-256 of the writer schema's definition as stored in
//! `audit.writer_schemas`, present when the row's value is Avro. The typed
//! columns are not hashed: they are a projection of the record's value, and
//! `verify` checks each of them against what the value decodes to with that
//! writer schema (so a changed column is still named). Version 2 hashes
//! about 40 % fewer bytes per link than version 1.
//!
//! Each link stores its version (`audit.chain.format`; links written before
//! V3 are version 1); the tag is hashed, so changing the stored version
//! breaks the link.
//!
//! The first link's previous hash is 32 zero bytes.
//!
//! The same layout, from the fields of an `audit-sink export` extract, for
//! auditors: `export`'s module docs and `docs/audit-extract.md`.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The previous hash of a chain's first link.
pub const GENESIS: Hash = [0; 32];

const TAG_V1: &[u8] = b"dora-audit-link/1";
const TAG_V2: &[u8] = b"dora-audit-link/2";

/// The version of a link's canonical bytes (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Version 1: the record and every typed column.
    V1,
    /// Version 2: the record and the writer schema's digest; typed columns
    /// are checked by decoding.
    V2,
}

impl Format {
    /// The number stored in `audit.chain.format`.
    pub fn number(self) -> i16 {
        match self {
            Format::V1 => 1,
            Format::V2 => 2,
        }
    }

    /// The version stored as `n`.
    pub fn of(n: i16) -> Option<Self> {
        match n {
            1 => Some(Format::V1),
            2 => Some(Format::V2),
            _ => None,
        }
    }
}

/// What became of a consumed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored as a new row.
    Stored,
    /// Its id was already stored (a producer's duplicate): no new row.
    Duplicate,
    /// Undecodable, or the database refused a value: dead-lettered.
    Rejected,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Duplicate => "duplicate",
            Outcome::Rejected => "rejected",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stored" => Some(Outcome::Stored),
            "duplicate" => Some(Outcome::Duplicate),
            "rejected" => Some(Outcome::Rejected),
            _ => None,
        }
    }
}

/// Typed columns of an `audit.audit_events` row.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditColumns {
    /// `event_id`.
    pub event_id: String,
    /// `occurred_at`, microseconds.
    pub occurred_at_us: i64,
    /// `user_id`.
    pub user_id: String,
    /// `action`.
    pub action: String,
    /// `resource`.
    pub resource: String,
    /// `details`, JSON text.
    pub details: String,
    /// `ip_address`.
    pub ip_address: Option<String>,
    /// `user_agent`.
    pub user_agent: Option<String>,
    /// `session_id`.
    pub session_id: Option<String>,
    /// `value_format`: `avro` or `json`.
    pub value_format: String,
}

/// Typed columns of an `audit.compliance_reports` row.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportColumns {
    /// `report_id`.
    pub report_id: String,
    /// `organization_id`.
    pub organization_id: String,
    /// `reported_at`, microseconds.
    pub reported_at_us: i64,
    /// `report_type`.
    pub report_type: String,
    /// `risk_score`.
    pub risk_score: Option<f64>,
    /// `risk_level`.
    pub risk_level: Option<String>,
    /// `data`, JSON text.
    pub data: String,
    /// `version`.
    pub version: String,
    /// `value_format`: `avro` or `json`.
    pub value_format: String,
}

/// The typed row a link's record was stored as, if any.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    /// An audit event.
    Audit(AuditColumns),
    /// A compliance report.
    Report(ReportColumns),
}

impl Row {
    /// The row's id (`event_id` or `report_id`).
    pub fn id(&self) -> &str {
        match self {
            Row::Audit(a) => &a.event_id,
            Row::Report(r) => &r.report_id,
        }
    }
}

/// Everything one link covers.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    /// The version of its canonical bytes.
    pub format: Format,
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Position in the chain, from 0.
    pub seq: i64,
    /// Kafka offset.
    pub offset: i64,
    /// What became of the record.
    pub outcome: Outcome,
    /// The event or report id, when known.
    pub entity_id: Option<&'a str>,
    /// Why it was rejected.
    pub reason: Option<&'a str>,
    /// When the sink consumed it, microseconds.
    pub consumed_at_us: i64,
    /// The record's Kafka timestamp, microseconds.
    pub kafka_timestamp_us: Option<i64>,
    /// The record's key.
    pub key: Option<&'a [u8]>,
    /// The record's value.
    pub value: Option<&'a [u8]>,
    /// The row stored for it (outcome `stored`).
    pub row: Option<&'a Row>,
    /// SHA-256 of the definition of the Avro writer schema of a stored row's
    /// value (version 2; `None` for JSON values and links without a row).
    pub writer: Option<&'a Hash>,
}

/// Writer of canonical bytes (see the module docs).
struct Canon<'o>(&'o mut Vec<u8>);

impl Canon<'_> {
    fn tag(&mut self, t: u8) {
        self.0.push(t);
    }
    fn bytes(&mut self, b: &[u8]) {
        // Values are bounded by Kafka's message size, far below 4 GiB.
        self.0.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_bits().to_be_bytes());
    }
    fn opt<T>(&mut self, v: Option<T>, f: impl FnOnce(&mut Self, T)) {
        match v {
            None => self.tag(0),
            Some(v) => {
                self.tag(1);
                f(self, v);
            }
        }
    }
}

impl Link<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        let mut c = Canon(out);
        c.0.extend_from_slice(match self.format {
            Format::V1 => TAG_V1,
            Format::V2 => TAG_V2,
        });
        c.str(self.topic);
        c.i32(self.partition);
        c.i64(self.seq);
        c.i64(self.offset);
        c.str(self.outcome.as_str());
        c.opt(self.entity_id, Canon::str);
        c.opt(self.reason, Canon::str);
        c.i64(self.consumed_at_us);
        c.opt(self.kafka_timestamp_us, Canon::i64);
        c.opt(self.key, Canon::bytes);
        c.opt(self.value, Canon::bytes);
        if self.format == Format::V2 {
            c.tag(match self.row {
                None => 0,
                Some(Row::Audit(_)) => 1,
                Some(Row::Report(_)) => 2,
            });
            c.opt(self.writer, |c, h| c.0.extend_from_slice(h));
            return;
        }
        match self.row {
            None => c.tag(0),
            Some(Row::Audit(a)) => {
                c.tag(1);
                c.str(&a.event_id);
                c.i64(a.occurred_at_us);
                c.str(&a.user_id);
                c.str(&a.action);
                c.str(&a.resource);
                c.str(&a.details);
                c.opt(a.ip_address.as_deref(), Canon::str);
                c.opt(a.user_agent.as_deref(), Canon::str);
                c.opt(a.session_id.as_deref(), Canon::str);
                c.str(&a.value_format);
            }
            Some(Row::Report(r)) => {
                c.tag(2);
                c.str(&r.report_id);
                c.str(&r.organization_id);
                c.i64(r.reported_at_us);
                c.str(&r.report_type);
                c.opt(r.risk_score, Canon::f64);
                c.opt(r.risk_level.as_deref(), Canon::str);
                c.str(&r.data);
                c.str(&r.version);
                c.str(&r.value_format);
            }
        }
    }

    /// The canonical bytes of this link.
    pub fn canonical(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(256 + self.value.map_or(0, <[u8]>::len));
        self.write(&mut v);
        v
    }

    /// `SHA-256(prev || canonical bytes)`. The canonical bytes are built in a
    /// buffer reused by the thread and hashed in one call (SHA-NI where the
    /// CPU has it): feeding the ~40 fields to the hasher one by one cost more
    /// than the compression itself.
    pub fn hash(&self, prev: &Hash) -> Hash {
        thread_local! {
            static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUFFER.with_borrow_mut(|buf| {
            buf.clear();
            buf.extend_from_slice(prev);
            self.write(buf);
            Sha256::digest(buf.as_slice()).into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit() -> Row {
        Row::Audit(AuditColumns {
            event_id: "e1".into(),
            occurred_at_us: 1_795_771_815_123_000,
            user_id: "user-7".into(),
            action: "LOGIN".into(),
            resource: "auth".into(),
            details: "{}".into(),
            ip_address: None,
            user_agent: Some("ua".into()),
            session_id: None,
            value_format: "json".into(),
        })
    }

    fn link(row: &Row) -> Link<'_> {
        Link {
            format: Format::V1,
            topic: "user-activities",
            partition: 0,
            seq: 0,
            offset: 10,
            outcome: Outcome::Stored,
            entity_id: Some("e1"),
            reason: None,
            consumed_at_us: 1,
            kafka_timestamp_us: Some(2),
            key: Some(b"2026-11-27-09"),
            value: Some(b"{}"),
            row: Some(row),
            writer: None,
        }
    }

    #[test]
    fn every_field_changes_the_hash() {
        let row = audit();
        let base = link(&row).hash(&GENESIS);
        assert_ne!(base, link(&row).hash(&[1; 32]), "previous hash");
        let mut l = link(&row);
        l.offset = 11;
        assert_ne!(base, l.hash(&GENESIS), "offset");
        let mut l = link(&row);
        l.seq = 1;
        assert_ne!(base, l.hash(&GENESIS), "seq");
        let mut l = link(&row);
        l.value = Some(b"{ }");
        assert_ne!(base, l.hash(&GENESIS), "value");
        let mut l = link(&row);
        l.outcome = Outcome::Duplicate;
        assert_ne!(base, l.hash(&GENESIS), "outcome");
        let Row::Audit(mut a) = audit() else { unreachable!() };
        a.user_id = "user-8".into();
        let changed = Row::Audit(a);
        assert_ne!(base, link(&changed).hash(&GENESIS), "typed column");
        let Row::Audit(mut a) = audit() else { unreachable!() };
        a.ip_address = Some(String::new());
        let changed = Row::Audit(a);
        assert_ne!(base, link(&changed).hash(&GENESIS), "absent vs empty");
    }

    #[test]
    fn length_prefixes_keep_fields_apart() {
        let row = audit();
        let mut a = link(&row);
        a.key = Some(b"ab");
        a.value = Some(b"c");
        let mut b = link(&row);
        b.key = Some(b"a");
        b.value = Some(b"bc");
        assert_ne!(a.hash(&GENESIS), b.hash(&GENESIS));
    }

    #[test]
    fn the_hash_is_sha256_of_prev_and_the_canonical_bytes() {
        let row = audit();
        let l = link(&row);
        let mut h = Sha256::new();
        h.update([7u8; 32]);
        h.update(l.canonical());
        let expected: Hash = h.finalize().into();
        assert_eq!(l.hash(&[7; 32]), expected);
        assert!(l.canonical().starts_with(TAG_V1));
    }

    #[test]
    fn version_2_covers_the_record_and_writer_schema_but_not_the_typed_columns() {
        let row = audit();
        let schema = [9u8; 32];
        let v2 = |row| Link { format: Format::V2, writer: Some(&schema), ..link(row) };
        let base = v2(&row).hash(&GENESIS);
        assert_ne!(base, link(&row).hash(&GENESIS), "the version is hashed");
        assert!(v2(&row).canonical().starts_with(TAG_V2));
        let Row::Audit(mut a) = audit() else { unreachable!() };
        a.user_id = "user-8".into();
        let changed = Row::Audit(a);
        assert_eq!(base, v2(&changed).hash(&GENESIS), "typed columns are checked by decoding, not hashed");
        let mut l = v2(&row);
        l.value = Some(b"{ }");
        assert_ne!(base, l.hash(&GENESIS), "value");
        let other = [8u8; 32];
        assert_ne!(base, Link { writer: Some(&other), ..v2(&row) }.hash(&GENESIS), "writer schema");
        assert_ne!(base, Link { writer: None, ..v2(&row) }.hash(&GENESIS), "JSON vs Avro");
        assert_ne!(base, Link { row: None, ..v2(&row) }.hash(&GENESIS), "no row");
        let report = Row::Report(ReportColumns {
            report_id: "e1".into(),
            organization_id: "o".into(),
            reported_at_us: 0,
            report_type: "GAP_ANALYSIS".into(),
            risk_score: None,
            risk_level: None,
            data: "{}".into(),
            version: "1".into(),
            value_format: "json".into(),
        });
        assert_ne!(base, v2(&report).hash(&GENESIS), "which table");
        assert!(v2(&row).canonical().len() < link(&row).canonical().len(), "fewer bytes than version 1");
    }

    #[test]
    fn format_numbers_round_trip() {
        for f in [Format::V1, Format::V2] {
            assert_eq!(Format::of(f.number()), Some(f));
        }
        assert_eq!(Format::of(3), None);
    }

    #[test]
    fn outcome_names_round_trip() {
        for o in [Outcome::Stored, Outcome::Duplicate, Outcome::Rejected] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("x"), None);
    }
}
