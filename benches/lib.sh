# shellcheck shell=bash
# shellcheck disable=SC2034 # variables are used by the scripts that source this file
# Sourced, never executed. Shared by the load runs (benches/overhead/run, benches/compare/run):
# process bookkeeping that stops everything on exit, the quiet-machine wait and the disturbed-run retry, and the targets
# every run starts the same way (the mock, nginx, Tollgate with metering to its own Kafka topic).
#
# Source it after setting BENCH (the log prefix) and, before the first load_run, RUN_CAP,
# QUIET_WAIT, QUIET_BUSY_PCT, RETRIES, OTHERS_MAX, BUDGET and KEY. It sets up `work` (a temporary
# directory, removed on success and kept on failure) and the EXIT trap; set ok=1 once the results
# are written. It must never stop what it did not start: only pids in `started` are stopped, and
# only the Kafka topic it created is deleted.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# For kafka_topics and kafka_tool (topic set-up) and pom_version (the Kafka version).
# shellcheck source-path=SCRIPTDIR source=../deploy/local/lib.sh
source "$root/deploy/local/lib.sh"

log() { printf '[%s] %s\n' "$BENCH" "$*" >&2; }
die() {
  printf '[%s] error: %s\n' "$BENCH" "$*" >&2
  exit 1
}

# ---------------------------------------------------------------------------
# Processes: every one started here is recorded and stopped on exit
# ---------------------------------------------------------------------------

work=$(mktemp -d -t "tollgate-$BENCH.XXXXXX")
# nginx's worker runs as an unprivileged user and must reach its prefix directory.
chmod 755 "$work"
started=()
topic=
ok=0

# stop PID: SIGTERM, then SIGKILL if it is still there after 40 s (the gateway drains its
# usage events on SIGTERM, for up to 30 s).
stop() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  # A paused process (SIGSTOP) acts on SIGTERM only once continued.
  kill -CONT "$pid" 2>/dev/null || true
  for ((i = 0; i < 400; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

forget() {
  local pid=$1 kept=() p
  for p in "${started[@]}"; do
    [[ $p == "$pid" ]] || kept+=("$p")
  done
  started=("${kept[@]}")
}

# stop_started PID: stops a process started here and forgets it.
stop_started() {
  stop "$1"
  forget "$1"
}

cleanup() {
  local i
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do
    stop "${started[i]}"
  done
  if [[ -n $topic ]]; then
    KAFKA_TOOL_TIMEOUT=60 kafka_topics --delete --topic "$topic" >/dev/null 2>&1 ||
      log "could not delete topic $topic"
  fi
  if ((ok)); then
    rm -rf "$work"
  else
    log "failed; logs kept in $work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_listening PID FILE: waits (at most LISTEN_WAIT seconds, 30 unless set: a gateway under
# valgrind on a busy machine needs more) for "listening on http://ADDR" in FILE; prints ADDR.
wait_listening() {
  local pid=$1 file=$2 i addr
  for ((i = 0; i < ${LISTEN_WAIT:-30} * 10; i++)); do
    addr=$(sed -n 's|^listening on http://||p' "$file" | head -n 1)
    if [[ -n $addr ]]; then
      echo "$addr"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || die "process $pid exited before listening; see $file and its .err"
    sleep 0.1
  done
  die "process $pid did not start listening within ${LISTEN_WAIT:-30} s; see $file"
}

# wait_port PORT [SECONDS]: waits (at most 30 s) until 127.0.0.1:PORT accepts connections.
wait_port() {
  local port=$1 limit=${2:-30} i
  for ((i = 0; i < limit * 10; i++)); do
    if (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  die "nothing listens on 127.0.0.1:$port after $limit s"
}

# free_port: a port nothing listens on now (raced only by other programs picking the same one).
free_port() {
  local port i
  for ((i = 0; i < 100; i++)); do
    port=$((20000 + RANDOM % 20000))
    if ! (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  die "no free port found"
}

# ---------------------------------------------------------------------------
# A shared machine: wait for quiet, notice disturbed runs
# ---------------------------------------------------------------------------

# cpu_ticks_now: "busy total" clock ticks of the whole machine (busy leaves out idle and iowait).
cpu_ticks_now() {
  awk '/^cpu / { printf "%d %d\n", $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat
}

# stat_ticks STATFILE: the user + system clock ticks a /proc/PID/stat (or .../task/TID/stat)
# file counts so far; 0 when it is gone. The command name may hold spaces: fields are counted
# after its closing parenthesis.
stat_ticks() {
  local k
  k=$(sed 's/.*) //' "$1" 2>/dev/null | awk '{ print $12 + $13 }') || k=0
  echo "${k:-0}"
}

# busy_pct SECONDS: the busy share of the whole machine (all CPUs) over SECONDS, in percent.
busy_pct() {
  local a b
  a=$(cpu_ticks_now)
  sleep "$1"
  b=$(cpu_ticks_now)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[2] - x[2];
    printf "%d\n", (t > 0 ? 100 * (y[1] - x[1]) / t : 0) }'
}

# kafka_frozen: true when the local Kafka broker is stopped (state T).
kafka_frozen() {
  local pid
  pid=$(cat "$KAFKA_PID" 2>/dev/null) || return 1
  [[ $(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) == T ]]
}

# wait_quiet: waits at most QUIET_WAIT s for a thawed Kafka and a nearly idle machine; sets
# quiet_waited (seconds) and busy_before (percent). Gives up waiting once the load runs have
# taken BUDGET seconds since started_at.
quiet_waited=0
busy_before=0
started_at=$SECONDS
wait_quiet() {
  local start=$SECONDS frozen
  while :; do
    busy_before=$(busy_pct 0.5)
    frozen=0
    if kafka_frozen; then
      frozen=1
    fi
    if ((!frozen && busy_before <= QUIET_BUSY_PCT)); then
      break
    fi
    if ((SECONDS - start >= QUIET_WAIT || SECONDS - started_at >= BUDGET)); then
      log "still $( ((frozen)) && echo "Kafka frozen" || echo "${busy_before}% busy") after $((SECONDS - start)) s; running anyway"
      break
    fi
  done
  quiet_waited=$((SECONDS - start))
}

# ---------------------------------------------------------------------------
# Prerequisites and build
# ---------------------------------------------------------------------------

apt_install() {
  log "installing $*"
  apt-get update -qq >/dev/null
  # RUNLEVEL=1: install only; no service is started by the package scripts.
  RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# prepare: nginx, jq, the local Kafka and the release binaries; sets bin and loader.
prepare() {
  command -v nginx >/dev/null || apt_install nginx-light
  command -v jq >/dev/null || apt_install jq
  command -v nginx >/dev/null || die "nginx is not installed"
  if ! "$root/deploy/local/status" >/dev/null 2>&1; then
    log "local Kafka/Cassandra not healthy: running deploy/local/up"
    "$root/deploy/local/up" >&2
  fi
  # NO_BUILD=1 runs the release binaries as they are (a build kept from an earlier commit).
  if [[ ${NO_BUILD:-0} == 1 && -x $root/target/release/tollgate-gateway && -x $root/target/release/tollgate-load ]]; then
    log "NO_BUILD=1: running the release binaries as built"
  else
    log "building release binaries"
    cargo build --release --locked -p tollgate-gateway -p tollgate-benches --bins
  fi
  bin=$root/target/release
  loader=$bin/tollgate-load
}

# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------

# start_mock: the mock provider, 1 worker, no added latency; sets mock_pid and mock_addr.
start_mock() {
  log "starting the mock provider"
  "$bin/tollgate-mock-provider" --listen 127.0.0.1:0 --workers 1 --chunk-delay-us 0 \
    >"$work/mock.out" 2>"$work/mock.out.err" &
  mock_pid=$!
  started+=("$mock_pid")
  mock_addr=$(wait_listening "$mock_pid" "$work/mock.out")
}

# start_nginx: nginx as a plain reverse proxy in front of the mock; sets nginx_pid (the master),
# nginx_worker and nginx_port.
start_nginx() {
  log "starting nginx"
  nginx_port=$(free_port)
  mkdir -p "$work/nginx"
  cat >"$work/nginx/nginx.conf" <<EOF
# A plain reverse proxy in front of the mock: one worker, keep-alive to the client and upstream.
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx/client_body;
  proxy_temp_path $work/nginx/proxy;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  upstream mock {
    server $mock_addr;
    keepalive 128;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # As for any SSE proxy: pass chunks on as they come.
      proxy_buffering off;
    }
  }
}
EOF
  nginx -e "$work/nginx/error.log" -p "$work/nginx" -c "$work/nginx/nginx.conf" \
    >"$work/nginx/stdout" 2>&1 &
  nginx_pid=$!
  started+=("$nginx_pid")
  wait_port "$nginx_port"
  nginx_worker=$(pgrep -P "$nginx_pid" | head -n 1) || die "no nginx worker process"
}

# create_topic PREFIX: a Kafka topic of this run's own for the usage events; deleted on exit.
create_topic() {
  topic=$1-$(date +%s)-$$
  log "creating Kafka topic $topic"
  kafka_topics --create --topic "$topic" --partitions 6 --replication-factor 1 >/dev/null ||
    die "could not create topic $topic"
}

# topic_events: how many records the run's topic holds (every partition's end offset, summed).
topic_events() {
  kafka_tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server 127.0.0.1:9092 \
    --command-config "$KAFKA_CLIENT_PROPS" --topic "$topic" 2>/dev/null |
    awk -F: '{ n += $NF } END { print n + 0 }'
}

# KEY_BUDGET: the bench key's `max_budget` (USD, over 30 days) and with it an rpm and a tpm limit
# far above what a run sends, so every request goes through the budget and rate-limit checks
# without being refused. Empty: auth only. No ledger consumer runs in a bench, so the budget view
# is told to serve on its own spend (`budgets.when_stale: fail_open`).
KEY_BUDGET=${KEY_BUDGET-1000000}
# LEASES: `budgets.leases` of the gateway (credit leases of hard budgets; on by default).
LEASES=${LEASES-true}

# start_gateway NAME WORKERS: starts Tollgate with that many HTTP workers, one virtual key,
# gpt-4o-mini routed to the mock and usage events to $topic; sets gw_pid, gw_port and gw_dir.
# GATEWAY_BIN runs another gateway binary (an older build, say); GATEWAY_SETTINGS holds extra
# lines of the `gateway:` section, indented by two spaces.
start_gateway() {
  local name=$1 workers=$2
  gw_dir=$work/gateway-$name
  mkdir -p "$gw_dir"
  cat >"$gw_dir/config.yaml" <<EOF
gateway:
  id: bench-$name
  listen: 127.0.0.1:0
  workers: $workers
${GATEWAY_SETTINGS:-}
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://$mock_addr/v1
virtual_keys:
  - key: $KEY
    key_alias: bench
    team_id: bench
$([[ -n $KEY_BUDGET ]] && printf '    max_budget: %s\n    budget_duration: 30d\n    rpm_limit: 100000000\n    tpm_limit: 100000000000\n' "$KEY_BUDGET")
$([[ -n $KEY_BUDGET ]] && printf 'budgets:\n  when_stale: fail_open\n  leases: %s\n' "$LEASES")
kafka:
  bootstrap_servers: 127.0.0.1:9092
  usage_topic: $topic
spool:
  dir: $gw_dir/spool
${SPOOL_SETTINGS:-}
${EXTRA_CONFIG:-}
EOF
  "${GATEWAY_BIN:-$bin/tollgate-gateway}" --config "$gw_dir/config.yaml" >"$gw_dir/out" 2>"$gw_dir/out.err" &
  gw_pid=$!
  started+=("$gw_pid")
  gw_port=$(wait_listening "$gw_pid" "$gw_dir/out")
  gw_port=${gw_port##*:}
}

# ---------------------------------------------------------------------------
# Load runs
# ---------------------------------------------------------------------------

raw_lines=$work/raw.jsonl
: >"$raw_lines"
sent_to_gateway=0

# load_run TARGET SCENARIO ROUND PID LOADER-ARGS...: one load run of tollgate-load (PID is the
# process under test, whose CPU is sampled), appended to $raw_lines with the run's names and
# how the machine was. Waits for quiet before it and repeats it (at most RETRIES times) when
# others disturbed it. Gives up on its timed requests after RUN_CAP s unless the args give
# another --max-secs.
load_run() {
  local target=$1 scenario=$2 round=$3 pid=$4 line
  shift 4
  local args=(--pid "$pid" --label "$target $scenario" --key "$KEY" "$@")
  if [[ " $* " != *" --max-secs "* ]]; then
    args+=(--max-secs "$RUN_CAP")
  fi
  local attempt frozen_at_start frozen_at_end waited=0 disturbed
  for ((attempt = 1; ; attempt++)); do
    wait_quiet
    waited=$((waited + quiet_waited))
    frozen_at_start=0 frozen_at_end=0
    if kafka_frozen; then
      frozen_at_start=1
    fi
    # Bounded: warm-up and timed requests each stop at their cap, settling takes at most 2 × 5 s.
    line=$(timeout $((3 * RUN_CAP + 60)) "$loader" "${args[@]}") || die "load run $target $scenario failed"
    if kafka_frozen; then
      frozen_at_end=1
    fi
    if [[ $target == tollgate* ]]; then
      sent_to_gateway=$((sent_to_gateway + $(jq '.requests + .warmup' <<<"$line")))
    fi
    disturbed=$(jq -r --argjson max "$OTHERS_MAX" --argjson f $((frozen_at_start + frozen_at_end)) \
      'if $f > 0 then "Kafka frozen" elif .others_cores > $max then "\(.others_cores) cores used by others" else "" end' \
      <<<"$line")
    if [[ -z $disturbed ]] || ((attempt > RETRIES || SECONDS - started_at >= BUDGET)); then
      break
    fi
    log "$target $scenario round $round disturbed ($disturbed); running it again"
  done
  jq -c --arg t "$target" --arg s "$scenario" --argjson r "$round" --argjson w "$waited" \
    --argjson b "$busy_before" --argjson a "$attempt" --arg d "$disturbed" \
    '. + {target: $t, scenario: $s, round: $r, attempts: $a, quiet_wait_s: $w, busy_before_pct: $b,
          disturbed: (if $d == "" then null else $d end)}' \
    <<<"$line" >>"$raw_lines"
  jq -r '"\(.label) round \(.round): \(.requests) req, \(.rps) rps\(if .offered_rps then " (offered \(.offered_rps))" else "" end), p50 \(.p50_us) µs, p99 \(.p99_us) µs, ttfb p50 \(.ttfb_p50_us) µs, cpu \(.cpu_us_per_req) µs/req, others \(.others_cores) cores, errors \(.errors)"' \
    <<<"$(tail -n 1 "$raw_lines")" >&2
}

# smoke URL [curl-style extra headers as loader args]: one request must succeed before anything
# is timed.
smoke() {
  local url=$1 line
  shift
  line=$("$loader" --url "$url" --requests 1 --warmup 0 --key "$KEY" --timeout-secs 10 "$@") ||
    die "smoke request to $url failed"
  [[ $(jq -r .errors <<<"$line") == 0 ]] || die "smoke request to $url failed: $(jq -r .first_error <<<"$line")"
}

# perf_profile PID URL OUT TITLE: a perf profile of PID while c=64 non-streaming load runs on URL
# for about 3 s; writes the shares by thread and object and the top symbols to OUT.
perf_profile() {
  local pid=$1 url=$2 out=$3 title=$4 perf_pid line
  command -v perf >/dev/null || {
    log "perf is not installed: no profile"
    return 0
  }
  log "recording a perf profile: $title"
  perf record -F 999 -g -p "$pid" -o "$work/perf.data" -- sleep 4 >/dev/null 2>&1 &
  perf_pid=$!
  sleep 0.5
  line=$("$loader" --url "$url" --concurrency 64 --requests 1000000 --warmup 0 --key "$KEY" --max-secs 3)
  if [[ $pid == "${gw_pid:-}" ]]; then
    sent_to_gateway=$((sent_to_gateway + $(jq .requests <<<"$line")))
  fi
  wait "$perf_pid" || true
  {
    echo "perf profile of $title, c=64 non-streaming, $(date +%F)"
    echo
    echo "== share of samples by thread and object =="
    perf report -i "$work/perf.data" --no-children --sort comm,dso -g none --stdio 2>/dev/null | grep '%' | head -n 20
    echo
    echo "== top symbols =="
    perf report -i "$work/perf.data" --no-children --sort sym -g none --stdio 2>/dev/null | grep '%' | head -n 50
  } >"$out" || true
}

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

# machine_facts: the markdown bullets that say where and on what a run ran.
machine_facts() {
  local cpu_model commit
  cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
  commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [[ -n $(git -C "$root" status --porcelain -- gateway benches ':!benches/results' 2>/dev/null) ]]; then
    commit="$commit (with uncommitted changes in gateway/ or benches/)"
  fi
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- \`uname -a\`: $(uname -a)"
  echo "- nproc: $(nproc); CPU: $cpu_model; memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  echo "- Tollgate: commit $commit, release build; $(rustc --version)"
  echo "- nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //'); Kafka $(pom_version "$KAFKA_POM" kafka_2.13) (local, single node)"
}
