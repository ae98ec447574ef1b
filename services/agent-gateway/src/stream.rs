//! StreamEvents: an agent's events are read as they arrive, admitted one
//! after the other, in stream order, by a task of the stream's own, and
//! answered in that order. At most `window` events of a stream wait for their
//! answer. When the window is full the reader waits for room (not reading, so
//! HTTP/2 flow control slows the agent down), but only for [`WINDOW_WAIT`]:
//! if it stays full, events are read and answered RESOURCE_EXHAUSTED at once,
//! in their place in the order, until it has room again.
//!
//! Why events are not left unread for longer: h2 (0.4.16 and later) closes a
//! connection with GOAWAY ENHANCE_YOUR_CALM ("too_many_data_frames") once the
//! small DATA frames buffered unread cost more than a budget (half the
//! connection window, 512 KiB under hyper's defaults; a frame under 256 bytes
//! costs 256 minus its size) — long before the flow-control window stops the
//! sender. Agents streaming ~100-byte events one by one lost their
//! connection, and every call on it, after ~3 000 were left unread: while a
//! broker outage held their acks back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dora_proto::agent::v1 as pb;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::{Status, Streaming};

use crate::auth::Principal;
use crate::callers::OpenCall;
use crate::intake::{self, SharedSink};
use crate::metrics;
use crate::queue::SendQueue;
use crate::validation::{self, EventDraft, Invalid, Limits};

/// How long an event stream stays open after shutdown was asked for, answering
/// UNAVAILABLE, while waiting for the agent to close its side.
pub const STREAM_DRAIN_GRACE: Duration = Duration::from_secs(5);

/// How long a stream whose window is full waits for room without reading
/// before it refuses. Short, so that the small DATA frames an agent can send
/// meanwhile stay far below h2's budget (~2 400 frames of 40-byte events
/// under hyper's defaults) unless it sends over 2 400 events a second one by
/// one; long enough that a window full for a moment (acks a little late)
/// slows the agent down instead of refusing its events.
pub const WINDOW_WAIT: Duration = Duration::from_secs(1);

/// What one stream needs from the service.
#[derive(Clone)]
pub struct StreamContext {
    /// Where events go.
    pub sink: SharedSink,
    /// Room for events until the broker answered.
    pub queue: SendQueue,
    /// Field limits.
    pub limits: Limits,
    /// Asked for at shutdown: events still arriving are answered UNAVAILABLE.
    pub shutdown: CancellationToken,
    /// Events a stream may have waiting for their answer.
    pub window: usize,
}

/// The answers to a stream, in request order; ends with the stream's status.
pub type AckStream = std::pin::Pin<Box<dyn Stream<Item = Result<pb::EventAck, Status>> + Send>>;

/// Starts serving one stream of `caller`: a reader task and an admitting
/// task; returns the answers. Dropping the answers ends both.
pub fn start(
    ctx: StreamContext,
    caller: Principal,
    inbound: Streaming<pb::PublishEventRequest>,
    open: OpenCall,
) -> AckStream {
    let window = ctx.window.max(1);
    let answers = Arc::new(Answers::default());
    let gone = CancellationToken::new();
    let (admit_tx, admit_rx) = mpsc::channel(window);
    let reader = Reader {
        answers: answers.clone(),
        admit: admit_tx,
        room: Arc::new(Semaphore::new(window)),
        window,
        refusing: false,
        gone: gone.clone(),
    };
    tokio::spawn(admit_in_order(ctx.clone(), caller.clone(), admit_rx, gone.clone()));
    tokio::spawn(reader.run(ctx, caller, inbound, open));
    let replies = Replies {
        answers,
        current: None,
        _gone: gone.drop_guard(),
    };
    Box::pin(futures::stream::unfold(replies, |mut replies| async move {
        let next = replies.next().await?;
        Some((next, replies))
    }))
}

/// A pending answer of one admitted event.
type PendingAck = BoxFuture<'static, pb::EventAck>;

/// An event handed to the admitting task: its sequence number, the
/// validated draft, and where its pending answer goes.
type ToAdmit = (u64, Result<EventDraft, Invalid>, oneshot::Sender<PendingAck>);

/// One entry of a stream's answers, in request order.
enum Answer {
    /// An event being admitted; `room` is its place in the window, given
    /// back once its answer went out.
    Admitted {
        sequence: u64,
        pending: oneshot::Receiver<PendingAck>,
        room: OwnedSemaphorePermit,
    },
    /// `count` consecutive events from `first` on, refused at once with `status`.
    Refused { first: u64, count: u64, status: Status },
    /// The stream's last word (UNAUTHENTICATED when the token expired).
    End(Status),
}

/// The answers of one stream: at most `window` admitted entries, each
/// refused run between two of them one entry, so memory stays bounded
/// however many events are refused.
#[derive(Default)]
struct Answers {
    state: Mutex<AnswersState>,
    changed: Notify,
}

#[derive(Default)]
struct AnswersState {
    entries: VecDeque<Answer>,
    closed: bool,
}

impl Answers {
    fn update(&self, f: impl FnOnce(&mut AnswersState)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_one();
    }

    fn push(&self, answer: Answer) {
        self.update(|s| s.entries.push_back(answer));
    }

    /// Refuses event `sequence` with `status`, joining the run before it.
    fn refuse(&self, sequence: u64, status: &Status) {
        self.update(|s| match s.entries.back_mut() {
            Some(Answer::Refused { first, count, status: run })
                if run.code() == status.code() && *first + *count == sequence =>
            {
                *count += 1;
            }
            _ => s.entries.push_back(Answer::Refused {
                first: sequence,
                count: 1,
                status: status.clone(),
            }),
        });
    }

    /// No more entries will come.
    fn close(&self) {
        self.update(|s| s.closed = true);
    }

    /// Takes the next entry's answer if there is one now.
    fn take_next(&self) -> Next {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match s.entries.pop_front() {
            Some(Answer::Refused { first, count, status }) => {
                let ack = rejected_ack(first, &status);
                if count > 1 {
                    s.entries.push_front(Answer::Refused {
                        first: first + 1,
                        count: count - 1,
                        status,
                    });
                }
                Next::Ready(Ok(ack))
            }
            Some(Answer::Admitted { sequence, pending, room }) => {
                let answer = async move {
                    match pending.await {
                        Ok(pending) => pending.await,
                        Err(_) => rejected_ack(
                            sequence,
                            &Status::internal("the event's admission ended without an answer"),
                        ),
                    }
                };
                Next::Admitted(answer.boxed(), room)
            }
            Some(Answer::End(status)) => Next::Ready(Err(status)),
            None if s.closed => Next::Done,
            None => Next::Wait,
        }
    }
}

/// What [`Answers::take_next`] found.
enum Next {
    /// An answer to give now.
    Ready(Result<pb::EventAck, Status>),
    /// An admitted event's answer to wait for, and its room in the window.
    Admitted(PendingAck, OwnedSemaphorePermit),
    /// Nothing yet.
    Wait,
    /// Closed, and every answer given.
    Done,
}

/// The consuming end of a stream's answers. Cancel-safe: an answer being
/// waited for stays in `current`.
struct Replies {
    answers: Arc<Answers>,
    current: Option<(PendingAck, OwnedSemaphorePermit)>,
    _gone: DropGuard,
}

impl Replies {
    /// The next answer, in order; `None` once closed and all were given.
    async fn next(&mut self) -> Option<Result<pb::EventAck, Status>> {
        loop {
            if let Some((answer, _room)) = self.current.as_mut() {
                let ack = answer.await;
                // Its room in the window is given back with it.
                self.current = None;
                return Some(Ok(ack));
            }
            match self.answers.take_next() {
                Next::Ready(answer) => return Some(answer),
                Next::Admitted(answer, room) => self.current = Some((answer, room)),
                Next::Wait => self.answers.changed.notified().await,
                Next::Done => return None,
            }
        }
    }
}

/// Reads one stream's events as they come and gives each its answer entry.
struct Reader {
    answers: Arc<Answers>,
    admit: mpsc::Sender<ToAdmit>,
    room: Arc<Semaphore>,
    window: usize,
    /// The window stayed full past [`WINDOW_WAIT`]: refusing until it has room.
    refusing: bool,
    gone: CancellationToken,
}

impl Reader {
    /// Until the agent closes its side, the answers are dropped, the token
    /// expires (UNAUTHENTICATED) or the drain grace after shutdown ends.
    async fn run(
        mut self,
        ctx: StreamContext,
        caller: Principal,
        mut inbound: Streaming<pb::PublishEventRequest>,
        _open: OpenCall,
    ) {
        let expires = credential_end(&caller);
        let mut sequence = 0u64;
        // After shutdown was asked for, events still arriving are answered
        // UNAVAILABLE (not produced) so the agent stops and resends elsewhere.
        let mut draining_until: Option<Instant> = None;
        loop {
            let drain_end = draining_until.unwrap_or(expires);
            let next = tokio::select! {
                _ = ctx.shutdown.cancelled(), if draining_until.is_none() => {
                    draining_until = Some(Instant::now() + STREAM_DRAIN_GRACE);
                    continue;
                }
                _ = tokio::time::sleep_until(drain_end), if draining_until.is_some() => break,
                _ = tokio::time::sleep_until(expires) => {
                    self.answers.push(Answer::End(expired()));
                    break;
                }
                _ = self.gone.cancelled() => break,
                next = inbound.next() => next,
            };
            let request = match next {
                Some(Ok(r)) => r,
                Some(Err(status)) => {
                    tracing::debug!(%status, "event stream ended by the client");
                    break;
                }
                None => break,
            };
            if draining_until.is_some() {
                let status =
                    Status::unavailable("gateway is shutting down; send this event again elsewhere");
                self.answers.refuse(sequence, &status);
            } else {
                self.take(sequence, validation::publish_request(&request, &ctx.limits))
                    .await;
            }
            sequence += 1;
        }
        self.answers.close();
    }

    /// Hands event `sequence` to the admitting task once the window has
    /// room. A full window is waited for at most [`WINDOW_WAIT`] (not
    /// reading meanwhile, as flow control would); if it stays full, this event
    /// and every one read until room frees up are refused at once.
    async fn take(&mut self, sequence: u64, draft: Result<EventDraft, Invalid>) {
        let room = match self.room.clone().try_acquire_owned() {
            Ok(room) => Some(room),
            Err(_) if self.refusing => None,
            Err(_) => tokio::time::timeout(WINDOW_WAIT, self.room.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok),
        };
        self.refusing = room.is_none();
        let Some(room) = room else {
            metrics::rejected("resource_exhausted");
            self.answers.refuse(sequence, &window_full(self.window));
            return;
        };
        let (tx, pending) = oneshot::channel();
        // Every entry of the channel holds room in the window, which is as
        // large as the channel: this never finds it full.
        if self.admit.try_send((sequence, draft, tx)).is_err() {
            self.answers.refuse(sequence, &window_full(self.window));
            return;
        }
        self.answers.push(Answer::Admitted {
            sequence,
            pending,
            room,
        });
    }
}

/// Admits a stream's events one after the other (the queue wait, stamping
/// and enqueueing in stream order); the waiting for acks overlaps.
async fn admit_in_order(
    ctx: StreamContext,
    caller: Principal,
    mut events: mpsc::Receiver<ToAdmit>,
    gone: CancellationToken,
) {
    while let Some((sequence, draft, answer)) = events.recv().await {
        if gone.is_cancelled() {
            // Nobody would learn the outcome: produce nothing more.
            continue;
        }
        let pending: PendingAck =
            match intake::admit(&*ctx.sink, &ctx.queue, &caller, draft, None).await {
                Ok(admitted) => async move {
                    match admitted.acknowledged(None).await {
                        Ok(accepted) => pb::EventAck {
                            sequence,
                            accepted: Some(accepted),
                            error_code: 0,
                            error_message: String::new(),
                        },
                        Err(status) => rejected_ack(sequence, &status),
                    }
                }
                .boxed(),
                Err(status) => futures::future::ready(rejected_ack(sequence, &status)).boxed(),
            };
        let _ = answer.send(pending);
    }
}

/// When `caller`'s credential runs out (far in the future for a certificate).
pub fn credential_end(caller: &Principal) -> Instant {
    let far = Duration::from_secs(100 * 365 * 24 * 3600);
    Instant::now() + caller.remaining().unwrap_or(far)
}

/// The status of a call whose token expired while it was open.
pub fn expired() -> Status {
    Status::unauthenticated("token expired; open a new call with a fresh token")
}

fn window_full(window: usize) -> Status {
    Status::resource_exhausted(format!(
        "stream window full: {window} events of this stream await their answers; \
         wait for answers before sending more"
    ))
}

/// The answer to event `sequence` refused with `status`.
pub fn rejected_ack(sequence: u64, status: &Status) -> pb::EventAck {
    pb::EventAck {
        sequence,
        accepted: None,
        error_code: status.code() as i32,
        error_message: status.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(sequence: u64) -> pb::EventAck {
        pb::EventAck {
            sequence,
            accepted: Some(pb::PublishEventResponse::default()),
            error_code: 0,
            error_message: String::new(),
        }
    }

    fn replies(answers: Answers) -> Replies {
        Replies {
            answers: Arc::new(answers),
            current: None,
            _gone: CancellationToken::new().drop_guard(),
        }
    }

    #[tokio::test]
    async fn refusals_behind_a_pending_answer_wait_their_turn_in_one_entry() {
        let answers = Answers::default();
        let room = Arc::new(Semaphore::new(1));
        let (tx, pending) = oneshot::channel::<PendingAck>();
        answers.push(Answer::Admitted {
            sequence: 0,
            pending,
            room: room.clone().try_acquire_owned().unwrap(),
        });
        let full = window_full(1);
        for sequence in 1..=10_000 {
            answers.refuse(sequence, &full);
        }
        let entries = answers.state.lock().unwrap().entries.len();
        assert_eq!(entries, 2, "10 000 refusals take one entry");
        let mut replies = replies(answers);
        // Nothing goes out before the pending answer; giving up waiting for
        // it loses nothing (the answer being waited for is kept).
        let early = tokio::time::timeout(Duration::from_millis(50), replies.next()).await;
        assert!(early.is_err(), "an answer overtook the pending one");
        assert!(tx.send(futures::future::ready(accepted(0)).boxed()).is_ok());
        assert_eq!(replies.next().await.unwrap().unwrap(), accepted(0));
        assert_eq!(room.available_permits(), 1, "the window room is back once answered");
        for sequence in 1..=10_000 {
            let ack = replies.next().await.unwrap().unwrap();
            assert_eq!((ack.sequence, ack.error_code), (sequence, tonic::Code::ResourceExhausted as i32));
        }
        replies.answers.close();
        assert!(replies.next().await.is_none());
    }

    #[tokio::test]
    async fn a_refusal_of_another_kind_or_after_an_admitted_event_starts_a_new_run() {
        let answers = Answers::default();
        let room = Arc::new(Semaphore::new(1));
        answers.refuse(0, &window_full(1));
        let (tx, pending) = oneshot::channel::<PendingAck>();
        answers.push(Answer::Admitted {
            sequence: 1,
            pending,
            room: room.try_acquire_owned().unwrap(),
        });
        answers.refuse(2, &window_full(1));
        answers.refuse(3, &Status::unavailable("shutting down"));
        answers.push(Answer::End(expired()));
        answers.close();
        assert!(tx.send(futures::future::ready(accepted(1)).boxed()).is_ok());
        let mut replies = replies(answers);
        let mut seen = Vec::new();
        while let Some(next) = replies.next().await {
            seen.push(next.map(|a| (a.sequence, a.error_code)).map_err(|s| s.code()));
        }
        let exhausted = tonic::Code::ResourceExhausted as i32;
        let unavailable = tonic::Code::Unavailable as i32;
        assert_eq!(
            seen,
            vec![
                Ok((0, exhausted)),
                Ok((1, 0)),
                Ok((2, exhausted)),
                Ok((3, unavailable)),
                Err(tonic::Code::Unauthenticated)
            ]
        );
    }
}
