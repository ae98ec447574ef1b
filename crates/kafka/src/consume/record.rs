//! The record a handler sees (plain bytes, headers, position) and the span a
//! record is processed in (a polled message becomes one in `inspect::record_of`).

/// One header of a consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// Header name.
    pub key: String,
    /// Header value (`None` for a null value).
    pub value: Option<Vec<u8>>,
}

/// A consumed record, as the handler sees it: raw bytes, decoded by the
/// handler (usually with `dora_schema::Codec::decode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes (`None` for a tombstone).
    pub payload: Option<Vec<u8>>,
    /// Headers in order.
    pub headers: Vec<RecordHeader>,
    /// Record timestamp, epoch milliseconds.
    pub timestamp: Option<i64>,
}

impl Record {
    /// The value bytes (empty for a tombstone).
    pub fn payload(&self) -> &[u8] {
        self.payload.as_deref().unwrap_or_default()
    }

    /// The key as UTF-8, when it is.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value.as_deref())
    }

    /// The first header named `name`, as UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The span `self` is processed in: topic, partition, offset and key (never
    /// the payload), a child of the producer's span (W3C `traceparent` header).
    pub(crate) fn span(&self, name: &'static str) -> tracing::Span {
        let span = match name {
            "kafka.replay" => tracing::info_span!(
                "kafka.replay",
                otel.kind = "consumer",
                topic = %self.topic,
                partition = self.partition,
                offset = self.offset,
                key = self.key_str().unwrap_or_default(),
            ),
            _ => tracing::info_span!(
                "kafka.process",
                otel.kind = "consumer",
                topic = %self.topic,
                partition = self.partition,
                offset = self.offset,
                key = self.key_str().unwrap_or_default(),
            ),
        };
        dora_telemetry::propagation::set_parent(
            &span,
            self.header_str(dora_telemetry::propagation::TRACEPARENT),
            self.header_str(dora_telemetry::propagation::TRACESTATE),
        );
        span
    }
}
