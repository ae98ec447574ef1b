//! Every domain type round-trips through its own Avro schema, without a registry.

use dora_schema::*;
use serde_json::json;

fn agent_event() -> AgentEvent {
    AgentEvent {
        event_id: "2b0e8f2e-7f7e-4a53-9a39-9f3f1f2d9a10".into(),
        agent_id: "gap-analyzer-1".into(),
        timestamp: 1_764_000_000_123,
        event_type: EventType::TaskCompleted,
        agent_type: "gap-analyzer".into(),
        status: AgentStatus::Healthy,
        version: "1.0.0".into(),
        message: Some("done".into()),
        metadata: json!({"result_summary": {"gaps": 3, "score": 0.75, "articles": ["5", "6"], "ok": true, "none": null}}),
        task_id: Some("task-42".into()),
    }
}

fn roundtrip<T>(value: &T) -> T
where
    T: AvroRecord + serde::Serialize + serde::de::DeserializeOwned,
{
    let mut body = Vec::new();
    encode_body(value, &mut body).expect("encode");
    decode_body::<T>(T::compiled(), &body).expect("decode")
}

#[test]
fn agent_event_roundtrips() {
    let e = agent_event();
    assert_eq!(roundtrip(&e), e);
}
