#!/usr/bin/env bash
# Kafka's own command-line tools, run from the jars the local stack cached.
#
#   deploy/local/kafka-tool.sh topics --bootstrap-server 127.0.0.1:9092 --list
#   deploy/local/kafka-tool.sh consumer-groups --bootstrap-server 127.0.0.1:9092 --describe --all-groups
#   deploy/local/kafka-tool.sh producer-perf-test --topic t --num-records 100000 --record-size 200 \
#       --throughput -1 --producer-props bootstrap.servers=127.0.0.1:9092
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tool="${1:-}"; shift || true
case "$tool" in
  topics)              class=org.apache.kafka.tools.TopicCommand ;;
  consumer-groups)     class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
  producer-perf-test)  class=org.apache.kafka.tools.ProducerPerformance ;;
  consumer-perf-test)  class=org.apache.kafka.tools.ConsumerPerformance ;;
  console-consumer)    class=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
  console-producer)    class=org.apache.kafka.tools.ConsoleProducer ;;
  get-offsets)         class=org.apache.kafka.tools.GetOffsetShell ;;
  broker-api-versions) class=org.apache.kafka.tools.BrokerApiVersionsCommand ;;
  configs)             class=kafka.admin.ConfigCommand ;;
  storage)             class=kafka.tools.StorageTool ;;
  *) echo "usage: $0 topics|consumer-groups|producer-perf-test|consumer-perf-test|console-consumer|console-producer|get-offsets|broker-api-versions|configs|storage [args]" >&2; exit 2 ;;
esac
exec bash "$HERE/stack.sh" kafka-class "$class" "$@"
