//! SubmitAssessments: many submissions in one call, each treated as its
//! unary call would be (same checks, report id and audit event) and answered
//! on its own, in request order, once the broker acknowledged every accepted
//! one. Refused submissions produce nothing.

use dora_auth::Principal;
use dora_proto::report::v1 as pb;
use pb::submission::Assessment as Item;
use pb::submission_result::Outcome;
use serde_json::{Map, Value};
use tonic::Status;

use crate::api::{counted, Grouped, Inner};

/// The results of `submissions` by `principal`, in order. The whole call is
/// refused (nothing produced) when it holds none or more than the limit.
pub(crate) async fn submit_all(
    inner: &Inner,
    principal: &Principal,
    submissions: &[pb::Submission],
    client: &Map<String, Value>,
) -> Result<Vec<pb::SubmissionResult>, Status> {
    let max = inner.limits.max_bulk_submissions;
    if submissions.is_empty() || submissions.len() > max {
        return Err(counted(Status::invalid_argument(format!(
            "submissions: {} given, 1 to {max} allowed",
            submissions.len()
        ))));
    }
    // Everything accepted is enqueued before anything is awaited, in one
    // group: the producer batches the whole call's records, and the call
    // wakes once when the broker acknowledged them all.
    let mut group = inner.group();
    let mut pending: Vec<Result<Grouped, Status>> = Vec::with_capacity(submissions.len());
    for (i, s) in submissions.iter().enumerate() {
        let accepted = match &s.assessment {
            Some(Item::Gap(r)) => inner.accept_gap(principal, r, client),
            Some(Item::Risk(r)) => inner.accept_risk(principal, r, client),
            None => Err(counted(Status::invalid_argument(
                "is empty: set gap or risk",
            ))),
        };
        let item = match accepted {
            Ok(a) => inner.enqueue_in(&mut group, a).await,
            Err(e) => Err(e),
        };
        pending.push(item.map_err(|e| indexed(i, e)));
    }
    let outcomes = group.acknowledged().await;
    let results = pending
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let outcome = item.and_then(|g| g.answer(&outcomes).map_err(|e| indexed(i, e)));
            pb::SubmissionResult {
                outcome: Some(match outcome {
                    Ok(report) => Outcome::Report(report),
                    Err(e) => Outcome::Error(pb::SubmissionError {
                        code: e.code() as i32,
                        message: e.message().to_string(),
                    }),
                }),
            }
        })
        .collect();
    Ok(results)
}

/// `e` with its field path under `submissions[i]`: a message naming a field
/// starts with its path (`data_json.gaps[2].article: ...`), any other gets
/// the index in front (`submissions[1]: ...`).
fn indexed(i: usize, e: Status) -> Status {
    let message = e.message();
    let names_field = message.split_once(": ").is_some_and(|(path, _)| {
        !path.is_empty()
            && path
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.[]".contains(&b))
    });
    let sep = if names_field { "." } else { ": " };
    Status::new(e.code(), format!("submissions[{i}]{sep}{message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_submission_and_its_field() {
        let e = indexed(
            3,
            Status::invalid_argument("data_json.gaps[2].article: no such article"),
        );
        assert_eq!(
            e.message(),
            "submissions[3].data_json.gaps[2].article: no such article"
        );
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let e = indexed(0, Status::invalid_argument("is empty: set gap or risk"));
        assert_eq!(e.message(), "submissions[0]: is empty: set gap or risk");
        let e = indexed(1, Status::unavailable("this replica cannot produce; retry"));
        assert_eq!(
            e.message(),
            "submissions[1]: this replica cannot produce; retry"
        );
        assert_eq!(e.code(), tonic::Code::Unavailable);
    }
}
