//! Drift check between the Rust types and `schemas/*.avsc`: same fields in the
//! same order, the same nullable fields, the same enum symbols in the same
//! order, and samples of every type encode with their schema.

mod common;

use dora_schema::*;
use serde::Serialize;
use serde_json::Value;

struct AvscField {
    name: String,
    nullable: bool,
}

fn avsc_fields(schema: &str) -> Vec<AvscField> {
    let v: Value = serde_json::from_str(schema).unwrap();
    v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| AvscField {
            name: f["name"].as_str().unwrap().to_string(),
            nullable: f["type"]
                .as_array()
                .is_some_and(|u| u.iter().any(|t| t == "null")),
        })
        .collect()
}

/// Every named enum in a schema: (name, symbols).
fn avsc_enums(v: &Value, out: &mut Vec<(String, Vec<String>)>) {
    match v {
        Value::Object(o) => {
            if o.get("type") == Some(&Value::from("enum")) {
                let symbols = o["symbols"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect();
                out.push((o["name"].as_str().unwrap().to_string(), symbols));
                assert_eq!(
                    o.get("default"),
                    Some(&Value::from("UNKNOWN")),
                    "enum {} needs default UNKNOWN",
                    o["name"]
                );
            }
            o.values().for_each(|x| avsc_enums(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| avsc_enums(x, out)),
        _ => {}
    }
}

fn rust_symbols(name: &str) -> Vec<String> {
    fn names<T: Copy + std::fmt::Display>(all: &[T]) -> Vec<String> {
        all.iter().map(|v| v.to_string()).collect()
    }
    match name {
        "EventType" => names(EventType::ALL),
        "AgentStatus" => names(AgentStatus::ALL),
        "ReportType" => names(ReportType::ALL),
        "RiskLevel" => names(RiskLevel::ALL),
        "RiskAlertState" => names(RiskAlertState::ALL),
        other => panic!("schema has enum {other} that no Rust type mirrors"),
    }
}

fn check<T: AvroRecord + Serialize>(full: &T, minimal: &T) {
    let fields = avsc_fields(T::SCHEMA);
    let full_json = serde_json::to_value(full).unwrap();
    let rust_names: Vec<&String> = full_json.as_object().unwrap().keys().collect();
    let avsc_names: Vec<&String> = fields.iter().map(|f| &f.name).collect();
    assert_eq!(
        rust_names,
        avsc_names,
        "{}: field names/order differ between Rust and .avsc",
        T::NAME
    );

    let nulls_in_full: Vec<&String> = full_json
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.is_null())
        .map(|(k, _)| k)
        .collect();
    assert!(
        nulls_in_full.is_empty(),
        "{}: the full sample must set every optional field: {nulls_in_full:?}",
        T::NAME
    );
    let minimal_json = serde_json::to_value(minimal).unwrap();
    let rust_optional: Vec<&String> = minimal_json
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.is_null())
        .map(|(k, _)| k)
        .collect();
    let avsc_optional: Vec<&String> = fields
        .iter()
        .filter(|f| f.nullable)
        .map(|f| &f.name)
        .collect();
    assert_eq!(
        rust_optional,
        avsc_optional,
        "{}: Option fields differ from nullable .avsc fields",
        T::NAME
    );

    let mut enums = Vec::new();
    avsc_enums(&serde_json::from_str(T::SCHEMA).unwrap(), &mut enums);
    for (name, symbols) in enums {
        assert_eq!(
            rust_symbols(&name),
            symbols,
            "{}: enum {name} symbols differ",
            T::NAME
        );
    }

    for sample in [full, minimal] {
        let mut body = Vec::new();
        encode_body(sample, &mut body)
            .unwrap_or_else(|e| panic!("{}: sample does not fit the schema: {e}", T::NAME));
    }
}

#[test]
fn agent_event() {
    check(&common::agent_event(), &common::agent_event_minimal());
}

#[test]
fn agent_health() {
    check(&common::agent_health(), &common::agent_health_minimal());
}

#[test]
fn compliance_report() {
    check(
        &common::compliance_report(),
        &common::compliance_report_minimal(),
    );
}

#[test]
fn audit_event() {
    check(&common::audit_event(), &common::audit_event_minimal());
}

#[test]
fn risk_alert() {
    check(&common::risk_alert(), &common::risk_alert_minimal());
}

#[test]
fn dead_letter() {
    check(&common::dead_letter(), &common::dead_letter_minimal());
    // the nested header record too
    let v: Value = serde_json::from_str(DeadLetter::SCHEMA).unwrap();
    let header = &v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "originalHeaders")
        .unwrap()["type"]["items"];
    let names: Vec<&str> = header["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let rust = serde_json::to_value(&common::dead_letter().original_headers[0]).unwrap();
    assert_eq!(rust.as_object().unwrap().keys().collect::<Vec<_>>(), names);
}

#[test]
fn record_names_match_schemas() {
    fn name_of<T: AvroRecord>() -> String {
        let v: Value = serde_json::from_str(T::SCHEMA).unwrap();
        format!(
            "{}.{}",
            v["namespace"].as_str().unwrap(),
            v["name"].as_str().unwrap()
        )
    }
    assert_eq!(name_of::<AgentEvent>(), AgentEvent::NAME);
    assert_eq!(name_of::<AgentHealth>(), AgentHealth::NAME);
    assert_eq!(name_of::<ComplianceReport>(), ComplianceReport::NAME);
    assert_eq!(name_of::<AuditEvent>(), AuditEvent::NAME);
    assert_eq!(name_of::<RiskAlert>(), RiskAlert::NAME);
    assert_eq!(name_of::<DeadLetter>(), DeadLetter::NAME);
}
