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
//!
//! Cost per event: the reader hands over everything readable at once (up to
//! [`MAX_BATCH`] events: one channel message, one wake-up of the admitting
//! task); the admitting task settles each event's entry in the answers in
//! place (no channel, no boxed future per event); the answers are a
//! [`Stream`] polled directly by the response, which sleeps only when the
//! entry at the front is not settled yet.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use dora_proto::agent::v1 as pb;
use futures::task::AtomicWaker;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::{Status, Streaming};

use crate::auth::Principal;
use crate::callers::OpenCall;
use crate::intake::{self, Admitted, SharedSink};
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

/// Most events the reader hands to the admitting task at once.
pub const MAX_BATCH: usize = 64;

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
pub type AckStream = Pin<Box<dyn Stream<Item = Result<pb::EventAck, Status>> + Send>>;

/// Starts serving one stream of `caller`: a reader task and an admitting
/// task; returns the answers. Dropping the answers ends both.
pub fn start(
    ctx: StreamContext,
    caller: Principal,
    inbound: Streaming<pb::PublishEventRequest>,
    open: OpenCall,
) -> AckStream {
    let window = ctx.window.max(1);
    let answers = Arc::new(Answers::new(window));
    let gone = CancellationToken::new();
    // Every batch holds room in the window for each of its events, and the
    // channel has a place per unit of room: sending never finds it full.
    let (admit_tx, admit_rx) = mpsc::channel(window);
    let reader = Reader {
        answers: answers.clone(),
        admit: admit_tx,
        window,
        refusing: false,
        gone: gone.clone(),
        batch: Vec::new(),
        entries: Vec::new(),
    };
    tokio::spawn(admit_in_order(ctx.clone(), caller.clone(), admit_rx, answers.clone(), gone.clone()));
    tokio::spawn(reader.run(ctx, caller, inbound, open));
    Box::pin(Replies {
        answers,
        current: None,
        _gone: gone.drop_guard(),
    })
}

/// Events handed to the admitting task at once: sequence number and the
/// validated draft, in stream order.
type Batch = Vec<(u64, Result<EventDraft, Invalid>)>;

/// One entry of a stream's answers, in request order.
enum Answer {
    /// An event handed to the admitting task; its outcome once admitted (or
    /// refused there). It holds one unit of room in the window until answered.
    Handed {
        sequence: u64,
        outcome: Option<Result<Admitted, Status>>,
    },
    /// `count` consecutive events from `first` on, refused at once with `status`.
    Refused { first: u64, count: u64, status: Status },
    /// The stream's last word (UNAUTHENTICATED when the token expired).
    End(Status),
}

impl Answer {
    /// The first sequence number it answers (the end comes after all).
    fn first(&self) -> u64 {
        match self {
            Answer::Handed { sequence, .. } => *sequence,
            Answer::Refused { first, .. } => *first,
            Answer::End(_) => u64::MAX,
        }
    }
}

/// The answers of one stream: at most `window` handed entries, each refused
/// run between two of them one entry, so memory stays bounded however many
/// events are refused.
struct Answers {
    state: Mutex<AnswersState>,
    /// The reply side, when it found nothing to answer.
    waiting: AtomicWaker,
    /// The window: a unit per event handed over and not yet answered.
    room: Semaphore,
}

#[derive(Default)]
struct AnswersState {
    entries: VecDeque<Answer>,
    /// The reader is done: no more entries will come.
    closed: bool,
    /// The admitting task is gone: entries not settled by now never will be.
    admitter_gone: bool,
}

impl Answers {
    fn new(window: usize) -> Self {
        Self {
            state: Mutex::default(),
            waiting: AtomicWaker::new(),
            room: Semaphore::new(window),
        }
    }

    fn lock(&self) -> MutexGuard<'_, AnswersState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the state and wakes the reply side if it waits.
    fn update(&self, f: impl FnOnce(&mut AnswersState)) {
        f(&mut self.lock());
        self.waiting.wake();
    }

    /// Appends `answers` (in order) to the entries.
    fn extend(&self, answers: impl IntoIterator<Item = Answer>) {
        self.update(|s| {
            for answer in answers {
                append(&mut s.entries, answer);
            }
        });
    }

    /// Settles handed event `sequence` with the admitting task's outcome.
    fn settle(&self, sequence: u64, outcome: Result<Admitted, Status>) {
        self.update(|s| {
            let at = s.entries.partition_point(|e| e.first() <= sequence);
            if let Some(Answer::Handed { sequence: seq, outcome: slot }) =
                at.checked_sub(1).and_then(|i| s.entries.get_mut(i))
            {
                if *seq == sequence {
                    *slot = Some(outcome);
                }
            }
        });
    }

    /// No more entries will come.
    fn close(&self) {
        self.update(|s| s.closed = true);
    }

    /// Takes the next entry's answer if there is one now.
    fn take_next(&self) -> Next {
        let mut guard = self.lock();
        let s = &mut *guard;
        match s.entries.front_mut() {
            Some(Answer::Refused { first, count, status }) => {
                let ack = rejected_ack(*first, status);
                *first += 1;
                *count -= 1;
                let run_done = *count == 0;
                if run_done {
                    s.entries.pop_front();
                }
                Next::Ready(Ok(ack))
            }
            Some(Answer::Handed { outcome: None, .. }) if !s.admitter_gone => Next::Wait,
            Some(Answer::Handed { .. }) => {
                let Some(Answer::Handed { sequence, outcome }) = s.entries.pop_front() else {
                    unreachable!("the front entry was just matched")
                };
                drop(guard);
                self.room.add_permits(1);
                match outcome {
                    Some(Ok(admitted)) => Next::Admitted(sequence, admitted),
                    Some(Err(status)) => Next::Ready(Ok(rejected_ack(sequence, &status))),
                    None => Next::Ready(Ok(rejected_ack(
                        sequence,
                        &Status::internal("the event's admission ended without an answer"),
                    ))),
                }
            }
            Some(Answer::End(_)) => match s.entries.pop_front() {
                Some(Answer::End(status)) => Next::Ready(Err(status)),
                _ => unreachable!("the front entry was just matched"),
            },
            None if s.closed => Next::Done,
            None => Next::Wait,
        }
    }
}

/// Appends `answer`, joining a refusal to the run of the same kind just before it.
fn append(entries: &mut VecDeque<Answer>, answer: Answer) {
    if let (
        Some(Answer::Refused { first, count, status: run }),
        Answer::Refused { first: next, count: more, status },
    ) = (entries.back_mut(), &answer)
    {
        if run.code() == status.code() && *first + *count == *next {
            *count += more;
            return;
        }
    }
    entries.push_back(answer);
}

/// What [`Answers::take_next`] found.
enum Next {
    /// An answer to give now.
    Ready(Result<pb::EventAck, Status>),
    /// An admitted event whose broker answer is to be waited for.
    Admitted(u64, Admitted),
    /// Nothing yet.
    Wait,
    /// Closed, and every answer given.
    Done,
}

/// The consuming end of a stream's answers. Cancel-safe: the admitted event
/// whose answer is being waited for stays in `current`.
struct Replies {
    answers: Arc<Answers>,
    current: Option<(u64, Admitted)>,
    _gone: DropGuard,
}

impl Stream for Replies {
    type Item = Result<pb::EventAck, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some((sequence, admitted)) = this.current.as_mut() {
                let ack = match futures::ready!(admitted.poll_acknowledged(cx)) {
                    Ok(accepted) => accepted_ack(*sequence, accepted),
                    Err(status) => rejected_ack(*sequence, &status),
                };
                this.current = None;
                return Poll::Ready(Some(Ok(ack)));
            }
            let next = match this.answers.take_next() {
                Next::Wait => {
                    // Registered, then looked at again: a change made after
                    // the first look wakes us.
                    this.answers.waiting.register(cx.waker());
                    this.answers.take_next()
                }
                next => next,
            };
            match next {
                Next::Ready(answer) => return Poll::Ready(Some(answer)),
                Next::Admitted(sequence, admitted) => this.current = Some((sequence, admitted)),
                Next::Wait => return Poll::Pending,
                Next::Done => return Poll::Ready(None),
            }
        }
    }
}

/// Reads one stream's events as they come and gives each its answer entry.
struct Reader {
    answers: Arc<Answers>,
    admit: mpsc::Sender<Batch>,
    window: usize,
    /// The window stayed full past [`WINDOW_WAIT`]: refusing until it has room.
    refusing: bool,
    gone: CancellationToken,
    /// Events read and not handed over yet, and their answer entries (in order).
    batch: Batch,
    entries: Vec<Answer>,
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
            let mut next = tokio::select! {
                _ = ctx.shutdown.cancelled(), if draining_until.is_none() => {
                    draining_until = Some(Instant::now() + STREAM_DRAIN_GRACE);
                    continue;
                }
                _ = tokio::time::sleep_until(drain_end), if draining_until.is_some() => break,
                _ = tokio::time::sleep_until(expires) => {
                    self.entries.push(Answer::End(expired()));
                    break;
                }
                _ = self.gone.cancelled() => break,
                next = inbound.next() => next,
            };
            // This event and every one readable now, up to a batch.
            let mut read = 0;
            let ended = loop {
                let request = match next {
                    Some(Ok(r)) => r,
                    Some(Err(status)) => {
                        tracing::debug!(%status, "event stream ended by the client");
                        break true;
                    }
                    None => break true,
                };
                if draining_until.is_some() {
                    let status = Status::unavailable(
                        "gateway is shutting down; send this event again elsewhere",
                    );
                    self.refuse(sequence, status);
                } else {
                    let draft = validation::publish_request(&request, &ctx.limits);
                    self.take(sequence, draft).await;
                }
                sequence += 1;
                read += 1;
                if read == MAX_BATCH {
                    break false;
                }
                match inbound.next().now_or_never() {
                    Some(more) => next = more,
                    None => break false,
                }
            };
            self.hand_over();
            if ended {
                break;
            }
        }
        self.hand_over();
        self.answers.close();
    }

    /// Event `sequence` is to be handed to the admitting task once the
    /// window has room. A full window is waited for at most [`WINDOW_WAIT`]
    /// (not reading meanwhile, as flow control would; what was read before is
    /// handed over first); if it stays full, this event and every one read
    /// until room frees up are refused at once.
    async fn take(&mut self, sequence: u64, draft: Result<EventDraft, Invalid>) {
        let answers = self.answers.clone();
        let room = match answers.room.try_acquire() {
            Ok(room) => Some(room),
            Err(_) if self.refusing => None,
            Err(_) => {
                self.hand_over();
                tokio::time::timeout(WINDOW_WAIT, answers.room.acquire())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
        };
        self.refusing = room.is_none();
        let Some(room) = room else {
            metrics::rejected("resource_exhausted");
            self.refuse(sequence, window_full(self.window));
            return;
        };
        // Given back by the reply side once the event was answered.
        room.forget();
        self.batch.push((sequence, draft));
        self.entries.push(Answer::Handed {
            sequence,
            outcome: None,
        });
    }

    fn refuse(&mut self, sequence: u64, status: Status) {
        self.entries.push(Answer::Refused {
            first: sequence,
            count: 1,
            status,
        });
    }

    /// Publishes the entries of the events read so far, then hands those
    /// to be admitted to the admitting task.
    fn hand_over(&mut self) {
        if !self.entries.is_empty() {
            self.answers.extend(self.entries.drain(..));
        }
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(MAX_BATCH));
        // Never full (see `start`); if the admitting task is gone, the
        // entries stay unsettled and are answered INTERNAL.
        let _ = self.admit.try_send(batch);
    }
}

/// Marks the admitting task gone when it ends, however it ends.
struct AdmitterGone(Arc<Answers>);

impl Drop for AdmitterGone {
    fn drop(&mut self) {
        self.0.update(|s| s.admitter_gone = true);
    }
}

/// Admits a stream's events one after the other (the queue wait, stamping
/// and enqueueing in stream order); the waiting for acks overlaps.
async fn admit_in_order(
    ctx: StreamContext,
    caller: Principal,
    mut batches: mpsc::Receiver<Batch>,
    answers: Arc<Answers>,
    gone: CancellationToken,
) {
    let _gone_marker = AdmitterGone(answers.clone());
    while let Some(batch) = batches.recv().await {
        for (sequence, draft) in batch {
            if gone.is_cancelled() {
                // Nobody would learn the outcome: produce nothing more.
                return;
            }
            let outcome = intake::admit(&*ctx.sink, &ctx.queue, &caller, draft, None).await;
            answers.settle(sequence, outcome);
        }
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

/// The answer to event `sequence` accepted as `accepted`.
fn accepted_ack(sequence: u64, accepted: pb::PublishEventResponse) -> pb::EventAck {
    pb::EventAck {
        sequence,
        accepted: Some(accepted),
        error_code: 0,
        error_message: String::new(),
    }
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
mod tests;
