//! `list` and `inspect`: read-only views of dead-letter topics (nothing is
//! written, no consumer group is used).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use dora_schema::Codec;
use serde_json::{json, Value};

use super::time_text;
use crate::letter::{Format, Letter};
use crate::selection::Filter;
use crate::snapshot::{dlq_topic_named, dlq_topics, Snapshot};
use crate::Settings;

/// What a topic's `list` line says.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicSummary {
    /// The dead-letter topic.
    pub topic: String,
    /// Letters waiting.
    pub waiting: u64,
    /// Letters replayed (within the topic's retention).
    pub replayed: u64,
    /// Letters parked.
    pub parked: u64,
    /// When the oldest waiting letter was dead-lettered, epoch ms.
    pub oldest: Option<i64>,
    /// When the newest waiting letter was dead-lettered, epoch ms.
    pub newest: Option<i64>,
    /// Waiting letters by errorType.
    pub by_error_type: BTreeMap<String, u64>,
    /// Waiting letters by failedBy.
    pub by_failed_by: BTreeMap<String, u64>,
}

impl TopicSummary {
    /// The summary of a snapshot.
    pub fn of(snapshot: &Snapshot) -> Self {
        let counts = snapshot.ledger.counts(&snapshot.topic);
        let mut s = TopicSummary {
            topic: snapshot.topic.clone(),
            waiting: counts.waiting,
            replayed: counts.replayed,
            parked: counts.parked,
            ..Default::default()
        };
        for letter in snapshot.waiting() {
            let at = letter.dead_lettered_at();
            s.oldest = Some(s.oldest.map_or(at, |o| o.min(at)));
            s.newest = Some(s.newest.map_or(at, |n| n.max(at)));
            *s.by_error_type
                .entry(letter.error_type().to_string())
                .or_default() += 1;
            *s.by_failed_by
                .entry(letter.failed_by().to_string())
                .or_default() += 1;
        }
        s
    }
}

/// The dead-letter topics a command looks at: the one named, or every topic
/// matching `dlq.pattern`.
async fn topics(settings: &Settings, named: Option<&str>) -> Result<Vec<String>> {
    match named {
        Some(name) => Ok(vec![dlq_topic_named(name)]),
        None => dlq_topics(&settings.common.kafka, &settings.dlq.pattern).await,
    }
}

/// `list`.
pub async fn list(
    settings: &Settings,
    codec: &Codec,
    named: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(
            out,
            "{:<40} {:>8} {:>8} {:>8}  {:<24} {:<24}",
            "DEAD-LETTER TOPIC", "WAITING", "REPLAYED", "PARKED", "OLDEST", "NEWEST"
        )?;
    }
    for topic in topics(settings, named).await? {
        let snapshot = Snapshot::read(&settings.common.kafka, codec, &topic).await?;
        let s = TopicSummary::of(&snapshot);
        if json {
            writeln!(out, "{}", serde_json::to_string(&s)?)?;
            continue;
        }
        let time = |t: Option<i64>| t.map(time_text).unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:<40} {:>8} {:>8} {:>8}  {:<24} {:<24}",
            s.topic,
            s.waiting,
            s.replayed,
            s.parked,
            time(s.oldest),
            time(s.newest)
        )?;
        let counts = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        if s.waiting > 0 {
            writeln!(out, "    by errorType: {}", counts(&s.by_error_type))?;
            writeln!(out, "    by failedBy:  {}", counts(&s.by_failed_by))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How `inspect` shows letters.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// Also resolved letters.
    pub all: bool,
    /// At most this many.
    pub limit: Option<usize>,
    /// JSON lines instead of text.
    pub json: bool,
}

/// `inspect`.
pub async fn inspect(
    settings: &Settings,
    codec: &Codec,
    named: Option<&str>,
    filter: &Filter,
    view: View,
) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut shown = 0;
    for topic in topics(settings, named).await? {
        let snapshot = Snapshot::read(&settings.common.kafka, codec, &topic).await?;
        for letter in &snapshot.letters {
            if view.limit.is_some_and(|l| shown >= l) {
                return Ok(ExitCode::SUCCESS);
            }
            let state = state_of(&snapshot, letter);
            if (!view.all && state != "waiting") || !filter.matches(letter) {
                continue;
            }
            shown += 1;
            let described = describe(codec, letter, &state).await;
            if view.json {
                writeln!(out, "{}", serde_json::to_string(&described)?)?;
            } else {
                write_text(&mut out, &described)?;
            }
        }
    }
    if !view.json && shown == 0 {
        writeln!(out, "no dead letters match")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `waiting`, `replayed` or `parked`.
pub(crate) fn state_of(snapshot: &Snapshot, letter: &Letter) -> String {
    match snapshot.ledger.resolution(&letter.position) {
        Some(r) => r.action.as_str().to_string(),
        None => "waiting".to_string(),
    }
}

/// A value shown as what it decodes to, else as bytes.
async fn shown_value(codec: &Codec, bytes: &[u8]) -> Value {
    match codec.decode_generic(bytes).await {
        Ok(v) => json!({
            "format": if v.record.is_some() { "avro" } else { "json" },
            "record": v.record,
            "value": v.json,
        }),
        Err(e) => json!({
            "format": "bytes",
            "undecodable": e.to_string(),
            "text": String::from_utf8_lossy(bytes),
            "hex": hex(bytes),
        }),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn header_json(key: &str, value: Option<&[u8]>) -> Value {
    json!({"key": key, "value": value.map(|v| String::from_utf8_lossy(v).into_owned())})
}

/// One letter as JSON (also the source of the text view).
pub(crate) async fn describe(codec: &Codec, letter: &Letter, state: &str) -> Value {
    let d = letter.dead_letter.as_ref().ok();
    let original_value = match d {
        Some(d) => shown_value(codec, &d.original_message).await,
        None => shown_value(codec, &letter.value).await,
    };
    json!({
        "position": letter.position.to_string(),
        "state": state,
        "format": letter.format,
        "errorType": letter.error_type(),
        "errorMessage": letter.error_message(),
        "failedBy": letter.failed_by(),
        "deadLetteredAt": time_text(letter.dead_lettered_at()),
        "retryCount": d.map(|d| d.retry_count),
        "replays": letter.replays(),
        "originalTopic": d.map(|d| d.original_topic.clone()),
        "originalPartition": d.map(|d| d.original_partition),
        "originalOffset": d.map(|d| d.original_offset),
        "originalTimestamp": d.and_then(|d| d.original_timestamp).map(time_text),
        "originalKey": letter.original_key_text(),
        "originalHeaders": d.map(|d| d.original_headers.iter().map(|h| header_json(&h.key, h.value.as_deref())).collect::<Vec<_>>()),
        "originalValue": original_value,
    })
}

fn write_text(out: &mut impl Write, v: &Value) -> std::io::Result<()> {
    let s = |k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v[k].to_string())
    };
    writeln!(
        out,
        "{}  [{}]  {}  dead-lettered {} by {}",
        s("position"),
        s("state"),
        s("errorType"),
        s("deadLetteredAt"),
        s("failedBy")
    )?;
    writeln!(out, "  error:    {}", s("errorMessage"))?;
    if v["format"] == Format::SeedJson.as_json() {
        writeln!(
            out,
            "  format:   the seed's JSON dead letter (no original position, key or headers)"
        )?;
    }
    writeln!(
        out,
        "  original: {}/{}@{}  key {}  replays {}",
        s("originalTopic"),
        s("originalPartition"),
        s("originalOffset"),
        s("originalKey"),
        s("replays")
    )?;
    if let Some(headers) = v["originalHeaders"].as_array().filter(|h| !h.is_empty()) {
        let text: Vec<String> = headers
            .iter()
            .map(|h| format!("{}={}", h["key"].as_str().unwrap_or(""), h["value"]))
            .collect();
        writeln!(out, "  headers:  {}", text.join(", "))?;
    }
    let value = &v["originalValue"];
    match value["format"].as_str() {
        Some("bytes") => writeln!(
            out,
            "  value:    {} bytes, not decodable ({}): {}",
            value["hex"].as_str().map_or(0, |h| h.len() / 2),
            value["undecodable"].as_str().unwrap_or(""),
            value["text"]
        )?,
        Some(f) => writeln!(
            out,
            "  value:    ({f}{}) {}",
            value["record"]
                .as_str()
                .map(|r| format!(" {r}"))
                .unwrap_or_default(),
            value["value"]
        )?,
        None => {}
    }
    writeln!(out)
}

impl Format {
    fn as_json(self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}
