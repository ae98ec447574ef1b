//! gRPC API types generated from `proto/*.proto` (tonic + prost).
