//! Schema evolution guard: each `schemas/<Record>.avsc` must read data written
//! with every released version in `schemas/baseline/<Record>/` (BACKWARD_TRANSITIVE),
//! checked with apache-avro's schema compatibility; and the check is shown to
//! catch incompatible edits.

use std::path::{Path, PathBuf};

use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::Schema;
use dora_schema::*;
use serde_json::{json, Value};

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

/// Ok when a reader with `candidate` fully reads everything written with `released`.
fn check_backward(released: &Schema, candidate: &Schema) -> Result<(), String> {
    match SchemaCompatibility::can_read(released, candidate) {
        Ok(Compatibility::Full) => Ok(()),
        Ok(Compatibility::Partial) => {
            Err("only partially compatible (enum symbols or union branches lost)".into())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn parse(text: &str) -> Schema {
    Schema::parse_str(text).unwrap()
}

#[test]
fn every_schema_reads_every_released_version() {
    let mut checked = 0;
    let mut current_names = Vec::new();
    for entry in std::fs::read_dir(schemas_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("avsc") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let current = parse(&std::fs::read_to_string(&path).unwrap());
        let baseline_dir = schemas_dir().join("baseline").join(&name);
        let versions: Vec<PathBuf> = std::fs::read_dir(&baseline_dir)
            .unwrap_or_else(|e| {
                panic!(
                    "{name}: no baseline directory {}: {e}",
                    baseline_dir.display()
                )
            })
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("avsc"))
            .collect();
        assert!(
            !versions.is_empty(),
            "{name}: no released version in {}",
            baseline_dir.display()
        );
        for version in versions {
            let released = parse(&std::fs::read_to_string(&version).unwrap());
            check_backward(&released, &current).unwrap_or_else(|e| {
                panic!(
                    "schemas/{name}.avsc cannot read data written with {}: {e}",
                    version.display()
                )
            });
            checked += 1;
        }
        current_names.push(name);
    }
    current_names.sort();
    assert_eq!(
        current_names,
        [
            "AgentEvent",
            "AgentHealth",
            "AuditEvent",
            "ComplianceReport",
            "DeadLetter",
            "RiskAlert"
        ],
        "every record has a schema file"
    );
    assert!(checked >= 6);
}

#[test]
fn compiled_in_schemas_are_the_files() {
    // the types carry include_str! of the same files the guard reads
    for (name, text) in [
        ("AgentEvent", AgentEvent::SCHEMA),
        ("AgentHealth", AgentHealth::SCHEMA),
        ("AuditEvent", AuditEvent::SCHEMA),
        ("ComplianceReport", ComplianceReport::SCHEMA),
        ("DeadLetter", DeadLetter::SCHEMA),
        ("RiskAlert", RiskAlert::SCHEMA),
    ] {
        let file = std::fs::read_to_string(schemas_dir().join(format!("{name}.avsc"))).unwrap();
        assert_eq!(file, text, "{name}");
    }
}

/// The current AgentEvent schema with an edit applied.
fn edited(edit: impl FnOnce(&mut Vec<Value>)) -> Schema {
    let mut v: Value = serde_json::from_str(AgentEvent::SCHEMA).unwrap();
    edit(v["fields"].as_array_mut().unwrap());
    parse(&v.to_string())
}

fn released() -> Schema {
    parse(&std::fs::read_to_string(schemas_dir().join("baseline/AgentEvent/v1.avsc")).unwrap())
}

#[test]
fn adding_an_optional_field_with_default_passes() {
    let candidate =
        edited(|f| f.push(json!({"name": "priority", "type": ["null", "int"], "default": null})));
    check_backward(&released(), &candidate).unwrap();
}

#[test]
fn adding_a_required_field_is_caught() {
    let candidate = edited(|f| f.push(json!({"name": "priority", "type": "int"})));
    let err = check_backward(&released(), &candidate).unwrap_err();
    assert!(err.contains("priority"), "{err}");
}

#[test]
fn changing_a_field_type_is_caught() {
    let candidate = edited(|f| {
        let ts = f.iter_mut().find(|x| x["name"] == "timestamp").unwrap();
        ts["type"] = json!("string");
    });
    check_backward(&released(), &candidate).unwrap_err();
}

#[test]
fn renaming_a_field_without_alias_is_caught() {
    let candidate = edited(|f| {
        let id = f.iter_mut().find(|x| x["name"] == "agentId").unwrap();
        id["name"] = json!("agent");
    });
    let err = check_backward(&released(), &candidate).unwrap_err();
    assert!(err.contains("agent"), "{err}");
}

#[test]
fn removing_an_enum_symbol_without_default_is_caught() {
    let candidate = edited(|f| {
        let t = f.iter_mut().find(|x| x["name"] == "eventType").unwrap();
        t["type"]["symbols"] = json!(["HEARTBEAT", "TASK_STARTED", "TASK_COMPLETED", "ERROR"]);
        t["type"].as_object_mut().unwrap().remove("default");
    });
    check_backward(&released(), &candidate).unwrap_err();
}

#[test]
fn a_newer_enum_symbol_reads_as_unknown_and_a_newer_field_is_dropped() {
    use apache_avro::types::Value as Avro;
    // a newer writer: one more EventType symbol and one more optional field
    let mut v: Value = serde_json::from_str(AgentEvent::SCHEMA).unwrap();
    let fields = v["fields"].as_array_mut().unwrap();
    let event_type = fields
        .iter_mut()
        .find(|f| f["name"] == "eventType")
        .unwrap();
    event_type["type"]["symbols"]
        .as_array_mut()
        .unwrap()
        .insert(0, json!("PAUSED"));
    fields.push(json!({"name": "priority", "type": ["null", "int"], "default": null}));
    let writer = CompiledSchema::parse("newer", &v.to_string()).unwrap();

    let record = Avro::Record(vec![
        ("eventId".into(), Avro::String("e-1".into())),
        ("agentId".into(), Avro::String("a-1".into())),
        ("timestamp".into(), Avro::TimestampMillis(1_795_771_815_123)),
        ("eventType".into(), Avro::Enum(0, "PAUSED".into())),
        ("agentType".into(), Avro::String("gap-analyzer".into())),
        ("status".into(), Avro::Enum(0, "HEALTHY".into())),
        ("version".into(), Avro::String("2.0.0".into())),
        ("message".into(), Avro::Union(0, Box::new(Avro::Null))),
        ("metadata".into(), Avro::String(r#"{"k":[1,2]}"#.into())),
        (
            "taskId".into(),
            Avro::Union(1, Box::new(Avro::String("t-1".into()))),
        ),
        ("priority".into(), Avro::Union(1, Box::new(Avro::Int(9)))),
    ]);
    let body = apache_avro::writer::datum::GenericDatumWriter::builder(writer.schema())
        .build()
        .unwrap()
        .write_value_to_vec(record)
        .unwrap();

    let e: AgentEvent = decode_body(&writer, &body).unwrap();
    assert_eq!(e.event_type, EventType::Unknown, "the enum default");
    assert_eq!(e.status, AgentStatus::Healthy);
    assert_eq!(e.metadata, json!({"k": [1, 2]}));
    assert_eq!(e.message, None);
    assert_eq!(e.task_id.as_deref(), Some("t-1"));
    assert_eq!(e.version, "2.0.0");
}
