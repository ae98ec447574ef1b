//! Sample values shared by the integration tests: a "full" one (every optional
//! field set) and a "minimal" one (every optional field unset) per type.
#![allow(dead_code)]

use dora_schema::*;
use serde_json::json;

pub fn agent_event() -> AgentEvent {
    AgentEvent {
        event_id: "2b0e8f2e-7f7e-4a53-9a39-9f3f1f2d9a10".into(),
        agent_id: "gap-analyzer-1".into(),
        timestamp: 1_795_771_815_123,
        event_type: EventType::TaskCompleted,
        agent_type: "gap-analyzer".into(),
        status: AgentStatus::Healthy,
        version: "1.0.0".into(),
        message: Some("task done".into()),
        metadata: json!({
            "result_summary": {"gaps": 3, "score": 0.75, "articles": ["5", "6"], "ok": true, "none": null,
                               "nested": {"deep": [1, {"x": -2.5e-7}]}, "big": 18446744073709551615u64,
                               "neg": -9223372036854775808i64, "text": "caf\u{e9} \u{1F600} \"quoted\"\n"}
        }),
        task_id: Some("task-42".into()),
    }
}

pub fn agent_event_minimal() -> AgentEvent {
    AgentEvent {
        message: None,
        task_id: None,
        metadata: json!({}),
        event_type: EventType::Heartbeat,
        ..agent_event()
    }
}

pub fn agent_health() -> AgentHealth {
    AgentHealth {
        agent_id: "gap-analyzer-1".into(),
        agent_type: "gap-analyzer".into(),
        status: AgentStatus::Degraded,
        last_seen: 1_795_771_815_123,
        last_heartbeat: Some(1_795_771_810_000),
        resource_usage: json!({"cpu_percent": 93.5, "memory_mb": 2048}),
        tasks_completed: 17,
        last_task_id: Some("task-42".into()),
        last_error: Some("timeout talking to LLM".into()),
        updated_at: 1_795_771_815_200,
        last_event_partition: Some(2),
        last_event_offset: Some(41_977),
    }
}

pub fn agent_health_minimal() -> AgentHealth {
    AgentHealth {
        last_heartbeat: None,
        last_event_partition: None,
        last_event_offset: None,
        resource_usage: json!({}),
        last_task_id: None,
        last_error: None,
        ..agent_health()
    }
}

pub fn compliance_report() -> ComplianceReport {
    ComplianceReport {
        report_id: "f4a1c1de-3c1e-4f53-8d8e-0e0e0e0e0e01".into(),
        organization_id: "org-acme".into(),
        timestamp: 1_795_771_815_123,
        report_type: ReportType::RiskAssessment,
        risk_score: Some(0.87),
        risk_level: Some(RiskLevel::High),
        data: json!({"overall_score": 0.87, "risk_level": "HIGH", "factors": {"third_party": 0.9}}),
        version: "1.0".into(),
    }
}

pub fn compliance_report_minimal() -> ComplianceReport {
    ComplianceReport {
        report_type: ReportType::GapAssessment,
        risk_score: None,
        risk_level: None,
        data: json!({"gaps": []}),
        ..compliance_report()
    }
}

pub fn audit_event() -> AuditEvent {
    AuditEvent {
        event_id: "0c3f9a8e-1111-4222-8333-444455556666".into(),
        timestamp: 1_795_771_815_123,
        user_id: "user-7".into(),
        action: "REPORT_VIEWED".into(),
        resource: "reports/gap/org-acme".into(),
        details: json!({"ip_address": "10.1.2.3", "user_agent": "Mozilla/5.0", "session_id": "s-9"}),
        ip_address: Some("10.1.2.3".into()),
        user_agent: Some("Mozilla/5.0".into()),
        session_id: Some("s-9".into()),
    }
}

pub fn audit_event_minimal() -> AuditEvent {
    AuditEvent {
        details: json!({}),
        ip_address: None,
        user_agent: None,
        session_id: None,
        ..audit_event()
    }
}

pub fn risk_alert() -> RiskAlert {
    RiskAlert {
        alert_id: "org-acme-1795771800000".into(),
        organization_id: "org-acme".into(),
        average_risk_score: 0.8433333333333334,
        threshold: 0.8,
        window_start: 1_795_771_500_000,
        window_end: 1_795_771_800_000,
        sample_count: 3,
        timestamp: 1_795_771_815_123,
        state: RiskAlertState::Raised,
        clear_threshold: Some(0.75),
        peak_risk_score: Some(0.91),
        top_report_ids: vec!["5eed0000-0000-4000-8000-000000000007".into(), "r-2".into()],
        detected_at: Some(1_795_771_815_120),
        initial_notification_due_by: Some(1_795_858_215_120),
    }
}

pub fn risk_alert_minimal() -> RiskAlert {
    RiskAlert {
        state: RiskAlertState::Cleared,
        average_risk_score: 0.0,
        sample_count: 0,
        clear_threshold: None,
        peak_risk_score: None,
        top_report_ids: Vec::new(),
        detected_at: None,
        initial_notification_due_by: None,
        ..risk_alert()
    }
}

pub fn dead_letter() -> DeadLetter {
    DeadLetter {
        original_topic: "agent-events".into(),
        original_partition: 5,
        original_offset: 1_234_567,
        original_key: Some(b"gap-analyzer-1".to_vec()),
        original_message: vec![0, 0, 0, 0, 7, 0xff, 0xfe, 0x00, 0x80, b'{'],
        original_headers: vec![
            DeadLetterHeader {
                key: "traceparent".into(),
                value: Some(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec()),
            },
            DeadLetterHeader {
                key: "empty".into(),
                value: None,
            },
            DeadLetterHeader {
                key: "traceparent".into(),
                value: Some(vec![]),
            },
        ],
        original_timestamp: Some(1_795_771_815_000),
        error_message: "unknown magic byte 0x07".into(),
        error_type: "UnknownMagicByte".into(),
        retry_count: 0,
        processing_attempts: 1,
        timestamp: 1_795_771_815_999,
        failed_by: "agent-gateway/agent-event-processor".into(),
    }
}

pub fn dead_letter_minimal() -> DeadLetter {
    DeadLetter {
        original_key: None,
        original_headers: vec![],
        original_timestamp: None,
        ..dead_letter()
    }
}
