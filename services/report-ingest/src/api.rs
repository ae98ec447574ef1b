//! The gRPC door: authenticate the caller, check it may submit for the
//! organisation, validate the assessment (naming the field), derive the report
//! id from the caller and its request id, produce the report and its audit
//! event, and answer once the broker acknowledged both.

use std::sync::Arc;

use dora_auth::{Authenticator, Principal};
use dora_kafka::audit::{user_activity, AuditProducer};
use dora_kafka::{Delivered, DeliveryGroup, OutboundRecord, ProduceError, Producer};
use dora_proto::report::v1 as pb;
use dora_proto::report::v1::report_ingest_server::ReportIngest;
use dora_proto::validate::{identifier, json_object, Invalid};
use dora_schema::{AuditEvent, Codec, ComplianceReport, ReportType};
use serde_json::{json, Map, Value};
use tonic::{Request, Response, Status};

use crate::assessment::{submitted_report_id, Assessment, Kind, Limits};
use crate::metrics;
use crate::settings::ReportTopics;

/// The audience report-ingest's tokens are issued for.
pub const AUDIENCE: &str = "report-ingest";

/// The audit action of a report submitted over gRPC.
pub fn submit_action(report_type: ReportType) -> &'static str {
    match report_type {
        ReportType::RiskAssessment => "SUBMIT_RISK_ASSESSMENT",
        _ => "SUBMIT_GAP_ASSESSMENT",
    }
}

/// Encodes a report and its audit event and enqueues both in their call's
/// delivery group, through one producer (the audit event's topic and key
/// come from the audit producer).
#[derive(Clone)]
pub struct ReportWriter {
    producer: Producer,
    codec: Codec,
    audit: AuditProducer,
}

impl ReportWriter {
    /// Reports through `producer`, audit events through `audit`.
    pub fn new(producer: Producer, codec: Codec, audit: AuditProducer) -> Self {
        Self {
            producer,
            codec,
            audit,
        }
    }

    /// Encodes both records and enqueues them in `group` (their call's):
    /// their indexes there, the report's first. The call answers once the
    /// group is acknowledged.
    pub async fn enqueue_in(
        &self,
        group: &mut DeliveryGroup,
        topic: &str,
        report: &ComplianceReport,
        activity: &AuditEvent,
    ) -> Result<(usize, usize), ProduceError> {
        let key = Some(report.organization_id.as_str());
        let report = OutboundRecord::avro(&self.codec, topic, key, report)
            .await
            .map_err(|e| ProduceError::encoding(topic, &e))?;
        let audit = self
            .audit
            .record(activity)
            .await
            .map_err(|e| ProduceError::encoding(self.audit.topic(), &e))?;
        Ok((
            group.enqueue_raw(report).await?,
            group.enqueue_raw(audit).await?,
        ))
    }

    /// A group for a call's records (see [`enqueue_in`](Self::enqueue_in)).
    pub fn group(&self) -> DeliveryGroup {
        self.producer.group()
    }
}

/// The gRPC service of report-ingest.
#[derive(Clone)]
pub struct IngestApi {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    auth: Authenticator,
    writer: ReportWriter,
    topics: ReportTopics,
    pub(crate) limits: Limits,
}

impl IngestApi {
    /// A service authenticating with `auth` and writing through `writer`.
    pub fn new(
        auth: Authenticator,
        writer: ReportWriter,
        topics: ReportTopics,
        limits: Limits,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                auth,
                writer,
                topics,
                limits,
            }),
        }
    }
}

/// INVALID_ARGUMENT, counted.
fn invalid(e: Invalid) -> Status {
    metrics::rejected(tonic::Code::InvalidArgument);
    e.into()
}

/// A refusal of `s`'s code, counted.
pub(crate) fn counted(s: Status) -> Status {
    metrics::rejected(s.code());
    s
}

impl Inner {
    /// The caller's request id, once `principal` may submit for `org`.
    fn admit(&self, principal: &Principal, org: &str, request_id: &str) -> Result<String, Status> {
        let org = identifier("organization_id", org, self.limits.max_id_bytes).map_err(invalid)?;
        principal
            .require_org("organization_id", &org)
            .map_err(counted)?;
        identifier("request_id", request_id, self.limits.max_id_bytes).map_err(invalid)
    }

    /// A gap assessment, checked as its call's fields name it.
    pub(crate) fn accept_gap(
        &self,
        principal: &Principal,
        r: &pb::SubmitGapAssessmentRequest,
        client: &Map<String, Value>,
    ) -> Result<Accepted<'_>, Status> {
        let request_id = self.admit(principal, &r.organization_id, &r.request_id)?;
        let limits = &self.limits;
        let data =
            json_object("data_json", &r.data_json, limits.max_data_bytes).map_err(invalid)?;
        let assessment = Assessment::gap(
            ("organization_id", &r.organization_id),
            data,
            "data_json",
            limits,
        )
        .map_err(invalid)?;
        Ok(self.accept(principal, &request_id, assessment, client))
    }

    /// A risk assessment, checked as its call's fields name it.
    pub(crate) fn accept_risk(
        &self,
        principal: &Principal,
        r: &pb::SubmitRiskAssessmentRequest,
        client: &Map<String, Value>,
    ) -> Result<Accepted<'_>, Status> {
        let request_id = self.admit(principal, &r.organization_id, &r.request_id)?;
        let limits = &self.limits;
        let data =
            json_object("data_json", &r.data_json, limits.max_data_bytes).map_err(invalid)?;
        let mut assessment = Assessment::risk(
            ("organization_id", &r.organization_id),
            ("overall_score", r.overall_score),
            ("risk_level", &r.risk_level),
            data,
            "data_json",
            limits,
        )
        .map_err(invalid)?;
        if let Kind::Risk { score, level } = assessment.kind {
            assessment.data =
                risk_data(std::mem::take(&mut assessment.data), score, level).map_err(invalid)?;
        }
        Ok(self.accept(principal, &request_id, assessment, client))
    }

    /// The report of a valid assessment and its audit event.
    fn accept(
        &self,
        principal: &Principal,
        request_id: &str,
        assessment: Assessment,
        client: &Map<String, Value>,
    ) -> Accepted<'_> {
        let report_type = assessment.kind.report_type();
        let report_id = submitted_report_id(
            &principal.name,
            report_type,
            &assessment.organization_id,
            request_id,
        );
        let now = chrono::Utc::now();
        let topic = self.topics.of(assessment.kind);
        let report = assessment.into_report(report_id, now.timestamp_millis());
        let mut details = client.clone();
        details.insert("organization_id".into(), json!(report.organization_id));
        details.insert("request_id".into(), json!(request_id));
        details.insert("report_type".into(), json!(report_type.as_str()));
        let activity = user_activity(
            &principal.name,
            submit_action(report_type),
            &report.report_id,
            Value::Object(details),
            now,
        );
        Accepted {
            topic,
            report,
            activity,
        }
    }

    /// A group for a call's records.
    pub(crate) fn group(&self) -> DeliveryGroup {
        self.writer.group()
    }

    /// Enqueues an accepted submission's report and audit event in its
    /// call's `group` (both dropped once encoded); what its answer needs
    /// once the group is acknowledged.
    pub(crate) async fn enqueue_in(
        &self,
        group: &mut DeliveryGroup,
        a: Accepted<'_>,
    ) -> Result<Grouped, Status> {
        let (report, audit) = self
            .writer
            .enqueue_in(group, a.topic, &a.report, &a.activity)
            .await
            .map_err(|e| counted(unavailable(&e)))?;
        Ok(Grouped {
            topic: a.topic.to_string(),
            report_id: a.report.report_id,
            timestamp: a.report.timestamp,
            report_type: a.report.report_type,
            report,
            audit,
        })
    }

    /// Writes one accepted submission (a group of its two records) and
    /// answers it once the broker acknowledged both.
    async fn submit(&self, a: Accepted<'_>) -> Result<Response<pb::SubmitReportResponse>, Status> {
        let mut group = self.group();
        let grouped = self.enqueue_in(&mut group, a).await?;
        let outcomes = group.acknowledged().await;
        Ok(Response::new(grouped.answer(&outcomes)?))
    }
}

/// An accepted submission whose two records are in its call's group: what
/// its answer needs, and where its records are in the group.
pub(crate) struct Grouped {
    topic: String,
    report_id: String,
    timestamp: i64,
    report_type: ReportType,
    report: usize,
    audit: usize,
}

impl Grouped {
    /// The answer from the group's outcomes: the report's position once both
    /// its records were acknowledged, else UNAVAILABLE (or INTERNAL) for the first that failed.
    pub(crate) fn answer(
        self,
        outcomes: &[Result<Delivered, ProduceError>],
    ) -> Result<pb::SubmitReportResponse, Status> {
        let delivered = match (outcomes.get(self.report), outcomes.get(self.audit)) {
            (Some(Ok(d)), Some(Ok(_))) => *d,
            (Some(Err(e)), _) | (_, Some(Err(e))) => return Err(counted(unavailable(e))),
            // A group has an outcome for every record it took.
            _ => return Err(counted(Status::internal("a record of the call has no outcome"))),
        };
        metrics::accepted(self.report_type, "grpc");
        Ok(pb::SubmitReportResponse {
            report_id: self.report_id,
            timestamp: self.timestamp,
            topic: self.topic,
            partition: delivered.partition,
            offset: delivered.offset,
        })
    }
}

/// A valid submission: where its report goes, the report and its audit event.
pub(crate) struct Accepted<'a> {
    topic: &'a str,
    report: ComplianceReport,
    activity: AuditEvent,
}

/// UNAVAILABLE when trying again (here or at another replica) may succeed, INTERNAL otherwise.
fn unavailable(e: &ProduceError) -> Status {
    tracing::warn!(error = %e, "report not written");
    match e {
        ProduceError::Fatal(_) => Status::unavailable("this replica cannot produce; retry"),
        e if e.is_retryable() => {
            Status::unavailable(format!("{e}; retry with the same request_id"))
        }
        e => Status::internal(e.to_string()),
    }
}

/// What the audit trail keeps of the client: its address and user agent
/// (lifted into the audit event's `ipAddress` and `userAgent`, as the seed does).
fn client_details<T>(req: &Request<T>) -> Map<String, Value> {
    let mut d = Map::new();
    if let Some(addr) = req.remote_addr() {
        d.insert("ip_address".into(), json!(addr.ip().to_string()));
    }
    if let Some(ua) = req
        .metadata()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
    {
        d.insert("user_agent".into(), json!(ua));
    }
    d.insert("channel".into(), json!("grpc"));
    d
}

/// The data of a risk assessment: `data_json` with `overall_score` and
/// `risk_level` set from the fields (if present, they must agree).
fn risk_data(
    mut data: Map<String, Value>,
    score: f64,
    level: dora_schema::RiskLevel,
) -> Result<Map<String, Value>, Invalid> {
    match data.get("overall_score") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_f64() == Some(score) => {}
        Some(v) => {
            return Err(Invalid::new(
                "data_json.overall_score",
                format!("{v} disagrees with overall_score {score}"),
            ))
        }
    }
    match data.get("risk_level") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.eq_ignore_ascii_case(level.as_str()) => {}
        Some(v) => {
            return Err(Invalid::new(
                "data_json.risk_level",
                format!("{v} disagrees with risk_level {level}"),
            ))
        }
    }
    data.entry("overall_score").or_insert(json!(score));
    data.entry("risk_level").or_insert(json!(level.as_str()));
    Ok(data)
}

#[tonic::async_trait]
impl ReportIngest for IngestApi {
    async fn submit_gap_assessment(
        &self,
        req: Request<pb::SubmitGapAssessmentRequest>,
    ) -> Result<Response<pb::SubmitReportResponse>, Status> {
        let inner = &self.inner;
        let principal = inner.auth.identify(&req).map_err(counted)?;
        let accepted = inner.accept_gap(&principal, req.get_ref(), &client_details(&req))?;
        inner.submit(accepted).await
    }

    async fn submit_risk_assessment(
        &self,
        req: Request<pb::SubmitRiskAssessmentRequest>,
    ) -> Result<Response<pb::SubmitReportResponse>, Status> {
        let inner = &self.inner;
        let principal = inner.auth.identify(&req).map_err(counted)?;
        let accepted = inner.accept_risk(&principal, req.get_ref(), &client_details(&req))?;
        inner.submit(accepted).await
    }

    async fn submit_assessments(
        &self,
        req: Request<pb::SubmitAssessmentsRequest>,
    ) -> Result<Response<pb::SubmitAssessmentsResponse>, Status> {
        let inner = &self.inner;
        let principal = inner.auth.identify(&req).map_err(counted)?;
        let client = client_details(&req);
        let results =
            crate::bulk::submit_all(inner, &principal, &req.get_ref().submissions, &client).await?;
        Ok(Response::new(pb::SubmitAssessmentsResponse { results }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dora_schema::RiskLevel;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn risk_data_takes_score_and_level_from_the_fields() {
        let d = risk_data(obj(json!({"factors": {}})), 0.9, RiskLevel::High).unwrap();
        assert_eq!(
            Value::Object(d),
            json!({"factors": {}, "overall_score": 0.9, "risk_level": "HIGH"})
        );
        let same = risk_data(
            obj(json!({"overall_score": 0.9, "risk_level": "high"})),
            0.9,
            RiskLevel::High,
        );
        assert!(same.is_ok());
        let e = risk_data(obj(json!({"overall_score": 0.2})), 0.9, RiskLevel::High).unwrap_err();
        assert_eq!(e.field, "data_json.overall_score");
        let e = risk_data(obj(json!({"risk_level": "LOW"})), 0.9, RiskLevel::High).unwrap_err();
        assert_eq!(e.field, "data_json.risk_level");
    }

    #[test]
    fn an_answer_names_the_reports_position_or_the_first_failure() {
        let grouped = |report, audit| Grouped {
            topic: "gap".into(),
            report_id: "r".into(),
            timestamp: 1,
            report_type: ReportType::GapAssessment,
            report,
            audit,
        };
        let at = |partition, offset| Ok(Delivered { partition, offset });
        let failed = |retryable| {
            Err(ProduceError::Encode {
                message: "refused".into(),
                retryable,
            })
        };
        // The report's position, not its audit event's.
        let outcomes = [at(0, 7), at(2, 9), at(1, 3), at(1, 4)];
        let answer = grouped(2, 1).answer(&outcomes).unwrap();
        assert_eq!((answer.partition, answer.offset, answer.report_id.as_str()), (1, 3, "r"));
        // Either record refused: that submission's answer says why.
        let outcomes = [at(0, 1), failed(true)];
        let e = grouped(0, 1).answer(&outcomes).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        let outcomes = [failed(false), at(0, 2)];
        assert_eq!(grouped(0, 1).answer(&outcomes).unwrap_err().code(), tonic::Code::Internal);
        assert_eq!(grouped(0, 5).answer(&outcomes).unwrap_err().code(), tonic::Code::Internal);
    }

    #[test]
    fn audit_actions_follow_the_report_type() {
        assert_eq!(
            submit_action(ReportType::GapAssessment),
            "SUBMIT_GAP_ASSESSMENT"
        );
        assert_eq!(
            submit_action(ReportType::RiskAssessment),
            "SUBMIT_RISK_ASSESSMENT"
        );
    }
}
