# shellcheck shell=bash
# shellcheck disable=SC2034 # variables are used by the scripts that source this file
# Shared functions for deploy/local/{up,down,status}: a single-node Kafka (KRaft)
# and a single-node Cassandra on 127.0.0.1, run from jars resolved from Maven Central.
# Sourced, never executed.

# ---------------------------------------------------------------------------
# Locations and constants
# ---------------------------------------------------------------------------

LOCAL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LOCAL_DIR/../.." && pwd)

CACHE_DIR=${TOLLGATE_CACHE:-$HOME/.cache/tollgate}
STATE_DIR=${TOLLGATE_LOCAL_DIR:-$HOME/.local/state/tollgate-local}
KEYSPACE=${TOLLGATE_KEYSPACE:-tollgate}
HEALTH_TIMEOUT=${TOLLGATE_HEALTH_TIMEOUT:-180}
JAVA=${JAVA:-java}

KAFKA_POM=$LOCAL_DIR/kafka-pom.xml
CASSANDRA_POM=$LOCAL_DIR/cassandra-pom.xml

BIND=127.0.0.1
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
# A second listener that requires SASL/PLAIN, for testing clients' security settings.
KAFKA_SASL_PORT=9094
KAFKA_SASL_USER=${TOLLGATE_KAFKA_SASL_USER:-tollgate}
KAFKA_SASL_PASSWORD=${TOLLGATE_KAFKA_SASL_PASSWORD:-tollgate-local-sasl-password}
CQL_PORT=9042
CASSANDRA_STORAGE_PORT=7000
CASSANDRA_JMX_PORT=7199

KAFKA_DIR=$STATE_DIR/kafka
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_PROPS=$KAFKA_DIR/server.properties
KAFKA_LOG4J=$KAFKA_DIR/log4j.properties
KAFKA_CLIENT_PROPS=$KAFKA_DIR/client.properties
KAFKA_LOG=$KAFKA_DIR/kafka.log
KAFKA_PID=$KAFKA_DIR/kafka.pid
KAFKA_MAIN=kafka.Kafka

CASSANDRA_DIR=$STATE_DIR/cassandra
CASSANDRA_DATA=$CASSANDRA_DIR/data
CASSANDRA_YAML=$CASSANDRA_DIR/cassandra.yaml
CASSANDRA_LOGBACK=$CASSANDRA_DIR/logback.xml
CASSANDRA_LOG=$CASSANDRA_DIR/cassandra.log
CASSANDRA_PID=$CASSANDRA_DIR/cassandra.pid
CASSANDRA_MAIN=org.apache.cassandra.service.CassandraDaemon
# Password authentication is on (as in production); clients log in as the built-in superuser.
CQL_USER=${TOLLGATE_CQL_USER:-cassandra}
CQL_PASSWORD=${TOLLGATE_CQL_PASSWORD:-cassandra}
# Client TLS is offered on the CQL port (plaintext still works): a self-signed node certificate,
# made once; clients trust $CQL_CA.
CASSANDRA_TLS=$CASSANDRA_DIR/tls
CQL_CA=$CASSANDRA_TLS/node.pem
CASSANDRA_KEYSTORE=$CASSANDRA_TLS/node.p12
CASSANDRA_KEYSTORE_PASSWORD=tollgate-local-keystore
# Redis for the shared response cache (gateway `cache_params: {type: redis}`), no password,
# loopback only, an LRU cache of at most REDIS_MAXMEMORY.
REDIS_PORT=${TOLLGATE_REDIS_PORT:-6390}
# The same Redis over TLS (`cache_params: {type: redis, ssl: true, ssl_ca_certs: $REDIS_CA}` or
# `rediss://`): a CA and a server certificate for 127.0.0.1/localhost made by openssl at first
# start and kept; client certificates are accepted, not required (one signed by the CA is made
# for trying `ssl_certfile`/`ssl_keyfile`).
REDIS_TLS_PORT=${TOLLGATE_REDIS_TLS_PORT:-6391}
REDIS_DIR=$STATE_DIR/redis
REDIS_TLS=$REDIS_DIR/tls
REDIS_CA=$REDIS_TLS/ca.pem
REDIS_CONF=$REDIS_DIR/redis.conf
REDIS_LOG=$REDIS_DIR/redis.log
REDIS_PID=$REDIS_DIR/redis.pid
REDIS_MAIN=redis-server
REDIS_MAXMEMORY=${TOLLGATE_REDIS_MAXMEMORY:-256mb}
# Heap and extra JVM flags of the node (deploy/local/cluster runs three smaller ones).
CASSANDRA_HEAP=${TOLLGATE_CASSANDRA_HEAP:-1g}
CASSANDRA_EXTRA_OPTS=()

# JVM flags for short-lived tool processes (topic admin, storage format): start fast, stay small.
TOOL_JVM_OPTS=(-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true)

# ---------------------------------------------------------------------------
# Output and small helpers
# ---------------------------------------------------------------------------

log() { printf '[tollgate-local] %s\n' "$*"; }
warn() { printf '[tollgate-local] warning: %s\n' "$*" >&2; }
die() {
  printf '[tollgate-local] error: %s\n' "$*" >&2
  exit 1
}

# Milliseconds since the epoch (bash 5 EPOCHREALTIME; '.' or ',' as decimal separator).
now_ms() {
  local t=${EPOCHREALTIME//[.,]/}
  echo $((t / 1000))
}

# Formats a duration in milliseconds as seconds with one decimal: 12345 -> 12.3s
fmt_ms() {
  local ms=$1
  printf '%d.%ds' $((ms / 1000)) $((ms % 1000 / 100))
}

# Reads a version from a pom: pom_version FILE ARTIFACT_ID
pom_version() {
  sed -n "s|.*<artifactId>$2</artifactId><version>\([^<]*\)</version>.*|\1|p" "$1" | head -n 1
}

KAFKA_VERSION=$(pom_version "$KAFKA_POM" kafka_2.13)
CASSANDRA_VERSION=$(pom_version "$CASSANDRA_POM" cassandra-all)
[[ -n $KAFKA_VERSION && -n $CASSANDRA_VERSION ]] ||
  die "could not read the Kafka/Cassandra versions from $KAFKA_POM and $CASSANDRA_POM"

KAFKA_LIBS=$CACHE_DIR/kafka-$KAFKA_VERSION/libs
CASSANDRA_LIBS=$CACHE_DIR/cassandra-$CASSANDRA_VERSION/libs

require_cmd() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' is required but not on PATH"
  done
}

require_java() {
  require_cmd "$JAVA"
  local v
  v=$("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p')
  [[ $v =~ ^[0-9]+$ ]] || die "could not determine the Java version of '$JAVA'"
  ((v >= 17)) || die "Java 17 or newer is required ('$JAVA' is Java $v); set JAVA=/path/to/java"
}

# ---------------------------------------------------------------------------
# Jar resolution (Maven Central -> cache)
# ---------------------------------------------------------------------------

# resolve_jars NAME POM LIBS_DIR: copies the runtime dependencies of POM into LIBS_DIR.
# Skipped when LIBS_DIR/../.complete records the checksum of the same pom.
resolve_jars() {
  local name=$1 pom=$2 libs=$3
  local marker tmp sum t0
  marker=$(dirname "$libs")/.complete
  sum=$(sha256sum "$pom" | cut -d' ' -f1)
  if [[ -f $marker && $(cat "$marker") == "$sum" && -d $libs ]]; then
    return 0
  fi
  require_cmd mvn
  log "resolving $name jars from Maven Central into $libs ..."
  tmp=$libs.tmp.$$
  rm -rf "$tmp"
  mkdir -p "$tmp"
  t0=$(now_ms)
  if ! mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$tmp" >"$tmp.mvn.log" 2>&1; then
    tail -n 40 "$tmp.mvn.log" >&2
    rm -rf "$tmp"
    die "mvn failed to resolve $name (full output: $tmp.mvn.log)"
  fi
  rm -f "$tmp.mvn.log"
  rm -rf "$libs"
  mv "$tmp" "$libs"
  echo "$sum" >"$marker"
  log "$name: $(find "$libs" -name '*.jar' | wc -l) jars resolved in $(fmt_ms $(($(now_ms) - t0)))"
}

ensure_jars() {
  resolve_jars "Kafka $KAFKA_VERSION" "$KAFKA_POM" "$KAFKA_LIBS"
  resolve_jars "Cassandra $CASSANDRA_VERSION" "$CASSANDRA_POM" "$CASSANDRA_LIBS"
}

# ---------------------------------------------------------------------------
# cqlsh
# ---------------------------------------------------------------------------

CQLSH=

# Finds cqlsh (PATH, then the scripts directory of python3); installs it from PyPI
# when INSTALL=1 and it is missing. Sets CQLSH; returns 1 if it is unavailable.
find_cqlsh() {
  local install=${1:-0} scripts
  if command -v cqlsh >/dev/null 2>&1; then
    CQLSH=$(command -v cqlsh)
    return 0
  fi
  if command -v python3 >/dev/null 2>&1; then
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
    if [[ -n $scripts && -x $scripts/cqlsh ]]; then
      CQLSH=$scripts/cqlsh
      return 0
    fi
    if ((install)); then
      log "installing cqlsh from PyPI (python3 -m pip install --quiet cqlsh) ..."
      PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check cqlsh >&2 ||
        die "pip could not install cqlsh"
      hash -r
      find_cqlsh 0 && return 0
    fi
  fi
  return 1
}

ensure_cqlsh() {
  find_cqlsh 1 || die "cqlsh is not available (install it with: python3 -m pip install cqlsh)"
}

# cql ARGS...: runs cqlsh against the local node. Output (stdout and stderr together) is
# printed without cqlsh's "built against 5.0.0, but this server is ..." notice and its password
# advice.
cql() {
  local out rc=0
  out=$("$CQLSH" "$BIND" "$CQL_PORT" -u "$CQL_USER" -p "$CQL_PASSWORD" "$@" 2>&1) || rc=$?
  # The local node's login is no secret; cqlsh's advice about passwords on the command line is
  # noise here.
  out=$(grep -v -e '^WARNING: cqlsh was built against' -e '^Warning: Using a password on the command line' \
    -e '^Recommendation: use the credentials file' <<<"$out" | sed '/^$/d' || true)
  [[ -z $out ]] || printf '%s\n' "$out"
  return "$rc"
}

# ---------------------------------------------------------------------------
# Processes, pid files, ports
# ---------------------------------------------------------------------------

# pid_cmdline PID: the command line of PID with spaces, empty if it is gone.
pid_cmdline() {
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true
}

# service_pid PIDFILE MAINCLASS: prints the pid if the pid file names a live process
# running MAINCLASS. Returns 0 = running, 1 = no pid file, 2 = stale pid file.
service_pid() {
  local file=$1 main=$2 pid
  [[ -f $file ]] || return 1
  pid=$(tr -dc '0-9' <"$file")
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && [[ " $(pid_cmdline "$pid") " == *" $main "* ]]; then
    echo "$pid"
    return 0
  fi
  echo "${pid:-?}"
  return 2
}

# port_owner PORT: prints "pid N: command" of the process listening on 127.0.0.1:PORT
# (or any address), nothing if the port is free.
port_owner() {
  local port=$1 line pid
  line=$(ss -Hltnp "sport = :$port" 2>/dev/null | head -n 1)
  [[ -n $line ]] || return 0
  pid=$(grep -o 'pid=[0-9]*' <<<"$line" | head -n 1 | cut -d= -f2)
  if [[ -n $pid ]]; then
    printf 'pid %s: %s' "$pid" "$(pid_cmdline "$pid" | cut -c1-160)"
  else
    printf 'unknown process (%s)' "$(tr -s ' ' <<<"$line")"
  fi
}

# check_ports_free SERVICE PORT...: fails naming the first port in use and its owner.
check_ports_free() {
  local service=$1 port owner
  shift
  for port in "$@"; do
    owner=$(port_owner "$port")
    if [[ -n $owner ]]; then
      die "cannot start $service: port $port is already in use by $owner"
    fi
  done
}

# port_open PORT: true if something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$BIND/$1" 2>/dev/null
}

# stop_pid NAME PIDFILE MAINCLASS: SIGTERM, wait up to 60 s, then SIGKILL; removes the pid file.
stop_pid() {
  local name=$1 file=$2 main=$3 pid rc=0 i
  pid=$(service_pid "$file" "$main") || rc=$?
  case $rc in
  1)
    log "$name: not running"
    return 0
    ;;
  2)
    log "$name: removing stale pid file ($pid is not running)"
    rm -f "$file"
    return 0
    ;;
  esac
  log "$name: stopping pid $pid (SIGTERM) ..."
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 120; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    warn "$name: pid $pid still alive after 60 s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
  fi
  rm -f "$file"
  log "$name: stopped"
}

# launch LOGFILE PIDFILE CMD...: starts CMD detached (own session, immune to hangups),
# output appended to LOGFILE, and writes its pid to PIDFILE.
launch() {
  local logfile=$1 pidfile=$2
  shift 2
  printf '\n===== %s starting: %s\n' "$(date -Is)" "$*" >>"$logfile"
  setsid nohup "$@" >>"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

# ---------------------------------------------------------------------------
# Health checks (one try each)
# ---------------------------------------------------------------------------

# kafka_tool MAINCLASS ARGS...: runs a Kafka command-line tool, bounded by
# KAFKA_TOOL_TIMEOUT seconds (default 120).
kafka_tool() {
  local main=$1
  shift
  timeout "${KAFKA_TOOL_TIMEOUT:-120}" "$JAVA" "${TOOL_JVM_OPTS[@]}" \
    -Dlog4j.configuration="file:$KAFKA_DIR/tools-log4j.properties" \
    -cp "$KAFKA_LIBS/*" "$main" "$@"
}

kafka_topics() {
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BIND:$KAFKA_PORT" \
    --command-config "$KAFKA_CLIENT_PROPS" "$@"
}

# The broker answers a metadata request (lists topics).
kafka_healthy() {
  port_open "$KAFKA_PORT" || return 1
  [[ -f $KAFKA_CLIENT_PROPS ]] || write_kafka_client_config
  KAFKA_TOOL_TIMEOUT=30 kafka_topics --list >/dev/null 2>&1
}

# CQL answers a query on the system keyspace.
cassandra_healthy() {
  port_open "$CQL_PORT" || return 1
  [[ -n $CQLSH ]] || find_cqlsh 0 || return 1
  timeout 20 "$CQLSH" "$BIND" "$CQL_PORT" -u "$CQL_USER" -p "$CQL_PASSWORD" --connect-timeout=5 \
    --request-timeout=10 -e 'SELECT release_version FROM system.local' >/dev/null 2>&1
}

# ---------------------------------------------------------------------------
# Configuration files (regenerated on every start; data is kept)
# ---------------------------------------------------------------------------

write_kafka_client_config() {
  mkdir -p "$KAFKA_DIR"
  cat >"$KAFKA_CLIENT_PROPS" <<EOF
# Client settings for the admin tools used by deploy/local (fail fast).
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF
  cat >"$KAFKA_DIR/tools-log4j.properties" <<'EOF'
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
}

write_kafka_config() {
  mkdir -p "$KAFKA_DATA"
  cat >"$KAFKA_PROPS" <<EOF
# Generated by deploy/local/up (Tollgate local infrastructure). Edits are overwritten.
# Single-node KRaft: this process is both broker and controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$BIND:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$BIND:$KAFKA_PORT,SASL_PLAINTEXT://$BIND:$KAFKA_SASL_PORT,CONTROLLER://$BIND:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$BIND:$KAFKA_PORT,SASL_PLAINTEXT://$BIND:$KAFKA_SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
# SASL/PLAIN on port $KAFKA_SASL_PORT, one user: tests of clients' security settings.
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="$KAFKA_SASL_USER" password="$KAFKA_SASL_PASSWORD" user_$KAFKA_SASL_USER="$KAFKA_SASL_PASSWORD";

log.dirs=$KAFKA_DATA
num.partitions=1
auto.create.topics.enable=false
delete.topic.enable=true

# One broker: every replication factor is 1.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1

# Tests should not wait for consumer-group rebalances.
group.initial.rebalance.delay.ms=0

# Small heap: keep the compaction dedupe buffer small (default 128 MiB).
log.cleaner.dedupe.buffer.size=33554432
num.network.threads=3
num.io.threads=4
log.retention.hours=168
EOF
  cat >"$KAFKA_LOG4J" <<'EOF'
# Generated by deploy/local/up. Everything goes to stdout, which is kafka.log.
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.org.apache.kafka=INFO
log4j.logger.kafka=INFO
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.network.RequestChannel$=WARN
log4j.logger.kafka.log.LogCleaner=INFO
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.authorizer.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
EOF
  write_kafka_client_config
}

write_cassandra_config() {
  mkdir -p "$CASSANDRA_DATA"/{data,commitlog,hints,saved_caches,cdc_raw} "$CASSANDRA_DIR"/{logs,triggers}
  cat >"$CASSANDRA_YAML" <<EOF
# Generated by deploy/local/up (Tollgate local infrastructure). Edits are overwritten.
# A single-node development/test cluster; not a production configuration.
cluster_name: 'Tollgate Local'
num_tokens: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$BIND:$CASSANDRA_STORAGE_PORT"

listen_address: $BIND
rpc_address: $BIND
storage_port: $CASSANDRA_STORAGE_PORT
start_native_transport: true
native_transport_port: $CQL_PORT

data_file_directories:
  - $CASSANDRA_DATA/data
commitlog_directory: $CASSANDRA_DATA/commitlog
hints_directory: $CASSANDRA_DATA/hints
saved_caches_directory: $CASSANDRA_DATA/saved_caches
cdc_raw_directory: $CASSANDRA_DATA/cdc_raw

commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 32MiB

# A fresh cluster: no 4.x compatibility needed.
storage_compatibility_mode: NONE

# Generous timeouts: lightweight transactions (Paxos) and logged batches on a small,
# shared test machine must not time out spuriously.
read_request_timeout: 5000ms
range_request_timeout: 10000ms
write_request_timeout: 5000ms
counter_write_request_timeout: 5000ms
cas_contention_timeout: 5000ms
truncate_request_timeout: 60000ms
request_timeout: 10000ms
# Paxos v2: two round trips per LWT instead of four.
paxos_variant: v2

# Batches: warn/fail later than the defaults (5KiB/50KiB) so test batches pass.
batch_size_warn_threshold: 64KiB
batch_size_fail_threshold: 640KiB

# Test suites drop and truncate tables often: no snapshots.
auto_snapshot: false
snapshot_before_compaction: false

hinted_handoff_enabled: false

# Password authentication, as a production cluster has it (the built-in superuser logs in).
authenticator: PasswordAuthenticator
authorizer: AllowAllAuthorizer

# TLS offered to clients on the CQL port; plaintext connections are still accepted.
client_encryption_options:
  enabled: true
  optional: true
  keystore: $CASSANDRA_KEYSTORE
  keystore_password: $CASSANDRA_KEYSTORE_PASSWORD
  store_type: PKCS12
EOF
  cat >"$CASSANDRA_LOGBACK" <<'EOF'
<!-- Generated by deploy/local/up. Everything goes to stdout, which is cassandra.log. -->
<configuration scan="false">
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder>
      <pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern>
    </encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="STDOUT" />
  </root>
  <logger name="com.thinkaurelius.thrift" level="ERROR"/>
</configuration>
EOF
  cat >"$CASSANDRA_DIR/logback-tools.xml" <<'EOF'
<!-- Generated by deploy/local/up. Cassandra tools (nodetool): warnings to stderr. -->
<configuration>
  <appender name="STDERR" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>%-5level %date{HH:mm:ss,SSS} %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="STDERR" /></root>
</configuration>
EOF
}

# Module access Cassandra needs on Java 17, as in Cassandra's conf/jvm17-server.options
# (also needed by its tools, e.g. nodetool).
CASSANDRA_JPMS_OPTS=(
  -Djdk.attach.allowAttachSelf=true
  --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
  --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
  --add-exports java.sql/java.sql=ALL-UNNAMED
  --add-exports java.base/java.lang.ref=ALL-UNNAMED
  --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
  --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
  --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
  --add-opens java.base/java.lang.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
  --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
  --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
  --add-opens java.base/jdk.internal.math=ALL-UNNAMED
  --add-opens java.base/jdk.internal.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
  --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
  --add-opens java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens java.base/java.io=ALL-UNNAMED
  --add-opens java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
  --add-opens java.base/java.lang=ALL-UNNAMED
  --add-opens java.base/java.util=ALL-UNNAMED
  -Dio.netty.tryReflectionSetAccessible=true
  -Dio.netty.allocator.useCacheForAllThreads=true
  -Dio.netty.allocator.maxOrder=11
)

# ---------------------------------------------------------------------------
# Start commands
# ---------------------------------------------------------------------------

format_kafka_storage() {
  if [[ -f $KAFKA_DATA/meta.properties ]]; then
    return 0
  fi
  local id
  id=$(kafka_tool kafka.tools.StorageTool random-uuid) || die "Kafka StorageTool random-uuid failed"
  log "kafka: formatting storage in $KAFKA_DATA (cluster id $id)"
  kafka_tool kafka.tools.StorageTool format -t "$id" -c "$KAFKA_PROPS" >>"$KAFKA_LOG" 2>&1 ||
    die "Kafka storage format failed; see $KAFKA_LOG"
}

start_kafka() {
  launch "$KAFKA_LOG" "$KAFKA_PID" \
    "$JAVA" -Xms512m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    -Djava.awt.headless=true -Dlog4j.configuration="file:$KAFKA_LOG4J" \
    -cp "$KAFKA_LIBS/*" "$KAFKA_MAIN" "$KAFKA_PROPS"
}

# ensure_cassandra_tls: a self-signed certificate for the node (made once, kept across starts),
# its keystore, and the certificate as PEM for clients to trust.
ensure_cassandra_tls() {
  [[ -f $CASSANDRA_KEYSTORE && -f $CQL_CA ]] && return 0
  local keytool
  keytool=$(dirname "$(readlink -f "$(command -v "$JAVA")")")/keytool
  [[ -x $keytool ]] || keytool=keytool
  mkdir -p "$CASSANDRA_TLS"
  rm -f "$CASSANDRA_KEYSTORE" "$CQL_CA"
  "$keytool" -genkeypair -alias node -keyalg RSA -keysize 2048 -validity 3650 -dname "CN=$BIND" \
    -ext "SAN=ip:$BIND" -keystore "$CASSANDRA_KEYSTORE" -storetype PKCS12 \
    -storepass "$CASSANDRA_KEYSTORE_PASSWORD" -keypass "$CASSANDRA_KEYSTORE_PASSWORD" >/dev/null 2>&1 ||
    die "keytool could not make the node's certificate"
  "$keytool" -exportcert -rfc -alias node -keystore "$CASSANDRA_KEYSTORE" -storetype PKCS12 \
    -storepass "$CASSANDRA_KEYSTORE_PASSWORD" >"$CQL_CA" 2>/dev/null || die "keytool could not export the node's certificate"
  log "cassandra: made a node certificate for client TLS ($CQL_CA)"
}

start_cassandra() {
  ensure_cassandra_tls
  local jamm
  jamm=$(find "$CASSANDRA_LIBS" -maxdepth 1 -name 'jamm-*.jar' | sort | tail -n 1)
  [[ -n $jamm ]] || die "no jamm jar in $CASSANDRA_LIBS (needed as -javaagent)"
  local opts=(
    "-Xms$CASSANDRA_HEAP" "-Xmx$CASSANDRA_HEAP" -Xss256k
    # GC, as in Cassandra's conf/jvm17-server.options
    -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1 -XX:G1HeapRegionSize=16m
    -XX:G1RSetUpdatingPauseTimePercent=5 -XX:MaxGCPauseMillis=300 -XX:InitiatingHeapOccupancyPercent=70
    # general, as in conf/jvm-server.options
    -ea -da:net.openhft... -XX:+UseThreadPriorities -XX:+PerfDisableSharedMem
    -XX:+HeapDumpOnOutOfMemoryError -XX:HeapDumpPath="$CASSANDRA_DIR" -XX:+ExitOnOutOfMemoryError
    -Djava.net.preferIPv4Stack=true
    "${CASSANDRA_JPMS_OPTS[@]}"
    # object sizing agent (required)
    -javaagent:"$jamm"
    # Cassandra settings
    -Dcassandra.config="file://$CASSANDRA_YAML"
    -Dcassandra.storagedir="$CASSANDRA_DATA"
    -Dcassandra.logdir="$CASSANDRA_DIR/logs"
    -Dcassandra.triggers_dir="$CASSANDRA_DIR/triggers"
    -Dlogback.configurationFile="file://$CASSANDRA_LOGBACK"
    -Dcassandra-foreground=yes
    -Dcassandra.skip_wait_for_gossip_to_settle=0
    -Dcassandra.unsafesystem=true
    # The built-in superuser at once, not after 10 s.
    -Dcassandra.superuser_setup_delay_ms=0
    "-Dcassandra.jmx.local.port=$CASSANDRA_JMX_PORT"
  )
  launch "$CASSANDRA_LOG" "$CASSANDRA_PID" \
    "$JAVA" "${opts[@]}" "${CASSANDRA_EXTRA_OPTS[@]}" -cp "$CASSANDRA_LIBS/*" "$CASSANDRA_MAIN"
}

# ---------------------------------------------------------------------------
# Waiting for health
# ---------------------------------------------------------------------------

# wait_healthy NAME PIDFILE MAINCLASS LOGFILE CHECKFN T0_MS: polls CHECKFN until it
# succeeds (prints the time since T0_MS), the process dies (prints the log tail) or
# HEALTH_TIMEOUT seconds pass.
wait_healthy() {
  local name=$1 pidfile=$2 main=$3 logfile=$4 check=$5 t0=$6
  local deadline=$((t0 + HEALTH_TIMEOUT * 1000)) pid
  while :; do
    if ! pid=$(service_pid "$pidfile" "$main"); then
      printf '[tollgate-local] error: %s exited while starting; last 40 lines of %s:\n' "$name" "$logfile" >&2
      tail -n 40 "$logfile" >&2
      return 1
    fi
    if "$check"; then
      log "$name healthy after $(fmt_ms $(($(now_ms) - t0))) (pid $pid, log $logfile)"
      return 0
    fi
    if (($(now_ms) > deadline)); then
      printf '[tollgate-local] error: %s (pid %s) not healthy after %ss; last 40 lines of %s:\n' \
        "$name" "$pid" "$HEALTH_TIMEOUT" "$logfile" >&2
      tail -n 40 "$logfile" >&2
      return 1
    fi
    sleep 1
  done
}

# drop_test_keyspaces: drops the keyspaces that earlier test and benchmark runs left in the
# local Cassandra (each makes keyspaces of its own: e2e_*, chaos_*, tg_*, bench_*, ...). Hundreds
# of leftover tables make the node slower for every later run. Keeps `tollgate` (the quickstart).
drop_test_keyspaces() {
  local names stmts
  ensure_cqlsh
  names=$(cql -e "DESCRIBE KEYSPACES" | tr -s ' \t' '\n' | grep -E '^(e2e|chaos|spool|tg|outage|fence|bench|ledger|layer1|poison|failing|cache|rcache|compat|endpoints|finance|rerate)_[a-z0-9_]+$' || true)
  [[ -n $names ]] || return 0
  log "dropping $(wc -l <<<"$names") keyspaces left by earlier test runs"
  # Ten at a time: one statement list for hundreds of keyspaces outlives any request timeout,
  # and a chunk that fails leaves the others dropped.
  local chunk failed=0
  while read -r chunk; do
    [[ -n $chunk ]] || continue
    stmts=$(tr ' ' '\n' <<<"$chunk" | sed '/^$/d; s/.*/DROP KEYSPACE IF EXISTS &;/' | tr '\n' ' ')
    cql --request-timeout=60 -e "$stmts" </dev/null >/dev/null 2>&1 || failed=$((failed + 1))
  done < <(xargs -n 10 <<<"$names")
  ((failed == 0)) || log "$failed groups of test keyspaces could not be dropped (they are tried again next time)"
}
