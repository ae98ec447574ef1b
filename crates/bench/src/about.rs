//! What each benchmark measures and against what, for the report.

/// The runtime's throughput bench.
pub const RUNTIME: &str = "The platform's `Producer` and consume loop against bare rdkafka written as its documentation \
recommends (a `BaseProducer` polled by its own thread; a `BaseConsumer` loop storing offsets and committing \
asynchronously) and against Kafka's own `kafka-producer-perf-test` / `kafka-consumer-perf-test` from the stack's jars. \
Same records (JSON agent events of one size; the perf tool picks among the same payloads, without keys), acks=all, \
idempotence, snappy, batch.size 16384, linger.ms 10, 6 partitions. Producer rates run from the first send to the last \
acknowledgement, after one untimed record (connection and producer id); latency is send-to-ack at full speed, so it \
measures how long records queue in each client's buffer. Consumer rates run from subscribing to the last record, \
group join included, each record decoded (the perf tool decodes nothing). \
Why earlier versions of this bench measured the runtime faster than its baselines (1.34–1.67× producer, \
2× consume), and what was wrong with those baselines: the module documentation of \
`crates/kafka/benches/throughput/bare.rs`. \
Alone: `cargo bench -p dora-kafka --bench throughput`.";

/// agent-gateway's benchmark.
pub const GATEWAY: &str = "agent-gateway as a real process: simulated agents stream events over gRPC with bearer tokens \
(`agent-bench`, 16 streams, 512 events in flight each); the gateway validates, encodes Avro and answers after the broker \
acknowledged. Baselines: the platform `Producer` writing the same Avro records without the gateway, \
`kafka-producer-perf-test` with records of the same size (acks=all, idempotence, snappy, linger.ms 5 as the gateway's \
producer), and the seed's own Python client: its `AgentEventProducer` unchanged on kafka-python with the seed's settings \
(JSON, max_in_flight 1), one process. Latency is from send to the answer (acknowledgement). \
Alone: start the gateway, then `cargo run --release -p agent-gateway --bin agent-bench -- --help`.";

/// The schema codec's criterion benchmark.
pub const CODEC: &str = "Encode and decode of the seed's task-completion `AgentEvent` with a warm schema cache: the Avro \
body, the full codec (Confluent framing, registry id cached) and a newer writer's schema resolved, against serde_json \
on the same struct; criterion's mean time per operation as operations per second. \
Alone: `cargo bench -p dora-schema --bench codec`.";

/// A service's own benchmark command.
pub fn service(name: &str) -> String {
    match crate::run::bench_command(name) {
        Some(cmd) => format!(
            "`{cmd}`, the service's own benchmark command (its baselines are its own; the seed's \
             ComplianceReportProducer is added where the service takes reports). \
             Alone: `cargo run --release -p {name} --bin {cmd}`."
        ),
        None => format!("The benchmark command of {name} (`services/{name}/src/bin/<name>-bench.rs`)."),
    }
}
