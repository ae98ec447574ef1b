//! The seed's legacy JSON — the exact bytes its Python producers write
//! (fixtures/seed/*.json, made by fixtures/seed/generate.py from the seed's
//! code) — decodes into the same types as Avro, and bad JSON is rejected with
//! an error that names the field.

use dora_schema::*;
use serde_json::json;

const TS: i64 = 1_795_771_815_123;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("fixtures/seed/", $name, ".json")).as_slice()
    };
}

#[test]
fn send_event_with_every_argument() {
    let e: AgentEvent = decode_json(fixture!("send_event_full")).unwrap();
    assert_eq!(
        e,
        AgentEvent {
            event_id: "5eed0000-0000-4000-8000-000000000001".into(),
            agent_id: "gap-analyzer-01".into(),
            timestamp: TS,
            event_type: EventType::TaskStarted,
            agent_type: "gap-analyzer".into(),
            status: AgentStatus::Healthy,
            version: "1.0.0".into(),
            message: Some("Starting DORA Art. 6 review".into()),
            metadata: json!({"article": "6", "attempt": 1, "tags": ["ict", "risk"], "dry_run": false, "owner": null, "weight": 0.5}),
            task_id: Some("task-0001".into()),
        }
    );
}

#[test]
fn send_event_with_none_values() {
    let e: AgentEvent = decode_json(fixture!("send_event_minimal")).unwrap();
    assert_eq!(e.event_type, EventType::Error);
    assert_eq!(e.status, AgentStatus::Unhealthy);
    assert_eq!(e.message, None);
    assert_eq!(e.task_id, None);
    assert_eq!(e.metadata, json!({}), "the seed sends `metadata or {{}}`");
}

#[test]
fn send_heartbeat_without_and_with_resource_usage() {
    let bare: AgentEvent = decode_json(fixture!("send_heartbeat_bare")).unwrap();
    assert_eq!(bare.event_type, EventType::Heartbeat);
    assert_eq!(bare.status, AgentStatus::Healthy);
    assert_eq!(bare.metadata, json!({}));

    let full: AgentEvent = decode_json(fixture!("send_heartbeat_resources")).unwrap();
    assert_eq!(full.event_type, EventType::Heartbeat);
    assert_eq!(
        full.metadata,
        json!({"resource_usage": {"cpu_percent": 12.5, "memory_mb": 512, "disk": {"used_gb": 3.2, "free_gb": 96}}})
    );
}

#[test]
fn send_task_completion_keeps_nested_result_summary() {
    let e: AgentEvent = decode_json(fixture!("send_task_completion")).unwrap();
    assert_eq!(e.event_type, EventType::TaskCompleted);
    assert_eq!(e.task_id.as_deref(), Some("task-0001"));
    let summary = &e.metadata["result_summary"];
    assert_eq!(summary["articles"]["9"], json!(null));
    assert_eq!(
        summary["findings"][0]["text"],
        json!("Zugriffsrechte \u{fc}berpr\u{fc}fen \u{2713}")
    );
    assert_eq!(
        summary["findings"][1]["big"].as_u64(),
        Some(12_345_678_901_234_567_890)
    );
    assert_eq!(summary["complete"], json!(true));
    // the free-form JSON survives Avro unchanged, key order included
    let mut body = Vec::new();
    encode_body(&e, &mut body).unwrap();
    let back: AgentEvent = decode_body(AgentEvent::compiled(), &body).unwrap();
    assert_eq!(back, e);
    assert_eq!(
        serde_json::to_string(&back.metadata).unwrap(),
        serde_json::to_string(&e.metadata).unwrap()
    );
}

#[test]
fn send_gap_assessment() {
    let r: ComplianceReport = decode_json(fixture!("send_gap_assessment")).unwrap();
    assert_eq!(r.report_type, ReportType::GapAssessment);
    assert_eq!(r.organization_id, "org-acme");
    assert_eq!(r.risk_score, None, "gap assessments carry no riskScore");
    assert_eq!(r.risk_level, None);
    assert_eq!(r.version, "1.0");
    assert_eq!(r.data["summary"]["missing"], json!(4));
    assert_eq!(r.data["gaps"][0]["evidence"], json!([]));
    assert_eq!(r.data["assessor"], json!(null));
}

#[test]
fn send_risk_assessment_with_and_without_score() {
    let r: ComplianceReport = decode_json(fixture!("send_risk_assessment")).unwrap();
    assert_eq!(r.report_type, ReportType::RiskAssessment);
    assert_eq!(r.risk_score, Some(0.87));
    assert_eq!(r.risk_level, Some(RiskLevel::High));
    assert_eq!(r.data["factors"]["third_party"], json!(0.9));

    let r: ComplianceReport = decode_json(fixture!("send_risk_assessment_without_score")).unwrap();
    assert_eq!(
        r.risk_score, None,
        "risk_data.get('overall_score') was None -> null"
    );
    assert_eq!(r.risk_level, None);
    assert_eq!(r.data, json!({"factors": {}, "notes": "score pending"}));

    let r: ComplianceReport =
        decode_json(fixture!("send_risk_assessment_int_score_lowercase_level")).unwrap();
    assert_eq!(r.risk_score, Some(1.0), "a Python int score is a double");
    assert_eq!(
        r.risk_level,
        Some(RiskLevel::Critical),
        "lower-case level accepted"
    );
}

#[test]
fn send_user_activity_with_and_without_details() {
    let a: AuditEvent = decode_json(fixture!("send_user_activity")).unwrap();
    assert_eq!(
        a,
        AuditEvent {
            event_id: "5eed0000-0000-4000-8000-00000000000a".into(),
            timestamp: TS,
            user_id: "user-7".into(),
            action: "REPORT_VIEWED".into(),
            resource: "reports/gap/org-acme".into(),
            details: json!({"ip_address": "10.1.2.3", "user_agent": "Mozilla/5.0", "session_id": "sess-99",
                            "query": {"page": 2, "filters": ["open"]}}),
            ip_address: Some("10.1.2.3".into()),
            user_agent: Some("Mozilla/5.0".into()),
            session_id: Some("sess-99".into()),
        }
    );
    let a: AuditEvent = decode_json(fixture!("send_user_activity_no_details")).unwrap();
    assert_eq!(a.details, json!({}));
    assert_eq!(
        (a.ip_address, a.user_agent, a.session_id),
        (None, None, None)
    );
}

#[test]
fn dlq_handler_payload_rebuilds_the_original_bytes() {
    let d: DeadLetter = decode_json(fixture!("dlq_agent_event")).unwrap();
    assert_eq!(d.original_topic, "agent-events");
    assert_eq!(d.error_message, "Unknown event type: TASK_STARTED");
    assert_eq!(d.error_type, "ValueError");
    assert_eq!(d.retry_count, 2);
    assert_eq!(d.processing_attempts, 3);
    assert_eq!(d.timestamp, 1_795_771_815_456);
    assert_eq!(
        (d.original_partition, d.original_offset),
        (-1, -1),
        "the seed does not record the position"
    );
    assert_eq!(d.original_key, None);
    assert!(d.original_headers.is_empty());
    assert_eq!(d.failed_by, "unknown");
    // the seed stored the parsed dict; we get back exactly what its producer had sent
    assert_eq!(d.original_message, fixture!("send_event_full"));
    let original: AgentEvent = decode_json(&d.original_message).unwrap();
    assert_eq!(original.task_id.as_deref(), Some("task-0001"));

    let d: DeadLetter = decode_json(fixture!("dlq_with_id")).unwrap();
    assert_eq!(d.error_type, "KeyError");
    assert_eq!(d.error_message, "'userId'");
    assert_eq!(
        d.original_message,
        br#"{"id": "msg-1", "note": "caf\u00e9"}"#
    );
}

#[test]
fn seed_payloads_decode_through_the_codec_too() {
    // no registry is contacted for JSON: the codec is built against a closed port
    let codec = Codec::new(&RegistrySettings {
        url: "http://127.0.0.1:9".into(),
        ..Default::default()
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e: AgentEvent = rt
        .block_on(codec.decode("agent-events", fixture!("send_event_full")))
        .unwrap();
    assert_eq!(
        e,
        decode_json::<AgentEvent>(fixture!("send_event_full")).unwrap()
    );
    let r: ComplianceReport = rt
        .block_on(codec.decode("risk-assessments", fixture!("send_risk_assessment")))
        .unwrap();
    assert_eq!(r.risk_level, Some(RiskLevel::High));
}

#[test]
fn unknown_enum_strings_decode_to_unknown() {
    let mut v: serde_json::Value = serde_json::from_slice(fixture!("send_event_full")).unwrap();
    v["eventType"] = json!("REBOOTING");
    v["status"] = json!("SLEEPY");
    let e: AgentEvent = decode_json(v.to_string().as_bytes()).unwrap();
    assert_eq!(
        (e.event_type, e.status),
        (EventType::Unknown, AgentStatus::Unknown)
    );
}

#[test]
fn missing_field_is_named() {
    let mut v: serde_json::Value = serde_json::from_slice(fixture!("send_event_full")).unwrap();
    v.as_object_mut().unwrap().remove("agentId");
    let err = decode_json::<AgentEvent>(v.to_string().as_bytes()).unwrap_err();
    assert!(
        matches!(&err, SchemaError::MissingField { field } if field == "agentId"),
        "{err:?}"
    );
    assert!(!err.is_retryable());

    let d = json!({"originalTopic": "t", "originalMessage": {}, "originalHeaders": [{"value": null}],
                   "errorMessage": "e", "errorType": "E", "retryCount": 0, "processingAttempts": 1, "timestamp": 1});
    let err = decode_json::<DeadLetter>(d.to_string().as_bytes()).unwrap_err();
    assert!(
        matches!(&err, SchemaError::MissingField { field } if field == "originalHeaders[0].key"),
        "{err:?}"
    );
}

#[test]
fn ill_typed_field_is_named() {
    let mut v: serde_json::Value = serde_json::from_slice(fixture!("send_event_full")).unwrap();
    v["timestamp"] = json!("yesterday");
    let err = decode_json::<AgentEvent>(v.to_string().as_bytes()).unwrap_err();
    match &err {
        SchemaError::IllTypedField { field, reason } => {
            assert_eq!(field, "timestamp");
            assert!(reason.contains("invalid type"), "{reason}");
        }
        other => panic!("expected IllTypedField, got {other:?}"),
    }
    let err = decode_json::<AgentEvent>(b"[1, 2]").unwrap_err();
    assert!(
        matches!(&err, SchemaError::IllTypedField { field, .. } if field == "$"),
        "{err:?}"
    );
}

#[test]
fn invalid_json_is_invalid_json() {
    let trailing = [fixture!("send_event_full"), b" trailing"].concat();
    for bad in [
        &b"{\"eventId\": "[..],
        b"{not json}",
        &trailing,
        b"\xff\xfe",
        b"",
        b"   ",
    ] {
        let err = decode_json::<AgentEvent>(bad).unwrap_err();
        assert!(
            matches!(err, SchemaError::InvalidJson { .. }),
            "{:?} -> {err:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn neither_avro_nor_json_is_rejected_by_the_codec() {
    let codec = Codec::new(&RegistrySettings {
        url: "http://127.0.0.1:9".into(),
        ..Default::default()
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let decode = |bytes: &[u8]| {
        rt.block_on(codec.decode::<AgentEvent>("agent-events", bytes))
            .unwrap_err()
    };

    let err = decode(b"\x07garbage");
    assert!(
        matches!(err, SchemaError::UnknownMagicByte { byte: 7 }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let err = decode(b"hello");
    assert!(
        matches!(err, SchemaError::UnknownMagicByte { byte: b'h' }),
        "{err:?}"
    );
    let err = decode(&[0, 0, 1]);
    assert!(matches!(err, SchemaError::Truncated { len: 3 }), "{err:?}");
    let err = decode(b"");
    assert!(matches!(err, SchemaError::Truncated { len: 0 }), "{err:?}");
    let err = decode(b"{\"eventId\": 1}");
    assert!(matches!(err, SchemaError::IllTypedField { .. }), "{err:?}");

    // Avro whose writer schema cannot be fetched: retryable, never dead-lettered
    let err = decode(&[0, 0, 0, 0, 1, 2]);
    assert!(
        matches!(err, SchemaError::RegistryUnavailable { .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let located = err.with_context("agent-events", 2, 99);
    assert!(located.is_retryable());
    assert!(
        located
            .to_string()
            .starts_with("agent-events[2]@99: schema registry unavailable"),
        "{located}"
    );
}
