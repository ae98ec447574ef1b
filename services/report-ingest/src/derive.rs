//! Reports from agents: a TASK_COMPLETED event of a GAP_ANALYZER or
//! RISK_ASSESSOR agent whose result carries an assessment becomes one
//! `ComplianceReport` (report id derived from the event id, timestamp the
//! event's) and one audit event, produced in the consume loop's transaction
//! together with the event's offset. Other events pass without output; an
//! assessment that fails validation is dead-lettered with the reason.
//!
//! The shape read (the seed's `send_task_completion(task_id, result)` with the
//! seed's snake_case result keys):
//!
//! ```json
//! {"eventType": "TASK_COMPLETED", "agentType": "RISK_ASSESSOR", ...,
//!  "metadata": {"result_summary": {
//!      "organization_id": "org-acme",
//!      "assessment": {"overall_score": 0.87, "risk_level": "HIGH", ...}}}}
//! ```
//!
//! A gap analyzer's `assessment` is the seed's `assessment_data` (findings
//! under `gaps` or `findings` may name an `article`); a risk assessor's is the
//! seed's `risk_data` (`overall_score` and `risk_level` required). Agent types
//! match in any case and with `-` for `_` (the seed writes `gap-analyzer`).
//!
//! Trust: the organisation is taken as the event names it. The entitlement
//! check is agent-gateway's (`intake::require_result_organization`: an agent
//! completes tasks only for the organisations its token or certificate
//! names), and only agent-gateway may write agent-events (Kafka ACLs,
//! deploy/k8s/users.yaml). The agent's credential never reaches this topic, so
//! this is the one place the check can be made.

use dora_kafka::audit::AuditProducer;
use dora_kafka::consume::{HandlerError, Record, Transform};
use dora_kafka::OutboundRecord;
use dora_proto::validate::Invalid;
use dora_schema::{AgentEvent, Codec, EventType, ReportType};
use serde_json::{json, Map, Value};

use crate::assessment::{derived_report_id, Assessment, Limits};
use crate::settings::ReportTopics;

const ORG_FIELD: &str = "metadata.result_summary.organization_id";
const DATA_FIELD: &str = "metadata.result_summary.assessment";

/// The report type an agent of `agent_type` produces, if it produces reports.
pub fn reporting_agent(agent_type: &str) -> Option<ReportType> {
    let normal = agent_type.trim().to_ascii_uppercase().replace('-', "_");
    match normal.as_str() {
        "GAP_ANALYZER" => Some(ReportType::GapAssessment),
        "RISK_ASSESSOR" => Some(ReportType::RiskAssessment),
        _ => None,
    }
}

/// The assessment `event` carries, `None` when it carries none (not a task
/// completion, not a reporting agent, no `assessment` in its result).
pub fn assessment_of(event: &AgentEvent, limits: &Limits) -> Result<Option<Assessment>, Invalid> {
    if event.event_type != EventType::TaskCompleted {
        return Ok(None);
    }
    let Some(report_type) = reporting_agent(&event.agent_type) else {
        return Ok(None);
    };
    let Some(result) = event
        .metadata
        .get("result_summary")
        .and_then(Value::as_object)
    else {
        return Ok(None);
    };
    let Some(assessment) = result.get("assessment") else {
        return Ok(None);
    };
    let Value::Object(data) = assessment else {
        return Err(Invalid::new(DATA_FIELD, "must be a JSON object"));
    };
    let org = match result.get("organization_id") {
        Some(Value::String(s)) => s.as_str(),
        None | Some(Value::Null) => return Err(Invalid::new(ORG_FIELD, "is required")),
        Some(_) => return Err(Invalid::new(ORG_FIELD, "must be a string")),
    };
    let assessment = match report_type {
        ReportType::RiskAssessment => {
            let score = match data.get("overall_score") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => n.as_f64(),
                Some(other) => {
                    return Err(Invalid::new(
                        format!("{DATA_FIELD}.overall_score"),
                        format!("must be a number, not {other}"),
                    ))
                }
            };
            let level = match data.get("risk_level") {
                Some(Value::String(s)) => s.as_str(),
                _ => "",
            };
            Assessment::risk(
                (ORG_FIELD, org),
                (&format!("{DATA_FIELD}.overall_score"), score),
                (&format!("{DATA_FIELD}.risk_level"), level),
                data.clone(),
                DATA_FIELD,
                limits,
            )?
        }
        _ => Assessment::gap((ORG_FIELD, org), data.clone(), DATA_FIELD, limits)?,
    };
    Ok(Some(assessment))
}

/// The audit action of a report derived from an agent's task.
pub fn derive_action(report_type: ReportType) -> &'static str {
    match report_type {
        ReportType::RiskAssessment => "DERIVE_RISK_ASSESSMENT",
        _ => "DERIVE_GAP_ASSESSMENT",
    }
}

/// The consume-transform-produce step of the agent path.
pub struct ReportDeriver {
    codec: Codec,
    audit: AuditProducer,
    topics: ReportTopics,
    limits: Limits,
}

impl ReportDeriver {
    /// Derives reports onto `topics`, audit events through `audit`.
    pub fn new(codec: Codec, audit: AuditProducer, topics: ReportTopics, limits: Limits) -> Self {
        Self {
            codec,
            audit,
            topics,
            limits,
        }
    }

    /// The report and audit records of `record`'s assessment (none if it carries none).
    pub async fn derive(&self, record: &Record) -> Result<Vec<OutboundRecord>, HandlerError> {
        let event: AgentEvent = self.codec.decode(&record.topic, record.payload()).await?;
        let assessment = assessment_of(&event, &self.limits)
            .map_err(|e| HandlerError::rejected("InvalidAssessment", e.to_string()))?;
        let Some(assessment) = assessment else {
            return Ok(Vec::new());
        };
        let report_id = derived_report_id(&event.event_id);
        let topic = self.topics.of(assessment.kind);
        let report = assessment.into_report(report_id, event.timestamp);
        let report_record =
            OutboundRecord::avro(&self.codec, topic, Some(&report.organization_id), &report)
                .await?;
        let activity = dora_kafka::audit::user_activity(
            &event.agent_id,
            derive_action(report.report_type),
            &report.report_id,
            audit_details(&event, record, &report.organization_id),
            chrono::Utc::now(),
        );
        let audit_record = self.audit.record(&activity).await?;
        tracing::debug!(report_id = %report.report_id, organization_id = %report.organization_id, "report derived");
        crate::metrics::accepted(report.report_type, "agent");
        Ok(vec![report_record, audit_record])
    }
}

fn audit_details(event: &AgentEvent, record: &Record, org: &str) -> Value {
    let mut d = Map::new();
    d.insert("organization_id".into(), json!(org));
    d.insert("event_id".into(), json!(event.event_id));
    d.insert("agent_type".into(), json!(event.agent_type));
    d.insert("task_id".into(), json!(event.task_id));
    d.insert(
        "source".into(),
        json!(format!(
            "{}/{}/{}",
            record.topic, record.partition, record.offset
        )),
    );
    Value::Object(d)
}

impl Transform for ReportDeriver {
    async fn transform(&self, record: &Record) -> Result<Vec<OutboundRecord>, HandlerError> {
        self.derive(record).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(agent_type: &str, result: Value) -> AgentEvent {
        AgentEvent {
            event_id: "e-1".into(),
            agent_id: "agent-1".into(),
            timestamp: 1_700_000_000_000,
            event_type: EventType::TaskCompleted,
            agent_type: agent_type.into(),
            status: dora_schema::AgentStatus::Healthy,
            version: "1.0.0".into(),
            message: None,
            metadata: json!({ "result_summary": result }),
            task_id: Some("t-1".into()),
        }
    }

    fn of(e: &AgentEvent) -> Result<Option<Assessment>, Invalid> {
        assessment_of(e, &Limits::default())
    }

    #[test]
    fn assessments_of_reporting_agents_are_read() {
        let risk = event(
            "RISK_ASSESSOR",
            json!({"organization_id": "org-1", "assessment": {"overall_score": 0.9, "risk_level": "critical"}}),
        );
        let a = of(&risk).unwrap().unwrap();
        assert_eq!(a.organization_id, "org-1");
        assert_eq!(a.kind.report_type(), ReportType::RiskAssessment);
        let gap = event(
            "gap-analyzer",
            json!({"organization_id": "org-2", "assessment": {"gaps": [{"article": "Art. 11"}]}}),
        );
        assert_eq!(
            of(&gap).unwrap().unwrap().kind.report_type(),
            ReportType::GapAssessment
        );
    }

    #[test]
    fn events_without_an_assessment_pass() {
        let no_assessment = event("GAP_ANALYZER", json!({"gaps_found": 3}));
        assert_eq!(of(&no_assessment).unwrap(), None);
        let other_agent = event(
            "COMPLIANCE_MONITOR",
            json!({"organization_id": "o", "assessment": {}}),
        );
        assert_eq!(of(&other_agent).unwrap(), None);
        let mut heartbeat = event(
            "RISK_ASSESSOR",
            json!({"organization_id": "o", "assessment": {}}),
        );
        heartbeat.event_type = EventType::Heartbeat;
        assert_eq!(of(&heartbeat).unwrap(), None);
        let mut bare = event("RISK_ASSESSOR", json!({}));
        bare.metadata = json!(null);
        assert_eq!(of(&bare).unwrap(), None);
    }

    #[test]
    fn invalid_assessments_name_the_field() {
        let field = |agent: &str, result: Value| of(&event(agent, result)).unwrap_err().field;
        assert_eq!(
            field(
                "RISK_ASSESSOR",
                json!({"assessment": {"overall_score": 0.5, "risk_level": "LOW"}})
            ),
            ORG_FIELD
        );
        assert_eq!(
            field(
                "RISK_ASSESSOR",
                json!({"organization_id": 7, "assessment": {}})
            ),
            ORG_FIELD
        );
        assert_eq!(
            field(
                "RISK_ASSESSOR",
                json!({"organization_id": "o", "assessment": [1]})
            ),
            DATA_FIELD
        );
        assert_eq!(
            field(
                "RISK_ASSESSOR",
                json!({"organization_id": "o", "assessment": {"overall_score": 1.7, "risk_level": "LOW"}})
            ),
            "metadata.result_summary.assessment.overall_score"
        );
        assert_eq!(
            field(
                "RISK_ASSESSOR",
                json!({"organization_id": "o", "assessment": {"overall_score": "high", "risk_level": "LOW"}})
            ),
            "metadata.result_summary.assessment.overall_score"
        );
        assert_eq!(
            field(
                "RISK_ASSESSOR",
                json!({"organization_id": "o", "assessment": {"overall_score": 0.2, "risk_level": "SEVERE"}})
            ),
            "metadata.result_summary.assessment.risk_level"
        );
        assert_eq!(
            field(
                "GAP_ANALYZER",
                json!({"organization_id": "o", "assessment": {"findings": [{"article": 99}]}})
            ),
            "metadata.result_summary.assessment.findings[0].article"
        );
    }
}
