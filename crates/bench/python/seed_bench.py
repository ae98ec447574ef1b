"""The seed's Python client as a benchmark baseline: its AgentEventProducer and
ComplianceReportProducer classes, unchanged (seed_patterns.py), on a
kafka-python KafkaProducer with the seed's settings, producing agent events and
compliance reports flat out. Prints one JSON line (read by `cargo xtask bench`).

The producer handed to the classes is the seed's KafkaProducer with two
additions that do not change what is sent: it sends to the benchmark's topics
instead of the seed's fixed names (the classes hard-code 'agent-events',
'gap-assessments', 'risk-assessments'), and it times each record from send()
to the broker's acknowledgement.

python seed_bench.py --bootstrap 127.0.0.1:9092 --events 20000 --reports 5000 \
    --topic agent-events=bench-a --topic gap-assessments=bench-g --topic risk-assessments=bench-r
"""

import argparse
import json
import random
import sys
import time

import kafka
from kafka import KafkaProducer

from seed_patterns import AgentEventProducer, ComplianceReportProducer

AGENT_TYPES = ["gap-analyzer", "risk-assessor", "compliance-monitor", "report-generator"]


class BenchProducer(KafkaProducer):
    """The seed's KafkaProducer, sending to the benchmark's topics and timing acks."""

    def __init__(self, topics, **config):
        super().__init__(**config)
        self.topics = topics
        self.latencies = []
        self.failures = 0
        self.value_bytes = 0
        self.records = 0

    def send(self, topic, value=None, key=None, **kwargs):
        sent_at = time.perf_counter()
        future = super().send(self.topics.get(topic, topic), value=value, key=key, **kwargs)
        future.add_callback(self._acked, sent_at)
        future.add_errback(self._failed)
        return future

    def _acked(self, sent_at, metadata):
        self.latencies.append(time.perf_counter() - sent_at)
        self.value_bytes += max(metadata.serialized_value_size, 0)
        self.records += 1

    def _failed(self, _error):
        self.failures += 1


def seed_producer(bootstrap, topics):
    """The seed's producer settings (kafka-producer-consumer-patterns.md), PLAINTEXT locally."""
    return BenchProducer(
        topics,
        bootstrap_servers=[bootstrap],
        # Idempotency settings
        enable_idempotence=True,
        acks='all',
        retries=3,
        max_in_flight_requests_per_connection=1,
        # Serialization
        value_serializer=lambda v: json.dumps(v).encode('utf-8'),
        key_serializer=lambda k: k.encode('utf-8') if k else None,
        # Performance
        compression_type='snappy',
        batch_size=16384,
        linger_ms=10,
    )


def agent_step(agents, rng):
    """One event of a simulated agent: mostly heartbeats, some task events."""
    agent = agents[rng.randrange(len(agents))]
    roll = rng.random()
    if roll < 0.7:
        agent.send_heartbeat({"cpu_percent": round(rng.uniform(1, 95), 1),
                              "memory_mb": rng.randrange(128, 4096)})
    elif roll < 0.85:
        agent.send_event("TASK_STARTED", "HEALTHY", message="Starting DORA Art. 6 review",
                         task_id="task-%06d" % rng.randrange(1_000_000))
    else:
        agent.send_task_completion("task-%06d" % rng.randrange(1_000_000),
                                   {"gaps_found": rng.randrange(10), "score": round(rng.random(), 3)})


def report_step(reports, rng):
    """One compliance report: gap and risk assessments alternately."""
    org = "org-%03d" % rng.randrange(50)
    if rng.random() < 0.5:
        reports.send_gap_assessment(org, {"framework": "DORA", "articles_assessed": 64,
                                          "gaps": [{"article": "11", "status": "missing"}]})
    else:
        score = round(rng.random(), 3)
        reports.send_risk_assessment(org, {"overall_score": score,
                                           "risk_level": "HIGH" if score > 0.8 else "MEDIUM"})


def measure(producer, count, step):
    """Sends `count` records through `step` flat out; rate and ack latency percentiles."""
    producer.latencies.clear()
    producer.value_bytes = producer.records = producer.failures = 0
    started = time.perf_counter()
    for _ in range(count):
        step()
    producer.flush()
    elapsed = time.perf_counter() - started
    if producer.failures or producer.records != count:
        sys.exit("seed producer: %d of %d acknowledged, %d failed"
                 % (producer.records, count, producer.failures))
    lat = sorted(producer.latencies)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000.0
    return {"rate": count / elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "record_bytes": producer.value_bytes / max(producer.records, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--reports", type=int, default=5000)
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--topic", action="append", default=[], help="seed-topic=bench-topic")
    args = parser.parse_args()
    topics = dict(t.split("=", 1) for t in args.topic)
    rng = random.Random(7)

    producer = seed_producer(args.bootstrap, topics)
    agents = [AgentEventProducer(producer, "bench-agent-%d" % i, AGENT_TYPES[i % len(AGENT_TYPES)])
              for i in range(args.agents)]
    reports = ComplianceReportProducer(producer)
    # Untimed warm-up: connections, metadata, the idempotent producer id.
    agent_step(agents, rng)
    report_step(reports, rng)
    producer.flush()

    events = measure(producer, args.events, lambda: agent_step(agents, rng))
    submitted = measure(producer, args.reports, lambda: report_step(reports, rng))
    producer.close()
    print(json.dumps({
        "bench": "seed-python",
        "kafka_python": kafka.__version__,
        "python": sys.version.split()[0],
        "event_bytes": events["record_bytes"],
        "report_bytes": submitted["record_bytes"],
        "results": [
            {"group": "agent events", "name": "seed AgentEventProducer (kafka-python)",
             "rate": events["rate"], "unit": "events/s", "p50_ms": events["p50_ms"],
             "p99_ms": events["p99_ms"], "baseline": True},
            {"group": "reports", "name": "seed ComplianceReportProducer (kafka-python)",
             "rate": submitted["rate"], "unit": "reports/s", "p50_ms": submitted["p50_ms"],
             "p99_ms": submitted["p99_ms"], "baseline": True},
        ],
    }))


if __name__ == "__main__":
    main()
