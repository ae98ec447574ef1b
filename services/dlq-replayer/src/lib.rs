//! dlq-replayer: the dead-letter topics made operable. A service follows
//! every `<topic>-dlq` topic (new ones included), exports per topic the
//! letters waiting, the oldest one's age, and the letters replayed and parked,
//! and replays transient failures by itself; the same binary's commands let
//! an operator `list`, `inspect`, `replay` and `park` dead letters.
//!
//! # A dead-letter topic is a log of letters and their resolutions
//!
//! A `<topic>-dlq` record with a value is a dead letter (Avro `DeadLetter`,
//! or the seed's JSON). When letters are replayed or parked, a *resolution
//! marker* is written to the same topic and partition — a record without a
//! value whose headers name the letters (`dora-dlq-letter`:
//! `topic/partition/offset,offset,...`, one marker per transaction,
//! partition and action, at most [`letter::MARKER_LETTERS`] letters; older
//! markers name one), the action (`dora-dlq-resolution`) and who acted
//! (`dora-dlq-by`) — in the same Kafka transaction as the replayed records
//! (or the parked letters) and the audit event. Folding a partition's committed records in order therefore gives
//! its exact state ([`ledger`]): a letter is waiting until its marker, and
//! because the marker commits atomically with the replay, a letter is
//! replayed once and only once whoever replays it, and whenever a replay
//! was cut short (an aborted transaction leaves neither replay nor marker).
//!
//! # Replays are byte-exact, and only go back where they came from
//!
//! The replayed record is the original key, value and headers, byte for byte,
//! written to the original topic and partition, followed by `dora-replay-count`
//! (1, 2, ...), `dora-replay-of` (the letter's position) and
//! `dora-replayed-by`; a previous replay's headers are dropped so the count is
//! never ambiguous. When the record fails again, its new dead letter carries
//! these headers, so the count of replays survives the round trip. A letter is
//! replayed only to the topic its dead-letter topic belongs to, and only when
//! that topic is in the platform's catalog (`dlq.replay_topics`); the seed's
//! JSON dead letters keep neither the original key nor headers and can only
//! be parked.
//!
//! # Commands
//!
//! `list` and `inspect` read the topics with a plain reader (no group, nothing
//! written). `replay` and `park` read the topic, select the waiting letters,
//! and act through the platform's consume loop in transactional mode: per
//! letter the output, and per transaction its markers, its audit event and
//! the loop's progress commit together. See [`cli`].

pub mod automatic;
pub mod cli;
pub mod ledger;
pub mod letter;
pub mod metrics;
pub mod operator;
pub mod outbound;
pub mod selection;
pub mod service;
pub mod settings;
pub mod snapshot;

pub use service::run;
pub use settings::Settings;
