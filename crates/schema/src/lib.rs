//! Every Kafka value of the platform: Avro contracts, Confluent wire format,
//! schema registry, and the seed's legacy JSON. The only crate that touches Avro
//! and the registry.
