//! Criterion benchmark: encode and decode of an AgentEvent (the seed's
//! send_task_completion payload) with a warm schema cache, Avro through the
//! codec side by side with serde_json on the same struct.
//!
//! Run: `eval "$(bash deploy/local/stack.sh env)"; cargo bench -p dora-schema --bench codec`
//! (the codec rows need the registry once, for warm-up; without it only the
//! registry-free body rows run).

use std::hint::black_box;

use criterion::{criterion_main, Criterion, Throughput};
use dora_schema::*;

fn sample() -> AgentEvent {
    decode_json(include_bytes!(
        "../tests/fixtures/seed/send_task_completion.json"
    ))
    .expect("seed fixture decodes")
}

/// A newer writer of AgentEvent (one added optional field), for the
/// schema-resolution path a consumer takes during a rolling upgrade.
fn newer_writer() -> (CompiledSchema, Vec<u8>) {
    let text = include_str!("../tests/fixtures/AgentEventV2.avsc");
    let writer = CompiledSchema::parse("AgentEventV2", text).unwrap();
    let mut value: serde_json::Value = serde_json::to_value(sample()).unwrap();
    value["metadata"] = serde_json::Value::String(value["metadata"].to_string());
    value["priority"] = serde_json::json!({"int": 3});
    let avro = value_to_avro(&value);
    let resolved = avro.resolve(writer.schema()).unwrap();
    let body = apache_avro::writer::datum::GenericDatumWriter::builder(writer.schema())
        .build()
        .unwrap()
        .write_value_to_vec(resolved)
        .unwrap();
    (writer, body)
}

/// JSON (with Avro-JSON union wrappers) to a generic Avro value.
fn value_to_avro(v: &serde_json::Value) -> apache_avro::types::Value {
    use apache_avro::types::Value as A;
    match v {
        serde_json::Value::Null => A::Null,
        serde_json::Value::Bool(b) => A::Boolean(*b),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(A::Long)
            .unwrap_or_else(|| A::Double(n.as_f64().unwrap())),
        serde_json::Value::String(s) => A::String(s.clone()),
        serde_json::Value::Array(a) => A::Array(a.iter().map(value_to_avro).collect()),
        serde_json::Value::Object(o) if o.len() == 1 && o.contains_key("int") => {
            A::Int(o["int"].as_i64().unwrap() as i32)
        }
        serde_json::Value::Object(o) => A::Record(
            o.iter()
                .map(|(k, v)| (k.clone(), value_to_avro(v)))
                .collect(),
        ),
    }
}

fn bench(c: &mut Criterion) {
    let event = sample();
    let json = serde_json::to_vec(&event).unwrap();
    let mut body = Vec::new();
    encode_body(&event, &mut body).unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url =
        std::env::var("DORA_REGISTRY__URL").unwrap_or_else(|_| DEFAULT_REGISTRY_URL.to_string());
    let codec = Codec::new(&RegistrySettings {
        url,
        ..Default::default()
    })
    .unwrap();
    let topic = format!("schema-bench-{}", std::process::id());
    // warm-up: registers the schema (id cached) and decodes once (writer schema cached)
    let framed = rt.block_on(async {
        let framed = codec.encode(&topic, &event).await.ok()?;
        codec.decode::<AgentEvent>(&topic, &framed).await.ok()?;
        Some(framed)
    });
    if framed.is_none() {
        eprintln!("schema registry unreachable: codec rows skipped, body rows only");
    }

    let mut g = c.benchmark_group("agent_event/encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("serde_json", |b| {
        b.iter(|| serde_json::to_vec(black_box(&event)).unwrap())
    });
    g.bench_function("avro_body", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(256);
            encode_body(black_box(&event), &mut out).unwrap();
            out
        })
    });
    if framed.is_some() {
        g.bench_function("avro_codec", |b| {
            b.iter(|| {
                rt.block_on(codec.encode(black_box(&topic), black_box(&event)))
                    .unwrap()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("agent_event/decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("serde_json", |b| {
        b.iter(|| serde_json::from_slice::<AgentEvent>(black_box(&json)).unwrap())
    });
    g.bench_function("legacy_json", |b| {
        b.iter(|| decode_json::<AgentEvent>(black_box(&json)).unwrap())
    });
    g.bench_function("avro_body", |b| {
        b.iter(|| decode_body::<AgentEvent>(AgentEvent::compiled(), black_box(&body)).unwrap())
    });
    if let Some(framed) = &framed {
        g.bench_function("avro_codec", |b| {
            b.iter(|| {
                rt.block_on(codec.decode::<AgentEvent>(black_box(&topic), black_box(framed)))
                    .unwrap()
            })
        });
    }
    let (newer, newer_body) = newer_writer();
    g.bench_function("avro_body_newer_writer", |b| {
        b.iter(|| decode_body::<AgentEvent>(&newer, black_box(&newer_body)).unwrap())
    });
    g.finish();
    eprintln!(
        "sizes: json {} bytes, avro {} bytes (+5 framing)",
        json.len(),
        body.len()
    );

    // the same event without free-form metadata: the cost of the typed fields alone
    let lean = AgentEvent {
        metadata: serde_json::json!({}),
        ..event
    };
    let lean_json = serde_json::to_vec(&lean).unwrap();
    let mut lean_body = Vec::new();
    encode_body(&lean, &mut lean_body).unwrap();
    let mut g = c.benchmark_group("agent_event_without_metadata/decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("serde_json", |b| {
        b.iter(|| serde_json::from_slice::<AgentEvent>(black_box(&lean_json)).unwrap())
    });
    g.bench_function("avro_body", |b| {
        b.iter(|| decode_body::<AgentEvent>(AgentEvent::compiled(), black_box(&lean_body)).unwrap())
    });
    g.finish();
}

/// Deterministic cost per operation, for a loaded machine where wall-clock
/// numbers are noisy: `DORA_BENCH_COUNT=10000 valgrind --tool=callgrind
/// --collect-atstart=no --toggle-collect='codec::count_*' <bench binary>`, then
/// `callgrind_annotate --inclusive=yes` shows each `count_*` function's
/// instructions; divide by the count. Runs without the registry (body level).
fn count_instructions(n: usize) {
    let event = sample();
    let json = serde_json::to_vec(&event).unwrap();
    let mut body = Vec::new();
    encode_body(&event, &mut body).unwrap();
    let lean = AgentEvent {
        metadata: serde_json::json!({}),
        ..event.clone()
    };
    let lean_json = serde_json::to_vec(&lean).unwrap();
    let mut lean_body = Vec::new();
    encode_body(&lean, &mut lean_body).unwrap();
    // warm the lazily built readers/writers outside the measured functions
    decode_body::<AgentEvent>(AgentEvent::compiled(), &body).unwrap();

    count_encode_json(&event, n);
    count_encode_avro(&event, n);
    count_decode_json(&json, n);
    count_decode_avro(&body, n);
    count_decode_json_without_metadata(&lean_json, n);
    count_decode_avro_without_metadata(&lean_body, n);
    let (newer, newer_body) = newer_writer();
    count_decode_avro_newer_writer(&newer, &newer_body, n);
}

#[inline(never)]
fn count_decode_avro_newer_writer(writer: &CompiledSchema, body: &[u8], n: usize) {
    for _ in 0..n {
        black_box(decode_body::<AgentEvent>(writer, black_box(body)).unwrap());
    }
}

#[inline(never)]
fn count_encode_json(event: &AgentEvent, n: usize) {
    for _ in 0..n {
        black_box(serde_json::to_vec(black_box(event)).unwrap());
    }
}

#[inline(never)]
fn count_encode_avro(event: &AgentEvent, n: usize) {
    for _ in 0..n {
        let mut out = Vec::with_capacity(256);
        encode_body(black_box(event), &mut out).unwrap();
        black_box(out);
    }
}

#[inline(never)]
fn count_decode_json(json: &[u8], n: usize) {
    for _ in 0..n {
        black_box(serde_json::from_slice::<AgentEvent>(black_box(json)).unwrap());
    }
}

#[inline(never)]
fn count_decode_avro(body: &[u8], n: usize) {
    for _ in 0..n {
        black_box(decode_body::<AgentEvent>(AgentEvent::compiled(), black_box(body)).unwrap());
    }
}

#[inline(never)]
fn count_decode_json_without_metadata(json: &[u8], n: usize) {
    for _ in 0..n {
        black_box(serde_json::from_slice::<AgentEvent>(black_box(json)).unwrap());
    }
}

#[inline(never)]
fn count_decode_avro_without_metadata(body: &[u8], n: usize) {
    for _ in 0..n {
        black_box(decode_body::<AgentEvent>(AgentEvent::compiled(), black_box(body)).unwrap());
    }
}

/// Runs the benchmarks with criterion's command-line configuration, or the
/// instruction-count loops when `DORA_BENCH_COUNT` is set.
fn benches() {
    if let Some(n) = std::env::var("DORA_BENCH_COUNT")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        count_instructions(n);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
}

criterion_main!(benches);
