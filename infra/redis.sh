#!/usr/bin/env bash
# Redis from Debian's packages, under var/redis, on 127.0.0.1 only.
SERVICE=redis
source "$(dirname "$0")/lib.sh"
PORT=${RECSYS_REDIS__PORT:-26379}
DIR=$VAR_DIR/redis

install() {
  if ! command -v redis-server >/dev/null; then
    apt_install redis-server
  fi
  mkdir -p "$DIR/data"
}

answers() { [ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" = "PONG" ]; }

start() {
  install
  if pid_alive "$DIR/redis.pid" && answers; then log "already up on 127.0.0.1:$PORT"; return 0; fi
  : >"$DIR/redis.log"
  setsid nohup redis-server --bind 127.0.0.1 --port "$PORT" --dir "$DIR/data" --save 60 1000 --appendonly no \
    --protected-mode yes --daemonize no >"$DIR/redis.log" 2>&1 &
  echo $! >"$DIR/redis.pid"
  wait_until 30 "$DIR/redis.log" "$DIR/redis.pid" answers
}

stop() { stop_pidfile "$DIR/redis.pid" 30; }

status() {
  if answers; then echo "redis: up on 127.0.0.1:$PORT"; else echo "redis: down"; exit 1; fi
}

dispatch "$@"
