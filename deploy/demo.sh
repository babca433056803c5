#!/usr/bin/env bash
# One-command demo: install, start a local Kafka broker (unless KAFKA_BOOTSTRAP_SERVERS is set),
# run the consumer in the background, publish synthetic lab events with `her2-consumer demo`,
# print the alerts that come back, then stop everything.
# Needs Python 3.11+, and Java 17 + Maven for the local broker (or an existing broker).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "==> installing the consumer (pip install -e .)" >&2
python3 -m pip install -q -e .

state_dir="${HER2_DEMO_DIR:-.kafka-local}"
consumer_pid=""
started_broker=""
cleanup() {
  if [ -n "$consumer_pid" ] && kill -0 "$consumer_pid" 2>/dev/null; then
    kill -TERM "$consumer_pid" 2>/dev/null || true
    wait "$consumer_pid" 2>/dev/null || true
  fi
  if [ -n "$started_broker" ]; then
    python3 deploy/kafka/launcher.py stop --dir "$state_dir" >&2 || true
  fi
}
trap cleanup EXIT

if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  echo "==> starting a local Kafka broker (first run resolves the jars with Maven)" >&2
  KAFKA_BOOTSTRAP_SERVERS="$(python3 deploy/kafka/launcher.py start --dir "$state_dir")"
  started_broker=1
fi
export KAFKA_BOOTSTRAP_SERVERS
echo "==> broker: $KAFKA_BOOTSTRAP_SERVERS" >&2

# The demo's output is this run's events only: each run's events carry an event-id prefix of
# their own and the demo reads the outputs from their end offsets at the start.
run_id="$(date +%s)"
export HER2_INPUT_TOPIC="${HER2_INPUT_TOPIC:-lab.pathology.results.v1}"
export HER2_GROUP_ID="${HER2_GROUP_ID:-her2-alert-consumer-demo}"
export HER2_HTTP_PORT="${HER2_HTTP_PORT:-0}"
export HER2_LOG_LEVEL="${HER2_LOG_LEVEL:-WARNING}"

echo "==> starting her2-consumer run (logs: $state_dir/consumer-$run_id.log)" >&2
mkdir -p "$state_dir"
her2-consumer run 2>"$state_dir/consumer-$run_id.log" &
consumer_pid=$!

echo "==> publishing synthetic lab events (her2-consumer demo)" >&2
her2-consumer demo --count "${HER2_DEMO_COUNT:-40}" --timeout "${HER2_DEMO_TIMEOUT:-90}"
