//! The typed columns of a row as `verify` reads it back: owned (chain format
//! 1 hashes them) or compared in place, without copying, with what the row's
//! stored value decodes to (format 2).

use chrono::{DateTime, Utc};

use crate::chain::{AuditColumns, ReportColumns, Row};
use crate::intake::Kind;
use crate::sqltypes::{micros_of, JsonText, TextBytes};

/// A row of `audit_events` or `compliance_reports` as selected by `verify`:
/// column 0 is the offset, then the typed columns in table order.
pub struct StoredRow<'r> {
    /// The row.
    pub row: &'r tokio_postgres::Row,
    /// Its table.
    pub kind: Kind,
}

impl Kind {
    /// A row of this table with no values: what a format-2 link hashes of
    /// its row (the table only). Empty strings allocate nothing.
    pub fn placeholder(self) -> Row {
        match self {
            Kind::Audit => Row::Audit(AuditColumns {
                event_id: String::new(),
                occurred_at_us: 0,
                user_id: String::new(),
                action: String::new(),
                resource: String::new(),
                details: String::new(),
                ip_address: None,
                user_agent: None,
                session_id: None,
                value_format: String::new(),
            }),
            Kind::Report => Row::Report(ReportColumns {
                report_id: String::new(),
                organization_id: String::new(),
                reported_at_us: 0,
                report_type: String::new(),
                risk_score: None,
                risk_level: None,
                data: String::new(),
                version: String::new(),
                value_format: String::new(),
            }),
        }
    }
}

/// An optional text's bytes.
fn opt_bytes(v: &Option<String>) -> Option<&[u8]> {
    v.as_deref().map(str::as_bytes)
}

fn first(columns: &[(&'static str, bool)]) -> Option<&'static str> {
    columns.iter().find(|(_, same)| !same).map(|(name, _)| *name)
}

impl StoredRow<'_> {
    /// `row audit_events event_id=…` or `row compliance_reports report_id=…`.
    pub fn name(&self) -> String {
        let id: &str = self.row.get(1);
        match self.kind {
            Kind::Audit => format!("row audit_events event_id={id}"),
            Kind::Report => format!("row compliance_reports report_id={id}"),
        }
    }

    /// The typed columns, copied.
    pub fn owned(&self) -> Row {
        let r = self.row;
        match self.kind {
            Kind::Audit => Row::Audit(AuditColumns {
                event_id: r.get(1),
                occurred_at_us: micros_of(r.get(2)),
                user_id: r.get(3),
                action: r.get(4),
                resource: r.get(5),
                details: r.get::<_, JsonText<'_>>(6).0.to_string(),
                ip_address: r.get(7),
                user_agent: r.get(8),
                session_id: r.get(9),
                value_format: r.get(10),
            }),
            Kind::Report => Row::Report(ReportColumns {
                report_id: r.get(1),
                organization_id: r.get(2),
                reported_at_us: micros_of(r.get(3)),
                report_type: r.get(4),
                risk_score: r.get(5),
                risk_level: r.get(6),
                data: r.get::<_, JsonText<'_>>(7).0.to_string(),
                version: r.get(8),
                value_format: r.get(9),
            }),
        }
    }

    /// The first typed column whose stored value is not `decoded`'s
    /// (`table` when `decoded` belongs to the other table), or `None`.
    pub fn difference(&self, decoded: &Row) -> Option<&'static str> {
        let r = self.row;
        // Bytes, not &str: equal bytes are what is checked, and UTF-8 validation of every column cost more.
        let s = |i: usize| r.get::<_, TextBytes<'_>>(i).0;
        let o = |i: usize| r.get::<_, Option<TextBytes<'_>>>(i).map(|t| t.0);
        let t = |i: usize| micros_of(r.get::<_, DateTime<Utc>>(i));
        let json = s;
        match (self.kind, decoded) {
            (Kind::Audit, Row::Audit(d)) => first(&[
                ("event_id", s(1) == d.event_id.as_bytes()),
                ("occurred_at", t(2) == d.occurred_at_us),
                ("user_id", s(3) == d.user_id.as_bytes()),
                ("action", s(4) == d.action.as_bytes()),
                ("resource", s(5) == d.resource.as_bytes()),
                ("details", json(6) == d.details.as_bytes()),
                ("ip_address", o(7) == opt_bytes(&d.ip_address)),
                ("user_agent", o(8) == opt_bytes(&d.user_agent)),
                ("session_id", o(9) == opt_bytes(&d.session_id)),
                ("value_format", s(10) == d.value_format.as_bytes()),
            ]),
            (Kind::Report, Row::Report(d)) => first(&[
                ("report_id", s(1) == d.report_id.as_bytes()),
                ("organization_id", s(2) == d.organization_id.as_bytes()),
                ("reported_at", t(3) == d.reported_at_us),
                ("report_type", s(4) == d.report_type.as_bytes()),
                // bit for bit, as format 1 hashed it (NaN equals itself, -0.0 differs from 0.0)
                ("risk_score", r.get::<_, Option<f64>>(5).map(f64::to_bits) == d.risk_score.map(f64::to_bits)),
                ("risk_level", o(6) == opt_bytes(&d.risk_level)),
                ("data", json(7) == d.data.as_bytes()),
                ("version", s(8) == d.version.as_bytes()),
                ("value_format", s(9) == d.value_format.as_bytes()),
            ]),
            _ => Some("table"),
        }
    }
}
