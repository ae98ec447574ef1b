//! The one consume loop of the platform: its settings, the record a handler
//! sees, and the handler traits of its three modes (per message, batch,
//! consume-transform-produce in a transaction).
//!
//! # How it runs
//!
//! A librdkafka `BaseConsumer` is polled on tokio's blocking pool, one batch
//! at a time (`gather.rs`); the rebalance callbacks run inside those polls,
//! on that thread. Handlers run between polls on the async runtime, so no
//! work is in flight when partitions are revoked. Every other blocking call
//! (commit, seek, offset lookups, transaction calls) goes through
//! `crate::blocking::off_worker` too.
//!
//! Where to find what: `consume_loop.rs` (the builder), `driver.rs` (one run:
//! between batches, gather, admit, process, drain), `membership.rs` and
//! `context.rs` (assignment, generations, rebalance callbacks), `starts.rs`
//! and `rebuild.rs` (start positions, `until_end`), `retries.rs` (pause,
//! rewind, resume), `commits.rs` (offset commits), `modes.rs` (per message,
//! batch), `transform.rs` and `transaction.rs` (the transactional mode),
//! `dead_letter.rs`, `conditions.rs` (readiness).
//!
//! # Guarantees, and the test that breaks when one does
//!
//! - An offset is committed only after its record was processed or
//!   dead-lettered; commits are batched by count and time, made again after
//!   a failure even when the partition is idle, flushed on revoke and on
//!   shutdown, never ahead of work — `loop_semantics::retryable_failures_are_retried_then_committed_and_never_dead_lettered`,
//!   `process::sigterm_under_load_drains_commits_last_processed_plus_one_and_exits_zero`,
//!   `process::a_sigkilled_consumer_restarted_processes_every_id`.
//! - A member leaving commits what it processed; the next owner repeats and
//!   loses nothing — `loop_semantics::two_consumers_one_leaves_nothing_lost_and_nothing_processed_twice`,
//!   `rebalance::batch_mode_two_members_one_leaves_every_record_processed_once`.
//! - Records fetched under an assignment that was revoked (even if the
//!   partition came back within the same batch) are never processed —
//!   `rebalance::records_fetched_before_a_revoke_and_reassignment_in_one_batch_are_dropped`.
//! - A [`HandlerError::Retryable`] pauses the record's partition, rewinds it
//!   and retries after the [`RetryPolicy`](crate::RetryPolicy) backoff;
//!   nothing past it is processed, committed or dead-lettered — same tests as
//!   the first point, and `loop_semantics::readyz_reports_a_partition_stuck_on_retries_and_recovers`.
//!   If the retried record is gone meanwhile (retention, compaction), the
//!   partition goes on at the next one — `retry::a_retried_offset_deleted_meanwhile_continues_at_the_next_record`.
//!   A partition revoked while it waits is forgotten — `rebalance::a_partition_revoked_while_waiting_for_a_retry_is_forgotten`.
//! - Batch mode: a retryable batch error retries the whole batch (every
//!   partition rewound to its first record in it), a permanent one falls
//!   back to one record at a time — `retry::a_retryable_batch_error_retries_the_whole_batch_after_the_backoff`,
//!   `loop_semantics::a_batch_with_one_bad_item_falls_back_one_by_one`.
//! - A [`HandlerError::Permanent`] writes a `DeadLetter` to `<topic>-dlq` with
//!   the original bytes, key, headers, partition and offset, then commits and
//!   moves on — `loop_semantics::a_poison_record_is_dead_lettered_byte_exact_and_the_loop_goes_on`.
//! - Transactional mode, exactly once under read_committed: each input yields
//!   exactly its outputs, none missing, none twice — after a retryable
//!   failure part-way through a batch spanning two partitions
//!   (`exactly_once::a_retryable_failure_mid_batch_rewinds_every_partition_the_transaction_covered`),
//!   after transaction calls that time out and are resumed
//!   (`exactly_once::transaction_calls_that_time_out_are_resumed_not_aborted`),
//!   across a rebalance (`exactly_once::two_transactional_instances_one_leaves_every_input_yields_one_output`),
//!   after a SIGKILL between produce and commit (in `crates/service/tests`:
//!   `consume_process::a_transactional_crash_between_produce_and_commit_shows_nothing_then_exactly_one_output_each`).
//!   An aborted transaction's state changes are rolled back through
//!   [`Transform::aborted`] — `transform_state::an_aborted_transaction_rolls_the_transforms_state_back`;
//!   ticks produce in transactions of their own — `transform_state::ticks_produce_in_their_own_transactions_and_a_failed_tick_leaves_nothing`.
//! - A fatal producer error (fenced, out of sequence) — of the loop's
//!   producer, of any producer of the service, or returned by the handler as
//!   [`HandlerError::Fatal`] — stops the loop with an error (the service exits
//!   non-zero and is restarted) and dead-letters nothing —
//!   `fatal::a_fenced_producer_stops_every_loop_of_its_service_and_dead_letters_nothing`,
//!   `fatal::a_handlers_fatal_produce_error_stops_the_loop_without_a_dead_letter`;
//!   each producer has its own readiness condition — `fatal::each_producer_has_its_own_readiness_condition`.
//! - Start positions: an `on_assign` answer, however slow, holds only its
//!   partition and takes effect before the partition's first record, after
//!   the `assigned` hook — `starts::a_slow_on_assign_answer_holds_only_its_partition_and_applies_before_its_first_record`,
//!   `starts::an_on_assign_answer_committed_resumes_at_the_groups_committed_offset`,
//!   `loop_semantics::on_assign_can_seek_back_by_timestamp`; another
//!   partition's answer never cuts an open batch short —
//!   `starts::a_start_answer_arriving_while_a_batch_is_open_does_not_close_it`;
//!   no record below the seeked start is handed over (unit test
//!   `starts::tests::records_before_a_seeked_start_are_below_it_until_the_partition_is_forgotten`); no record of a
//!   revoked partition is handled after its `revoked` hook —
//!   `starts::revoked_names_the_partitions_taken_away_and_none_is_handled_after`;
//!   `until_end` stops at the ends captured at assignment —
//!   `starts::until_end_returns_after_processing_what_each_partition_held_at_assignment`;
//!   [`StartAt::Rebuild`] replays up to the committed offset without
//!   producing, so the outputs equal an uninterrupted run's —
//!   `transform_state::rebuild_replays_up_to_the_committed_offset_and_goes_on_as_if_uninterrupted`.
//! - The processing span of each record is a child of the producer's span
//!   (W3C `traceparent` header) — `tracing::producer_and_consumer_spans_share_one_trace_id`.

mod commits;
mod conditions;
mod consume_loop;
mod context;
mod dead_letter;
mod driver;
mod gather;
mod handler;
mod member;
mod membership;
mod modes;
mod rebuild;
mod record;
mod retries;
mod settings;
mod starts;
mod transaction;
mod transform;

pub use consume_loop::{ConsumeError, ConsumeLoop};
pub use dead_letter::{dead_letter_of, DeadLetterEncoder};
pub use handler::{BatchHandler, Handler, HandlerError, Transform};
pub use record::{Record, RecordHeader};
pub use settings::ConsumerSettings;
pub use starts::{StartAnswer, StartAt};

pub(crate) use conditions::unique_name;
