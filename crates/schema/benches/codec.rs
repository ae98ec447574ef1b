//! Criterion benchmark of Avro vs serde_json for AgentEvent (filled in below).
fn main() {}
