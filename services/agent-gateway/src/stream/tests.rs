//! Unit tests of a stream's answers: order, bounded refusals, room in the window.

use super::*;
use crate::intake::Delivered;
use tokio::sync::oneshot;

fn replies(answers: Answers) -> Replies {
    Replies {
        answers: Arc::new(answers),
        current: None,
        _gone: CancellationToken::new().drop_guard(),
    }
}

/// Hands event `sequence` over as the reader does: a unit of room, an entry.
fn hand(answers: &Answers, sequence: u64) {
    answers.room.try_acquire().expect("room in the window").forget();
    answers.extend([Answer::Handed { sequence, outcome: None }]);
}

fn refuse(answers: &Answers, sequence: u64, status: Status) {
    answers.extend([Answer::Refused { first: sequence, count: 1, status }]);
}

/// An admitted event the broker answers (at `offset`) once `answer` is sent.
fn admitted_on(answer: oneshot::Receiver<()>, offset: i64) -> Admitted {
    Admitted::answered_by(async move {
        let _ = answer.await;
        Ok(Delivered { partition: 0, offset })
    })
}

fn admitted(offset: i64) -> Admitted {
    Admitted::answered_by(async move { Ok(Delivered { partition: 0, offset }) })
}

type Seen = Result<(u64, i32), tonic::Code>;

async fn all(mut replies: Replies) -> Vec<Seen> {
    let mut seen = Vec::new();
    while let Some(next) = replies.next().await {
        seen.push(next.map(|a| (a.sequence, a.error_code)).map_err(|s| s.code()));
    }
    seen
}

#[tokio::test]
async fn refusals_behind_a_pending_answer_wait_their_turn_in_one_entry() {
    let answers = Answers::new(1);
    hand(&answers, 0);
    let full = window_full(1);
    for sequence in 1..=10_000 {
        refuse(&answers, sequence, full.clone());
    }
    assert_eq!(answers.lock().entries.len(), 2, "10 000 refusals take one entry");
    let mut replies = replies(answers);
    // Nothing goes out before the pending answer, neither before its
    // admission was settled nor before the broker answered; giving up
    // waiting loses nothing (the answer being waited for is kept).
    let early = tokio::time::timeout(Duration::from_millis(50), replies.next()).await;
    assert!(early.is_err(), "an answer overtook the unsettled one");
    let (broker, answer) = oneshot::channel();
    replies.answers.settle(0, Ok(admitted_on(answer, 7)));
    let early = tokio::time::timeout(Duration::from_millis(50), replies.next()).await;
    assert!(early.is_err(), "an answer overtook the pending one");
    assert_eq!(replies.answers.room.available_permits(), 1, "room is back once taken out");
    broker.send(()).unwrap();
    let first = replies.next().await.unwrap().unwrap();
    assert_eq!((first.sequence, first.accepted.map(|a| a.offset)), (0, Some(7)));
    for sequence in 1..=10_000 {
        let ack = replies.next().await.unwrap().unwrap();
        assert_eq!((ack.sequence, ack.error_code), (sequence, tonic::Code::ResourceExhausted as i32));
    }
    replies.answers.close();
    assert!(replies.next().await.is_none());
}

#[tokio::test]
async fn a_refusal_of_another_kind_or_after_a_handed_event_starts_a_new_run() {
    let answers = Answers::new(2);
    refuse(&answers, 0, window_full(2));
    hand(&answers, 1);
    refuse(&answers, 2, window_full(2));
    refuse(&answers, 3, Status::unavailable("shutting down"));
    hand(&answers, 4);
    answers.extend([Answer::End(expired())]);
    answers.close();
    assert_eq!(answers.lock().entries.len(), 6);
    // Settled out of order: the answers still go out in stream order.
    answers.settle(4, Err(Status::permission_denied("agent_id")));
    answers.settle(1, Ok(admitted(1)));
    let exhausted = tonic::Code::ResourceExhausted as i32;
    let unavailable = tonic::Code::Unavailable as i32;
    let denied = tonic::Code::PermissionDenied as i32;
    let replies = replies(answers);
    let answers = replies.answers.clone();
    assert_eq!(
        all(replies).await,
        vec![
            Ok((0, exhausted)),
            Ok((1, 0)),
            Ok((2, exhausted)),
            Ok((3, unavailable)),
            Ok((4, denied)),
            Err(tonic::Code::Unauthenticated)
        ]
    );
    assert_eq!(answers.room.available_permits(), 2, "every handed event gave its room back");
}

#[tokio::test]
async fn events_the_admitting_task_left_unsettled_are_answered_internal() {
    let answers = Arc::new(Answers::new(4));
    hand(&answers, 0);
    hand(&answers, 1);
    answers.settle(0, Ok(admitted(0)));
    answers.close();
    let mut replies = Replies {
        answers: answers.clone(),
        current: None,
        _gone: CancellationToken::new().drop_guard(),
    };
    assert_eq!(replies.next().await.unwrap().unwrap().sequence, 0);
    let waiting = tokio::time::timeout(Duration::from_millis(50), replies.next()).await;
    assert!(waiting.is_err(), "an unsettled event was answered while its admitter ran");
    drop(AdmitterGone(answers.clone()));
    let internal = tonic::Code::Internal as i32;
    assert_eq!(all(replies).await, vec![Ok((1, internal))]);
    assert_eq!(answers.room.available_permits(), 4);
}
