# Shared helpers for the server scripts under infra/. Source it; do not run it.
# Every server keeps its binaries, data and log under $RECSYS_VAR_DIR/<name> (git-ignored).
set -euo pipefail

INFRA_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT_DIR=$(cd "$INFRA_DIR/.." && pwd)
VAR_DIR=${RECSYS_VAR_DIR:-$ROOT_DIR/var}
export INFRA_DIR ROOT_DIR VAR_DIR

log() { printf '[%s] %s\n' "${SERVICE:-infra}" "$*" >&2; }

# die MESSAGE [LOGFILE]: print the message and the log's tail, exit non-zero.
die() {
  log "ERROR: $1"
  if [ -n "${2:-}" ] && [ -f "$2" ]; then
    log "last 60 lines of $2:"
    tail -n 60 "$2" >&2
  fi
  exit 1
}

# pid_alive PIDFILE: true when the file names a live process.
pid_alive() {
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# wait_until TIMEOUT_S LOGFILE PIDFILE CMD...: poll CMD every second until it succeeds.
# Fails (with the log tail) when the process in PIDFILE dies or the time runs out.
wait_until() {
  local timeout=$1 logfile=$2 pidfile=$3; shift 3
  local waited=0
  until "$@" >/dev/null 2>&1; do
    if [ -n "$pidfile" ] && ! pid_alive "$pidfile"; then
      die "server process exited before it answered" "$logfile"
    fi
    if [ "$waited" -ge "$timeout" ]; then
      die "server did not answer within ${timeout}s" "$logfile"
    fi
    sleep 1; waited=$((waited + 1))
  done
  log "answering after ${waited}s"
}

# stop_pidfile PIDFILE [TIMEOUT_S]: TERM the process, then KILL it after the timeout.
stop_pidfile() {
  local pidfile=$1 timeout=${2:-60} waited=0
  if ! pid_alive "$pidfile"; then rm -f "$pidfile"; log "not running"; return 0; fi
  local pid; pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge "$timeout" ]; then log "still up after ${timeout}s, killing"; kill -9 "$pid" 2>/dev/null || true; break; fi
    sleep 1; waited=$((waited + 1))
  done
  rm -f "$pidfile"
  log "stopped"
}

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# apt_install PACKAGE...: install Debian packages, refreshing the package lists once if needed.
apt_install() {
  log "installing $* from Debian's packages"
  { apt-get install -y -q "$@" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }; } \
    || die "apt-get install $* failed"
}

# require_jvm: Java 17+ and Maven, for the servers that come from Maven Central.
require_jvm() {
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install maven
}

# maven_fetch POM_DIR DEST: copy the dependencies a pom declares into DEST (once).
maven_fetch() {
  local pom_dir=$1 dest=$2
  if [ -f "$dest/.complete" ]; then return 0; fi
  require_jvm
  mkdir -p "$dest"
  log "fetching jars from Maven Central into $dest"
  mvn -q -B -f "$pom_dir/pom.xml" dependency:copy-dependencies -DoutputDirectory="$dest" \
    >"$dest/.mvn.log" 2>&1 || die "maven could not fetch the jars" "$dest/.mvn.log"
  touch "$dest/.complete"
}

# usage_main NAME: dispatch install|start|stop|status to functions of the same name.
dispatch() {
  case "${1:-}" in
    install|start|stop|status) "$1" ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
  esac
}
