//! The gRPC service: authenticate, then either write (validate, take room in
//! the send queue, enqueue in order, answer once the broker acknowledged: see
//! [`crate::intake`]) or read (GetAgent, ListAgents, WatchAgents) from the
//! [`AgentDirectory`].

use std::pin::Pin;
use std::sync::Arc;

use dora_proto::agent::v1 as pb;
use dora_proto::agent::v1::agent_gateway_server::AgentGateway;
use futures::Stream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{self, Authenticator, Principal, Role};
use crate::callers::OpenCalls;
use crate::directory::{AgentDirectory, AgentFilter};
use crate::health::{AgentState, HealthStatus};
use crate::intake::{self, SharedSink};
use crate::metrics;
use crate::queue::{call_deadline, SendQueue};
use crate::stream::{self, credential_end, expired, StreamContext};
use crate::validation::{self, EventDraft, Invalid, Limits};

pub use crate::intake::{
    CountingSink, Delivered, EventSink, SinkError, StampedEvent, EVENT_VERSION,
};
pub use crate::stream::STREAM_DRAIN_GRACE;

/// How many of its streams and watches one caller may hold open.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Open StreamEvents calls per caller.
    pub streams_per_caller: usize,
    /// Open WatchAgents calls per caller.
    pub watches_per_caller: usize,
    /// Acks a stream may have pending (each holds room in the send queue).
    pub stream_window: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        Self {
            streams_per_caller: 8,
            watches_per_caller: 4,
            stream_window: 512,
        }
    }
}

/// The gRPC service of agent-gateway.
#[derive(Clone)]
pub struct GatewayApi {
    inner: Arc<Inner>,
}

struct Inner {
    sink: SharedSink,
    auth: Authenticator,
    limits: Limits,
    queue: SendQueue,
    directory: AgentDirectory,
    shutdown: CancellationToken,
    streams: OpenCalls,
    watches: OpenCalls,
    stream_window: usize,
}

impl GatewayApi {
    /// A service producing through `sink` and reading health from `directory`.
    /// `shutdown` ends open event streams after their in-flight events were acked.
    pub fn new(
        sink: SharedSink,
        auth: Authenticator,
        limits: Limits,
        queue: SendQueue,
        directory: AgentDirectory,
        shutdown: CancellationToken,
        calls: CallLimits,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                sink,
                auth,
                limits,
                queue,
                directory,
                shutdown,
                streams: OpenCalls::new("event streams", calls.streams_per_caller),
                watches: OpenCalls::new("watches", calls.watches_per_caller),
                stream_window: calls.stream_window.max(1),
            }),
        }
    }
}

impl Inner {
    /// A unary write: admit, then wait for the ack; both end at the call's one deadline.
    async fn write(
        &self,
        caller: &Principal,
        draft: Result<EventDraft, Invalid>,
        deadline: Option<Instant>,
    ) -> Result<pb::PublishEventResponse, Status> {
        intake::admit(&*self.sink, &self.queue, caller, draft, deadline)
            .await?
            .acknowledged(deadline)
            .await
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
        let deadline = call_deadline(req.metadata());
        let draft = validation::publish_request(req.get_ref(), &self.inner.limits);
        self.inner
            .write(&id, draft, deadline)
            .await
            .map(Response::new)
    }

    type StreamEventsStream = BoxStream<pb::EventAck>;

    async fn stream_events(
        &self,
        req: Request<Streaming<pb::PublishEventRequest>>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let caller = self.inner.identify(&req)?;
        let open = self.inner.streams.open(&caller.name)?;
        let ctx = StreamContext {
            sink: self.inner.sink.clone(),
            queue: self.inner.queue.clone(),
            limits: self.inner.limits,
            shutdown: self.inner.shutdown.clone(),
            window: self.inner.stream_window,
        };
        Ok(Response::new(stream::start(ctx, caller, req.into_inner(), open)))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::PublishEventResponse>, Status> {
        let id = self.inner.identify(&req)?;
        let deadline = call_deadline(req.metadata());
        let draft = validation::heartbeat_request(req.get_ref(), &self.inner.limits);
        self.inner
            .write(&id, draft, deadline)
            .await
            .map(Response::new)
    }

    async fn complete_task(
        &self,
        req: Request<pb::CompleteTaskRequest>,
    ) -> Result<Response<pb::PublishEventResponse>, Status> {
        let id = self.inner.identify(&req)?;
        let deadline = call_deadline(req.metadata());
        let draft = validation::complete_task_request(req.get_ref(), &self.inner.limits);
        self.inner
            .write(&id, draft, deadline)
            .await
            .map(Response::new)
    }

    async fn report_error(
        &self,
        req: Request<pb::ReportErrorRequest>,
    ) -> Result<Response<pb::PublishEventResponse>, Status> {
        let id = self.inner.identify(&req)?;
        let deadline = call_deadline(req.metadata());
        let draft = validation::report_error_request(req.get_ref(), &self.inner.limits);
        self.inner
            .write(&id, draft, deadline)
            .await
            .map(Response::new)
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
        let caller = self.inner.identify(&req)?;
        caller.require_role(Role::Reader)?;
        let open = self.inner.watches.open(&caller.name)?;
        let r = req.get_ref();
        let filter = filter(r.status, &r.agent_type)?;
        let (tx, rx) = mpsc::channel(256);
        let watch = crate::watch::Watch::new(self.inner.directory.clone(), filter);
        let (shutdown, expires) = (self.inner.shutdown.clone(), credential_end(&caller));
        tokio::spawn(async move {
            let _open = open;
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep_until(expires) => {
                    let _ = tx.send(Err(expired())).await;
                }
                _ = watch.run(&tx) => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
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
        retired: false,
    }
}

#[cfg(test)]
mod tests;
