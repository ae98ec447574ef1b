//! Unit tests of the gRPC service over in-memory sinks: stamping, refusals,
//! one deadline per call, and room held until the broker answered.

use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;

use super::*;
use crate::auth::TokenKey;
use crate::intake::PendingDelivery;

fn key() -> TokenKey {
    TokenKey::new(&[7; 32]).unwrap()
}

fn api_with(sink: SharedSink, key: &TokenKey, queue: SendQueue) -> GatewayApi {
    GatewayApi::new(
        sink,
        Authenticator::new(auth::AUDIENCE, Some(key.clone()), false),
        Limits::default(),
        queue,
        AgentDirectory::default(),
        CancellationToken::new(),
        CallLimits::default(),
    )
}

fn api(sink: Arc<CountingSink>, key: &TokenKey) -> GatewayApi {
    api_with(
        sink,
        key,
        SendQueue::new(8, 1 << 20, Duration::from_millis(50)),
    )
}

fn authed<T>(key: &TokenKey, agent: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    let t = auth::agent_token(key, agent, Duration::from_secs(60)).unwrap();
    r.metadata_mut()
        .insert("authorization", format!("Bearer {t}").parse().unwrap());
    r
}

fn heartbeat(agent: &str) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        agent_id: agent.into(),
        agent_type: "GAP_ANALYZER".into(),
        resource_usage: None,
    }
}

#[tokio::test]
async fn an_accepted_event_is_stamped_and_produced() {
    let key = key();
    let sink = Arc::new(CountingSink::default());
    let resp = api(sink.clone(), &key)
        .heartbeat(authed(&key, "a1", heartbeat("a1")))
        .await
        .unwrap();
    let events = sink.events.lock().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_id, resp.get_ref().event_id);
    assert_eq!(events[0].version, "1.0.0");
    assert_eq!(events[0].draft.event_type, "HEARTBEAT");
    assert!(uuid::Uuid::parse_str(&events[0].event_id).is_ok());
}

#[tokio::test]
async fn writing_for_another_agent_is_denied_and_nothing_is_produced() {
    let key = key();
    let sink = Arc::new(CountingSink::default());
    let err = api(sink.clone(), &key)
        .heartbeat(authed(&key, "a1", heartbeat("a2")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = api(sink.clone(), &key)
        .heartbeat(Request::new(heartbeat("a2")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(sink.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn invalid_fields_are_named_and_nothing_is_produced() {
    let key = key();
    let sink = Arc::new(CountingSink::default());
    let req = pb::PublishEventRequest {
        agent_id: "a1".into(),
        event_type: 77,
        agent_type: "X".into(),
        status: 1,
        ..Default::default()
    };
    let err = api(sink.clone(), &key)
        .publish_event(authed(&key, "a1", req))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("event_type"), "{}", err.message());
    assert!(sink.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn get_agent_reads_the_directory() {
    let key = key();
    let a = api(Arc::new(CountingSink::default()), &key);
    let err = a
        .get_agent(authed(
            &key,
            "a1",
            pb::GetAgentRequest {
                agent_id: "a1".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

/// A sink whose broker answers only when the test says so.
#[derive(Default)]
struct HeldSink {
    answers: Mutex<Vec<tokio::sync::oneshot::Sender<()>>>,
}

impl EventSink for HeldSink {
    fn enqueue(&self, _event: StampedEvent) -> BoxFuture<'_, Result<PendingDelivery, SinkError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.answers.lock().unwrap().push(tx);
        Box::pin(async move {
            let pending: PendingDelivery = Box::pin(async move {
                rx.await
                    .map_err(|_| SinkError::Unavailable("gone".into()))?;
                Ok(Delivered {
                    partition: 0,
                    offset: 0,
                })
            });
            Ok(pending)
        })
    }
}

fn with_deadline<T>(mut r: Request<T>, timeout: &str) -> Request<T> {
    r.metadata_mut()
        .insert("grpc-timeout", timeout.parse().unwrap());
    r
}

#[tokio::test(start_paused = true)]
async fn a_call_waits_at_most_its_deadline_for_room_and_ack_together() {
    let key = key();
    let sink = Arc::new(HeldSink::default());
    let queue = SendQueue::new(1, 1 << 20, Duration::from_secs(60));
    let api = api_with(sink.clone(), &key, queue.clone());
    // The one slot is taken by an event whose ack comes after 800 ms.
    let first = tokio::spawn({
        let api = api.clone();
        let req = authed(&key, "a1", heartbeat("a1"));
        async move { api.heartbeat(req).await }
    });
    tokio::task::yield_now().await;
    let started = Instant::now();
    let second = tokio::spawn({
        let api = api.clone();
        let req = with_deadline(authed(&key, "a1", heartbeat("a1")), "1000m");
        async move { api.heartbeat(req).await }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    sink.answers.lock().unwrap().remove(0).send(()).unwrap();
    first.await.unwrap().unwrap();
    // The second got the slot at 800 ms; its ack never comes. It must give up
    // at its deadline (1 s after it started), not a full second later.
    let err = second.await.unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    let waited = started.elapsed();
    assert!(
        waited <= Duration::from_millis(1_001),
        "waited {waited:?} for a 1 s deadline"
    );
    // Its event is still queued in the producer: its room is still taken.
    assert_eq!(
        queue.in_flight(),
        1,
        "room freed while the record is queued"
    );
    sink.answers.lock().unwrap().remove(0).send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(1), async {
        while queue.in_flight() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("room freed once the broker answered");
}
