//! Every domain type round-trips through its own Avro schema (the same body
//! codec the registry-backed `Codec` uses), and through the Confluent frame.

mod common;

use dora_schema::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn roundtrip<T>(value: &T)
where
    T: AvroRecord + Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut body = Vec::new();
    encode_body(value, &mut body).unwrap_or_else(|e| panic!("encode {}: {e}", T::NAME));
    let back: T =
        decode_body(T::compiled(), &body).unwrap_or_else(|e| panic!("decode {}: {e}", T::NAME));
    assert_eq!(&back, value, "{} changed on the way through Avro", T::NAME);

    let framed = encode_framed(77, value).unwrap();
    assert_eq!(&framed[..HEADER_LEN], &[MAGIC_BYTE, 0, 0, 0, 77]);
    assert_eq!(&framed[HEADER_LEN..], &body[..]);
    assert_eq!(framing(&framed).unwrap(), Framing::Avro { id: 77 });
}

#[test]
fn agent_event() {
    roundtrip(&common::agent_event());
    roundtrip(&common::agent_event_minimal());
    for &event_type in EventType::ALL {
        for &status in AgentStatus::ALL {
            roundtrip(&AgentEvent {
                event_type,
                status,
                ..common::agent_event()
            });
        }
    }
}

#[test]
fn agent_health() {
    roundtrip(&common::agent_health());
    roundtrip(&common::agent_health_minimal());
}

/// An AgentHealth written with the first released schema (no event
/// position) reads with the position unknown; the rest is kept.
#[test]
fn agent_health_v1_reads_without_a_position() {
    use apache_avro::types::Value as Avro;
    let v1_text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../schemas/baseline/AgentHealth/v1.avsc"),
    )
    .unwrap();
    let v1 = CompiledSchema::parse("AgentHealth v1", &v1_text).unwrap();
    let old = common::agent_health();
    let value = Avro::Record(vec![
        ("agentId".into(), old.agent_id.clone().into()),
        ("agentType".into(), old.agent_type.clone().into()),
        ("status".into(), Avro::Enum(1, "DEGRADED".into())),
        ("lastSeen".into(), Avro::TimestampMillis(old.last_seen)),
        (
            "lastHeartbeat".into(),
            Avro::Union(1, Box::new(Avro::TimestampMillis(1_795_771_810_000))),
        ),
        ("resourceUsage".into(), old.resource_usage.to_string().into()),
        ("tasksCompleted".into(), old.tasks_completed.into()),
        ("lastTaskId".into(), Avro::Union(1, Box::new("task-42".into()))),
        (
            "lastError".into(),
            Avro::Union(1, Box::new("timeout talking to LLM".into())),
        ),
        ("updatedAt".into(), Avro::TimestampMillis(old.updated_at)),
    ]);
    let body = apache_avro::writer::datum::GenericDatumWriter::builder(v1.schema())
        .build()
        .unwrap()
        .write_value_to_vec(value)
        .unwrap();
    let read: AgentHealth = decode_body(&v1, &body).unwrap();
    let expected = AgentHealth {
        last_event_partition: None,
        last_event_offset: None,
        ..old
    };
    assert_eq!(read, expected);
}

#[test]
fn compliance_report() {
    roundtrip(&common::compliance_report());
    roundtrip(&common::compliance_report_minimal());
    for &level in RiskLevel::ALL {
        for &report_type in ReportType::ALL {
            roundtrip(&ComplianceReport {
                risk_level: Some(level),
                report_type,
                ..common::compliance_report()
            });
        }
    }
}

#[test]
fn audit_event() {
    roundtrip(&common::audit_event());
    roundtrip(&common::audit_event_minimal());
}

#[test]
fn risk_alert() {
    roundtrip(&common::risk_alert());
    roundtrip(&common::risk_alert_minimal());
}

/// A RiskAlert written with the first released schema (no state, no DORA
/// clock) reads as a raise with the new fields at their defaults.
#[test]
fn risk_alert_v1_reads_as_a_raise() {
    let v1_text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/baseline/RiskAlert/v1.avsc"),
    )
    .unwrap();
    let v1 = CompiledSchema::parse("RiskAlert v1", &v1_text).unwrap();
    let old = common::risk_alert();
    let value = apache_avro::types::Value::Record(vec![
        ("alertId".into(), old.alert_id.clone().into()),
        ("organizationId".into(), old.organization_id.clone().into()),
        ("averageRiskScore".into(), old.average_risk_score.into()),
        ("threshold".into(), old.threshold.into()),
        ("windowStart".into(), apache_avro::types::Value::TimestampMillis(old.window_start)),
        ("windowEnd".into(), apache_avro::types::Value::TimestampMillis(old.window_end)),
        ("sampleCount".into(), old.sample_count.into()),
        ("timestamp".into(), apache_avro::types::Value::TimestampMillis(old.timestamp)),
    ]);
    let body = apache_avro::writer::datum::GenericDatumWriter::builder(v1.schema())
        .build()
        .unwrap()
        .write_value_to_vec(value)
        .unwrap();
    let read: RiskAlert = decode_body(&v1, &body).unwrap();
    let expected = RiskAlert {
        state: RiskAlertState::Raised,
        clear_threshold: None,
        peak_risk_score: None,
        top_report_ids: Vec::new(),
        detected_at: None,
        initial_notification_due_by: None,
        ..old
    };
    assert_eq!(read, expected);
}

#[test]
fn dead_letter_keeps_bytes_exact() {
    roundtrip(&common::dead_letter());
    roundtrip(&common::dead_letter_minimal());
    // every byte value, and an empty value
    roundtrip(&DeadLetter {
        original_message: (0..=255).collect(),
        ..common::dead_letter()
    });
    roundtrip(&DeadLetter {
        original_message: vec![],
        original_key: Some(vec![]),
        ..common::dead_letter()
    });
}

#[test]
fn any_json_value_roundtrips_in_free_form_fields() {
    use serde_json::json;
    for metadata in [
        json!(null),
        json!(true),
        json!(0),
        json!(-1.5e300),
        json!(u64::MAX),
        json!(i64::MIN),
        json!("just a string"),
        json!([]),
        json!([1, "two", null, [3], {"four": 4}]),
        json!({"z": 1, "a": 2, "m": {"y": [], "b": {}}}),
    ] {
        let e = AgentEvent {
            metadata: metadata.clone(),
            ..common::agent_event()
        };
        let mut body = Vec::new();
        encode_body(&e, &mut body).unwrap();
        let back: AgentEvent = decode_body(AgentEvent::compiled(), &body).unwrap();
        assert_eq!(back.metadata, metadata);
        // key order is kept too
        assert_eq!(
            serde_json::to_string(&back.metadata).unwrap(),
            serde_json::to_string(&metadata).unwrap()
        );
    }
}

#[test]
fn json_form_of_a_type_is_the_seed_shape() {
    // the human-readable (JSON) form nests free-form JSON like the seed does,
    // and reads back to the same value
    let e = common::agent_event();
    let v = serde_json::to_value(&e).unwrap();
    assert!(v["metadata"].is_object());
    assert_eq!(v["eventType"], "TASK_COMPLETED");
    assert_eq!(
        decode_json::<AgentEvent>(&serde_json::to_vec(&e).unwrap()).unwrap(),
        e
    );

    // a dead letter of JSON bytes shows the document, of other bytes the numbers
    let d = DeadLetter {
        original_message: br#"{"a": 1}"#.to_vec(),
        ..common::dead_letter()
    };
    let back: DeadLetter = decode_json(&serde_json::to_vec(&d).unwrap()).unwrap();
    assert_eq!(back, d);
    let d = common::dead_letter();
    let back: DeadLetter = decode_json(&serde_json::to_vec(&d).unwrap()).unwrap();
    assert_eq!(back, d);
}

#[test]
fn trailing_bytes_and_truncation_are_invalid_avro() {
    let mut body = Vec::new();
    encode_body(&common::agent_event(), &mut body).unwrap();
    let mut longer = body.clone();
    longer.push(0);
    let err = decode_body::<AgentEvent>(AgentEvent::compiled(), &longer).unwrap_err();
    assert!(matches!(err, SchemaError::InvalidAvro { .. }), "{err:?}");
    let err =
        decode_body::<AgentEvent>(AgentEvent::compiled(), &body[..body.len() - 3]).unwrap_err();
    assert!(matches!(err, SchemaError::InvalidAvro { .. }), "{err:?}");
}

#[test]
fn another_record_is_a_schema_mismatch() {
    let mut body = Vec::new();
    encode_body(&common::risk_alert(), &mut body).unwrap();
    let err = decode_body::<AgentEvent>(RiskAlert::compiled(), &body).unwrap_err();
    match err {
        SchemaError::SchemaMismatch { reason } => {
            assert!(
                reason.contains("dora.events.RiskAlert")
                    && reason.contains("dora.events.AgentEvent"),
                "{reason}"
            )
        }
        other => panic!("expected SchemaMismatch, got {other:?}"),
    }
}

/// A schema's definition, stored by an archive and parsed again later, is
/// the same schema: same fingerprint (so the fast path applies), same text,
/// and values written with the original decode with the parsed one.
fn definition_roundtrip<T>(value: &T)
where
    T: AvroRecord + Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = T::compiled().definition();
    let parsed = CompiledSchema::parse("stored", &text).unwrap();
    assert_eq!(parsed.fingerprint(), T::compiled().fingerprint(), "{}", T::NAME);
    assert_eq!(parsed.definition(), text, "{}: the definition is stable", T::NAME);
    let mut body = Vec::new();
    encode_body(value, &mut body).unwrap();
    assert_eq!(&decode_body::<T>(&parsed, &body).unwrap(), value);
}

#[test]
fn a_stored_definition_decodes_what_its_schema_wrote() {
    definition_roundtrip(&common::audit_event());
    definition_roundtrip(&common::audit_event_minimal());
    definition_roundtrip(&common::compliance_report());
    definition_roundtrip(&common::compliance_report_minimal());
}
