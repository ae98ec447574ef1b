#!/usr/bin/env python3
"""Checks an `audit-sink export` extract without the audit-sink binary.

Recomputes every row's chain hash from the extract's own fields, following the
canonical bytes in docs/audit-extract.md, checks that each row whose
predecessor (same topic and partition, chainSeq - 1) is in the extract links
to it, that chainSeq 0 starts from 32 zero bytes, and, with --schemas, that
each writer schema hashes to its digest and that every digest a row names is
there. Python 3.9+, standard library only.

    python3 audit-extract-check.py EXTRACT [--schemas SCHEMAS]

EXTRACT is JSON lines or CSV (`--format csv`), either table. Exit 0 and one
summary line when everything checks; exit 1 with one `BROKEN ...` line per
row or schema that does not.
"""

import argparse
import base64
import datetime
import hashlib
import json
import struct
import sys

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
GENESIS = bytes(32)
TAGS = {1: b"dora-audit-link/1", 2: b"dora-audit-link/2"}


def csv_rows(text):
    """CSV as `audit-sink export` writes it: a present value is quoted, an
    absent one is an empty unquoted field (None here)."""
    records, record, i, n = [], [], 0, len(text)
    while i < n:
        if text[i] == '"':
            parts, j = [], i + 1
            while True:
                k = text.index('"', j)
                parts.append(text[j:k])
                if not text.startswith('"', k + 1):
                    break
                parts.append('"')
                j = k + 2
            record.append("".join(parts))
            i = k + 1
        else:
            k = i
            while k < n and text[k] not in ",\r\n":
                k += 1
            record.append(text[i:k] or None)
            i = k
        if text.startswith("\r\n", i):
            i += 1
        if i >= n or text[i] == "\n":
            records.append(record)
            record = []
        elif text[i] != ",":
            raise ValueError(f"CSV: unexpected {text[i]!r} after a field of record {len(records) + 1}")
        i += 1
    header, rows = records[0], []
    for r in records[1:]:
        if len(r) != len(header):
            raise ValueError(f"CSV: a record has {len(r)} fields, the header {len(header)}")
        rows.append(dict(zip(header, r)))
    return rows


def number(v, kind):
    """A number from JSON (a number) or CSV (its text)."""
    return None if v is None else kind(v)


def micros(t):
    """Microseconds since the epoch of an RFC 3339 time with a `Z` offset."""
    dt = datetime.datetime.fromisoformat(t.replace("Z", "+00:00"))
    return (dt - EPOCH) // datetime.timedelta(microseconds=1)


class Canon:
    """The canonical byte encodings of docs/audit-extract.md."""

    def __init__(self, tag):
        self.out = bytearray(tag)

    def byte(self, b):
        self.out.append(b)

    def bytes(self, b):
        self.out += struct.pack(">I", len(b)) + b

    def str(self, s):
        self.bytes(s.encode("utf-8"))

    def i32(self, v):
        self.out += struct.pack(">i", v)

    def i64(self, v):
        self.out += struct.pack(">q", v)

    def f64(self, v):
        self.out += struct.pack(">d", v)

    def opt(self, v, write):
        if v is None:
            self.byte(0)
        else:
            self.byte(1)
            write(v)


def canonical(row):
    """The canonical bytes of an extracted row's link (every extracted row is a stored record)."""
    fmt = number(row["chainFormat"], int)
    if fmt not in TAGS:
        raise ValueError(f"unknown chainFormat {fmt}")
    audit = "eventId" in row
    c = Canon(TAGS[fmt])
    c.str(row["topic"])
    c.i32(number(row["partition"], int))
    c.i64(number(row["chainSeq"], int))
    c.i64(number(row["offset"], int))
    c.str("stored")
    c.opt(row["eventId"] if audit else row["reportId"], c.str)
    c.byte(0)  # no reason
    c.i64(micros(row["consumedAt"]))
    c.opt(row["kafkaTimestamp"], lambda t: c.i64(micros(t)))
    c.opt(row["recordKeyBase64"], lambda k: c.bytes(base64.b64decode(k, validate=True)))
    c.opt(row["recordValueBase64"], lambda v: c.bytes(base64.b64decode(v, validate=True)))
    c.byte(1 if audit else 2)
    if fmt == 2:
        digest = row["writerSchemaSha256"]
        c.opt(digest, lambda d: c.out.extend(bytes.fromhex(d)))
    elif audit:
        c.str(row["eventId"])
        c.i64(micros(row["timestamp"]))
        for name in ("userId", "action", "resource", "details"):
            c.str(row[name])
        for name in ("ipAddress", "userAgent", "sessionId"):
            c.opt(row[name], c.str)
        c.str(row["valueFormat"])
    else:
        c.str(row["reportId"])
        c.str(row["organizationId"])
        c.i64(micros(row["timestamp"]))
        c.str(row["reportType"])
        c.opt(number(row["riskScore"], float), c.f64)
        c.opt(row["riskLevel"], c.str)
        for name in ("data", "version", "valueFormat"):
            c.str(row[name])
    return bytes(c.out)


def check(rows, schemas):
    """Returns (problems, summary)."""
    problems, hashes, linked = [], {}, 0
    for row in rows:
        try:
            where = f"{row['topic']}/{row['partition']} seq {row['chainSeq']} offset {row['offset']}"
            seq = number(row["chainSeq"], int)
            prev = bytes.fromhex(row["prevHash"])
            stored = bytes.fromhex(row["hash"])
            recomputed = hashlib.sha256(prev + canonical(row)).digest()
            digest = row["writerSchemaSha256"]
        except (KeyError, ValueError, TypeError) as e:
            problems.append(f"row {row.get('eventId') or row.get('reportId')}: unreadable ({type(e).__name__}: {e})")
            continue
        if recomputed != stored:
            problems.append(f"{where}: its fields do not hash to its hash")
        if seq == 0 and prev != GENESIS:
            problems.append(f"{where}: the first link's previous hash is not 32 zero bytes")
        if schemas is not None and digest is not None and digest not in schemas:
            problems.append(f"{where}: writer schema {digest} is not in the schemas file")
        hashes[(row["topic"], row["partition"], seq)] = (stored, prev, where)
    for (topic, partition, seq), (_, prev, where) in hashes.items():
        before = hashes.get((topic, partition, seq - 1))
        if before is None:
            continue
        linked += 1
        if before[0] != prev:
            problems.append(f"{where}: does not link to seq {seq - 1} (previous hash differs)")
    for digest, definition in (schemas or {}).items():
        if hashlib.sha256(definition.encode("utf-8")).hexdigest() != digest:
            problems.append(f"writer schema {digest}: its definition does not hash to its digest")
    summary = f"{len(rows)} rows, {len(hashes)} hashes recomputed, {linked} links to a predecessor checked"
    if schemas is not None:
        summary += f", {len(schemas)} writer schemas"
    return problems, summary


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("extract")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--schemas", help="the file written by export --schemas")
    a = p.parse_args()
    with open(a.extract, encoding="utf-8", newline="") as f:
        text = f.read()
    rows = csv_rows(text) if a.format == "csv" else [json.loads(l) for l in text.splitlines() if l.strip()]
    schemas = None
    if a.schemas:
        with open(a.schemas, encoding="utf-8") as f:
            lines = [json.loads(l) for l in f if l.strip()]
        schemas = {s["writerSchemaSha256"]: s["definition"] for s in lines}
    problems, summary = check(rows, schemas)
    for problem in problems:
        print(f"BROKEN {problem}")
    print(("extract BROKEN: " if problems else "extract intact: ") + summary)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
