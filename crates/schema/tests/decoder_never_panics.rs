//! Property test: decoding arbitrary bytes never panics — raw garbage, and
//! valid encodings with bytes flipped, cut or inserted — on every decode path
//! (framing, legacy JSON, Avro with the reader's own schema, Avro with schema
//! resolution, and the registry-backed codec). Bounded: PROPTEST_CASES
//! (default 1024 per property) keeps it to seconds in CI.

mod common;

use std::sync::OnceLock;

use dora_schema::*;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A newer AgentEvent writer schema, to exercise the resolution path.
fn newer_writer() -> &'static CompiledSchema {
    static C: OnceLock<CompiledSchema> = OnceLock::new();
    C.get_or_init(|| {
        CompiledSchema::parse("v2", include_str!("fixtures/AgentEventV2.avsc")).unwrap()
    })
}

fn decode_everything(bytes: &[u8]) {
    let _ = framing(bytes);
    fn both<T: AvroRecord + DeserializeOwned>(bytes: &[u8]) {
        let _ = decode_json::<T>(bytes);
        let _ = decode_body::<T>(T::compiled(), bytes);
    }
    both::<AgentEvent>(bytes);
    both::<AgentHealth>(bytes);
    both::<ComplianceReport>(bytes);
    both::<AuditEvent>(bytes);
    both::<RiskAlert>(bytes);
    both::<DeadLetter>(bytes);
    let _ = decode_body::<AgentEvent>(newer_writer(), bytes);
    let _ = decode_body::<AgentEvent>(RiskAlert::compiled(), bytes);
}

fn encoded<T: AvroRecord + Serialize>(value: &T) -> Vec<u8> {
    let mut body = Vec::new();
    encode_body(value, &mut body).unwrap();
    body
}

fn valid_bodies() -> Vec<Vec<u8>> {
    vec![
        encoded(&common::agent_event()),
        encoded(&common::agent_event_minimal()),
        encoded(&common::agent_health()),
        encoded(&common::compliance_report()),
        encoded(&common::audit_event()),
        encoded(&common::risk_alert()),
        encoded(&common::dead_letter()),
        serde_json::to_vec(&common::agent_event()).unwrap(),
        serde_json::to_vec(&common::dead_letter()).unwrap(),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Cut),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..12)
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(i, x) => {
                let i = i % bytes.len();
                bytes[i] ^= x;
            }
            Mutation::Cut(i) => bytes.truncate(i % bytes.len()),
            Mutation::Insert(i, b) => {
                let i = i % bytes.len();
                bytes.splice(i..i, b.iter().copied());
            }
        }
    }
    bytes
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1024);
    ProptestConfig {
        cases,
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
    }

    #[test]
    fn mutated_valid_values(which in 0usize..9, mutations in proptest::collection::vec(mutation(), 1..6)) {
        let bytes = apply(valid_bodies()[which].clone(), &mutations);
        decode_everything(&bytes);
    }
}

/// Arbitrary bytes, and arbitrary bytes behind a Confluent header (magic byte
/// and schema id), which plain random bytes would almost never start with.
fn codec_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..48)).prop_map(|(id, body)| {
            let mut v = vec![MAGIC_BYTE];
            v.extend_from_slice(&id.to_be_bytes());
            v.extend(body);
            v
        }),
    ]
}

#[test]
fn codec_decode_never_panics_and_retries_only_what_needs_the_registry() {
    // The codec's own path with the registry unreachable: a framed value
    // needs its writer schema from the registry, so its failure is retryable
    // (never dead-letter a record because the registry is down); anything
    // else is decided by its bytes alone and is never retried.
    let codec = Codec::new(&RegistrySettings {
        url: "http://127.0.0.1:9".into(),
        ..Default::default()
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 256,
        ..config()
    });
    runner
        .run(&codec_input(), |bytes| {
            let needs_registry = bytes.len() >= HEADER_LEN && bytes[0] == MAGIC_BYTE;
            match rt.block_on(codec.decode::<AgentEvent>("agent-events", &bytes)) {
                Ok(_) => prop_assert!(!needs_registry, "decoded without the registry"),
                Err(e) if needs_registry => {
                    prop_assert!(e.is_retryable(), "framed value not retried: {e:?}");
                    prop_assert_eq!(e.kind(), "RegistryUnavailable");
                }
                Err(e) => prop_assert!(!e.is_retryable(), "bad bytes retried: {e:?}"),
            }
            Ok(())
        })
        .unwrap();
}
