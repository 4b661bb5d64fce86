#!/usr/bin/env bash
# Start, stop or report on every server the `services` profile needs: up | down | status.
SERVICE=services
source "$(dirname "$0")/lib.sh"
ALL=(postgres redis kafka cassandra)

case "${1:-}" in
  up) for s in "${ALL[@]}"; do bash "$INFRA_DIR/$s.sh" start; done ;;
  down) for s in "${ALL[@]}"; do bash "$INFRA_DIR/$s.sh" stop; done ;;
  status)
    rc=0
    for s in "${ALL[@]}"; do bash "$INFRA_DIR/$s.sh" status || rc=1; done
    exit $rc ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
