//! An assessment as report-ingest accepts it, from either door (gRPC or an
//! agent's completed task): the validation rules, the deterministic report
//! ids and the `ComplianceReport` the seed's `ComplianceReportProducer` builds.

use dora_proto::validate::{identifier, Invalid};
use dora_schema::{json_len, ComplianceReport, ReportType, RiskLevel};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::articles::dora_article;

/// The report format version the seed writes.
pub const REPORT_VERSION: &str = "1.0";

/// Namespace of every report id report-ingest derives (UUID v5).
pub const REPORT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d0f_9a3e_52c1_4b7e_a2f4_1c8e_d0a5_7b39);

/// Size limits, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `organizationId` and request ids.
    pub max_id_bytes: usize,
    /// The assessment's JSON text.
    pub max_data_bytes: usize,
    /// Submissions in one SubmitAssessments call.
    pub max_bulk_submissions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_id_bytes: 128,
            max_data_bytes: 65_536,
            max_bulk_submissions: 500,
        }
    }
}

/// What kind of assessment, with what a risk assessment carries besides its data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A DORA gap assessment (topic gap-assessments).
    Gap,
    /// A risk assessment (topic risk-assessments).
    Risk {
        /// `riskScore`, in [0, 1].
        score: f64,
        /// `riskLevel`.
        level: RiskLevel,
    },
}

impl Kind {
    /// The report type of this kind.
    pub fn report_type(self) -> ReportType {
        match self {
            Kind::Gap => ReportType::GapAssessment,
            Kind::Risk { .. } => ReportType::RiskAssessment,
        }
    }
}

/// A validated assessment of one organisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// The assessed organisation (the Kafka key).
    pub organization_id: String,
    /// Gap or risk, with score and level.
    pub kind: Kind,
    /// The whole assessment (the report's `data`).
    pub data: Map<String, Value>,
}

impl Assessment {
    /// A gap assessment: the organisation is a bounded identifier, the data
    /// under the size limit, and every finding that names a DORA article names
    /// one of Articles 5-45. `data_field` names the data in errors.
    pub fn gap(
        org: (&str, &str),
        data: Map<String, Value>,
        data_field: &str,
        limits: &Limits,
    ) -> Result<Self, Invalid> {
        let organization_id = identifier(org.0, org.1, limits.max_id_bytes)?;
        check_size(data_field, &data, limits)?;
        check_findings(data_field, &data)?;
        Ok(Self {
            organization_id,
            kind: Kind::Gap,
            data,
        })
    }

    /// A risk assessment; `score` and `level` are named by their fields in errors.
    pub fn risk(
        org: (&str, &str),
        score: (&str, Option<f64>),
        level: (&str, &str),
        data: Map<String, Value>,
        data_field: &str,
        limits: &Limits,
    ) -> Result<Self, Invalid> {
        let organization_id = identifier(org.0, org.1, limits.max_id_bytes)?;
        let score = risk_score(score.0, score.1)?;
        let level = risk_level(level.0, level.1)?;
        check_size(data_field, &data, limits)?;
        Ok(Self {
            organization_id,
            kind: Kind::Risk { score, level },
            data,
        })
    }

    /// The report the seed's producer builds for this assessment (which
    /// becomes its `data` as it is, not copied).
    pub fn into_report(self, report_id: Uuid, timestamp: i64) -> ComplianceReport {
        let (risk_score, risk_level) = match self.kind {
            Kind::Gap => (None, None),
            Kind::Risk { score, level } => (Some(score), Some(level)),
        };
        ComplianceReport {
            report_id: report_id.to_string(),
            organization_id: self.organization_id,
            timestamp,
            report_type: self.kind.report_type(),
            risk_score,
            risk_level,
            data: Value::Object(self.data),
            version: REPORT_VERSION.to_string(),
        }
    }
}

/// The id of a report submitted by `principal` with `request_id`: the same
/// caller, type, organisation and request id always give the same id.
pub fn submitted_report_id(
    principal: &str,
    report_type: ReportType,
    organization_id: &str,
    request_id: &str,
) -> Uuid {
    use std::fmt::Write as _;
    // Length-prefixed parts: no choice of names can make two tuples collide.
    let parts = [
        "submission",
        principal,
        report_type.as_str(),
        organization_id,
        request_id,
    ];
    let mut name = String::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
    for part in parts {
        let _ = write!(name, "{}:{part};", part.len());
    }
    Uuid::new_v5(&REPORT_ID_NAMESPACE, name.as_bytes())
}

/// The id of the report derived from the agent event `event_id`.
pub fn derived_report_id(event_id: &str) -> Uuid {
    let name = format!("agent-event:{}:{event_id};", event_id.len());
    Uuid::new_v5(&REPORT_ID_NAMESPACE, name.as_bytes())
}

/// A finite score in [0, 1].
pub fn risk_score(field: &str, score: Option<f64>) -> Result<f64, Invalid> {
    match score {
        None => Err(Invalid::new(field, "is required")),
        Some(s) if !s.is_finite() => Err(Invalid::new(
            field,
            format!("must be a finite number, not {s}"),
        )),
        Some(s) if !(0.0..=1.0).contains(&s) => {
            Err(Invalid::new(field, format!("{s} is outside [0, 1]")))
        }
        Some(s) => Ok(s),
    }
}

/// One of the schema's risk levels, in any case (the seed writes `"critical"`
/// as well as `"CRITICAL"`); `UNKNOWN` is the schema's fallback, not a level.
pub fn risk_level(field: &str, level: &str) -> Result<RiskLevel, Invalid> {
    if level.is_empty() {
        return Err(Invalid::new(field, "is required"));
    }
    RiskLevel::ALL
        .iter()
        .copied()
        .filter(|l| *l != RiskLevel::Unknown)
        .find(|l| l.as_str().eq_ignore_ascii_case(level))
        .ok_or_else(|| {
            Invalid::new(
                field,
                format!("{level:?} is not one of LOW, MEDIUM, HIGH, CRITICAL"),
            )
        })
}

fn check_size(field: &str, data: &Map<String, Value>, limits: &Limits) -> Result<(), Invalid> {
    let len = json_len(data);
    if len > limits.max_data_bytes {
        return Err(Invalid::new(
            field,
            format!(
                "is {len} bytes as JSON, at most {} allowed",
                limits.max_data_bytes
            ),
        ));
    }
    Ok(())
}

/// Every element of `gaps` and `findings` that names an `article` names a DORA article.
fn check_findings(field: &str, data: &Map<String, Value>) -> Result<(), Invalid> {
    for list in ["gaps", "findings"] {
        let Some(items) = data.get(list) else {
            continue;
        };
        let Value::Array(items) = items else {
            return Err(Invalid::new(
                format!("{field}.{list}"),
                "must be an array of findings",
            ));
        };
        for (i, item) in items.iter().enumerate() {
            let Value::Object(finding) = item else {
                return Err(Invalid::new(
                    format!("{field}.{list}[{i}]"),
                    "must be an object",
                ));
            };
            if let Some(article) = finding.get("article").filter(|a| !a.is_null()) {
                dora_article(article)
                    .map_err(|p| Invalid::new(format!("{field}.{list}[{i}].article"), p))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_gap_assessment_becomes_the_seeds_report() {
        let data =
            obj(json!({"framework": "DORA", "gaps": [{"article": "11", "status": "missing"}]}));
        let a = Assessment::gap(
            ("organization_id", "org-acme"),
            data.clone(),
            "data_json",
            &Limits::default(),
        )
        .unwrap();
        let id = Uuid::new_v4();
        let r = a.into_report(id, 1_700_000_000_000);
        assert_eq!(r.report_id, id.to_string());
        assert_eq!(r.organization_id, "org-acme");
        assert_eq!(r.report_type, ReportType::GapAssessment);
        assert_eq!((r.risk_score, r.risk_level), (None, None));
        assert_eq!(r.data, Value::Object(data));
        assert_eq!(r.version, "1.0");
    }

    #[test]
    fn a_risk_assessment_carries_score_and_level() {
        let a = Assessment::risk(
            ("o", "org-1"),
            ("s", Some(0.87)),
            ("l", "high"),
            Map::new(),
            "d",
            &Limits::default(),
        )
        .unwrap();
        let r = a.into_report(Uuid::new_v4(), 1);
        assert_eq!(r.report_type, ReportType::RiskAssessment);
        assert_eq!(r.risk_score, Some(0.87));
        assert_eq!(r.risk_level, Some(RiskLevel::High));
    }

    #[test]
    fn each_invalid_part_is_named() {
        let l = Limits::default();
        let risk = |s: Option<f64>, lvl: &str| {
            Assessment::risk(
                ("organization_id", "org-1"),
                ("overall_score", s),
                ("risk_level", lvl),
                Map::new(),
                "data_json",
                &l,
            )
            .unwrap_err()
        };
        assert_eq!(risk(Some(1.5), "LOW").field, "overall_score");
        assert_eq!(risk(Some(-0.1), "LOW").field, "overall_score");
        assert_eq!(risk(Some(f64::NAN), "LOW").field, "overall_score");
        assert_eq!(risk(Some(f64::INFINITY), "LOW").field, "overall_score");
        assert_eq!(risk(None, "LOW").problem, "is required");
        assert_eq!(risk(Some(0.5), "EXTREME").field, "risk_level");
        assert_eq!(risk(Some(0.5), "UNKNOWN").field, "risk_level");
        assert_eq!(risk(Some(0.5), "").field, "risk_level");
        let org =
            Assessment::gap(("organization_id", "org 1"), Map::new(), "data_json", &l).unwrap_err();
        assert_eq!(org.field, "organization_id");
        let long = "o".repeat(l.max_id_bytes + 1);
        assert_eq!(
            Assessment::gap(("organization_id", &long), Map::new(), "d", &l)
                .unwrap_err()
                .field,
            "organization_id"
        );
        let big = obj(json!({"blob": "x".repeat(l.max_data_bytes)}));
        assert_eq!(
            Assessment::gap(("o", "org-1"), big, "data_json", &l)
                .unwrap_err()
                .field,
            "data_json"
        );
    }

    #[test]
    fn findings_must_name_existing_dora_articles() {
        let l = Limits::default();
        let gap = |v: Value| Assessment::gap(("o", "org-1"), obj(v), "data_json", &l);
        assert!(gap(
            json!({"gaps": [{"article": 5}, {"article": "Art. 45"}, {"note": "no article"}]})
        )
        .is_ok());
        let e = gap(json!({"gaps": [{"article": "11"}, {"article": "Art. 99"}]})).unwrap_err();
        assert_eq!(e.field, "data_json.gaps[1].article");
        assert!(e.problem.contains("Article 99"), "{e}");
        let e = gap(json!({"findings": [{"article": 4}]})).unwrap_err();
        assert_eq!(e.field, "data_json.findings[0].article");
        assert_eq!(
            gap(json!({"findings": "all good"})).unwrap_err().field,
            "data_json.findings"
        );
        assert_eq!(
            gap(json!({"gaps": [3]})).unwrap_err().field,
            "data_json.gaps[0]"
        );
    }

    #[test]
    fn report_ids_are_deterministic_and_apart() {
        let a = submitted_report_id("alice", ReportType::GapAssessment, "org-1", "req-1");
        assert_eq!(
            a,
            submitted_report_id("alice", ReportType::GapAssessment, "org-1", "req-1")
        );
        assert_eq!(a.get_version_num(), 5);
        // Pinned: a client retrying across a release must get the same id
        // (UUID v5 of "10:submission;5:alice;14:GAP_ASSESSMENT;5:org-1;5:req-1;").
        assert_eq!(a.to_string(), "e9c4dd30-62d3-58b3-8ca1-8a5ece6337e9");
        assert_ne!(
            a,
            submitted_report_id("bob", ReportType::GapAssessment, "org-1", "req-1")
        );
        assert_ne!(
            a,
            submitted_report_id("alice", ReportType::RiskAssessment, "org-1", "req-1")
        );
        assert_ne!(
            a,
            submitted_report_id("alice", ReportType::GapAssessment, "org-2", "req-1")
        );
        assert_ne!(
            a,
            submitted_report_id("alice", ReportType::GapAssessment, "org-1", "req-2")
        );
        // Separators inside names cannot shift parts into each other.
        assert_ne!(
            submitted_report_id("a;b", ReportType::GapAssessment, "c", "d"),
            submitted_report_id("a", ReportType::GapAssessment, "b;c", "d")
        );
        assert_eq!(derived_report_id("e-1"), derived_report_id("e-1"));
        assert_ne!(derived_report_id("e-1"), derived_report_id("e-2"));
    }
}
