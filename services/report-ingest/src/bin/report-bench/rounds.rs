//! The bulk row against the bare producer in `--rounds` alternating pairs:
//! a run on this 2-core machine (client, service and broker share it) sees the
//! bare producer alone swing by half between minutes, so one pair of figures
//! says little. Each round starts report-ingest, times the bulk load, stops
//! it, and times the bare producer on the same records, the order alternating
//! round by round (the broker's state after one does not always favour the
//! same one). The ratio reported is the median of the rounds' ratios, with
//! every round's figures beside it.

use dora_kafka::baseline::{self, RawRecord};
use dora_kafka::inspect::{ReadRequest, TopicReader};
use dora_kafka::producer::{AVRO_CONTENT_TYPE, CONTENT_TYPE_HEADER, PRODUCER_HEADER};

use crate::baselines::{cpu_seconds, Rate};
use crate::client_load::Mode;
use crate::service::{start_service, timed_load};
use crate::Args;

/// One round: the bulk row, its client's CPU per submission, and the bare producer.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub bulk: Rate,
    pub bulk_client_cpu_us: f64,
    pub bare: Rate,
}

impl Round {
    /// Bulk submissions/s over the bare producer's submissions/s.
    pub fn ratio(&self) -> f64 {
        self.bulk.per_s / self.bare.per_s
    }
}

/// `--rounds` rounds of the bulk row and the bare producer, alternating which
/// goes first. `records` are the submissions' records as
/// [`crate::baselines::submission_records`] builds them: `warm_up` untimed, then the timed.
pub async fn bulk_vs_bare(
    settings: &report_ingest::Settings,
    args: &Args,
    (warm, timed, passes): (&[RawRecord], &[RawRecord], usize),
) -> anyhow::Result<Vec<Round>> {
    let mut rounds = Vec::with_capacity(args.rounds);
    for r in 0..args.rounds.max(1) {
        let (bulk, bare) = if r % 2 == 0 {
            let bulk = bulk_row(settings, args).await?;
            (bulk, bare_row(settings, warm, (timed, passes), args.bare_window).await?)
        } else {
            let bare = bare_row(settings, warm, (timed, passes), args.bare_window).await?;
            (bulk_row(settings, args).await?, bare)
        };
        if r == 0 {
            same_headers(settings).await?;
        }
        let round = Round {
            bulk: bulk.0,
            bulk_client_cpu_us: bulk.1,
            bare,
        };
        eprintln!(
            "  round {}: bulk {:.0}/s ({:.1} us), bare {:.0}/s ({:.1} us), ratio {:.3}",
            r + 1,
            round.bulk.per_s,
            round.bulk.cpu_us,
            round.bare.per_s,
            round.bare.cpu_us,
            round.ratio()
        );
        rounds.push(round);
    }
    Ok(rounds)
}

/// report-ingest started for the row alone, the bulk load timed, stopped.
async fn bulk_row(settings: &report_ingest::Settings, args: &Args) -> anyhow::Result<(Rate, f64)> {
    let (_, service) = start_service(settings).await?;
    let row = timed_load(&service.addr, &service.token, args, Mode::Bulk).await;
    service.stop().await?;
    row
}

/// The headers report-ingest writes on each of its records (no trace
/// context: the bench's service runs without an OpenTelemetry exporter).
const SERVICE_HEADERS: [(&str, &[u8]); 2] = [
    (PRODUCER_HEADER, b"report-ingest"),
    (CONTENT_TYPE_HEADER, AVRO_CONTENT_TYPE.as_bytes()),
];

/// Fails unless the service's records (a report and an audit event of the
/// first bulk row) carry exactly [`SERVICE_HEADERS`], so the bare producer
/// writes the same records.
async fn same_headers(settings: &report_ingest::Settings) -> anyhow::Result<()> {
    let text = |headers: Vec<(&str, Option<&[u8]>)>| -> Vec<String> {
        headers
            .into_iter()
            .map(|(k, v)| format!("{k}={}", v.map(String::from_utf8_lossy).unwrap_or_default()))
            .collect()
    };
    let expected = text(SERVICE_HEADERS.iter().map(|(k, v)| (*k, Some(*v))).collect());
    for topic in [&settings.ingest.gap_topic, &settings.ingest.audit_topic] {
        let mut reader = TopicReader::open(&settings.common.kafka, ReadRequest::whole(topic)).await?;
        let record = loop {
            match reader.next_batch().await {
                Some(batch) => match batch?.into_iter().next() {
                    Some(record) => break record,
                    None => continue,
                },
                None => anyhow::bail!("{topic} holds no record of the bulk row"),
            }
        };
        let written = text(record.headers.iter().map(|h| (h.key.as_str(), h.value.as_deref())).collect());
        anyhow::ensure!(
            written == expected,
            "the service writes headers {written:?} on {topic}, the bare baseline {expected:?}"
        );
    }
    Ok(())
}

/// The bare producer writing `timed` `passes` times over after `warm`, with
/// [`SERVICE_HEADERS`], at most `window` records awaiting their acks.
async fn bare_row(
    settings: &report_ingest::Settings,
    warm: &[RawRecord],
    (timed, passes): (&[RawRecord], usize),
    window: usize,
) -> anyhow::Result<Rate> {
    let n = (timed.len() / 2 * passes) as f64;
    let cpu0 = cpu_seconds();
    let elapsed = baseline::produce_all_warm(
        &settings.common.kafka,
        &settings.producer,
        warm,
        (timed, passes),
        &SERVICE_HEADERS,
        window,
    )
    .await?;
    Ok(Rate {
        per_s: n / elapsed.as_secs_f64(),
        cpu_us: (cpu_seconds() - cpu0) * 1e6 / n,
    })
}

/// The round whose ratio is the median's (the lower middle for an even count).
pub fn median_round(rounds: &[Round]) -> Round {
    let mut sorted = rounds.to_vec();
    sorted.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
    sorted[(sorted.len() - 1) / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(bulk: f64, bare: f64) -> Round {
        let rate = |per_s| Rate { per_s, cpu_us: 1.0 };
        Round { bulk: rate(bulk), bulk_client_cpu_us: 1.0, bare: rate(bare) }
    }

    #[test]
    fn the_median_round_is_the_middle_ratio_not_the_middle_rate() {
        // Ratios 0.4, 0.9, 0.6: the middle one is the third round's.
        let rounds = [round(40.0, 100.0), round(90.0, 100.0), round(30.0, 50.0)];
        assert_eq!(median_round(&rounds).ratio(), 0.6);
        // An even count: the lower middle (0.4 of 0.2, 0.4, 0.6, 0.9).
        let rounds = [round(40.0, 100.0), round(90.0, 100.0), round(30.0, 50.0), round(20.0, 100.0)];
        assert_eq!(median_round(&rounds).ratio(), 0.4);
    }
}
