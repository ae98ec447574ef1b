//! gRPC API types generated from `proto/*.proto` (tonic + prost), the encoded
//! descriptor set for server reflection, and what every gRPC service shares:
//! the codec, the serving sequence (health, reflection, drain) and the field
//! checks at the edge.

pub mod codec;
pub mod serve;
pub mod validate;

/// The agent-gateway API, package `dora.agent.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod agent {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("dora.agent.v1");
    }
}

/// The report-ingest API, package `dora.report.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod report {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("dora.report.v1");
    }
}

/// Encoded `FileDescriptorSet` of every `.proto` in `proto/`, for the gRPC
/// reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
