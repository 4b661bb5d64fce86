#!/usr/bin/env bash
# A Spark standalone cluster on loopback, one master and one worker, from the pyspark in the project's venv
# (its bin/spark-class and jars; no separate Spark download): install | start | stop | status.
# The feature job runs on it with `[features] spark_master = "spark://127.0.0.1:27077"` (or
# RECSYS_FEATURES__SPARK_MASTER). Pid files, logs and the worker's application folders (work/) under var/spark.
# Overridable with Spark's own variable names (not RECSYS_* ones, which the project's settings would refuse):
# SPARK_MASTER_PORT (27077), SPARK_MASTER_WEBUI_PORT (28080), SPARK_WORKER_PORT (27078),
# SPARK_WORKER_WEBUI_PORT (28081), SPARK_WORKER_CORES (2), SPARK_WORKER_MEMORY (2g: what executors may take).
SERVICE=spark
source "$(dirname "$0")/lib.sh"
MASTER_PORT=${SPARK_MASTER_PORT:-27077}
MASTER_WEBUI_PORT=${SPARK_MASTER_WEBUI_PORT:-28080}
WORKER_PORT=${SPARK_WORKER_PORT:-27078}
WORKER_WEBUI_PORT=${SPARK_WORKER_WEBUI_PORT:-28081}
WORKER_CORES=${SPARK_WORKER_CORES:-2}
WORKER_MEMORY=${SPARK_WORKER_MEMORY:-2g}
START_TIMEOUT=${SPARK_START_TIMEOUT:-90}
DIR=$VAR_DIR/spark
PY=$ROOT_DIR/.venv/bin/python
MASTER_URL=spark://127.0.0.1:$MASTER_PORT

install() {
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  [ -x "$PY" ] || die "no project venv at $ROOT_DIR/.venv (see README: Install)"
  SPARK_HOME=$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null) \
    || die "pyspark is not installed in $ROOT_DIR/.venv (the batch extra)"
  [ -x "$SPARK_HOME/bin/spark-class" ] || die "$SPARK_HOME/bin/spark-class is missing: a broken pyspark install?"
  mkdir -p "$DIR/work"
  # Every process Spark starts here, executors included, binds to loopback and runs the venv's Python.
  # Ports are exact: a taken port fails the start instead of Spark quietly moving to the next one.
  export SPARK_HOME SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON=$PY SPARK_DAEMON_MEMORY=512m
  # The master's REST submission server (port 6066) stays off: jobs here are submitted by the driver itself.
  export SPARK_MASTER_OPTS="-Dspark.port.maxRetries=0 -Dspark.master.rest.enabled=false"
  export SPARK_WORKER_OPTS="-Dspark.port.maxRetries=0"
}

# master_state: the master's /json (its web UI), reduced to "ALIVE <alive workers>"; fails when nothing answers.
master_state() {
  curl -fsS --max-time 5 "http://127.0.0.1:$MASTER_WEBUI_PORT/json/" 2>/dev/null | "$PY" -c '
import json, sys
state = json.load(sys.stdin)
if state.get("url") != sys.argv[1]:
    sys.exit("another master answers: %s" % state.get("url"))
alive = [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]
print(state.get("status"), len(alive))
' "$MASTER_URL"
}

master_answers() { [[ $(master_state) == ALIVE* ]]; }
worker_registered() { local s; s=$(master_state) && [[ $s == ALIVE* ]] && [ "${s#ALIVE }" -ge 1 ]; }

# refuse_taken PORT...: fail before starting when something else already listens on one of the ports.
refuse_taken() {
  local port
  for port in "$@"; do
    port_open "$port" && die "port $port on 127.0.0.1 is taken by another process (set the SPARK_*_PORT variables)"
  done
  return 0
}

# start_daemon NAME READY "PORT..." CLASS ARGS...: one Spark daemon (pid file and log var/spark/NAME.*),
# waited for until READY succeeds; one already running is only waited for.
start_daemon() {
  local name=$1 ready=$2 ports=$3; shift 3
  local pidfile=$DIR/$name.pid logfile=$DIR/$name.log
  if ! pid_alive "$pidfile"; then
    # shellcheck disable=SC2086  # the ports are a space-separated list
    refuse_taken $ports
    [ -f "$logfile" ] && mv -f "$logfile" "$logfile.1"
    setsid nohup "$SPARK_HOME/bin/spark-class" "$@" >"$logfile" 2>&1 </dev/null &
    echo $! >"$pidfile"
  fi
  wait_until "$START_TIMEOUT" "$logfile" "$pidfile" "$ready"
}

start_master() {
  log "starting the master on $MASTER_URL (web UI http://127.0.0.1:$MASTER_WEBUI_PORT)"
  start_daemon master master_answers "$MASTER_PORT $MASTER_WEBUI_PORT" org.apache.spark.deploy.master.Master \
    --host 127.0.0.1 --port "$MASTER_PORT" --webui-port "$MASTER_WEBUI_PORT"
}

start_worker() {
  log "starting a worker ($WORKER_CORES cores, $WORKER_MEMORY) on 127.0.0.1:$WORKER_PORT"
  start_daemon worker worker_registered "$WORKER_PORT $WORKER_WEBUI_PORT" org.apache.spark.deploy.worker.Worker \
    --host 127.0.0.1 --port "$WORKER_PORT" --webui-port "$WORKER_WEBUI_PORT" \
    --cores "$WORKER_CORES" --memory "$WORKER_MEMORY" --work-dir "$DIR/work" "$MASTER_URL"
}

start() {
  install
  if pid_alive "$DIR/master.pid" && pid_alive "$DIR/worker.pid" && worker_registered; then
    log "already up: $MASTER_URL"; return 0
  fi
  # subshells, so that a cluster that never comes up is stopped before we fail
  ( start_master ) || { stop >/dev/null 2>&1; exit 1; }
  ( start_worker ) || { stop >/dev/null 2>&1; exit 1; }
  log "up: $MASTER_URL"
}

# The worker first: it stops its executors, and the master does not wait for a worker that left.
stop() {
  SERVICE=spark-worker stop_pidfile "$DIR/worker.pid" 30
  SERVICE=spark-master stop_pidfile "$DIR/master.pid" 30
}

status() {
  [ -x "$PY" ] || { echo "spark: down (no venv)"; exit 1; }
  if worker_registered; then
    echo "spark: up, $MASTER_URL, $(master_state | cut -d' ' -f2) worker(s), UI http://127.0.0.1:$MASTER_WEBUI_PORT"
    exit 0
  fi
  echo "spark: down"; exit 1
}

dispatch "$@"
