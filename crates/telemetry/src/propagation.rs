//! W3C trace context (`traceparent`, `tracestate`) in and out of message
//! headers, so a consumer's processing span is a child of the producer's span.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Header carrying the W3C trace parent.
pub const TRACEPARENT: &str = "traceparent";
/// Header carrying the W3C trace state.
pub const TRACESTATE: &str = "tracestate";

/// The trace context headers of `span` as `(name, value)` pairs; empty when the
/// span is not recorded by an OpenTelemetry layer.
pub fn headers_of(span: &tracing::Span) -> Vec<(&'static str, String)> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut out = Pairs(Vec::new());
    TraceContextPropagator::new().inject_context(&cx, &mut out);
    out.0
}

/// The trace context headers of the current span (see [`headers_of`]).
pub fn current_headers() -> Vec<(&'static str, String)> {
    headers_of(&tracing::Span::current())
}

/// Makes `span` a child of the remote context in `traceparent`/`tracestate`.
/// Returns false (and leaves `span` alone) when there is no valid context.
pub fn set_parent(
    span: &tracing::Span,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> bool {
    let Some(traceparent) = traceparent else {
        return false;
    };
    let carrier = Carrier {
        traceparent,
        tracestate,
    };
    let cx = TraceContextPropagator::new().extract(&carrier);
    if !cx.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(cx).is_ok()
}

/// The trace id of `span` as 32 lowercase hex digits, when it is recorded.
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

struct Pairs(Vec<(&'static str, String)>);

impl Injector for Pairs {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        let key = match key {
            TRACEPARENT => TRACEPARENT,
            TRACESTATE => TRACESTATE,
            _ => return,
        };
        self.0.push((key, value));
    }
}

struct Carrier<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.traceparent),
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }
    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::prelude::*;

    #[test]
    fn child_span_inherits_the_remote_trace_id() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry().with(crate::otel_layer(&provider, "t"));
        tracing::subscriber::with_default(subscriber, || {
            let producer = tracing::info_span!("produce");
            let headers = headers_of(&producer);
            assert_eq!(headers.len(), 1, "{headers:?}");
            assert_eq!(headers[0].0, TRACEPARENT);
            let consumer = tracing::info_span!("process");
            assert!(set_parent(&consumer, Some(&headers[0].1), None));
            assert_eq!(trace_id_of(&consumer), trace_id_of(&producer));
            assert!(!set_parent(
                &tracing::info_span!("x"),
                Some("garbage"),
                None
            ));
        });
    }
}
