//! Guarantee: an `audit-sink export` extract is enough to check the trail
//! without the binary. Every row's hash recomputes from the extract's own
//! fields by the canonical bytes of docs/audit-extract.md, done by an
//! independent implementation: docs/audit-extract-check.py, in Python. It also
//! checks that consecutive positions link, for format-1 and format-2 links,
//! Avro and JSON values, both tables, as JSON lines and as CSV. The writer
//! schemas written by `--schemas` decode each value to its typed columns. A
//! change to any hashed field of the extract, or to a schema, fails the check,
//! so an export that dropped or altered an input of the hash would too.

mod common;

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use audit_sink::chain::Row;
use audit_sink::intake::{row_of, Kind};
use base64::Engine;
use common::{audit_event, rewrite_as_format_1, risk_report, Harness};
use dora_schema::CompiledSchema;
use dora_testkit as tk;
use serde_json::{Map, Value};

const CHECKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/audit-extract-check.py");

/// Runs the auditor's checker; returns (success, its output).
fn check(extract: &Path, format: &str, schemas: &Path) -> Result<(bool, String)> {
    let out = std::process::Command::new("python3")
        .arg(CHECKER)
        .arg(extract)
        .args(["--format", format, "--schemas"])
        .arg(schemas)
        .output()
        .context("running python3 docs/audit-extract-check.py")?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// Exports `args` (a period of one table) with its schemas into `dir`; returns (extract, schemas) paths.
async fn export(h: &Harness, dir: &Path, name: &str, args: &[&str]) -> Result<(PathBuf, PathBuf)> {
    let (extract, schemas) = (dir.join(name), dir.join(format!("{name}.schemas")));
    let schemas_arg = schemas.to_str().context("path")?;
    let mut all = vec!["export", "--from", "2026-01-01", "--to", "2027-01-01", "--schemas", schemas_arg];
    all.extend(args);
    let (code, out, err) = h.command(&all).await?;
    ensure!(code == Some(0), "export {args:?}: {err}");
    std::fs::write(&extract, out)?;
    Ok((extract, schemas))
}

fn lines(path: &Path) -> Result<Vec<Map<String, Value>>> {
    std::fs::read_to_string(path)?.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

fn write_lines(path: &Path, rows: &[Map<String, Value>]) -> Result<()> {
    let text: Vec<String> = rows.iter().map(serde_json::to_string).collect::<Result<_, _>>()?;
    Ok(std::fs::write(path, text.join("\n") + "\n")?)
}

/// The checker on `rows` with one change made by `change` must fail, saying each of `expected`.
fn tampered(
    (dir, schemas): (&Path, &Path),
    rows: &[Map<String, Value>],
    what: &str,
    change: impl FnOnce(&mut Vec<Map<String, Value>>),
    expected: &[&str],
) -> Result<()> {
    let mut rows = rows.to_vec();
    change(&mut rows);
    let path = dir.join("tampered.jsonl");
    write_lines(&path, &rows)?;
    let (ok, out) = check(&path, "jsonl", schemas)?;
    assert!(!ok, "{what}: the checker accepted a changed extract: {out}");
    for e in expected {
        assert!(out.contains(e), "{what}: expected {e:?} in {out}");
    }
    Ok(())
}

/// The writer schemas file as digest -> definition.
fn schema_file(path: &Path) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for s in lines(path)? {
        out.insert(s["writerSchemaSha256"].as_str().context("digest")?.into(), s["definition"].clone());
    }
    Ok(out)
}

/// Decodes each format-2 row's value with the exported schema its digest names (or as the seed's
/// JSON) and returns the first row whose typed columns differ from what the value holds.
fn undecoded_columns(rows: &[Map<String, Value>], schemas: &Map<String, Value>) -> Result<Option<String>> {
    for r in rows.iter().filter(|r| r["chainFormat"] == 2) {
        let value = base64::engine::general_purpose::STANDARD.decode(r["recordValueBase64"].as_str().context("value")?)?;
        let schema = match r["writerSchemaSha256"].as_str() {
            Some(d) => Some(CompiledSchema::parse("exported", schemas[d].as_str().context("no such schema")?)?),
            None => None,
        };
        let Row::Audit(a) = row_of(Kind::Audit, &value, schema.as_ref()).map_err(anyhow::Error::msg)? else {
            anyhow::bail!("not an audit event")
        };
        let when = chrono::DateTime::from_timestamp_micros(a.occurred_at_us).context("time")?;
        let decoded = serde_json::json!({
            "eventId": a.event_id, "timestamp": when.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "userId": a.user_id, "action": a.action, "resource": a.resource, "details": a.details,
            "ipAddress": a.ip_address, "userAgent": a.user_agent, "sessionId": a.session_id, "valueFormat": a.value_format,
        });
        for (k, v) in decoded.as_object().context("object")? {
            if r[k] != *v {
                return Ok(Some(format!("{} {k}", r["eventId"])));
            }
        }
    }
    Ok(None)
}

/// A value as the seed's JSON, with no optional field.
fn seed_json(n: i64) -> String {
    serde_json::json!({
        "eventId": format!("evt-json-{}-{n}", uuid::Uuid::new_v4().simple()), "timestamp": 1_795_771_815_200i64 + n,
        "userId": "user-9", "action": "LOGIN", "resource": "auth", "details": {"n": n, "note": "\"quoted\", a comma"},
    })
    .to_string()
}

/// A trail with format-1 links (rewritten as before V3) and format-2 links (Avro and JSON values), and reports.
async fn mixed_trail(h: &Harness) -> Result<()> {
    let events: Vec<_> = (0..4).map(audit_event).collect();
    let mut sink = h.spawn(&[]).await?;
    for e in &events[..2] {
        h.produce_event(e).await?;
    }
    h.wait_rows("audit_events", 2).await?;
    assert!(sink.terminate(tk::DEADLINE).await?.success(), "{}", sink.log());
    let su = h.owner().await?;
    su.batch_execute("SET session_replication_role = replica").await?;
    rewrite_as_format_1(&su, &h.audit_topic).await?;
    let mut sink = h.spawn(&[]).await?;
    for e in &events[2..] {
        h.produce_event(e).await?;
    }
    h.produce(&h.audit_topic, "2026-11-27-09", seed_json(0).as_bytes()).await?;
    let mut report = risk_report(1);
    report.risk_level = None;
    for r in [risk_report(0), report] {
        h.produce_report(&r).await?;
    }
    h.wait_rows("audit_events", 5).await?;
    h.wait_rows("compliance_reports", 2).await?;
    assert!(sink.terminate(tk::DEADLINE).await?.success(), "{}", sink.log());
    let (code, out) = h.verify().await?;
    ensure!(code == Some(0), "verify: {out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extract_alone_recomputes_every_hash_and_link_and_its_schemas_decode_every_value() -> Result<()> {
    let h = Harness::new(1, None).await?;
    mixed_trail(&h).await?;
    let dir = tempfile::tempdir()?;
    let (jsonl, schemas) = export(&h, dir.path(), "audit.jsonl", &[]).await?;
    let (csv, csv_schemas) = export(&h, dir.path(), "audit.csv", &["--format", "csv"]).await?;
    let (reports, report_schemas) = export(&h, dir.path(), "reports.csv", &["--table", "compliance-reports", "--format", "csv"]).await?;
    for (extract, format, schemas) in [(&jsonl, "jsonl", &schemas), (&csv, "csv", &csv_schemas)] {
        let (ok, out) = check(extract, format, schemas)?;
        assert!(ok, "{format}: {out}");
        let summary = "extract intact: 5 rows, 5 hashes recomputed, 4 links to a predecessor checked, 1 writer schemas";
        assert!(out.contains(summary), "{format}: {out}");
    }
    let (ok, out) = check(&reports, "csv", &report_schemas)?;
    assert!(ok && out.contains("2 rows, 2 hashes recomputed, 1 links to a predecessor checked, 1 writer schemas"), "{out}");

    // Format 1 (rewritten), then format 2: Avro with its writer schema's digest, then JSON without one.
    let rows = lines(&jsonl)?;
    let formats: Vec<_> = rows.iter().map(|r| (r["chainSeq"].as_i64(), r["chainFormat"].as_i64(), r["writerSchemaSha256"].is_string())).collect();
    let expected = [(0, 1, false), (1, 1, false), (2, 2, true), (3, 2, true), (4, 2, false)];
    assert_eq!(formats, expected.map(|(s, f, w)| (Some(s), Some(f), w)), "ordered by time = by position here");
    let exported = schema_file(&schemas)?;
    assert_eq!(undecoded_columns(&rows, &exported)?, None, "the exported schemas decode every value to its columns");

    let t = &h.audit_topic;
    let at = |seq: usize| format!("{t}/0 seq {seq} offset {seq}");
    let place = (dir.path(), schemas.as_path());
    let flip_value = |rows: &mut Vec<Map<String, Value>>| {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut v = b64.decode(rows[3]["recordValueBase64"].as_str().unwrap_or_default()).unwrap_or_default();
        *v.last_mut().expect("a value") ^= 1;
        rows[3].insert("recordValueBase64".into(), b64.encode(v).into());
    };
    tampered(place, &rows, "one bit of a value", flip_value, &[&format!("BROKEN {}: its fields do not hash", at(3))])?;
    let digest = rows[2]["writerSchemaSha256"].as_str().context("digest")?.to_string();
    let other = format!("{}{}", if digest.starts_with('0') { "1" } else { "0" }, &digest[1..]);
    tampered(place, &rows, "the writer schema's digest", |r| { r[2].insert("writerSchemaSha256".into(), other.into()); }, &[
        &format!("{}: its fields do not hash", at(2)),
        &format!("{}: writer schema", at(2)),
    ])?;
    tampered(place, &rows, "the chain format", |r| { r[1].insert("chainFormat".into(), 2.into()); }, &[&format!("{}: its fields do not hash", at(1))])?;
    tampered(place, &rows, "a format-1 typed column", |r| { r[0].insert("userId".into(), "mallory".into()); }, &[&format!("{}: its fields do not hash", at(0))])?;
    tampered(place, &rows, "a key made absent", |r| { r[4].insert("recordKeyBase64".into(), Value::Null); }, &[&format!("{}: its fields do not hash", at(4))])?;
    let later = |t: &Value| {
        let t = chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap_or_default()).expect("RFC 3339");
        (t + chrono::Duration::microseconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    };
    tampered(place, &rows, "the consumed-at microseconds", |r| { let c = later(&r[4]["consumedAt"]); r[4].insert("consumedAt".into(), c.into()); }, &[&format!("{}: its fields do not hash", at(4))])?;
    tampered(place, &rows, "a previous hash", |r| { r[3].insert("prevHash".into(), "00".repeat(32).into()); }, &[
        &format!("{}: its fields do not hash", at(3)),
        &format!("{}: does not link to seq 2", at(3)),
    ])?;
    tampered(place, &rows, "a field left out", |r| { r[2].remove("kafkaTimestamp"); }, &["unreadable (KeyError"])?;

    // A format-2 typed column is not hashed: the exported schema's decoding names it instead.
    let mut changed = rows.clone();
    changed[3].insert("userId".into(), "mallory".into());
    let event = rows[3]["eventId"].as_str().context("id")?;
    assert_eq!(undecoded_columns(&changed, &exported)?, Some(format!("\"{event}\" userId")));

    // A changed schema definition no longer matches its digest.
    let text = std::fs::read_to_string(&schemas)?;
    let bad = dir.path().join("bad.schemas");
    std::fs::write(&bad, text.replacen("\\\"name\\\"", "\\\"name\\\" ", 1))?;
    ensure!(std::fs::read_to_string(&bad)? != text, "the schema change did nothing");
    let (ok, out) = check(&jsonl, "jsonl", &bad)?;
    assert!(!ok && out.contains(&format!("writer schema {digest}: its definition does not hash")), "{out}");

    // CSV: an empty text and an absent value are different inputs.
    let text = std::fs::read_to_string(&csv)?;
    for replacement in [",\"\",", ",,"] {
        let changed = dir.path().join("changed.csv");
        std::fs::write(&changed, text.replacen(",\"10.1.2.3\",", replacement, 1))?;
        let (ok, out) = check(&changed, "csv", &csv_schemas)?;
        assert!(!ok && out.contains(&format!("{}: its fields do not hash", at(0))), "ipAddress {replacement}: {out}");
    }
    Ok(())
}
