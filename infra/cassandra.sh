#!/usr/bin/env bash
# One-node Apache Cassandra 5.0 (from Maven Central's cassandra-all) on 127.0.0.1, under var/cassandra.
SERVICE=cassandra
source "$(dirname "$0")/lib.sh"
PORT=${RECSYS_CASSANDRA__PORT:-29042}          # CQL native port
STORAGE_PORT=${RECSYS_CASSANDRA__STORAGE_PORT:-27000}
JMX_PORT=${RECSYS_CASSANDRA__JMX_PORT:-27199}
HEAP=${RECSYS_CASSANDRA__HEAP:-1G}
DIR=$VAR_DIR/cassandra
PIDFILE=$DIR/cassandra.pid
LOGFILE=$DIR/cassandra.log
PYTHON=${RECSYS_PYTHON:-$ROOT_DIR/.venv/bin/python}

# cql_ok: true when the node answers a real CQL query (Python cassandra-driver).
cql_ok() {
  "$PYTHON" - "$PORT" <<'PY'
import sys, logging
logging.disable(logging.CRITICAL)
from cassandra.cluster import Cluster
cluster = Cluster(['127.0.0.1'], port=int(sys.argv[1]), connect_timeout=5, control_connection_timeout=5)
try:
    cluster.connect().execute('SELECT release_version FROM system.local', timeout=10).one()
finally:
    cluster.shutdown()
PY
}

render() {  # render SRC DEST: fill the @@...@@ placeholders
  sed -e "s|@@DIR@@|$DIR|g" -e "s|@@PORT@@|$PORT|g" -e "s|@@STORAGE_PORT@@|$STORAGE_PORT|g" \
    "$1" >"$2.tmp" && mv "$2.tmp" "$2"
}

install() {
  require_jvm
  maven_fetch "$INFRA_DIR/maven/cassandra" "$DIR/lib"
  mkdir -p "$DIR/conf/triggers" "$DIR/logs" "$DIR/data"
  render "$INFRA_DIR/cassandra/cassandra.yaml.template" "$DIR/conf/cassandra.yaml"
  cp "$INFRA_DIR/cassandra/jvm17-server.options" "$DIR/conf/jvm17-server.options"
  cat >"$DIR/conf/logback.xml" <<'XML'
<configuration scan="false" debug="false">
  <appender name="SYSTEMLOG" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>${cassandra.logdir}/system.log</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.SizeAndTimeBasedRollingPolicy">
      <fileNamePattern>${cassandra.logdir}/system.log.%d{yyyy-MM-dd}.%i.zip</fileNamePattern>
      <maxFileSize>20MB</maxFileSize>
      <maxHistory>3</maxHistory>
      <totalSizeCap>100MB</totalSizeCap>
    </rollingPolicy>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="SYSTEMLOG"/>
    <appender-ref ref="STDOUT"/>
  </root>
  <logger name="org.apache.cassandra" level="INFO"/>
</configuration>
XML
}

start() {
  install
  if pid_alive "$PIDFILE"; then
    if cql_ok >/dev/null 2>&1; then log "already running on 127.0.0.1:$PORT"; return 0; fi
    log "process $(cat "$PIDFILE") is up but not answering yet; waiting"
    wait_until 300 "$LOGFILE" "$PIDFILE" cql_ok
    return 0
  fi
  [ -x "$PYTHON" ] || die "$PYTHON not found (needs cassandra-driver for the CQL check)"
  local p
  for p in "$PORT" "$STORAGE_PORT" "$JMX_PORT"; do
    port_open "$p" && die "port 127.0.0.1:$p is already in use by another process"
  done
  local jamm; jamm=$(ls "$DIR"/lib/jamm-*.jar 2>/dev/null | head -n1)
  [ -n "$jamm" ] || die "jamm jar missing in $DIR/lib"
  local -a opts
  mapfile -t opts < <(grep -Ev '^[[:space:]]*(#|$)' "$DIR/conf/jvm17-server.options" | sed 's/[[:space:]]*$//')
  opts+=(
    "-Xms$HEAP" "-Xmx$HEAP"
    "-javaagent:$jamm"
    "-Dcassandra.config=file://$DIR/conf/cassandra.yaml"
    "-Dlogback.configurationFile=$DIR/conf/logback.xml"
    "-Dcassandra.logdir=$DIR/logs"
    "-Dcassandra.storagedir=$DIR/data"
    "-Dcassandra.triggers_dir=$DIR/conf/triggers"
    "-Dcassandra-foreground=yes"
    "-Dcassandra.jmx.local.port=$JMX_PORT"
    "-Djava.rmi.server.hostname=127.0.0.1"
    "-XX:HeapDumpPath=$DIR/logs"
    "-XX:ErrorFile=$DIR/logs/hs_err_%p.log"
  )
  [ -f "$LOGFILE" ] && mv -f "$LOGFILE" "$LOGFILE.prev"
  log "starting on 127.0.0.1:$PORT (storage $STORAGE_PORT, jmx $JMX_PORT); log: $LOGFILE"
  setsid nohup java "${opts[@]}" -cp "$DIR/conf:$DIR/lib/*" org.apache.cassandra.service.CassandraDaemon \
    >"$LOGFILE" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  wait_until 300 "$LOGFILE" "$PIDFILE" cql_ok
}

stop() { stop_pidfile "$PIDFILE" 90; }

status() {
  if cql_ok >/dev/null 2>&1; then echo "cassandra: up on 127.0.0.1:$PORT"; exit 0; fi
  echo "cassandra: down"; exit 1
}

dispatch "$@"
