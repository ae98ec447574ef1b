//! The typed columns of a row as `verify` reads it back: owned (chain format
//! 1 hashes them) or compared in place, without copying, with what the row's
//! stored value decodes to (format 2).

use chrono::{DateTime, Utc};

use crate::chain::{AuditColumns, ReportColumns, Row};
use crate::intake::Kind;
use crate::sqltypes::{micros_of, JsonText};

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
        let s = |i: usize| r.get::<_, &str>(i);
        let o = |i: usize| r.get::<_, Option<&str>>(i);
        let t = |i: usize| micros_of(r.get::<_, DateTime<Utc>>(i));
        let json = |i: usize| r.get::<_, JsonText<'_>>(i).0;
        match (self.kind, decoded) {
            (Kind::Audit, Row::Audit(d)) => first(&[
                ("event_id", s(1) == d.event_id),
                ("occurred_at", t(2) == d.occurred_at_us),
                ("user_id", s(3) == d.user_id),
                ("action", s(4) == d.action),
                ("resource", s(5) == d.resource),
                ("details", json(6) == d.details),
                ("ip_address", o(7) == d.ip_address.as_deref()),
                ("user_agent", o(8) == d.user_agent.as_deref()),
                ("session_id", o(9) == d.session_id.as_deref()),
                ("value_format", s(10) == d.value_format),
            ]),
            (Kind::Report, Row::Report(d)) => first(&[
                ("report_id", s(1) == d.report_id),
                ("organization_id", s(2) == d.organization_id),
                ("reported_at", t(3) == d.reported_at_us),
                ("report_type", s(4) == d.report_type),
                // bit for bit, as format 1 hashed it (NaN equals itself, -0.0 differs from 0.0)
                ("risk_score", r.get::<_, Option<f64>>(5).map(f64::to_bits) == d.risk_score.map(f64::to_bits)),
                ("risk_level", o(6) == d.risk_level.as_deref()),
                ("data", json(7) == d.data),
                ("version", s(8) == d.version),
                ("value_format", s(9) == d.value_format),
            ]),
            _ => Some("table"),
        }
    }
}
