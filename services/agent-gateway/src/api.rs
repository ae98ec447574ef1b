//! The gRPC service: authenticate, validate, take a send-queue slot, hand the
//! event to the [`EventSink`] and answer once the broker acknowledged it; and
//! the read side (GetAgent, ListAgents, WatchAgents) over the
//! [`AgentDirectory`].

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dora_proto::agent::v1 as pb;
use dora_proto::agent::v1::agent_gateway_server::AgentGateway;
use futures::{Stream, StreamExt};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{self, Authenticator, Principal, Role};
use crate::directory::{AgentDirectory, AgentFilter};
use crate::health::{AgentState, HealthStatus};
use crate::metrics;
use crate::queue::{call_deadline, SendQueue};
use crate::validation::{self, EventDraft, Limits};

/// The version the gateway stamps on every event, as the seed does.
pub const EVENT_VERSION: &str = "1.0.0";

/// An event ready to be produced: the draft plus what the gateway fills in.
#[derive(Debug, Clone, PartialEq)]
pub struct StampedEvent {
    /// `eventId`: a random UUID.
    pub event_id: String,
    /// `timestamp`: epoch ms at the gateway.
    pub timestamp: i64,
    /// `version`: [`EVENT_VERSION`].
    pub version: &'static str,
    /// The validated fields.
    pub draft: EventDraft,
}

impl StampedEvent {
    /// Stamps a draft now.
    pub fn stamp(draft: EventDraft) -> Self {
        Self {
            event_id: uuid::Uuid::new_v4().to_string(),
            timestamp: chrono::Utc::now().timestamp_millis(),
            version: EVENT_VERSION,
            draft,
        }
    }
}

/// Where the broker stored an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Why an event could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The broker or registry is unavailable or timed out; the agent may retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The producer's own queue is full.
    #[error("producer queue full")]
    QueueFull,
    /// The event cannot be encoded or was refused for good.
    #[error("rejected: {0}")]
    Rejected(String),
}

impl From<SinkError> for Status {
    fn from(e: SinkError) -> Self {
        match e {
            SinkError::Unavailable(m) => Status::unavailable(m),
            SinkError::QueueFull => Status::resource_exhausted("producer queue full; retry later"),
            SinkError::Rejected(m) => Status::internal(m),
        }
    }
}

/// Produces agent events and resolves once the broker acknowledged them.
pub trait EventSink: Send + Sync + 'static {
    /// Produces `event` keyed by its agent id.
    fn publish(
        &self,
        event: StampedEvent,
    ) -> futures::future::BoxFuture<'_, Result<Delivered, SinkError>>;
}

/// The gRPC service of agent-gateway.
#[derive(Clone)]
pub struct GatewayApi {
    inner: Arc<Inner>,
}

struct Inner {
    sink: Arc<dyn EventSink>,
    auth: Authenticator,
    limits: Limits,
    queue: SendQueue,
    directory: AgentDirectory,
    shutdown: CancellationToken,
    stream_window: usize,
}

impl GatewayApi {
    /// A service producing through `sink` and reading health from `directory`.
    /// `shutdown` ends open event streams after their in-flight events were acked.
    pub fn new(
        sink: Arc<dyn EventSink>,
        auth: Authenticator,
        limits: Limits,
        queue: SendQueue,
        directory: AgentDirectory,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                sink,
                auth,
                limits,
                queue,
                directory,
                shutdown,
                stream_window: 512,
            }),
        }
    }
}

impl Inner {
    /// Authorize, take a slot, produce, answer.
    async fn write(
        &self,
        caller: &Principal,
        draft: Result<EventDraft, validation::Invalid>,
        wait: Option<Duration>,
    ) -> Result<pb::PublishEventResponse, Status> {
        let draft = draft.inspect_err(|_| metrics::rejected("invalid_argument"))?;
        caller
            .require_self("agent_id", &draft.agent_id)
            .inspect_err(|_| metrics::rejected("permission_denied"))?;
        let slot = self
            .queue
            .take(1, wait)
            .await
            .inspect_err(|_| metrics::rejected("resource_exhausted"))?;
        let event = StampedEvent::stamp(draft);
        let (event_id, timestamp, event_type) = (
            event.event_id.clone(),
            event.timestamp,
            event.draft.event_type,
        );
        let delivered = match wait {
            Some(w) => tokio::time::timeout(w, self.sink.publish(event))
                .await
                .map_err(|_| {
                    Status::deadline_exceeded(
                        "broker did not acknowledge within the call's deadline",
                    )
                })?,
            None => self.sink.publish(event).await,
        };
        drop(slot);
        let delivered = delivered.inspect_err(|_| metrics::rejected("unavailable"))?;
        metrics::accepted(event_type);
        Ok(pb::PublishEventResponse {
            event_id,
            timestamp,
            partition: delivered.partition,
            offset: delivered.offset,
        })
    }

    fn identify<T>(&self, req: &Request<T>) -> Result<Principal, Status> {
        self.auth
            .identify(req)
            .inspect_err(|_| metrics::rejected("unauthenticated"))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AgentGateway for GatewayApi {
    async fn publish_event(
        &self,
        req: Request<pb::PublishEventRequest>,
    ) -> Result<Response<pb::PublishEventResponse>, Status> {
        let id = self.inner.identify(&req)?;
        let wait = call_deadline(req.metadata());
        let draft = validation::publish_request(req.get_ref(), &self.inner.limits);
        self.inner.write(&id, draft, wait).await.map(Response::new)
    }

    type StreamEventsStream = BoxStream<pb::EventAck>;

    async fn stream_events(
        &self,
        req: Request<Streaming<pb::PublishEventRequest>>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let id = self.inner.identify(&req)?;
        let mut inbound = req.into_inner();
        let inner = self.inner.clone();
        // Acks go out in request order: each event's work is a task whose handle
        // is queued in order; the response stream awaits the handles in turn.
        let (handles_tx, handles_rx) = mpsc::channel(inner.stream_window);
        tokio::spawn(async move {
            let mut sequence = 0u64;
            // After shutdown was asked for, events still arriving are answered
            // UNAVAILABLE (not produced) so the agent stops and resends elsewhere;
            // the stream ends when the agent closes its side, or after a grace period.
            let mut draining_until: Option<tokio::time::Instant> = None;
            loop {
                let next = match draining_until {
                    None => tokio::select! {
                        _ = inner.shutdown.cancelled() => {
                            draining_until = Some(tokio::time::Instant::now() + STREAM_DRAIN_GRACE);
                            continue;
                        }
                        next = inbound.next() => next,
                    },
                    Some(until) => tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        next = inbound.next() => next,
                    },
                };
                let request = match next {
                    Some(Ok(r)) => r,
                    Some(Err(status)) => {
                        tracing::debug!(%status, "event stream ended by the client");
                        break;
                    }
                    None => break,
                };
                let seq = sequence;
                sequence += 1;
                let handle = if draining_until.is_some() {
                    tokio::spawn(async move {
                        rejected_ack(
                            seq,
                            &Status::unavailable(
                                "gateway is shutting down; send this event again elsewhere",
                            ),
                        )
                    })
                } else {
                    let inner2 = inner.clone();
                    let id = id.clone();
                    tokio::spawn(async move {
                        let draft = validation::publish_request(&request, &inner2.limits);
                        match inner2.write(&id, draft, None).await {
                            Ok(accepted) => pb::EventAck {
                                sequence: seq,
                                accepted: Some(accepted),
                                error_code: 0,
                                error_message: String::new(),
                            },
                            Err(status) => rejected_ack(seq, &status),
                        }
                    })
                };
                if handles_tx.send(handle).await.is_err() {
                    break;
                }
            }
        });
        let acks = ReceiverStream::new(handles_rx).then(|h| async move {
            h.await
                .map_err(|e| Status::internal(format!("event task failed: {e}")))
        });
        Ok(Response::new(Box::pin(acks)))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::PublishEventResponse>, Status> {
        let id = self.inner.identify(&req)?;
        let wait = call_deadline(req.metadata());
        let draft = validation::heartbeat_request(req.get_ref(), &self.inner.limits);
        self.inner.write(&id, draft, wait).await.map(Response::new)
    }

    async fn complete_task(
        &self,
        req: Request<pb::CompleteTaskRequest>,
    ) -> Result<Response<pb::PublishEventResponse>, Status> {
        let id = self.inner.identify(&req)?;
        let wait = call_deadline(req.metadata());
        let draft = validation::complete_task_request(req.get_ref(), &self.inner.limits);
        self.inner.write(&id, draft, wait).await.map(Response::new)
    }

    async fn report_error(
        &self,
        req: Request<pb::ReportErrorRequest>,
    ) -> Result<Response<pb::PublishEventResponse>, Status> {
        let id = self.inner.identify(&req)?;
        let wait = call_deadline(req.metadata());
        let draft = validation::report_error_request(req.get_ref(), &self.inner.limits);
        self.inner.write(&id, draft, wait).await.map(Response::new)
    }

    async fn get_agent(
        &self,
        req: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::AgentHealth>, Status> {
        let caller = self.inner.identify(&req)?;
        let agent_id = &req.get_ref().agent_id;
        if agent_id.is_empty() {
            return Err(Status::invalid_argument("agent_id: is required"));
        }
        auth::may_read_agent(&caller, agent_id)?;
        self.inner
            .directory
            .get(agent_id)
            .map(|s| Response::new(to_proto(&s)))
            .ok_or_else(|| Status::not_found(format!("agent_id: no health known for {agent_id:?}")))
    }

    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        self.inner.identify(&req)?.require_role(Role::Reader)?;
        let r = req.get_ref();
        let filter = filter(r.status, &r.agent_type)?;
        let agents = self
            .inner
            .directory
            .list(&filter)
            .iter()
            .map(to_proto)
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    type WatchAgentsStream = BoxStream<pb::AgentHealth>;

    async fn watch_agents(
        &self,
        req: Request<pb::WatchAgentsRequest>,
    ) -> Result<Response<Self::WatchAgentsStream>, Status> {
        self.inner.identify(&req)?.require_role(Role::Reader)?;
        let r = req.get_ref();
        let filter = filter(r.status, &r.agent_type)?;
        let (snapshot, mut changes) = self.inner.directory.watch(&filter);
        let (tx, rx) = mpsc::channel(256);
        let directory = self.inner.directory.clone();
        let shutdown = self.inner.shutdown.clone();
        tokio::spawn(async move {
            for s in snapshot {
                if tx.send(Ok(to_proto(&s))).await.is_err() {
                    return;
                }
            }
            loop {
                let change = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    c = changes.recv() => c,
                };
                match change {
                    Ok(s) if filter.matches(&s) => {
                        if tx.send(Ok(to_proto(&s))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // Too slow to follow every change: send the current state again.
                        tracing::warn!(missed, "watcher lagged; resending current state");
                        for s in directory.list(&filter) {
                            if tx.send(Ok(to_proto(&s))).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// How long an event stream stays open after shutdown was asked for, answering
/// UNAVAILABLE, while waiting for the agent to close its side.
pub const STREAM_DRAIN_GRACE: Duration = Duration::from_secs(5);

fn rejected_ack(sequence: u64, status: &Status) -> pb::EventAck {
    pb::EventAck {
        sequence,
        accepted: None,
        error_code: status.code() as i32,
        error_message: status.message().to_string(),
    }
}

fn filter(status: i32, agent_type: &str) -> Result<AgentFilter, Status> {
    let status = match pb::AgentStatus::try_from(status) {
        Ok(pb::AgentStatus::Unspecified) => None,
        Ok(pb::AgentStatus::Healthy) => Some(HealthStatus::Healthy),
        Ok(pb::AgentStatus::Degraded) => Some(HealthStatus::Degraded),
        Ok(pb::AgentStatus::Unhealthy | pb::AgentStatus::Offline) => Some(HealthStatus::Unhealthy),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "status: {status} is not an AgentStatus"
            )))
        }
    };
    let agent_type = (!agent_type.is_empty()).then(|| agent_type.to_string());
    Ok(AgentFilter { status, agent_type })
}

/// The API's view of an agent's health.
pub fn to_proto(s: &AgentState) -> pb::AgentHealth {
    pb::AgentHealth {
        agent_id: s.agent_id.clone(),
        agent_type: s.agent_type.clone(),
        status: match s.status {
            HealthStatus::Healthy => pb::AgentStatus::Healthy,
            HealthStatus::Degraded => pb::AgentStatus::Degraded,
            HealthStatus::Unhealthy => pb::AgentStatus::Unhealthy,
        } as i32,
        last_seen: s.last_seen,
        last_heartbeat: s.last_heartbeat.unwrap_or(0),
        resource_usage_json: s
            .resource_usage
            .as_ref()
            .map_or_else(|| "{}".to_string(), |v| v.to_string()),
        tasks_completed: s.tasks_completed,
        last_task_id: s.last_task_id.clone(),
        last_error: s.last_error.clone(),
        updated_at: s.updated_at,
    }
}

/// Counts events in a sink (for tests and the in-memory mode).
#[derive(Debug, Default)]
pub struct CountingSink {
    /// Everything published, in order.
    pub events: std::sync::Mutex<Vec<StampedEvent>>,
    next_offset: AtomicU64,
}

impl EventSink for CountingSink {
    fn publish(
        &self,
        event: StampedEvent,
    ) -> futures::future::BoxFuture<'_, Result<Delivered, SinkError>> {
        Box::pin(async move {
            self.events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(event);
            let offset = self.next_offset.fetch_add(1, Ordering::SeqCst) as i64;
            Ok(Delivered {
                partition: 0,
                offset,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenKey;

    fn key() -> TokenKey {
        TokenKey::new(&[7; 32]).unwrap()
    }

    fn api(sink: Arc<CountingSink>, key: &TokenKey) -> GatewayApi {
        GatewayApi::new(
            sink,
            Authenticator::new(auth::AUDIENCE, Some(key.clone()), false),
            Limits::default(),
            SendQueue::new(8, Duration::from_millis(50)),
            AgentDirectory::default(),
            CancellationToken::new(),
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
                "x",
                pb::GetAgentRequest {
                    agent_id: "a1".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    }
}
